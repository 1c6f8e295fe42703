using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using PpoSharp.Serving.Protocol;
using PpoSharp.Text;

namespace PpoSharp.Serving;

/// <summary>
/// SGLang's native routes: <c>/generate</c>, the weight update from disk and its version, pause and continue, cache
/// flush (there is no prefix cache to flush: it answers as SGLang does), and the health checks.
/// </summary>
internal static class SglangRoutes
{
    public static void Map(WebApplication app, ServerContext s)
    {
        app.MapPost("/generate", (HttpContext ctx) => Generate(ctx, s));
        app.MapPost("/update_weights_from_disk", (HttpContext ctx) => UpdateWeights(ctx, s));
        app.MapGet("/get_weight_version", (HttpContext ctx) => HttpIo.Json(ctx, new Dictionary<string, string> { ["weight_version"] = s.Served.WeightVersion }));
        app.MapPost("/pause_generation", async (HttpContext ctx) =>
        {
            await HttpIo.ReadOptionalJson(ctx, s.Settings.MaxBodyBytes);
            s.Scheduler.Pause();
            await HttpIo.Json(ctx, new Dictionary<string, string> { ["message"] = "Generation paused successfully.", ["status"] = "ok" });
        });
        app.MapPost("/continue_generation", async (HttpContext ctx) =>
        {
            await HttpIo.ReadOptionalJson(ctx, s.Settings.MaxBodyBytes);
            s.Scheduler.Continue();
            await HttpIo.Json(ctx, new Dictionary<string, string> { ["message"] = "Generation continued successfully.", ["status"] = "ok" });
        });
        app.MapMethods("/flush_cache", ["GET", "POST"], (HttpContext ctx) => HttpIo.Text(ctx, "Cache flushed.\nPlease check backend logs for more details. (When there are running or waiting requests, the operation will not be performed.)\n"));
        app.MapGet("/health", (HttpContext ctx) => HttpIo.Text(ctx, ""));
        app.MapGet("/health_generate", async (HttpContext ctx) =>
        {
            var row = new RowJob([s.Served.Tokenizer.Special.Eos[0]], new RowSampling(1, Temperature: 0), null, ctx.RequestAborted);
            await s.Generate(ctx, [row]);
            await HttpIo.Text(ctx, "");
        });
    }

    private static async Task Generate(HttpContext ctx, ServerContext s)
    {
        var clock = Stopwatch.StartNew();
        var req = GenerateRequest.Parse(await HttpIo.ReadJson(ctx, s.Settings.MaxBodyBytes), s.Served, s.Settings);
        s.CheckModel(req.Adapter);
        int b = req.Prompts.Count;
        // SGLang's expansion input_ids * n: row k*B + i is sample k of prompt i.
        var rows = new List<RowJob>(b * req.N);
        for (int k = 0; k < req.N; k++)
            for (int i = 0; i < b; i++)
                rows.Add(new RowJob(req.Prompts[i], req.Sampling[i] with { Seed = req.Sampling[i].Seed + k }, OpenAiRoutes.Adapter(req.Adapter, s), ctx.RequestAborted));
        var outputs = await s.Generate(ctx, rows);
        var tok = s.Served.Tokenizer;
        var id = Guid.NewGuid().ToString("N");
        var results = outputs.Select((o, j) => new GenerateOutput(o.Text, o.Ids, new GenerateMeta(
            outputs.Length == 1 ? id : $"{id}_{j}", FinishReason(o), o.PromptIds.Count, o.Ids.Count, 0, o.WeightVersion, 0, clock.Elapsed.TotalSeconds,
            req.ReturnLogprob ? [] : null,
            req.ReturnLogprob ? [.. o.Ids.Select((t, k) => Triple(o.Logprobs[k], t, tok, req.ReturnTextInLogprobs))] : null,
            req.ReturnLogprob && req.TopLogprobsNum > 0 ? [] : null,
            req.ReturnLogprob && req.TopLogprobsNum > 0 ? [.. o.Top.Select(top => (IReadOnlyList<object?[]>)[.. top.Select(t => Triple(t.Logprob, t.Id, tok, req.ReturnTextInLogprobs))])] : null))).ToList();
        if (req.SingleOutput) await HttpIo.Json(ctx, results[0]);
        else await HttpIo.Json(ctx, results);
    }

    /// <summary>SGLang's log-prob triple [logprob, token_id, text|null].</summary>
    private static object?[] Triple(double logprob, int id, ITokenizer tok, bool text) => [logprob, id, text ? tok.Decode([id], skipSpecial: false) : null];

    /// <summary>SGLang's finish_reason: {"type":"stop","matched":id|str}, {"type":"length","length":N} or {"type":"abort","message":...}.</summary>
    private static Dictionary<string, object?> FinishReason(RowOutput o) => o.Finish switch
    {
        FinishKind.Stop => new() { ["type"] = "stop", ["matched"] = o.MatchedStop is { } str ? str : o.MatchedToken },
        FinishKind.Length => new() { ["type"] = "length", ["length"] = o.Ids.Count },
        _ => new() { ["type"] = "abort", ["message"] = "the request was aborted" },
    };

    /// <summary>
    /// Loads the model in <c>model_path</c> (under --weights-dir) into a new model between batches and swaps it in; on
    /// failure the old weights keep serving and the answer (400) says why. A given weight_version becomes the server's.
    /// </summary>
    private static async Task UpdateWeights(HttpContext ctx, ServerContext s)
    {
        var req = UpdateWeightsRequest.Parse(await HttpIo.ReadJson(ctx, s.Settings.MaxBodyBytes));
        string message;
        try
        {
            var dir = s.RequireWeights().Check(req.ModelPath, "model_path");
            await s.Scheduler.Control(() => { s.Served.ReplaceWeights(dir, req.WeightVersion); return true; });
            message = $"Succeeded to update model weights from {req.ModelPath}; weight_version {s.Served.WeightVersion}.";
        }
        catch (PpoSharpException e) when (e is not ServeException { Status: 401 or 403 })
        {
            await HttpIo.Json(ctx, new UpdateWeightsResponse(false, $"Failed to update weights: {e.Message}. The old weights keep serving.", 0), 400);
            return;
        }
        await HttpIo.Json(ctx, new UpdateWeightsResponse(true, message, 0));
    }
}

/// <summary>vLLM's runtime LoRA routes: load (or reload in place) a peft adapter folder under --weights-dir by name, and unload it.</summary>
internal static class LoraRoutes
{
    public static void Map(WebApplication app, ServerContext s)
    {
        app.MapPost("/v1/load_lora_adapter", async (HttpContext ctx) =>
        {
            var req = LoraRequest.Parse(await HttpIo.ReadJson(ctx, s.Settings.MaxBodyBytes), load: true);
            var dir = s.RequireWeights().Check(req.Path, "lora_path");
            await s.Scheduler.Control(() => { s.Served.LoadAdapter(req.Name, dir, req.LoadInplace); return true; });
            await HttpIo.Text(ctx, $"Success: LoRA adapter '{req.Name}' added successfully.");
        });
        app.MapPost("/v1/unload_lora_adapter", async (HttpContext ctx) =>
        {
            var req = LoraRequest.Parse(await HttpIo.ReadJson(ctx, s.Settings.MaxBodyBytes), load: false);
            await s.Scheduler.Control(() => { s.Served.UnloadAdapter(req.Name); return true; });
            await HttpIo.Text(ctx, $"Success: LoRA adapter '{req.Name}' removed successfully.");
        });
    }
}
