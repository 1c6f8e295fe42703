using System.IO.Compression;
using System.Text.Json.Nodes;
using PpoSharp.Text;

namespace PpoSharp.Tests;

/// <summary>
/// The committed Hugging Face test data (HfData/): real tokenizers unpacked into temporary model folders, and the
/// reference outputs of transformers.js (tools/reference/make-expected.mjs).
/// </summary>
public static class HfTestData
{
    public static readonly string[] Names = ["gpt2", "llama3", "qwen3", "gemma3", "mistral"];
    private static readonly string Root = Path.Combine(AppContext.BaseDirectory, "HfData");
    private static readonly Dictionary<string, HfTokenizer> Shared = [];
    private static readonly Lazy<JsonObject> LazyTokenization = new(() => ReadReference("tokenization.json"));
    private static readonly Lazy<JsonObject> LazyChat = new(() => ReadReference("chat.json"));

    /// <summary>reference/tokenization.json: per tokenizer, cases of text, ids, ids_with_special, decoded.</summary>
    public static JsonObject Tokenization => LazyTokenization.Value;

    /// <summary>reference/chat.json: cases of tokenizer, messages, add_generation_prompt, tools, kwargs, text, ids.</summary>
    public static JsonObject Chat => LazyChat.Value;

    /// <summary>
    /// A new temporary model folder with the named tokenizer's tokenizer.json and tokenizer_config.json, plus
    /// <paramref name="files"/> (name, content) written beside them; a null content deletes that file.
    /// </summary>
    public static string Folder(string name, params (string Name, string? Content)[] files) =>
        Folder(name, TestSupport.TempDir(), files);

    private static string Folder(string name, string dir, params (string Name, string? Content)[] files)
    {
        var source = Path.Combine(Root, "tokenizers", name);
        using (var gz = new GZipStream(File.OpenRead(Path.Combine(source, "tokenizer.json.gz")), CompressionMode.Decompress))
        using (var output = File.Create(Path.Combine(dir, "tokenizer.json")))
            gz.CopyTo(output);
        File.Copy(Path.Combine(source, "tokenizer_config.json"), Path.Combine(dir, "tokenizer_config.json"));
        foreach (var (file, content) in files)
        {
            if (content is null) File.Delete(Path.Combine(dir, file));
            else File.WriteAllText(Path.Combine(dir, file), content);
        }
        return dir;
    }

    /// <summary>The named tokenizer loaded from an unchanged folder, once per test run.</summary>
    public static HfTokenizer Tokenizer(string name)
    {
        lock (Shared)
        {
            if (!Shared.TryGetValue(name, out var tokenizer)) Shared[name] = tokenizer = HfTokenizer.Load(Folder(name, TestSupport.SharedTempDir()));   // read lazily: must outlive the test
            return tokenizer;
        }
    }

    /// <summary>The named tokenizer's tokenizer_config.json with <paramref name="edit"/> applied, as JSON text.</summary>
    public static string EditedConfig(string name, Action<JsonObject> edit)
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Root, "tokenizers", name, "tokenizer_config.json")))!.AsObject();
        edit(config);
        return config.ToJsonString();
    }

    public static int[] Ints(JsonNode? array) => [.. array!.AsArray().Select(x => x!.GetValue<int>())];

    /// <summary>A short label for a reference case: its index and the start of its text.</summary>
    public static string Label(int index, string text) =>
        $"case {index} \"{(text.Length > 40 ? text[..40] + "..." : text).ReplaceLineEndings("\\n")}\"";

    private static JsonObject ReadReference(string file) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(Root, "reference", file)))!.AsObject();
}
