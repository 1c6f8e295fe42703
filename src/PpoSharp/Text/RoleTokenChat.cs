using PpoSharp.Data;

namespace PpoSharp.Text;

/// <summary>
/// The built-in chat format with role tokens (the notes: "special tokens that distinguish roles"). Each message is
/// <c>&lt;|role|&gt; content &lt;|end|&gt;</c>; generation starts after <c>&lt;|assistant|&gt;</c> and stops at <c>&lt;|end|&gt;</c>.
/// Role strings typed inside content stay plain text: the tokenizer's <c>Encode</c> never yields a role token.
/// </summary>
public sealed class RoleTokenChat(ITokenizer tokenizer, RoleTokenIds roles) : IChatFormat
{
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt) =>
        tokenizer.Decode(addGenerationPrompt ? EncodePrompt(messages) : EncodeConversation(messages).Ids, skipSpecial: false);

    public (List<int> Ids, List<bool> Trained) EncodeConversation(IReadOnlyList<ChatMessage> messages)
    {
        var ids = new List<int>();
        var trained = new List<bool>();
        foreach (var m in messages)
        {
            bool isAssistant = m.Role == Role.Assistant;
            Append([RoleToken(m.Role)], false);
            Append(tokenizer.Encode(m.Content), isAssistant);
            Append([roles.End], isAssistant);
        }
        return (ids, trained);

        void Append(IReadOnlyList<int> part, bool train)
        {
            ids.AddRange(part);
            trained.AddRange(Enumerable.Repeat(train, part.Count));
        }
    }

    public List<int> EncodePrompt(IReadOnlyList<ChatMessage> messages) => [.. EncodeConversation(messages).Ids, roles.Assistant];

    public int RoleToken(Role role) => role switch
    {
        Role.System => roles.System,
        Role.User => roles.User,
        _ => roles.Assistant,
    };
}
