using System.Text.Json.Nodes;
using PpoSharp.Text;

namespace PpoSharp.Tests;

/// <summary>HfTokenizer against transformers.js' output on five real tokenizers, and its special ids, errors and files.</summary>
public class HfTokenizerTests
{
    public static TheoryData<string> Names => [.. HfTestData.Names];

    [Theory, MemberData(nameof(Names))]
    public void EncodeDecode_EveryReferenceCase_MatchesTransformersJs(string name)
    {
        var tokenizer = HfTestData.Tokenizer(name);
        var cases = HfTestData.Tokenization["tokenizers"]![name]!["cases"]!.AsArray();
        Assert.True(cases.Count >= 45, $"{name}: only {cases.Count} reference cases");
        var mismatches = new List<string>();
        for (int i = 0; i < cases.Count; i++)
        {
            var c = cases[i]!;
            var text = c["text"]!.GetValue<string>();
            var ids = HfTestData.Ints(c["ids"]);
            if (!ids.SequenceEqual(tokenizer.Encode(text))) mismatches.Add($"{HfTestData.Label(i, text)}: ids");
            if (!HfTestData.Ints(c["ids_with_special"]).SequenceEqual(tokenizer.EncodeWithSpecialTokens(text)))
                mismatches.Add($"{HfTestData.Label(i, text)}: ids_with_special");
            if (c["decoded"]!.GetValue<string>() != tokenizer.Decode(ids)) mismatches.Add($"{HfTestData.Label(i, text)}: decoded");
        }
        Assert.True(mismatches.Count == 0, $"{name}: {mismatches.Count} mismatches, first: {mismatches.FirstOrDefault()}");
    }

    [Fact]
    public void Decode_KeepingSpecialTokens_GivesBackEveryReferenceChatText()
    {
        foreach (var c in HfTestData.Chat["cases"]!.AsArray())
        {
            var tokenizer = HfTestData.Tokenizer(c!["tokenizer"]!.GetValue<string>());
            Assert.Equal(c["text"]!.GetValue<string>(), tokenizer.Decode(HfTestData.Ints(c["ids"]), skipSpecial: false));
        }
    }

    [Fact]
    public void Decode_SkippingSpecialTokens_DropsOnlySpecialIds()
    {
        var qwen = HfTestData.Tokenizer("qwen3");
        var ids = qwen.Encode("<|im_start|>user\n<think>hi</think><|im_end|>");
        Assert.Equal("user\n<think>hi</think>", qwen.Decode(ids));                 // <think> is an added token, not a special one
        Assert.Equal("", qwen.Decode([-1, qwen.VocabSize, 151645]));
    }

    [Theory]
    [InlineData("gpt2", 50257)]
    [InlineData("llama3", 128256)]
    [InlineData("qwen3", 151669)]
    [InlineData("mistral", 32000)]
    public void VocabSize_RealTokenizers_IsHighestIdPlusOne(string name, int expected) =>
        Assert.Equal(expected, HfTestData.Tokenizer(name).VocabSize);

    [Fact]
    public void Special_GenerationConfigEosList_IsUsedWhole_AndPadFallsBackToEosToken()
    {
        var dir = HfTestData.Folder("llama3", ("generation_config.json", """{"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}"""));
        using var tokenizer = HfTokenizer.Load(dir);
        Assert.Equal([128001, 128008, 128009], tokenizer.Special.Eos);
        Assert.Equal(128009, tokenizer.Special.Pad);                                 // tokenizer_config's eos_token <|eot_id|>, as TRL pads
        Assert.Equal(128000, tokenizer.Bos);
    }

    [Fact]
    public void Special_NoPadAndNoEosToken_PadsWithFirstEosId()
    {
        var dir = HfTestData.Folder("llama3",
            ("tokenizer_config.json", HfTestData.EditedConfig("llama3", c => c.Remove("eos_token"))),
            ("generation_config.json", """{"eos_token_id": [128001, 128008, 128009]}"""));
        using var tokenizer = HfTokenizer.Load(dir);
        Assert.Equal(128001, tokenizer.Special.Pad);
        Assert.True(tokenizer.Special.IsEos(128008));
    }

    [Fact]
    public void Special_ConfigJsonIds_AreUsedWithoutGenerationConfig()
    {
        var dir = HfTestData.Folder("llama3",
            ("tokenizer_config.json", HfTestData.EditedConfig("llama3", c => c.Remove("eos_token"))),
            ("config.json", """{"eos_token_id": 128001, "pad_token_id": 128004}"""));
        using var tokenizer = HfTokenizer.Load(dir);
        Assert.Equal([128001], tokenizer.Special.Eos);
        Assert.Equal(128004, tokenizer.Special.Pad);
    }

    [Fact]
    public void Special_TokenizerConfigStrings_GiveEosAndPad()
    {
        var qwen = HfTestData.Tokenizer("qwen3");
        Assert.Equal([151645], qwen.Special.Eos);                                   // <|im_end|>
        Assert.Equal(151643, qwen.Special.Pad);                                     // <|endoftext|>
        Assert.Null(qwen.Bos);
    }

    [Fact]
    public void Load_NoEosAnywhere_NamesTheThreeSources()
    {
        var dir = HfTestData.Folder("gpt2", ("tokenizer_config.json", "{}"));
        var e = Assert.Throws<PpoSharpException>(() => HfTokenizer.Load(dir));
        Assert.Equal($"{dir}: no EOS token (none of generation_config.json eos_token_id, config.json eos_token_id, tokenizer_config.json eos_token)", e.Message);
    }

    [Fact]
    public void Load_MissingTokenizerJson_GivesOneLineError()
    {
        var dir = TestSupport.TempDir();
        var e = Assert.Throws<PpoSharpException>(() => HfTokenizer.Load(dir));
        Assert.Equal($"{Path.Combine(dir, "tokenizer.json")}: missing (a Hugging Face model folder needs its tokenizer.json; sentencepiece-only tokenizer.model folders are not supported)", e.Message);
    }

    [Theory]
    [InlineData("{\"model\": ", "not a valid tokenizer.json (")]
    [InlineData("{\"added_tokens\": [], \"model\": {\"type\": \"NoSuchModel\"}}", "the tokenizers library cannot load it (")]
    public void Load_BrokenTokenizerJson_GivesOneLineErrorNamingTheFile(string content, string problem)
    {
        var dir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), content);
        var e = Assert.Throws<PpoSharpException>(() => HfTokenizer.Load(dir));
        Assert.StartsWith($"{Path.Combine(dir, "tokenizer.json")}: {problem}", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Load_EosTokenNotInVocabulary_NamesTheKey()
    {
        var dir = HfTestData.Folder("gpt2", ("tokenizer_config.json", """{"eos_token": "<|no_such_token|>"}"""));
        var e = Assert.Throws<PpoSharpException>(() => HfTokenizer.Load(dir));
        Assert.Equal($"{Path.Combine(dir, "tokenizer_config.json")}: eos_token '<|no_such_token|>' is not a token of tokenizer.json", e.Message);
    }

    [Fact]
    public void Save_CopiesTokenizerFilesButNotModelConfigs_AndTheCopyEncodesTheSame()
    {
        var dir = HfTestData.Folder("llama3", ("generation_config.json", """{"eos_token_id": [128001, 128009]}"""), ("config.json", "{}"));
        var target = TestSupport.TempDir();
        using (var tokenizer = HfTokenizer.Load(dir)) tokenizer.Save(target);
        Assert.Equal(["tokenizer.json", "tokenizer_config.json"], Directory.GetFiles(target).Select(Path.GetFileName).Order());
        using var copy = HfTokenizer.Load(target);
        Assert.Equal(target, copy.SourceDirectory);
        Assert.Equal(HfTestData.Tokenizer("llama3").Encode("Hello <|eot_id|> world"), copy.Encode("Hello <|eot_id|> world"));
    }

    [Fact]
    public void CleanUpTokenization_RemovesSpacesLikeTransformers() =>
        Assert.Equal("Hi, you! I'm sure it's fine. Don't'x", HfTokenizer.CleanUpTokenization("Hi , you ! I 'm sure it 's fine . Do n't ' x"));
}
