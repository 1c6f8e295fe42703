using PpoSharp.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>How to pick tokens. <see cref="Greedy"/> takes the arg-max; otherwise temperature, top-k, top-p apply.</summary>
/// <param name="MaxNewTokens">Cap on generated tokens (also capped by the model's context length).</param>
/// <param name="Temperature">Logits are divided by it before sampling (and before PPO's log-probabilities).</param>
/// <param name="TopK">Keep the k most likely tokens; 0 keeps all.</param>
/// <param name="TopP">Keep the smallest set of most likely tokens whose mass reaches p; 1 keeps all.</param>
/// <param name="Greedy">Arg-max decoding.</param>
public sealed record SamplingOptions(int MaxNewTokens = 32, double Temperature = 1.0, int TopK = 0, double TopP = 1.0, bool Greedy = false);

/// <summary>Generated responses: ids (B, N) with pad after the end, and a mask (B, N) of generated tokens up to and including EOS.</summary>
public sealed record Generation(Tensor Responses, Tensor Mask) : IDisposable
{
    public void Dispose()
    {
        Responses.Dispose();
        Mask.Dispose();
    }
}

/// <summary>Batched generation from left-padded prompts with a KV cache.</summary>
public static class Sampling
{
    /// <summary>Position ids (B, T) of a left-padded batch from its mask (B, T): 0 at each row's first real token.</summary>
    public static Tensor PositionIds(Tensor mask) => (mask.to(ScalarType.Int64).cumsum(1) - 1).clamp_min(0);

    /// <summary>Whether each row's response (B, N) ended with an EOS id within its mask (B, N), rather than at the length cap: (B) bool.</summary>
    public static Tensor EndedWithEos(Tensor responses, Tensor mask, IReadOnlyList<int> eos) => IsEos(responses, eos).logical_and(mask).any(1);

    /// <summary>Whether each id of <paramref name="ids"/> is one of the EOS ids (same shape, bool).</summary>
    public static Tensor IsEos(Tensor ids, IReadOnlyList<int> eos)
    {
        var result = zeros_like(ids, ScalarType.Bool);
        foreach (var id in eos) result = result.logical_or(ids.eq(id));
        return result;
    }

    /// <summary>Left-pads token lists into ids (B, P) and a bool mask (B, P).</summary>
    public static (Tensor Ids, Tensor Mask) LeftPad(IReadOnlyList<IReadOnlyList<int>> rows, int pad, Device? device = null)
    {
        int p = rows.Max(r => r.Count);
        var ids = new long[rows.Count * p];
        var mask = new bool[rows.Count * p];
        for (int i = 0; i < rows.Count; i++)
        {
            int offset = p - rows[i].Count;
            for (int j = 0; j < p; j++)
            {
                bool real = j >= offset;
                ids[i * p + j] = real ? rows[i][j - offset] : pad;
                mask[i * p + j] = real;
            }
        }
        return (tensor(ids, [rows.Count, p], device: device), tensor(mask, [rows.Count, p], device: device));
    }

    /// <summary>Applies temperature, top-k and top-p to logits (B, V); removed tokens get -inf.</summary>
    public static Tensor ProcessLogits(Tensor logits, SamplingOptions o)
    {
        using var scope = NewDisposeScope();
        if (o.Temperature != 1.0) logits = logits / o.Temperature;
        if (o.TopK > 0 && o.TopK < logits.shape[^1])
        {
            var kth = logits.topk(o.TopK, dim: -1).values.narrow(-1, o.TopK - 1, 1);   // (B, 1)
            logits = logits.masked_fill(logits.lt(kth), double.NegativeInfinity);
        }
        if (o.TopP < 1.0)
        {
            var (sorted, order) = logits.sort(dim: -1, descending: true);               // (B, V)
            var probs = nn.functional.softmax(sorted, -1);
            var before = probs.cumsum(-1) - probs;                                       // mass of more likely tokens
            sorted = sorted.masked_fill(before.gt(o.TopP), double.NegativeInfinity);
            logits = logits.scatter(-1, order, sorted);
        }
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Next token ids (B) from last-position logits (B, V). Sampling is by inverse CDF: one uniform u per row, and the
    /// first token whose cumulative probability (float64) exceeds u times the total; tokens of probability 0 are never
    /// drawn. Same distribution as torch.multinomial, at about a twentieth of its cost on CPU (0.05 vs 0.8 ms at 64 x 512).
    /// </summary>
    public static Tensor NextToken(Tensor logits, SamplingOptions o, Generator? generator)
    {
        if (o.Greedy) return logits.argmax(-1);
        using var scope = NewDisposeScope();
        var cdf = nn.functional.softmax(ProcessLogits(logits, o), -1).cumsum(-1, type: ScalarType.Float64);  // (B, V)
        var u = rand([logits.shape[0], 1], generator: generator, dtype: ScalarType.Float64).to(cdf.device) * cdf.narrow(-1, -1, 1);  // (B, 1); the generator is the CPU's
        return searchsorted(cdf, u, right: true).squeeze(-1).clamp_max(logits.shape[^1] - 1).MoveToOuterDisposeScope();
    }

    /// <summary>A batch is split only where every worker gets at least this many rows (below it, threads do not pay).</summary>
    public const int MinRowsPerWorker = 8;

    /// <summary>
    /// Generates up to <see cref="SamplingOptions.MaxNewTokens"/> tokens for left-padded prompts (B, P) with mask (B, P),
    /// stopping rows at EOS and the batch when every row has stopped. <paramref name="useCache"/> = false recomputes the
    /// whole sequence each step (for tests and the KV-cache benchmark). On the CPU a large batch is split into one
    /// contiguous share of rows per thread of <see cref="CpuThreads.Budget"/>, whatever the load (see <see cref="Generate(Decoder, Tensor, Tensor, SamplingOptions, SpecialTokenIds, int, Generator?, bool)"/>).
    /// </summary>
    public static Generation Generate(Decoder model, Tensor prompts, Tensor promptMask, SamplingOptions o, SpecialTokenIds special,
        Generator? generator = null, bool useCache = true)
    {
        int workers = prompts.device_type == DeviceType.CPU ? (int)Math.Clamp(prompts.shape[0] / MinRowsPerWorker, 1, CpuThreads.Budget) : 1;
        return Generate(model, prompts, promptMask, o, special, workers, generator, useCache);
    }

    /// <summary>
    /// Generation by <paramref name="workers"/> threads, each running torch single-threaded on a contiguous share of the
    /// rows with its own generator (seeded from <paramref name="generator"/>). A decode step of a small model is a chain
    /// of small operations, and two threads inside each (torch's) leave a core idle for much of a step; a share per
    /// core keeps both busy and lets attention use <see cref="DecodeAttention"/>. The samples depend on the seed and on
    /// the number of workers. Responses are padded to the longest share's length.
    /// </summary>
    public static Generation Generate(Decoder model, Tensor prompts, Tensor promptMask, SamplingOptions o, SpecialTokenIds special,
        int workers, Generator? generator = null, bool useCache = true)
    {
        long b = prompts.shape[0], p = prompts.shape[1];
        int n = (int)Math.Min(o.MaxNewTokens, model.Config.ContextLength - p);
        if (n <= 0) throw new PpoSharpException($"prompt of {p} tokens leaves no room to generate within context_length {model.Config.ContextLength}");
        if (workers <= 1) return GenerateRows(model, prompts, promptMask, o with { MaxNewTokens = n }, special, generator, useCache, adapt: true);

        using var seeds = randint(0, long.MaxValue, [workers], generator: generator);
        var seed = seeds.data<long>().ToArray();
        // The outputs are created here and written by the workers, so that each thread disposes the tensors it created
        // (TorchSharp counts live tensors per thread).
        var responses = full(b, n, special.Pad, ScalarType.Int64, prompts.device);                         // (B, N)
        var mask = zeros(b, n, ScalarType.Bool, prompts.device);                                            // (B, N)
        var lengths = new long[workers];
        int threads = get_num_threads();
        try
        {
            Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, i =>
            {
                long from = b * i / workers, rows = b * (i + 1) / workers - from;
                lengths[i] = GenerateShare(model, prompts.narrow(0, from, rows), promptMask.narrow(0, from, rows), o with { MaxNewTokens = n }, special,
                    (ulong)seed[i], useCache, responses.narrow(0, from, rows), mask.narrow(0, from, rows), threads);
            });
        }
        finally { set_num_threads(threads); }   // the workers' last restore may have run before another's set to 1
        long longest = lengths.Max();                                                                        // every share stopped early: trim
        if (longest < n) (responses, mask) = (Trim(responses, longest), Trim(mask, longest));
        return new Generation(responses, mask);
    }

    /// <summary>
    /// One worker's share: generation of rows (b, P) on this thread with torch single-threaded, written into the first
    /// columns of <paramref name="responses"/> and <paramref name="mask"/> (b, N); returns the number of columns written.
    /// The worker then restores the caller's count <paramref name="threads"/>, not one it read itself: torch's count is
    /// partly process-wide, so a worker could read another worker's 1 and leave it behind.
    /// </summary>
    private static long GenerateShare(Decoder model, Tensor prompts, Tensor promptMask, SamplingOptions o, SpecialTokenIds special, ulong seed,
        bool useCache, Tensor responses, Tensor mask, int threads)
    {
        using var scope = NewDisposeScope();
        set_num_threads(1);
        try
        {
            using var generator = new Generator(seed);
            using var share = GenerateRows(model, prompts, promptMask, o, special, generator, useCache, adapt: false);
            long length = share.Responses.shape[1];
            responses.narrow(1, 0, length).copy_(share.Responses);
            mask.narrow(1, 0, length).copy_(share.Mask);
            return length;
        }
        finally { set_num_threads(threads); }
    }

    /// <summary>The first <paramref name="length"/> columns of x (B, N) as a tensor of their own; x is disposed.</summary>
    private static Tensor Trim(Tensor x, long length)
    {
        using (x)
        using (var view = x.narrow(1, 0, length))
            return view.clone();
    }

    /// <summary>
    /// Whether a one-share CPU generation runs its decode steps on one torch thread with the matrix products split over
    /// the cores (<see cref="SmallMatmul.Parts"/>): weights and products in one dtype that <see cref="SmallMatmul"/>
    /// takes, and no more rows than it takes. A step's other operations are too small to share out, and torch's second
    /// thread spun through them (<c>perf</c>: 40% of a batch-1 decode's samples).
    /// </summary>
    private static bool SplitsProducts(Decoder model, Tensor prompts) =>
        prompts.device_type == DeviceType.CPU && prompts.shape[0] <= SmallMatmul.MaxRows && model.Embeddings.dtype is ScalarType.Float32 or ScalarType.BFloat16
        && model.MatmulDtype is null;

    /// <summary>
    /// Generation on the calling thread; the caller has checked that n = o.MaxNewTokens fits the context. With
    /// <paramref name="adapt"/> (one share, torch's own threads) each step calls <see cref="CpuThreads.Adapt"/>: a
    /// decode step is hundreds of small parallel regions, and under load the profile of a SmolLM2-shape batch-1 decode
    /// was 58% libgomp spin-waiting for a descheduled partner thread (0.5 tokens/s against llama.cpp's 5.6 in the same run).
    /// Where <see cref="SplitsProducts"/>, the decode steps run torch on one thread instead, and the step's matrix
    /// products follow the load over the cores (<see cref="CpuThreads.Target"/>).
    /// </summary>
    private static Generation GenerateRows(Decoder model, Tensor prompts, Tensor promptMask, SamplingOptions o, SpecialTokenIds special,
        Generator? generator, bool useCache, bool adapt)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        long b = prompts.shape[0], p = prompts.shape[1], n = o.MaxNewTokens;
        using var cache = useCache ? new KvCache(model.Config, b, p + n, model.Embeddings.dtype, prompts.device) : null;

        // Every generated position is a real key (a finished row's pads are never read back), so the key mask of the
        // whole run is known up front; step s attends to its first P + s + 1 columns. An unpadded batch needs none.
        var promptKeys = promptMask.to(ScalarType.Bool);                                    // (B, P)
        var allKeys = cat([promptKeys, ones(b, n, ScalarType.Bool, prompts.device)], 1);    // (B, P + N)
        bool padded = !promptKeys.all().item<bool>();
        var positions = PositionIds(promptKeys);                                            // (B, P)
        var logits = model.Logits(model.Hidden(prompts, positions, promptKeys, cache).select(1, -1)).to(ScalarType.Float32);  // (B, V) sampled in fp32
        var nextPos = positions.select(1, -1) + 1;                                          // (B)
        var sequence = prompts;                                                              // (B, L), without the cache only
        var finished = zeros(b, ScalarType.Bool, prompts.device);                            // (B)
        var tokens = new List<Tensor>();
        var alive = new List<Tensor>();
        int cores = get_num_threads();
        bool split = adapt && useCache && SplitsProducts(model, prompts);
        if (split) set_num_threads(1);
        try
        {
            for (long step = 0; step < n; step++)
            {
                var token = NextToken(logits, o, generator).masked_fill(finished, special.Pad);   // (B)
                tokens.Add(token);
                alive.Add(finished.logical_not());
                finished = finished.logical_or(IsEos(token, special.Eos));
                if (step == n - 1 || finished.all().item<bool>()) break;
                if (split) SmallMatmul.Parts = cores = CpuThreads.Target(cores);             // the products' threads follow the load
                else if (adapt) CpuThreads.Adapt();                                              // no-op for a fixed thread count

                var keys = allKeys.narrow(1, 0, p + step + 1);                                  // (B, L)
                var column = token.view(b, 1);                                                  // (B, 1)
                Tensor hidden;
                if (useCache) hidden = model.Hidden(column, nextPos.view(b, 1), padded ? keys : null, cache);  // (B, 1, C)
                else
                {
                    sequence = cat([sequence, column], 1);
                    hidden = model.Hidden(sequence, PositionIds(keys), keys);                  // (B, L, C)
                }
                logits = model.Logits(hidden.select(1, -1)).to(ScalarType.Float32);             // (B, V)
                nextPos = nextPos + 1;
            }
        }
        finally
        {
            if (split)
            {
                SmallMatmul.Parts = 1;
                set_num_threads(cores);
            }
        }
        var responses = stack(tokens, 1).MoveToOuterDisposeScope();                         // (B, N)
        var mask = stack(alive, 1).MoveToOuterDisposeScope();                               // (B, N)
        return new Generation(responses, mask);
    }
}
