using System.Diagnostics;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Text;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>One tokenized conversation: ids and, per id, whether the loss covers it (assistant tokens only).</summary>
public sealed record SftExample(int[] Ids, bool[] Trained, Source Source);

/// <summary>What an SFT or reward-model checkpoint records beside the weights and the optimizer.</summary>
public sealed record StepState(int Step, int SkippedInARow, int SkippedTotal);

/// <summary>Figures of a finished SFT run.</summary>
public sealed record SftResult(int Steps, double FinalLoss, double? EvalLoss, double Seconds, double TokensPerSecond)
{
    public string Summary(string dir) =>
        $"sft: {Steps} steps in {Seconds:F0} s, loss {FinalLoss:F3}, {(EvalLoss is double e ? $"eval loss {e:F3}, " : "")}{TokensPerSecond:F0} tokens/s -> {dir}";
}

/// <summary>
/// Supervised fine-tuning: next-token cross-entropy on assistant tokens only (prompt tokens masked), AdamW with
/// weight-decay groups, warm-up + cosine learning rate, gradient clipping, a held-out eval loss, one dispose scope
/// per step. Writes the model, config, tokenizer and metrics.jsonl into the output directory.
/// </summary>
public sealed class SftTrainer(SftConfig config, TextWriter log)
{
    public const int IgnoreIndex = -100;

    /// <summary>Builds the tokenizer for a new model: characters of every message plus printable ASCII.</summary>
    public static ITokenizer NewTokenizer(TokenizerKind kind, IEnumerable<ChatRecord> records) => kind switch
    {
        TokenizerKind.Gpt2 => new Gpt2Tokenizer(),
        _ => CharTokenizer.FromTexts(records.SelectMany(r => r.Messages.Select(m => m.Content))
                .Append(string.Concat(Enumerable.Range(32, 95).Select(c => (char)c)))),
    };

    /// <summary>Tokenizes records with the chat template; a record longer than the context is an error naming its line (or skipped and listed in <paramref name="invalid"/>).</summary>
    /// <param name="records">The chat records.</param>
    /// <param name="tokenizer">The model's tokenizer and chat template.</param>
    /// <param name="contextLength">The model's context: a longer record is an error (or skipped into <paramref name="invalid"/>).</param>
    /// <param name="invalid">Where skipped records are listed with --skip-invalid.</param>
    /// <param name="maxLength">TRL's max_length: records longer are cut to this many tokens (their start) instead of refused.</param>
    public static List<SftExample> Tokenize(IEnumerable<ChatRecord> records, ITokenizer tokenizer, int contextLength, InvalidRecords? invalid = null, int? maxLength = null)
    {
        invalid ??= new InvalidRecords(skip: false);
        if (maxLength > contextLength) throw new PpoSharpException($"max_length {maxLength} is longer than the model's context_length {contextLength}");
        var list = new List<SftExample>();
        foreach (var r in records)
        {
            var (ids, trained) = r.Source.Apply(() => Encode(r, tokenizer));
            int keep = Math.Min(ids.Count, maxLength ?? ids.Count);
            if (keep > contextLength && invalid.Reject($"{r.Source}: record is {ids.Count} tokens, longer than context_length {contextLength} (set max_length to cut long records)")) continue;
            list.Add(new SftExample([.. ids.Take(keep)], [.. trained.Take(keep)], r.Source));
        }
        return list;
    }

    /// <summary>
    /// A record's ids and, per id, whether the loss covers it. Conversational: the chat template, the loss on assistant turns
    /// after the prompt's messages. Raw text (TRL's standard formats): ids of prompt + completion (or the text) then EOS, the
    /// loss from where the prompt's own ids end, as TRL's <c>completion_mask</c> (the whole text for language modelling).
    /// </summary>
    public static (List<int> Ids, List<bool> Trained) Encode(ChatRecord r, ITokenizer tokenizer)
    {
        if (r.Raw)
        {
            var prompt = r.PromptMessages > 0 ? r.Messages[0].Content : "";
            var ids = Tokenizers.EncodeText(tokenizer, prompt + r.Messages[^1].Content).ToList();
            if (ids.Count == 0 || !tokenizer.Special.IsEos(ids[^1])) ids.Add(tokenizer.Special.Eos[0]);
            int start = prompt.Length == 0 ? 0 : Tokenizers.EncodeText(tokenizer, prompt).Count;
            return (ids, ids.Select((_, i) => i >= start).ToList());
        }
        var (all, trained) = tokenizer.Chat.EncodeConversation(r.Messages);
        if (r.PromptMessages == 0) return (all, trained);
        var promptIds = tokenizer.Chat.EncodePrompt(r.Messages.Take(r.PromptMessages).ToList());
        for (int i = 0; i < Math.Min(promptIds.Count, all.Count) && promptIds[i] == all[i]; i++) trained[i] = false;
        return (all, trained);
    }

    /// <summary>
    /// Right-pads a batch into inputs (B, T-1) and targets (B, T-1): targets are the next ids where the loss applies,
    /// <see cref="IgnoreIndex"/> elsewhere.
    /// </summary>
    public static (Tensor Inputs, Tensor Targets) Collate(IReadOnlyList<SftExample> batch, int pad, Device? device = null)
    {
        int t = batch.Max(e => e.Ids.Length) - 1;
        var inputs = new long[batch.Count * t];
        var targets = new long[batch.Count * t];
        Array.Fill(inputs, pad);
        Array.Fill(targets, IgnoreIndex);
        for (int i = 0; i < batch.Count; i++)
        {
            var e = batch[i];
            for (int j = 0; j < e.Ids.Length - 1; j++)
            {
                inputs[i * t + j] = e.Ids[j];
                if (e.Trained[j + 1]) targets[i * t + j] = e.Ids[j + 1];
            }
        }
        return (tensor(inputs, [batch.Count, t], device: device), tensor(targets, [batch.Count, t], device: device));
    }

    /// <summary>
    /// Mean cross-entropy -log pi(target | prefix) over the target positions that are not <see cref="IgnoreIndex"/>
    /// (cross_entropy's ignore_index mean); with <paramref name="targetCount"/>, the sum over them divided by that count
    /// instead (a micro-batch's share of a step's mean over all its targets). The LM head runs on those positions only,
    /// a chunk at a time.
    /// </summary>
    public static Tensor Loss(Decoder model, Tensor inputs, Tensor targets, long? targetCount = null)
    {
        var logProbs = TargetLogProbs(model, inputs, targets).LogProbs;                        // (K)
        return targetCount is long n ? -logProbs.sum() / n : -logProbs.mean();
    }

    /// <summary>
    /// log pi(target | prefix) (K) of the K targets (B, T) that are not <see cref="IgnoreIndex"/>, with their flat
    /// indices (K) into B x T: the LM head runs on those positions only, a chunk of positions at a time.
    /// </summary>
    public static (Tensor LogProbs, Tensor Rows) TargetLogProbs(Decoder model, Tensor inputs, Tensor targets)
    {
        var rows = targets.flatten().ne(IgnoreIndex).nonzero().squeeze(1);                    // (K)
        var hidden = model.Hidden(inputs).flatten(0, 1).index_select(0, rows);                // (K, C)
        return (model.TokenLogProbs(hidden, targets.flatten().index_select(0, rows)).LogProbs, rows);
    }

    /// <summary>Positions of <paramref name="batch"/> the loss covers: next tokens marked trained (what <see cref="Collate"/> makes targets).</summary>
    public static long TargetCount(IEnumerable<SftExample> batch) => batch.Sum(e => (long)e.Trained.Skip(1).Count(t => t));

    /// <summary>Test seam: transforms each step's loss before backward (e.g. to inject NaN).</summary>
    internal Func<Tensor, Tensor>? LossFault { get; set; }

    /// <summary>Test seam: the optimizer instead of AdamW (plain SGD shows an update as the gradient itself).</summary>
    internal Func<nn.Module, OptimizerHelper>? NewOptimizer { get; set; }

    private readonly NonFiniteGuard _guard = new(config.MaxSkippedSteps, log, "sft");

    /// <summary>
    /// Trains <paramref name="model"/> on <paramref name="examples"/> and saves the run into <paramref name="outDir"/>;
    /// checkpoints every <c>checkpoint_every</c> steps, resumes exactly with <paramref name="resume"/>.
    /// </summary>
    public SftResult Train(Decoder model, ITokenizer tokenizer, IReadOnlyList<SftExample> examples, string outDir, bool resume = false, StopSignal? stop = null)
    {
        var (train, heldOut) = HeldOut.Split(examples, config.EvalFraction, config.Seed);
        log.WriteLine($"sft: {train.Count} training records, {heldOut.Count} held out, {model.parameters().Sum(p => p.numel()):N0} parameters");

        config.ApplyTo(model, log);                                          // gradient_checkpointing, bf16
        using var optimizer = NewOptimizer?.Invoke(model) ?? (OptimizerHelper)Optimization.AdamW(model, config.Lr, config.WeightDecay, config.Beta1, config.Beta2);
        var run = new SupervisedRun(config, model, optimizer, _guard, new LoraMotion(log, "sft", config.Lr));
        var clock = Stopwatch.StartNew();
        long tokens = 0;
        double loss = double.NaN;
        double? evalLoss = null;
        model.train();
        double seconds = new ResumableLoop("sft", config.Steps, outDir, config.CheckpointEvery, config.KeepCheckpoints, log).Run(resume, stop,
            step =>
            {
                var batches = run.Batches(train, step);
                var (stepLoss, gradNorm, lr) = Step(run, model, batches, tokenizer.Special.Pad, step - 1);
                loss = stepLoss;
                tokens += batches.Sum(b => b.Sum(e => e.Ids.Length - 1));
                var row = new Dictionary<string, object>
                {
                    ["step"] = step, ["loss"] = loss, ["lr"] = lr, ["grad_norm"] = gradNorm, ["skipped_steps"] = _guard.Total,
                    ["tokens_per_second"] = tokens / clock.Elapsed.TotalSeconds,
                    ["live_tensors"] = DisposeScopeManager.Statistics.ThreadTotalLiveCount,
                };
                if (heldOut.Count > 0 && run.EvalDue(step))
                    row["eval_loss"] = (evalLoss = EvalLoss(model, heldOut, tokenizer.Special.Pad)).Value;
                return row;
            },
            row => $"loss {row["loss"]:F3}{(evalLoss is double e ? $" eval {e:F3}" : "")} {row["tokens_per_second"]:F0} tok/s",
            run.Save, run.Restore, () => _guard.Failure);
        model.eval();
        RunDirectory.SavePolicy(outDir, model, tokenizer, config);
        return new SftResult(config.Steps, loss, evalLoss, seconds, tokens / clock.Elapsed.TotalSeconds);
    }

    /// <summary>One optimizer step over the step's micro-batches: each one's summed cross-entropy over the step's target count.</summary>
    private (double Loss, double GradNorm, double Lr) Step(SupervisedRun run, Decoder model, List<List<SftExample>> batches, int pad, int step)
    {
        using var scope = NewDisposeScope();
        long count = TargetCount(batches.SelectMany(b => b));
        return run.Step(step, batches.Count, i =>
        {
            var (inputs, targets) = Collate(batches[i], pad, Devices.DeviceOf(model));          // (B, T) each
            var loss = batches.Count == 1 ? Loss(model, inputs, targets) : Loss(model, inputs, targets, count);
            return LossFault is null ? loss : LossFault(loss);
        });
    }

    /// <summary>Token-weighted mean loss over the held-out examples.</summary>
    public static double EvalLoss(Decoder model, IReadOnlyList<SftExample> examples, int pad, int batchSize = 64)
    {
        using var noGrad = no_grad();
        double sum = 0;
        long count = 0;
        for (int i = 0; i < examples.Count; i += batchSize)
        {
            using var scope = NewDisposeScope();
            var (inputs, targets) = Collate(examples.Skip(i).Take(batchSize).ToList(), pad, Devices.DeviceOf(model));
            long n = targets.ne(IgnoreIndex).sum().item<long>();
            sum += Loss(model, inputs, targets).item<float>() * n;
            count += n;
        }
        return count == 0 ? double.NaN : sum / count;
    }
}
