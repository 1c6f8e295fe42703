using PpoSharp.Algorithms;
using PpoSharp.Data;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class DpoTrainerTests
{
    private static string Init => Path.Combine(TestSupport.TrainedSortModel, "model");
    private static string Preferences => Path.Combine(TestSupport.TrainedSortModel, "data", TaskData.PreferencesFile);

    /// <summary>The first 400 preference pairs of the sort task (chosen = sorted, rejected = reversed or one letter wrong).</summary>
    private static IReadOnlyList<PreferenceRecord> Records => Jsonl.ReadPreferences(Preferences).Records.Take(400).ToList();

    private static DpoConfig Config(int steps) => new()
    {
        Steps = steps, BatchSize = 16, Lr = 1e-3, WarmupSteps = 2, EvalEvery = 1000, EvalFraction = 0.1, CheckpointEvery = 2, RpoAlpha = 0,
    };

    private static List<Dictionary<string, System.Text.Json.JsonElement>> Rows(string dir) =>
        MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName));

    [Fact]
    public void Tokenize_MasksThePrompt_TrainsTheResponseAndItsEndToken()
    {
        var (_, tokenizer) = RunDirectory.LoadPolicy(Init);
        var record = Records[0];
        var pair = DpoTrainer.Tokenize([record], tokenizer, 64).Single();
        foreach (var (side, text) in new[] { (pair.Chosen, record.Chosen), (pair.Rejected, record.Rejected) })
        {
            Assert.Equal(text.Length + 1, side.Trained.Count(t => t));                         // characters + <|end|>
            int first = Array.IndexOf(side.Trained, true);
            Assert.Equal(tokenizer.Chat.EncodePrompt(record.Messages).Count, first);            // right after <|assistant|>
            Assert.Equal(text, tokenizer.Decode(side.Ids[first..^1]));
        }
        // A prompt with an earlier assistant turn: only the last turn (the response) is trained.
        var multi = record with { Messages = [.. record.Messages, new(Role.Assistant, "abc"), new(Role.User, "again")] };
        Assert.Equal(record.Chosen.Length + 1, DpoTrainer.Tokenize([multi], tokenizer, 64).Single().Chosen.Trained.Count(t => t));
    }

    [Fact]
    public void BeforeAnyStep_PolicyEqualsReference_LossIsLog2_MarginsZero()
    {
        var (policy, tokenizer) = RunDirectory.LoadPolicy(Init);
        var trainer = new DpoTrainer(Config(1), TextWriter.Null);
        var pairs = trainer.AttachReference(DpoTrainer.Tokenize(Records.Take(64), tokenizer, 64), () => RunDirectory.LoadPolicyModel(Init),
            tokenizer.Special.Pad, TestSupport.TempDir(), resume: false);
        // The precomputed reference is real: the SFT model prefers the sorted answers by far.
        Assert.All(pairs, p => Assert.True(p.RefChosen < 0 && p.RefRejected < p.RefChosen, $"{p.RefChosen} vs {p.RefRejected}"));
        var eval = trainer.Evaluate(policy, pairs, tokenizer.Special.Pad);
        Assert.Equal(Math.Log(2), eval.Loss, 5);
        Assert.Equal(0, eval.Stats.RewardsMargins, 5);
        Assert.Equal(0, eval.Stats.RewardsChosen, 5);
        Assert.Equal(0.5, eval.Stats.RewardsAccuracies);                                        // every pair a tie, each counting half
        Assert.Equal(pairs.Average(p => p.RefChosen), eval.Stats.LogpsChosen, 3);
        // rpo_alpha adds the mean negative log-likelihood per chosen response token.
        var rpo = new DpoTrainer(Config(1) with { RpoAlpha = 0.5 }, TextWriter.Null).Evaluate(policy, pairs, tokenizer.Special.Pad, batchSize: 64);
        double nll = -pairs.Sum(p => (double)p.RefChosen) / pairs.Sum(p => p.Chosen.Trained.Count(t => t));
        Assert.Equal(Math.Log(2) + 0.5 * nll, rpo.Loss, 4);
    }

    [Fact]
    public void Training_RaisesRewardAccuracyAndMargins_FirstRowIsLog2()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "dpo");
        var result = Demo.RunDpo(Records, Init, dir, Config(30) with { CheckpointEvery = 100 }, TextWriter.Null);
        var rows = Rows(dir);
        Assert.Equal(Math.Log(2), rows[0]["loss"].GetDouble(), 5);
        Assert.Equal(0, rows[0]["rewards/margins"].GetDouble(), 5);
        double Mean(IEnumerable<Dictionary<string, System.Text.Json.JsonElement>> r, string key) => r.Average(x => x[key].GetDouble());
        Assert.True(Mean(rows.TakeLast(5), "rewards/accuracies") > Mean(rows.Take(5), "rewards/accuracies"));
        Assert.True(Mean(rows.TakeLast(5), "rewards/margins") > Mean(rows.Take(5), "rewards/margins"));
        Assert.True(Mean(rows.TakeLast(5), "loss") < Mean(rows.Take(5), "loss"));
        Assert.All(new[] { "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "lr", "grad_norm", "eval_loss", "eval_rewards/accuracies" },
            k => Assert.True(rows[^1].ContainsKey(k), k));
        Assert.True(result.HeldOut.Stats.RewardsAccuracies > 0.8, $"held-out reward accuracy {result.HeldOut.Stats.RewardsAccuracies:P1}");
        Assert.True(result.HeldOut.Stats.RewardsMargins > 0);
    }

    [Fact]
    public void Reference_IsFrozen_AndNeverChanges()
    {
        var (policy, tokenizer) = RunDirectory.LoadPolicy(Init);
        using var reference = RunDirectory.LoadPolicyModel(Init);
        var before = reference.state_dict().ToDictionary(p => p.Key, p => p.Value.clone());
        var dir = TestSupport.TempDir();
        var trainer = new DpoTrainer(Config(6), TextWriter.Null);
        var pairs = trainer.AttachReference(DpoTrainer.Tokenize(Records, tokenizer, 64), () => reference, tokenizer.Special.Pad, dir, resume: false);
        trainer.Train(policy, tokenizer, pairs, dir);
        Assert.All(reference.parameters(), p => Assert.False(p.requires_grad));
        Assert.All(reference.state_dict(), p => Assert.True(p.Value.eq(before[p.Key]).all().item<bool>(), p.Key));
        Assert.Contains(policy.state_dict(), p => !p.Value.eq(before[p.Key]).all().item<bool>());          // the policy did move
        // The stored reference log-probs are what the (unchanged) reference still gives.
        var again = DpoTrainer.ReferenceLogProbs(reference, pairs, tokenizer.Special.Pad, lengthAverage: false);
        Assert.Equal(pairs.Select(p => p.RefChosen), again.Chosen);
        Assert.Equal(pairs.Select(p => p.RefRejected), again.Rejected);
    }

    /// <summary>Requests a stop once the progress line of step <paramref name="step"/> is written.</summary>
    private sealed class StopAfter(StopSignal stop, int step) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            if (value?.StartsWith($"dpo {step}/", StringComparison.Ordinal) == true) stop.Request();
            base.WriteLine(value);
        }
    }

    [Fact]
    public void Interrupt_ThenResume_GivesIdenticalMetricsAndModel()
    {
        var config = Config(8) with { EvalEvery = 4 };
        var full = Path.Combine(TestSupport.TempDir(), "full");
        Demo.RunDpo(Records, Init, full, config, TextWriter.Null);

        var dir = Path.Combine(TestSupport.TempDir(), "interrupted");
        using var stop = StopSignal.Manual();
        var e = Assert.Throws<TrainingStoppedException>(() => Demo.RunDpo(Records, Init, dir, config, new StopAfter(stop, 3), stop: stop));
        Assert.True(e.Interrupted);
        Assert.Contains("dpo: interrupted after step 3", e.Message);
        Assert.Equal(3, Rows(dir).Count);
        var log = new StringWriter();
        Demo.RunDpo(Records, Init, dir, config, log, resume: true);
        Assert.Contains("resuming at step 4 of 8", log.ToString());
        Assert.DoesNotContain("reference log-probs of", log.ToString());                       // read back, not recomputed

        var (expected, actual) = (Rows(full), Rows(dir));
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
            foreach (var (key, value) in expected[i].Where(kv => !TestSupport.IsTiming(kv.Key)))
                Assert.True(actual[i].TryGetValue(key, out var other) && other.ToString() == value.ToString(), $"row {i + 1} '{key}': {value} vs {other}");
        Assert.Equal(File.ReadAllBytes(Path.Combine(full, "model.safetensors")), File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
    }

    [Theory]
    [InlineData("loss_type=kto", "--set loss_type=kto: 'loss_type' expects one of sigmoid, ipo, hinge, robust")]
    [InlineData("beta=0", "beta must be > 0 (got 0)")]
    [InlineData("label_smoothing=0.5", "label_smoothing must be in [0, 0.5)")]
    [InlineData("steps=0", "steps must be > 0 (got 0)")]
    [InlineData("rpo_alpha=-1", "rpo_alpha must be >= 0 (got -1)")]
    public void Config_BadValue_NamesTheKey(string set, string message) =>
        Assert.StartsWith(message, Assert.Throws<PpoSharpException>(() => ConfigLoader.Load(new DpoConfig(), null, [set], c => c.Validate())).Message);

    [Fact]
    public void Ipo_UsesLengthAveragedLogProbs()
    {
        var (_, tokenizer) = RunDirectory.LoadPolicy(Init);
        var pairs = DpoTrainer.Tokenize(Records.Take(8), tokenizer, 64);
        using var reference = RunDirectory.LoadPolicyModel(Init);
        var sum = DpoTrainer.ReferenceLogProbs(reference, pairs, tokenizer.Special.Pad, lengthAverage: false);
        var mean = DpoTrainer.ReferenceLogProbs(reference, pairs, tokenizer.Special.Pad, lengthAverage: true);
        for (int i = 0; i < pairs.Count; i++)
            Assert.Equal(sum.Chosen[i] / pairs[i].Chosen.Trained.Count(t => t), mean.Chosen[i], 4);
        Assert.True(new DpoConfig { LossType = DpoLossType.Ipo }.LengthAverage());
    }

    [Fact]
    public void Cli_Dpo_OutputIsAPolicyThatGenerateAndResumeAccept()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "dpo");
        string[] args = ["dpo", "--init", Init, "--data", Preferences, "--out", dir, "--set", "steps=4", "--set", "batch_size=8", "--set", "eval_every=2"];
        var stderr = new StringWriter();
        var stdout = new StringWriter();
        Assert.True(Cli.Cli.Run(args, stdout, stderr) == 0, stderr.ToString());
        Assert.Contains("dpo: 4 steps in", stdout.ToString());
        Assert.True(File.Exists(Path.Combine(dir, DpoTrainer.ReferenceFile)));
        var generated = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["generate", "--model", dir, "--prompt", "sort: cba"], generated, new StringWriter()));
        Assert.NotEqual("", generated.ToString().Trim());
        // --resume continues the same job only.
        var resumed = new StringWriter();
        Assert.Equal(2, Cli.Cli.Run([.. args, "--resume", "--set", "beta=0.2"], new StringWriter(), resumed));
        Assert.Contains("--resume continues the same job only, and config.beta was 0.1, now 0.2", resumed.ToString());
    }
}
