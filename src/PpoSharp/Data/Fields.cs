using System.Text.Json;
using System.Text.Json.Nodes;

namespace PpoSharp.Data;

/// <summary>Reading the fields of one record; each problem is a <see cref="FormatException"/> naming the field.</summary>
internal static class Fields
{
    /// <summary>A record's fields other than <paramref name="taken"/>, by name: strings as they are, other values as JSON text.</summary>
    public static Dictionary<string, string> Columns(JsonObject e, params string[] taken) => e
        .Where(p => !taken.Contains(p.Key))
        .ToDictionary(p => p.Key, p => p.Value is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : p.Value?.ToJsonString() ?? "null");

    /// <summary>
    /// The prompt: <c>messages</c>, else <c>prompt</c> (a string becomes one user message; a list is messages), with
    /// <see cref="DataOptions.SystemPrompt"/> put first when the prompt has no system message.
    /// </summary>
    public static List<ChatMessage> Prompt(JsonObject e, DataOptions o)
    {
        var messages = !e.ContainsKey("messages") && e["prompt"] is JsonValue
            ? [new ChatMessage(Role.User, RequiredString(e, "prompt"))]
            : Messages(e, e.ContainsKey("messages") ? "messages" : "prompt");
        return WithSystem(messages, o.SystemPrompt);
    }

    /// <summary><paramref name="messages"/> with a system message first when <paramref name="system"/> is given and they have none.</summary>
    public static List<ChatMessage> WithSystem(List<ChatMessage> messages, string? system) =>
        string.IsNullOrEmpty(system) || messages.Count > 0 && messages[0].Role == Role.System ? messages : [new ChatMessage(Role.System, system), .. messages];

    /// <summary>An answer of a preference pair: a string, or a list holding one assistant message (conversational).</summary>
    public static string Answer(JsonObject e, string field)
    {
        if (e[field] is not JsonArray) return RequiredString(e, field);
        return AssistantText(Messages(e, field), field);
    }

    /// <summary>The content of <paramref name="messages"/> when they are one assistant message, else an error naming <paramref name="field"/>.</summary>
    public static string AssistantText(IReadOnlyList<ChatMessage> messages, string field) =>
        messages is [{ Role: Role.Assistant } m] ? m.Content
            : throw new FormatException($"'{field}' must hold one assistant message (got {messages.Count} message(s), roles: {string.Join(", ", messages.Select(x => x.Role.ToString().ToLowerInvariant()))})");

    public static List<ChatMessage> Messages(JsonObject e, string field = "messages")
    {
        if (!e.ContainsKey(field)) throw new FormatException($"missing field '{field}'");
        if (e[field] is not JsonArray arr) throw new FormatException($"'{field}' must be an array");
        var list = new List<ChatMessage>();
        for (int i = 0; i < arr.Count; i++)
        {
            if (arr[i] is not JsonObject m) throw new FormatException($"'{field}[{i}]' must be an object");
            var roleText = RequiredString(m, "role", $"{field}[{i}].role");
            var role = roleText switch
            {
                "system" => Role.System,
                "user" => Role.User,
                "assistant" => Role.Assistant,
                _ => throw new FormatException($"'{field}[{i}].role' is '{roleText}'; allowed: system, user, assistant"),
            };
            var content = RequiredString(m, "content", $"{field}[{i}].content");
            if (content.Length == 0) throw new FormatException($"'{field}[{i}].content' is empty");
            list.Add(new ChatMessage(role, content));
        }
        if (list.Count == 0) throw new FormatException($"'{field}' is empty");
        return list;
    }

    /// <summary>The labels in <c>solution</c>: a string or a non-empty list of strings; none when the field is missing or null.</summary>
    public static List<string> Solutions(JsonObject e)
    {
        const string column = "solution";
        var s = e[column];
        if (s is null) return [];
        if (s is JsonValue v && v.GetValueKind() == JsonValueKind.String) return [v.GetValue<string>()];
        if (s is not JsonArray arr) throw new FormatException($"'{column}' must be a string or an array of strings");
        var list = new List<string>();
        foreach (var x in arr)
        {
            if (x is not JsonValue xv || xv.GetValueKind() != JsonValueKind.String) throw new FormatException($"'{column}' must be a string or an array of strings");
            list.Add(xv.GetValue<string>());
        }
        if (list.Count == 0) throw new FormatException($"'{column}' is an empty array");
        return list;
    }

    public static string RequiredString(JsonObject e, string name, string? label = null)
    {
        label ??= name;
        if (!e.ContainsKey(name)) throw new FormatException($"missing field '{label}'");
        var v = e[name];
        var kind = v?.GetValueKind() ?? JsonValueKind.Null;
        if (kind != JsonValueKind.String) throw new FormatException($"'{label}' must be a string, not {kind.ToString().ToLowerInvariant()}");
        return v!.GetValue<string>();
    }

    public static string NonEmptyString(JsonObject e, string name)
    {
        var s = RequiredString(e, name);
        return s.Length > 0 ? s : throw new FormatException($"'{name}' is empty");
    }
}

/// <summary>
/// TRL's implicit-prompt preference (<c>{"chosen", "rejected"}</c>, two full texts or conversations): the prompt is what
/// the two share at the start, as TRL's <c>extract_prompt</c> splits it (for text, a space before the first difference
/// stays with the answers); the rest of each is its answer.
/// </summary>
internal static class ImplicitPrompt
{
    public static (List<ChatMessage> Prompt, string Chosen, string Rejected) Split(JsonObject e, DataOptions o)
    {
        if (e["chosen"] is JsonArray || e["rejected"] is JsonArray)
        {
            List<ChatMessage> c = Fields.Messages(e, "chosen"), r = Fields.Messages(e, "rejected");
            int i = 0;
            while (i < c.Count && i < r.Count && c[i] == r[i]) i++;
            if (i == 0) throw new FormatException("'chosen' and 'rejected' share no prompt: an implicit-prompt pair's conversations start with the same messages");
            return (Fields.WithSystem(c[..i], o.SystemPrompt), Fields.AssistantText(c[i..], "chosen"), Fields.AssistantText(r[i..], "rejected"));
        }
        string ct = Fields.RequiredString(e, "chosen"), rt = Fields.RequiredString(e, "rejected");
        int k = 0;
        while (k < ct.Length && k < rt.Length && ct[k] == rt[k]) k++;
        if (k > 0 && ct[k - 1] == ' ') k--;
        if (k == 0 || string.IsNullOrWhiteSpace(ct[..k])) throw new FormatException("'chosen' and 'rejected' share no prompt: an implicit-prompt pair's texts start with the same prompt");
        if (k == ct.Length || k == rt.Length) throw new FormatException($"'{(k == ct.Length ? "chosen" : "rejected")}' has no answer after the prompt it shares");
        return (Fields.WithSystem([new ChatMessage(Role.User, ct[..k])], o.SystemPrompt), ct[k..], rt[k..]);
    }
}
