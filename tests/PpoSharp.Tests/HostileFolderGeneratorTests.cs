using System.Text;
using System.Text.Json.Nodes;
using PpoSharp.Data;
using PpoSharp.Models.Hf;
using PpoSharp.Training;
using static PpoSharp.Tests.HostileFolders;

namespace PpoSharp.Tests;

/// <summary>
/// A generator of hostile model folders: every file a folder can hold (config.json, safetensors headers, shards and their
/// index, tokenizer.json, tokenizer_config.json, chat templates, generation_config.json, adapter files) mutated field by
/// field, and file-system tricks on each file (FIFO, link loop, link to /dev/zero, a directory, an empty or unreadable
/// file, a dangling link). Each folder is loaded in-process the way every command loads one (tokenizer, then checked
/// weights, then a rendered and encoded prompt); the outcome must be a clean load or one line naming a file of the
/// folder (a <see cref="PpoSharpException"/>), never another exception and never a hang.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class HostileFolderGeneratorTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);
    private static readonly JsonNode?[] Values = [0, -1, int.MaxValue, 1e12, "x", null, new JsonArray()];
    private static readonly Lazy<Dictionary<string, Func<string>>> All = new(Generate);

    public static TheoryData<string> Names => [.. All.Value.Keys];

    [Theory, MemberData(nameof(Names))]
    public async Task Load_HostileFolder_CleanLoadOrOneLineNamingAFile(string name)
    {
        var dir = All.Value[name]();
        var root = Path.GetDirectoryName(dir)!;
        var error = await Task.Run(() => Outcome(dir)).WaitAsync(Limit);               // TimeoutException: a hang
        if (error is null) return;                                                // a clean load
        Assert.True(error is PpoSharpException, $"{name}: {error.GetType().Name}: {error.Message}");
        Assert.Single(error.Message.Trim().Split('\n'));
        Assert.True(error.Message.Contains(root, StringComparison.Ordinal), $"{name}: the message names no file of the folder: {error.Message}");
    }

    [Fact]
    public void Generate_CoversEveryFileAFolderCanHold_AndManyCases()
    {
        var names = All.Value.Keys.ToList();
        foreach (var file in new[] { "config.json", "model.safetensors", "index", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja", "adapter_config.json", "adapter_model.safetensors" })
            Assert.Contains(names, n => n.Contains(file, StringComparison.Ordinal));
        Assert.True(names.Count > 200, $"{names.Count} cases");
    }

    /// <summary>Loads as the commands do; null when it loaded, else what was thrown.</summary>
    private static Exception? Outcome(string dir)
    {
        try
        {
            var (model, tokenizer) = RunDirectory.LoadPolicy(dir);
            using (model)
            {
                var ids = tokenizer.Chat.EncodePrompt([new ChatMessage(Role.User, "hi")]);
                Assert.All(ids, id => Assert.InRange(id, 0, model.Config.VocabSize - 1));
            }
            (tokenizer as IDisposable)?.Dispose();
            return null;
        }
        catch (Exception e) { return e; }
    }

    private static Dictionary<string, Func<string>> Generate()
    {
        var cases = new Dictionary<string, Func<string>>();
        void Add(string name, Func<string> build) => cases[name] = build;
        foreach (var (fixture, build) in new (string, Func<Action<string>, string>)[] { ("gpt2", HostileFolderTests.Gpt2), ("llama", SmallLlama) })
        {
            ConfigFields(fixture, build, Add);
            HeaderFields(fixture, build, Add);
            FileTricks(fixture, build, ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"], Add);
        }
        Shards(Add);
        Tokenizer(Add);
        Templates(Add);
        Adapters(Add);
        return cases;
    }

    /// <summary>tiny-llama3 with GPT-2's tokenizer files (its own tokenizer.json takes seconds to load), config ids kept within them.</summary>
    private static string SmallLlama(Action<string> spoil) => HostileFolderTests.Llama(d =>
    {
        var gpt2 = TestSupport.HfModel("tiny-gpt2");
        foreach (var file in new[] { "tokenizer.json", "tokenizer_config.json", "generation_config.json" })
            File.Copy(Path.Combine(gpt2, file), Path.Combine(d, file), overwrite: true);
        EditJson(d, "config.json", c => { c["bos_token_id"] = 50256; c["eos_token_id"] = 50256; });
        spoil(d);
    });

    /// <summary>Every key of config.json set to each hostile value.</summary>
    private static void ConfigFields(string fixture, Func<Action<string>, string> build, Action<string, Func<string>> add)
    {
        var source = Path.Combine(AppContext.BaseDirectory, "HfData", "models", fixture == "gpt2" ? "tiny-gpt2" : "tiny-llama3", "config.json");
        foreach (var key in JsonNode.Parse(File.ReadAllText(source))!.AsObject().Select(p => p.Key))
            for (int v = 0; v < Values.Length; v++)
            {
                int value = v;
                add($"{fixture} config.json {key}={Values[value]?.ToJsonString() ?? "null"}", () => build(d => EditJson(d, "config.json", c => c[key] = Values[value]?.DeepClone())));
            }
        add($"{fixture} config.json not JSON", () => build(d => File.WriteAllText(Path.Combine(d, "config.json"), "{\"architectures\": [")));
        add($"{fixture} config.json an array", () => build(d => File.WriteAllText(Path.Combine(d, "config.json"), "[]")));
        add($"{fixture} config.json rope_scaling garbage", () => build(d => EditJson(d, "config.json", c => c["rope_scaling"] = new JsonObject { ["rope_type"] = "llama3", ["factor"] = "x" })));
    }

    /// <summary>Header fields of the first, a middle and the last tensor, and the file's framing.</summary>
    private static void HeaderFields(string fixture, Func<Action<string>, string> build, Action<string, Func<string>> add)
    {
        const string file = "model.safetensors";
        var source = Path.Combine(AppContext.BaseDirectory, "HfData", "models", fixture == "gpt2" ? "tiny-gpt2" : "tiny-llama3", file);
        var names = ReadHeader(source).Header.Select(p => p.Key).Where(k => k != "__metadata__").ToList();
        var edits = new Dictionary<string, Action<JsonObject>>
        {
            ["dtype I32"] = e => e["dtype"] = "I32", ["dtype F64"] = e => e["dtype"] = "F64", ["dtype U64"] = e => e["dtype"] = "U64",
            ["dtype unknown"] = e => e["dtype"] = "F7", ["dtype number"] = e => e["dtype"] = 5,
            ["shape empty"] = e => e["shape"] = new JsonArray(), ["shape zero"] = e => e["shape"] = new JsonArray(0), ["shape negative"] = e => e["shape"] = new JsonArray(-1, 4),
            ["shape reversed"] = e => e["shape"] = new JsonArray([.. e["shape"]!.AsArray().Reverse().Select(n => n!.DeepClone())]),
            ["shape huge"] = e => e["shape"] = new JsonArray(1L << 40, 1L << 20), ["shape string"] = e => e["shape"] = "x",
            ["offsets empty range"] = e => e["data_offsets"] = new JsonArray(0, 0), ["offsets negative"] = e => e["data_offsets"] = new JsonArray(-8, 8),
            ["offsets one byte longer"] = e => e["data_offsets"]![1] = e["data_offsets"]![1]!.GetValue<long>() + 1,
            ["offsets reversed"] = e => e["data_offsets"] = new JsonArray(e["data_offsets"]![1]!.GetValue<long>(), e["data_offsets"]![0]!.GetValue<long>()),
            ["offsets beyond the file"] = e => e["data_offsets"] = new JsonArray(1L << 40, (1L << 40) + e["data_offsets"]![1]!.GetValue<long>() - e["data_offsets"]![0]!.GetValue<long>()),
            ["offsets overlap the next"] = e => e["data_offsets"] = new JsonArray(0, e["data_offsets"]![1]!.GetValue<long>() - e["data_offsets"]![0]!.GetValue<long>()),
            ["offsets one value"] = e => e["data_offsets"] = new JsonArray(0), ["offsets strings"] = e => e["data_offsets"] = new JsonArray("a", "b"),
            ["entry empty"] = e => e.Clear(),
        };
        foreach (var tensor in new[] { names[0], names[names.Count / 2], names[^1] })
        {
            foreach (var (what, edit) in edits)
                add($"{fixture} {file} {tensor} {what}", () => build(d => EditHeader(Path.Combine(d, file), h => edit(h[tensor]!.AsObject()))));
            add($"{fixture} {file} {tensor} removed", () => build(d => EditHeader(Path.Combine(d, file), h => h.Remove(tensor))));
            add($"{fixture} {file} {tensor} renamed", () => build(d => EditHeader(Path.Combine(d, file), h => { var e = h[tensor]!; h.Remove(tensor); h[tensor + ".x"] = e; })));
            add($"{fixture} {file} {tensor} NaN", () => build(d => PatchTensor(Path.Combine(d, file), tensor, fixture == "gpt2" ? BitConverter.GetBytes(float.NaN) : [0xC0, 0x7F])));
        }
        add($"{fixture} {file} header length 2^63", () => build(d => { using var f = new FileStream(Path.Combine(d, file), FileMode.Open, FileAccess.Write); f.Write(BitConverter.GetBytes(long.MaxValue)); }));
        add($"{fixture} {file} header length 0", () => build(d => WriteHeader(Path.Combine(d, file), _ => [])));
        add($"{fixture} {file} header not JSON", () => build(d => WriteHeader(Path.Combine(d, file), _ => "{\"a\": "u8.ToArray())));
        add($"{fixture} {file} header an array", () => build(d => WriteHeader(Path.Combine(d, file), _ => "[1, 2]"u8.ToArray())));
        add($"{fixture} {file} duplicate entry", () => build(d => WriteHeader(Path.Combine(d, file), h => Encoding.UTF8.GetBytes(h.ToJsonString()[..^1] + $",\"{names[0]}\":" + h[names[0]]!.ToJsonString() + "}"))));
        add($"{fixture} {file} metadata a number", () => build(d => EditHeader(Path.Combine(d, file), h => h["__metadata__"] = 5)));
        add($"{fixture} {file} truncated", () => build(d => { using var f = new FileStream(Path.Combine(d, file), FileMode.Open, FileAccess.Write); f.SetLength(f.Length / 2); }));
        add($"{fixture} {file} trailing bytes", () => build(d => File.AppendAllText(Path.Combine(d, file), "garbage")));
        add($"{fixture} {file} 5 GB unexpected entry", () => build(d => EditHeader(Path.Combine(d, file), h => h["extra.weight"] = new JsonObject { ["dtype"] = "F32", ["shape"] = new JsonArray(5L << 28), ["data_offsets"] = new JsonArray(0, 20L << 28) })));
    }

    /// <summary>Each file replaced by a FIFO, a link loop, a link to /dev/zero, a directory, an empty file, an unreadable one, a dangling link.</summary>
    private static void FileTricks(string fixture, Func<Action<string>, string> build, string[] files, Action<string, Func<string>> add)
    {
        foreach (var file in files)
        {
            add($"{fixture} {file} FIFO", () => build(d => MakeFifo(Path.Combine(d, file))));
            add($"{fixture} {file} link to itself", () => build(d => SymlinkToSelf(Path.Combine(d, file))));
            add($"{fixture} {file} link to /dev/zero", () => build(d => Replace(Path.Combine(d, file), p => File.CreateSymbolicLink(p, "/dev/zero"))));
            add($"{fixture} {file} dangling link", () => build(d => Replace(Path.Combine(d, file), p => File.CreateSymbolicLink(p, p + ".gone"))));
            add($"{fixture} {file} directory", () => build(d => Replace(Path.Combine(d, file), p => Directory.CreateDirectory(p))));
            add($"{fixture} {file} empty", () => build(d => File.WriteAllBytes(Path.Combine(d, file), [])));
            add($"{fixture} {file} unreadable", () => build(d => File.SetUnixFileMode(Path.Combine(d, file), UnixFileMode.None)));
        }
    }

    /// <summary>GPT-2 written as shards (2 MB each) and an index, then the index or a shard spoiled.</summary>
    private static void Shards(Action<string, Func<string>> add)
    {
        const string index = "model.safetensors.index.json";
        string Sharded(Action<string> spoil) => HostileFolderTests.Gpt2(d =>
        {
            var tensors = Safetensors.LoadFolder(d);
            File.Delete(Path.Combine(d, Safetensors.SingleFile));
            Safetensors.SaveFolder(d, tensors.ToList(), maxShardBytes: 2_000_000);
            foreach (var t in tensors.Values) t.Dispose();
            spoil(d);
        });
        string Shard(string d) => Directory.GetFiles(d, "model-00002-of-*.safetensors").Single();
        void Map(string d, Action<JsonObject> edit) => EditJson(d, index, i => edit(i["weight_map"]!.AsObject()));
        add("index clean", () => Sharded(_ => { }));
        add("index weight_map not an object", () => Sharded(d => EditJson(d, index, i => i["weight_map"] = 5)));
        add("index shard outside the folder", () => Sharded(d => Map(d, m => m["transformer.wte.weight"] = "../model.safetensors")));
        add("index absolute shard", () => Sharded(d => Map(d, m => m["transformer.wte.weight"] = "/etc/passwd")));
        add("index names a missing tensor", () => Sharded(d => Map(d, m => m["transformer.h.9.ln_1.weight"] = Path.GetFileName(Shard(d)))));
        add("index misplaces a tensor", () => Sharded(d => Map(d, m => m["transformer.wte.weight"] = Path.GetFileName(Shard(d)))));
        add("index drops a shard's tensor", () => Sharded(d => Map(d, m => m.Remove("transformer.ln_f.weight"))));
        add("index not JSON", () => Sharded(d => File.WriteAllText(Path.Combine(d, index), "{")));
        add("index over 16 MiB", () => Sharded(d => File.WriteAllText(Path.Combine(d, index), new string(' ', 17 << 20) + "{}")));
        add("index shard missing", () => Sharded(d => File.Delete(Shard(d))));
        foreach (var trick in new[] { "FIFO", "link to itself", "directory" })
            add($"index shard {trick}", () => Sharded(d =>
            {
                var s = Shard(d);
                if (trick == "FIFO") MakeFifo(s); else if (trick == "directory") Replace(s, p => Directory.CreateDirectory(p)); else SymlinkToSelf(s);
            }));
        add("index FIFO", () => Sharded(d => MakeFifo(Path.Combine(d, index))));
    }

    private static void Tokenizer(Action<string, Func<string>> add)
    {
        const string file = "tokenizer.json";
        void Edit(string d, Action<JsonObject> edit) => EditJson(d, file, edit);
        add($"{file} not JSON", () => HostileFolderTests.Gpt2(d => File.WriteAllText(Path.Combine(d, file), "{\"model\": ")));
        add($"{file} an array", () => HostileFolderTests.Gpt2(d => File.WriteAllText(Path.Combine(d, file), "[]")));
        add($"{file} no model", () => HostileFolderTests.Gpt2(d => Edit(d, t => t.Remove("model"))));
        add($"{file} over 64 MiB", () => HostileFolderTests.Gpt2(d => File.WriteAllText(Path.Combine(d, file), new string(' ', 65 << 20) + "{}")));
        foreach (var value in Values)
            add($"{file} added token id {value?.ToJsonString() ?? "null"}", () => HostileFolderTests.Gpt2(d => Edit(d, t => t["added_tokens"]![0]!["id"] = value?.DeepClone())));
        add($"{file} added token id 2^24", () => HostileFolderTests.Gpt2(d => Edit(d, t => t["added_tokens"]![0]!["id"] = 1 << 24)));
        add($"{file} added token without content", () => HostileFolderTests.Gpt2(d => Edit(d, t => t["added_tokens"]![0]!.AsObject().Remove("content"))));
        add($"{file} vocab id -5", () => HostileFolderTests.Gpt2(d => Edit(d, t => t["model"]!["vocab"]!["!"] = -5)));
        add($"{file} vocab id 2^30", () => HostileFolderTests.Gpt2(d => Edit(d, t => t["model"]!["vocab"]!["!"] = 1 << 30)));
        add($"{file} vocab a number", () => HostileFolderTests.Gpt2(d => Edit(d, t => t["model"]!["vocab"] = 5)));
        add($"{file} model type unknown", () => HostileFolderTests.Gpt2(d => Edit(d, t => t["model"]!["type"] = "Nope")));
        add($"{file} merges garbage", () => HostileFolderTests.Gpt2(d => Edit(d, t => t["model"]!["merges"] = new JsonArray(5, 6))));
    }

    /// <summary>tokenizer_config.json fields, chat templates there and in chat_template.jinja, and generation_config.json ids.</summary>
    private static void Templates(Action<string, Func<string>> add)
    {
        const string config = "tokenizer_config.json", jinja = "chat_template.jinja", generation = "generation_config.json";
        var templates = new Dictionary<string, JsonNode?>
        {
            ["a number"] = 5, ["an empty list"] = new JsonArray(), ["a list without templates"] = new JsonArray(new JsonObject { ["name"] = "default" }),
            ["two named default"] = new JsonArray(new JsonObject { ["name"] = "default", ["template"] = "a" }, new JsonObject { ["name"] = "default", ["template"] = "b" }),
            ["raising"] = "{{ raise_exception('no') }}", ["range(10**9)"] = "{% for i in range(10**9) %}x{% endfor %}",
            ["deep recursion"] = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", ["undefined attribute"] = "{{ messages.x.y.z }}",
            ["unclosed"] = "{% for m in messages %}", ["huge output"] = "{% for i in range(5000000) %}xx{% endfor %}",
        };
        foreach (var (what, template) in templates)
        {
            add($"{config} chat_template {what}", () => HostileFolderTests.Gpt2(d => EditJson(d, config, c => c["chat_template"] = template?.DeepClone())));
            if (template is JsonValue v && v.TryGetValue<string>(out var text))
                add($"{jinja} {what}", () => HostileFolderTests.Gpt2(d => File.WriteAllText(Path.Combine(d, jinja), text)));
        }
        add($"{jinja} over 1 MiB", () => HostileFolderTests.Gpt2(d => File.WriteAllText(Path.Combine(d, jinja), new string('x', 2 << 20))));
        add($"{jinja} empty", () => HostileFolderTests.Gpt2(d => File.WriteAllText(Path.Combine(d, jinja), "")));
        FileTricks("gpt2", a => HostileFolderTests.Gpt2(d => { File.WriteAllText(Path.Combine(d, jinja), "{{ messages[0].content }}"); a(d); }), [jinja], add);
        foreach (var key in new[] { "eos_token", "pad_token", "bos_token" })
            foreach (var value in new JsonNode?[] { "<not a token>", 5, new JsonObject { ["content"] = 5 }, new JsonObject { ["content"] = "<not a token>" } })
                add($"{config} {key}={value!.ToJsonString()}", () => HostileFolderTests.Gpt2(d => EditJson(d, config, c => c[key] = value.DeepClone())));
        add($"{config} over 16 MiB", () => HostileFolderTests.Gpt2(d => File.WriteAllText(Path.Combine(d, config), new string(' ', 17 << 20) + "{}")));
        add($"{config} not JSON", () => HostileFolderTests.Gpt2(d => File.WriteAllText(Path.Combine(d, config), "{")));
        foreach (var key in new[] { "eos_token_id", "bos_token_id", "pad_token_id" })
            foreach (var value in Values.Concat([new JsonArray(1, "x"), new JsonArray(-1), new JsonObject()]))
                add($"{generation} {key}={value?.ToJsonString() ?? "null"}", () => HostileFolderTests.Gpt2(d => EditJson(d, generation, c => c[key] = value?.DeepClone())));
        add($"{generation} over 4 MiB", () => HostileFolderTests.Gpt2(d => File.WriteAllText(Path.Combine(d, generation), new string(' ', 5 << 20) + "{}")));
    }

    /// <summary>An adapter (on GPT-2) with its config fields, its weights and its files spoiled.</summary>
    private static void Adapters(Action<string, Func<string>> add)
    {
        const string config = "adapter_config.json", weights = "adapter_model.safetensors";
        string Spoiled(Action<string> spoil)
        {
            var root = TestSupport.TempDir();
            var baseDir = Path.Combine(root, "base");
            Directory.Move(TestSupport.HfModel("tiny-gpt2"), baseDir);
            var adapter = Adapter(baseDir, "adapter");
            var inRoot = Path.Combine(root, "adapter");
            Directory.Move(adapter, inRoot);
            spoil(inRoot);
            return inRoot;
        }
        add("adapter clean", () => Spoiled(_ => { }));
        foreach (var key in new[] { "r", "lora_alpha", "lora_dropout", "target_modules", "base_model_name_or_path", "peft_type", "task_type", "fan_in_fan_out", "use_dora", "rank_pattern", "bias" })
            foreach (var value in Values.Append(1 << 30).Append("all-linear"))
                add($"{config} {key}={value?.ToJsonString() ?? "null"}", () => Spoiled(d => EditJson(d, config, c => c[key] = value?.DeepClone())));
        add($"{config} base is itself", () => Spoiled(d => EditJson(d, config, c => c["base_model_name_or_path"] = d)));
        add($"{config} base is itself, relative", () => Spoiled(d => EditJson(d, config, c => c["base_model_name_or_path"] = ".")));
        add($"{config} two adapters naming each other", () => Spoiled(d =>
        {
            var other = Path.Combine(Path.GetDirectoryName(d)!, "other");
            Directory.CreateDirectory(other);
            foreach (var f in Directory.GetFiles(d)) File.Copy(f, Path.Combine(other, Path.GetFileName(f)));
            EditJson(d, config, c => c["base_model_name_or_path"] = other);
            EditJson(other, config, c => c["base_model_name_or_path"] = d);
        }));
        add($"{config} chain of ten adapters", () => Spoiled(d =>
        {
            var previous = d;
            for (int i = 0; i < 10; i++)
            {
                var next = Path.Combine(Path.GetDirectoryName(d)!, $"chain{i}");
                Directory.CreateDirectory(next);
                foreach (var f in Directory.GetFiles(d)) File.Copy(f, Path.Combine(next, Path.GetFileName(f)));
                EditJson(previous, config, c => c["base_model_name_or_path"] = next);
                previous = next;
            }
        }));
        var names = new[] { "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight" };
        foreach (var name in names)
        {
            add($"{weights} {name} NaN", () => Spoiled(d => PatchTensor(Path.Combine(d, weights), name, BitConverter.GetBytes(float.PositiveInfinity))));
            add($"{weights} {name} shape reversed", () => Spoiled(d => EditHeader(Path.Combine(d, weights), h => h[name]!["shape"] = new JsonArray([.. h[name]!["shape"]!.AsArray().Reverse().Select(n => n!.DeepClone())]))));
            add($"{weights} {name} removed", () => Spoiled(d => EditHeader(Path.Combine(d, weights), h => h.Remove(name))));
            add($"{weights} {name} dtype I32", () => Spoiled(d => EditHeader(Path.Combine(d, weights), h => h[name]!["dtype"] = "I32")));
        }
        add($"{weights} 5 GB unexpected entry", () => Spoiled(d => EditHeader(Path.Combine(d, weights), h => h["base_model.model.extra"] = new JsonObject { ["dtype"] = "F32", ["shape"] = new JsonArray(5L << 28), ["data_offsets"] = new JsonArray(0, 20L << 28) })));
        add($"{weights} base hash of another base", () => Spoiled(d => EditHeader(Path.Combine(d, weights), h => h["__metadata__"]!["pposharp_base_sha256"] = new string('0', 64))));
        FileTricks("adapter", Spoiled, [config, weights], add);
    }
}
