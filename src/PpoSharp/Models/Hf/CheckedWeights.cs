using static TorchSharp.torch;

namespace PpoSharp.Models.Hf;

/// <summary>
/// A folder's weights after <see cref="HfCheckpoint.CheckWeights"/>: names, dtypes and shapes known to match the spec.
/// <see cref="Into"/> reads them one tensor at a time, refuses a non-finite value naming the tensor, and copies them in.
/// </summary>
public sealed class CheckedWeights
{
    private readonly string _dir;
    private readonly SafetensorsFolder _files;
    private readonly Dictionary<string, string> _stored;
    private readonly List<WeightMap> _maps;
    private readonly DecoderSpec _spec;

    internal CheckedWeights(string dir, SafetensorsFolder files, Dictionary<string, string> stored, List<WeightMap> maps, DecoderSpec spec) =>
        (_dir, _files, _stored, _maps, _spec) = (dir, files, stored, maps, spec);

    /// <summary>Refuses a stored tensor (or a part of a fused one) whose dtype or shape from the header is not what <paramref name="ours"/> implies.</summary>
    internal void CheckShape(WeightMap m, long[] ours)
    {
        foreach (var name in m.Hf)
        {
            var e = _files.Entry(_stored[name]);
            if (!Safetensors.IsFloat(e.Dtype))
                throw Fail(name, $"is {Safetensors.TorchType(e.Dtype)?.ToString() ?? e.Dtype}, a weight must be floating point (F32, BF16 or F16)");
        }
        var expected = Expected(m, ours);
        for (int i = 0; i < m.Hf.Length; i++)
        {
            var shape = _files.Entry(_stored[m.Hf[i]]).Shape;
            if (!shape.SequenceEqual(expected[i]))
                throw Fail(m.Hf[i], $"has shape [{string.Join("x", shape)}], config.json implies [{string.Join("x", expected[i])}]");
        }
    }

    /// <summary>The stored shape of each HF tensor of <paramref name="m"/>: ours, its transpose, or q, k, v row blocks of it.</summary>
    private long[][] Expected(WeightMap m, long[] ours) => m.Layout switch
    {
        WeightLayout.Transposed => [[.. ours.Reverse()]],
        WeightLayout.Concat => [.. _spec.QkvRows.Select(rows => (long[])[rows, .. ours.Skip(1)])],
        _ => [ours],
    };

    /// <summary>Reads every tensor (one at a time, in its stored dtype), checks it is finite and copies it into the model's parameters.</summary>
    public void Into(Decoder model, ScalarHead? head = null)
    {
        var ours = HfCheckpoint.Parameters(model, head);
        using var _ = no_grad();
        foreach (var m in _maps)
        {
            using var scope = NewDisposeScope();
            var parts = m.Hf.Select(Read).ToArray();
            using var source = m.Layout switch
            {
                WeightLayout.Transposed => parts[0].t(),
                WeightLayout.Concat => cat(parts, 0),
                _ => parts[0].alias(),
            };
            ours[m.Ours].copy_(source);
        }
    }

    private Tensor Read(string name)
    {
        var t = _files.Read(_stored[name]);
        if (!t.isfinite().all().item<bool>()) throw Fail(name, "holds NaN or infinite values (a corrupt or diverged checkpoint)");
        return t;
    }

    private PpoSharpException Fail(string name, string problem) => new($"{_files.FileOf(_stored[name])}: tensor '{name}' {problem}");
}

/// <summary>Refuses to build a model that would not fit in the memory the system has available.</summary>
public static class MemoryCheck
{
    /// <summary>
    /// Refuses when <paramref name="modelBytes"/> (the parameters as held) plus twice <paramref name="largestTensorBytes"/> (one
    /// stored tensor and its converted copy while loading) exceed Linux's MemAvailable; elsewhere nothing is checked.
    /// </summary>
    public static void Fits(string source, double modelBytes, double largestTensorBytes)
    {
        double need = modelBytes + 2 * largestTensorBytes;
        if (AvailableBytes() is { } available && need > available)
            throw new PpoSharpException($"{source}: the model needs {Gb(need)} of memory to load ({Gb(modelBytes)} of fp32 parameters), more than the {Gb(available)} available");
    }

    private static string Gb(double bytes) => $"{bytes / (1L << 30):0.##} GiB";

    /// <summary>MemAvailable of /proc/meminfo in bytes; null where there is none.</summary>
    public static double? AvailableBytes()
    {
        const string file = "/proc/meminfo";
        if (!OperatingSystem.IsLinux() || !File.Exists(file)) return null;
        var line = File.ReadLines(file).FirstOrDefault(l => l.StartsWith("MemAvailable:", StringComparison.Ordinal));
        var parts = line?.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return parts is { Length: >= 2 } && long.TryParse(parts[1], out var kb) ? kb * 1024.0 : null;
    }
}
