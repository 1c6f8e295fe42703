using PpoSharp.Models;

namespace PpoSharp.Training;

/// <summary>
/// Checks a training batch against the data and the machine before a run starts: a batch larger than the training
/// records, or one whose estimated memory exceeds what the machine has available, is refused in one line; one above half
/// of it gets a warning. The estimate is from the shapes alone (see <see cref="StepBytes"/>).
/// </summary>
public static class MemoryCheck
{
    /// <summary>
    /// Bytes one training step holds beyond the loaded weights, for <paramref name="sequences"/> sequences of
    /// <paramref name="length"/> tokens (B, T):
    /// <list type="bullet">
    /// <item>activations kept for the backward pass, per layer s b h (34 + 5 a s / h) bytes with 16-bit activations
    /// (Korthikanti et al. 2022, arXiv 2205.05198, eq. 1: s = T, b = B, h = d_model, a = heads), doubled for fp32;</item>
    /// <item>with <paramref name="logits"/>, the logits in fp32, their log-softmax and their gradient: 3 x 4 B T V, or 3 chunks of
    /// <see cref="Algorithms.LogProbs.ChunkBytes"/> where that is less (the log-probs are taken a chunk of positions at a time);</item>
    /// <item>gradients and AdamW's two moments of the <paramref name="trainable"/> parameters: 3 x 4 bytes each.</item>
    /// </list>
    /// </summary>
    public static double StepBytes(DecoderSpec spec, long sequences, long length, bool logits, long trainable)
    {
        double s = length, b = sequences, h = spec.DModel, a = spec.NHead;
        double activations = spec.NLayer * s * b * h * (34 + 5 * a * s / h) * 2;
        double head = logits ? 3.0 * Math.Min(4 * b * s * spec.VocabSize, Algorithms.LogProbs.ChunkBytes) : 0;
        return activations + head + 12.0 * trainable;
    }

    /// <summary>Environment variable that sets the bytes the check takes as available (a container whose /proc/meminfo shows the host's).</summary>
    public const string AvailableVariable = "PPOSHARP_MEMORY_AVAILABLE";

    /// <summary>
    /// Memory the machine can still give: <see cref="AvailableVariable"/> where it is set to a positive byte count, else
    /// MemAvailable of /proc/meminfo, else what the runtime reports.
    /// </summary>
    public static long AvailableBytes()
    {
        if (long.TryParse(Environment.GetEnvironmentVariable(AvailableVariable), out long set) && set > 0) return set;
        const string meminfo = "/proc/meminfo";
        if (File.Exists(meminfo))
            foreach (var line in File.ReadLines(meminfo))
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal) && long.TryParse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], out long kb))
                    return kb * 1024;
        return GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
    }

    /// <summary>
    /// Refuses (one <see cref="PpoSharpException"/> line) a <paramref name="batchKey"/> of <paramref name="batch"/> larger than
    /// the <paramref name="records"/> training records, or a step of <paramref name="sequences"/> x <paramref name="length"/>
    /// whose <see cref="StepBytes"/> exceed <paramref name="available"/> bytes (default: <see cref="AvailableBytes"/>); warns on
    /// <paramref name="log"/> above half of it.
    /// </summary>
    public static void Check(string title, string batchKey, int batch, int records, string recordsWhat, DecoderSpec spec, long sequences, long length,
        bool logits, long trainable, TextWriter log, long? available = null)
    {
        if (batch > records)
            throw new PpoSharpException($"{batchKey} {batch} is larger than the data: {records} {recordsWhat} (lower {batchKey} to at most {records}, or give more data)");
        double need = StepBytes(spec, sequences, length, logits, trainable);
        long free = available ?? AvailableBytes();
        string Figures() => $"{batchKey} {batch} ({sequences} sequences of up to {length} tokens) needs about {Gib(need)} for one training step, and {Gib(free)} is available";
        if (need > free)
            throw new PpoSharpException($"{Figures()}: it cannot fit (lower {batchKey}, or shorten the records)");
        if (need > free / 2.0) log.WriteLine($"{title}: warning: {Figures()}: more than half of it");
    }

    /// <summary>Parameters that take gradients (all of a full model; the adapters and heads of a LoRA one).</summary>
    public static long Trainable(IEnumerable<TorchSharp.Modules.Parameter> parameters) => parameters.Where(p => p.requires_grad).Sum(p => p.numel());

    private static string Gib(double bytes) => $"{bytes / (1L << 30):F1} GiB";
}
