using LLama;
using LLama.Common;
using LLama.Native;

namespace PpoSharp.Export;

/// <summary>
/// A GGUF file run by llama.cpp itself (the build inside LLamaSharp.Backend.Cpu), on token ids: logits at every position,
/// greedy continuations, and batched greedy generation for the speed comparison. Every <c>llama_decode</c> goes through
/// LLamaSharp's <c>DecodeAsync</c>, as its own executors do: called straight from a .NET thread it was 3-6x slower with 2
/// threads, because llama.cpp's OpenMP workers spin against the caller.
/// </summary>
public sealed class LlamaCpp : IDisposable
{
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;

    /// <summary>
    /// Loads <paramref name="path"/>. With <paramref name="exact"/>, flash attention is off and the KV cache is F32: llama.cpp's
    /// defaults (flash attention on for the CPU, an F16 cache) move logits by ~1e-2, enough to flip near-tied argmaxes.
    /// </summary>
    public LlamaCpp(string path, int contextSize, int sequences = 1, int threads = 2, bool exact = true)
    {
        Quiet();
        var p = new ModelParams(path)
        {
            ContextSize = (uint)contextSize, BatchSize = (uint)Math.Max(contextSize, 512), SeqMax = (uint)sequences, Threads = threads, BatchThreads = threads,
            GpuLayerCount = 0,
        };
        if (exact)
        {
            p.FlashAttention = false;
            p.TypeK = GGMLType.GGML_TYPE_F32;
            p.TypeV = GGMLType.GGML_TYPE_F32;
        }
        _weights = LLamaWeights.LoadFromFile(p);
        _context = _weights.CreateContext(p);
        VocabSize = _weights.Vocab.Count;
    }

    public int VocabSize { get; }

    /// <summary>Silences llama.cpp's load log (it writes every key and tensor to stderr).</summary>
    private static void Quiet()
    {
        if (Interlocked.Exchange(ref _quiet, 1) != 0) return;
        try { NativeLibraryConfig.All.WithLogCallback((_, _) => { }); }
        catch (InvalidOperationException) { }      // llama.cpp was loaded by another caller first: its log setting stays
    }

    private static int _quiet;

    /// <summary>llama.cpp's own tokenization of <paramref name="text"/>, special-token strings parsed, no BOS added.</summary>
    public int[] Tokenize(string text) => _context.Tokenize(text, addBos: false, special: true).Select(t => (int)t).ToArray();

    /// <summary>Logits (T, V) of one sequence, each position seeing the tokens before it.</summary>
    public float[][] Logits(IReadOnlyList<int> ids)
    {
        _context.NativeHandle.MemoryClear();
        var batch = new LLamaBatch();
        for (int t = 0; t < ids.Count; t++) batch.Add((LLamaToken)ids[t], t, (LLamaSeqId)0, logits: true);
        Decode(batch);
        return Enumerable.Range(0, ids.Count).Select(t => _context.NativeHandle.GetLogitsIth(t).ToArray()).ToArray();
    }

    /// <summary>
    /// Greedy continuations of <paramref name="prompts"/> (one sequence each, decoded together), <paramref name="newTokens"/>
    /// each, stopping a row at any of <paramref name="stop"/> (kept in the output).
    /// </summary>
    public List<int>[] Greedy(IReadOnlyList<IReadOnlyList<int>> prompts, int newTokens, IReadOnlyCollection<int>? stop = null)
    {
        _context.NativeHandle.MemoryClear();
        var outputs = prompts.Select(_ => new List<int>()).ToArray();
        var batch = new LLamaBatch();
        var rowOf = new int[prompts.Count];
        for (int s = 0; s < prompts.Count; s++)
            for (int t = 0; t < prompts[s].Count; t++) batch.Add((LLamaToken)prompts[s][t], t, (LLamaSeqId)s, logits: t == prompts[s].Count - 1);
        for (int s = 0, row = 0; s < prompts.Count; s++) rowOf[s] = (row += prompts[s].Count) - 1;
        var done = new bool[prompts.Count];
        for (int step = 0; step < newTokens; step++)
        {
            Decode(batch);
            var next = new LLamaBatch();
            int r = 0;
            for (int s = 0; s < prompts.Count; s++)
            {
                if (done[s]) continue;
                var logits = _context.NativeHandle.GetLogitsIth(rowOf[s]);
                int id = ArgMax(logits);
                outputs[s].Add(id);
                if (stop?.Contains(id) == true || step == newTokens - 1) { done[s] = true; continue; }
                next.Add((LLamaToken)id, prompts[s].Count + step, (LLamaSeqId)s, logits: true);
                rowOf[s] = r++;
            }
            if (next.TokenCount == 0) break;
            batch = next;
        }
        return outputs;
    }

    private void Decode(LLamaBatch batch)
    {
        var result = _context.DecodeAsync(batch).GetAwaiter().GetResult();
        if (result != DecodeResult.Ok) throw new PpoSharpException($"llama.cpp: llama_decode returned {result}");
    }

    /// <summary>The first index of the largest value (torch's argmax convention for ties).</summary>
    public static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }
}
