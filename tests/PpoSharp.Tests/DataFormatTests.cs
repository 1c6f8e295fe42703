using System.Text.Json.Nodes;
using PpoSharp.Data;

namespace PpoSharp.Tests;

/// <summary>
/// Data files beyond JSON Lines: Parquet files written by DuckDB (tools/parquet-reference/make.mjs) read with the same
/// rows and values as their JSON Lines twins, a Hugging Face dataset folder of shards, JSON arrays, and their bad inputs.
/// </summary>
public class DataFormatTests
{
    private static string Ref(string name) => Path.Combine(AppContext.BaseDirectory, "ParquetData", name);

    private static (int Code, string Out, string Err) Run(params string[] args) => TestSupport.RunCli(args);

    [Theory]
    [InlineData("prompts")]            // nulls, a list of strings (solution group), nested messages, unicode, escapes, BIGINT
    [InlineData("prompt-completion")]
    [InlineData("preference")]         // conversational: lists of {role, content} structs
    [InlineData("wrong-types")]
    public void Parquet_DuckDbFile_SameRowsAsJsonlTwin(string name)
    {
        var parquet = DataRows.Read(Ref(name + ".parquet")).ToList();
        var jsonl = DataRows.Read(Ref(name + ".jsonl")).ToList();
        Assert.Equal(jsonl.Count, parquet.Count);
        foreach (var (p, j) in parquet.Zip(jsonl))
            Assert.True(JsonNode.DeepEquals(JsonNode.Parse(j.Json), JsonNode.Parse(p.Json)), $"{p.Source}: {p.Json} != {j.Json}");
        Assert.Equal($"{Ref(name + ".parquet")}: row 1", parquet[0].Source.ToString());
    }

    [Fact]
    public void ReadPrompts_Parquet_SameRecordsAsJsonl()
    {
        var p = Jsonl.ReadPrompts(Ref("prompts.parquet")).Records;
        var j = Jsonl.ReadPrompts(Ref("prompts.jsonl")).Records;
        Assert.Equal(j.SelectMany(r => r.Messages), p.SelectMany(r => r.Messages));
        Assert.Equal(j.Select(r => string.Join("|", r.Solutions)), p.Select(r => string.Join("|", r.Solutions)));
        Assert.Equal(["ab", "a b"], p[1].Solutions);
        Assert.Empty(p[2].Solutions);                   // solution null
        Assert.Equal("null", p[1].Columns!["answer"]);  // answer null, handed on as JSON text
        Assert.Equal("#### 42", p[2].Columns!["answer"]);
        Assert.Equal("3", p[2].Columns!["id"]);
    }

    [Fact]
    public void HfDatasetFolder_TrainSplit_ShardsInOrder()
    {
        var rows = DataRows.Read(Ref("gsm8k"), "train").ToList();
        var twins = new[] { "train-00000-of-00002", "train-00001-of-00002" }.SelectMany(s => DataRows.Read(Ref(Path.Combine("gsm8k", s + ".jsonl")))).ToList();
        Assert.Equal(3, rows.Count);
        Assert.All(rows.Zip(twins), x => Assert.True(JsonNode.DeepEquals(JsonNode.Parse(x.First.Json), JsonNode.Parse(x.Second.Json))));
        Assert.EndsWith("train-00001-of-00002.parquet: row 2", rows[2].Source.ToString());
        Assert.Single(DataRows.Read(Ref("gsm8k"), "test"));
    }

    [Fact]
    public void HfDatasetFolder_MissingSplit_NamesTheSplitsFound()
    {
        var e = Assert.Throws<PpoSharpException>(() => DataRows.Read(Ref("gsm8k"), "validation").ToList());
        Assert.Equal($"{Ref("gsm8k")}: no 'validation' split; found: test, train (choose one with --split)", e.Message);
    }

    [Fact]
    public void JsonArray_Records_ReadAsRows()
    {
        var dir = TestSupport.TempDir();
        var path = Path.Combine(dir, "records.json");
        File.WriteAllText(path, """[{"prompt": "sort: ba", "solution": "ab"}, {"prompt": [{"role": "user", "content": "sort: cb"}], "solution": ["bc"]}]""");
        var records = Jsonl.ReadPrompts(path).Records;
        Assert.Equal(["sort: ba", "sort: cb"], records.Select(r => r.Messages[^1].Content));
        Assert.Equal($"{path}: row 2", records[1].Source.ToString());
    }

    public static TheoryData<string, string, string> BadFiles => new()
    {
        // file name, contents ("{half:X}" = the first half of reference file X), expected message after the path
        { "truncated.parquet", "{half:prompts.parquet}", ": not a readable Parquet file" },
        { "text.parquet", "this is not parquet", ": not a readable Parquet file" },
        { "array.json", """[{"prompt": "a"}, 3]""", ": row 2: a record must be a JSON object" },
        { "broken.json", """[{"prompt": "a"}, """, ": invalid JSON" },
        { "prompt-number.jsonl", """{"prompt": 5}""", ":1: 'prompt' must be a string, not number" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    public void ReadPrompts_BadFile_OneLineNamingFile(string name, string contents, string expected)
    {
        var dir = TestSupport.TempDir();
        var path = Path.Combine(dir, name);
        if (contents.StartsWith("{half:", StringComparison.Ordinal))
        {
            var bytes = File.ReadAllBytes(Ref(contents[6..^1]));
            File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        }
        else File.WriteAllText(path, contents);
        var e = Assert.Throws<PpoSharpException>(() => Jsonl.ReadPrompts(path));
        Assert.StartsWith(path + expected, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Score_ParquetWrongColumnType_NamesRow()
    {
        var (code, output, err) = Run("score", "--reward", "math", "--data", Ref("wrong-types.parquet"));
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Equal($"error: {Ref("wrong-types.parquet")}: row 1: missing field 'completion'", err.Trim());
    }

    [Fact]
    public void Eval_ParquetWrongColumnType_NamesRowAndColumn()
    {
        var e = Assert.Throws<PpoSharpException>(() => Jsonl.ReadPrompts(Ref("wrong-types.parquet")));
        Assert.Equal($"{Ref("wrong-types.parquet")}: row 1: 'solution' must be a string or an array of strings", e.Message);
    }

    [Fact]
    public void Score_UnknownReward_ListsTheVerifiers()
    {
        var (code, _, err) = Run("score", "--reward", "maths", "--data", Ref("prompts.jsonl"));
        Assert.Equal(2, code);
        Assert.Equal("error: --reward: unknown reward 'maths'; allowed: exact-match, edit-distance, repetition, length, math, format, contains, json, overlong, format:REGEX, model:DIR, http://HOST:PORT/PATH", err.Trim());
    }
}
