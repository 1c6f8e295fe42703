using System.Text.Json;
using System.Text.Json.Nodes;
using PpoSharp.Data;

namespace PpoSharp.Text;

/// <summary>
/// A Hugging Face model's chat format: its Jinja <c>chat_template</c> rendered as transformers renders it (same
/// variables: <c>messages</c>, <c>add_generation_prompt</c>, <c>tools</c>, <c>documents</c>, the special-token strings
/// and extra keyword arguments such as <c>enable_thinking</c>), then encoded without added special tokens, as
/// <c>apply_chat_template</c> does. Which ids SFT trains on is described at <see cref="EncodeConversation"/>.
/// </summary>
public sealed class JinjaChat : IChatFormat
{
    private readonly string _template;
    private readonly ITokenizer _tokenizer;
    private readonly IReadOnlyDictionary<string, string> _specialTokens;
    private readonly IReadOnlyDictionary<string, object?> _kwargs;
    private readonly string? _source;

    /// <param name="template">The Jinja source.</param>
    /// <param name="tokenizer">Encodes rendered text (its <see cref="ITokenizer.Encode"/> adds no special tokens).</param>
    /// <param name="specialTokens">Template variables such as <c>bos_token</c> and <c>eos_token</c>.</param>
    /// <param name="kwargs">Extra template variables for every render (e.g. <c>enable_thinking</c>); values are serialized to JSON.</param>
    /// <param name="source">The file the template comes from, named in errors.</param>
    public JinjaChat(string template, ITokenizer tokenizer, IReadOnlyDictionary<string, string> specialTokens,
        IReadOnlyDictionary<string, object?>? kwargs = null, string? source = null)
    {
        _source = source;
        _template = template;
        _tokenizer = tokenizer;
        _specialTokens = specialTokens;
        _kwargs = kwargs ?? new Dictionary<string, object?>();
    }

    /// <summary>
    /// Renders raw message objects (which may carry <c>tool_calls</c>, <c>reasoning_content</c>, ...) with optional tool
    /// schemas and per-call keyword arguments (which override the constructor's).
    /// </summary>
    public string RenderJson(JsonArray messages, bool addGenerationPrompt, JsonArray? tools = null,
        IReadOnlyDictionary<string, object?>? kwargs = null)
    {
        var context = new JsonObject
        {
            ["messages"] = messages.DeepClone(),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["tools"] = tools?.DeepClone(),
            ["documents"] = null,
        };
        foreach (var (key, value) in _specialTokens) context[key] = value;
        foreach (var (key, value) in _kwargs.Concat(kwargs ?? new Dictionary<string, object?>())) context[key] = ToNode(value);
        return JinjaEngine.Shared.Render(_template, context.ToJsonString(), _source);
    }

    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt) =>
        RenderJson(ToJson(messages), addGenerationPrompt);

    public List<int> EncodePrompt(IReadOnlyList<ChatMessage> messages) => [.. _tokenizer.Encode(Render(messages, true))];

    public List<int> EncodeWithResponse(IReadOnlyList<ChatMessage> messages, string response) =>
        [.. _tokenizer.Encode(Render([.. messages, new ChatMessage(Role.Assistant, response)], false))];

    /// <summary>
    /// Ids of the rendered conversation, and which ones SFT trains on. For each assistant message <c>i</c>, its turn
    /// starts where the full text stops agreeing with the render of <c>messages[..i]</c> with the generation prompt, and
    /// ends where the render of <c>messages[..i+1]</c> ends, so the content and the end-of-turn text the template puts
    /// after it (Llama 3's <c>&lt;|eot_id|&gt;</c>, Qwen's <c>&lt;|im_end|&gt;\n</c>) are trained, and text that a
    /// template adds after the generation prompt (Qwen3's empty think block) too. When that render is not a prefix of
    /// the full text (Qwen3 writes earlier turns without their think blocks), the turn ends at the first point where the
    /// full text since its start is a suffix of that render (the content as shown in context plus the end-of-turn
    /// text), else where the two texts stop agreeing. Character positions become token boundaries through the longest
    /// common prefix of the encoded text before them and the full ids; a token that straddles a boundary is not
    /// trained, so prompt tokens are not either (given that a turn begins as the generation prompt does).
    /// </summary>
    public (List<int> Ids, List<bool> Trained) EncodeConversation(IReadOnlyList<ChatMessage> messages)
    {
        var full = Render(messages, false);
        var ids = _tokenizer.Encode(full).ToList();
        var trained = new List<bool>(new bool[ids.Count]);
        for (int i = 0; i < messages.Count; i++)
        {
            if (messages[i].Role != Role.Assistant) continue;
            var (start, end, endOfTurn) = AssistantSpan(messages, i, full);
            int to = TokenBoundary(full, end, ids, straddleInside: false);
            if (endOfTurn) to = Math.Min(to + 1, ids.Count);                              // the content, then its end-of-turn token
            for (int t = TokenBoundary(full, start, ids, straddleInside: true); t < to; t++) trained[t] = true;
        }
        return (ids, trained);
    }

    /// <summary>
    /// Character range of assistant message <paramref name="i"/>'s turn in <paramref name="full"/>; EndOfTurn when the
    /// range ends with the content and the one token after it (the end-of-turn token) is to be trained as well, because the
    /// template writes a header after every conversation (<see cref="TrailingHeader"/>).
    /// </summary>
    private (int Start, int End, bool EndOfTurn) AssistantSpan(IReadOnlyList<ChatMessage> messages, int i, string full)
    {
        int start = CommonPrefix(Render([.. messages.Take(i)], true), full);
        List<ChatMessage> turn = [.. messages.Take(i + 1)];
        var withTurn = i == messages.Count - 1 ? full : Render(turn, false);
        if (TrailingHeader(turn, withTurn, start) is > 0 and var header) return (start, Math.Max(start, withTurn.Length - header), true);
        if (full.StartsWith(withTurn, StringComparison.Ordinal)) return (start, Math.Max(start, withTurn.Length), false);
        return (start, SuffixEnd(full, start, withTurn) ?? Math.Max(start, CommonPrefix(withTurn, full)), false);
    }

    /// <summary>
    /// Length of the text that a template which ignores add_generation_prompt (Llama 3.0's appends
    /// <c>&lt;|start_header_id|&gt;assistant&lt;|end_header_id|&gt;\n\n</c> after every conversation) writes after the last
    /// turn: the longest common suffix of the text before the last turn's content (from <paramref name="start"/>) and the
    /// whole text after the content, which runs from the turn's end-of-turn text to the end; 0 for a template whose generation prompt is
    /// its own (the render with it differs). The last turn then trains its content and the one end-of-turn token after it,
    /// not a header the template adds unconditionally (TRL's assistant_only_loss trains what the template marks as the
    /// turn, content and end-of-turn token).
    /// </summary>
    /// <param name="messages">The conversation up to and including the assistant turn.</param>
    /// <param name="full">Its render without the generation prompt.</param>
    /// <param name="start">Where the turn's content starts.</param>
    private int TrailingHeader(IReadOnlyList<ChatMessage> messages, string full, int start)
    {
        var content = messages[^1].Content.Trim();
        int at = content.Length == 0 ? -1 : full.IndexOf(content, start, StringComparison.Ordinal);
        if (messages[^1].Role != Role.Assistant || at < 0 || Render(messages, true) != full) return 0;
        int n = 0, max = Math.Min(start, full.Length - at - content.Length);              // never into the content itself
        while (n < max && full[start - 1 - n] == full[^(n + 1)]) n++;
        return n;
    }

    /// <summary>
    /// The first position after <paramref name="start"/> up to which the full text is a suffix of the turn's own render
    /// (its content as the template shows it in context, and its end-of-turn text); null when there is none.
    /// </summary>
    private static int? SuffixEnd(string full, int start, string withTurn)
    {
        if (withTurn.Length == 0) return null;
        int last = Math.Min(full.Length, start + withTurn.Length);
        for (int x = start + 1; x <= last; x++)
            if (full[x - 1] == withTurn[^1] && withTurn.AsSpan().EndsWith(full.AsSpan(start, x - start))) return x;
        return null;
    }

    /// <summary>
    /// Number of leading ids of <paramref name="ids"/> that lie before character <paramref name="position"/>: the common
    /// prefix of the encoded text before it and the full ids. A token straddling the position counts as inside
    /// (<paramref name="straddleInside"/>) or outside the leading part.
    /// </summary>
    private int TokenBoundary(string full, int position, List<int> ids, bool straddleInside)
    {
        if (position <= 0) return 0;
        if (position >= full.Length) return ids.Count;
        var before = _tokenizer.Encode(full[..position]);
        int k = 0;
        while (k < before.Count && k < ids.Count && before[k] == ids[k]) k++;
        return k < before.Count && straddleInside ? Math.Min(k + 1, ids.Count) : k;
    }

    private static int CommonPrefix(string a, string b)
    {
        int n = Math.Min(a.Length, b.Length), k = 0;
        while (k < n && a[k] == b[k]) k++;
        return k;
    }

    private static JsonArray ToJson(IReadOnlyList<ChatMessage> messages) =>
        [.. messages.Select(m => new JsonObject { ["role"] = m.Role.ToString().ToLowerInvariant(), ["content"] = m.Content })];

    private static JsonNode? ToNode(object? value) => value switch
    {
        null => null,
        JsonNode node => node.DeepClone(),
        _ => JsonSerializer.SerializeToNode(value, value.GetType()),
    };
}
