using System.Text.Json;
using System.Text.Json.Serialization;
using PpoSharp.Data;
using PpoSharp.Text;

namespace PpoSharp.Serving.Protocol;

/// <summary>
/// A <c>/v1/completions</c> request (vLLM's <c>CompletionRequest</c>, the fields a rollout client uses): prompts as
/// text or token ids, <c>n</c> samples each, the sampling fields, <c>logprobs</c> (0 = the sampled token only, k = also
/// the k most likely), <c>return_token_ids</c> and <c>stream</c>.
/// </summary>
public sealed record CompletionRequest(string? Model, IReadOnlyList<IReadOnlyList<int>> Prompts, int N, RowSampling Sampling,
    int? Logprobs, bool ReturnTokenIds, bool Stream)
{
    /// <summary>Reads and checks a request; prompts are encoded as <c>generate --raw</c> encodes text (with the tokenizer's BOS).</summary>
    public static CompletionRequest Parse(JsonFields f, ServedModel m, ServeSettings s)
    {
        if (f.Bool("echo", false)) throw ServeException.Bad("'echo' is not supported", "echo");
        var prompts = ReadPrompts(f, "prompt", m, s);
        int n = f.Int("n", 1, 1, s.MaxN, "--max-n");
        int? logprobs = f.Long("logprobs") is null ? null : f.Int("logprobs", 0, 0, OpenAiSampling.MaxTopLogprobs);
        var sampling = OpenAiSampling.Read(f, s, f.Int("max_tokens", 16, 1, s.MaxTokens, "--max-tokens"), logprobs ?? 0, m.VocabSize);
        return new CompletionRequest(f.String("model"), prompts, n, sampling, logprobs, f.Bool("return_token_ids", false), f.Bool("stream", false));
    }

    /// <summary>A prompt field: a string, a list of strings, a list of ids or a list of id lists; each checked against the context.</summary>
    public static IReadOnlyList<IReadOnlyList<int>> ReadPrompts(JsonFields f, string field, ServedModel m, ServeSettings s)
    {
        if (f.Get(field) is not { } v) throw ServeException.Bad($"'{f.Name(field)}' is required", f.Name(field));
        var name = f.Name(field);
        List<IReadOnlyList<int>> prompts = v.ValueKind switch
        {
            JsonValueKind.String => [Encode(m.Tokenizer, v.GetString()!)],
            JsonValueKind.Array when v.GetArrayLength() == 0 => throw ServeException.Bad($"'{name}' is an empty list", name),
            JsonValueKind.Array when v[0].ValueKind == JsonValueKind.Number => [JsonFields.IdList(v, name, m.VocabSize)],
            JsonValueKind.Array when v.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String) => [.. v.EnumerateArray().Select(x => Encode(m.Tokenizer, x.GetString()!))],
            JsonValueKind.Array when v.EnumerateArray().All(x => x.ValueKind == JsonValueKind.Array) => [.. v.EnumerateArray().Select((x, i) => (IReadOnlyList<int>)JsonFields.IdList(x, $"{name}[{i}]", m.VocabSize))],
            _ => throw ServeException.Bad($"'{name}' must be a string, a list of strings, a list of token ids or a list of such lists, not {JsonFields.Kind(v)}", name),
        };
        if (prompts.Count > s.MaxPrompts) throw ServeException.Bad($"'{name}' holds {prompts.Count} prompts; the server takes at most {s.MaxPrompts} (--max-prompts)", name);
        foreach (var p in prompts) CheckLength(p, m, name);
        return prompts;
    }

    /// <summary>A prompt must be non-empty and leave at least one position of the context to generate in.</summary>
    public static void CheckLength(IReadOnlyList<int> prompt, ServedModel m, string name)
    {
        if (prompt.Count == 0) throw ServeException.Bad($"'{name}' is empty", name);
        if (prompt.Count >= m.ContextLength)
            throw ServeException.Bad($"'{name}' is {prompt.Count} tokens; this model's maximum context length is {m.ContextLength} tokens, so a prompt may have at most {m.ContextLength - 1}", name);
    }

    /// <summary>Text as the model reads a raw prompt: with the tokenizer's own special tokens (BOS) where it adds them.</summary>
    public static IReadOnlyList<int> Encode(ITokenizer tokenizer, string text) =>
        tokenizer is HfTokenizer hf ? [.. hf.EncodeWithSpecialTokens(text)] : tokenizer.Encode(text);
}

/// <summary>A <c>/v1/chat/completions</c> request: messages rendered by the model's chat template with the generation prompt.</summary>
public sealed record ChatRequest(string? Model, IReadOnlyList<int> Prompt, int N, RowSampling Sampling, bool Logprobs, bool ReturnTokenIds, bool Stream)
{
    public static ChatRequest Parse(JsonFields f, ServedModel m, ServeSettings s)
    {
        if (f.Get("messages") is not { ValueKind: JsonValueKind.Array } list || list.GetArrayLength() == 0)
            throw ServeException.Bad("'messages' must be a non-empty list of {\"role\", \"content\"} objects", "messages");
        var messages = list.EnumerateArray().Select((e, i) => Message(JsonFields.Of(e, $"messages[{i}]"))).ToList();
        List<int> prompt;
        try { prompt = m.Tokenizer.Chat.EncodePrompt(messages); }
        catch (PpoSharpException e) { throw ServeException.Bad($"'messages': {e.Message}", "messages"); }
        CompletionRequest.CheckLength(prompt, m, "messages");
        bool logprobs = f.Bool("logprobs", false);
        int top = f.Int("top_logprobs", 0, 0, OpenAiSampling.MaxTopLogprobs);
        int maxTokens = f.Has("max_completion_tokens") ? f.Int("max_completion_tokens", 0, 1, s.MaxTokens, "--max-tokens")
            : f.Int("max_tokens", Math.Min(s.MaxTokens, m.ContextLength - prompt.Count), 1, s.MaxTokens, "--max-tokens");
        var sampling = OpenAiSampling.Read(f, s, maxTokens, logprobs ? top : 0, m.VocabSize);
        return new ChatRequest(f.String("model"), prompt, f.Int("n", 1, 1, s.MaxN, "--max-n"), sampling, logprobs, f.Bool("return_token_ids", false), f.Bool("stream", false));
    }

    private static ChatMessage Message(JsonFields f)
    {
        var role = f.String("role") switch
        {
            "system" or "developer" => Role.System,
            "user" => Role.User,
            "assistant" => Role.Assistant,
            null => throw ServeException.Bad($"'{f.Name("role")}' is required", f.Name("role")),
            var other => throw ServeException.Bad($"'{f.Name("role")}' is '{other}'; supported roles: system, developer, user, assistant", f.Name("role")),
        };
        return new ChatMessage(role, Content(f));
    }

    /// <summary>A message's content: a string, or a list of text parts ({"type": "text", "text": ...}) joined.</summary>
    private static string Content(JsonFields f)
    {
        if (f.Get("content") is not { } c) return "";
        if (c.ValueKind == JsonValueKind.String) return c.GetString()!;
        if (c.ValueKind != JsonValueKind.Array) throw ServeException.Bad($"'{f.Name("content")}' must be a string or a list of text parts, not {JsonFields.Kind(c)}", f.Name("content"));
        return string.Concat(c.EnumerateArray().Select((part, i) =>
        {
            var p = JsonFields.Of(part, $"{f.Name("content")}[{i}]");
            return p.String("type") == "text" ? p.String("text") ?? ""
                : throw ServeException.Bad($"'{p.Name("type")}' must be \"text\" (this server reads text only)", p.Name("type"));
        }));
    }
}

/// <summary>The sampling fields OpenAI and vLLM requests share, with vLLM's defaults (temperature 1, top_p 1, top_k off).</summary>
public static class OpenAiSampling
{
    /// <summary>Most alternatives per token (vLLM's default --max-logprobs).</summary>
    public const int MaxTopLogprobs = 20;

    public static RowSampling Read(JsonFields f, ServeSettings s, int maxTokens, int topLogprobs, int vocab)
    {
        foreach (var (field, neutral) in new[] { ("frequency_penalty", 0.0), ("presence_penalty", 0.0), ("repetition_penalty", 1.0), ("min_p", 0.0) })
            if (f.Double(field, neutral, double.MinValue, double.MaxValue) != neutral)
                throw ServeException.Bad($"'{field}' is not supported by this server (leave it out or at {neutral})", field);
        return new RowSampling(maxTokens,
            Temperature: f.Double("temperature", 1.0, 0, 100),
            TopP: f.Double("top_p", 1.0, 1e-9, 1),
            TopK: f.Int("top_k", 0, -1, int.MaxValue),
            Seed: f.Long("seed"),
            Stop: f.Strings("stop"),
            StopTokenIds: f.Ids("stop_token_ids", vocab),
            IgnoreEos: f.Bool("ignore_eos", false),
            TopLogprobs: topLogprobs);
    }
}

public sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <summary>vLLM's completion logprobs: per token its text offset, log p, text, and a map of the top alternatives.</summary>
public sealed record CompletionLogprobs(IReadOnlyList<int> TextOffset, IReadOnlyList<double> TokenLogprobs, IReadOnlyList<string> Tokens,
    IReadOnlyList<Dictionary<string, double>> TopLogprobs);

public sealed record CompletionChoice(int Index, string Text, CompletionLogprobs? Logprobs, string? FinishReason, object? StopReason,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<int>? PromptTokenIds,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<int>? TokenIds,
    object? PromptLogprobs = null);

/// <summary>A completion (<c>object</c> "text_completion"), or one chunk of a streamed one (then without usage).</summary>
public sealed record CompletionResponse(string Id, string Object, long Created, string Model, IReadOnlyList<CompletionChoice> Choices,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Usage? Usage);

public sealed record ChatMessageOut(string Role, string Content);

public sealed record ChatTopLogprob(string Token, double Logprob, IReadOnlyList<int> Bytes);

public sealed record ChatTokenLogprob(string Token, double Logprob, IReadOnlyList<int> Bytes, IReadOnlyList<ChatTopLogprob> TopLogprobs);

public sealed record ChatLogprobs(IReadOnlyList<ChatTokenLogprob> Content);

public sealed record ChatChoice(int Index, ChatMessageOut Message, ChatLogprobs? Logprobs, string? FinishReason, object? StopReason,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<int>? TokenIds);

public sealed record ChatResponse(string Id, string Object, long Created, string Model, IReadOnlyList<ChatChoice> Choices, Usage Usage,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<int>? PromptTokenIds);

public sealed record ChatDelta(
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Role,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Content);

public sealed record ChatChunkChoice(int Index, ChatDelta Delta, ChatLogprobs? Logprobs, string? FinishReason,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<int>? TokenIds);

public sealed record ChatChunk(string Id, string Object, long Created, string Model, IReadOnlyList<ChatChunkChoice> Choices);

/// <summary>One entry of <c>GET /v1/models</c>: the base model, or a LoRA adapter (its <c>parent</c> is the base).</summary>
public sealed record ModelCard(string Id, string Object, long Created, string OwnedBy, string Root, string? Parent, int MaxModelLen);

public sealed record ModelList(string Object, IReadOnlyList<ModelCard> Data);

public sealed record ErrorInfo(string Message, string Type, string? Param, int Code);

/// <summary>OpenAI's error body, which vLLM and SGLang also use: <c>{"error": {"message", "type", "param", "code"}}</c>.</summary>
public sealed record ErrorBody(ErrorInfo Error);
