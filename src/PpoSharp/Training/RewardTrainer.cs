using System.Diagnostics;
using System.Text.Json.Serialization;
using PpoSharp.Algorithms;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Text;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>Reward-model training settings (JSON keys in snake_case).</summary>
public sealed record RmConfig : TrainingConfig
{
    public RmConfig() => (Steps, Lr, WarmupSteps, EvalFraction, EvalEvery, CheckpointEvery) = (400, 5e-4, 20, 0.1, 100, 100);

    /// <summary>Defaults for a pretrained (Hugging Face) backbone: TRL's reward-model learning rate 1e-5, batches of 8 pairs, 200 steps.</summary>
    public static RmConfig Pretrained => new() { Lr = 1e-5, BatchSize = 8, Steps = 200, WarmupSteps = 10, EvalEvery = 50, CheckpointEvery = 50 };

    /// <summary>Subtract the mean training reward, stored with the model, so that rewards have mean 0.</summary>
    [JsonPropertyOrder(1)] public bool Normalize { get; init; } = true;
    /// <summary>Save the weights of the evaluation with the best held-out accuracy, not the last step's (HF Trainer's name).</summary>
    [JsonPropertyOrder(1)] public bool LoadBestModelAtEnd { get; init; } = true;
    /// <summary>Reward models to train (seeds seed, seed + 1, ...: other head inits and data orders); more than 1 makes an ensemble.</summary>
    [JsonPropertyOrder(1), System.ComponentModel.DataAnnotations.Range(1, 64)] public int Ensemble { get; init; } = 1;
    /// <summary>An ensemble scores mean - k std over its members (written to its ensemble.json).</summary>
    [JsonPropertyOrder(1)] public double EnsembleK { get; init; } = 1;

    public RmConfig Validate()
    {
        ValidateShared();
        Check.Positive(Ensemble, "ensemble");
        Check.AtLeast(EnsembleK, 0, "ensemble_k");
        return this;
    }
}

/// <summary>A tokenized preference pair: prompt + chosen and prompt + rejected, each ending with the end token.</summary>
public sealed record PreferencePair(int[] Chosen, int[] Rejected, float Margin, Source Source);

/// <summary>Accuracy and mean margin of a reward model on preference pairs.</summary>
public sealed record PairEval(int N, double Loss, double Accuracy, double RewardMargin);

/// <summary>
/// <c>reward_model.json</c> beside a trained reward model: its held-out pair accuracy (what <c>ppo</c> checks before
/// trusting it), the training accuracy at the same step, and the step whose weights were kept.
/// </summary>
public sealed record RewardModelCard(double HeldOutAccuracy, int HeldOutPairs, double TrainAccuracy, int Step)
{
    public const string FileName = "reward_model.json";

    public static RewardModelCard? Read(string dir) => Json.ReadFile<RewardModelCard>(Path.Combine(dir, FileName));

    public void Write(string dir) => Json.WriteFile(Path.Combine(dir, FileName), this);
}

/// <summary>
/// Trains a <see cref="RewardModel"/> on preference pairs with the pairwise loss, AdamW, warm-up + cosine, clipping,
/// a held-out split; writes <c>metrics.jsonl</c> (loss, accuracy, reward_margin) and the run directory.
/// </summary>
public sealed class RewardTrainer(RmConfig config, TextWriter log)
{
    public static List<PreferencePair> Tokenize(IEnumerable<PreferenceRecord> records, ITokenizer tokenizer, int contextLength, InvalidRecords? invalid = null) =>
        EncodePairs(records, contextLength, invalid, (r, response) => tokenizer.Chat.EncodeWithResponse(r.Messages, response), ids => ids.Count)
            .Select(p => new PreferencePair([.. p.Chosen], [.. p.Rejected], (float)p.Record.Margin, p.Record.Source)).ToList();

    /// <summary>
    /// Encodes the chosen and rejected side of each record with <paramref name="encode"/>(record, response) (an error there
    /// names the record's file:line); a pair whose longer side exceeds the context is an error naming its line, or skipped
    /// and listed in <paramref name="invalid"/>. Shared by reward-model and DPO training.
    /// </summary>
    public static List<(PreferenceRecord Record, T Chosen, T Rejected)> EncodePairs<T>(IEnumerable<PreferenceRecord> records, int contextLength,
        InvalidRecords? invalid, Func<PreferenceRecord, string, T> encode, Func<T, int> length)
    {
        invalid ??= new InvalidRecords(skip: false);
        var pairs = new List<(PreferenceRecord, T, T)>();
        foreach (var r in records)
        {
            var chosen = r.Source.Apply(() => encode(r, r.Chosen));
            var rejected = r.Source.Apply(() => encode(r, r.Rejected));
            int longest = Math.Max(length(chosen), length(rejected));
            if (longest > contextLength && invalid.Reject($"{r.Source}: pair is {longest} tokens, longer than context_length {contextLength}")) continue;
            pairs.Add((r, chosen, rejected));
        }
        return pairs;
    }

    /// <summary>Scores of the chosen (B) and rejected (B) sequences of a batch, one forward pass over all 2B.</summary>
    public static (Tensor Chosen, Tensor Rejected) ScorePairs(RewardModel model, IReadOnlyList<PreferencePair> batch, int pad)
    {
        var rows = batch.Select(p => (IReadOnlyList<int>)p.Chosen).Concat(batch.Select(p => (IReadOnlyList<int>)p.Rejected)).ToList();
        var (ids, mask) = Sampling.LeftPad(rows, pad, Devices.DeviceOf(model.Backbone));   // (2B, T)
        var scores = model.Score(ids, mask);                                            // (2B)
        return (scores.narrow(0, 0, batch.Count), scores.narrow(0, batch.Count, batch.Count));
    }

    /// <summary>Test seam: the optimizer instead of AdamW (plain SGD shows an update as the gradient itself).</summary>
    internal Func<nn.Module, OptimizerHelper>? NewOptimizer { get; set; }

    private readonly NonFiniteGuard _guard = new(config.MaxSkippedSteps, log, "rm");

    public PairEval Train(RewardModel model, ITokenizer tokenizer, IReadOnlyList<PreferencePair> pairs, string outDir, bool resume = false, StopSignal? stop = null)
    {
        var (train, heldOut) = HeldOut.Split(pairs, config.EvalFraction, config.Seed);
        log.WriteLine($"rm: {train.Count} training pairs, {heldOut.Count} held out");
        config.ApplyTo(model, log);                                          // gradient_checkpointing, bf16
        using var optimizer = NewOptimizer?.Invoke(model) ?? (OptimizerHelper)Optimization.AdamW(model, config.Lr, config.WeightDecay, 0.9, 0.99);
        var run = new SupervisedRun(config, model, optimizer, _guard, new LoraMotion(log, "rm", config.Lr));
        PairEval? eval = null;
        var best = config.LoadBestModelAtEnd ? new BestWeights(outDir, resume) : null;
        model.train();
        double seconds = new ResumableLoop("rm", config.Steps, outDir, config.CheckpointEvery, config.KeepCheckpoints, log).Run(resume, stop,
            step =>
            {
                var row = Step(run, model, run.Batches(train, step), tokenizer.Special.Pad, step - 1);
                if (heldOut.Count > 0 && run.EvalDue(step))
                {
                    eval = Evaluate(model, heldOut, tokenizer.Special.Pad);
                    (row["eval_loss"], row["eval_accuracy"], row["eval_reward_margin"]) = (eval.Loss, eval.Accuracy, eval.RewardMargin);
                    best?.Offer(model, step, eval.Accuracy);
                }
                return row;
            },
            row => $"loss {row["loss"]:F3} accuracy {row["accuracy"]:P0}{(eval is null ? "" : $" eval {eval.Accuracy:P1}")}",
            run.Save, run.Restore, () => _guard.Failure);
        model.eval();
        int keptStep = config.Steps;
        if (best?.Step is int bestStep && bestStep != config.Steps)
        {
            best.Load(model);
            eval = Evaluate(model, heldOut, tokenizer.Special.Pad);
            log.WriteLine($"rm: kept the weights of step {bestStep}, the best held-out accuracy ({best.Accuracy:P1}; the last step's was {best.LastAccuracy:P1})");
            keptStep = bestStep;
        }
        if (config.Normalize) model.SetOffset(model.Offset + MeanScore(model, train, tokenizer.Special.Pad));
        RunDirectory.SaveScalarModel(outDir, model.Backbone, model.Head, model.Offset, tokenizer, config);
        eval ??= Evaluate(model, heldOut.Count > 0 ? heldOut : train, tokenizer.Special.Pad);
        double trainAcc = Evaluate(model, train.Take(Math.Max(heldOut.Count, 256)).ToList(), tokenizer.Special.Pad).Accuracy;
        new RewardModelCard(heldOut.Count > 0 ? eval.Accuracy : double.NaN, heldOut.Count, trainAcc, keptStep).Write(outDir);
        best?.Delete();
        log.WriteLine($"rm: {config.Steps} steps in {seconds:F0} s; held-out accuracy {eval.Accuracy:P1}, margin {eval.RewardMargin:F3}; offset {model.Offset:F3} -> {outDir}");
        if (heldOut.Count > 0 && trainAcc - eval.Accuracy > OverfitGap)
            log.WriteLine($"warning: reward model: training accuracy {trainAcc:P1} is far above held-out {eval.Accuracy:P1}: it memorised its pairs, and PPO against it will exploit what it did not learn (more pairs, fewer steps or a lower lr help)");
        return eval;
    }

    /// <summary>Training minus held-out accuracy above which the reward model is reported as memorising.</summary>
    public const double OverfitGap = 0.15;

    /// <summary>One optimizer step over the step's micro-batches, each weighted by its share of the step's pairs (so the loss, accuracy and margin are means over all of them).</summary>
    private Dictionary<string, object> Step(SupervisedRun run, RewardModel model, List<List<PreferencePair>> batches, int pad, int step)
    {
        using var scope = NewDisposeScope();
        double accuracy = 0, margin = 0, pairs = batches.Sum(b => b.Count);
        var (loss, gradNorm, lr) = run.Step(step, batches.Count, i =>
        {
            var batch = batches[i];
            double share = batch.Count / pairs;
            var (chosen, rejected) = ScorePairs(model, batch, pad);
            var (value, a, m) = PairwiseLoss.Compute(chosen, rejected, tensor(batch.Select(p => p.Margin).ToArray(), device: chosen.device));
            (accuracy, margin) = (accuracy + a * share, margin + m * share);
            return batches.Count == 1 ? value : value * share;
        });
        return new Dictionary<string, object>
        {
            ["step"] = step + 1, ["loss"] = loss, ["accuracy"] = accuracy, ["reward_margin"] = margin, ["lr"] = lr,
            ["grad_norm"] = gradNorm, ["skipped_steps"] = _guard.Total, ["live_tensors"] = DisposeScopeManager.Statistics.ThreadTotalLiveCount,
        };
    }

    /// <summary>Loss, accuracy and margin over pairs (no grad, batched).</summary>
    public static PairEval Evaluate(RewardModel model, IReadOnlyList<PreferencePair> pairs, int pad, int batchSize = 64)
    {
        using var noGrad = no_grad();
        double loss = 0, accuracy = 0, margin = 0;
        for (int i = 0; i < pairs.Count; i += batchSize)
        {
            using var scope = NewDisposeScope();
            var batch = pairs.Skip(i).Take(batchSize).ToList();
            var (chosen, rejected) = ScorePairs(model, batch, pad);
            var (l, a, m) = PairwiseLoss.Compute(chosen, rejected, tensor(batch.Select(p => p.Margin).ToArray(), device: chosen.device));
            loss += l.item<float>() * batch.Count;
            accuracy += a * batch.Count;
            margin += m * batch.Count;
        }
        return new PairEval(pairs.Count, loss / pairs.Count, accuracy / pairs.Count, margin / pairs.Count);
    }

    private static double MeanScore(RewardModel model, IReadOnlyList<PreferencePair> pairs, int pad)
    {
        using var noGrad = no_grad();
        double sum = 0;
        for (int i = 0; i < pairs.Count; i += 64)
        {
            using var scope = NewDisposeScope();
            var (chosen, rejected) = ScorePairs(model, pairs.Skip(i).Take(64).ToList(), pad);
            sum += chosen.sum().item<float>() + rejected.sum().item<float>();
        }
        return sum / (2.0 * pairs.Count);
    }
}

/// <summary>
/// The weights of the evaluation with the best held-out accuracy so far, in <c>best/</c> of the run directory (so that a
/// resumed run still has them): written atomically when an evaluation beats it, loaded at the end, then removed.
/// </summary>
internal sealed class BestWeights(string outDir, bool resume)
{
    private sealed record Record(int Step, double Accuracy, double LastAccuracy);

    private string Dir => Path.Combine(outDir, "best");
    private Record? _best = resume ? Read(Path.Combine(outDir, "best")) : null;

    public int? Step => _best?.Step;
    public double Accuracy => _best?.Accuracy ?? double.NaN;
    public double LastAccuracy => _best?.LastAccuracy ?? double.NaN;

    private static Record? Read(string dir)
    {
        AtomicFile.RecoverFolder(dir, Checkpoints.StateFile);
        return Checkpoints.ReadStateOrNull<Record>(dir);
    }

    /// <summary>An evaluation's accuracy: its weights replace the kept ones when better; the last accuracy is recorded either way.</summary>
    public void Offer(nn.Module model, int step, double accuracy)
    {
        if (_best is not null && accuracy <= _best.Accuracy)
        {
            _best = _best with { LastAccuracy = accuracy };
            Checkpoints.WriteState(Dir, _best);
            return;
        }
        _best = new Record(step, accuracy, accuracy);
        AtomicFile.ReplaceFolder(Dir, tmp =>
        {
            Directory.CreateDirectory(tmp);
            RunDirectory.SaveModule(Path.Combine(tmp, RunDirectory.ModelFile), model);
            Checkpoints.WriteState(tmp, _best);                                           // last: the marker
        });
    }

    public void Load(nn.Module model) => RunDirectory.LoadWeights(model, Path.Combine(Dir, RunDirectory.ModelFile));

    public void Delete()
    {
        if (Directory.Exists(Dir)) Directory.Delete(Dir, recursive: true);
    }
}
