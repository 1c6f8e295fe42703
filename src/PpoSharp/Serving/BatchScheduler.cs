using PpoSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Serving;

/// <summary>
/// The one generation loop of the server, on a thread of its own (all model work happens there). Rows that are waiting
/// when a batch starts, up to <c>maxBatch</c> of the same model (base or one adapter), are generated together: one
/// left-padded prefill and then one decode step per token for the whole batch over a KV cache, each row with its own
/// sampling, seed, stop conditions and token cap, so a row's tokens do not depend on its batch-mates beyond float
/// rounding. Rows that arrive during a batch wait for the next one. Weight and adapter changes run between batches.
/// Pausing (SGLang's <c>/pause_generation</c>) lets the running batch finish and holds new ones until continued.
/// </summary>
public sealed class BatchScheduler : IDisposable
{
    /// <summary>How long the loop waits after the first row of an idle spell for others sent at the same moment.</summary>
    public static readonly TimeSpan GatherWindow = TimeSpan.FromMilliseconds(3);

    private readonly ServedModel _served;
    private readonly int _maxBatch;
    private readonly List<RowJob> _pending = [];
    private readonly Queue<Action> _control = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _thread;
    private readonly CancellationTokenSource _stop = new();
    private volatile bool _paused;

    public BatchScheduler(ServedModel served, int maxBatch)
    {
        (_served, _maxBatch) = (served, maxBatch);
        _thread = new Thread(Loop) { IsBackground = true, Name = "ppo-sharp serve scheduler" };
        _thread.Start();
    }

    public ServedModel Served => _served;
    public bool Paused => _paused;

    /// <summary>Batches run so far, and the most rows one batch held (the proof that concurrent requests share batches).</summary>
    public long Batches { get; private set; }
    public int LargestBatch { get; private set; }
    public long TokensGenerated { get; private set; }

    /// <summary>Queues rows; each row's <see cref="RowJob.Result"/> completes when it finishes.</summary>
    public void Submit(IReadOnlyList<RowJob> rows)
    {
        lock (_pending)
        {
            if (_stop.IsCancellationRequested) throw new ServeException(503, "the server is shutting down");
            _pending.AddRange(rows);
        }
        _wake.Release();
    }

    /// <summary>Runs <paramref name="action"/> on the scheduler thread between batches (model changes) and returns its result.</summary>
    public Task<T> Control<T>(Func<T> action)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_pending)
        {
            if (_stop.IsCancellationRequested) throw new ServeException(503, "the server is shutting down");
            _control.Enqueue(() =>
            {
                try { done.SetResult(action()); }
                catch (Exception e) { done.SetException(e); }
            });
        }
        _wake.Release();
        return done.Task;
    }

    public void Pause() => _paused = true;

    public void Continue()
    {
        _paused = false;
        _wake.Release();
    }

    private void Loop()
    {
        while (!_stop.IsCancellationRequested)
        {
            try { _wake.Wait(TimeSpan.FromMilliseconds(200), _stop.Token); }
            catch (OperationCanceledException) { break; }
            RunControl();
            if (_paused) continue;
            var batch = Take();
            if (batch.Count == 0) continue;
            RunBatch(batch);
            lock (_pending) if (_pending.Count > 0) _wake.Release();
        }
        lock (_pending)
        {
            foreach (var row in _pending) row.Fail(new ServeException(503, "the server is shutting down"));
            _pending.Clear();
        }
    }

    private void RunControl()
    {
        while (true)
        {
            Action? next;
            lock (_pending) if (!_control.TryDequeue(out next)) return;
            next();
        }
    }

    /// <summary>Up to maxBatch waiting rows of the first waiting row's model, in arrival order; rows of gone clients are dropped.</summary>
    private List<RowJob> Take()
    {
        lock (_pending) if (_pending.Count == 1) Monitor.Wait(_pending, GatherWindow);
        lock (_pending)
        {
            _pending.RemoveAll(r =>
            {
                if (!r.Cancel.IsCancellationRequested) return false;
                r.Fail(new OperationCanceledException(r.Cancel));
                return true;
            });
            if (_pending.Count == 0) return [];
            var adapter = _pending[0].Adapter ?? "";
            var batch = _pending.Where(r => (r.Adapter ?? "") == adapter).Take(_maxBatch).ToList();
            _pending.RemoveAll(batch.Contains);
            return batch;
        }
    }

    private void RunBatch(List<RowJob> rows)
    {
        Decoder model;
        try { model = _served.Resolve(rows[0].Adapter); }
        catch (Exception e)
        {
            foreach (var row in rows) row.Fail(e);
            return;
        }
        var states = rows.Select(r => new RowState(r, _served.ContextLength, _served.Tokenizer, _served.WeightVersion)).ToArray();
        var generators = rows.Select(r => r.Sampling.Greedy ? null : new Generator((ulong)(r.Sampling.Seed ?? Random.Shared.NextInt64()))).ToArray();
        try
        {
            Decode(model, states, generators);
            foreach (var s in states) s.Job.Complete(s.Output());
        }
        catch (Exception e)
        {
            foreach (var s in states) s.Job.Fail(e);
        }
        finally
        {
            foreach (var g in generators) g?.Dispose();
        }
        (Batches, LargestBatch) = (Batches + 1, Math.Max(LargestBatch, rows.Count));
    }

    /// <summary>
    /// Prefill of the left-padded prompts (B, P), then one decode step per token for the batch until every row has
    /// finished. Positions count each row's own tokens; a finished row is fed the pad id (its outputs are not read).
    /// </summary>
    private void Decode(Decoder model, RowState[] states, Generator?[] generators)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var special = _served.Tokenizer.Special;
        int b = states.Length, context = _served.ContextLength;
        long n = states.Max(s => s.Cap);
        var device = Devices.DeviceOf(model);
        var (prompts, promptMask) = Sampling.LeftPad([.. states.Select(s => s.Job.Prompt)], special.Pad, device);   // (B, P)
        long p = prompts.shape[1];
        using var cache = new KvCache(model.Config, b, p + n, model.Embeddings.dtype, device);
        var allKeys = cat([promptMask, ones(b, n, ScalarType.Bool, device)], 1);                                     // (B, P + N)
        bool padded = !promptMask.all().item<bool>();
        var positions = Sampling.PositionIds(promptMask);                                                             // (B, P)
        var logits = model.Logits(model.Hidden(prompts, positions, promptMask, cache).select(1, -1)).to(ScalarType.Float32);  // (B, V)
        var next = positions.select(1, -1) + 1;                                                                       // (B)
        for (long step = 0; ; step++)
        {
            var tokens = Pick(logits, states, generators, special.Pad);
            TokensGenerated += tokens.Count(t => t >= 0);
            if (step == n - 1 || states.All(s => s.Finished)) break;
            using var stepScope = NewDisposeScope();
            var keys = allKeys.narrow(1, 0, p + step + 1);                                                            // (B, L)
            var column = tensor(tokens.Select(t => (long)(t < 0 ? special.Pad : t)).ToArray(), [b, 1], device: device);  // (B, 1)
            var hidden = model.Hidden(column, next.clamp_max(context - 1).view(b, 1), padded ? keys : null, cache);  // (B, 1, C)
            var fresh = model.Logits(hidden.select(1, -1)).to(ScalarType.Float32).MoveToOuterDisposeScope();        // (B, V)
            var advanced = (next + 1).MoveToOuterDisposeScope();
            logits.Dispose();
            next.Dispose();
            (logits, next) = (fresh, advanced);
        }
    }

    /// <summary>
    /// The next token of every unfinished row from logits (B, V): arg-max for greedy rows, else the row's own
    /// temperature / top-k / top-p and generator (<see cref="Sampling.NextToken"/>); each row then records the token,
    /// its log p at temperature 1 and its top alternatives. Returns the ids, -1 for rows already finished.
    /// </summary>
    private static int[] Pick(Tensor logits, RowState[] states, Generator?[] generators, int pad)
    {
        using var scope = NewDisposeScope();
        int b = states.Length;
        var logp = nn.functional.log_softmax(logits, -1);                                   // (B, V)
        var argmax = logits.argmax(-1).data<long>().ToArray();                              // (B)
        var ids = new int[b];
        for (int i = 0; i < b; i++)
        {
            var s = states[i];
            if (s.Finished) { ids[i] = -1; continue; }
            if (s.Job.Cancel.IsCancellationRequested) { s.Abort(); ids[i] = -1; continue; }
            ids[i] = s.Job.Sampling.Greedy ? (int)argmax[i]
                : (int)Sampling.NextToken(logits.narrow(0, i, 1), s.Job.Sampling.Options, generators[i]).item<long>();
        }
        var chosen = tensor(ids.Select(t => (long)Math.Max(t, 0)).ToArray(), [b, 1]);      // (B, 1)
        var lp = logp.gather(1, chosen.to(logp.device)).cpu().data<float>().ToArray();      // (B)
        for (int i = 0; i < b; i++)
        {
            if (ids[i] < 0) continue;
            int k = states[i].Job.Sampling.TopLogprobs;
            states[i].Accept(ids[i], lp[i], k > 0 ? Top(logp.select(0, i), k) : []);
        }
        return ids;
    }

    /// <summary>The k most likely ids of a row's log-probs (V) with their values, most likely first.</summary>
    private static IReadOnlyList<(int, double)> Top(Tensor logp, int k)
    {
        var (values, indices) = logp.topk(Math.Min(k, (int)logp.shape[0]));
        var v = values.cpu().data<float>().ToArray();
        var ix = indices.cpu().data<long>().ToArray();
        return [.. v.Select((x, j) => ((int)ix[j], Math.Max((double)x, -9999.0)))];
    }

    public void Dispose()
    {
        lock (_pending) _stop.Cancel();
        _thread.Join(TimeSpan.FromSeconds(30));
    }
}
