using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace PpoSharp.Models.Hf;

/// <summary>What an adapter folder's <c>adapter_config.json</c> says.</summary>
/// <param name="Settings">r, lora_alpha, lora_dropout and target_modules.</param>
/// <param name="BaseName">peft's <c>base_model_name_or_path</c>.</param>
/// <param name="ScalarHead">task_type SEQ_CLS: a reward model or critic, whose <c>score</c> head is stored with the adapter.</param>
public sealed record AdapterInfo(LoraSettings Settings, string BaseName, bool ScalarHead);

/// <summary>
/// peft's LoRA adapter folder: <c>adapter_config.json</c> (peft_type LORA, task_type, r, lora_alpha, lora_dropout,
/// target_modules, base_model_name_or_path, fan_in_fan_out) and <c>adapter_model.safetensors</c> with peft's names,
/// <c>base_model.model.&lt;module path&gt;.lora_A.weight</c> (r, in) and <c>.lora_B.weight</c> (out, r); a reward
/// model's head is a module to save, <c>base_model.model.score.*</c>. The safetensors metadata also records the base's
/// SHA-256 (so that an adapter put on another base is refused) and a reward model's offset; peft ignores both.
/// </summary>
public static class PeftAdapter
{
    public const string ConfigFile = "adapter_config.json", WeightsFile = "adapter_model.safetensors";
    public const string BaseHashKey = "pposharp_base_sha256", OffsetKey = "pposharp_reward_offset";
    private const string Prefix = "base_model.model.";

    /// <summary>Bases given on the command line (<c>--base</c>) for adapter folders, by the adapter's full path.</summary>
    private static readonly ConcurrentDictionary<string, string> BaseOverrides = new();

    public static bool IsAdapter(string dir) => SafeFile.Present(Path.Combine(dir, ConfigFile));

    /// <summary>The longest chain of adapters on adapters that is followed (a longer one is refused as a probable loop).</summary>
    public const int MaxChain = 8;

    /// <summary>Uses <paramref name="baseDir"/> as the base of the adapter in <paramref name="adapterDir"/> (<c>--base</c>), after checking that it is the base the adapter was trained on.</summary>
    public static void UseBase(string adapterDir, string baseDir)
    {
        if (!IsAdapter(adapterDir)) throw new PpoSharpException($"--base: {adapterDir} is not an adapter folder (no {ConfigFile}); --base goes with an --init or --model that is one");
        if (!Directory.Exists(baseDir)) throw new PpoSharpException($"--base {baseDir}: model directory not found");
        if (!IsAdapter(baseDir)) HfCheckpoint.Read(baseDir);                       // a model folder, or its config names the problem
        CheckBase(adapterDir, baseDir);
        BaseOverrides[Path.GetFullPath(adapterDir)] = baseDir;
    }

    /// <summary>peft's config, checked: a LoRA of a supported kind (no DoRA, rsLoRA, per-layer ranks or biases).</summary>
    public static AdapterInfo ReadInfo(string dir)
    {
        var c = HfConfig.Read(dir, ConfigFile);
        var type = c.String("peft_type", "");
        if (type != "LORA") throw new PpoSharpException($"{c.Path}: peft_type '{type}' is not supported (only LORA)");
        var task = c.String("task_type", "CAUSAL_LM");
        if (task is not ("CAUSAL_LM" or "SEQ_CLS")) throw new PpoSharpException($"{c.Path}: task_type '{task}' is not supported (CAUSAL_LM, SEQ_CLS)");
        foreach (var flag in new[] { "use_dora", "use_rslora" })
            if (c.Bool(flag, false)) throw new PpoSharpException($"{c.Path}: {flag} true is not supported");
        foreach (var map in new[] { "rank_pattern", "alpha_pattern" })
            if (c.Object(map) is { Count: > 0 }) throw new PpoSharpException($"{c.Path}: a non-empty {map} is not supported (one rank and alpha for every layer)");
        if (c.Has("layers_to_transform")) throw new PpoSharpException($"{c.Path}: layers_to_transform is not supported (every layer is adapted)");
        if (c.String("bias", "none") != "none") throw new PpoSharpException($"{c.Path}: bias '{c.String("bias")}' is not supported (only none)");
        var targets = c.Json["target_modules"] switch
        {
            JsonArray a when a.All(n => n is JsonValue v && v.TryGetValue<string>(out _)) => string.Join(",", a.Select(n => n!.GetValue<string>())),
            JsonValue v when v.TryGetValue<string>(out var t) && t == LoraSettings.AllLinear => LoraSettings.AllLinear,
            _ => throw new PpoSharpException($"{c.Path}: target_modules must be a list of module names or \"all-linear\" (a regular expression is not supported)"),
        };
        try
        {
            var settings = new LoraSettings(c.Int("r"), c.Double("lora_alpha", 8), c.Double("lora_dropout", 0), targets).Validate();
            if (!settings.Enabled) throw new PpoSharpException("r must be > 0");
            return new AdapterInfo(settings, c.String("base_model_name_or_path", ""), task == "SEQ_CLS");
        }
        catch (PpoSharpException e) when (!e.Message.StartsWith(c.Path, StringComparison.Ordinal)) { throw new PpoSharpException($"{c.Path}: {e.Message}"); }
    }

    /// <summary>
    /// The base folder of an adapter: <c>--base</c>, else base_model_name_or_path as a folder holding a model or an adapter
    /// (as given, or beside the adapter). When the base is itself an adapter, the whole chain is followed here once and refused if it comes back to
    /// a folder already in it (an adapter naming itself, two naming each other) or is longer than <see cref="MaxChain"/>.
    /// </summary>
    public static string BaseDir(string adapterDir)
    {
        var baseDir = ImmediateBase(adapterDir);
        var chain = new List<string> { Identity(adapterDir) };
        for (var dir = baseDir; IsAdapter(dir); dir = ImmediateBase(dir))
        {
            bool loops = chain.Contains(Identity(dir));
            chain.Add(Identity(dir));
            if (loops || chain.Count > MaxChain)
                throw new PpoSharpException($"{Path.Combine(adapterDir, ConfigFile)}: base_model_name_or_path {(loops ? "loops" : $"chains more than {MaxChain} adapters")}: {string.Join(" -> ", chain)}");
        }
        return baseDir;
    }

    private static string Identity(string dir) => Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar);

    private static string ImmediateBase(string adapterDir)
    {
        if (BaseOverrides.TryGetValue(Path.GetFullPath(adapterDir), out var given)) return given;
        var info = ReadInfo(adapterDir);
        foreach (var candidate in new[] { info.BaseName, Path.Combine(adapterDir, info.BaseName) })
            if (info.BaseName.Length > 0 && Directory.Exists(candidate) && (SafeFile.Present(Path.Combine(candidate, "config.json")) || IsAdapter(candidate)))
                return candidate;
        throw new PpoSharpException($"{Path.Combine(adapterDir, ConfigFile)}: base_model_name_or_path '{info.BaseName}' is not a model folder here; pass --base DIR with the --init or --model adapter, or set base_model_name_or_path to the base's folder");
    }

    /// <summary>Refuses an adapter on a base other than the one it was trained on, when the adapter recorded its base's SHA-256.</summary>
    public static void CheckBase(string adapterDir, string baseDir)
    {
        var path = Path.Combine(adapterDir, WeightsFile);
        if (!SafeFile.Present(path) || !Safetensors.ReadMetadata(path).TryGetValue(BaseHashKey, out var expected)) return;
        var actual = Fingerprint(baseDir);
        if (actual != expected)
            throw new PpoSharpException($"{adapterDir}: this adapter was trained on another base (weights sha256 {expected[..12]}…); {baseDir} has {actual[..12]}…");
    }

    private static readonly ConcurrentDictionary<(string, DateTime), string> Fingerprints = new();

    /// <summary>
    /// SHA-256 of a model folder's weights (of every weight file, in name order); of an adapter folder, of its base's
    /// fingerprint and its own weights, so that a base made by merging an adapter has an identity too.
    /// </summary>
    public static string Fingerprint(string dir)
    {
        var files = IsAdapter(dir) ? [Path.Combine(dir, WeightsFile)]
            : Directory.GetFiles(dir, "*.safetensors").Order(StringComparer.Ordinal).ToArray();
        var key = (Path.GetFullPath(dir), files.Select(File.GetLastWriteTimeUtc).DefaultIfEmpty().Max());
        return Fingerprints.GetOrAdd(key, _ =>
        {
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            if (IsAdapter(dir)) sha.AppendData(Convert.FromHexString(Fingerprint(BaseDir(dir))));
            var buffer = new byte[1 << 20];
            foreach (var file in files)
            {
                using var f = SafeFile.Open(file);
                for (int n; (n = f.Read(buffer)) > 0;) sha.AppendData(buffer, 0, n);
            }
            return Convert.ToHexStringLower(sha.GetHashAndReset());
        });
    }

    /// <summary>Writes an adapter folder (and a reward model's <paramref name="head"/> and offset) for the base in <paramref name="baseDir"/>.</summary>
    public static void Save(string dir, LoraAdapter adapter, string baseDir, ScalarHead? head = null, double offset = 0)
    {
        Directory.CreateDirectory(dir);
        var s = adapter.Settings;
        var targets = s.TargetModules.Trim() == LoraSettings.AllLinear || s.TargetModules.Trim().Length == 0
            ? adapter.Sites.Select(x => x.Name).Distinct().Order(StringComparer.Ordinal).ToList()
            : s.TargetModules.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToList();
        var config = new JsonObject
        {
            ["peft_type"] = "LORA", ["task_type"] = head is null ? "CAUSAL_LM" : "SEQ_CLS",
            ["base_model_name_or_path"] = Path.GetFullPath(baseDir), ["revision"] = null, ["inference_mode"] = true,
            ["r"] = s.R, ["lora_alpha"] = s.Alpha, ["lora_dropout"] = s.Dropout,
            ["target_modules"] = new JsonArray([.. targets.Select(t => (JsonNode?)t)]),
            ["fan_in_fan_out"] = adapter.Sites.Any(x => x.FanInFanOut), ["bias"] = "none", ["init_lora_weights"] = true,
            ["use_rslora"] = false, ["use_dora"] = false, ["rank_pattern"] = new JsonObject(), ["alpha_pattern"] = new JsonObject(),
            ["modules_to_save"] = head is null ? null : new JsonArray("score"),
        };
        var metadata = new Dictionary<string, string> { [BaseHashKey] = Fingerprint(baseDir) };
        if (head is not null) metadata[OffsetKey] = offset.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        Safetensors.Save(Path.Combine(dir, WeightsFile), Tensors(adapter, head), metadata);
        AtomicFile.WriteText(Path.Combine(dir, ConfigFile), config.ToJsonString(Json.Options));
    }

    /// <summary>The adapter's (and head's) tensors under peft's names.</summary>
    public static IEnumerable<KeyValuePair<string, Tensor>> Tensors(LoraAdapter adapter, ScalarHead? head)
    {
        for (int i = 0; i < adapter.Sites.Count; i++)
        {
            yield return new($"{Prefix}{adapter.Sites[i].HfPath}.lora_A.weight", adapter.Site(i).A);
            yield return new($"{Prefix}{adapter.Sites[i].HfPath}.lora_B.weight", adapter.Site(i).B);
        }
        if (head is null) yield break;
        foreach (var (name, p) in head.named_parameters())
            yield return new(head.IsMlp ? $"{Prefix}score.{name}" : $"{Prefix}score.weight", p);
    }

    /// <summary>An adapter folder's LoRA, new on <paramref name="baseModel"/> and loaded (see <see cref="LoadInto"/>).</summary>
    public static LoraAdapter Load(string dir, Decoder baseModel)
    {
        var adapter = NewAdapter(dir, baseModel, ReadInfo(dir));
        try { LoadInto(dir, adapter, null); }
        catch { adapter.Dispose(); throw; }
        return adapter;
    }

    /// <summary>A new adapter of the folder's settings on <paramref name="baseModel"/>; a rank the base cannot take is named with the file.</summary>
    public static LoraAdapter NewAdapter(string dir, Decoder baseModel, AdapterInfo info)
    {
        try { return new LoraAdapter(baseModel, info.Settings); }
        catch (PpoSharpException e) { throw new PpoSharpException($"{Path.Combine(dir, ConfigFile)}: {e.Message}"); }
    }

    /// <summary>Whether a reward-model adapter's head is the MLP (<c>score.fc.*</c>) rather than the linear <c>score</c>.</summary>
    public static bool HasMlpHead(string dir) =>
        Safetensors.ReadHeader(Path.Combine(dir, WeightsFile)).Any(e => e.Name.StartsWith(Prefix + "score.fc.", StringComparison.Ordinal));

    /// <summary>
    /// Copies an adapter folder's weights into <paramref name="adapter"/> (and its head into <paramref name="head"/>), every
    /// tensor's name and shape checked, a missing or unexpected one named. Returns the reward offset (0 if none).
    /// </summary>
    public static double LoadInto(string dir, LoraAdapter adapter, ScalarHead? head)
    {
        var path = Path.Combine(dir, WeightsFile);
        if (!SafeFile.Present(path)) throw new PpoSharpException($"{path}: missing (an adapter folder needs its weights)");
        var stored = SafetensorsFolder.OpenFile(path);                                // header only: names and shapes first
        var targets = Tensors(adapter, head).ToList();
        foreach (var (name, _) in targets.Where(t => !stored.Names.Contains(t.Key)))
            throw new PpoSharpException($"{path}: tensor '{name}' is missing (the adapter does not match {ConfigFile} and the base)");
        var unexpected = stored.Names.Except(targets.Select(t => t.Key)).ToList();
        if (unexpected.Count > 0) throw new PpoSharpException($"{path}: unexpected tensor '{unexpected[0]}'{(unexpected.Count > 1 ? $" and {unexpected.Count - 1} more" : "")}");
        foreach (var (name, target) in targets)
        {
            var e = stored.Entry(name);
            if (!e.Shape.SequenceEqual(target.shape))
                throw new PpoSharpException($"{path}: tensor '{name}' has shape [{string.Join("x", e.Shape)}], the base implies [{string.Join("x", target.shape)}]");
            if (!Safetensors.IsFloat(e.Dtype)) throw new PpoSharpException($"{path}: tensor '{name}' is {e.Dtype}, a weight must be floating point");
        }
        using (no_grad())
            foreach (var (name, target) in targets)
            {
                using var source = stored.Read(name);
                if (!source.isfinite().all().item<bool>()) throw new PpoSharpException($"{path}: tensor '{name}' holds NaN or infinite values");
                target.copy_(source);
            }
        if (!Safetensors.ReadMetadata(path).TryGetValue(OffsetKey, out var o)) return 0;
        return double.TryParse(o, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var offset) && double.IsFinite(offset)
            ? offset : throw new PpoSharpException($"{path}: metadata {OffsetKey} '{o}' is not a number");
    }
}
