using System.Diagnostics;

namespace PpoSharp.Models;

/// <summary>
/// Helper threads that run the parts of one short call beside the caller, for calls of tens of microseconds in a row
/// (a decode step's matrix products). A helper spins for <see cref="SpinSeconds"/> after its last part, so that the next
/// call finds it awake, and then sleeps until the next call wakes it. The thread pool was no use here: Parallel.For
/// woke a sleeping pool thread for each product, and batch-1 decode fell from 14 to 9 tokens/s. One caller at a time
/// uses the team; another that finds it busy runs every part itself.
/// </summary>
internal sealed class SpinTeam
{
    /// <summary>The process's team (threads are started on first use, up to the parts asked for).</summary>
    public static readonly SpinTeam Shared = new();

    /// <summary>How long a helper keeps spinning after its last part before it sleeps.</summary>
    public const double SpinSeconds = 200e-6;

    private readonly object _gate = new();
    private readonly List<Helper> _helpers = [];
    private Call _call = new(_ => { }, 0, 0);
    private int _pending;

    /// <summary>One call: its parts and a number of its own, published to the helpers together.</summary>
    private sealed record Call(Action<int> Work, int Parts, long Epoch);

    private sealed class Helper
    {
        public readonly SemaphoreSlim Wake = new(0);
        public int Sleeping;
    }

    /// <summary>Runs work(0) .. work(parts - 1), part 0 on the calling thread and the rest on helpers; returns when all are done.</summary>
    public void Run(int parts, Action<int> work)
    {
        if (parts <= 1 || !Monitor.TryEnter(_gate))
        {
            for (int i = 0; i < parts; i++) work(i);
            return;
        }
        try
        {
            while (_helpers.Count < parts - 1) Start(_helpers.Count);
            Volatile.Write(ref _pending, parts - 1);
            Volatile.Write(ref _call, new Call(work, parts, _call.Epoch + 1));
            for (int h = 0; h < parts - 1; h++)
                if (Interlocked.Exchange(ref _helpers[h].Sleeping, 0) == 1) _helpers[h].Wake.Release();
            work(0);
            var spin = new SpinWait();
            while (Volatile.Read(ref _pending) > 0) spin.SpinOnce(sleep1Threshold: -1);
        }
        finally { Monitor.Exit(_gate); }
    }

    private void Start(int index)
    {
        var helper = new Helper();
        _helpers.Add(helper);
        long seen = _call.Epoch;                              // read here: the first call may be published before the thread runs
        new Thread(() => Loop(index, helper, seen)) { IsBackground = true, Name = $"ppo-sharp matmul {index + 1}" }.Start();
    }

    private void Loop(int index, Helper helper, long seen)
    {
        while (true)
        {
            long idleSince = Stopwatch.GetTimestamp();
            Call call;
            while ((call = Volatile.Read(ref _call)).Epoch == seen)
            {
                if (Stopwatch.GetElapsedTime(idleSince).TotalSeconds < SpinSeconds) Thread.SpinWait(20);
                else Sleep(helper, seen);
            }
            seen = call.Epoch;
            if (index + 1 < call.Parts)
            {
                call.Work(index + 1);
                Interlocked.Decrement(ref _pending);
            }
        }
    }

    /// <summary>Sleeps until a call wakes this helper, unless one came in while it was getting ready to.</summary>
    private void Sleep(Helper helper, long seen)
    {
        Interlocked.Exchange(ref helper.Sleeping, 1);           // a full fence: the read of the call below may not pass this write
        if (Volatile.Read(ref _call).Epoch != seen && Interlocked.Exchange(ref helper.Sleeping, 0) == 1) return;   // not woken: nothing to take
        helper.Wake.Wait();                                                                                  // woken (a release is or will be there)
    }
}
