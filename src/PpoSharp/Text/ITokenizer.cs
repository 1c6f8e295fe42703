namespace PpoSharp.Text;

/// <summary>The special tokens every tokenizer carries: padding, end of turn (which is also EOS) and the roles.</summary>
public static class SpecialTokens
{
    public const string Pad = "<|pad|>";
    public const string End = "<|end|>";
    public const string System = "<|system|>";
    public const string User = "<|user|>";
    public const string Assistant = "<|assistant|>";

    /// <summary>In id order: each tokenizer appends them to its base vocabulary in this order.</summary>
    public static readonly string[] All = [Pad, End, System, User, Assistant];
}

/// <summary>Ids of the special tokens in one tokenizer. <see cref="Eos"/> is the end-of-turn token.</summary>
public sealed record SpecialTokenIds(int Pad, int Eos, int System, int User, int Assistant)
{
    public static SpecialTokenIds FromFirst(int first) => new(first, first + 1, first + 2, first + 3, first + 4);

    public bool Contains(int id) => id == Pad || id == Eos || id == System || id == User || id == Assistant;
}

/// <summary>
/// Text to token ids and back. <see cref="Encode"/> treats its input as plain text: a string such as "&lt;|user|&gt;"
/// inside user content is encoded as ordinary characters, never as the special token (no prompt injection of roles).
/// </summary>
public interface ITokenizer
{
    int VocabSize { get; }
    SpecialTokenIds Special { get; }

    /// <summary>Plain text to ids; never yields a special-token id.</summary>
    IReadOnlyList<int> Encode(string text);

    /// <summary>Ids to text; special tokens are written as their strings unless <paramref name="skipSpecial"/>.</summary>
    string Decode(IEnumerable<int> ids, bool skipSpecial = true);

    /// <summary>The description saved as <c>tokenizer.json</c> in a run directory.</summary>
    TokenizerSpec Spec { get; }
}

/// <summary>What <c>tokenizer.json</c> holds: the kind and, for the character tokenizer, its alphabet.</summary>
public sealed record TokenizerSpec(string Type, string? Alphabet = null);

/// <summary>Special-token string for an id, shared by the tokenizers' decoders.</summary>
internal static class SpecialTokenNames
{
    public static string? NameOf(SpecialTokenIds s, int id) =>
        id == s.Pad ? SpecialTokens.Pad : id == s.Eos ? SpecialTokens.End : id == s.System ? SpecialTokens.System
        : id == s.User ? SpecialTokens.User : id == s.Assistant ? SpecialTokens.Assistant : null;
}
