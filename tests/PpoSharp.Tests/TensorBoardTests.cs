using System.Buffers.Binary;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>metrics.jsonl's numbers also go to a TensorBoard event file, read back here as TFRecords of Event protos.</summary>
public class TensorBoardTests
{
    /// <summary>The records of a TFRecord file: u64 length, u32 masked CRC of the length, the data, u32 masked CRC of the data.</summary>
    private static IEnumerable<byte[]> Records(string path)
    {
        var bytes = File.ReadAllBytes(path);
        for (int at = 0; at < bytes.Length;)
        {
            var length = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(at));
            yield return bytes.AsSpan(at + 12, length).ToArray();
            at += 12 + length + 4;
        }
    }

    [Fact]
    public void MetricsWriter_WritesEveryNumberAsAScalarAtItsStep()
    {
        var dir = TestSupport.TempDir();
        using (var writer = new MetricsWriter(Path.Combine(dir, MetricsWriter.FileName)))
        {
            writer.Write(new Dictionary<string, object> { ["step"] = 1, ["loss"] = 2.5, ["lr"] = 0.001, ["note"] = "text" });
            writer.Write(new Dictionary<string, object> { ["step"] = 2, ["loss"] = 1.25, ["lr"] = 0.002 });
        }
        var file = Directory.GetFiles(dir, "events.out.tfevents.*").Single();
        var scalars = Records(file).Select(r => Tensorboard.Event.Parser.ParseFrom(r)).Where(e => e.Summary is not null)
            .SelectMany(e => e.Summary.Value.Select(v => (v.Tag, e.Step, v.SimpleValue))).ToList();
        Assert.Equal([("loss", 1L, 2.5f), ("lr", 1L, 0.001f), ("loss", 2L, 1.25f), ("lr", 2L, 0.002f)], scalars);
    }
}
