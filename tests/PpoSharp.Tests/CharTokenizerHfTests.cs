using System.Text.Json.Nodes;
using PpoSharp.Data;
using PpoSharp.Text;
using Xunit;

namespace PpoSharp.Tests;

/// <summary>
/// The character tokenizer's Hugging Face files (HfData/char, as <see cref="CharTokenizer.Save"/> writes them) against
/// two outside readers: transformers.js, whose ids tools/reference/char-expected.mjs committed in HfData/reference/char.json,
/// and Hugging Face's Rust tokenizers (through <see cref="HfTokenizer"/>), run here.
/// </summary>
public class CharTokenizerHfTests
{
    private static readonly string Fixture = Path.Combine(AppContext.BaseDirectory, "HfData", "char");
    private static readonly Lazy<JsonObject> Reference = new(() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "HfData", "reference", "char.json")))!.AsObject());

    /// <summary>The fixture's tokenizer: every character of this text (with a combining acute and a zero-width joiner).</summary>
    private static CharTokenizer Make() => CharTokenizer.FromTexts(["abcdehlnorwxy 2+4?\n\t.日本😀é\u0301\u200D"]);

    public static TheoryData<int> Strings() => [.. Enumerable.Range(0, 11)];

    [Fact]
    public void Save_WritesTheFilesTheReferenceRead()
    {
        var dir = TestSupport.TempDir();
        Make().Save(dir);
        foreach (var file in new[] { Tokenizers.FileName, HfConfigFiles.TokenizerConfig })
            Assert.Equal(File.ReadAllText(Path.Combine(Fixture, file)), File.ReadAllText(Path.Combine(dir, file)));
    }

    [Theory, MemberData(nameof(Strings))]
    public void Ids_AreTransformersJs(int index)
    {
        var c = Reference.Value["strings"]!.AsArray()[index]!;
        var text = c["text"]!.GetValue<string>();
        var expected = HfTestData.Ints(c["ids"]);
        var t = Assert.IsType<CharTokenizer>(Tokenizers.Load(Fixture));
        Assert.Equal(expected, Tokenizers.EncodeText(t, text));
        Assert.Equal(HfTestData.Ints(c["ids_with_special"]), Tokenizers.EncodeText(t, text));
        if (!SpecialTokens.All.Any(text.Contains)) Assert.Equal(expected, t.Encode(text));   // role strings in user text stay characters
        Assert.Equal(c["decoded"]!.GetValue<string>(), t.Decode(expected));
        Assert.Equal(c["decoded_with_special"]!.GetValue<string>(), t.Decode(expected, skipSpecial: false));
    }

    [Fact]
    public void Reference_CoversUnknownCharactersAndRoleTokens()
    {
        var ids = Reference.Value["strings"]!.AsArray().SelectMany(c => HfTestData.Ints(c!["ids"])).ToHashSet();
        Assert.Contains(CharTokenizer.Unknown, ids);
        Assert.All(Enumerable.Range(1, SpecialTokens.All.Length), id => Assert.Contains(id, ids));
    }

    [Fact]
    public void ChatTemplate_IsTransformersJsApplyChatTemplate()
    {
        var t = Tokenizers.Load(Fixture);
        foreach (var c in Reference.Value["chats"]!.AsArray())
        {
            var messages = c!["messages"]!.AsArray().Select(m => new ChatMessage(
                Enum.Parse<Role>(m!["role"]!.GetValue<string>(), ignoreCase: true), m["content"]!.GetValue<string>())).ToList();
            bool prompt = c["add_generation_prompt"]!.GetValue<bool>();
            var ids = HfTestData.Ints(c["ids"]);
            Assert.Equal(ids, prompt ? t.Chat.EncodePrompt(messages) : t.Chat.EncodeConversation(messages).Ids);
            if (!ids.Contains(CharTokenizer.Unknown)) Assert.Equal(c["text"]!.GetValue<string>(), t.Chat.Render(messages, prompt));   // Render decodes ids
        }
        Assert.Contains(Reference.Value["chats"]!.AsArray(), c => !HfTestData.Ints(c!["ids"]).Contains(CharTokenizer.Unknown));
    }

    [Fact]
    public void RustTokenizers_GiveTheSameIdsAndChat()
    {
        var ours = Tokenizers.Load(Fixture);
        using var rust = HfTokenizer.Load(Fixture);
        foreach (var c in Reference.Value["strings"]!.AsArray())
        {
            var text = c!["text"]!.GetValue<string>();
            Assert.Equal(Tokenizers.EncodeText(ours, text), rust.EncodeWithSpecialTokens(text));
        }
        var chat = new List<ChatMessage> { new(Role.System, "be brief"), new(Role.User, "hello 😀\nworld 🙂") };
        Assert.Equal(ours.Chat.EncodePrompt(chat), rust.Chat.EncodePrompt(chat));
        Assert.Equal(ours.Special.Pad, rust.Special.Pad);
        Assert.Equal(ours.Special.Eos, rust.Special.Eos);
    }

    [Fact]
    public void OldRunsSpecFile_StillLoads_AndIsNotPretrained()
    {
        var dir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(dir, Tokenizers.FileName), """{"type": "char", "alphabet": "ab😀"}""");
        var t = Assert.IsType<CharTokenizer>(Tokenizers.Load(dir));
        Assert.Equal(new[] { 6, 8, 7, CharTokenizer.Unknown }, t.Encode("a😀bz"));
        Assert.False(Tokenizers.IsPretrained(dir));
        Assert.False(Tokenizers.IsPretrained(Fixture));
    }

    [Fact]
    public void AnotherWordLevelTokenizer_IsHuggingFaces()
    {
        var dir = TestSupport.TempDir();
        var json = CharTokenizerFiles.TokenizerJson(Make());
        json["pre_tokenizer"] = new JsonObject { ["type"] = "Whitespace" };
        File.WriteAllText(Path.Combine(dir, Tokenizers.FileName), json.ToJsonString());
        File.Copy(Path.Combine(Fixture, HfConfigFiles.TokenizerConfig), Path.Combine(dir, HfConfigFiles.TokenizerConfig));
        using var t = Assert.IsType<HfTokenizer>(Tokenizers.Load(dir));
        Assert.True(Tokenizers.IsPretrained(dir));
        Assert.Equal(new[] { json["model"]!["vocab"]!["h"]!.GetValue<int>(), CharTokenizer.Unknown }, t.Encode("h hello"));
    }
}
