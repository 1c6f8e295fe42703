using System.Text.Json;

namespace PpoSharp.Serving.Protocol;

/// <summary>
/// Typed reads of a request's JSON object: each getter names the field and what was expected when the value is of the
/// wrong type or out of range (a <see cref="ServeException"/> with status 400). A missing field or JSON null gives the
/// default, as in the engines' pydantic models; fields the server does not know are ignored, as OpenAI clients send more.
/// </summary>
public readonly struct JsonFields(JsonElement obj, string prefix = "")
{
    public JsonElement Element => obj;

    /// <summary>The body parsed as a JSON object, or a 400 naming the parse error.</summary>
    public static JsonFields Parse(ReadOnlyMemory<byte> body)
    {
        if (body.Length == 0) throw ServeException.Bad("the request body is empty; a JSON object is expected");
        try
        {
            using var doc = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = 32 });
            return Of(doc.RootElement.Clone(), "");
        }
        catch (JsonException e) { throw ServeException.Bad($"the body is not valid JSON: {e.Message.Split('\n')[0]}"); }
    }

    /// <summary>An element that must be an object (<paramref name="name"/> names it in messages).</summary>
    public static JsonFields Of(JsonElement e, string name) => e.ValueKind == JsonValueKind.Object ? new JsonFields(e, name == "" ? "" : name + ".")
        : throw ServeException.Bad(name == "" ? $"the body must be a JSON object, not {Kind(e)}" : $"'{name}' must be an object, not {Kind(e)}", name);

    public string Name(string field) => prefix + field;

    /// <summary>The field's value, or null when missing or JSON null.</summary>
    public JsonElement? Get(string field) =>
        obj.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public bool Has(string field) => Get(field) is not null;

    public string? String(string field) => Get(field) is not { } v ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString() : throw Wrong(field, "a string", v);

    public bool Bool(string field, bool fallback) => Get(field) is not { } v ? fallback
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw Wrong(field, "true or false", v);

    public long? Long(string field) => Get(field) is not { } v ? null
        : v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var x) ? x : throw Wrong(field, "an integer", v);

    /// <summary>An integer in [min, max]; <paramref name="limitName"/> names the server option that sets max.</summary>
    public int Int(string field, int fallback, int min, int max, string? limitName = null)
    {
        if (Long(field) is not long x) return fallback;
        if (x < min || x > max)
            throw ServeException.Bad($"'{Name(field)}' is {x}; allowed: {min} to {max}{(limitName is null ? "" : $" (the server's {limitName})")}", Name(field));
        return (int)x;
    }

    /// <summary>A finite number in [min, max].</summary>
    public double Double(string field, double fallback, double min, double max)
    {
        if (Get(field) is not { } v) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out var x) || !double.IsFinite(x)) throw Wrong(field, "a number", v);
        return x >= min && x <= max ? x : throw ServeException.Bad($"'{Name(field)}' is {x}; allowed: {min} to {max}", Name(field));
    }

    /// <summary>A string or a list of strings (OpenAI's <c>stop</c>); empty when missing.</summary>
    public IReadOnlyList<string> Strings(string field)
    {
        if (Get(field) is not { } v) return [];
        if (v.ValueKind == JsonValueKind.String) return [v.GetString()!];
        if (v.ValueKind == JsonValueKind.Array && v.EnumerateArray().All(s => s.ValueKind == JsonValueKind.String))
            return v.EnumerateArray().Select(s => s.GetString()!).ToList();
        throw Wrong(field, "a string or a list of strings", v);
    }

    /// <summary>A list of token ids, each in [0, <paramref name="vocab"/>).</summary>
    public IReadOnlyList<int> Ids(string field, int vocab) => Get(field) is { } v ? IdList(v, Name(field), vocab) : [];

    /// <summary>A JSON array of token ids, each in [0, vocab).</summary>
    public static List<int> IdList(JsonElement v, string name, int vocab)
    {
        if (v.ValueKind != JsonValueKind.Array) throw WrongAt(name, "a list of token ids", v);
        var ids = new List<int>(v.GetArrayLength());
        foreach (var x in v.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out var id)) throw WrongAt(name, "a list of integer token ids", x);
            if (id < 0 || id >= vocab) throw ServeException.Bad($"'{name}' holds token id {id}, outside the vocabulary (0 to {vocab - 1})", name);
            ids.Add((int)id);
        }
        return ids;
    }

    private ServeException Wrong(string field, string expected, JsonElement got) => WrongAt(Name(field), expected, got);

    private static ServeException WrongAt(string name, string expected, JsonElement got) =>
        ServeException.Bad($"'{name}' must be {expected}, not {Kind(got)}", name);

    /// <summary>A short description of a JSON value for messages: its kind, and the value when short.</summary>
    public static string Kind(JsonElement e)
    {
        var text = e.GetRawText();
        string kind = e.ValueKind switch
        {
            JsonValueKind.Object => "an object", JsonValueKind.Array => "a list", JsonValueKind.String => "a string",
            JsonValueKind.Number => "a number", JsonValueKind.True or JsonValueKind.False => "a boolean", _ => "null",
        };
        return text.Length <= 40 && e.ValueKind != JsonValueKind.Object && e.ValueKind != JsonValueKind.Array ? $"{kind} ({text})" : kind;
    }
}
