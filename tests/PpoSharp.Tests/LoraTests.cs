using System.Text.Json.Nodes;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Models.Hf;
using PpoSharp.Rewards;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class LoraTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static LoraSettings Settings(string targets = "", int r = 4) => new(r, 8, 0, targets);

    /// <summary>Token ids (2, 7) below the model's vocabulary, the same on every call.</summary>
    private static Tensor Ids(Decoder model)
    {
        using var g = new TorchSharp.torch.Generator(5);
        return randint(0, Math.Min(model.Config.VocabSize, 1000), [2, 7], generator: g);
    }

    /// <summary>Gives every B of the adapter random values, so that it changes the outputs.</summary>
    private static void Perturb(LoraAdapter adapter)
    {
        using var _ = no_grad();
        manual_seed(11);
        for (int i = 0; i < adapter.Sites.Count; i++) adapter.Site(i).B.normal_(0, 0.05);
    }

    /// <summary>Logits agree within 1e-5 of their scale: what fp32 rounding leaves when W x + B A x becomes (W + B A) x.</summary>
    private static void AssertClose(Tensor expected, Tensor actual)
    {
        double scale = expected.abs().max().item<float>(), difference = (actual - expected).abs().max().item<float>();
        Assert.True(difference <= 1e-5 * Math.Max(1, scale), $"max difference {difference} at logits up to {scale}");
    }

    private static Decoder Frozen(string dir)
    {
        var model = RunDirectory.LoadPolicyModel(dir);
        foreach (var p in model.parameters()) p.requires_grad = false;
        return model;
    }

    public static TheoryData<string, string> Models => new()
    {
        { "tiny-llama3", "" }, { "tiny-llama3", "all-linear" }, { "tiny-gpt2", "" }, { "tiny-gpt2", "all-linear" }, { "tiny-qwen3", "k_proj,o_proj" },
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void NewAdapter_LeavesOutputsIdentical_AndDisabledIsExactlyTheBase(string name, string targets)
    {
        var baseModel = Frozen(TestSupport.HfModel(name));
        using var ids = Ids(baseModel);
        using var before = baseModel.forward(ids);
        var view = LoraModels.NewView(baseModel, Settings(targets));
        Assert.True(view.Adapter!.Sites.Count > 0);
        using (var fresh = view.forward(ids)) Assert.True(fresh.eq(before).all().item<bool>(), "a new adapter (B = 0) changed the logits");
        Perturb(view.Adapter);
        using (var adapted = view.forward(ids)) Assert.True((adapted - before).abs().max().item<float>() > 1e-3, "the perturbed adapter changed nothing");
        using var disabled = baseModel.forward(ids);                                   // the base is the view with adapters off
        Assert.True(disabled.eq(before).all().item<bool>());
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Merged_AgreesWithUnmerged(string name, string targets)
    {
        var dir = TestSupport.HfModel(name);
        var view = LoraModels.NewView(Frozen(dir), Settings(targets));
        Perturb(view.Adapter!);
        using var ids = Ids(view);
        using var unmerged = view.forward(ids);
        var merged = RunDirectory.LoadPolicyModel(dir);
        view.Adapter!.MergeInto(merged);
        using var logits = merged.forward(ids);
        AssertClose(unmerged, logits);
    }

    /// <summary>The largest logit difference that <c>export --merge</c>'s folder may show, relative to the logits' scale, by its dtype.</summary>
    public const double Fp32MergeTolerance = 1e-5, Bf16MergeTolerance = 3e-2;   // measured: 7.1e-7 (GPT-2), 1.9e-2 (Llama 3)

    /// <summary>
    /// <c>export --merge</c> writes the merged weights in the base's dtype; the folder, loaded again, against the base with
    /// the adapter (computed in fp32), for every fixture that has a tokenizer (export writes one; the Qwen2, Qwen3 and
    /// Mistral fixtures have none, and are checked in memory by <see cref="Merged_AgreesWithUnmerged"/>). The fp32 base
    /// (GPT-2) agrees to fp32 rounding; the bf16 one (Llama 3) to the rounding of W + (alpha / r) B A to bf16 (8
    /// significant bits). The measured difference is written to the test output.
    /// </summary>
    [Theory]
    [InlineData("tiny-gpt2")]
    [InlineData("tiny-llama3")]
    public void ExportMerge_FolderLoadedAgain_GivesTheLogitsOfBasePlusAdapter(string name)
    {
        var baseDir = TestSupport.HfModel(name);
        var view = LoraModels.NewView(Frozen(baseDir), Settings("all-linear"));
        view.eval();
        Perturb(view.Adapter!);
        var root = TestSupport.TempDir();
        var adapterDir = Path.Combine(root, "adapter");
        PeftAdapter.Save(adapterDir, view.Adapter!, baseDir);
        var merged = Path.Combine(root, "merged");
        var export = Cli("export", "--model", adapterDir, "--merge", "--out", merged);
        Assert.True(export.Code == 0, export.Err);
        var dtype = Safetensors.ReadHeader(Path.Combine(merged, RunDirectory.ModelFile)).Select(e => e.Dtype).Distinct().Single();
        var baseDtype = Safetensors.ReadHeader(Path.Combine(baseDir, RunDirectory.ModelFile)).Select(e => e.Dtype).Distinct().Single();
        Assert.Equal(baseDtype, dtype);

        using var ids = Ids(view);
        using var expected = view.forward(ids);                                          // base + adapter, unmerged, fp32
        using var actual = RunDirectory.LoadPolicyModel(merged).forward(ids);
        double scale = expected.abs().max().item<float>(), difference = (actual - expected).abs().max().item<float>();
        double bound = dtype == "BF16" ? Bf16MergeTolerance : Fp32MergeTolerance;
        output.WriteLine($"{name} ({dtype}): max difference {difference:G3}, logits up to {scale:G3}, relative {difference / Math.Max(1, scale):G3}");
        Assert.True(difference <= bound * Math.Max(1, scale), $"{name} ({dtype}): max difference {difference:G3} at logits up to {scale:G3} (relative {difference / Math.Max(1, scale):G3}, bound {bound:G3})");
    }

    [Fact]
    public void Export_WithoutMerge_WritesTheModelFilesOnly_NotTheRunsLogs()
    {
        var baseDir = TestSupport.HfModel("tiny-gpt2");
        var view = LoraModels.NewView(Frozen(baseDir), Settings("all-linear"));
        var run = Path.Combine(TestSupport.TempDir(), "run");
        PeftAdapter.Save(run, view.Adapter!, baseDir);
        var logs = new[] { "job.json", "summary.json", "events.out.tfevents.1700000000.host", "metrics.jsonl", DpoTrainer.ReferenceFile, "report.html" };
        foreach (var log in logs) File.WriteAllText(Path.Combine(run, log), "{}");
        File.WriteAllText(Path.Combine(run, RunDirectory.TrainingFile), "{}");
        var outDir = Path.Combine(TestSupport.TempDir(), "exported");
        var export = Cli("export", "--model", run, "--out", outDir);
        Assert.True(export.Code == 0, export.Err);
        Assert.Equal([PeftAdapter.ConfigFile, PeftAdapter.WeightsFile, RunDirectory.TrainingFile], Directory.GetFiles(outDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Llama_Adapter_HasPeftNamesShapesAndConfig_AndLoadsBack()
    {
        var baseDir = TestSupport.HfModel("tiny-llama3");
        var view = LoraModels.NewView(Frozen(baseDir), new LoraSettings(4, 16, 0.05, ""));
        view.eval();                                                                    // no dropout: outputs to compare
        Perturb(view.Adapter!);
        var outDir = Path.Combine(TestSupport.TempDir(), "adapter");
        PeftAdapter.Save(outDir, view.Adapter!, baseDir);

        var header = Safetensors.ReadHeader(Path.Combine(outDir, PeftAdapter.WeightsFile)).ToDictionary(e => e.Name, e => e.Shape);
        Assert.Equal(2 * 2 * 2, header.Count);                                          // 2 layers x (q_proj, v_proj) x (A, B)
        Assert.Equal([4L, 32], header["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]);
        Assert.Equal([32L, 4], header["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]);   // 4 heads x 8
        Assert.Equal([16L, 4], header["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]);   // 2 key/value heads x 8
        Assert.Equal("F32", Safetensors.ReadHeader(Path.Combine(outDir, PeftAdapter.WeightsFile))[0].Dtype);

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, PeftAdapter.ConfigFile)))!;
        Assert.Equal("LORA", (string?)config["peft_type"]);
        Assert.Equal("CAUSAL_LM", (string?)config["task_type"]);
        Assert.Equal(4, (int)config["r"]!);
        Assert.Equal(16, (double)config["lora_alpha"]!);
        Assert.Equal(0.05, (double)config["lora_dropout"]!);
        Assert.Equal(["q_proj", "v_proj"], config["target_modules"]!.AsArray().Select(n => (string)n!));
        Assert.Equal(Path.GetFullPath(baseDir), (string?)config["base_model_name_or_path"]);
        Assert.False((bool)config["fan_in_fan_out"]!);

        using var ids = Ids(view);
        using var expected = view.forward(ids);
        var loaded = RunDirectory.LoadPolicyModel(outDir);                               // base + adapter, merged
        using var actual = loaded.forward(ids);
        AssertClose(expected, actual);
    }

    [Fact]
    public void Gpt2_Adapter_IsFanInFanOutOnCAttn_AndRewardModelHeadIsAModuleToSave()
    {
        var baseDir = TestSupport.HfModel("tiny-gpt2");
        var baseModel = Frozen(baseDir);
        var view = LoraModels.NewView(baseModel, Settings());
        var outDir = Path.Combine(TestSupport.TempDir(), "adapter");
        PeftAdapter.Save(outDir, view.Adapter!, baseDir);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, PeftAdapter.ConfigFile)))!;
        Assert.True((bool)config["fan_in_fan_out"]!);
        Assert.Equal(["c_attn"], config["target_modules"]!.AsArray().Select(n => (string)n!));
        var names = Safetensors.ReadHeader(Path.Combine(outDir, PeftAdapter.WeightsFile)).Select(e => e.Name).ToList();
        Assert.Contains("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", names);
        Assert.Contains("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight", names);

        var rm = new RewardModel(LoraModels.NewView(baseModel, Settings()), mlpHead: false);
        rm.SetOffset(0.25);
        var rmDir = Path.Combine(TestSupport.TempDir(), "rm");
        PeftAdapter.Save(rmDir, rm.Backbone.Adapter!, baseDir, rm.Head, rm.Offset);
        var rmConfig = JsonNode.Parse(File.ReadAllText(Path.Combine(rmDir, PeftAdapter.ConfigFile)))!;
        Assert.Equal("SEQ_CLS", (string?)rmConfig["task_type"]);
        Assert.Equal(["score"], rmConfig["modules_to_save"]!.AsArray().Select(n => (string)n!));
        var rmTensors = Safetensors.ReadHeader(Path.Combine(rmDir, PeftAdapter.WeightsFile)).ToDictionary(e => e.Name, e => e.Shape);
        Assert.Equal([1L, baseModel.Config.DModel], rmTensors["base_model.model.score.weight"]);
        Assert.Equal(0.25, LoraModels.LoadRewardModel(rmDir).Offset, 6);
    }

    [Fact]
    public void AdapterOnAnotherBase_IsRefusedNamingBoth()
    {
        var baseDir = TestSupport.HfModel("tiny-gpt2");
        var adapterDir = Path.Combine(TestSupport.TempDir(), "adapter");
        PeftAdapter.Save(adapterDir, LoraModels.NewView(Frozen(baseDir), Settings()).Adapter!, baseDir);
        var other = TestSupport.HfModel("tiny-gpt2");
        using (var m = Frozen(other))                                                  // the same architecture, other weights
        {
            using var _ = no_grad();
            m.Embeddings.add_(1);
            HfCheckpoint.Save(other, m.Format, m, null, new Dictionary<string, JsonNode?>());
        }
        var e = Assert.Throws<PpoSharpException>(() => PeftAdapter.UseBase(adapterDir, other));
        Assert.Contains("trained on another base", e.Message);
        Assert.Contains(other, e.Message);
        PeftAdapter.UseBase(adapterDir, TestSupport.HfModel("tiny-gpt2"));            // an identical copy elsewhere is the same base
    }

    [Fact]
    public void UnknownTarget_IsAClearError()
    {
        var e = Assert.Throws<PpoSharpException>(() => LoraModels.NewView(Frozen(TestSupport.HfModel("tiny-llama3")), Settings("qkv_proj")));
        Assert.Contains("'qkv_proj' names no linear layer of LlamaForCausalLM", e.Message);
        Assert.Contains("q_proj", e.Message);
    }

    [Fact]
    public void Ppo_WithLora_SharesOneFrozenBase_AndNeverComputesItsGradients()
    {
        var init = Path.Combine(TestSupport.FlawedSortModel, "model");
        var prompts = Jsonl.ReadPrompts(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PromptsFile)).Records;
        var config = new PpoConfig { Iterations = 1, BatchSize = 8, NumMiniBatches = 2, NumPpoEpochs = 1, ResponseLength = 6, LoraR = 4, LoraTargetModules = "all-linear" };
        using var trainer = PpoTrainer.FromRunDirectory(init, new EditDistance(), prompts, config, TextWriter.Null);
        var shared = trainer.Actor.Base!;
        Assert.Same(shared, trainer.Reference);                                        // the reference is the base, adapters off
        Assert.Same(shared, trainer.Critic!.Backbone!.Base);                           // the critic adapts the same base
        var adapterBefore = trainer.Actor.Adapter!.parameters().Select(p => p.detach().clone()).ToList();
        trainer.Iteration(0);

        var baseParams = shared.parameters().ToList();
        Assert.All(baseParams, p => Assert.False(p.requires_grad));
        Assert.All(baseParams, p => Assert.True(p.grad is null, "a frozen base weight has a gradient"));
        var optimized = trainer.OptimizedParameters.Select(p => p.Handle).ToHashSet();
        Assert.DoesNotContain(baseParams, p => optimized.Contains(p.Handle));
        var expected = trainer.Actor.parameters().Concat(trainer.Critic.parameters()).Select(p => p.Handle).ToHashSet();
        Assert.Equal(expected, optimized);                                             // the adapters and the value head, nothing else
        var adapter = trainer.Actor.Adapter!.parameters().ToList();
        Assert.Contains(Enumerable.Range(0, adapter.Count), i => !adapter[i].allclose(adapterBefore[i], 0, 0));   // the adapters stepped
        Assert.All(adapter, p => Assert.True(p.grad is null));                          // and their gradients were freed after it
    }

    private static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        return (PpoSharp.Cli.Cli.Run(args, stdout, stderr), stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void RewardModelAdapter_SharesThePolicyBase_InPpo_AndRunsExportAndEvalLikeAnyModel()
    {
        var sort = TestSupport.FlawedSortModel;
        string init = Path.Combine(sort, "model"), data = Path.Combine(sort, "data"), root = TestSupport.TempDir();
        string rm = Path.Combine(root, "rm"), ppo = Path.Combine(root, "ppo");
        var trained = Cli("rm", "--data", Path.Combine(data, TaskData.PreferencesFile), "--init", init, "--out", rm, "--set", "lora_r=4", "--set", "steps=30", "--set", "eval_every=30");
        Assert.True(trained.Code == 0, trained.Err);
        Assert.True(PeftAdapter.IsAdapter(rm) && PeftAdapter.ReadInfo(rm).ScalarHead);
        var rmEval = Cli("eval", "--model", rm, "--data", Path.Combine(data, TaskData.PreferencesFile));
        Assert.True(rmEval.Code == 0, rmEval.Err);
        Assert.Contains("\"accuracy\"", rmEval.Out);

        var run = Cli("ppo", "--data", Path.Combine(data, TaskData.PromptsFile), "--init", init, "--reward", $"model:{rm}", "--critic-init", rm, "--out", ppo,
            "--set", "lora_r=4", "--set", "iterations=1", "--set", "batch_size=8", "--set", "num_mini_batches=2", "--set", "response_length=6");
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains($"lora: reward model:{rm} is an adapter on the policy's base: one backbone for actor, critic, reference and reward model", run.Out);
        Assert.True(PeftAdapter.IsAdapter(ppo) && PeftAdapter.IsAdapter(Path.Combine(ppo, "critic")));

        var merged = Path.Combine(root, "merged");
        var export = Cli("export", "--model", ppo, "--merge", "--out", merged);
        Assert.True(export.Code == 0, export.Err);
        Assert.True(File.Exists(Path.Combine(merged, "config.json")) && !PeftAdapter.IsAdapter(merged));
        string prompts = Path.Combine(data, TaskData.PromptsFile);
        var (adapterCode, adapterOut, adapterErr) = Cli("eval", "--model", ppo, "--data", prompts, "--reward", "edit-distance");
        var (mergedCode, mergedOut, _) = Cli("eval", "--model", merged, "--data", prompts, "--reward", "edit-distance");
        Assert.True(adapterCode == 0 && mergedCode == 0, adapterErr);
        Assert.Equal(adapterOut, mergedOut);                                            // the same greedy answers
    }

    [Fact]
    public void Grpo_WithLora_TakesTheBaseAsReference_WhenBetaNeedsOne()
    {
        var sort = TestSupport.FlawedSortModel;
        var prompts = Jsonl.ReadPrompts(Path.Combine(sort, "data", TaskData.PromptsFile)).Records;
        using var trainer = PpoTrainer.FromRunDirectory(Path.Combine(sort, "model"), new EditDistance(), prompts, new GrpoConfig { Beta = 0.04, LoraR = 4 }, TextWriter.Null);
        Assert.NotNull(trainer.Actor.Base);
        Assert.Same(trainer.Actor.Base, trainer.Reference);
        Assert.Null(trainer.Critic);
    }

    [Fact]
    public void CriticInit_WithFullWeights_IsRefusedUnderLora()
    {
        var sort = TestSupport.FlawedSortModel;
        string init = Path.Combine(sort, "model"), data = Path.Combine(sort, "data"), rm = Path.Combine(TestSupport.TempDir(), "rm");
        Assert.Equal(0, Cli("rm", "--data", Path.Combine(data, TaskData.PreferencesFile), "--init", init, "--out", rm, "--set", "steps=2", "--set", "eval_every=2").Code);
        var out_ = Path.Combine(TestSupport.TempDir(), "ppo");
        var run = Cli("ppo", "--data", Path.Combine(data, TaskData.PromptsFile), "--init", init, "--reward", "edit-distance", "--critic-init", rm, "--out", out_, "--set", "lora_r=4");
        Assert.Equal(2, run.Code);
        Assert.Contains("with lora_r > 0 the critic is an adapter on the policy's base, but this reward model has full weights", run.Err);
        Assert.False(Directory.Exists(out_));
    }

    [Fact]
    public void Dpo_WithLora_UsesTheBaseAsReference_AndTrainsOnlyTheAdapter()
    {
        var sort = TestSupport.FlawedSortModel;
        string init = Path.Combine(sort, "model"), dir = Path.Combine(TestSupport.TempDir(), "dpo");
        var pairs = Jsonl.ReadPreferences(Path.Combine(sort, "data", TaskData.PreferencesFile)).Records.Take(64).ToList();
        var result = Demo.RunDpo(pairs, init, dir, new DpoConfig { Steps = 8, BatchSize = 8, EvalEvery = 8, LoraR = 4, Lr = 1e-3 }, TextWriter.Null);
        Assert.Equal(8, result.Steps);
        Assert.True(PeftAdapter.IsAdapter(dir));
        var rows = MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName));
        Assert.True(rows[^1]["rewards/margins"].GetDouble() > rows[0]["rewards/margins"].GetDouble(), "the chosen-rejected margin did not grow");
    }

    [Fact]
    public void Force_RemovesWhatAnOldRunLeft_SoThatTheNewRunIsNotReadAsTheOld()
    {
        var dir = TestSupport.TempDir();
        foreach (var file in new[] { PeftAdapter.ConfigFile, PeftAdapter.WeightsFile, EnsembleFile.FileName, RewardModelCard.FileName, "metrics.jsonl", "notes.txt" })
            File.WriteAllText(Path.Combine(dir, file), "{}");
        foreach (var folder in new[] { "best", "member-0", "checkpoints", "critic" }) Directory.CreateDirectory(Path.Combine(dir, folder));
        RunDirectory.PrepareOutput(dir, force: true);
        Assert.Equal(["notes.txt"], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName));   // a file of the user's stays
        Assert.False(PeftAdapter.IsAdapter(dir));
    }
}
