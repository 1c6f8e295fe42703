using System.Text;
using System.Text.RegularExpressions;

namespace PpoSharp.Rewards;

/// <summary>
/// The final answer of a math completion or label, and whether two answers are equal. Extraction takes, in order: the
/// last <c>\boxed{...}</c> or <c>\fbox{...}</c> (nested braces; boxes that follow each other are joined as a list),
/// else the text after the last <c>####</c> (GSM8K), else what follows "the answer is" / "final answer:", else the last
/// <c>$...$</c>, <c>\(...\)</c> or <c>\[...\]</c> span that holds no prose, else the whole text when it holds no prose,
/// else the last number. Equivalence normalises both sides the way the Hendrycks MATH scorer does
/// (<c>\left</c>/<c>\right</c>, <c>\!</c>, <c>dfrac</c>, <c>^\circ</c>, <c>$</c>, <c>%</c>, units, <c>\text{}</c>,
/// thousands separators, "x =") and then compares strings, or values: numbers, fractions, <c>\sqrt</c>, <c>\pi</c>,
/// powers and single-letter variables (evaluated at fixed points, see <see cref="MathExpression"/>) with a relative
/// tolerance of 1e-6; lists element by element (tuples and intervals in order with their brackets, bare lists and
/// <c>\{...\}</c> sets in any order). Nothing here throws: what cannot be read is not equal.
/// </summary>
public static partial class MathAnswer
{
    /// <summary>Answers longer than this are compared as normalised strings only (no value parsing).</summary>
    public const int MaxParsedLength = 400;

    /// <summary>Past the boxes and '####', only the last this many characters are searched: the final answer sits at the end, and the cost stays bounded.</summary>
    public const int TailLength = 2000;

    /// <summary>The final answer of <paramref name="text"/>, or null when it has none.</summary>
    public static string? Extract(string text)
    {
        var boxed = LastBoxed(text);
        if (boxed is not null) return boxed;
        int hashes = text.LastIndexOf("####", StringComparison.Ordinal);
        if (hashes >= 0)
        {
            var rest = FirstLine(text[(hashes + 4)..]).Trim().TrimEnd('.').Trim();
            if (rest.Length > 0) return Final(rest) ?? rest;
        }
        if (text.Length > TailLength) text = text[^TailLength..];
        var said = Safe(() => AnswerIs().Matches(text).LastOrDefault());
        if (said is { Success: true } && Final(Sentence(said.Groups[1].Value)) is string stated) return stated;
        return Final(text);
    }

    /// <summary>
    /// The answer inside <paramref name="text"/>: the whole text when it has no prose, else whichever comes last of its
    /// last prose-free math span and its last number.
    /// </summary>
    private static string? Final(string text)
    {
        var trimmed = text.Trim().TrimEnd('.').Trim();
        if (trimmed.Length > 0 && !HasProse(trimmed)) return trimmed;
        var span = Safe(() => MathSpan().Matches(text).LastOrDefault(m => Content(m).Trim().Length > 0 && !HasProse(Content(m))));
        var number = Safe(() => Number().Matches(text).LastOrDefault());
        if (span is not null && (number is null || span.Index + span.Length >= number.Index + number.Length))
            return Content(span).Trim().TrimEnd('.', ',').Trim();
        if (number is not null) return number.Value;
        var any = Safe(() => MathSpan().Matches(text).LastOrDefault());
        return any is not null && Content(any).Trim().Length is > 0 and <= 40 ? Content(any).Trim() : null;
    }

    private static string Content(Match m) => m.Groups.Cast<Group>().Skip(1).First(g => g.Success).Value;

    /// <summary>
    /// Whether two answers (as <see cref="Extract"/> gives them) are equal: equal normalised strings, or equal lists
    /// whose elements are equal strings or values.
    /// </summary>
    public static bool Equivalent(string a, string b) => EquivalentNormal(Normalize(a), Normalize(b), new Budget());

    /// <summary>How many element comparisons one <see cref="Equivalent"/> may make: nested lists of lists compare pairwise, so the work is capped (past it: not equal).</summary>
    private sealed class Budget
    {
        public int Left = 2000;
        public bool Spend() => --Left >= 0;
    }

    private static bool EquivalentNormal(string x, string y, Budget budget)
    {
        if (x.Length == 0 || y.Length == 0 || !budget.Spend()) return false;
        if (x == y) return true;
        if (x.Length > MaxParsedLength || y.Length > MaxParsedLength) return false;
        if (x.Contains("\\cup", StringComparison.Ordinal) || y.Contains("\\cup", StringComparison.Ordinal))
        {
            string[] ux = x.Split("\\cup"), uy = y.Split("\\cup");
            return ux.Length == uy.Length && ux.Zip(uy).All(p => EquivalentNormal(p.First, p.Second, budget));
        }
        var (ox, rx, cx) = Elements(x);
        var (oy, ry, cy) = Elements(y);
        List<string> ex = Items(rx), ey = Items(ry);
        if (ex.Count == 1 && ey.Count == 1) return ox == oy && cx == cy ? ScalarEqual(ex[0], ey[0], budget) : MathExpression.SameValue(x, y);
        bool interval = ox == "[" || oy == "[" || cx == "]" || cy == "]";
        if (interval && (ox != oy || cx != cy)) return false;
        bool unordered = (ox is "" or "\\{") && (oy is "" or "\\{");
        if (!unordered) return ex.Count == ey.Count && ex.Zip(ey).All(p => ScalarEqual(p.First, p.Second, budget));
        return ex.All(e => ey.Any(o => ScalarEqual(e, o, budget))) && ey.All(o => ex.Any(e => ScalarEqual(e, o, budget)));
    }

    private static bool ScalarEqual(string a, string b, Budget budget)
    {
        if (a == b) return true;
        if (!budget.Spend()) return false;
        if (Elements(a).Items.Count > 1 || Elements(b).Items.Count > 1) return EquivalentNormal(a, b, budget);
        return MathExpression.SameValue(a, b);
    }

    /// <summary>The Hendrycks-style normal form of one answer (no spaces, no styling, no units).</summary>
    public static string Normalize(string answer)
    {
        var s = answer.Trim();
        if (s.Length > 4 * MaxParsedLength) return s;
        foreach (var (from, to) in Replacements) s = s.Replace(from, to, StringComparison.Ordinal);
        s = Unwrap(s, keep: true);
        s = (Safe(() => AndList().Replace(s, ",")) ?? s).Trim().TrimEnd('.').Trim();
        if (TopLevelSplit(s).Count == 1) s = StripAssignment(s);
        s = Safe(() => TrailingUnit().Replace(s, "")) ?? s;
        if (Safe(() => Thousands().IsMatch(s)) == true) s = s.Replace(",", "").Replace(" ", "");
        s = s.Replace(" ", "");
        if (s.StartsWith('.')) s = "0" + s;
        if (s.StartsWith("-.", StringComparison.Ordinal)) s = "-0" + s[1..];
        return StripOuterGroup(s);
    }

    /// <summary>
    /// "x = 5" -> "5", "(p,q) = (3,2)" -> "(3,2)", "x \in [0,1]" -> "[0,1]": what follows the last = when the left side is
    /// a name (letters without digits, or one letter with a subscript); "a \approx b" reads as "a = b" unless an = came first.
    /// </summary>
    private static string StripAssignment(string s)
    {
        int approx = s.IndexOf("\\approx", StringComparison.Ordinal);
        if (approx >= 0) s = s.Contains('=') ? s[..approx] : s.Replace("\\approx", "=");
        var m = Safe(() => LeadingAssignment().Match(s));
        if (m is not { Success: true }) return s;
        int eq = s.LastIndexOf('=');
        return eq >= m.Length - 1 ? s[(eq + 1)..] : s[m.Length..];
    }

    private static readonly (string, string)[] Replacements =
    [
        ("\n", " "), ("\r", " "), ("\t", " "), (",\\!", ""), ("\\!", ""), ("\\qquad", " "), ("\\quad", " "), ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\ ", " "), ("~", " "),
        ("\\left", ""), ("\\right", ""), ("\\displaystyle", ""), ("\\geq", ">="), ("\\ge", ">="), ("\\leq", "<="), ("\\le", "<="),
        ("\\neq", "!="), ("\\ne", "!="), ("\\lt", "<"), ("\\gt", ">"), ("≥", ">="), ("≤", "<="), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"),
        ("^{\\circ}", ""), ("^\\circ", ""), ("\\circ", ""), ("°", ""), ("\\$", ""), ("$", ""), ("\\%", ""), ("%", ""),
        ("{,}", ""), ("\\dots", ""), ("\\ldots", ""), ("€", ""), ("²", ""), 
    ];

    private static readonly string[] TextCommands = ["\\textnormal{", "\\textbf{", "\\textit{", "\\text{", "\\mathrm{", "\\mathbf{", "\\mbox{", "\\operatorname{"];

    /// <summary><c>\text{X}</c> and its kin become X, or a space when not <paramref name="keep"/> (a loop, no recursion).</summary>
    private static string Unwrap(string s, bool keep)
    {
        foreach (var cmd in TextCommands)
        {
            int guard = 0;
            for (int i = s.IndexOf(cmd, StringComparison.Ordinal); i >= 0 && guard++ < 1000; i = s.IndexOf(cmd, i, StringComparison.Ordinal))
            {
                int close = MatchingBrace(s, i + cmd.Length - 1);
                if (close < 0) break;
                s = s[..i] + (keep ? s[(i + cmd.Length)..close] : " ") + s[(close + 1)..];
            }
        }
        return s;
    }

    /// <summary>"{x}" -> "x" and a one-element "(x)" -> "x" when the group spans the whole answer.</summary>
    private static string StripOuterGroup(string s)
    {
        for (int guard = 0; guard < 100 && s.Length >= 2; guard++)
        {
            char open = s[0];
            if (open is not ('{' or '(') || MatchingBrace(s, 0) != s.Length - 1) break;
            var inner = s[1..^1];
            if (open == '(' && TopLevelSplit(inner).Count > 1) break;
            s = inner;
        }
        return s;
    }

    /// <summary>An answer's list form: opening bracket ("", "(", "[", "\{"), its top-level elements, closing bracket.</summary>
    private static (string Open, List<string> Items, string Close) Elements(string s)
    {
        if (s.StartsWith("\\{", StringComparison.Ordinal) && s.EndsWith("\\}", StringComparison.Ordinal) && s.Length >= 4)
            return ("\\{", TopLevelSplit(s[2..^2]), "\\}");
        if (s.Length >= 2 && s[0] is '(' or '[' && s[^1] is ')' or ']' && ClosesAtEnd(s))
            return (s[..1], TopLevelSplit(s[1..^1]), s[^1..]);
        return ("", TopLevelSplit(s), "");
    }

    /// <summary>The elements of a list as compared: each without its "name =", and "a \pm b" as the two values a + b, a - b.</summary>
    private static List<string> Items(List<string> raw) => raw.Select(StripAssignment).SelectMany(e =>
    {
        int pm = e.IndexOf("\\pm", StringComparison.Ordinal);
        if (pm < 0 || e.IndexOf("\\pm", pm + 1, StringComparison.Ordinal) >= 0) return [e];
        string left = e[..pm], right = e[(pm + 3)..];
        return new[] { left + "+" + right, left + "-" + right };
    }).ToList();

    /// <summary>Whether the bracket that opens <paramref name="s"/> is closed by its last character ("[0,1)" yes; "(1)(2)" no).</summary>
    private static bool ClosesAtEnd(string s)
    {
        int depth = 0;
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] is '(' or '[' or '{') depth++;
            else if (s[i] is ')' or ']' or '}') depth--;
            if (depth == 0 && i < s.Length - 1) return false;
        }
        return depth == 0;
    }

    /// <summary>Splits at commas and semicolons outside any bracket; an empty part is kept (and matches nothing).</summary>
    private static List<string> TopLevelSplit(string s)
    {
        var parts = new List<string>();
        int depth = 0, start = 0;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c is '(' or '[' or '{') depth++;
            else if (c is ')' or ']' or '}') depth--;
            else if (depth == 0 && c is ',' or ';')
            {
                parts.Add(s[start..i]);
                start = i + 1;
            }
        }
        parts.Add(s[start..]);
        return parts.Select(p => p == "and" ? "" : p).ToList();
    }

    /// <summary>The contents of the last box, joined with the boxes right before it ("\boxed{1}, \boxed{2}" -> "1,2"); null when none closes.</summary>
    private static string? LastBoxed(string text)
    {
        var found = new List<string>();
        int searchEnd = text.Length;
        while (found.Count < 20)
        {
            var (start, content, end) = BoxBefore(text, searchEnd);
            if (start < 0) break;
            if (found.Count > 0)
            {
                if (end > searchEnd || !IsGlue(text[end..searchEnd])) break;
            }
            found.Add(content);
            searchEnd = start;
        }
        if (found.Count == 0) return null;
        found.Reverse();
        return string.Join(",", found);
    }

    /// <summary>Whether the text between two boxes joins them into one answer: up to 40 characters, no digits, at most four words besides commands ("and", "papers and").</summary>
    private static bool IsGlue(string between) =>
        between.Length <= 40 && !between.Any(char.IsAsciiDigit) && (Safe(() => (int?)Word().Count(Command().Replace(between, " "))) ?? 5) <= 4;

    /// <summary>The last <c>\boxed</c>/<c>\fbox</c> that starts before <paramref name="limit"/> and closes: (start, content, end) or start -1.</summary>
    private static (int Start, string Content, int End) BoxBefore(string text, int limit)
    {
        int boxed = limit <= 0 ? -1 : text.LastIndexOf("\\boxed", limit - 1, StringComparison.Ordinal);
        int fbox = limit <= 0 ? -1 : text.LastIndexOf("\\fbox", limit - 1, StringComparison.Ordinal);
        int start = Math.Max(boxed, fbox);
        if (start < 0) return (-1, "", -1);
        int at = start + (start == boxed ? 6 : 5);
        if (at < text.Length && text[at] == '{')
        {
            int close = MatchingBrace(text, at);
            return close < 0 ? (-1, "", -1) : (start, text[(at + 1)..close], close + 1);
        }
        if (at < text.Length && text[at] == ' ')
        {
            int stop = text.IndexOfAny(['$', '\n'], at);
            if (stop < 0) stop = text.Length;
            var content = text[at..stop].Trim();
            return content.Length == 0 ? (-1, "", -1) : (start, content, stop);
        }
        return (-1, "", -1);
    }

    /// <summary>The index of the brace that closes the one at <paramref name="open"/>, or -1 (a loop, so depth costs no stack).</summary>
    private static int MatchingBrace(string s, int open)
    {
        int depth = 0;
        for (int i = open; i < s.Length; i++)
        {
            char c = s[i];
            bool curly = s[open] == '{';
            if (curly ? c == '{' : c is '(' or '[') depth++;
            else if (curly ? c == '}' : c is ')' or ']')
            {
                depth--;
                if (depth == 0) return i;
            }
        }
        return -1;
    }

    /// <summary>
    /// Whether the text holds prose: a run of three or more letters once commands (<c>\frac</c>), <c>\text{...}</c>
    /// groups and the few words answers carry (and, or, pct, percent) are taken out.
    /// </summary>
    private static bool HasProse(string s)
    {
        if (s.Length > 4 * MaxParsedLength) return true;
        var t = Unwrap(s, keep: false);
        return Safe(() => (bool?)Prose().IsMatch(Command().Replace(t, " "))) ?? true;
    }

    private static string FirstLine(string s)
    {
        int nl = s.IndexOf('\n');
        return nl < 0 ? s : s[..nl];
    }

    /// <summary>The first line of <paramref name="s"/> up to the end of its sentence (". " or a line break).</summary>
    private static string Sentence(string s)
    {
        var line = FirstLine(s);
        int stop = line.IndexOf(". ", StringComparison.Ordinal);
        return stop < 0 ? line : line[..stop];
    }

    /// <summary>Runs a regex step; a match that runs past its time budget counts as no match.</summary>
    private static T? Safe<T>(Func<T> step)
    {
        try { return step(); }
        catch (RegexMatchTimeoutException) { return default; }
    }

    [GeneratedRegex(@"answer\s*(?:is|:)\s*:?\s*(.+)", RegexOptions.IgnoreCase, 200)]
    private static partial Regex AnswerIs();

    [GeneratedRegex(@"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\$([^$\n]+?)\$|\\\((.+?)\\\)", RegexOptions.Singleline, 200)]
    private static partial Regex MathSpan();

    [GeneratedRegex(@"(?<![A-Za-z\d.])(?:-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+)", RegexOptions.None, 200)]
    private static partial Regex Number();

    [GeneratedRegex(@"[A-Za-z]+", RegexOptions.None, 200)]
    private static partial Regex Word();

    [GeneratedRegex(@"^\s*(?:[^=\d<>!]{1,24}|[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?(?::[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?)?)(?:=(?![=<>])|\\in(?![A-Za-z]))", RegexOptions.None, 200)]
    private static partial Regex LeadingAssignment();

    [GeneratedRegex(@"(?<=[\d}])(?:\s+[A-Za-z]{2,}|\s*(?:percent(?:age)?|pct))(?:\^\{?\d\}?)?\s*$", RegexOptions.None, 200)]
    private static partial Regex TrailingUnit();

    [GeneratedRegex(@"^-?\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)(?:\.\d+)?$", RegexOptions.None, 200)]
    private static partial Regex Thousands();

    [GeneratedRegex(@"\s+and\s+|\s*\bor\b\s*", RegexOptions.None, 200)]
    private static partial Regex AndList();

    [GeneratedRegex(@"[A-Za-z]{3,}", RegexOptions.None, 200)]
    private static partial Regex Prose();

    [GeneratedRegex(@"\\[A-Za-z]+|\b(?:and|or|pct|percent|percentage)\b", RegexOptions.IgnoreCase, 200)]
    private static partial Regex Command();
}
