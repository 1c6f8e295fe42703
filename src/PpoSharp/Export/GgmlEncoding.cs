using System.Buffers.Binary;

namespace PpoSharp.Export;

/// <summary>fp32 values to the bytes of a ggml tensor type, as gguf-py's <c>quants.py</c> defines them.</summary>
public static class GgmlEncoding
{
    /// <summary>Values a Q8_0 block holds.</summary>
    public const int Q8Block = 32;

    /// <summary>Whether a row of <paramref name="rowLength"/> values can be stored as <paramref name="type"/> (Q8_0 needs whole blocks).</summary>
    public static bool Fits(GgmlType type, long rowLength) => type != GgmlType.Q8_0 || rowLength % Q8Block == 0;

    public static byte[] Encode(float[] values, GgmlType type, long rowLength)
    {
        if (!Fits(type, rowLength)) throw new ArgumentException($"rows of {rowLength} values are not whole Q8_0 blocks of {Q8Block}");
        return type switch
        {
            GgmlType.F32 => Each(values, 4, (v, b) => BinaryPrimitives.WriteSingleLittleEndian(b, v)),
            GgmlType.F16 => Each(values, 2, (v, b) => BinaryPrimitives.WriteHalfLittleEndian(b, (Half)v)),        // round to nearest even
            GgmlType.BF16 => Each(values, 2, (v, b) => BinaryPrimitives.WriteUInt16LittleEndian(b, ToBf16(v))),
            GgmlType.Q8_0 => Q8_0(values),
            _ => throw new ArgumentOutOfRangeException(nameof(type)),
        };
    }

    private static byte[] Each(float[] values, int size, SpanAction write)
    {
        var bytes = new byte[values.Length * size];
        for (int i = 0; i < values.Length; i++) write(values[i], bytes.AsSpan(i * size, size));
        return bytes;
    }

    private delegate void SpanAction(float value, Span<byte> bytes);

    /// <summary>
    /// bfloat16: the top 16 bits of the fp32 pattern, rounded to nearest even (add 0x7FFF plus the lowest kept bit, then
    /// shift); a NaN stays a quiet NaN.
    /// </summary>
    public static ushort ToBf16(float v)
    {
        uint n = BitConverter.SingleToUInt32Bits(v);
        if ((n & 0x7FFFFFFF) > 0x7F800000) return (ushort)((n >> 16) | 64);
        return (ushort)((n + 0x7FFF + ((n >> 16) & 1)) >> 16);
    }

    /// <summary>
    /// Q8_0: per block of 32 consecutive values, d = max|x| / 127 (stored as fp16) and q_i = round(x_i / d) as int8,
    /// rounding halves away from zero (q = 0 where d = 0). A value comes back as d · q_i, within d / 2 of x_i.
    /// </summary>
    public static byte[] Q8_0(float[] values)
    {
        int blocks = values.Length / Q8Block;
        var bytes = new byte[blocks * (2 + Q8Block)];
        for (int b = 0; b < blocks; b++)
        {
            var x = values.AsSpan(b * Q8Block, Q8Block);
            float amax = 0;
            foreach (var v in x) amax = Math.Max(amax, Math.Abs(v));
            float d = amax / 127, id = d == 0 ? 0 : 1 / d;
            var block = bytes.AsSpan(b * (2 + Q8Block), 2 + Q8Block);
            BinaryPrimitives.WriteHalfLittleEndian(block, (Half)d);
            for (int i = 0; i < Q8Block; i++) block[2 + i] = (byte)(sbyte)MathF.Round(x[i] * id, MidpointRounding.AwayFromZero);
        }
        return bytes;
    }
}
