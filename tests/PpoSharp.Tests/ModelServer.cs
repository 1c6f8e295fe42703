using System.Text.Json.Nodes;
using PpoSharp.Models;
using PpoSharp.Text;
using PpoSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// An inference server for the fleet tests, speaking SGLang's and vLLM's protocols over a PpoSharp model on 127.0.0.1:
/// SGLang <c>/generate</c> and <c>/update_weights_from_disk</c> (loads the HF folder), vLLM <c>/v1/completions</c> and
/// <c>/v1/load_lora_adapter</c> (the adapter merged into its base). It samples with the model it holds and returns that
/// model's log-probs of the sampled tokens, so a correct weight sync shows as rollout_logprob_diff ~ 0 in the trainer.
/// includeEos = false leaves the matched EOS out of the returned ids (the unconfirmed server behaviour).
/// </summary>
public sealed class ModelServer : IAsyncDisposable
{
    private readonly object _lock = new();
    private Decoder _model;
    private readonly int _pad;
    private string _version = "default";
    private readonly bool _includeEos;
    private LoopbackServer? _server;

    public ModelServer(string modelDir, bool includeEos = true)
    {
        var (model, tokenizer) = RunDirectory.LoadPolicy(modelDir);
        (_model, _pad, _includeEos) = (model, tokenizer.Special.Pad, includeEos);
        _server = new LoopbackServer(new()
        {
            ["/generate"] = Sglang,
            ["/update_weights_from_disk"] = b => Load(() => RunDirectory.LoadPolicyModel(b["model_path"]!.GetValue<string>()), b["weight_version"]?.GetValue<string>()),
            ["/v1/completions"] = Vllm,
            ["/v1/load_lora_adapter"] = b => Load(() => LoraModels.LoadMerged(b["lora_path"]!.GetValue<string>()), null, text: true),
        });
    }

    public string Url => _server?.Url ?? throw new InvalidOperationException("stopped");
    public int Loads { get; private set; }
    public List<string> Versions { get; } = [];
    /// <summary>Reports each answer's weight_version this many versions below the one it holds (a server that lags behind what it confirmed).</summary>
    public long VersionLag { get; set; }

    /// <summary>Stops listening (a killed server).</summary>
    public async Task Kill()
    {
        if (_server is null) return;
        await _server.DisposeAsync();
        _server = null;
    }

    private (int, string) Load(Func<Decoder> load, string? version, bool text = false)
    {
        var model = load();
        model.eval();
        lock (_lock)
        {
            (_model, _version) = (model, version ?? _version);
            Loads++;
            if (version is not null) Versions.Add(version);
        }
        return text ? (200, "Success: LoRA adapter 'policy' added successfully.") : (200, "{\"success\":true,\"message\":\"Succeeded to update model weights.\",\"num_paused_requests\":0}");
    }

    /// <summary>Samples every prompt with one generator seeded by the first seed; returns (ids, log-probs, stopped) per prompt.</summary>
    private List<(List<int> Ids, List<double> LogProbs, bool Stopped)> Sample(List<List<int>> prompts, SamplingOptions o, int[] eos, long seed)
    {
        lock (_lock)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var (ids, mask) = Sampling.LeftPad(prompts.Select(p => (IReadOnlyList<int>)p).ToList(), _pad);       // (B, P)
            using var generator = new Generator((ulong)seed);
            var g = Sampling.Generate(_model, ids, mask, o, new SpecialTokenIds(_pad, eos), generator);
            var lps = ResponseScoring.LogProbs(_model, cat([ids, g.Responses], 1), cat([mask, g.Mask], 1), ids.shape[1], o.Temperature);   // (B, N)
            long n = g.Responses.shape[1];
            var r = g.Responses.data<long>().ToArray();
            var m = g.Mask.data<bool>().ToArray();
            var l = lps.to(ScalarType.Float64).data<double>().ToArray();
            return Enumerable.Range(0, prompts.Count).Select(i =>
            {
                var row = Enumerable.Range(0, (int)n).Where(j => m[i * n + j]).ToList();
                var tokens = row.Select(j => (int)r[i * n + j]).ToList();
                bool stopped = tokens.Count > 0 && eos.Contains(tokens[^1]);
                if (stopped && !_includeEos) row.RemoveAt(row.Count - 1);
                return (row.Select(j => (int)r[i * n + j]).ToList(), row.Select(j => l[i * n + j]).ToList(), stopped);
            }).ToList();
        }
    }

    private (int, string) Sglang(JsonNode body)
    {
        var prompts = body["input_ids"]!.AsArray().Select(p => p!.AsArray().Select(x => x!.GetValue<int>()).ToList()).ToList();
        var sp = body["sampling_params"]!.AsArray()[0]!;
        var o = new SamplingOptions(sp["max_new_tokens"]!.GetValue<int>(), sp["temperature"]!.GetValue<double>(), Math.Max(0, sp["top_k"]!.GetValue<int>()), sp["top_p"]!.GetValue<double>());
        var eos = sp["stop_token_ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        var results = Sample(prompts, o, eos, sp["sampling_seed"]!.GetValue<long>());
        var items = results.Select(x => (JsonNode)new JsonObject
        {
            ["text"] = "",
            ["output_ids"] = new JsonArray(x.Ids.Select(i => (JsonNode)i).ToArray()),
            ["meta_info"] = new JsonObject
            {
                ["finish_reason"] = x.Stopped ? new JsonObject { ["type"] = "stop", ["matched"] = eos[0] } : new JsonObject { ["type"] = "length", ["length"] = o.MaxNewTokens },
                ["weight_version"] = VersionLag == 0 || !long.TryParse(_version, out var v) ? _version : (v - VersionLag).ToString(),
                ["output_token_logprobs"] = new JsonArray(x.Ids.Zip(x.LogProbs).Select(t => (JsonNode)new JsonArray(t.Second, t.First, null)).ToArray()),
            },
        });
        return (200, new JsonArray(items.ToArray()).ToJsonString());
    }

    private (int, string) Vllm(JsonNode body)
    {
        int n = body["n"]!.GetValue<int>();
        var prompts = body["prompt"]!.AsArray().SelectMany(p => Enumerable.Repeat(p!.AsArray().Select(x => x!.GetValue<int>()).ToList(), n)).ToList();
        var o = new SamplingOptions(body["max_tokens"]!.GetValue<int>(), body["temperature"]!.GetValue<double>(), Math.Max(0, body["top_k"]!.GetValue<int>()), body["top_p"]!.GetValue<double>());
        var eos = body["stop_token_ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        var results = Sample(prompts, o, eos, body["seed"]!.GetValue<long>());
        var choices = results.Select((x, k) => (JsonNode)new JsonObject
        {
            ["index"] = k, ["text"] = "", ["finish_reason"] = x.Stopped ? "stop" : "length", ["stop_reason"] = x.Stopped ? eos[0] : null,
            ["token_ids"] = new JsonArray(x.Ids.Select(i => (JsonNode)i).ToArray()),
            ["logprobs"] = new JsonObject { ["token_logprobs"] = new JsonArray(x.LogProbs.Select(v => (JsonNode)v).ToArray()) },
        });
        return (200, new JsonObject { ["object"] = "text_completion", ["choices"] = new JsonArray(choices.ToArray()) }.ToJsonString());
    }

    public async ValueTask DisposeAsync() => await Kill();
}
