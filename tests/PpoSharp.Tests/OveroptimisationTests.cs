using System.Text.Json;
using PpoSharp.Algorithms;
using PpoSharp.Data;
using PpoSharp.Rewards;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class OveroptimisationTests
{
    [Fact]
    public void RunningMoments_MergeBatches_AsOnePass()
    {
        var m = RunningMoments.Empty.Update([1, 2, 3]).Update([4, 5]);               // all: 1..5
        Assert.Equal(5, m.Count);
        Assert.Equal(3, m.Mean, 12);
        Assert.Equal(Math.Sqrt(2.5), m.Std, 12);                                       // unbiased: sum (x - 3)² / 4 = 10 / 4
        Assert.Equal(2 / Math.Sqrt(2.5), m.Normalize(5), 12);
        Assert.Equal(1, RunningMoments.Empty.Update([7]).Std);                         // one score: no spread yet
    }

    [Fact]
    public void NormalizedReward_UpdatesThenNormalises_AndResumesExactlyFromItsCheckpointedMoments()
    {
        var inner = new FixedScores([10, 20, 30], [40, 50, 60]);
        var reward = new NormalizedReward(inner);
        var batch = Enumerable.Repeat(new RewardInput([], "x", [], new Source("t", 1)), 3).ToList();
        var first = reward.Score(batch);                                               // moments of 10, 20, 30: mean 20, std 10
        Assert.Equal([-1.0, 0.0, 1.0], first.Select(x => Math.Round(x, 12)));
        var json = JsonSerializer.Serialize(reward.Moments, Json.Options);              // what a checkpoint stores
        var second = reward.Score(batch);
        var resumed = new NormalizedReward(new FixedScores([40, 50, 60])) { Moments = JsonSerializer.Deserialize<RunningMoments>(json, Json.Options)! };
        Assert.Equal(second, resumed.Score(batch));                                    // bit for bit
        Assert.Equal(50, reward.LastRawMean);
        Assert.Equal((40 - 35) / Math.Sqrt(350), second[0], 12);                       // 10..60: mean 35, var 1750 / 5
    }

    private sealed class FixedScores(params double[][] batches) : IRewardFunction
    {
        private int _call;
        public string Name => "fixed";
        public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch) => batches[_call++];
    }

    [Fact]
    public void Ensemble_IsMeanMinusKStd_OfTheMembers()
    {
        using var scores = tensor(new float[,] { { 1, 0 }, { 2, 0 }, { 3, 3 } });        // (M 3, B 2)
        var k1 = EnsembleReward.Conservative(scores, 1).data<float>().ToArray();
        Assert.Equal(2 - Math.Sqrt(2.0 / 3), k1[0], 5);                                // mean 2, spread sqrt(2/3)
        Assert.Equal(1 - Math.Sqrt(2.0), k1[1], 5);                                    // mean 1, spread sqrt((1 + 1 + 4) / 3)
        Assert.Equal(2, EnsembleReward.Conservative(scores, 0).data<float>()[0], 5);   // k 0: the mean
    }

    private static Dictionary<string, JsonElement> Row(double proxy, double gold, double eos) =>
        JsonSerializer.Deserialize<Dictionary<string, JsonElement>>($"{{\"proxy_score_mean\": {proxy}, \"gold_reward_mean\": {gold}, \"eos_rate\": {eos}}}")!;

    [Fact]
    public void Warnings_FireWhenTheProxyRisesAndTheGoldFalls_OrEosIsLost_AndOnlyThen()
    {
        var overoptimised = Enumerable.Range(0, 20).Select(i => Row(proxy: i, gold: 0.8 - 0.01 * i, eos: 1 - 0.02 * i)).ToList();
        var warnings = RunWarnings.Of(overoptimised);
        Assert.Equal(2, warnings.Count);
        Assert.Contains("over-optimisation: the proxy reward (proxy_score_mean) rose 0.500 -> 18.500 while the gold reward fell 0.795 -> 0.615", warnings[0]);
        Assert.Contains("eos_rate 0.99 -> 0.63", warnings[1]);
        var healthy = Enumerable.Range(0, 20).Select(i => Row(proxy: i, gold: 0.6 + 0.01 * i, eos: 1)).ToList();
        Assert.Empty(RunWarnings.Of(healthy));
    }

    /// <summary>PPO from the flawed sort model with a held-out evaluation; returns the run directory, its tokenizer and held-out prompts.</summary>
    private static (string Dir, PpoSharp.Text.ITokenizer Tokenizer, List<PromptRecord> HeldOut) TrainWithHeldOut(PpoConfig config, int prompts,
        Func<List<PromptRecord>, HeldOutEval> heldOut)
    {
        var sort = TestSupport.FlawedSortModel;
        var train = Jsonl.ReadPrompts(Path.Combine(sort, "data", TaskData.PromptsFile)).Records;
        var eval = Jsonl.ReadPrompts(Path.Combine(sort, "data", TaskData.EvalFile)).Records.Take(prompts).ToList();
        using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), train, config, TextWriter.Null);
        trainer.HeldOut = heldOut(eval);
        var dir = Path.Combine(TestSupport.TempDir(), "ppo");
        trainer.Train(dir);
        return (dir, trainer.Tokenizer, eval);
    }

    [Fact]
    public void BestPolicy_KeepsTheInitialModelUntilAnEvaluationBeatsIt_ByTheGold()
    {
        var gold = new ExactMatch();
        var config = new PpoConfig { Iterations = 4, BatchSize = 16, NumMiniBatches = 2, ResponseLength = 8, Lr = 3e-4, EvalEvery = 2 };
        var (dir, tokenizer, heldOut) = TrainWithHeldOut(config, 40, eval => new HeldOutEval(eval, gold, true, 2, 8, double.PositiveInfinity));
        var rows = MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName));
        Assert.Equal([false, true, false, true], rows.Select(r => r.ContainsKey("eval_reward")));     // iterations 2 and 4
        var initial = Evaluator.Evaluate(RunDirectory.LoadPolicyModel(Init), tokenizer, heldOut, gold, 8).RewardMean;
        var candidates = new[] { (0, initial), (2, rows[1]["eval_reward"].GetDouble()), (4, rows[3]["eval_reward"].GetDouble()) };
        var expected = candidates.Aggregate((a, b) => b.Item2 > a.Item2 ? b : a);       // the first of the best
        var best = BestPolicy.ReadInfo(dir)!;
        Assert.Equal(expected.Item1, best.Iteration);
        Assert.Equal(expected.Item2, best.Reward, 12);
        var saved = Evaluator.Evaluate(RunDirectory.LoadPolicyModel(Path.Combine(dir, BestPolicy.Folder)), tokenizer, heldOut, gold, 8).RewardMean;
        Assert.Equal(best.Reward, saved, 12);                                           // best/ is that model
    }

    [Fact]
    public void BestPolicy_WithoutAGold_CountsOnlyEvaluationsWithinTheKlBudget()
    {
        var config = new PpoConfig { Iterations = 2, BatchSize = 16, NumMiniBatches = 2, ResponseLength = 8, Lr = 3e-3, EvalEvery = 1 };
        var (dir, _, _) = TrainWithHeldOut(config, 20, eval => new HeldOutEval(eval, new EditDistance(), false, 1, 8, KlBudget: 0));   // no KL after training is within it
        Assert.Equal(0, BestPolicy.ReadInfo(dir)!.Iteration);                          // only the initial model (KL 0) counted
    }

    private static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        return (PpoSharp.Cli.Cli.Run(args, stdout, stderr), stdout.ToString(), stderr.ToString());
    }

    private static string Pairs => Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PreferencesFile);
    private static string Init => Path.Combine(TestSupport.FlawedSortModel, "model");

    [Fact]
    public void RmEnsemble_TrainsMembersWithTheirOwnSeeds_AndScoresMeanMinusKStd()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "rm");
        var run = Cli("rm", "--data", Pairs, "--init", Init, "--out", dir, "--ensemble", "2", "--set", "steps=6", "--set", "eval_every=3", "--set", "ensemble_k=0.5");
        Assert.True(run.Code == 0, run.Err);
        var file = EnsembleFile.Read(dir)!;
        Assert.Equal(["member-0", "member-1"], file.Members);
        Assert.Equal(0.5, file.K);
        var ensemble = RewardModelScorer.Load(dir);
        Assert.Equal(2, ensemble.Members.Count);
        var inputs = Jsonl.ReadPrompts(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PromptsFile)).Records.Take(5)
            .Select(p => new RewardInput(p.Messages, p.Solutions[0], p.Solutions, p.Source)).ToList();
        var members = Enumerable.Range(0, 2).Select(k => RewardModelScorer.Load(Path.Combine(dir, $"member-{k}")).Score(inputs)).ToList();
        Assert.NotEqual(members[0], members[1]);                                         // different seeds, different models
        var expected = members[0].Zip(members[1], (a, b) => (a + b) / 2 - 0.5 * Math.Abs(a - b) / 2);   // spread of two = |a - b| / 2
        Assert.All(ensemble.Score(inputs).Zip(expected), p => Assert.Equal(p.Second, p.First, 4));
    }

    [Fact]
    public void Ppo_RefusesARewardModelNearChance_BeforeWritingAnything()
    {
        var rm = Path.Combine(TestSupport.TempDir(), "rm");
        Assert.Equal(0, Cli("rm", "--data", Pairs, "--init", Init, "--out", rm, "--set", "steps=2", "--set", "eval_every=2").Code);
        var card = RewardModelCard.Read(rm)!;
        Assert.Equal(2, card.Step);
        (card with { HeldOutAccuracy = 0.52 }).Write(rm);
        var outDir = Path.Combine(TestSupport.TempDir(), "ppo");
        var run = Cli("ppo", "--data", Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PromptsFile), "--init", Init, "--reward", $"model:{rm}", "--out", outDir);
        Assert.Equal(2, run.Code);
        Assert.Contains($"model:{rm}: held-out pair accuracy 52.0 % (n = ", run.Err);
        Assert.Contains("is near chance (50%)", run.Err);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void RewardTrainer_KeepsTheBestHeldOutWeights_AndWarnsWhenTrainingAccuracyRunsAway()
    {
        var records = Jsonl.ReadPreferences(Pairs).Records.Take(60).ToList();          // few pairs, many steps: it memorises them
        var log = new StringWriter();
        var dir = Path.Combine(TestSupport.TempDir(), "rm");
        var config = new RmConfig { Steps = 60, EvalEvery = 10, EvalFraction = 0.5, Lr = 3e-3, BatchSize = 16 };
        var eval = Demo.RunRm(records, Init, dir, config, log);
        var rows = MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName)).Where(r => r.ContainsKey("eval_accuracy")).ToList();
        var bestRow = rows.Aggregate((a, b) => b["eval_accuracy"].GetDouble() > a["eval_accuracy"].GetDouble() ? b : a);
        var card = RewardModelCard.Read(dir)!;
        Assert.Equal(bestRow["step"].GetInt32(), card.Step);
        Assert.Equal(bestRow["eval_accuracy"].GetDouble(), eval.Accuracy, 6);           // the saved model is that step's
        Assert.Equal(eval.Accuracy, card.HeldOutAccuracy, 6);
        Assert.False(Directory.Exists(Path.Combine(dir, "best")));                        // the kept weights are cleaned up
        if (card.TrainAccuracy - card.HeldOutAccuracy > RewardTrainer.OverfitGap) Assert.Contains("it memorised its pairs", log.ToString());
        else Assert.DoesNotContain("memorised", log.ToString());
    }

    /// <summary>
    /// A reward model's card against the trust checks, each branch by hand: held-out 0.52 is under the 0.55 floor (refused);
    /// 0.70 is under the 0.75 "weak" line (warned); train 0.95 against held-out 0.78 is a gap of 0.17 > 0.15 (memorised);
    /// train 0.90 against 0.78 (gap 0.12) and held-out 0.80 pass silently.
    /// </summary>
    [Theory]
    [InlineData(0.52, 0.60, "refused")]
    [InlineData(0.70, 0.72, "is low")]
    [InlineData(0.78, 0.95, "it memorised its pairs")]
    [InlineData(0.78, 0.90, "")]
    [InlineData(0.80, 0.80, "")]
    public void CheckTrust_EachBranchOfTheCard(double heldOut, double train, string expected)
    {
        var scorer = new RewardModelScorer(new PpoSharp.Models.RewardModel(TestSupport.TinyModel()), PpoSharp.Text.CharTokenizer.FromTexts(["ab"]), "rm")
        {
            Card = new RewardModelCard(heldOut, 100, train, 10),
        };
        var log = new StringWriter();
        if (expected == "refused")
        {
            Assert.Contains("is near chance (50%)", Assert.Throws<PpoSharpException>(() => scorer.CheckTrust(0.55, log)).Message);
            return;
        }
        scorer.CheckTrust(0.55, log);
        if (expected == "") Assert.Equal("", log.ToString());
        else Assert.Contains(expected, Assert.Single(log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }

    /// <summary>
    /// best/ by the gold, with held-out results given by hand: the initial model (0.5) is kept through an equal (0.5) and a
    /// worse (0.4) evaluation, then replaced by a better one (0.7); a later worse one (0.6) leaves it. Without a gold, an
    /// evaluation over the KL budget never counts, however high.
    /// </summary>
    [Fact]
    public void BestPolicyOffer_KeepsTheBestSoFar_OnlyAStrictlyBetterOneReplacesIt()
    {
        var model = TestSupport.TinyModel();
        var tokenizer = PpoSharp.Text.CharTokenizer.FromTexts(["abcdefghijklmn"]);
        static EvalResult Result(double reward) => new(1, reward, reward, 4, []);
        string Offer(bool byGold, params (int Iteration, double Reward, double Kl)[] evaluations)
        {
            var dir = TestSupport.TempDir();
            var best = new BestPolicy(dir, new HeldOutEval([], new EditDistance(), byGold, 1, 8, KlBudget: 1.0), tokenizer, new { }, resume: false);
            foreach (var (iteration, reward, kl) in evaluations) best.Offer(model, iteration, 10, () => kl, null, Result(reward));
            var info = BestPolicy.ReadInfo(dir)!;
            Assert.True(File.Exists(Path.Combine(dir, BestPolicy.Folder, "config.json")));
            return $"{info.Iteration}:{info.Reward}";
        }
        Assert.Equal("0:0.5", Offer(true, (0, 0.5, 0), (1, 0.5, 0), (2, 0.4, 0)));
        Assert.Equal("3:0.7", Offer(true, (0, 0.5, 0), (1, 0.5, 0), (2, 0.4, 0), (3, 0.7, 0), (4, 0.6, 0)));
        Assert.Equal("3:0.7", Offer(true, (0, 0.5, 0), (3, 0.7, 5.0)));                  // by the gold, KL does not matter
        Assert.Equal("2:0.6", Offer(false, (0, 0.5, 0), (1, 0.9, 1.5), (2, 0.6, 0.8)));   // 0.9 was over the budget
    }

    [Fact]
    public void NormalisedModelReward_ResumedAfterAnInterrupt_GivesIdenticalMetrics()
    {
        var rm = Path.Combine(TestSupport.TempDir(), "rm");
        Demo.RunRm(Jsonl.ReadPreferences(Pairs).Records.Take(200).ToList(), Init, rm, new RmConfig { Steps = 10, EvalEvery = 10 }, TextWriter.Null);
        var prompts = Jsonl.ReadPrompts(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PromptsFile)).Records;
        var config = new PpoConfig { Iterations = 5, BatchSize = 16, NumMiniBatches = 2, NumPpoEpochs = 2, ResponseLength = 8, CheckpointEvery = 2, MinRewardModelAccuracy = 0 };
        IRewardFunction Reward(StopSignal stop, int n) => new CompositeReward([(RewardModelScorer.Load(rm), 1), (new StopOnCall(stop, n), 0)]);
        var full = Path.Combine(TestSupport.TempDir(), "full");
        using (var stop = StopSignal.Manual())
        using (var trainer = PpoTrainer.FromRunDirectory(Init, Reward(stop, int.MaxValue), prompts, config, TextWriter.Null))
            trainer.Train(full);
        var dir = Path.Combine(TestSupport.TempDir(), "interrupted");
        using (var stop = StopSignal.Manual())
        {
            using (var trainer = PpoTrainer.FromRunDirectory(Init, Reward(stop, 3), prompts, config, TextWriter.Null))
                Assert.Throws<TrainingStoppedException>(() => trainer.Train(dir, stop: stop));
            using var resumed = PpoTrainer.FromRunDirectory(Init, Reward(stop, int.MaxValue), prompts, config, TextWriter.Null);
            resumed.Train(dir, resume: true);
        }
        var state = Checkpoints.ReadState<PpoState>(Directory.GetDirectories(Path.Combine(dir, Checkpoints.Folder), "step-*").Order().First());
        Assert.True(Assert.Single(state.RewardMoments!).Count > 0);                    // the moments are in the checkpoint
        var (expected, actual) = (MetricsWriter.Read(Path.Combine(full, MetricsWriter.FileName)), MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName)));
        Assert.Equal(5, actual.Count);
        foreach (var key in new[] { "reward_mean", "proxy_score_mean", "proxy_score_running_std", "kl", "kl_coef", "policy_loss" })
            Assert.Equal(expected.Select(r => r[key].GetDouble()), actual.Select(r => r[key].GetDouble()));
        Assert.True(Math.Abs(expected.Average(r => r["reward_mean"].GetDouble())) < 1.5, "normalised rewards keep a small scale");
    }
}
