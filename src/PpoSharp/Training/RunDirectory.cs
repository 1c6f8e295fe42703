using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Nodes;
using PpoSharp.Models;
using PpoSharp.Models.Hf;
using PpoSharp.Text;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>
/// A model directory, which is a Hugging Face model folder: <c>config.json</c> and safetensors weights of a supported
/// architecture (the built-in model is GPT-2's), the tokenizer files and <c>generation_config.json</c>; a PpoSharp run
/// adds <c>training_config.json</c> and <c>metrics.jsonl</c>. Policies are *ForCausalLM / GPT2LMHeadModel folders, reward
/// models and critics *ForSequenceClassification ones. Checkpoints keep the module's own names (see <see cref="LoadWeights"/>).
/// </summary>
public static class RunDirectory
{
    public const string ConfigFile = "config.json", ModelFile = "model.safetensors", TrainingFile = "training_config.json";
    public const string GenerationFile = "generation_config.json", CriticFolder = "critic";
    /// <summary>A config.json key that only PpoSharp reads (transformers keeps unknown keys as attributes and ignores them).</summary>
    public const string OffsetKey = "pposharp_reward_offset";

    /// <summary>
    /// Creates <paramref name="dir"/>; refuses a non-empty one unless <paramref name="force"/> (start over: old metrics and
    /// checkpoints are removed) or <paramref name="resume"/> (continue it, only if <paramref name="job"/> is the one recorded
    /// there), so no run is overwritten by mistake; a new run records its <paramref name="job"/>.
    /// </summary>
    public static void PrepareOutput(string dir, bool force, bool resume = false, RunJob? job = null)
    {
        CheckOutput(dir, force, resume);
        if (resume)
        {
            job?.CheckResume(dir);
            return;
        }
        Directory.CreateDirectory(dir);
        if (force) RemoveGenerated(dir);
        job?.Write(dir);
    }

    /// <summary>
    /// What a run writes that later loads read, removed by <c>--force</c> so that nothing of the old run is taken for the
    /// new one (an old adapter_config.json would make the folder load as the old adapter).
    /// </summary>
    private static readonly string[] GeneratedFiles =
    [
        MetricsWriter.FileName, ConfigFile, ModelFile, Models.Hf.Safetensors.IndexFile, PeftAdapter.ConfigFile, PeftAdapter.WeightsFile,
        Rewards.EnsembleFile.FileName, RewardModelCard.FileName, RunJob.FileName,
    ];

    private static readonly string[] GeneratedFolders =
        [Checkpoints.Folder, CriticFolder, BestPolicy.Folder, BestPolicy.Folder + ".tmp", BestPolicy.Folder + ".old"];

    /// <summary>
    /// Runs <paramref name="train"/>, a fresh start of a run in <paramref name="dir"/> (not a resume), so that a failure
    /// before its first checkpoint leaves nothing that a later command reads or that makes it refuse <paramref name="dir"/>
    /// as not empty: a folder that was missing or empty before is emptied again (removed if it was missing), one that held
    /// other files loses what the run wrote (job.json, metrics, events, model files). A run stopped with a checkpoint
    /// (<see cref="TrainingStoppedException"/>), and any run with a checkpoint, is kept for --resume.
    /// </summary>
    public static T CleanUpFailedStart<T>(string dir, bool resume, Func<T> train)
    {
        bool existed = Directory.Exists(dir);
        bool wasEmpty = !existed || !Directory.EnumerateFileSystemEntries(dir).Any();
        try { return train(); }
        catch (Exception e) when (e is not TrainingStoppedException && !resume && Directory.Exists(dir) && Checkpoints.NewestStep(dir) is null)
        {
            if (!wasEmpty) RemoveGenerated(dir);
            else if (existed) foreach (var entry in new DirectoryInfo(dir).EnumerateFileSystemInfos()) Delete(entry);
            else Directory.Delete(dir, recursive: true);
            throw;
        }
    }

    private static void Delete(FileSystemInfo entry)
    {
        if (entry is DirectoryInfo d && d.LinkTarget is null) d.Delete(recursive: true);
        else entry.Delete();
    }

    /// <summary>Removes what a run writes (<see cref="GeneratedFiles"/>, folders, TensorBoard events) and nothing else.</summary>
    private static void RemoveGenerated(string dir)
    {
        foreach (var file in GeneratedFiles.Select(f => Path.Combine(dir, f)).Concat(Directory.GetFiles(dir, "model-*-of-*.safetensors"))
                     .Concat(Directory.GetFiles(dir, MetricsWriter.EventsPattern)).Where(File.Exists))
            File.Delete(file);
        foreach (var folder in GeneratedFolders.Select(f => Path.Combine(dir, f)).Concat(Directory.GetDirectories(dir, "member-*")).Where(Directory.Exists))
            Directory.Delete(folder, recursive: true);
    }

    /// <summary>The checks of <see cref="PrepareOutput"/> alone, writing nothing (commands run them before any work).</summary>
    public static void CheckOutput(string dir, bool force, bool resume)
    {
        if (resume && !Directory.Exists(dir)) throw new PpoSharpException($"{dir}: nothing to resume (directory not found)");
        if (!resume && !force && Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
            throw new PpoSharpException($"{dir}: output directory is not empty (use --resume to continue it, --force to start over, or another --out)");
    }

    /// <summary>Saves a policy as a Hugging Face folder of its architecture, with its tokenizer and the training settings.</summary>
    public static void SavePolicy(string dir, Decoder model, ITokenizer tokenizer, object training)
    {
        if (model.Adapter is { } adapter) PeftAdapter.Save(dir, adapter, BaseDir(model));
        else HfCheckpoint.Save(dir, model.Format, model, null, TokenIds(model, tokenizer));
        SaveText(dir, model, tokenizer, training);
    }

    /// <summary>
    /// Saves a backbone with a scalar head (reward model or critic): a *ForSequenceClassification folder with
    /// <c>score.weight</c> (1, hidden) for a linear head; the method's MLP head as <c>score.fc.*</c> / <c>score.out_proj.*</c>
    /// under the architecture name *WithMlpScoreHead, which only PpoSharp reads. A reward model's offset is a config key.
    /// </summary>
    public static void SaveScalarModel(string dir, Decoder backbone, ScalarHead head, double offset, ITokenizer tokenizer, object training)
    {
        var extra = TokenIds(backbone, tokenizer);
        int pad = ScorePadId(tokenizer);
        (extra[OffsetKey], extra["pad_token_id"]) = (offset, pad);
        if (backbone.Adapter is { } adapter) PeftAdapter.Save(dir, adapter, BaseDir(backbone), head, offset);
        else HfCheckpoint.Save(dir, backbone.Format, backbone, head, extra);
        SaveText(dir, backbone, tokenizer, training);
        WritePadToken(dir, tokenizer, pad);
    }

    /// <summary>
    /// The pad id written with a reward model or critic. transformers' *ForSequenceClassification reads the score at the
    /// last token that is not <c>pad_token_id</c>, PpoSharp at the last real token; where the pad id is an EOS id (Llama 3,
    /// Mistral: no pad token of their own) these differ for every sequence that ends with EOS. So a special token that is
    /// neither EOS nor BOS (one named like a pad first) is taken instead, and saved as the tokenizer's pad_token too.
    /// </summary>
    private static int ScorePadId(ITokenizer tokenizer)
    {
        if (!tokenizer.Special.IsEos(tokenizer.Special.Pad) || tokenizer is not HfTokenizer hf) return tokenizer.Special.Pad;
        return hf.SpecialTokens.Where(p => !tokenizer.Special.IsEos(p.Key) && p.Key != hf.Bos)
            .OrderByDescending(p => p.Value.Contains("pad", StringComparison.OrdinalIgnoreCase)).ThenBy(p => p.Key)
            .Select(p => p.Key).DefaultIfEmpty(tokenizer.Special.Pad).First();
    }

    /// <summary>Sets <c>pad_token</c> in a saved tokenizer_config.json that has none, so that the tokenizer and the config agree.</summary>
    private static void WritePadToken(string dir, ITokenizer tokenizer, int pad)
    {
        var path = Path.Combine(dir, "tokenizer_config.json");
        if (tokenizer is not HfTokenizer hf || !File.Exists(path) || JsonNode.Parse(File.ReadAllText(path)) is not JsonObject config || config["pad_token"] is not null) return;
        config["pad_token"] = hf.SpecialTokens.GetValueOrDefault(pad, hf.Decode([pad], skipSpecial: false));
        AtomicFile.WriteText(path, config.ToJsonString(Json.Options));
    }

    /// <summary>
    /// eos_token_id, pad_token_id and bos_token_id where the config has none (built-in models; a base without a pad id); a
    /// base model's own stay as they are. A built-in model has no BOS: like GPT-2's, it is the end token.
    /// </summary>
    private static Dictionary<string, JsonNode?> TokenIds(Decoder model, ITokenizer tokenizer)
    {
        var ids = new Dictionary<string, JsonNode?>();
        var config = model.Format.Config;
        if (config["eos_token_id"] is null) ids["eos_token_id"] = EosJson(tokenizer);
        if (config["pad_token_id"] is null) ids["pad_token_id"] = tokenizer.Special.Pad;
        if (config["bos_token_id"] is null) ids["bos_token_id"] = tokenizer is HfTokenizer { Bos: int bos } ? bos : tokenizer.Special.Eos[0];
        return ids;
    }

    /// <summary>The EOS id, or the list of them, as config files write it.</summary>
    private static JsonNode EosJson(ITokenizer tokenizer) =>
        tokenizer.Special.Eos.Count == 1 ? tokenizer.Special.Eos[0] : new JsonArray([.. tokenizer.Special.Eos.Select(e => (JsonNode)e)]);

    private static void SaveText(string dir, Decoder model, ITokenizer tokenizer, object training)
    {
        tokenizer.Save(dir);
        var source = model.Format.Directory is string d ? Path.Combine(d, GenerationFile) : null;
        if (source is not null && File.Exists(source)) { if (Path.GetFullPath(source) != Path.GetFullPath(Path.Combine(dir, GenerationFile))) File.Copy(source, Path.Combine(dir, GenerationFile), overwrite: true); }
        else AtomicFile.WriteText(Path.Combine(dir, GenerationFile), new JsonObject
        {
            ["eos_token_id"] = EosJson(tokenizer), ["pad_token_id"] = tokenizer.Special.Pad,
        }.ToJsonString(Json.Options));
        AtomicFile.WriteText(Path.Combine(dir, TrainingFile), JsonSerializer.Serialize(training, training.GetType(), Json.Options));
    }

    /// <summary>The folder a LoRA view's base was loaded from: what its adapter records as base_model_name_or_path.</summary>
    internal static string BaseDir(Decoder view) => view.Base!.Format.Directory
        ?? throw new PpoSharpException("a LoRA adapter is saved for a base loaded from a folder; this base was built in memory");

    /// <summary>Writes a module's parameters to a safetensors file, atomically.</summary>
    public static void SaveModule(string path, nn.Module module) => AtomicFile.Write(path, tmp => module.save_safetensors(tmp));

    /// <summary>A config's chat_template_kwargs as the tokenizer takes them.</summary>
    public static IReadOnlyDictionary<string, object?> ChatKwargs(Dictionary<string, JsonElement> kwargs) =>
        kwargs.ToDictionary(p => p.Key, p => (object?)p.Value);

    /// <summary>Whether a model directory holds a backbone with a scalar head (a reward model or critic) rather than a policy.</summary>
    public static bool IsScalarModel(string dir) => CheckpointRun(dir) is string run ? IsScalarModel(run) : PeftAdapter.IsAdapter(dir) ? PeftAdapter.ReadInfo(dir).ScalarHead : HfCheckpoint.Read(dir).Info.ScalarHead;

    /// <summary>The architecture and spec of a model folder; for an adapter folder, its base's; for a training checkpoint, its run's.</summary>
    public static (HfModelInfo Info, DecoderSpec Spec) ReadModel(string dir) =>
        CheckpointRun(dir) is string run ? ReadModel(run) : PeftAdapter.IsAdapter(dir) ? ReadModel(PeftAdapter.BaseDir(dir)) : HfCheckpoint.Read(dir);

    /// <summary>
    /// The run folder of a training checkpoint (<c>RUN/checkpoints/step-N</c>, as HF's <c>checkpoint-N</c>) whose run holds
    /// its final model: the checkpoint then loads as a model folder, the run's config and tokenizer with the checkpoint's
    /// weights (saved under the module's own names). Null for any other folder.
    /// </summary>
    public static string? CheckpointRun(string dir)
    {
        var full = new DirectoryInfo(Path.GetFullPath(dir));
        if (full.Parent is not { Name: Checkpoints.Folder } root || root.Parent is not { } run || !full.Name.StartsWith("step-", StringComparison.Ordinal)) return null;
        bool weights = File.Exists(Path.Combine(full.FullName, ModelFile)) && !File.Exists(Path.Combine(full.FullName, ConfigFile));
        return weights && File.Exists(Path.Combine(run.FullName, ConfigFile)) && File.Exists(Path.Combine(run.FullName, Tokenizers.FileName)) ? run.FullName : null;
    }

    /// <summary>The model of <paramref name="run"/> with the weights of its checkpoint <paramref name="dir"/>; a mismatch (a LoRA run's checkpoint) names both folders.</summary>
    private static T FromCheckpoint<T>(string dir, string run, Func<string, T> load, Func<T, nn.Module> module) where T : IDisposable
    {
        var model = load(run);
        try { LoadWeights(module(model), Path.Combine(dir, ModelFile)); }
        catch (PpoSharpException e)
        {
            model.Dispose();
            throw new PpoSharpException($"{dir}: a checkpoint of {run} whose weights do not fit the run's final model ({e.Message}); a LoRA run's checkpoints hold base and adapter together: load the run folder");
        }
        return model;
    }

    /// <summary>
    /// Loads a policy (decoder + LM head) and its tokenizer from a PpoSharp run, a Hugging Face folder or a LoRA adapter
    /// folder: the validated loader. Every file is checked before it is read (a regular file, readable, within its size
    /// cap), config.json's sizes are bounded, the weights' headers are checked against it and the memory available before
    /// the model is allocated, tensors are read one at a time and refused if not finite, and token ids are checked against
    /// the vocabulary. It returns a fully loaded model, or throws a one-line <see cref="PpoSharpException"/> naming the file
    /// and keeps nothing (so that a server can go on serving the weights it has).
    /// </summary>
    public static (Decoder Model, ITokenizer Tokenizer) LoadPolicy(string dir, IReadOnlyDictionary<string, object?>? chatKwargs = null)
    {
        var tokenizer = LoadTokenizer(dir, ReadModel(dir).Spec, chatKwargs);
        try { return (LoadPolicyModel(dir), tokenizer); }
        catch
        {
            (tokenizer as IDisposable)?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads a policy's decoder alone (a second copy for the reference or the critic: no tokenizer is loaded). An adapter
    /// folder is loaded onto its base and merged into it: a full model whose <see cref="Decoder.Format"/> names the adapter folder.
    /// </summary>
    public static Decoder LoadPolicyModel(string dir)
    {
        if (CheckpointRun(dir) is string run) return FromCheckpoint(dir, run, LoadPolicyModel, m => m);
        if (PeftAdapter.IsAdapter(dir)) return LoraModels.LoadMerged(dir);
        var (info, spec) = HfCheckpoint.Read(dir);
        if (info.ScalarHead) throw new PpoSharpException($"{dir}: holds a reward model, but a policy is needed here (its architecture is {info.Arch.SequenceClassification})");
        var weights = HfCheckpoint.CheckWeights(dir, info, spec);                      // every header checked before allocating
        var model = new Decoder(spec, info);
        try { weights.Into(model); }
        catch { model.Dispose(); throw; }
        return model;
    }

    /// <summary>Loads a reward model (backbone + scalar head + offset) and its tokenizer.</summary>
    public static (RewardModel Model, ITokenizer Tokenizer) LoadRewardModel(string dir, IReadOnlyDictionary<string, object?>? chatKwargs = null)
    {
        if (CheckpointRun(dir) is string run)
        {
            var runTokenizer = LoadTokenizer(run, chatKwargs);
            return (FromCheckpoint(dir, run, r => LoadRewardModel(r, chatKwargs).Model, m => m), runTokenizer);
        }
        if (PeftAdapter.IsAdapter(dir)) return (LoraModels.LoadRewardModel(dir), LoadTokenizer(dir, ReadModel(dir).Spec, chatKwargs));
        var (info, spec) = HfCheckpoint.Read(dir);
        if (!info.ScalarHead) throw new PpoSharpException($"{dir}: holds a policy, but a reward model is needed here (its architecture is {info.Arch.CausalLm}; reward models are *ForSequenceClassification)");
        var tokenizer = LoadTokenizer(dir, spec, chatKwargs);
        var weights = HfCheckpoint.CheckWeights(dir, info, spec);                      // every header checked before allocating
        var model = new RewardModel(new Decoder(spec, info with { ScalarHead = false, MlpHead = false }), mlpHead: info.MlpHead);
        try { weights.Into(model.Backbone, model.Head); }
        catch { model.Dispose(); throw; }
        model.SetOffset(new HfConfig(info.Config, Path.Combine(dir, ConfigFile)).Double(OffsetKey, 0));
        model.eval();
        return (model, tokenizer);
    }

    /// <summary>The tokenizer of a model directory (checked against its config.json), without loading the weights.</summary>
    public static ITokenizer LoadTokenizer(string dir, IReadOnlyDictionary<string, object?>? chatKwargs = null) =>
        LoadTokenizer(dir, ReadModel(dir).Spec, chatKwargs);

    /// <summary>A folder's tokenizer; an adapter folder saved without one (peft's default) uses its base's.</summary>
    private static ITokenizer LoadTokenizer(string dir, DecoderSpec spec, IReadOnlyDictionary<string, object?>? chatKwargs)
    {
        if (CheckpointRun(dir) is string run) return LoadTokenizer(run, spec, chatKwargs);
        if (PeftAdapter.IsAdapter(dir) && !File.Exists(Path.Combine(dir, Tokenizers.FileName))) return LoadTokenizer(PeftAdapter.BaseDir(dir), spec, chatKwargs);
        var tokenizer = Tokenizers.Load(dir, chatKwargs);
        if (tokenizer.VocabSize > spec.VocabSize)
            throw new PpoSharpException($"{Path.Combine(dir, ConfigFile)}: vocab_size {spec.VocabSize} is smaller than the tokenizer's {tokenizer.VocabSize} ids");
        return tokenizer;
    }

    /// <summary>Copies safetensors weights into <paramref name="model"/> after checking names, dtypes and shapes.</summary>
    public static void LoadWeights(nn.Module model, string path)
    {
        var loaded = ReadSafetensors(path);
        try
        {
            var expected = model.state_dict();
            foreach (var key in expected.Keys.Except(loaded.Keys))
                throw new PpoSharpException($"{path}: tensor '{key}' is missing");
            foreach (var key in loaded.Keys.Except(expected.Keys))
                throw new PpoSharpException($"{path}: unexpected tensor '{key}' (the file does not belong to this model's config)");
            using var _ = no_grad();
            foreach (var (key, target) in expected)
            {
                var source = loaded[key];
                if (source.dtype != target.dtype || !source.shape.SequenceEqual(target.shape))
                    throw new PpoSharpException($"{path}: tensor '{key}' is {source.dtype} [{string.Join(",", source.shape)}], the config expects {target.dtype} [{string.Join(",", target.shape)}]");
                target.copy_(source);
            }
        }
        finally
        {
            foreach (var t in loaded.Values) t.Dispose();
        }
    }

    private static Dictionary<string, Tensor> ReadSafetensors(string path)
    {
        if (!File.Exists(path)) throw new PpoSharpException($"{path}: model file not found");
        return Models.Hf.Safetensors.Load(path);
    }
}
