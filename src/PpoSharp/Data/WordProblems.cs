using System.Globalization;
using System.Text.RegularExpressions;

namespace PpoSharp.Data;

/// <summary>
/// "Ana has 4 boxes of 3 eggs and breaks 5. How many are left?" -> "&lt;think&gt;4*3=12 12-5=7&lt;/think&gt;#### 7":
/// two-step arithmetic word problems of three templates with six names (about 2,000 distinct questions, whose
/// arithmetic uses a few hundred facts: products of 2-5, sums and differences under 35), a worked answer in TRL's think format that
/// ends in GSM8K's <c>#### N</c>. Flawed demonstrations take the wrong operation at one step of each template (eggs
/// broken are added, pens found are taken away, cards given to each friend are added instead of multiplied), so the
/// arithmetic stays right and only the final answer is wrong.
/// </summary>
public sealed class WordProblemsTask : BuiltinTask
{
    public override string Name => "word-problems";
    public override string Description => "two-step arithmetic word problems (GSM8K's shape, answers of 1-2 digits)";

    /// <summary>
    /// A template: its question (placeholders {n} for a name, {a} {b} {c} for its numbers), numbers drawn for it, and the two steps
    /// (x op y) of the correct (flawed false) and of the flawed worked answer.
    /// </summary>
    private sealed record Template(string Question, Func<Random, (int A, int B, int C)> Numbers, Func<int, int, int, bool, (Step, Step)> Steps);

    /// <summary>One step x op y, and its value.</summary>
    private readonly record struct Step(int X, char Op, int Y)
    {
        public int Value => Op switch { '+' => X + Y, '-' => X - Y, _ => X * Y };
    }

    private static readonly string[] Names = ["Ana", "Ben", "Cal", "Dee", "Eli", "Fay"];

    private static readonly Template[] Templates =
    [
        new("{n} has {a} boxes of {b} eggs and breaks {c}. How many are left?",
            r => Pair(r) is var (a, b) ? (a, b, r.Next(1, Math.Min(9, a * b - 1) + 1)) : default,
            (a, b, c, flawed) => Then(new Step(a, '*', b), p => new Step(p, flawed ? '+' : '-', c))),
        new("{n} buys {a} bags of {b} pens and finds {c} more. How many pens?",
            r => Pair(r) is var (a, b) ? (a, b, r.Next(1, Math.Min(9, a * b - 1) + 1)) : default,
            (a, b, c, flawed) => Then(new Step(a, '*', b), p => new Step(p, flawed ? '-' : '+', c))),
        new("{n} has {a} cards and gives {c} friends {b} each. How many are left?",
            r => (r.Next(2, 5), r.Next(3, 6)) is var (b, c) ? (b * c + r.Next(1, 10), b, c) : default,
            (a, b, c, flawed) => Then(new Step(b, flawed ? '+' : '*', c), p => new Step(a, '-', p))),
    ];

    private static (int, int) Pair(Random r) => (r.Next(2, 6), r.Next(2, 6));

    /// <summary>A first step and the second, which takes the first's value.</summary>
    private static (Step, Step) Then(Step first, Func<int, Step> second) => (first, second(first.Value));

    public override (string Prompt, string Answer) Sample(Random rng)
    {
        var t = Templates[rng.Next(Templates.Length)];
        var (a, b, c) = t.Numbers(rng);
        var question = t.Question.Replace("{n}", Names[rng.Next(Names.Length)]).Replace("{a}", Text(a)).Replace("{b}", Text(b)).Replace("{c}", Text(c));
        return (question, Worked(t, a, b, c, flawed: false));
    }

    /// <summary>The worked answer with the template's wrong operation at one step.</summary>
    public override string Flawed(string prompt, string answer)
    {
        var (t, a, b, c) = Parse(prompt);
        return Worked(t, a, b, c, flawed: true);
    }

    /// <summary>The final number off by 1 to 3 (the steps left as they are).</summary>
    public override string Corrupt(string answer, Random rng)
    {
        int i = answer.LastIndexOf("#### ", StringComparison.Ordinal) + 5;
        int value = int.Parse(answer[i..], CultureInfo.InvariantCulture);
        return answer[..i] + Text(value + rng.Next(1, 4));
    }

    /// <summary>"&lt;think&gt;a*b=p p-c=r&lt;/think&gt;#### r" (the template's two steps).</summary>
    private static string Worked(Template t, int a, int b, int c, bool flawed)
    {
        var (first, second) = t.Steps(a, b, c, flawed);
        return $"<think>{Show(first)} {Show(second)}</think>#### {Text(second.Value)}";

        static string Show(Step s) => $"{Text(s.X)}{s.Op}{Text(s.Y)}={Text(s.Value)}";
    }

    /// <summary>The template and numbers of a question this task wrote.</summary>
    private static (Template T, int A, int B, int C) Parse(string question)
    {
        foreach (var t in Templates)
        {
            var pattern = "^" + Regex.Escape(t.Question).Replace(@"\{n}", @"\w+").Replace(@"\{a}", @"(?<a>\d+)").Replace(@"\{b}", @"(?<b>\d+)").Replace(@"\{c}", @"(?<c>\d+)") + "$";
            if (Regex.Match(question, pattern) is { Success: true } m)
                return (t, Number(m, "a"), Number(m, "b"), Number(m, "c"));
        }
        throw new PpoSharpException($"'{question}' is not a question of task 'word-problems'");

        static int Number(Match m, string g) => int.Parse(m.Groups[g].Value, CultureInfo.InvariantCulture);
    }

    private static string Text(int v) => v.ToString(CultureInfo.InvariantCulture);
}
