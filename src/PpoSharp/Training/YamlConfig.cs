using System.Globalization;
using System.Text.Json.Nodes;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace PpoSharp.Training;

/// <summary>
/// A YAML config file (<c>--config sft.yaml</c>, as <c>trl sft --config</c> takes them) read with YamlDotNet into the same
/// JSON object a JSON config gives, so that both get the same keys, aliases and validation. Plain scalars are typed as
/// YAML's core schema types them (integers, floats, true/false, null); quoted scalars stay strings.
/// </summary>
public static class YamlConfig
{
    /// <summary>Reads <paramref name="file"/>: one mapping at the top; a syntax error names the file, line and column.</summary>
    public static JsonObject Read(string file)
    {
        var yaml = new YamlStream();
        try
        {
            using var reader = new StreamReader(file);
            yaml.Load(reader);
        }
        catch (YamlException e)
        {
            throw new PpoSharpException($"{file}:{e.Start.Line}: invalid YAML ({e.Message.Split('\n')[0].TrimEnd('.')}, column {e.Start.Column})");
        }
        if (yaml.Documents.Count == 0 || ToJson(yaml.Documents[0].RootNode, file) is not JsonObject config)
            throw new PpoSharpException($"{file}: a config file must hold one mapping of keys to values");
        if (yaml.Documents.Count > 1) throw new PpoSharpException($"{file}: holds {yaml.Documents.Count} YAML documents; a config file holds one");
        return config;
    }

    private static JsonNode? ToJson(YamlNode node, string file) => node switch
    {
        YamlMappingNode map => Mapping(map, file),
        YamlSequenceNode seq => new JsonArray([.. seq.Children.Select(c => ToJson(c, file))]),
        YamlScalarNode scalar => Scalar(scalar),
        _ => throw new PpoSharpException($"{file}:{node.Start.Line}: YAML aliases and tags are not supported in a config file"),
    };

    private static JsonObject Mapping(YamlMappingNode map, string file)
    {
        var o = new JsonObject();
        foreach (var (key, value) in map.Children)
        {
            if (key is not YamlScalarNode { Value: string name }) throw new PpoSharpException($"{file}:{key.Start.Line}: a key must be a plain name");
            if (o.ContainsKey(name)) throw new PpoSharpException($"{file}:{key.Start.Line}: key '{name}' appears twice");
            o[name] = ToJson(value, file);
        }
        return o;
    }

    /// <summary>A scalar as YAML 1.2's core schema reads it: null, booleans, integers, floats (.inf, .nan too), else a string.</summary>
    private static JsonNode? Scalar(YamlScalarNode scalar)
    {
        var text = scalar.Value ?? "";
        if (scalar.Style != YamlDotNet.Core.ScalarStyle.Plain) return JsonValue.Create(text);
        switch (text)
        {
            case "" or "~" or "null" or "Null" or "NULL": return null;
            case "true" or "True" or "TRUE": return JsonValue.Create(true);
            case "false" or "False" or "FALSE": return JsonValue.Create(false);
        }
        if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l)) return JsonNode.Parse(l.ToString(CultureInfo.InvariantCulture));
        if (System.Text.RegularExpressions.Regex.IsMatch(text, @"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
            && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double d))
            return JsonNode.Parse(d.ToString("R", CultureInfo.InvariantCulture));     // as JSON reads it, so both formats type alike
        return JsonValue.Create(text);
    }
}
