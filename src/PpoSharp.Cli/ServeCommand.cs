using System.CommandLine;
using PpoSharp.Serving;

namespace PpoSharp.Cli;

/// <summary><c>serve</c>: a model folder behind OpenAI-, SGLang- and vLLM-compatible HTTP routes.</summary>
internal static partial class Commands
{
    private static Command ServeCommand(TextWriter output, TextWriter errors)
    {
        var d = new ServeSettings();
        var model = Required("--model", "a PpoSharp run (LoRA runs too) or a Hugging Face model folder holding a policy");
        var host = new Option<string>("--host") { Description = "address to bind; anything but loopback needs --api-key", DefaultValueFactory = _ => d.Host };
        var port = new Option<int>("--port") { Description = "TCP port (0 picks a free one)", DefaultValueFactory = _ => d.Port };
        var key = new Option<string?>("--api-key") { Description = "every request then needs Authorization: Bearer KEY (the weight endpoints need it always)" };
        var maxBatch = new Option<int>("--max-batch") { Description = "most sequences generated together in one batch", DefaultValueFactory = _ => d.MaxBatch };
        var weights = new Option<string?>("--weights-dir") { Description = "the only folder /update_weights_from_disk and /v1/load_lora_adapter read (off without it)" };
        var maxBody = new Option<long>("--max-body-bytes") { Description = "largest request body", DefaultValueFactory = _ => d.MaxBodyBytes };
        var maxN = new Option<int>("--max-n") { Description = "largest n of a request", DefaultValueFactory = _ => d.MaxN };
        var maxTokens = new Option<int>("--max-tokens") { Description = "largest max_tokens / max_new_tokens of a request", DefaultValueFactory = _ => d.MaxTokens };
        var maxPrompts = new Option<int>("--max-prompts") { Description = "most prompts in one request", DefaultValueFactory = _ => d.MaxPrompts };
        var name = new Option<string?>("--served-model-name") { Description = "the model's name in requests and /v1/models (default: the folder's name)" };
        var verbose = new Option<bool>("--verbose") { Description = "one line per request: method, path, status, milliseconds, rows, tokens" };
        var c = new Command("serve", "an OpenAI- and SGLang-compatible inference server for a model folder (Ctrl+C or SIGTERM stops it)")
            { model, host, port, key, maxBatch, weights, maxBody, maxN, maxTokens, maxPrompts, name, verbose };
        c.SetAction(r =>
        {
            var settings = new ServeSettings(r.GetValue(host)!, r.GetValue(port), r.GetValue(key), r.GetValue(maxBatch), r.GetValue(weights),
                r.GetValue(maxBody), r.GetValue(maxN), r.GetValue(maxTokens), r.GetValue(maxPrompts), r.GetValue(name), r.GetValue(verbose)).Validate();
            var served = ServedModel.Load(r.GetValue(model)!, settings.ServedName);
            return Serve(served, settings, output, errors).GetAwaiter().GetResult();
        });
        return c;
    }

    private static async Task<int> Serve(ServedModel served, ServeSettings settings, TextWriter output, TextWriter errors)
    {
        await using var server = await Server.StartAsync(served, settings, errors);
        output.WriteLine($"serving '{served.Name}' (context {served.ContextLength} tokens) on {server.Address} " +
            $"(OpenAI /v1, SGLang /generate; weight endpoints {(settings.WeightsDir is null ? "off" : $"on, under {settings.WeightsDir}")}); Ctrl+C or SIGTERM stops");
        await server.WaitForShutdownAsync();
        output.WriteLine($"stopped after {server.Scheduler.Batches} batches, {server.Scheduler.TokensGenerated} tokens generated");
        return 0;
    }
}
