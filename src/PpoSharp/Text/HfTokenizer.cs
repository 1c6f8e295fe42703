extern alias HfTokenizers;
using System.Text;
using NativeTokenizer = HfTokenizers::Tokenizers.DotNet.Tokenizer;

namespace PpoSharp.Text;

/// <summary>
/// A Hugging Face model folder's tokenizer: <c>tokenizer.json</c> run by Hugging Face's Rust <c>tokenizers</c> library
/// (through Tokenizers.DotNet), the special ids from <c>tokenizer_config.json</c>, <c>generation_config.json</c> and
/// <c>config.json</c>, and the model's chat template (<see cref="JinjaChat"/>). Behaves like transformers'
/// <c>PreTrainedTokenizerFast</c>: special-token strings in text are matched as special tokens, as
/// <c>split_special_tokens=False</c> does.
/// </summary>
public sealed class HfTokenizer : ITokenizer, IDisposable
{
    public const string TokenizerFile = "tokenizer.json";

    /// <summary>The files <see cref="Save"/> copies when present (the model's configs are the model saver's).</summary>
    public static readonly string[] TokenizerFiles =
        [TokenizerFile, HfConfigFiles.TokenizerConfig, "special_tokens_map.json", HfConfigFiles.ChatTemplateFile, "vocab.json", "merges.txt", "tokenizer.model"];

    /// <summary>
    /// The built-in role format as a Jinja template, for models without one: <c>&lt;|role|&gt;</c>, the content and the
    /// EOS string per message, and <c>&lt;|assistant|&gt;</c> as the generation prompt. The role markers are plain text.
    /// </summary>
    public const string RoleFormatTemplate =
        "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}{% endfor %}"
        + "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

    private readonly NativeTokenizer _plain;                  // no post-processor, no token marked special
    private readonly Lazy<NativeTokenizer> _withSpecial;      // tokenizer.json as shipped
    private readonly IReadOnlyDictionary<int, string> _special;
    private readonly bool _cleanUp;
    private readonly Lock _gate = new();

    private HfTokenizer(string dir, HfVocabulary vocab, HfConfigFiles configs, NativeTokenizer plain,
        IReadOnlyDictionary<string, object?>? chatKwargs)
    {
        SourceDirectory = dir;
        _plain = plain;
        _withSpecial = new(() => new NativeTokenizer(Path.Combine(dir, TokenizerFile)));
        _special = vocab.SpecialById;
        _cleanUp = configs.CleanUpTokenizationSpaces;
        VocabSize = vocab.Size;
        var eos = configs.EosIds(vocab);
        Special = new SpecialTokenIds(configs.PadId(vocab, eos), eos);
        Bos = configs.BosId(vocab);
        Chat = MakeChat(configs, eos[0], chatKwargs);
    }

    /// <summary>The folder the tokenizer was loaded from (<see cref="EncodeWithSpecialTokens"/> reads its tokenizer.json on first use).</summary>
    public string SourceDirectory { get; }

    public int VocabSize { get; }
    public SpecialTokenIds Special { get; }

    /// <summary>The BOS id (<c>bos_token</c>, else config.json's <c>bos_token_id</c>); null for models without one.</summary>
    public int? Bos { get; }

    public IChatFormat Chat { get; }

    /// <summary>The special tokens of the vocabulary (added tokens marked special), by id.</summary>
    public IReadOnlyDictionary<int, string> SpecialTokens => _special;

    /// <summary>
    /// Loads a Hugging Face model folder: <c>tokenizer.json</c> (required) and, when present, <c>tokenizer_config.json</c>,
    /// <c>chat_template.jinja</c>, <c>generation_config.json</c> and <c>config.json</c>.
    /// </summary>
    /// <param name="dir">The model folder.</param>
    /// <param name="chatKwargs">Extra chat-template variables for every render (e.g. <c>enable_thinking</c>).</param>
    public static HfTokenizer Load(string dir, IReadOnlyDictionary<string, object?>? chatKwargs = null)
    {
        var path = Path.Combine(dir, TokenizerFile);
        if (!SafeFile.Present(path))
            throw new PpoSharpException($"{path}: missing (a Hugging Face model folder needs its tokenizer.json; sentencepiece-only tokenizer.model folders are not supported)");
        var vocab = HfVocabulary.Read(path);
        var configs = HfConfigFiles.Read(dir);
        var plain = LoadPlain(vocab, path);
        try
        {
            return new HfTokenizer(dir, vocab, configs, plain, chatKwargs);
        }
        catch
        {
            plain.Dispose();
            throw;
        }
    }

    /// <summary>Text to ids without BOS/EOS (transformers' <c>add_special_tokens=False</c>).</summary>
    public IReadOnlyList<int> Encode(string text)
    {
        lock (_gate) return ToInts(_plain.Encode(text));
    }

    /// <summary>Text to ids with what the tokenizer's post-processor adds (BOS for Llama, Gemma, Mistral), as <c>add_special_tokens=True</c>.</summary>
    public IReadOnlyList<int> EncodeWithSpecialTokens(string text)
    {
        lock (_gate) return ToInts(_withSpecial.Value.Encode(text));
    }

    /// <summary>
    /// Ids to text as the Rust library decodes them (ids outside the vocabulary are skipped), with transformers'
    /// <c>clean_up_tokenization_spaces</c> applied when the tokenizer config asks for it.
    /// </summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecial = true)
    {
        var kept = ids.Where(id => id >= 0 && id < VocabSize && !(skipSpecial && _special.ContainsKey(id))).Select(id => (uint)id).ToArray();
        if (kept.Length == 0) return "";
        string text;
        lock (_gate) text = _plain.Decode(kept);
        return _cleanUp ? CleanUpTokenization(text) : text;
    }

    /// <summary>Copies the tokenizer files of <see cref="TokenizerFiles"/> that the source folder has into <paramref name="directory"/>.</summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        foreach (var name in TokenizerFiles)
        {
            var from = Path.Combine(SourceDirectory, name);
            var to = Path.Combine(directory, name);
            if (File.Exists(from) && Path.GetFullPath(from) != Path.GetFullPath(to)) File.Copy(from, to, overwrite: true);
        }
    }

    public void Dispose()
    {
        _plain.Dispose();
        if (_withSpecial.IsValueCreated) _withSpecial.Value.Dispose();
    }

    /// <summary>transformers' <c>clean_up_tokenization</c>: removes the space before punctuation and English contractions.</summary>
    public static string CleanUpTokenization(string text) => new StringBuilder(text)
        .Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
        .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re")
        .ToString();

    private JinjaChat MakeChat(HfConfigFiles configs, int firstEos, IReadOnlyDictionary<string, object?>? kwargs)
    {
        var tokens = configs.SpecialTokenStrings();
        if (configs.ChatTemplate() is string template) return new JinjaChat(template, this, tokens, kwargs, configs.ChatTemplateSource);
        var withEos = new Dictionary<string, string>(tokens.ToDictionary());
        withEos.TryAdd("eos_token", Decode([firstEos], skipSpecial: false));
        return new JinjaChat(RoleFormatTemplate, this, withEos, kwargs);
    }

    private static NativeTokenizer LoadPlain(HfVocabulary vocab, string source)
    {
        var copy = Path.Combine(Path.GetTempPath(), $"ppo-sharp-tokenizer-{Guid.NewGuid():N}.json");
        try
        {
            vocab.WritePlainCopy(copy);
            return new NativeTokenizer(copy);
        }
        catch (HfTokenizers::Tokenizers.DotNet.TokenizerException e)
        {
            throw new PpoSharpException($"{source}: the tokenizers library cannot load it ({HfVocabulary.FirstLine(e.Message)})");
        }
        finally
        {
            File.Delete(copy);
        }
    }

    private static int[] ToInts(uint[] ids) => Array.ConvertAll(ids, id => (int)id);
}
