namespace PpoSharp.Rollouts;

/// <summary>
/// Rollouts from a fleet of inference servers: a batch is spread over the servers in whole groups, each server's share is
/// one HTTP request, and the answers go through <see cref="RolloutCompletion.FromServer"/> so that EOS handling does not depend on
/// the engine. <see cref="Model"/> names the LoRA adapter to sample from once a LoRA sync has loaded one.
/// </summary>
public abstract class ServerEngine(Fleet fleet, int groupSize) : IRolloutEngine
{
    public Fleet Fleet { get; } = fleet;
    /// <summary>The version the servers hold; -1 until the first sync, which the trainer makes before the first rollout (the servers then hold exactly its weights).</summary>
    public long WeightVersion { get; set; } = -1;
    /// <summary>The adapter name requests select (vLLM <c>model</c>, SGLang <c>lora_path</c>); null: the base weights.</summary>
    public string? Model { get; set; }

    public IReadOnlyList<RolloutCompletion> Generate(RolloutRequest request)
    {
        long version = WeightVersion;
        int unit = request.Prompts.Count % groupSize == 0 ? groupSize : 1;
        return Fleet.Spread(request.Prompts.Count, unit, async (worker, from, count) =>
        {
            var prompts = request.Prompts.Skip(from).Take(count).ToList();
            var raw = await GenerateOn(worker.Url, prompts, request, request.Seed + from, unit);
            if (raw.Count != count) throw new PpoSharpException($"{worker.Url}: {raw.Count} completions for {count} prompts");
            return raw.Select(r => RolloutCompletion.FromServer(r.Ids, r.LogProbs, r.Stopped, r.Matched, request.Eos, request.Sampling.MaxNewTokens, r.Version ?? version)).ToList();
        });
    }

    /// <summary>One request to one server for <paramref name="prompts"/> (whole groups of <paramref name="unit"/> equal prompts when unit &gt; 1), answers in prompt order.</summary>
    protected abstract Task<List<RawCompletion>> GenerateOn(string url, List<IReadOnlyList<int>> prompts, RolloutRequest request, long seed, int unit);

    public void Dispose() => Fleet.Dispose();
}

/// <summary>SGLang's native <c>POST /generate</c> (also <c>ppo-sharp serve</c>): <c>input_ids</c> in; <c>output_ids</c>, <c>meta_info.output_token_logprobs</c>, <c>finish_reason</c> and <c>weight_version</c> out.</summary>
public sealed class SglangEngine(Fleet fleet, int groupSize) : ServerEngine(fleet, groupSize)
{
    protected override async Task<List<RawCompletion>> GenerateOn(string url, List<IReadOnlyList<int>> prompts, RolloutRequest r, long seed, int unit)
    {
        var o = r.Sampling;
        // one sampling_params per prompt, each with its own seed: the G copies of a prompt must not sample alike
        var sampling = prompts.Select((_, k) => new SglangSampling(o.MaxNewTokens, o.Temperature, o.TopP, o.TopK > 0 ? o.TopK : -1, r.Eos, seed + k)).ToList();
        var body = new SglangGenerate(prompts, sampling, LoraPath: Model);
        return SglangResponse.Read(await Fleet.PostJson(url + "/generate", body), url + "/generate");
    }
}

/// <summary>vLLM's <c>POST /v1/completions</c> with token-id prompts, <c>return_token_ids</c>, <c>logprobs: 0</c>, <c>n</c> (one entry per group), <c>seed</c> and <c>stop_token_ids</c>.</summary>
public sealed class VllmEngine(Fleet fleet, int groupSize) : ServerEngine(fleet, groupSize)
{
    protected override async Task<List<RawCompletion>> GenerateOn(string url, List<IReadOnlyList<int>> prompts, RolloutRequest r, long seed, int unit)
    {
        var o = r.Sampling;
        var unique = prompts.Where((_, k) => k % unit == 0).ToList();                   // a group's G copies: one prompt with n = G
        var body = new VllmCompletions(Model, unique, o.MaxNewTokens, unit, o.Temperature, o.TopP, o.TopK > 0 ? o.TopK : -1, seed, r.Eos);
        return VllmResponse.Read(await Fleet.PostJson(url + "/v1/completions", body), url + "/v1/completions");
    }
}

/// <summary>The engine a run's <see cref="RolloutSettings"/> name.</summary>
public static class RolloutEngines
{
    /// <summary>
    /// <c>local</c>: a <see cref="LocalEngine"/> over the trainer's actor and generator; <c>sglang</c> / <c>vllm</c>: a client
    /// of the fleet at <c>rollout_urls</c>, which asks each group of <paramref name="groupSize"/> completions in one request.
    /// </summary>
    public static IRolloutEngine Create(RolloutSettings s, Models.Decoder actor, Text.SpecialTokenIds special, TorchSharp.torch.Generator generator, int groupSize, TextWriter log) => s.Engine switch
    {
        RolloutEngineKind.Sglang => new SglangEngine(new Fleet(s.Urls, s.TimeoutSeconds, log), groupSize),
        RolloutEngineKind.Vllm => new VllmEngine(new Fleet(s.Urls, s.TimeoutSeconds, log), groupSize),
        _ => new LocalEngine(actor, special, generator),
    };
}
