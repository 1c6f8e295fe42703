using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Models.Hf;
using PpoSharp.Rewards;
using PpoSharp.Text;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Benchmarks;

public static partial class Bench
{
    /// <summary>The LoRA settings the bench compares with full weights: rank 16 on every linear layer.</summary>
    public static readonly LoraSettings BenchLora = new(16, 32, 0, LoraSettings.AllLinear);

    /// <summary>
    /// One PPO iteration with a reward model at SmolLM2-135M's shape (random weights), with full weights and with LoRA,
    /// each in a process of its own (peak RSS is a process's): full weights hold four backbones (actor, reference, critic,
    /// reward model) and AdamW state for two; LoRA holds one frozen backbone with three adapters.
    /// </summary>
    private static void LoraFigures(Dictionary<string, object> r, int iterations, Func<string[], Process>? startSelf, TextWriter log)
    {
        if (startSelf is null) return;
        var dir = Path.Combine(Path.GetTempPath(), $"ppo-sharp-bench-{Environment.ProcessId}-lora");
        try
        {
            LoraSetup(dir);
            foreach (var mode in CpuHasBf16 ? new[] { "full", "lora", "lora_checkpointing", "bf16" } : ["full", "lora", "lora_checkpointing"])
            {
                using var child = startSelf(["bench", "--lora-case", mode, "--lora-dir", dir, "--lora-iterations", iterations.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
                child.StandardInput.Close();
                var stdout = child.StandardOutput.ReadToEnd();
                child.WaitForExit();
                var line = stdout.Split('\n').LastOrDefault(l => l.StartsWith('{'))
                    ?? throw new PpoSharpException($"bench: the {mode} PPO case failed ({child.ExitCode}): {child.StandardError.ReadToEnd().Trim()}");
                var figures = JsonNode.Parse(line)!;
                r[$"smollm2_ppo_{mode}_iteration_seconds"] = (double)figures["seconds"]!;
                r[$"smollm2_ppo_{mode}_peak_rss_mb"] = (double)figures["peak_rss_mb"]!;
                r[$"smollm2_ppo_{mode}_trainable_parameters"] = (long)figures["trainable"]!;
            }
            r["smollm2_ppo_iteration_seconds_bf16"] = r.GetValueOrDefault("smollm2_ppo_bf16_iteration_seconds")!;   // null without AVX512-BF16 or AMX
            r["smollm2_ppo_lora_rss_ratio"] = (double)r["smollm2_ppo_lora_peak_rss_mb"] / (double)r["smollm2_ppo_full_peak_rss_mb"];
            r["smollm2_ppo_lora_time_ratio"] = (double)r["smollm2_ppo_lora_iteration_seconds"] / (double)r["smollm2_ppo_full_iteration_seconds"];
            log.WriteLine($"bench: SmolLM2-135M shape, PPO iteration with a reward model (batch 8, 16 new tokens): full weights {r["smollm2_ppo_full_iteration_seconds"]:F1} s, "
                + $"peak RSS {r["smollm2_ppo_full_peak_rss_mb"]:F0} MB; LoRA r 16 all-linear {r["smollm2_ppo_lora_iteration_seconds"]:F1} s, peak RSS {r["smollm2_ppo_lora_peak_rss_mb"]:F0} MB "
                + $"({r["smollm2_ppo_lora_rss_ratio"]:P0} of full); LoRA with gradient_checkpointing {r["smollm2_ppo_lora_checkpointing_iteration_seconds"]:F1} s, "
                + $"peak RSS {r["smollm2_ppo_lora_checkpointing_peak_rss_mb"]:F0} MB");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>The case's folders: a SmolLM2-shape base (Llama layout, the sort task's tokenizer), a full reward model on it and a LoRA one.</summary>
    private static void LoraSetup(string dir)
    {
        TaskData.Write(new SortLettersTask(), Path.Combine(dir, "data"), 200, 10, 0, 1);
        var tokenizer = SftTrainer.NewTokenizer(TokenizerKind.Char, Jsonl.ReadChat(Path.Combine(dir, "data", TaskData.SftFile)).Records);
        manual_seed(0);
        var info = new HfModelInfo(new Llama(), false, new JsonObject { ["rope_theta"] = SmolLm2Shape.RopeTheta, ["max_position_embeddings"] = SmolLm2Shape.ContextLength }, ScalarType.Float32);
        using (var model = new Decoder(SmolLm2Shape, info)) RunDirectory.SavePolicy(Path.Combine(dir, "base"), model, tokenizer, new SftConfig());
        var baseModel = RunDirectory.LoadPolicyModel(Path.Combine(dir, "base"));
        RunDirectory.SaveScalarModel(Path.Combine(dir, "rm-full"), baseModel, new RewardModel(baseModel).Head, 0, tokenizer, new RmConfig());
        var rm = new RewardModel(LoraModels.NewView(baseModel, BenchLora));
        RunDirectory.SaveScalarModel(Path.Combine(dir, "rm-lora"), rm.Backbone, rm.Head, 0, tokenizer, new RmConfig());
        baseModel.Dispose();
    }

    /// <summary>
    /// <c>bench --lora-case full|lora|lora_checkpointing|bf16</c> (bf16: full weights with bf16=true; lora_checkpointing: LoRA with
    /// gradient_checkpointing=true): PPO against the case's reward model from the base in <paramref name="dir"/>;
    /// prints one JSON line: median iteration seconds (after the first), peak RSS, trainable parameters.
    /// </summary>
    public static void RunLoraCase(string mode, string dir, int iterations, TextWriter log)
    {
        bool lora = mode.StartsWith("lora", StringComparison.Ordinal);
        var prompts = Jsonl.ReadPrompts(Path.Combine(dir, "data", TaskData.PromptsFile)).Records;
        var reward = RewardModelScorer.Load(Path.Combine(dir, lora ? "rm-lora" : "rm-full"));
        var config = new PpoConfig
        {
            Iterations = iterations, BatchSize = 8, NumMiniBatches = 2, NumPpoEpochs = 1, ResponseLength = 16, CheckpointEvery = 1000,
            LoraR = lora ? BenchLora.R : 0, LoraAlpha = BenchLora.Alpha, LoraTargetModules = BenchLora.TargetModules, Bf16 = mode == "bf16",
            GradientCheckpointing = mode == "lora_checkpointing",
        };
        var outDir = Path.Combine(dir, $"run-{mode}");
        using var trainer = PpoTrainer.FromRunDirectory(Path.Combine(dir, "base"), reward, prompts, config, TextWriter.Null);
        long trainable = trainer.OptimizedParameters.Sum(p => p.numel());
        trainer.Train(outDir);
        var rows = MetricsWriter.Read(Path.Combine(outDir, MetricsWriter.FileName));
        using var self = Process.GetCurrentProcess();
        log.WriteLine(JsonSerializer.Serialize(new { seconds = IterationSeconds(rows), peak_rss_mb = self.PeakWorkingSet64 / 1048576.0, trainable }));
    }
}
