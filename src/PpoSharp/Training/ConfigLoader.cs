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
            if (!target.ContainsKey(key))
                throw new PpoSharpException($"{from}: unknown key '{prefix}{key}'; allowed: {string.Join(", ", target.Select(kv => prefix + kv.Key))}");
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
