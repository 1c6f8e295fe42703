using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using PpoSharp.Models.Hf;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// The safetensors reader/writer: round trips, bytes built here by the format's spec, the real Hugging Face files in
/// HfData/models/, sharded folders, and one-line errors that name the file for each kind of bad input.
/// </summary>
public class SafetensorsTests
{
    private static string HfModel(string name) => Path.Combine(AppContext.BaseDirectory, "HfData", "models", name);

    private static byte[] Bits(Tensor t) => t.contiguous().bytes.ToArray();

    private static KeyValuePair<string, Tensor> Named(string name, Tensor t) => KeyValuePair.Create(name, t);

    /// <summary>A file made by hand: the 8-byte little-endian header length (or <paramref name="length"/>), the JSON, the data.</summary>
    private static string WriteRaw(string json, byte[] data, ulong? length = null)
    {
        var header = Encoding.UTF8.GetBytes(json);
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, length ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        var path = Path.Combine(TestSupport.TempDir(), "raw.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static void AssertFails(Action action, string path, string problem)
    {
        var e = Assert.Throws<PpoSharpException>(action);
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(problem, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    private static void AssertSame(IEnumerable<KeyValuePair<string, Tensor>> expected, Dictionary<string, Tensor> actual)
    {
        Assert.Equal(expected.Select(t => t.Key), actual.Keys);
        foreach (var (name, t) in expected)
        {
            Assert.Equal(t.dtype, actual[name].dtype);
            Assert.Equal(t.shape, actual[name].shape);
            Assert.Equal(Bits(t), Bits(actual[name]));
        }
    }

    private static List<KeyValuePair<string, Tensor>> Sample()
    {
        manual_seed(3);
        return
        [
            Named("f32", randn(3, 4)),
            Named("f32.transposed", randn(4, 2).t()),
            Named("bf16", tensor(new[] { 1f, -2.5f, 0.15625f, 3.0e38f, -1.0e-38f }).to(ScalarType.BFloat16)),
            Named("f16", randn(2, 3).to(ScalarType.Float16)),
            Named("i64", tensor(new[] { long.MaxValue, -1L, 0L })),
            Named("scalar", tensor(3.25f)),
            Named("empty", zeros(0, 4, dtype: ScalarType.BFloat16)),
            Named("mask", tensor(new[] { true, false, true })),
        ];
    }

    [Fact]
    public void Save_ThenLoad_GivesSameNamesDtypesShapesAndBits()
    {
        var path = Path.Combine(TestSupport.TempDir(), "m.safetensors");
        var tensors = Sample();
        Safetensors.Save(path, tensors);
        AssertSame(tensors, Safetensors.Load(path));
        Assert.Empty(Safetensors.Load(path)["scalar"].shape);
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Fact]
    public void Save_Header_HasPtFormatMetadataAndLengthMultipleOf8()
    {
        var path = Path.Combine(TestSupport.TempDir(), "m.safetensors");
        Safetensors.Save(path, Sample());
        var bytes = File.ReadAllBytes(path);
        var length = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, length % 8);
        Assert.Contains("\"__metadata__\":{\"format\":\"pt\"}", Encoding.UTF8.GetString(bytes, 8, length));
        Assert.Equal(bytes.Length - 8 - length, Safetensors.ReadHeader(path).Max(e => e.End));
    }

    [Fact]
    public void Load_HandWrittenF32AndBf16_GivesSpecValuesInCOrder()
    {
        var data = new byte[20];
        for (int i = 0; i < 4; i++) BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(4 * i), i + 1);
        new byte[] { 0x80, 0x3F, 0x20, 0xC0 }.CopyTo(data, 16); // bf16 1.0 and -2.5
        var path = WriteRaw("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
            + "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[16,20]},\"__metadata__\":{\"format\":\"pt\"}}   ", data);
        var loaded = Safetensors.Load(path);
        Assert.Equal([2L, 2L], loaded["w"].shape);
        Assert.Equal(3f, loaded["w"][1, 0].item<float>());
        Assert.Equal([1f, 2f, 3f, 4f], loaded["w"].data<float>().ToArray());
        Assert.Equal(ScalarType.BFloat16, loaded["b"].dtype);
        Assert.Equal([1f, -2.5f], loaded["b"].to(ScalarType.Float32).data<float>().ToArray());
    }

    [Theory]
    [InlineData("tiny-gpt2", 28, "F32", "transformer.h.0.attn.c_attn.weight", 32, 96)]
    [InlineData("tiny-llama3", 20, "BF16", "model.layers.0.self_attn.q_proj.weight", 32, 32)]
    public void ReadHeaderAndLoad_HfWrittenFile_ListsTensorsAndKeepsBytes(string model, int count, string dtype, string name, long rows, long cols)
    {
        var path = Path.Combine(HfModel(model), "model.safetensors");
        var entries = Safetensors.ReadHeader(path);
        Assert.Equal(count, entries.Count);
        Assert.All(entries, e => Assert.Equal(dtype, e.Dtype));
        var entry = Assert.Single(entries, e => e.Name == name);
        Assert.Equal([rows, cols], entry.Shape);
        var file = File.ReadAllBytes(path);
        long dataStart = 8 + (long)BinaryPrimitives.ReadUInt64LittleEndian(file);
        var loaded = Safetensors.LoadFolder(HfModel(model));
        Assert.Equal(count, loaded.Count);
        Assert.Equal(file[(int)(dataStart + entry.Begin)..(int)(dataStart + entry.End)], Bits(loaded[name]));
    }

    [Fact]
    public void SaveFolder_SmallShardLimit_WritesShardsAndIndexThatLoadBack()
    {
        var dir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), "{}");
        var tensors = new[] { Named("a", ones(4, 4)), Named("big", ones(10, 10)), Named("b", ones(4, 4)), Named("c", ones(4, 4)), Named("d", ones(4, 4)) }.ToList();
        Safetensors.SaveFolder(dir, tensors, maxShardBytes: 150); // 64-byte tensors and one of 400 bytes
        var shards = Enumerable.Range(1, 4).Select(i => $"model-{i:D5}-of-00004.safetensors").ToArray();
        Assert.Equal(["config.json", .. shards, Safetensors.IndexFile], Directory.GetFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        using var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, Safetensors.IndexFile)));
        Assert.Equal(4 * 64 + 400, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
        var map = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString());
        Assert.Equal(new Dictionary<string, string?> { ["a"] = shards[0], ["big"] = shards[1], ["b"] = shards[2], ["c"] = shards[2], ["d"] = shards[3] }, map);
        AssertSame(tensors, Safetensors.LoadFolder(dir));

        Safetensors.SaveFolder(dir, tensors.Take(2));
        Assert.Equal(["config.json", Safetensors.SingleFile], Directory.GetFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        AssertSame(tensors.Take(2), Safetensors.LoadFolder(dir));
    }

    private const string F32x4 = "\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}";

    [Theory]
    [InlineData("{" + F32x4 + "}", 8, null, "truncated (the header describes 16 bytes of tensor data, the file holds 8)")]
    [InlineData("{" + F32x4 + "}", 16, 1000UL, "header length 1000 is beyond the file")]
    [InlineData("{" + F32x4 + "}", 16, 200_000_000UL, "exceeds the 100 MB limit")]
    [InlineData("{\"w\": [1, 2", 16, null, "header is not valid JSON")]
    [InlineData("{\"w\":{\"dtype\":\"F33\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, null, "tensor 'w' has unknown dtype 'F33'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16, null, "data_offsets [0, 12] hold 12 bytes, but F32 [2, 2] takes 16")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":\"2x2\",\"data_offsets\":[0,16]}}", 16, null, "tensor 'w': header entry is not")]
    [InlineData("{" + F32x4 + ",\"v\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24, null, "tensors 'w' and 'v' overlap")]
    public void ReadHeader_BadFile_NamesFileAndProblem(string json, int dataBytes, ulong? length, string problem)
    {
        var path = WriteRaw(json, new byte[dataBytes], length);
        AssertFails(() => Safetensors.ReadHeader(path), path, problem);
        AssertFails(() => Safetensors.Load(path), path, problem);
    }

    [Fact]
    public void Load_Float8Tensor_RefusedNamingTensorAndDtype()
    {
        var path = WriteRaw("{\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", new byte[4]);
        Assert.Equal("F8_E4M3", Assert.Single(Safetensors.ReadHeader(path)).Dtype);
        AssertFails(() => Safetensors.Load(path), path, "tensor 'q' is F8_E4M3, which TorchSharp cannot hold");
    }

    /// <summary>A folder with shard files holding the given tensor names and an index with the given weight_map.</summary>
    private static string ShardedFolder(Dictionary<string, string[]> shards, string weightMap)
    {
        var dir = TestSupport.TempDir();
        foreach (var (file, names) in shards) Safetensors.Save(Path.Combine(dir, file), names.Select(n => Named(n, ones(2))));
        File.WriteAllText(Path.Combine(dir, Safetensors.IndexFile), "{\"metadata\": {}, \"weight_map\": {" + weightMap + "}}");
        return dir;
    }

    [Fact]
    public void LoadFolder_ShardMissing_NamesIndexAndShard()
    {
        var dir = ShardedFolder(new() { ["s1.safetensors"] = ["a"] }, "\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\"");
        AssertFails(() => Safetensors.LoadFolder(dir), Path.Combine(dir, Safetensors.IndexFile), "shard 's2.safetensors' named in the weight_map is missing");
    }

    [Fact]
    public void LoadFolder_IndexedTensorAbsentFromShard_NamesShardAndTensor()
    {
        var dir = ShardedFolder(new() { ["s1.safetensors"] = ["a"] }, "\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\"");
        AssertFails(() => Safetensors.LoadFolder(dir), Path.Combine(dir, "s1.safetensors"), "tensor 'b' is absent");
    }

    [Fact]
    public void LoadFolder_TensorInTwoShards_NamesSecondShard()
    {
        var dir = ShardedFolder(new() { ["s1.safetensors"] = ["a"], ["s2.safetensors"] = ["a", "b"] }, "\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\"");
        AssertFails(() => Safetensors.LoadFolder(dir), Path.Combine(dir, "s2.safetensors"), "tensor 'a' is also in s1.safetensors");
    }

    [Fact]
    public void LoadFolder_IndexNotJson_NamesIndex()
    {
        var dir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(dir, Safetensors.IndexFile), "{\"weight_map\": ");
        AssertFails(() => Safetensors.LoadFolder(dir), Path.Combine(dir, Safetensors.IndexFile), "not valid JSON");
    }

    [Fact]
    public void LoadFolder_PickleOnly_RefusedWithConversionCommand()
    {
        var dir = TestSupport.TempDir();
        File.WriteAllBytes(Path.Combine(dir, "pytorch_model.bin"), [0x80, 0x02]);
        AssertFails(() => Safetensors.LoadFolder(dir), Path.Combine(dir, "pytorch_model.bin"), "pickle weights are not loaded (they can run code)");
        AssertFails(() => Safetensors.LoadFolder(dir), Path.Combine(dir, "pytorch_model.bin"), "save_pretrained('" + dir + "', safe_serialization=True)");
    }

    [Fact]
    public void LoadFolder_EmptyFolder_SaysNoWeights()
    {
        var dir = TestSupport.TempDir();
        AssertFails(() => Safetensors.LoadFolder(dir), dir, "no model weights (model.safetensors or model.safetensors.index.json)");
    }
}
