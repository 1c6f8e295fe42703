using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace PpoSharp.Rollouts;

/// <summary>
/// Request bodies of the engines' HTTP protocols, field for field as the engines' own sources name them (SGLang
/// <c>io_struct.py</c> GenerateReqInput and <c>sampling_params.py</c>; vLLM <c>completion/protocol.py</c> CompletionRequest).
/// Responses are read by <see cref="SglangResponse"/> and <see cref="VllmResponse"/>, which accept every shape the README's
/// "Scaling out" section lists.
/// </summary>
public static class Wire
{
    /// <summary>Snake_case, nulls left out (a field the server does not know is never sent empty).</summary>
    public static readonly JsonSerializerOptions Options = new(Json.Compact) { DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    /// <summary>A JSON document's root, or one line naming the URL and the first characters of what came back.</summary>
    public static JsonNode Parse(string body, string url)
    {
        try { return JsonNode.Parse(body) ?? throw new PpoSharpException($"{url}: empty JSON response"); }
        catch (JsonException) { throw new PpoSharpException($"{url}: response is not JSON: {Snippet(body)}"); }
    }

    /// <summary>The first 200 characters of a body, on one line.</summary>
    public static string Snippet(string body) => (body.Length > 200 ? body[..200] + "..." : body).ReplaceLineEndings(" ");
}

/// <summary>SGLang <c>sampling_params</c> of one prompt.</summary>
public sealed record SglangSampling(int MaxNewTokens, double Temperature, double TopP, int TopK, IReadOnlyList<int> StopTokenIds, long SamplingSeed,
    bool SkipSpecialTokens = false, int N = 1);

/// <summary>SGLang <c>POST /generate</c>: a batch of token-id prompts, one sampling_params dict each, log-probs of the output tokens.</summary>
public sealed record SglangGenerate(IReadOnlyList<IReadOnlyList<int>> InputIds, IReadOnlyList<SglangSampling> SamplingParams, bool ReturnLogprob = true,
    int LogprobStartLen = -1, string? LoraPath = null);

/// <summary>vLLM <c>POST /v1/completions</c> with token-id prompts; n completions per prompt, prompt-major in the response.</summary>
public sealed record VllmCompletions(string? Model, IReadOnlyList<IReadOnlyList<int>> Prompt, int MaxTokens, int N, double Temperature, double TopP,
    int TopK, long Seed, IReadOnlyList<int> StopTokenIds, int Logprobs = 0, bool ReturnTokenIds = true, bool ReturnTokensAsTokenIds = true,
    bool SkipSpecialTokens = false, bool IncludeStopStrInOutput = true);

/// <summary>What a server returned for one completion, before <see cref="RolloutCompletion.FromServer"/>.</summary>
public sealed record RawCompletion(IReadOnlyList<int> Ids, IReadOnlyList<float>? LogProbs, bool Stopped, int? Matched, long? Version);

/// <summary>Reads SGLang <c>/generate</c> responses.</summary>
public static class SglangResponse
{
    /// <summary>
    /// One entry per prompt: a JSON list for a batch, an object for one prompt. Ids from <c>output_ids</c>, else from the
    /// log-prob triples (older servers, or <c>--skip-tokenizer-init</c> builds without it); log-probs from
    /// <c>meta_info.output_token_logprobs</c> ([logprob, id, text] or [logprob, id]); <c>finish_reason</c> as
    /// {"type":"stop","matched":id} / {"type":"length"} / {"type":"abort",...} or, in older servers, a bare string;
    /// <c>meta_info.weight_version</c> when it is a number.
    /// </summary>
    public static List<RawCompletion> Read(JsonNode root, string url)
    {
        var items = root is JsonArray a ? a.ToList() : [root];
        return items.Select(item => One(item as JsonObject ?? throw new PpoSharpException($"{url}: expected a JSON object per completion, got {Wire.Snippet(item?.ToJsonString() ?? "null")}"), url)).ToList();
    }

    private static RawCompletion One(JsonObject item, string url)
    {
        if (item["error"] is JsonNode error) throw new PpoSharpException($"{url}: error {Wire.Snippet(error.ToJsonString())}");
        var meta = item["meta_info"] as JsonObject ?? throw new PpoSharpException($"{url}: response has no 'meta_info': {Wire.Snippet(item.ToJsonString())}");
        var triples = meta["output_token_logprobs"] as JsonArray;
        List<float>? logProbs = triples?.Select(t => t is JsonArray x && x.Count >= 2 ? Number(x[0]) : float.NaN).ToList();
        List<int> ids = item["output_ids"] is JsonArray outputIds ? outputIds.Select(v => v!.GetValue<int>()).ToList()
            : triples?.Select(t => (int)((JsonArray)t!)[1]!.GetValue<long>()).ToList()
            ?? throw new PpoSharpException($"{url}: response has neither 'output_ids' nor 'meta_info.output_token_logprobs'");
        var (kind, matched) = meta["finish_reason"] switch
        {
            JsonObject f => (f["type"]?.GetValue<string>(), f["matched"] is JsonValue m && m.TryGetValue<int>(out var id) ? id : (int?)null),
            JsonValue s when s.TryGetValue<string>(out var text) => (text, null),
            _ => (null, null),
        };
        if (kind == "abort") throw new PpoSharpException($"{url}: generation aborted: {Wire.Snippet(meta["finish_reason"]!.ToJsonString())}");
        long? version = meta["weight_version"] is JsonValue v && long.TryParse(v.ToString(), out var n) ? n : null;
        return new RawCompletion(ids, logProbs, kind == "stop", matched, version);
    }

    private static float Number(JsonNode? x) => x is JsonValue v && v.TryGetValue<double>(out var d) ? (float)d : float.NaN;

    /// <summary>A control endpoint's answer: <c>{"success": bool, "message"|"error_message": ...}</c>; throws with the server's message when not successful.</summary>
    public static void CheckSuccess(JsonNode root, string url)
    {
        if (root["success"] is JsonValue s && s.TryGetValue<bool>(out var ok) && ok) return;
        var message = root["message"] ?? root["error_message"] ?? root["error"];
        throw new PpoSharpException($"{url}: not successful: {Wire.Snippet(message?.ToJsonString() ?? root.ToJsonString())}");
    }
}

/// <summary>Reads vLLM <c>/v1/completions</c> responses.</summary>
public static class VllmResponse
{
    /// <summary>
    /// The choices in index order (prompt-major: prompt p's sample j is index p n + j). Ids from <c>token_ids</c>
    /// (return_token_ids), else from the log-prob <c>tokens</c> written "token_id:ID" (return_tokens_as_token_ids, older
    /// builds); log-probs from <c>logprobs.token_logprobs</c>; "stop" with <c>stop_reason</c> the matched id.
    /// </summary>
    public static List<RawCompletion> Read(JsonNode root, string url)
    {
        if (root["error"] is JsonNode error) throw new PpoSharpException($"{url}: error {Wire.Snippet(error.ToJsonString())}");
        var choices = root["choices"] as JsonArray ?? throw new PpoSharpException($"{url}: response has no 'choices': {Wire.Snippet(root.ToJsonString())}");
        return choices.Select((c, k) => (Index: c?["index"]?.GetValue<int>() ?? k, Choice: (JsonObject)c!)).OrderBy(x => x.Index).Select(x => One(x.Choice, url)).ToList();
    }

    private static RawCompletion One(JsonObject choice, string url)
    {
        var logprobs = choice["logprobs"] as JsonObject;
        var values = (logprobs?["token_logprobs"] as JsonArray)?.Select(v => v is JsonValue x && x.TryGetValue<double>(out var d) ? (float)d : float.NaN).ToList();
        List<int> ids = choice["token_ids"] is JsonArray tokenIds ? tokenIds.Select(v => v!.GetValue<int>()).ToList()
            : (logprobs?["tokens"] as JsonArray)?.Select(t => TokenId(t?.GetValue<string>(), url)).ToList()
            ?? throw new PpoSharpException($"{url}: choice has neither 'token_ids' nor 'logprobs.tokens' (does the server support return_token_ids?)");
        string? finish = choice["finish_reason"]?.GetValue<string>();
        if (finish == "error" || finish == "abort") throw new PpoSharpException($"{url}: generation ended with finish_reason '{finish}'");
        int? matched = choice["stop_reason"] is JsonValue r && r.TryGetValue<int>(out var id) ? id : null;
        return new RawCompletion(ids, values, finish == "stop", matched, null);
    }

    private static int TokenId(string? token, string url) =>
        token is not null && token.StartsWith("token_id:", StringComparison.Ordinal) && int.TryParse(token["token_id:".Length..], out var id) ? id
        : throw new PpoSharpException($"{url}: log-prob token '{token}' is not 'token_id:ID'; start the server with return_token_ids support");
}
