using System.Threading.Channels;
using Microsoft.AspNetCore.Http;

namespace PpoSharp.Serving;

/// <summary>What every route shares: the settings, the served model, the scheduler, and the weights folder.</summary>
internal sealed class ServerContext(ServeSettings settings, BatchScheduler scheduler)
{
    public ServeSettings Settings { get; } = settings;
    public BatchScheduler Scheduler { get; } = scheduler;
    public ServedModel Served => Scheduler.Served;
    public DateTimeOffset Started { get; } = DateTimeOffset.UtcNow;
    public WeightsFolder? Weights { get; } = settings.WeightsDir is null ? null : new WeightsFolder(settings.WeightsDir);

    /// <summary>The weights folder; a 403 when the server runs without --weights-dir.</summary>
    public WeightsFolder RequireWeights() => Weights ?? throw new ServeException(403, "weight endpoints are off: start serve with --weights-dir DIR (and --api-key KEY)");

    /// <summary>A 404 for a model name that is neither the served model nor a loaded adapter.</summary>
    public void CheckModel(string? model)
    {
        if (!Served.Knows(model)) Served.Resolve(model);
    }

    /// <summary>Generates the rows (queued with every other request's) and returns their outputs in order.</summary>
    public async Task<RowOutput[]> Generate(HttpContext ctx, IReadOnlyList<RowJob> rows)
    {
        Scheduler.Submit(rows);
        var outputs = await Task.WhenAll(rows.Select(r => r.Result));
        Count(ctx, outputs);
        return outputs;
    }

    /// <summary>
    /// Streams rows as server-sent events: <paramref name="chunk"/>(index, delta, null) per token and
    /// (index, null, output) when a row finishes; then <c>data: [DONE]</c>.
    /// </summary>
    public async Task Stream(HttpContext ctx, Func<Func<int, Action<RowDelta>>, IReadOnlyList<RowJob>> makeRows, Func<int, RowDelta?, RowOutput?, object> chunk)
    {
        var events = Channel.CreateUnbounded<(int Index, RowDelta? Delta, RowOutput? Done)>(new UnboundedChannelOptions { SingleReader = true });
        var rows = makeRows(index => delta => events.Writer.TryWrite((index, delta, null)));
        for (int i = 0; i < rows.Count; i++)
        {
            int index = i;
            _ = rows[i].Result.ContinueWith(t =>
            {
                if (t.IsCompletedSuccessfully) events.Writer.TryWrite((index, null, t.Result));
                else events.Writer.TryComplete(t.Exception?.InnerException ?? new OperationCanceledException());
            }, TaskScheduler.Default);
        }
        Scheduler.Submit(rows);
        await HttpIo.StartEvents(ctx);
        var outputs = new List<RowOutput>();
        await foreach (var (index, delta, done) in events.Reader.ReadAllAsync(ctx.RequestAborted))
        {
            await HttpIo.Event(ctx, chunk(index, delta, done));
            if (done is null) continue;
            outputs.Add(done);
            if (outputs.Count == rows.Count) break;
        }
        Count(ctx, [.. outputs]);
        await HttpIo.Done(ctx);
    }

    /// <summary>Rows and tokens of a request, for the --verbose line.</summary>
    private static void Count(HttpContext ctx, RowOutput[] outputs)
    {
        ctx.Items["rows"] = outputs.Length;
        ctx.Items["tokens"] = outputs.Sum(o => o.Ids.Count);
    }
}
