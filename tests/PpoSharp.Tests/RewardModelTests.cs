using PpoSharp.Algorithms;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class RewardModelTests
{
    [Fact]
    public void PairwiseLoss_HandComputed_WithAndWithoutMargin()
    {
        // diffs 1 and -1: loss = (softplus(-1) + softplus(1)) / 2 = (0.3132617 + 1.3132617) / 2 = 0.8132617
        var (loss, accuracy, margin) = PairwiseLoss.Compute(tensor(new float[] { 2, 0 }), tensor(new float[] { 1, 1 }));
        Assert.Equal(0.8132617, loss.item<float>(), 5);
        Assert.Equal((0.5, 0.0), (accuracy, margin));
        // margin 1 on the first pair: diff - margin = 0 -> log 2 = 0.6931472; mean with 1.3132617 = 1.0032044
        var (withMargin, _, _) = PairwiseLoss.Compute(tensor(new float[] { 2, 0 }), tensor(new float[] { 1, 1 }), tensor(new float[] { 1, 0 }));
        Assert.Equal(1.0032044, withMargin.item<float>(), 5);
    }

    [Fact]
    public void Score_ReadAtLastRealToken_LeftAndRightPaddingAndLengthsAgree()
    {
        var model = new RewardModel(TestSupport.TinyModel(seed: 2));
        model.eval();
        var single = new[] { new long[] { 3, 4, 5 }, new long[] { 6, 7, 8, 9, 10 } };
        var alone = single.Select(r => model.Score(tensor(r, [1, r.Length]), ones(1, r.Length, ScalarType.Bool)).item<float>()).ToArray();

        var left = tensor(new long[] { 0, 0, 3, 4, 5, 6, 7, 8, 9, 10 }, [2, 5]);
        var leftMask = tensor(new[] { false, false, true, true, true, true, true, true, true, true }, [2, 5]);
        var right = tensor(new long[] { 3, 4, 5, 0, 0, 6, 7, 8, 9, 10 }, [2, 5]);
        var rightMask = tensor(new[] { true, true, true, false, false, true, true, true, true, true }, [2, 5]);
        Assert.Equal(new long[] { 4, 4 }, RewardModel.LastRealToken(leftMask).data<long>().ToArray());
        Assert.Equal(new long[] { 2, 4 }, RewardModel.LastRealToken(rightMask).data<long>().ToArray());
        foreach (var scores in new[] { model.Score(left, leftMask), model.Score(right, rightMask) })
        {
            var s = scores.data<float>().ToArray();
            Assert.Equal(alone[0], s[0], 4);
            Assert.Equal(alone[1], s[1], 4);
        }
    }

    [Fact]
    public void Offset_IsSubtractedFromScores()
    {
        var model = new RewardModel(TestSupport.TinyModel(seed: 2));
        var ids = tensor(new long[] { 3, 4 }, [1, 2]);
        var mask = ones(1, 2, ScalarType.Bool);
        float before = model.Score(ids, mask).item<float>();
        model.SetOffset(1.5);
        Assert.Equal(before - 1.5, model.Score(ids, mask).item<float>(), 5);
    }

    /// <summary>A reward model trained once per run on the sort task's pairs (clean SFT backbone).</summary>
    private static readonly Lazy<(string Dir, PairEval HeldOut)> Trained = new(() =>
    {
        var dir = Path.Combine(TestSupport.TempDir(), "rm");
        var records = Jsonl.ReadPreferences(Path.Combine(TestSupport.TrainedSortModel, "data", TaskData.PreferencesFile)).Records;
        var config = new RmConfig { Steps = 150, BatchSize = 32, Lr = 1e-3, EvalEvery = 1000, EvalFraction = 0.1 };
        var eval = Demo.RunRm(records, Path.Combine(TestSupport.TrainedSortModel, "model"), dir, config, TextWriter.Null);
        return (dir, eval);
    });

    [Fact]
    public void RewardModel_FewSteps_RanksHeldOutPairsBetterThanChance_AndSavesNormalised()
    {
        var (dir, heldOut) = Trained.Value;
        Assert.True(heldOut.Accuracy > 0.7, $"held-out accuracy {heldOut.Accuracy:P1}");
        Assert.True(heldOut.RewardMargin > 0);
        var metrics = MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName));
        Assert.All(new[] { "loss", "accuracy", "reward_margin" }, k => Assert.True(metrics[0].ContainsKey(k), k));
        Assert.True(metrics.TakeLast(10).Average(m => m["loss"].GetDouble()) < metrics.Take(10).Average(m => m["loss"].GetDouble()));

        // Normalised: mean score over the training pairs is ~0 once the stored offset is applied.
        var (model, tokenizer) = RunDirectory.LoadRewardModel(dir);
        var records = Jsonl.ReadPreferences(Path.Combine(TestSupport.TrainedSortModel, "data", TaskData.PreferencesFile)).Records;
        var pairs = RewardTrainer.Tokenize(records, tokenizer, model.Backbone.Config.ContextLength);
        var (chosen, rejected) = RewardTrainer.ScorePairs(model, pairs, tokenizer.Special.Pad);
        double mean = (chosen.mean().item<float>() + rejected.mean().item<float>()) / 2;
        Assert.InRange(mean, -0.5, 0.5);
    }

    [Fact]
    public void ModelRewardSpec_RanksPairsLikeTheModel_AndMixesWithRules()
    {
        var (dir, _) = Trained.Value;
        var spec = RewardSpec.Parse($"model:{dir},repetition:0.2");
        Assert.Equal(2, spec.Parts.Count);
        var scorer = Assert.IsType<RewardModelScorer>(spec.Parts[0].Function);
        var pairs = Jsonl.ReadPreferences(Path.Combine(TestSupport.TrainedSortModel, "data", TaskData.PreferencesFile)).Records.Take(200).ToList();
        var chosen = scorer.Score(pairs.Select(p => new RewardInput(p.Messages, p.Chosen, [], p.Source)).ToList());
        var rejected = scorer.Score(pairs.Select(p => new RewardInput(p.Messages, p.Rejected, [], p.Source)).ToList());
        double accuracy = chosen.Zip(rejected).Count(x => x.First > x.Second) / (double)pairs.Count;
        Assert.True(accuracy > 0.7, $"model:DIR ranks {accuracy:P0} of pairs correctly");
        var mixed = spec.Score([new RewardInput(pairs[0].Messages, "aaaaa", [], pairs[0].Source)])[0];
        var modelOnly = scorer.Score([new RewardInput(pairs[0].Messages, "aaaaa", [], pairs[0].Source)])[0];
        Assert.Equal(modelOnly + 0.2 * -2.0 / 3, mixed, 5);          // repetition of "aaaaa": 2 of 3 trigrams repeated
    }

    [Fact]
    public void RewardModelDirectory_WhereAPolicyIsNeeded_IsAClearError()
    {
        var (dir, _) = Trained.Value;
        var e = Assert.Throws<PpoSharpException>(() => RunDirectory.LoadPolicy(dir));
        Assert.Equal($"{dir}: holds a reward model, but a policy is needed here (its architecture is GPT2ForSequenceClassification)", e.Message);
        Assert.Contains("'model:' needs a reward-model directory", Assert.Throws<PpoSharpException>(() => RewardSpec.Parse("model:")).Message);
    }

    [Fact]
    public void Cli_EvalOnRewardModel_PrintsAccuracyAndMargin()
    {
        var (dir, _) = Trained.Value;
        var stdout = new StringWriter();
        int code = Cli.Cli.Run(["eval", "--model", dir, "--data", Path.Combine(TestSupport.TrainedSortModel, "data", TaskData.PreferencesFile)], stdout, new StringWriter());
        Assert.Equal(0, code);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout.ToString());
        Assert.Equal(2000, doc.RootElement.GetProperty("n").GetInt32());
        Assert.InRange(doc.RootElement.GetProperty("accuracy").GetDouble(), 0.7, 1.0);
    }

    [Fact]
    public void CriticInitFromRewardModel_ValueHeadEqualsRewardHead()
    {
        var (dir, _) = Trained.Value;
        var (rm, _) = RunDirectory.LoadRewardModel(dir);
        var critic = new CriticModel(null, rm.Backbone.Config.DModel);      // reads the hidden states it is given
        critic.InitHeadFrom(rm.Head);
        var hidden = randn(1, 3, rm.Backbone.Config.DModel);
        var ids = zeros(1, 3, ScalarType.Int64);
        Assert.True(rm.Head.forward(hidden).allclose(critic.Values(hidden, ids, ids, ids, 0, 3)));
        Assert.False(new CriticModel(null, rm.Backbone.Config.DModel).Values(hidden, ids, ids, ids, 0, 3).allclose(rm.Head.forward(hidden)));
    }

    [Fact]
    public void BuiltInRewardModel_IsSavedUnderItsOwnArchitectureName_SoTransformersRefusesIt()
    {
        var (dir, _) = Trained.Value;
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
        Assert.Equal("GPT2WithMlpScoreHead", config["architectures"]![0]!.GetValue<string>());   // the notes' MLP head is no HF "score" layer
        Assert.True(RunDirectory.LoadRewardModel(dir).Model.Head.IsMlp);
    }

    [Fact]
    public void CriticInit_FromARewardModelWithAnotherTokenizer_IsRefused()
    {
        var (dir, _) = Trained.Value;
        var prompts = new[] { new PromptRecord([new(Role.User, "hi")], ["x"], new Source("p", 1)) };
        var e = Assert.Throws<PpoSharpException>(() =>
            PpoTrainer.FromRunDirectory(TestSupport.HfModel("tiny-llama3"), new ExactMatch(), prompts, new PpoConfig(), TextWriter.Null, criticInitDir: dir));
        Assert.Contains($"--critic-init {dir}: the reward model's tokenizer", e.Message);
    }
}
