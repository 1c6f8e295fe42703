using System.Text;

namespace PpoSharp.Text;

/// <summary>
/// One token per character (Unicode code point), for small tasks. Ids: 0 = unknown character, 1..5 = the special
/// tokens, then the alphabet in ordinal order. The alphabet is built from a data set and saved with the model as a
/// Hugging Face WordLevel <c>tokenizer.json</c> (<see cref="CharTokenizerFiles"/>); older runs' <c>{"type": "char"}</c>
/// files still load.
/// </summary>
public sealed class CharTokenizer : ITokenizer
{
    public const int Unknown = 0;
    private readonly string[] _symbols;                 // id -> text
    private readonly Dictionary<string, int> _ids;      // text -> id (alphabet only)

    public CharTokenizer(IEnumerable<string> alphabet)
    {
        var chars = alphabet.Distinct().OrderBy(c => c, StringComparer.Ordinal).ToArray();
        _symbols = ["\uFFFD", .. SpecialTokens.All, .. chars];
        _ids = chars.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => p.i + 1 + SpecialTokens.All.Length);
        Roles = RoleTokenIds.FromFirst(1);
        Chat = new RoleTokenChat(this, Roles);
    }

    /// <summary>A tokenizer whose alphabet is every character of <paramref name="texts"/> but U+FFFD, the unknown symbol.</summary>
    public static CharTokenizer FromTexts(IEnumerable<string> texts) =>
        new(texts.SelectMany(CodePoints).Where(c => c != CharTokenizerFiles.UnknownSymbol));

    public int VocabSize => _symbols.Length;
    public RoleTokenIds Roles { get; }
    public SpecialTokenIds Special => Roles.Special;
    public IChatFormat Chat { get; }
    public TokenizerSpec Spec => new("char", string.Concat(_symbols.Skip(1 + SpecialTokens.All.Length)));

    /// <summary>The token's text: U+FFFD for the unknown id, a role token's string, or a character.</summary>
    public string Symbol(int id) => _symbols[id];

    public void Save(string directory) => CharTokenizerFiles.Save(this, directory);

    /// <summary>
    /// Text to ids as Hugging Face tools encode it with the saved tokenizer.json: a role token's string is that role
    /// token (<see cref="Encode"/> keeps it as characters, so that user text never yields one).
    /// </summary>
    public IReadOnlyList<int> EncodeWithRoleTokens(string text)
    {
        var ids = new List<int>();
        int start = 0;
        for (int i = 0; i < text.Length; i++)
        {
            var role = Array.FindIndex(SpecialTokens.All, t => string.CompareOrdinal(text, i, t, 0, t.Length) == 0);
            if (role < 0) continue;
            ids.AddRange(Encode(text[start..i]));
            ids.Add(Roles.Pad + role);
            i += SpecialTokens.All[role].Length - 1;
            start = i + 1;
        }
        ids.AddRange(Encode(text[start..]));
        return ids;
    }

    public IReadOnlyList<int> Encode(string text) => CodePoints(text).Select(c =>
    {
        if (_ids.TryGetValue(c, out var id)) return id;
        lock (_unknown) _unknown.Add(c);
        return Unknown;
    }).ToList();

    private readonly SortedSet<string> _unknown = new(StringComparer.Ordinal);
    private int _reported;

    /// <summary>
    /// Writes one warning naming the characters encoded so far that are not in the alphabet (they all became the
    /// unknown id), the first time there are any; later calls write nothing.
    /// </summary>
    public void WarnUnknown(TextWriter log)
    {
        string[] chars;
        lock (_unknown) chars = [.. _unknown];
        if (chars.Length == 0 || Interlocked.Exchange(ref _reported, 1) == 1) return;
        log.WriteLine($"warning: {chars.Length} character(s) the model's tokenizer has never seen map to its unknown id: "
            + string.Join(", ", chars.Take(20).Select(c => $"'{c}'")) + (chars.Length > 20 ? ", ..." : ""));
    }

    public string Decode(IEnumerable<int> ids, bool skipSpecial = true)
    {
        var sb = new StringBuilder();
        foreach (var id in ids)
        {
            if (id < 0 || id >= _symbols.Length) continue;
            if (skipSpecial && Roles.Contains(id)) continue;
            sb.Append(_symbols[id]);
        }
        return sb.ToString();
    }

    /// <summary>Splits into code points, so that surrogate pairs stay one token.</summary>
    internal static IEnumerable<string> CodePoints(string text)
    {
        for (int i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                yield return text.Substring(i, 2);
                i++;
            }
            else yield return text[i].ToString();
        }
    }
}
