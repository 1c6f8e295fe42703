using System.Text.Json.Nodes;

namespace PpoSharp.Data;

/// <summary>
/// A built-in task whose correct answer a rule knows, so that it yields SFT demonstrations, PPO prompts with a
/// <c>solution</c>, and held-out prompts for evaluation. <see cref="Corrupt"/> makes a plausible wrong answer, used
/// for imperfect demonstrations (room for PPO to improve on SFT) and for rejected answers of preference pairs.
/// </summary>
public abstract class BuiltinTask
{
    public abstract string Name { get; }
    public abstract string Description { get; }

    /// <summary>A new prompt text and its correct answer.</summary>
    public abstract (string Prompt, string Answer) Sample(Random rng);

    /// <summary>A wrong answer close to <paramref name="answer"/> (rejected answers of preference pairs).</summary>
    public abstract string Corrupt(string answer, Random rng);

    /// <summary>
    /// The systematic mistake of a careless annotator (imperfect SFT demonstrations). Unlike random corruption,
    /// SFT imitates it, so that a rule reward on <c>solution</c> has something to correct.
    /// </summary>
    public abstract string Flawed(string prompt, string answer);

    public static IReadOnlyList<BuiltinTask> All { get; } = [new SortLettersTask(), new AddNumbersTask(), new WordProblemsTask()];

    public static BuiltinTask Get(string name) =>
        All.FirstOrDefault(t => t.Name == name)
        ?? throw new PpoSharpException($"unknown task '{name}'; allowed: {string.Join(", ", All.Select(t => t.Name))}");
}

/// <summary>"sort: qzmb" -> "bmqz": the letters of a word in alphabetical order. Flawed demonstrations sort descending.</summary>
public sealed class SortLettersTask : BuiltinTask
{
    public override string Name => "sort";
    public override string Description => "sort the letters of a random word (3-8 letters) alphabetically";

    public override (string Prompt, string Answer) Sample(Random rng)
    {
        var letters = Enumerable.Range(0, rng.Next(3, 9)).Select(_ => (char)('a' + rng.Next(26))).ToArray();
        var sorted = letters.Order().ToArray();
        return ($"sort: {new string(letters)}", new string(sorted));
    }

    public override string Corrupt(string answer, Random rng)
    {
        var c = answer.ToCharArray();
        int i = rng.Next(c.Length);
        var wrong = (char)('a' + rng.Next(26));
        if (wrong == c[i]) wrong = (char)('a' + (wrong - 'a' + 1) % 26);
        c[i] = wrong;                                   // one letter replaced
        return new string(c);
    }

    public override string Flawed(string prompt, string answer) => new(answer.Reverse().ToArray());
}

/// <summary>"add: 48+75" -> "123": the sum of two numbers of 1-2 digits. Flawed demonstrations forget the carries.</summary>
public sealed class AddNumbersTask : BuiltinTask
{
    public override string Name => "add";
    public override string Description => "add two numbers of 1-2 digits";

    public override (string Prompt, string Answer) Sample(Random rng)
    {
        int a = rng.Next(0, 100), b = rng.Next(0, 100);
        return ($"add: {a}+{b}", (a + b).ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    public override string Corrupt(string answer, Random rng)
    {
        var c = answer.ToCharArray();
        int i = rng.Next(c.Length);
        c[i] = (char)('0' + (c[i] - '0' + 1 + rng.Next(9)) % 10);   // one digit changed
        return new string(c);
    }

    public override string Flawed(string prompt, string answer)
    {
        var terms = prompt["add: ".Length..].Split('+');
        string a = terms[0].PadLeft(3, '0'), b = terms[1].PadLeft(3, '0');
        var digits = a.Zip(b, (x, y) => (char)('0' + (x - '0' + y - '0') % 10)).ToArray();   // digit-wise, no carry
        return new string(digits).TrimStart('0') is { Length: > 0 } t ? t : "0";
    }
}

/// <summary>What the rejected answers of the preference pairs are.</summary>
public enum PairKind
{
    /// <summary>Half the task's systematic flaw, half one letter or digit wrong: easy to rank.</summary>
    Mixed,
    /// <summary>The chosen answer with one letter or digit wrong: hard to rank, so a reward model trained on few of them memorises them.</summary>
    OneLetter,
}

/// <summary>Writes a task's data files in the notes' format.</summary>
public static class TaskData
{
    public const string SftFile = "sft.jsonl", PromptsFile = "prompts.jsonl", EvalFile = "eval.jsonl", PreferencesFile = "preferences.jsonl";

    /// <summary>
    /// Writes <c>sft.jsonl</c> (chat records; a share <paramref name="noise"/> of the answers carry the task's systematic flaw),
    /// <c>prompts.jsonl</c> (training prompts with solution), <c>eval.jsonl</c> (held-out prompts, disjoint from the
    /// others) and <c>preferences.jsonl</c> (chosen = correct, rejected = flawed or corrupted as <paramref name="pairs"/> says)
    /// into <paramref name="directory"/>.
    /// </summary>
    public static void Write(BuiltinTask task, string directory, int trainCount, int evalCount, double noise, int seed, PairKind pairs = PairKind.Mixed)
    {
        Directory.CreateDirectory(directory);
        var rng = new Random(seed);
        var (train, eval) = Draw(task, rng, trainCount, evalCount);
        Jsonl.Write(Path.Combine(directory, SftFile), train.Select(p =>
            ChatJson(p.Prompt, rng.NextDouble() < noise ? task.Flawed(p.Prompt, p.Answer) : p.Answer)));
        Jsonl.Write(Path.Combine(directory, PromptsFile), train.Select(p => PromptJson(p.Prompt, p.Answer)));
        Jsonl.Write(Path.Combine(directory, EvalFile), eval.Select(p => PromptJson(p.Prompt, p.Answer)));
        Jsonl.Write(Path.Combine(directory, PreferencesFile), train.Select(p => PreferenceJson(p.Prompt, p.Answer, Rejected(p.Prompt, p.Answer))));

        // Mixed: half the rejected answers carry the systematic flaw, half a random corruption; never the correct answer.
        string Rejected(string prompt, string answer) =>
            pairs == PairKind.Mixed && rng.NextDouble() < 0.5 && task.Flawed(prompt, answer) is var flawed && flawed != answer ? flawed : task.Corrupt(answer, rng);
    }

    /// <summary>
    /// Training and held-out samples of <paramref name="task"/>, every prompt distinct (the held-out ones drawn first),
    /// fewer when the task runs out of new prompts.
    /// </summary>
    public static (List<(string Prompt, string Answer)> Train, List<(string Prompt, string Answer)> Eval) Draw(BuiltinTask task, Random rng, int trainCount, int evalCount)
    {
        var seen = new HashSet<string>();
        var eval = Unique(evalCount);
        return (Unique(trainCount), eval);

        List<(string Prompt, string Answer)> Unique(int count)
        {
            var list = new List<(string, string)>();
            for (int tries = 0; list.Count < count && tries < count * 50; tries++)
            {
                var s = task.Sample(rng);
                if (seen.Add(s.Prompt)) list.Add(s);
            }
            return list;
        }
    }

    private static JsonArray UserMessage(string prompt) => [new JsonObject { ["role"] = "user", ["content"] = prompt }];

    private static JsonObject ChatJson(string prompt, string answer)
    {
        var messages = UserMessage(prompt);
        messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = answer });
        return new JsonObject { ["messages"] = messages };
    }

    private static JsonObject PromptJson(string prompt, string answer) =>
        new() { ["messages"] = UserMessage(prompt), ["solution"] = answer };

    private static JsonObject PreferenceJson(string prompt, string chosen, string rejected) =>
        new() { ["messages"] = UserMessage(prompt), ["chosen"] = chosen, ["rejected"] = rejected };
}
