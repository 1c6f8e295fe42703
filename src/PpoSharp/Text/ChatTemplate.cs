using PpoSharp.Data;

namespace PpoSharp.Text;

/// <summary>
/// The chat format with role tokens (the notes: "special tokens that distinguish roles"). Each message is
/// <c>&lt;|role|&gt; content &lt;|end|&gt;</c>; generation starts after <c>&lt;|assistant|&gt;</c> and stops at <c>&lt;|end|&gt;</c>.
/// </summary>
public static class ChatTemplate
{
    /// <summary>Token ids of a conversation and, per id, whether it is trained on (assistant content and its end token).</summary>
    public static (List<int> Ids, List<bool> Trained) Encode(ITokenizer tokenizer, IReadOnlyList<ChatMessage> messages)
    {
        var ids = new List<int>();
        var trained = new List<bool>();
        foreach (var m in messages)
        {
            bool isAssistant = m.Role == Role.Assistant;
            Append([RoleToken(tokenizer, m.Role)], false);
            Append(tokenizer.Encode(m.Content), isAssistant);
            Append([tokenizer.Special.Eos], isAssistant);
        }
        return (ids, trained);

        void Append(IReadOnlyList<int> part, bool train)
        {
            ids.AddRange(part);
            trained.AddRange(Enumerable.Repeat(train, part.Count));
        }
    }

    /// <summary>The prompt for generation: the messages followed by the assistant role token.</summary>
    public static List<int> EncodePrompt(ITokenizer tokenizer, IReadOnlyList<ChatMessage> messages)
    {
        var (ids, _) = Encode(tokenizer, messages);
        ids.Add(tokenizer.Special.Assistant);
        return ids;
    }

    /// <summary>A prompt and a candidate response as one sequence (for reward models): prompt, response, end.</summary>
    public static List<int> EncodeWithResponse(ITokenizer tokenizer, IReadOnlyList<ChatMessage> messages, string response) =>
        [.. EncodePrompt(tokenizer, messages), .. tokenizer.Encode(response), tokenizer.Special.Eos];

    public static int RoleToken(ITokenizer tokenizer, Role role) => role switch
    {
        Role.System => tokenizer.Special.System,
        Role.User => tokenizer.Special.User,
        _ => tokenizer.Special.Assistant,
    };
}
