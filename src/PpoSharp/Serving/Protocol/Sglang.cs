using System.Text.Json;
using System.Text.Json.Serialization;

namespace PpoSharp.Serving.Protocol;

/// <summary>
/// SGLang's native <c>POST /generate</c> (<c>GenerateReqInput</c>): one prompt or a batch, as <c>text</c> or
/// <c>input_ids</c>, with <c>sampling_params</c> (one object, or one per prompt), <c>return_logprob</c> and
/// <c>top_logprobs_num</c>, and <c>lora_path</c> naming a loaded adapter. With <c>n</c> &gt; 1 the rows are expanded as
/// SGLang expands them, <c>input_ids * n</c>: output k*B + i is sample k of prompt i.
/// </summary>
public sealed record GenerateRequest(bool Single, IReadOnlyList<IReadOnlyList<int>> Prompts, IReadOnlyList<RowSampling> Sampling, int N,
    bool ReturnLogprob, int TopLogprobsNum, bool ReturnTextInLogprobs, string? Adapter)
{
    /// <summary>Whether the answer is one object (one prompt, n = 1) rather than a list.</summary>
    public bool SingleOutput => Single && N == 1;

    public static GenerateRequest Parse(JsonFields f, ServedModel m, ServeSettings s)
    {
        if (f.Bool("stream", false)) throw ServeException.Bad("'stream' is not supported on /generate; use /v1/completions with \"stream\": true", "stream");
        bool hasText = f.Has("text"), hasIds = f.Has("input_ids");
        if (hasText == hasIds) throw ServeException.Bad("give exactly one of 'text' and 'input_ids'", hasText ? "input_ids" : "text");
        var field = hasText ? "text" : "input_ids";
        var v = f.Get(field)!.Value;
        bool single = v.ValueKind == JsonValueKind.String || (v.ValueKind == JsonValueKind.Array && v.GetArrayLength() > 0 && v[0].ValueKind == JsonValueKind.Number);
        if (hasText && v.ValueKind == JsonValueKind.Array && v.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.String))
            throw ServeException.Bad("'text' must be a string or a list of strings", "text");
        if (hasIds && (v.ValueKind != JsonValueKind.Array || v.EnumerateArray().Any(x => x.ValueKind == JsonValueKind.String))) throw ServeException.Bad($"'input_ids' must be a list of token ids or a list of such lists, not {JsonFields.Kind(v)}", "input_ids");
        var prompts = CompletionRequest.ReadPrompts(f, field, m, s);
        int top = f.Int("top_logprobs_num", 0, 0, OpenAiSampling.MaxTopLogprobs);
        var (sampling, n) = SamplingParams(f, prompts.Count, top, m, s);
        return new GenerateRequest(single, prompts, sampling, n, f.Bool("return_logprob", false), top, f.Bool("return_text_in_logprobs", false), f.String("lora_path"));
    }

    /// <summary>sampling_params: one object for every prompt, or a list with one per prompt; all with the same n.</summary>
    private static (IReadOnlyList<RowSampling>, int) SamplingParams(JsonFields f, int prompts, int top, ServedModel m, ServeSettings s)
    {
        var v = f.Get("sampling_params");
        List<JsonFields> each = v switch
        {
            null => [.. Enumerable.Repeat(JsonFields.Parse("{}"u8.ToArray()), prompts)],
            { ValueKind: JsonValueKind.Array } list when list.GetArrayLength() == prompts => [.. list.EnumerateArray().Select((x, i) => JsonFields.Of(x, $"sampling_params[{i}]"))],
            { ValueKind: JsonValueKind.Array } list => throw ServeException.Bad($"'sampling_params' lists {list.GetArrayLength()} objects for {prompts} prompts", "sampling_params"),
            var one => [.. Enumerable.Repeat(JsonFields.Of(one.Value, "sampling_params"), prompts)],
        };
        var ns = each.Select(p => p.Int("n", 1, 1, s.MaxN, "--max-n")).Distinct().ToList();
        if (ns.Count > 1) throw ServeException.Bad("'sampling_params': every prompt of a batch needs the same n", "sampling_params");
        return ([.. each.Select(p => Read(p, top, m, s))], ns[0]);
    }

    /// <summary>SGLang's SamplingParams with its defaults: max_new_tokens 128, temperature 1, top_p 1, top_k -1.</summary>
    private static RowSampling Read(JsonFields p, int top, ServedModel m, ServeSettings s)
    {
        foreach (var (field, neutral) in new[] { ("frequency_penalty", 0.0), ("presence_penalty", 0.0), ("repetition_penalty", 1.0), ("min_p", 0.0), ("min_new_tokens", 0.0) })
            if (p.Double(field, neutral, double.MinValue, double.MaxValue) != neutral)
                throw ServeException.Bad($"'{p.Name(field)}' is not supported by this server (leave it out or at {neutral})", p.Name(field));
        return new RowSampling(p.Int("max_new_tokens", Math.Min(128, s.MaxTokens), 1, s.MaxTokens, "--max-tokens"),
            Temperature: p.Double("temperature", 1.0, 0, 100),
            TopP: p.Double("top_p", 1.0, 1e-9, 1),
            TopK: p.Int("top_k", -1, -1, int.MaxValue),
            Seed: p.Long("sampling_seed") ?? p.Long("seed"),
            Stop: p.Strings("stop"),
            StopTokenIds: p.Ids("stop_token_ids", m.VocabSize),
            IgnoreEos: p.Bool("ignore_eos", false),
            TopLogprobs: top);
    }
}

/// <summary>
/// <c>meta_info</c> of a /generate output. Log-prob entries are SGLang's triples <c>[logprob, token_id, text|null]</c>;
/// <c>finish_reason</c> is <c>{"type":"stop","matched":id|str}</c>, <c>{"type":"length","length":N}</c> or <c>{"type":"abort",...}</c>.
/// </summary>
public sealed record GenerateMeta(string Id, Dictionary<string, object?>? FinishReason, int PromptTokens, int CompletionTokens, int CachedTokens,
    string WeightVersion, int TotalRetractions, [property: JsonPropertyName("e2e_latency")] double E2eLatency,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<object?[]>? InputTokenLogprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<object?[]>? OutputTokenLogprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<IReadOnlyList<object?[]>>? InputTopLogprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<IReadOnlyList<object?[]>>? OutputTopLogprobs);

/// <summary>One /generate output: its text, the new ids and meta_info.</summary>
public sealed record GenerateOutput(string Text, IReadOnlyList<int> OutputIds, GenerateMeta MetaInfo);

/// <summary>The body of /update_weights_from_disk (SGLang's <c>UpdateWeightFromDiskReqInput</c>; other fields accepted and ignored).</summary>
public sealed record UpdateWeightsRequest(string? ModelPath, string? WeightVersion)
{
    public static UpdateWeightsRequest Parse(JsonFields f)
    {
        if (f.String("load_format") is { } format && format != "auto") throw ServeException.Bad($"'load_format' {format} is not supported (auto reads safetensors)", "load_format");
        return new UpdateWeightsRequest(f.String("model_path"), f.String("weight_version"));
    }
}

/// <summary>SGLang's answer to a weight update: success, a message, and the number of requests it paused (always 0 here).</summary>
public sealed record UpdateWeightsResponse(bool Success, string Message, int NumPausedRequests);

/// <summary>vLLM's <c>LoadLoRAAdapterRequest</c> / unload request.</summary>
public sealed record LoraRequest(string Name, string? Path, bool LoadInplace)
{
    public static LoraRequest Parse(JsonFields f, bool load)
    {
        var name = f.String("lora_name");
        if (string.IsNullOrWhiteSpace(name)) throw ServeException.Bad("'lora_name' is required", "lora_name");
        var path = f.String("lora_path");
        if (load && string.IsNullOrWhiteSpace(path)) throw ServeException.Bad("'lora_path' is required", "lora_path");
        return new LoraRequest(name, path, f.Bool("load_inplace", false));
    }
}
