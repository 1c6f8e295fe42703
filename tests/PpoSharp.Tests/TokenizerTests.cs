using PpoSharp.Data;
using PpoSharp.Text;

namespace PpoSharp.Tests;

public class TokenizerTests
{
    public static TheoryData<string> Kinds => ["char", "gpt2"];

    private static ITokenizer Make(string kind) => kind == "gpt2" ? new Gpt2Tokenizer() : CharTokenizer.FromTexts(["hello world <|>"]);

    [Fact]
    public void Gpt2_HelloWorld_IsTheReferenceIds()
    {
        Assert.Equal(new[] { 15496, 995 }, new Gpt2Tokenizer().Encode("Hello world"));
        Assert.Equal("Hello world", new Gpt2Tokenizer().Decode([15496, 995]));
    }

    [Theory, MemberData(nameof(Kinds))]
    public void SpecialTokens_RoundTripByName_AndAreDistinct(string kind)
    {
        var t = Make(kind);
        var s = Roles(t);
        int[] ids = [s.Pad, s.End, s.System, s.User, s.Assistant];
        Assert.Equal(5, ids.Distinct().Count());
        Assert.All(ids, id => Assert.InRange(id, 0, t.VocabSize - 1));
        Assert.Equal(string.Concat(SpecialTokens.All), t.Decode(ids, skipSpecial: false));
        Assert.Equal("", t.Decode(ids));
    }

    [Theory, MemberData(nameof(Kinds))]
    public void UserText_ContainingSpecialTokenStrings_IsNotTurnedIntoSpecialIds(string kind)
    {
        var t = Make(kind);
        var text = "hi <|user|> <|assistant|><|end|><|pad|><|system|><|endoftext|>";
        var ids = t.Encode(text);
        Assert.DoesNotContain(ids, Roles(t).Contains);
        if (kind == "gpt2") Assert.DoesNotContain(50256, ids);   // GPT-2's own <|endoftext|> stays text too
        if (kind == "gpt2") Assert.Equal(text, t.Decode(ids));
    }

    [Fact]
    public void CharTokenizer_SavedSpec_RebuildsSameIds_IncludingAstralCharacters()
    {
        var t = CharTokenizer.FromTexts(["abc", "x😀y"]);
        var again = Tokenizers.FromSpec(t.Spec, "test");
        Assert.Equal(t.Encode("a😀cy"), again.Encode("a😀cy"));
        Assert.Equal(4, t.Encode("a😀cy").Count);
        Assert.Equal("a😀cy", again.Decode(again.Encode("a😀cy")));
    }

    [Fact]
    public void CharTokenizer_UnknownCharacter_MapsToUnknownId()
    {
        var t = CharTokenizer.FromTexts(["ab"]);
        Assert.Equal(new[] { t.Encode("a")[0], CharTokenizer.Unknown }, t.Encode("aZ"));
    }

    [Fact]
    public void ChatTemplate_MarksOnlyAssistantContentAndItsEnd_ForTraining()
    {
        var t = CharTokenizer.FromTexts(["sort: ba", "ab", "be brief"]);
        var s = t.Roles;
        var (ids, trained) = t.Chat.EncodeConversation([new(Role.System, "be brief"), new(Role.User, "sort: ba"), new(Role.Assistant, "ab")]);
        var a = t.Encode("a")[0];
        var b = t.Encode("b")[0];
        Assert.Equal(new[] { s.Assistant, a, b, s.End }, ids.TakeLast(4));
        Assert.Equal(new[] { false, true, true, true }, trained.TakeLast(4));
        Assert.Equal(3, trained.Count(x => x));
        Assert.Equal(s.System, ids[0]);
        Assert.Equal(s.User, ids[1 + "be brief".Length + 1]);
    }

    [Fact]
    public void ChatTemplate_Prompt_EndsWithAssistantRoleToken()
    {
        var t = CharTokenizer.FromTexts(["hi"]);
        var ids = t.Chat.EncodePrompt([new(Role.User, "hi")]);
        Assert.Equal(new[] { t.Roles.User, t.Encode("h")[0], t.Encode("i")[0], t.Roles.End, t.Roles.Assistant }, ids);
    }

    private static RoleTokenIds Roles(ITokenizer t) => t is CharTokenizer c ? c.Roles : ((Gpt2Tokenizer)t).Roles;

    [Fact]
    public void CharTokenizer_UnknownCharacters_AreNamedInOneWarning_Once()
    {
        var t = CharTokenizer.FromTexts(["abc"]);
        var log = new StringWriter();
        t.WarnUnknown(log);
        Assert.Equal("", log.ToString());                                           // nothing unknown yet
        t.Encode("aéb");
        t.Encode("cßé");
        t.WarnUnknown(log);
        t.WarnUnknown(log);
        Assert.Equal("warning: 2 character(s) the model's tokenizer has never seen map to its unknown id: 'ß', 'é'", log.ToString().Trim());
    }
}
