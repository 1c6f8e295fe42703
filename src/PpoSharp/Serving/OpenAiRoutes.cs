using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using PpoSharp.Serving.Protocol;
using PpoSharp.Text;

namespace PpoSharp.Serving;

/// <summary>
/// OpenAI's routes as vLLM serves them: <c>GET /v1/models</c>, <c>POST /v1/completions</c> and
/// <c>POST /v1/chat/completions</c>, whole or streamed. Choices are prompt-major: index = prompt * n + sample.
/// </summary>
internal static class OpenAiRoutes
{
    public static void Map(WebApplication app, ServerContext s)
    {
        app.MapGet("/v1/models", (HttpContext ctx) => HttpIo.Json(ctx, Models(s)));
        app.MapPost("/v1/completions", (HttpContext ctx) => Completions(ctx, s));
        app.MapPost("/v1/chat/completions", (HttpContext ctx) => Chat(ctx, s));
    }

    private static ModelList Models(ServerContext s)
    {
        var m = s.Served;
        long created = s.Started.ToUnixTimeSeconds();
        return new ModelList("list", [new ModelCard(m.Name, "model", created, "pposharp", m.Path, null, m.ContextLength),
            .. m.Adapters.Select(a => new ModelCard(a.Name, "model", created, "pposharp", a.Path, m.Name, m.ContextLength))]);
    }

    /// <summary>The rows of a request, prompt-major: prompt i's sample j has index i * n + j and seed + j when seeded.</summary>
    public static List<RowJob> Rows(IReadOnlyList<IReadOnlyList<int>> prompts, int n, Func<int, RowSampling> sampling, string? adapter,
        CancellationToken cancel, Func<int, Action<RowDelta>?>? onToken = null)
    {
        var rows = new List<RowJob>(prompts.Count * n);
        for (int i = 0; i < prompts.Count; i++)
            for (int j = 0; j < n; j++)
            {
                var sp = sampling(i);
                rows.Add(new RowJob(prompts[i], sp with { Seed = sp.Seed + j }, adapter, cancel, onToken?.Invoke(rows.Count)));
            }
        return rows;
    }

    private static async Task Completions(HttpContext ctx, ServerContext s)
    {
        var req = CompletionRequest.Parse(await HttpIo.ReadJson(ctx, s.Settings.MaxBodyBytes), s.Served, s.Settings);
        s.CheckModel(req.Model);
        var id = $"cmpl-{Guid.NewGuid():N}";
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var model = req.Model ?? s.Served.Name;
        var tok = s.Served.Tokenizer;
        if (!req.Stream)
        {
            var outputs = await s.Generate(ctx, Rows(req.Prompts, req.N, _ => req.Sampling, Adapter(req.Model, s), ctx.RequestAborted));
            var choices = outputs.Select((o, i) => new CompletionChoice(i, o.Text, req.Logprobs is null ? null : Logprobs(tok, o.Ids, o.Logprobs, o.Top),
                Finish(o), StopReason(o, tok), req.ReturnTokenIds ? o.PromptIds : null, req.ReturnTokenIds ? o.Ids : null)).ToList();
            await HttpIo.Json(ctx, new CompletionResponse(id, "text_completion", created, model, choices, Usage(outputs)));
            return;
        }
        var started = new HashSet<int>();
        await s.Stream(ctx, send => Rows(req.Prompts, req.N, _ => req.Sampling, Adapter(req.Model, s), ctx.RequestAborted, send), (index, delta, done) =>
        {
            var promptIds = req.ReturnTokenIds && started.Add(index) ? done?.PromptIds ?? req.Prompts[index / req.N] : null;
            var choice = delta is not null
                ? new CompletionChoice(index, delta.Text, req.Logprobs is null ? null : Logprobs(tok, [delta.Id], [delta.Logprob], [delta.Top]), null, null,
                    promptIds, req.ReturnTokenIds ? [delta.Id] : null)
                : new CompletionChoice(index, "", null, Finish(done!), StopReason(done!, tok), promptIds, req.ReturnTokenIds ? [] : null);
            return new CompletionResponse(id, "text_completion", created, model, [choice], null);
        });
    }

    private static async Task Chat(HttpContext ctx, ServerContext s)
    {
        var req = ChatRequest.Parse(await HttpIo.ReadJson(ctx, s.Settings.MaxBodyBytes), s.Served, s.Settings);
        s.CheckModel(req.Model);
        var id = $"chatcmpl-{Guid.NewGuid():N}";
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var model = req.Model ?? s.Served.Name;
        var tok = s.Served.Tokenizer;
        if (!req.Stream)
        {
            var outputs = await s.Generate(ctx, Rows([req.Prompt], req.N, _ => req.Sampling, Adapter(req.Model, s), ctx.RequestAborted));
            var choices = outputs.Select((o, i) => new ChatChoice(i, new ChatMessageOut("assistant", o.Text), req.Logprobs ? ChatLogprobs(tok, o.Ids, o.Logprobs, o.Top) : null,
                Finish(o), StopReason(o, tok), req.ReturnTokenIds ? o.Ids : null)).ToList();
            await HttpIo.Json(ctx, new ChatResponse(id, "chat.completion", created, model, choices, Usage(outputs), req.ReturnTokenIds ? req.Prompt : null));
            return;
        }
        var started = new HashSet<int>();
        await s.Stream(ctx, send => Rows([req.Prompt], req.N, _ => req.Sampling, Adapter(req.Model, s), ctx.RequestAborted, send), (index, delta, done) =>
        {
            var role = started.Add(index) ? "assistant" : null;
            var choice = delta is not null
                ? new ChatChunkChoice(index, new ChatDelta(role, delta.Text), req.Logprobs ? ChatLogprobs(tok, [delta.Id], [delta.Logprob], [delta.Top]) : null, null,
                    req.ReturnTokenIds ? [delta.Id] : null)
                : new ChatChunkChoice(index, new ChatDelta(role, role is null ? null : ""), null, Finish(done!), null);
            return new ChatChunk(id, "chat.completion.chunk", created, model, [choice]);
        });
    }

    /// <summary>The adapter a request's model names, or null for the base.</summary>
    public static string? Adapter(string? model, ServerContext s) => model is null || model == s.Served.Name ? null : model;

    public static string Finish(RowOutput o) => o.Finish switch
    {
        FinishKind.Stop => "stop",
        FinishKind.Length => "length",
        _ => "abort",
    };

    /// <summary>vLLM's stop_reason: the stop token id or stop string that ended the row; null for EOS or the length cap.</summary>
    public static object? StopReason(RowOutput o, ITokenizer tok) => o.MatchedStop is { } str ? str
        : o.MatchedToken is int id && !tok.Special.IsEos(id) ? id : null;

    public static Usage Usage(IReadOnlyList<RowOutput> outputs)
    {
        int prompt = outputs.DistinctBy(o => o.PromptIds).Sum(o => o.PromptIds.Count), completion = outputs.Sum(o => o.Ids.Count);
        return new Usage(prompt, completion, prompt + completion);
    }

    /// <summary>vLLM's completion logprobs: text offsets into the choice's text, log p, token strings, and the top alternatives with the sampled token.</summary>
    public static CompletionLogprobs Logprobs(ITokenizer tok, IReadOnlyList<int> ids, IReadOnlyList<double> logprobs, IReadOnlyList<IReadOnlyList<(int Id, double Logprob)>> top)
    {
        var tokens = ids.Select(i => tok.Decode([i], skipSpecial: false)).ToList();
        var offsets = new List<int>(ids.Count);
        int at = 0;
        foreach (var t in tokens) { offsets.Add(at); at += t.Length; }
        var tops = ids.Select((id, k) =>
        {
            var map = new Dictionary<string, double>();
            foreach (var (alt, lp) in top[k]) map.TryAdd(tok.Decode([alt], skipSpecial: false), lp);
            map.TryAdd(tokens[k], logprobs[k]);
            return map;
        }).ToList();
        return new CompletionLogprobs(offsets, logprobs, tokens, tops);
    }

    public static ChatLogprobs ChatLogprobs(ITokenizer tok, IReadOnlyList<int> ids, IReadOnlyList<double> logprobs, IReadOnlyList<IReadOnlyList<(int Id, double Logprob)>> top) =>
        new([.. ids.Select((id, k) =>
        {
            var text = tok.Decode([id], skipSpecial: false);
            return new ChatTokenLogprob(text, logprobs[k], Bytes(text), [.. top[k].Select(t => { var alt = tok.Decode([t.Id], skipSpecial: false); return new ChatTopLogprob(alt, t.Logprob, Bytes(alt)); })]);
        })]);

    private static IReadOnlyList<int> Bytes(string text) => [.. System.Text.Encoding.UTF8.GetBytes(text).Select(b => (int)b)];
}
