using PpoSharp.Models;
using PpoSharp.Models.Hf;

namespace PpoSharp.Training;

/// <summary>
/// The models of LoRA runs: one frozen base per model folder, shared by every role that adapts it (actor, critic,
/// reward model; the reference is the base itself), adapter views on it, and adapter folders loaded back.
/// </summary>
public static class LoraModels
{
    private static readonly Dictionary<(string, DateTime), WeakReference<Decoder>> Bases = [];

    /// <summary>
    /// The frozen base in <paramref name="dir"/> (a model folder, or an adapter folder merged into its base): one copy per
    /// folder in this process while anything holds it, with no gradient and no optimizer state.
    /// </summary>
    public static Decoder SharedBase(string dir)
    {
        var key = (Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar), Directory.GetFiles(dir, "*.safetensors").Select(File.GetLastWriteTimeUtc).DefaultIfEmpty().Max());
        lock (Bases)
        {
            if (Bases.TryGetValue(key, out var weak) && weak.TryGetTarget(out var live)) return live;
            var model = RunDirectory.LoadPolicyModel(dir);
            foreach (var p in model.parameters()) p.requires_grad = false;
            model.eval();
            Bases[key] = new WeakReference<Decoder>(model);
            return model;
        }
    }

    /// <summary>A new adapter (B = 0: the same outputs as the base until it trains) on <paramref name="baseModel"/>.</summary>
    public static Decoder NewView(Decoder baseModel, LoraSettings settings) => baseModel.WithAdapter(new LoraAdapter(baseModel, settings));

    /// <summary>One line on a LoRA view: rank, scale, targets, and trainable against total parameters.</summary>
    public static string Describe(Decoder view)
    {
        var a = view.Adapter!;
        long trainable = a.parameters().Sum(p => p.numel()), total = view.Base!.parameters().Sum(p => p.numel());
        return $"lora: r {a.Settings.R}, alpha {a.Settings.Alpha:G}, {a.Sites.Count} adapted layers ({string.Join(", ", a.Sites.Select(s => s.Name).Distinct())}); " +
            $"{trainable:N0} trainable parameters per adapter, {(double)trainable / total:P2} of the frozen base's {total:N0}";
    }

    /// <summary>A policy adapter folder merged into a fresh copy of its base.</summary>
    public static Decoder LoadMerged(string adapterDir)
    {
        var info = PeftAdapter.ReadInfo(adapterDir);
        if (info.ScalarHead) throw new PpoSharpException($"{adapterDir}: holds a reward model adapter (task_type SEQ_CLS), but a policy is needed here");
        var baseDir = BaseOf(adapterDir);
        var model = RunDirectory.LoadPolicyModel(baseDir);
        try
        {
            using var adapter = PeftAdapter.Load(adapterDir, model);
            adapter.MergeInto(model);
        }
        catch { model.Dispose(); throw; }
        model.Format = model.Format with { Directory = adapterDir };
        return model;
    }

    /// <summary>A reward model adapter on the shared base of its folder, with its head and offset.</summary>
    public static RewardModel LoadRewardModel(string adapterDir)
    {
        var info = PeftAdapter.ReadInfo(adapterDir);
        if (!info.ScalarHead) throw new PpoSharpException($"{adapterDir}: holds a policy adapter (task_type CAUSAL_LM), but a reward model is needed here (task_type SEQ_CLS)");
        var baseModel = SharedBase(BaseOf(adapterDir));
        var adapter = PeftAdapter.NewAdapter(adapterDir, baseModel, info);
        var model = new RewardModel(baseModel.WithAdapter(adapter), PeftAdapter.HasMlpHead(adapterDir));
        model.SetOffset(PeftAdapter.LoadInto(adapterDir, adapter, model.Head));
        model.eval();
        return model;
    }

    /// <summary>An adapter's base folder, checked to be the one it was trained on.</summary>
    private static string BaseOf(string adapterDir)
    {
        var baseDir = PeftAdapter.BaseDir(adapterDir);
        PeftAdapter.CheckBase(adapterDir, baseDir);
        return baseDir;
    }

    /// <summary>
    /// With LoRA on, a reward model that becomes the critic must be an adapter on the policy's own base (they share it);
    /// anything else is named in one line.
    /// </summary>
    public static void CheckSameBase(RewardModel rm, Decoder policyBase, string rmDir, string initDir)
    {
        if (rm.Backbone.Base is null)
            throw new PpoSharpException($"--critic-init {rmDir}: with lora_r > 0 the critic is an adapter on the policy's base, but this reward model has full weights (train it with lora_r > 0 from {initDir})");
        if (!ReferenceEquals(rm.Backbone.Base, policyBase))
            throw new PpoSharpException($"--critic-init {rmDir}: its adapter is on the base {PeftAdapter.BaseDir(rmDir)}, the policy's is {initDir}; with LoRA they must share one base");
    }
}

/// <summary><c>export</c>: an adapter run as a peft adapter folder, or merged into its base as a full Hugging Face folder.</summary>
public static class Export
{
    /// <summary>
    /// Writes <paramref name="outDir"/> from the adapter run <paramref name="runDir"/>: with <paramref name="merge"/> a full
    /// folder of the base's architecture and dtype (W + (alpha / r) B A; a reward model as *ForSequenceClassification),
    /// else the adapter folder itself (adapter_config.json, adapter_model.safetensors, tokenizer). Returns a summary line.
    /// </summary>
    public static string Run(string runDir, string outDir, bool merge, bool force)
    {
        if (!PeftAdapter.IsAdapter(runDir))
            throw new PpoSharpException($"{runDir}: holds full weights (no {PeftAdapter.ConfigFile}), which are already a Hugging Face folder; export takes a LoRA run");
        var baseDir = PeftAdapter.BaseDir(runDir);                                    // every input is read before anything is written
        OutputGuard.Check("--out", outDir, [("--model", runDir), ("base of the adapter", baseDir)]);
        RunDirectory.CheckOutput(outDir, force, resume: false);
        PeftAdapter.CheckBase(runDir, baseDir);
        var tokenizer = RunDirectory.LoadTokenizer(runDir);
        var training = File.Exists(Path.Combine(runDir, RunDirectory.TrainingFile))
            ? System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(runDir, RunDirectory.TrainingFile)))! : new System.Text.Json.Nodes.JsonObject();
        if (!merge)
        {
            PeftAdapter.ReadInfo(runDir);
            Directory.CreateDirectory(outDir);
            foreach (var f in Directory.GetFiles(runDir).Where(f => !IsRunLog(Path.GetFileName(f))))
                File.Copy(f, Path.Combine(outDir, Path.GetFileName(f)), overwrite: true);
            return $"export: adapter of {runDir} (base {baseDir}) -> {outDir}";
        }
        if (RunDirectory.IsScalarModel(runDir))
        {
            var rm = LoraModels.LoadRewardModel(runDir);
            var merged = RunDirectory.LoadPolicyModel(baseDir);
            rm.Backbone.Adapter!.MergeInto(merged);
            RunDirectory.SaveScalarModel(outDir, merged, rm.Head, rm.Offset, tokenizer, training);
        }
        else RunDirectory.SavePolicy(outDir, RunDirectory.LoadPolicyModel(runDir), tokenizer, training);
        return $"export: {runDir} merged into its base {baseDir} -> {outDir} (a full Hugging Face folder)";
    }

    /// <summary>
    /// Files of a run that record how it went rather than make up the model, left out of an exported adapter folder:
    /// metrics (<c>.jsonl</c>), TensorBoard events, job.json, summary.json, DPO's reference log-probs, the report and its plots.
    /// </summary>
    public static bool IsRunLog(string name) =>
        name.EndsWith(".jsonl", StringComparison.Ordinal) || name.EndsWith(".png", StringComparison.Ordinal) || name.EndsWith(".html", StringComparison.Ordinal)
        || name.StartsWith(MetricsWriter.EventsPattern.TrimEnd('*'), StringComparison.Ordinal)
        || name is RunJob.FileName or Reporting.Report.SummaryFile or DpoTrainer.ReferenceFile;
}
