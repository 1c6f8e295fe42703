using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PpoSharp.Training;

/// <summary>
/// Builds an immutable config from its defaults, an optional JSON file (<c>--config</c>) and <c>--set key=value</c>
/// overrides, in that order. Unknown keys, wrong types and bad enum values are errors that name the key, where it came
/// from and what is allowed; the record's own <c>Validate()</c> then checks ranges and combinations.
/// </summary>
public static class ConfigLoader
{
    public static T Load<T>(T defaults, string? file, IEnumerable<string> sets, Func<T, T> validate) where T : class
    {
        var node = JsonSerializer.SerializeToNode(defaults, Json.Options)!.AsObject();
        var origin = new Dictionary<string, string>();
        var maps = FreeFormMaps(node);
        void Apply(JsonObject source, string from) => Merge(node, source, from, origin, maps);
        if (file != null) Apply(ReadFile(file), file);
        foreach (var s in sets)
        {
            int eq = s.IndexOf('=');
            if (eq <= 0) throw new PpoSharpException($"--set '{s}': expected key=value");
            var (key, text) = (s[..eq].Trim(), s[(eq + 1)..]);
            Apply(new JsonObject { [key] = ParseValue(text) }, $"--set {s}");
        }
        if (origin.ContainsKey("steps") && origin.ContainsKey("num_train_epochs"))
            throw new PpoSharpException($"{origin["num_train_epochs"]}: num_train_epochs sets the number of steps, and {origin["steps"]} sets it too: give one of them");
        T config;
        try { config = node.Deserialize<T>(Json.Options)!; }
        catch (JsonException e)
        {
            var key = e.Path?.TrimStart('$', '.') ?? "?";
            var from = origin.GetValueOrDefault(key, "config");
            if (OutOfRange(typeof(T), key, node) is string range) throw new PpoSharpException($"{from}: {range}");
            throw new PpoSharpException($"{from}: '{key}' expects {Expected(typeof(T), key)}");
        }
        return validate(config);
    }

    private static JsonObject ReadFile(string file)
    {
        if (!File.Exists(file)) throw new PpoSharpException($"{file}: config file not found");
        if (Path.GetExtension(file).ToLowerInvariant() is ".yaml" or ".yml") return YamlConfig.Read(file);
        try
        {
            return JsonNode.Parse(File.ReadAllText(file)) as JsonObject
                ?? throw new PpoSharpException($"{file}: a config file must hold one JSON object");
        }
        catch (JsonException e) { throw new PpoSharpException($"{file}: invalid JSON ({e.Message.Split(". ")[0]})"); }
    }

    /// <summary>Sections whose default is an empty object: free-form maps (such as chat_template_kwargs) that take any key.</summary>
    private static HashSet<string> FreeFormMaps(JsonObject node, string prefix = "")
    {
        var maps = new HashSet<string>();
        foreach (var (key, value) in node)
            if (value is JsonObject o)
            {
                if (o.Count == 0) maps.Add(prefix + key);
                else maps.UnionWith(FreeFormMaps(o, $"{prefix}{key}."));
            }
        return maps;
    }

    /// <summary>Copies keys of <paramref name="source"/> into <paramref name="target"/>; nested objects merge key by key,
    /// and a dotted key (<c>ppo.lr</c>) addresses a nested section.</summary>
    private static void Merge(JsonObject target, JsonObject source, string from, Dictionary<string, string> origin, HashSet<string> maps, string prefix = "")
    {
        foreach (var (rawKey, value) in source)
        {
            int dot = rawKey.IndexOf('.');
            var key = dot > 0 ? rawKey[..dot] : rawKey;
            if (maps.Contains(prefix.TrimEnd('.')) && prefix.Length > 0)
            {
                target[rawKey] = value?.DeepClone();                      // a free-form map takes any key as it is
                origin[prefix + rawKey] = from;
                continue;
            }
            if (!target.ContainsKey(key) && Alias(target, key) is string own)
            {
                Merge(target, new JsonObject { [dot > 0 ? own + rawKey[dot..] : own] = value?.DeepClone() }, from, origin, maps, prefix);
                continue;
            }
            if (!target.ContainsKey(key)) throw new PpoSharpException(Unknown(target, key, from, prefix));
            if (dot > 0 && target[key] is JsonObject section)
                Merge(section, new JsonObject { [rawKey[(dot + 1)..]] = value?.DeepClone() }, from, origin, maps, $"{prefix}{key}.");
            else if (value is JsonObject nested && target[key] is JsonObject existing)
                Merge(existing, nested, from, origin, maps, $"{prefix}{key}.");
            else
            {
                target[key] = value?.DeepClone();
                origin[prefix + key] = from;
            }
        }
    }

    /// <summary>
    /// TRL's names (transformers' TrainingArguments, SFTConfig, DPOConfig, RewardConfig) for keys PpoSharp spells its own way:
    /// the same setting with the same meaning, accepted in --config files and --set. The batch and step names apply to the
    /// step-based trainers (sft, rm, dpo) only: in TRL's GRPO and PPO they count completions and optimizer steps, while
    /// batch_size and iterations here count prompts and rollout rounds.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> Aliases = new Dictionary<string, string>
    {
        ["learning_rate"] = "lr", ["max_steps"] = "steps", ["per_device_train_batch_size"] = "batch_size",
        ["save_steps"] = "checkpoint_every", ["save_total_limit"] = "keep_checkpoints", ["eval_steps"] = "eval_every",
    };

    /// <summary>TRL keys of features PpoSharp does not have, with what to do instead: refused rather than silently ignored.</summary>
    private static readonly Dictionary<string, string> Unsupported = new()
    {
        ["gradient_accumulation_steps"] = "here (ppo, grpo) each rollout round of batch_size prompts makes num_mini_batches optimizer steps per epoch; lower num_mini_batches for larger steps (sft, rm and dpo take gradient_accumulation_steps)",
        ["num_train_epochs"] = "here (ppo, grpo) iterations counts rollout rounds of batch_size prompts: one pass over P prompts is P / batch_size iterations (sft, rm and dpo take num_train_epochs)",
        ["logging_steps"] = "every step is logged to metrics.jsonl and TensorBoard",
        ["lr_scheduler_type"] = "the schedule is linear warm-up then cosine decay to min_lr_ratio x lr (TRL's \"cosine_with_min_lr\")",
        ["per_device_eval_batch_size"] = "held-out batches are fixed in size",
    };

    /// <summary>Whether the config file or a --set gives <paramref name="key"/> (top level, under its own name or a TRL alias).</summary>
    public static bool Gives(string? file, IEnumerable<string> sets, string key)
    {
        var names = Aliases.Where(a => a.Value == key).Select(a => a.Key).Append(key).ToHashSet();
        return sets.Any(s => names.Contains(s.Split('=')[0].Trim())) || file is not null && ReadFile(file).Any(p => names.Contains(p.Key));
    }

    /// <summary>The key that a TRL alias stands for, where this config has it.</summary>
    private static string? Alias(JsonObject target, string key) =>
        Aliases.TryGetValue(key, out var own) && target.ContainsKey(own) && !(target.ContainsKey("iterations") && key is "max_steps" or "per_device_train_batch_size") ? own : null;

    /// <summary>The message for an unknown key: what TRL's key means here, or the closest names ("did you mean"), then the allowed keys.</summary>
    private static string Unknown(JsonObject target, string key, string from, string prefix)
    {
        var allowed = string.Join(", ", target.Select(kv => prefix + kv.Key));
        if (Unsupported.TryGetValue(key, out var instead)) return $"{from}: TRL's '{key}' is not supported: {instead}";
        if (key is "max_steps" or "per_device_train_batch_size" && target.ContainsKey("iterations"))
            return $"{from}: unknown key '{prefix}{key}': TRL counts {(key == "max_steps" ? "optimizer steps" : "completions")} with it; here iterations counts rollout rounds and batch_size prompts per round";
        var names = target.Select(kv => kv.Key).Concat(Aliases.Keys.Where(a => Alias(target, a) is not null)).ToList();
        var close = names.Select(n => (Name: n, Distance: Rewards.EditDistance.Levenshtein([.. key], [.. n])))
            .Where(p => p.Distance <= Math.Max(2, key.Length / 3) || p.Name.Contains(key, StringComparison.Ordinal) && key.Length >= 3)
            .OrderBy(p => p.Distance).Take(3).Select(p => $"'{prefix}{p.Name}'").ToList();
        var hint = close.Count > 0 ? $" (did you mean {string.Join(" or ", close)}?)" : "";
        return $"{from}: unknown key '{prefix}{key}'{hint}; allowed: {allowed}";
    }

    /// <summary>A --set value: JSON when it parses (numbers, true/false, quoted strings), else the raw text as a string.</summary>
    private static JsonNode? ParseValue(string text)
    {
        try { return JsonNode.Parse(text); }
        catch (JsonException) { return JsonValue.Create(text); }
    }

    /// <summary>The property that a dotted key names, or null.</summary>
    private static PropertyInfo? Property(Type type, string key)
    {
        Type? t = type;
        PropertyInfo? property = null;
        foreach (var part in key.Split('.'))
        {
            property = t?.GetProperties(BindingFlags.Public | BindingFlags.Instance).FirstOrDefault(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name) == part);
            t = property?.PropertyType;
        }
        return property;
    }

    /// <summary>
    /// The message for a whole number too large for an integer key (JSON reads it, int cannot hold it): the key's range
    /// (its [Range], else int's), or null when the value is no whole number.
    /// </summary>
    private static string? OutOfRange(Type type, string key, JsonObject node)
    {
        var property = Property(type, key);
        JsonNode? value = node;
        foreach (var part in key.Split('.')) value = value?[part];
        if (property is null || (Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType) != typeof(int)) return null;
        if (value is not JsonValue v || !v.TryGetValue(out double d) || d != Math.Floor(d) || d is >= int.MinValue and <= int.MaxValue) return null;
        var (min, max) = Check.RangeOf(property) ?? (int.MinValue, int.MaxValue);
        return Check.OutOfRange(key, min, max, v.ToJsonString());
    }

    private static string Expected(Type type, string key)
    {
        var t = Property(type, key)?.PropertyType;
        if (t == null) return "a valid value";
        t = Nullable.GetUnderlyingType(t) ?? t;
        if (t.IsEnum) return "one of " + string.Join(", ", Enum.GetNames(t).Select(JsonNamingPolicy.SnakeCaseLower.ConvertName));
        if (t == typeof(int) || t == typeof(long)) return "an integer";
        if (t == typeof(double) || t == typeof(float)) return "a number";
        if (t == typeof(bool)) return "true or false";
        return t == typeof(string) ? "a string" : $"a {t.Name}";
    }
}
