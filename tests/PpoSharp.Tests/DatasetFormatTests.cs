using System.Text.Json.Nodes;
using PpoSharp.Data;
using PpoSharp.Rewards;
using PpoSharp.Text;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>
/// TRL's dataset formats ("Dataset formats" in TRL's documentation): detection by field, what each reader makes of each
/// format in its standard and conversational form, the loss mask of each, column mapping, system prompts and splits.
/// </summary>
public class DatasetFormatTests
{
    private static string Ref(string name) => Path.Combine(AppContext.BaseDirectory, "ParquetData", name);

    private const string U = """{"role":"user","content":"sort: ba"}""", A = """{"role":"assistant","content":"ab"}""", R = """{"role":"assistant","content":"ba"}""";

    /// <summary>One record of each format, as TRL's guide writes it, the format it is, and whether it is conversational.</summary>
    public static TheoryData<string, DatasetFormat, bool> Examples => new()
    {
        { """{"text": "The sky is blue."}""", DatasetFormat.LanguageModeling, false },
        { $$"""{"messages": [{{U}}, {{A}}]}""", DatasetFormat.LanguageModeling, true },
        { """{"prompt": "The sky is"}""", DatasetFormat.PromptOnly, false },
        { $$"""{"prompt": [{{U}}]}""", DatasetFormat.PromptOnly, true },
        { $$"""{"messages": [{{U}}], "solution": "ab"}""", DatasetFormat.PromptOnly, true },                         // PpoSharp's own prompt shape
        { """{"prompt": "The sky is", "completion": " blue."}""", DatasetFormat.PromptCompletion, false },
        { $$"""{"prompt": [{{U}}], "completion": [{{A}}]}""", DatasetFormat.PromptCompletion, true },
        { """{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}""", DatasetFormat.Preference, false },
        { $$"""{"prompt": [{{U}}], "chosen": [{{A}}], "rejected": [{{R}}]}""", DatasetFormat.Preference, true },
        { $$"""{"messages": [{{U}}], "chosen": "ab", "rejected": "ba"}""", DatasetFormat.Preference, true },          // PpoSharp's own pair shape
        { """{"chosen": "The sky is blue.", "rejected": "The sky is green."}""", DatasetFormat.ImplicitPreference, false },
        { $$"""{"chosen": [{{U}}, {{A}}], "rejected": [{{U}}, {{R}}]}""", DatasetFormat.ImplicitPreference, true },
        { """{"prompt": "The sky is", "completion": " blue.", "label": true}""", DatasetFormat.UnpairedPreference, false },
        { """{"prompt": "2 + 2", "completions": ["= 4"], "labels": [true]}""", DatasetFormat.StepwiseSupervision, false },
    };

    [Theory, MemberData(nameof(Examples))]
    public void Detect_TrlExample_FormatAndKind(string json, DatasetFormat format, bool conversational)
    {
        var found = DatasetFormats.Detect(JsonNode.Parse(json)!.AsObject());
        Assert.Equal(new DetectedFormat(format, conversational), found);
    }

    [Fact]
    public void Detect_OtherFields_None() =>
        Assert.Null(DatasetFormats.Detect(JsonNode.Parse("""{"question": "q", "answer": "#### 4"}""")!.AsObject()));

    private static string File1(string name, params string[] lines) => TestSupport.WriteLines(TestSupport.TempDir(), name, lines);

    private static readonly CharTokenizer Chars = CharTokenizer.FromTexts(["abcdefghijklmnopqrstuvwxyz :."]);

    [Fact]
    public void Encode_StandardPromptCompletion_LossOnCompletionAndEos()
    {
        var r = Jsonl.ReadChat(File1("pc.jsonl", """{"prompt": "ab", "completion": "c"}""")).Records.Single();
        var (ids, trained) = SftTrainer.Encode(r, Chars);
        // the text "abc" with no template, then EOS; the prompt's 2 ids are not trained, "c" and EOS are
        Assert.Equal([.. Chars.Encode("abc"), Chars.Special.Eos[0]], ids);
        Assert.Equal([false, false, true, true], trained);
    }

    [Fact]
    public void Encode_StandardText_WholeTextTrained()
    {
        var r = Jsonl.ReadChat(File1("lm.jsonl", """{"body": "ab"}"""), options: new DataOptions { DatasetTextField = "body" }).Records.Single();
        var (ids, trained) = SftTrainer.Encode(r, Chars);
        Assert.Equal([.. Chars.Encode("ab"), Chars.Special.Eos[0]], ids);
        Assert.Equal([true, true, true], trained);
    }

    [Fact]
    public void Encode_ConversationalPromptCompletion_EarlierAssistantTurnNotTrained()
    {
        // prompt: user "a", assistant "b", user "c"; completion: assistant "d". Role-token layout, one id each:
        // <user> a <end> <assistant> b <end> <user> c <end> | <assistant> d <end>. The prompt with its generation prompt
        // covers the first 10 ids; of the rest, "d" and its <end> are trained (the <assistant> header is not).
        const string line = """{"prompt": [{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}], "completion": [{"role":"assistant","content":"d"}]}""";
        var r = Jsonl.ReadChat(File1("pcc.jsonl", line)).Records.Single();
        Assert.Equal(3, r.PromptMessages);
        var (ids, trained) = SftTrainer.Encode(r, Chars);
        Assert.Equal(12, ids.Count);
        Assert.Equal([false, false, false, false, false, false, false, false, false, false, true, true], trained);
        // as language modelling ({"messages"}) the same conversation trains the earlier assistant turn "b" and its <end> too
        var lm = Jsonl.ReadChat(File1("lm.jsonl", $$"""{"messages": [{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"assistant","content":"d"}]}""")).Records.Single();
        Assert.Equal(4, SftTrainer.Encode(lm, Chars).Trained.Count(t => t));
    }

    [Fact]
    public void ReadPreferences_EachForm_SamePromptAndAnswers()
    {
        var dir = TestSupport.TempDir();
        var explicitStd = TestSupport.WriteLines(dir, "e.jsonl", """{"prompt": "sort: ba", "chosen": "ab", "rejected": "ba"}""");
        var explicitConv = TestSupport.WriteLines(dir, "ec.jsonl", $$"""{"prompt": [{{U}}], "chosen": [{{A}}], "rejected": [{{R}}]}""");
        var implicitConv = TestSupport.WriteLines(dir, "ic.jsonl", $$"""{"chosen": [{{U}}, {{A}}], "rejected": [{{U}}, {{R}}]}""");
        foreach (var path in new[] { explicitStd, explicitConv, implicitConv })
        {
            var p = Jsonl.ReadPreferences(path).Records.Single();
            Assert.Equal([new ChatMessage(Role.User, "sort: ba")], p.Messages);
            Assert.Equal(("ab", "ba"), (p.Chosen, p.Rejected));
        }
    }

    [Fact]
    public void ReadPreferences_ImplicitText_SplitAsTrlExtractPrompt()
    {
        // TRL's extract_prompt: the texts first differ at 'b'/'g' (index 11); the space before it goes with the answers
        var p = Jsonl.ReadPreferences(File1("i.jsonl", """{"chosen": "The sky is blue.", "rejected": "The sky is green."}""")).Records.Single();
        Assert.Equal("The sky is", p.Messages.Single().Content);
        Assert.Equal((" blue.", " green."), (p.Chosen, p.Rejected));
    }

    [Fact]
    public void ReadPrompts_Gsm8kFolderMapped_LabelsScoredByMath()
    {
        var o = new DataOptions { PromptColumn = "question", SolutionColumn = "answer", Split = "train" };
        var prompts = Jsonl.ReadPrompts(Ref("gsm8k"), options: o).Records;
        Assert.Equal(3, prompts.Count);
        Assert.Equal("Ana has 3 boxes of 12 eggs and breaks 5. How many eggs are left?", prompts[0].Messages.Single().Content);
        Assert.Equal("3 * 12 = <<3*12=36>>36 eggs. 36 - 5 = <<36-5=31>>31.\n#### 31", prompts[0].Solutions.Single());
        Assert.Equal(prompts[0].Solutions.Single(), prompts[0].Columns!["answer"]);     // the column itself reaches the rewards by name
        Assert.False(prompts[0].Columns!.ContainsKey("question"));
        var inputs = new[] { "so 36 - 5 = 31 eggs.\n#### 31", "#### 30", "#### 3,000" }
            .Select((text, i) => new RewardInput(prompts[i == 2 ? 2 : 0].Messages, text, prompts[i == 2 ? 2 : 0].Solutions, prompts[0].Source)).ToList();
        Assert.Equal([1.0, 0.0, 1.0], new MathReward().Score(inputs));
        Assert.Single(Jsonl.ReadPrompts(Ref("gsm8k"), options: o with { Split = "test" }).Records);
    }

    [Fact]
    public void ReadPrompts_SystemPrompt_FirstUnlessTheRecordHasOne()
    {
        var path = File1("p.jsonl", """{"prompt": "sort: ba"}""", """{"messages": [{"role":"system","content":"Own."}, {"role":"user","content":"sort: cb"}]}""");
        var records = Jsonl.ReadPrompts(path, options: new DataOptions { SystemPrompt = "Think first." }).Records;
        Assert.Equal([new ChatMessage(Role.System, "Think first."), new ChatMessage(Role.User, "sort: ba")], records[0].Messages);
        Assert.Equal("Own.", records[1].Messages[0].Content);
        Assert.Equal(2, records[1].Messages.Count);
    }

    [Fact]
    public void ReadPrompts_ShardOfAnotherFormat_NamesThatShard()
    {
        // the format is detected per file: a folder whose test shard holds pairs is refused naming that shard
        var dir = TestSupport.TempDir();
        Directory.CreateDirectory(Path.Combine(dir, "data"));
        TestSupport.WriteLines(Path.Combine(dir, "data"), "train-00000-of-00002.jsonl", """{"prompt": "sort: ba", "solution": "ab"}""");
        var second = TestSupport.WriteLines(Path.Combine(dir, "data"), "train-00001-of-00002.jsonl", """{"prompt": "sort: ba", "chosen": "ab", "rejected": "ba"}""");
        var e = Assert.Throws<PpoSharpException>(() => Jsonl.ReadPrompts(dir, options: new DataOptions { Command = "grpo" }));
        Assert.StartsWith($"{second}: preference (standard) records (fields: prompt, chosen, rejected); grpo takes prompt-only", e.Message);
    }

    /// <summary>A file of each format, standard and conversational, and the tokens inspect shows trained.</summary>
    public static TheoryData<string, string, int> InspectFiles => new()
    {
        { """{"text": "ab"}""", "language modelling (standard)", 3 },                                   // a, b, EOS
        { $$"""{"messages": [{{U}}, {{A}}]}""", "language modelling (conversational)", 3 },                // a, b, <end>
        { """{"prompt": "sort: ba", "completion": "ab"}""", "prompt-completion (standard)", 3 },
        { $$"""{"prompt": [{{U}}], "completion": [{{A}}]}""", "prompt-completion (conversational)", 3 },
        { """{"prompt": "sort: ba", "solution": "ab"}""", "prompt-only (standard)", 0 },
        { $$"""{"prompt": [{{U}}]}""", "prompt-only (conversational)", 0 },
        { """{"prompt": "sort: ba", "chosen": "ab", "rejected": "ba"}""", "preference (standard)", 3 },    // the chosen answer
        { $$"""{"prompt": [{{U}}], "chosen": [{{A}}], "rejected": [{{R}}]}""", "preference (conversational)", 3 },
        { """{"chosen": "sort: ba ab", "rejected": "sort: ba ba"}""", "preference with an implicit prompt (standard)", 4 },   // " ab" and <end>
        { $$"""{"chosen": [{{U}}, {{A}}], "rejected": [{{U}}, {{R}}]}""", "preference with an implicit prompt (conversational)", 3 },
    };

    [Theory, MemberData(nameof(InspectFiles))]
    public void Inspect_EachFormat_NamesItAndMasksTheLearntTokens(string line, string format, int trained)
    {
        var (code, output, err) = TestSupport.RunCli("inspect", "--model", Path.Combine(TestSupport.TrainedSortModel, "model"), "--data", File1("f.jsonl", line), "--json");
        Assert.True(code == 0, err);
        var view = JsonNode.Parse(output)!;
        Assert.Equal(format, view["format"]!.GetValue<string>());
        Assert.Equal(trained, view["loss_mask"]!.AsArray().Count(x => x!.GetValue<int>() == 1));
    }

    [Fact]
    public void Inspect_StepwiseSupervision_NamesTheFormatsTaken()
    {
        var path = File1("s.jsonl", """{"prompt": "2 + 2", "completions": ["= 4"], "labels": [true]}""");
        var (code, _, err) = TestSupport.RunCli("inspect", "--model", Path.Combine(TestSupport.TrainedSortModel, "model"), "--data", path);
        Assert.Equal(2, code);
        Assert.StartsWith($"error: {path}: stepwise supervision (standard) records (fields: prompt, completions, labels); inspect takes language modelling", err);
    }
}
