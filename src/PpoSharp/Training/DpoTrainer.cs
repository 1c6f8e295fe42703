using System.Text.Json;
using System.Text.Json.Serialization;
using PpoSharp.Algorithms;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>
/// DPO settings (JSON keys in snake_case; beta, loss_type and label_smoothing are TRL's DPOConfig names). The built-in
/// defaults make the default model learn the sort task's preferences in about a minute on 2 cores; see the README for
/// where they differ from TRL's and why.
/// </summary>
public sealed record DpoConfig : TrainingConfig
{
    public DpoConfig() => (Steps, Lr, WarmupSteps, EvalFraction, EvalEvery, CheckpointEvery, WeightDecay) = (200, 2e-4, 20, 0.05, 50, 100, 0.0);

    /// <summary>
    /// Defaults for a pretrained (Hugging Face) model: TRL's DPO learning rate 1e-6 and plain DPO (rpo_alpha 0), batches of
    /// 8 pairs, 200 steps.
    /// </summary>
    public static DpoConfig Pretrained => new() { Lr = 1e-6, BatchSize = 8, Steps = 200, WarmupSteps = 10, EvalEvery = 50, CheckpointEvery = 50, RpoAlpha = 0 };

    /// <summary>Strength of the tie to the reference: the implicit reward is beta (log pi - log pi_ref).</summary>
    [JsonPropertyOrder(1)] public double Beta { get; init; } = 0.1;
    /// <summary>sigmoid (DPO), ipo, hinge (SLiC) or robust.</summary>
    [JsonPropertyOrder(1)] public DpoLossType LossType { get; init; } = DpoLossType.Sigmoid;
    /// <summary>Assumed probability that a preference label is flipped (cDPO with sigmoid, robust).</summary>
    [JsonPropertyOrder(1)] public double LabelSmoothing { get; init; }
    /// <summary>
    /// Weight of the negative log-likelihood of the chosen responses (per token) added to the DPO loss (RPO, Pang et al.
    /// 2024, arXiv 2404.19733); TRL's rpo_alpha, where unset means 0. The built-in default 1 (the paper's) keeps the chosen
    /// answers likely: plain DPO on the sort task lowers them too and drifts to longer answers (README, DPO).
    /// </summary>
    [JsonPropertyOrder(1)] public double RpoAlpha { get; init; } = 1.0;

    public DpoOptions LossOptions() => new(Beta, LossType, LabelSmoothing);

    /// <summary>IPO compares length-averaged log-probs (as TRL does), the other losses summed ones.</summary>
    public bool LengthAverage() => LossType == DpoLossType.Ipo;

    public DpoConfig Validate()
    {
        ValidateShared();
        LossOptions().Validate();
        Check.AtLeast(RpoAlpha, 0, "rpo_alpha");
        return this;
    }
}

/// <summary>
/// A tokenized preference pair for DPO: each side the whole conversation, with <see cref="SftExample.Trained"/> set on
/// the response's tokens only (its content and end-of-turn, as SFT's assistant mask; the prompt, earlier assistant turns
/// included, is masked), and the frozen reference's log-prob of each response once computed.
/// </summary>
public sealed record DpoPair(SftExample Chosen, SftExample Rejected, float RefChosen = float.NaN, float RefRejected = float.NaN);

/// <summary>DPO loss and TRL's statistics over a set of pairs.</summary>
public sealed record DpoEval(int N, double Loss, DpoStats Stats)
{
    /// <summary>The row keys: loss and TRL's keys, each with <paramref name="prefix"/> (TRL writes held-out ones as eval_...).</summary>
    public IEnumerable<KeyValuePair<string, object>> Metrics(string prefix) =>
        Stats.Metrics().Select(m => new KeyValuePair<string, object>(prefix + m.Key, m.Value)).Prepend(new(prefix + "loss", Loss));
}

/// <summary>Figures of a finished DPO run.</summary>
public sealed record DpoResult(int Steps, DpoEval HeldOut, double Seconds)
{
    public string Summary(string dir) =>
        $"dpo: {Steps} steps in {Seconds:F0} s; held-out (n = {HeldOut.N}) loss {HeldOut.Loss:F3}, reward accuracy {HeldOut.Stats.RewardsAccuracies:P1} (a tie counts half), margin {HeldOut.Stats.RewardsMargins:G4} -> {dir}";
}

/// <summary>
/// Direct Preference Optimization (Rafailov et al. 2023): trains a policy on preference pairs against a frozen
/// reference, the initial policy, with no reward model. The reference's log-probs of every response are computed once
/// before training (TRL's precompute_ref_log_probs) and stored in the run directory; then SFT's machinery (batches,
/// schedule, clipping, non-finite guard, checkpoints, exact resume) runs the DPO loss. Saves the policy like SFT.
/// </summary>
public sealed class DpoTrainer(DpoConfig config, TextWriter log)
{
    /// <summary>The reference log-probs of the pairs, in data order: a resumed run reads them back rather than recomputing.</summary>
    public const string ReferenceFile = "reference_logps.json";

    /// <summary>Test seam: the optimizer instead of AdamW (plain SGD shows an update as the gradient itself).</summary>
    internal Func<nn.Module, OptimizerHelper>? NewOptimizer { get; set; }

    private readonly NonFiniteGuard _guard = new(config.MaxSkippedSteps, log, "dpo");

    /// <summary>Tokenizes preference records; a pair longer than the context is an error naming its line (or skipped into <paramref name="invalid"/>).</summary>
    public static List<DpoPair> Tokenize(IEnumerable<PreferenceRecord> records, ITokenizer tokenizer, int contextLength, InvalidRecords? invalid = null) =>
        RewardTrainer.EncodePairs(records, contextLength, invalid, (r, response) => EncodeResponse(tokenizer.Chat, r, response), e => e.Ids.Length)
            .Select(p => new DpoPair(p.Chosen, p.Rejected)).ToList();

    /// <summary>The conversation ending with <paramref name="response"/>; only that last assistant turn is marked trained.</summary>
    public static SftExample EncodeResponse(IChatFormat chat, PreferenceRecord r, string response)
    {
        var (ids, trained) = chat.EncodeConversation([.. r.Messages, new ChatMessage(Role.Assistant, response)]);
        int end = trained.LastIndexOf(true), start = end;
        while (start > 0 && trained[start - 1]) start--;
        return new SftExample([.. ids], [.. trained.Select((_, i) => end >= 0 && i >= start && i <= end)], r.Source);
    }

    /// <summary>
    /// Per-sequence log-probs of the responses of <paramref name="rows"/> under <paramref name="model"/> (B): summed over
    /// the response tokens, or averaged with <paramref name="lengthAverage"/>.
    /// </summary>
    public static Tensor SequenceLogProbs(Decoder model, IReadOnlyList<SftExample> rows, int pad, bool lengthAverage)
    {
        var (inputs, targets) = SftTrainer.Collate(rows, pad, Devices.DeviceOf(model));        // (B, T) each
        var (logp, at) = SftTrainer.TargetLogProbs(model, inputs, targets);                    // (K) x2
        var tokenLogp = zeros(targets.numel(), device: logp.device).index_add(0, at, logp, 1).view_as(targets);   // (B, T), 0 off the response
        return DpoLoss.SequenceLogProbs(tokenLogp, targets.ne(SftTrainer.IgnoreIndex), lengthAverage).to(ScalarType.Float32);
    }

    /// <summary>
    /// The pairs with the reference's log-probs attached: read from <see cref="ReferenceFile"/> when resuming, otherwise
    /// computed with <paramref name="loadReference"/>() (frozen: eval mode, no gradients; only called when needed) and
    /// stored there.
    /// </summary>
    public List<DpoPair> AttachReference(IReadOnlyList<DpoPair> pairs, Func<Decoder> loadReference, int pad, string outDir, bool resume)
    {
        var path = Path.Combine(outDir, ReferenceFile);
        var stored = resume && File.Exists(path) ? ReadReference(path, pairs.Count) : null;
        if (stored is null)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var reference = Freeze(loadReference());
            config.ApplyTo(reference, log);                                                    // the policy's precision path
            stored = ReferenceLogProbs(reference, pairs, pad, config.LengthAverage());
            log.WriteLine($"dpo: reference log-probs of {pairs.Count} pairs in {clock.Elapsed.TotalSeconds:F0} s (kept in {ReferenceFile})");
            AtomicFile.WriteText(path, JsonSerializer.Serialize(stored, Json.Compact));
        }
        return [.. pairs.Select((p, i) => p with { RefChosen = stored.Chosen[i], RefRejected = stored.Rejected[i] })];
    }

    /// <summary>Log-probs of the chosen and rejected responses under the reference, no grad, in batches.</summary>
    public static ReferenceLogps ReferenceLogProbs(Decoder reference, IReadOnlyList<DpoPair> pairs, int pad, bool lengthAverage, int batchSize = 32)
    {
        using var noGrad = no_grad();
        var (chosen, rejected) = (new float[pairs.Count], new float[pairs.Count]);
        for (int i = 0; i < pairs.Count; i += batchSize)
        {
            CpuThreads.Adapt();                          // a long pass: give cores back to busy neighbours as the step loop does
            using var scope = NewDisposeScope();
            var batch = pairs.Skip(i).Take(batchSize).ToList();
            var logps = SequenceLogProbs(reference, Rows(batch), pad, lengthAverage).cpu().data<float>().ToArray();
            logps.AsSpan(0, batch.Count).CopyTo(chosen.AsSpan(i));
            logps.AsSpan(batch.Count).CopyTo(rejected.AsSpan(i));
        }
        return new ReferenceLogps(chosen, rejected);
    }

    public sealed record ReferenceLogps(float[] Chosen, float[] Rejected);

    private static ReferenceLogps? ReadReference(string path, int count)
    {
        var stored = JsonSerializer.Deserialize<ReferenceLogps>(File.ReadAllText(path), Json.Options);
        return stored is not null && stored.Chosen.Length == count && stored.Rejected.Length == count ? stored : null;
    }

    private static Decoder Freeze(Decoder reference)
    {
        foreach (var p in reference.parameters()) p.requires_grad = false;
        reference.eval();
        return reference;
    }

    /// <summary>The chosen sides of a batch, then the rejected ones: one forward pass over all 2B.</summary>
    private static List<SftExample> Rows(IReadOnlyList<DpoPair> batch) => [.. batch.Select(p => p.Chosen), .. batch.Select(p => p.Rejected)];

    /// <summary>
    /// The DPO loss of a batch of pairs (with reference log-probs attached) and TRL's statistics; with rpo_alpha, plus
    /// rpo_alpha times the mean negative log-likelihood per chosen response token. With <paramref name="step"/> (all the
    /// pairs of an optimizer step, of which <paramref name="batch"/> is one micro-batch), the batch's share of the step's
    /// loss: the DPO mean times batch / step pairs, and the RPO sum over the step's chosen tokens.
    /// </summary>
    public (Tensor Loss, DpoStats Stats) Loss(Decoder policy, IReadOnlyList<DpoPair> batch, int pad, IReadOnlyCollection<DpoPair>? step = null)
    {
        var logps = SequenceLogProbs(policy, Rows(batch), pad, config.LengthAverage());         // (2B)
        Tensor Ref(Func<DpoPair, float> side) => tensor(batch.Select(side).ToArray(), device: logps.device);
        var chosen = logps.narrow(0, 0, batch.Count);
        var (loss, stats) = DpoLoss.Compute(chosen, logps.narrow(0, batch.Count, batch.Count), Ref(p => p.RefChosen), Ref(p => p.RefRejected), config.LossOptions());
        if (step is not null) loss = loss * ((double)batch.Count / step.Count);
        if (config.RpoAlpha == 0) return (loss, stats);
        static int Tokens(DpoPair p) => p.Chosen.Trained.Count(t => t);
        var tokens = Ref(p => Tokens(p));                                                       // (B)
        var summed = config.LengthAverage() ? chosen * tokens : chosen;                        // sum over tokens either way
        return (loss - config.RpoAlpha * summed.sum() / (step?.Sum(Tokens) ?? tokens.sum()), stats);
    }

    /// <summary>
    /// Trains <paramref name="policy"/> on <paramref name="pairs"/> (reference attached, see <see cref="AttachReference"/>)
    /// with a held-out split, and saves it into <paramref name="outDir"/> like SFT.
    /// </summary>
    public DpoResult Train(Decoder policy, ITokenizer tokenizer, IReadOnlyList<DpoPair> pairs, string outDir, bool resume = false, StopSignal? stop = null)
    {
        if (pairs.Any(p => float.IsNaN(p.RefChosen))) throw new InvalidOperationException("DPO pairs need the reference log-probs (AttachReference)");
        var (train, heldOut) = HeldOut.Split(pairs, config.EvalFraction, config.Seed);
        int pad = tokenizer.Special.Pad;
        log.WriteLine($"dpo: {train.Count} training pairs, {heldOut.Count} held out; beta {config.Beta}, loss {OptionNames.Of(config.LossType)}");
        config.ApplyTo(policy, log);                                          // gradient_checkpointing, bf16
        using var optimizer = NewOptimizer?.Invoke(policy) ?? (OptimizerHelper)Optimization.AdamW(policy, config.Lr, config.WeightDecay, 0.9, 0.99);
        var run = new SupervisedRun(config, policy, optimizer, _guard, new LoraMotion(log, "dpo", config.Lr));
        DpoEval? eval = null;
        policy.train();
        double seconds = new ResumableLoop("dpo", config.Steps, outDir, config.CheckpointEvery, config.KeepCheckpoints, log).Run(resume, stop,
            step =>
            {
                var row = Step(run, policy, run.Batches(train, step), pad, step - 1);
                if (heldOut.Count > 0 && run.EvalDue(step))
                    foreach (var (key, value) in (eval = Evaluate(policy, heldOut, pad)).Metrics("eval_")) row[key] = value;
                return row;
            },
            row => $"loss {row["loss"]:F3} accuracy {row["rewards/accuracies"]:P0} margin {row["rewards/margins"]:G3}{(eval is null ? "" : $" eval {eval.Stats.RewardsAccuracies:P1}")}",
            run.Save, run.Restore, () => _guard.Failure);
        policy.eval();
        RunDirectory.SavePolicy(outDir, policy, tokenizer, config);
        return new DpoResult(config.Steps, eval ?? Evaluate(policy, heldOut.Count > 0 ? heldOut : train, pad), seconds);
    }

    /// <summary>One optimizer step over the step's micro-batches; the statistics are means over all its pairs.</summary>
    private Dictionary<string, object> Step(SupervisedRun run, Decoder policy, List<List<DpoPair>> batches, int pad, int step)
    {
        using var scope = NewDisposeScope();
        var all = batches.SelectMany(b => b).ToList();
        var sums = new double[6];
        var (loss, gradNorm, lr) = run.Step(step, batches.Count, i =>
        {
            var (value, stats) = Loss(policy, batches[i], pad, batches.Count == 1 ? null : all);
            AddWeighted(sums, stats, batches[i].Count);
            return value;
        });
        var row = new Dictionary<string, object> { ["step"] = step + 1, ["loss"] = loss };
        foreach (var (key, value) in Mean(sums, all.Count).Metrics()) row[key] = value;
        (row["lr"], row["grad_norm"], row["skipped_steps"]) = (lr, gradNorm, _guard.Total);
        row["live_tensors"] = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        return row;
    }

    /// <summary>Loss and statistics over <paramref name="pairs"/> (no grad, batched; means weighted by batch size).</summary>
    public DpoEval Evaluate(Decoder policy, IReadOnlyList<DpoPair> pairs, int pad, int batchSize = 32)
    {
        using var noGrad = no_grad();
        double loss = 0;
        var sums = new double[6];
        for (int i = 0; i < pairs.Count; i += batchSize)
        {
            using var scope = NewDisposeScope();
            var batch = pairs.Skip(i).Take(batchSize).ToList();
            var (value, stats) = Loss(policy, batch, pad);
            loss += value.item<float>() * batch.Count;
            AddWeighted(sums, stats, batch.Count);
        }
        return new DpoEval(pairs.Count, loss / pairs.Count, Mean(sums, pairs.Count));
    }

    /// <summary>Adds <paramref name="weight"/> x each statistic to <paramref name="sums"/> (in <see cref="DpoStats.Metrics"/> order).</summary>
    private static void AddWeighted(double[] sums, DpoStats stats, int weight)
    {
        int k = 0;
        foreach (var v in stats.Metrics().Values) sums[k++] += v * weight;
    }

    /// <summary>The statistics whose weighted sums over <paramref name="count"/> pairs are <paramref name="sums"/>.</summary>
    private static DpoStats Mean(double[] sums, int count)
    {
        var m = sums.Select(s => s / count).ToArray();
        return new DpoStats(m[0], m[1], m[2], m[3], m[4], m[5]);
    }
}
