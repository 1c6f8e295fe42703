using PpoSharp.Data;

namespace PpoSharp.Text;

/// <summary>The role tokens of the built-in chat format, which the built-in tokenizers append to their vocabulary.</summary>
public static class SpecialTokens
{
    public const string Pad = "<|pad|>";
    public const string End = "<|end|>";
    public const string System = "<|system|>";
    public const string User = "<|user|>";
    public const string Assistant = "<|assistant|>";

    /// <summary>In id order: each built-in tokenizer appends them to its base vocabulary in this order.</summary>
    public static readonly string[] All = [Pad, End, System, User, Assistant];
}

/// <summary>Ids of the built-in role tokens in one built-in tokenizer.</summary>
public sealed record RoleTokenIds(int Pad, int End, int System, int User, int Assistant)
{
    public static RoleTokenIds FromFirst(int first) => new(first, first + 1, first + 2, first + 3, first + 4);

    public bool Contains(int id) => NameOf(id) is not null;

    /// <summary>The token's string for a role-token id, else null.</summary>
    public string? NameOf(int id) =>
        id == Pad ? SpecialTokens.Pad : id == End ? SpecialTokens.End : id == System ? SpecialTokens.System
        : id == User ? SpecialTokens.User : id == Assistant ? SpecialTokens.Assistant : null;

    public SpecialTokenIds Special => new(Pad, [End]);
}

/// <summary>
/// The ids that batching and generation need: <see cref="Pad"/> fills batches, and generation of a row stops at any of
/// <see cref="Eos"/> (Llama 3 Instruct lists three: end of text, end of message, end of turn).
/// </summary>
public sealed record SpecialTokenIds(int Pad, IReadOnlyList<int> Eos)
{
    public bool IsEos(int id) => Eos.Contains(id);
}

/// <summary>
/// Text to token ids and back, plus the model's chat format. <see cref="Encode"/> adds no special tokens of its own
/// (Hugging Face's <c>add_special_tokens=False</c>).
/// </summary>
public interface ITokenizer
{
    /// <summary>Number of ids the tokenizer can produce (the model's embedding table may be larger).</summary>
    int VocabSize { get; }
    SpecialTokenIds Special { get; }

    /// <summary>How conversations become ids: the built-in role tokens or the model's own chat template.</summary>
    IChatFormat Chat { get; }

    /// <summary>Text to ids, without BOS/EOS or other post-processing.</summary>
    IReadOnlyList<int> Encode(string text);

    /// <summary>Ids to text; special tokens are written as their strings unless <paramref name="skipSpecial"/>.</summary>
    string Decode(IEnumerable<int> ids, bool skipSpecial = true);

    /// <summary>Writes the tokenizer's files into a model directory (<c>tokenizer.json</c> and, for HF models, the rest).</summary>
    void Save(string directory);
}

/// <summary>
/// How conversations become ids. Implementations: <see cref="RoleTokenChat"/> (the built-in format with role tokens) and
/// JinjaChat (a Hugging Face model's <c>chat_template</c>, rendered as transformers renders it).
/// </summary>
public interface IChatFormat
{
    /// <summary>The text the model sees for <paramref name="messages"/>, with the assistant header appended when <paramref name="addGenerationPrompt"/>.</summary>
    string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt);

    /// <summary>Ids of a whole conversation and, per id, whether SFT trains on it (assistant turns, their end-of-turn token included).</summary>
    (List<int> Ids, List<bool> Trained) EncodeConversation(IReadOnlyList<ChatMessage> messages);

    /// <summary>Ids of a prompt ready for generation (the assistant header appended).</summary>
    List<int> EncodePrompt(IReadOnlyList<ChatMessage> messages);

    /// <summary>A prompt and a candidate response as one finished conversation (for reward models).</summary>
    List<int> EncodeWithResponse(IReadOnlyList<ChatMessage> messages, string response) =>
        EncodeConversation([.. messages, new ChatMessage(Role.Assistant, response)]).Ids;
}
