using PpoSharp.Models;
using PpoSharp.Models.Hf;
using PpoSharp.Text;
using PpoSharp.Training;

namespace PpoSharp.Serving;

/// <summary>A LoRA adapter loaded at run time: its name, the folder it came from, and the view of the base it makes.</summary>
public sealed record LoadedAdapter(string Name, string Path, Decoder View);

/// <summary>
/// What the server generates with: the base model and its tokenizer, the weight version (SGLang's
/// <c>weight_version</c>, "default" until an update names one) and the LoRA adapters loaded by name. It is only read
/// and changed on the scheduler's thread, between batches; a change builds new models first and swaps only on success.
/// </summary>
public sealed class ServedModel(string name, string path, Decoder model, ITokenizer tokenizer)
{
    public const string DefaultVersion = "default";

    public string Name { get; } = name;
    public string Path { get; private set; } = path;
    public Decoder Model { get; private set; } = model;
    public ITokenizer Tokenizer { get; } = tokenizer;
    public string WeightVersion { get; private set; } = DefaultVersion;
    public int ContextLength => Model.Config.ContextLength;
    public int VocabSize => Model.Config.VocabSize;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, LoadedAdapter> _adapters = new(StringComparer.Ordinal);   // read by request threads

    public IReadOnlyList<LoadedAdapter> Adapters => [.. _adapters.Values];

    /// <summary>Loads a model folder (a PpoSharp run or an HF folder) for serving: weights, tokenizer, eval mode, no gradients.</summary>
    public static ServedModel Load(string dir, string? servedName = null)
    {
        var (model, tokenizer) = RunDirectory.LoadPolicy(dir);
        Freeze(model);
        return new ServedModel(servedName ?? System.IO.Path.GetFileName(System.IO.Path.GetFullPath(dir).TrimEnd('/')), dir, model, tokenizer);
    }

    /// <summary>The model a request names: null, "" or the served name is the base; an adapter's name is its view; anything else is a 404.</summary>
    public Decoder Resolve(string? requested) =>
        requested is null || requested.Length == 0 || requested == Name ? Model
        : _adapters.TryGetValue(requested, out var a) ? a.View
        : throw new ServeException(404, $"The model `{requested}` does not exist (served: {string.Join(", ", [Name, .. _adapters.Keys])})", "model");

    /// <summary>Whether a request's model name is known (checked when the request arrives, and again when its batch starts).</summary>
    public bool Knows(string? requested) => requested is null || requested.Length == 0 || requested == Name || _adapters.ContainsKey(requested);

    /// <summary>
    /// Replaces the weights with the model in <paramref name="dir"/> (same architecture and tokenizer size): loaded into
    /// a new model, adapters reloaded onto it, then swapped in; on any failure the old weights keep serving.
    /// </summary>
    public void ReplaceWeights(string dir, string? version)
    {
        if (PeftAdapter.IsAdapter(dir)) throw ServeException.Bad($"{dir}: is a LoRA adapter folder; load it with /v1/load_lora_adapter", "model_path");
        var (_, spec) = RunDirectory.ReadModel(dir);
        if (spec != Model.Config) throw ServeException.Bad($"{dir}: its config ({Describe(spec)}) differs from the served model's ({Describe(Model.Config)})", "model_path");
        var fresh = RunDirectory.LoadPolicyModel(dir);
        Freeze(fresh);
        var views = _adapters.Values.Select(a => a with { View = AdapterView(fresh, a.Path) }).ToList();
        (Model, Path) = (fresh, dir);
        foreach (var a in views) _adapters[a.Name] = a;
        if (version is not null) WeightVersion = version;
    }

    /// <summary>Loads a peft adapter folder onto the base under <paramref name="name"/>; with <paramref name="inPlace"/> it may replace one of that name.</summary>
    public void LoadAdapter(string name, string dir, bool inPlace)
    {
        if (_adapters.ContainsKey(name) && !inPlace)
            throw ServeException.Bad($"The lora adapter '{name}' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True.", "lora_name");
        if (name == Name) throw ServeException.Bad($"'lora_name' {name} is the served model's name", "lora_name");
        _adapters[name] = new LoadedAdapter(name, dir, AdapterView(Model, dir));
    }

    public void UnloadAdapter(string name)
    {
        if (!_adapters.TryRemove(name, out _)) throw new ServeException(404, $"The lora adapter '{name}' cannot be found.", "lora_name");
    }

    private static Decoder AdapterView(Decoder baseModel, string dir)
    {
        if (!PeftAdapter.IsAdapter(dir)) throw ServeException.Bad($"{dir}: not a LoRA adapter folder ({PeftAdapter.ConfigFile} is missing)", "lora_path");
        if (PeftAdapter.ReadInfo(dir).ScalarHead) throw ServeException.Bad($"{dir}: holds a reward model adapter (task_type SEQ_CLS), not a policy", "lora_path");
        var view = baseModel.WithAdapter(PeftAdapter.Load(dir, baseModel));
        Freeze(view);
        return view;
    }

    private static void Freeze(Decoder model)
    {
        foreach (var p in model.parameters()) p.requires_grad = false;
        model.eval();
    }

    private static string Describe(DecoderSpec s) => $"vocab {s.VocabSize}, context {s.ContextLength}, {s.NLayer} layers, width {s.DModel}";
}
