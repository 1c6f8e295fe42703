using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>
/// The bad-input corpus (BadInputs/): every case through the real command line, one assertion each on the message,
/// plus the shared checks: exit code 2, a single line on stderr, no stack trace, nothing on stdout, no --out written.
/// </summary>
public class BadInputTests
{
    private static string Corpus(string name) => Path.Combine(AppContext.BaseDirectory, "BadInputs") + Path.DirectorySeparatorChar + name;

    private static string Policy => Path.Combine(TestSupport.TrainedSortModel, "model");
    private static string Prompts => Path.Combine(TestSupport.TrainedSortModel, "data", "prompts.jsonl");

    /// <summary>Model directories spoiled in the ways the issue lists, made once from the trained test model.</summary>
    private static readonly Lazy<Dictionary<string, string>> Spoiled = new(() =>
    {
        var root = TestSupport.TempDir();
        string Copy(string name)
        {
            var dir = Path.Combine(root, name);
            Directory.CreateDirectory(dir);
            foreach (var f in Directory.GetFiles(Policy)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            return dir;
        }
        var pickle = Copy("pickle");
        File.WriteAllBytes(Path.Combine(pickle, RunDirectory.ModelFile), [0x80, 0x02, (byte)'c', (byte)'o', (byte)'s', 0, 0, 0, 0, 0, 0, 0]);
        var truncated = Copy("truncated");
        var bytes = File.ReadAllBytes(Path.Combine(truncated, RunDirectory.ModelFile));
        File.WriteAllBytes(Path.Combine(truncated, RunDirectory.ModelFile), bytes[..(bytes.Length / 2)]);
        var shapes = Copy("shapes");
        var config = Path.Combine(shapes, RunDirectory.ConfigFile);
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"d_model\": 64", "\"d_model\": 32"));
        var noTokenizer = Copy("no-tokenizer");
        File.Delete(Path.Combine(noTokenizer, "tokenizer.json"));
        var badConfig = Copy("bad-config");
        File.WriteAllText(Path.Combine(badConfig, RunDirectory.ConfigFile), "{\"kind\": \"policy\"");
        return new() { ["pickle"] = pickle, ["truncated"] = truncated, ["shapes"] = shapes, ["no-tokenizer"] = noTokenizer, ["bad-config"] = badConfig };
    });

    public static TheoryData<string, string[], string> Cases => new()
    {
        { "broken JSON line", ["sft", "--data", "@broken-json.jsonl", "--out", "{out}"], "broken-json.jsonl:2: invalid JSON" },
        { "content of the wrong type", ["sft", "--data", "@content-not-string.jsonl", "--out", "{out}"], "content-not-string.jsonl:1: 'messages[0].content' must be a string, not array" },
        { "unknown role", ["sft", "--data", "@unknown-role.jsonl", "--out", "{out}"], "unknown-role.jsonl:1: 'messages[0].role' is 'robot'; allowed: system, user, assistant" },
        { "empty content", ["sft", "--data", "@empty-content.jsonl", "--out", "{out}"], "empty-content.jsonl:1: 'messages[0].content' is empty" },
        { "record longer than the context", ["sft", "--data", "@huge-record.jsonl", "--out", "{out}"], "huge-record.jsonl:1: record is 10010 tokens, longer than context_length 64" },
        { "record that is not an object", ["sft", "--data", "@not-an-object.jsonl", "--out", "{out}"], "not-an-object.jsonl:1: a record must be a JSON object" },
        { "missing messages", ["sft", "--data", "@missing-messages.jsonl", "--out", "{out}"], "missing-messages.jsonl:1: missing field 'messages'" },
        { "messages not an array", ["sft", "--data", "@messages-not-array.jsonl", "--out", "{out}"], "messages-not-array.jsonl:1: 'messages' must be an array" },
        { "empty file", ["sft", "--data", "@empty.jsonl", "--out", "{out}"], "empty.jsonl: no records" },
        { "chat record without an answer", ["sft", "--data", "@prompt-only.jsonl", "--out", "{out}"], "prompt-only.jsonl:1: 'messages' has no assistant message to learn from" },
        { "solution of the wrong type", ["ppo", "--data", "@solution-object.jsonl", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}"], "solution-object.jsonl:1: 'solution' must be a string or an array of strings" },
        { "solution group with a number", ["eval", "--model", "{policy}", "--data", "@solution-mixed-group.jsonl"], "solution-mixed-group.jsonl:1: 'solution' must be a string or an array of strings" },
        { "rule reward without solution", ["eval", "--model", "{policy}", "--data", "@prompt-only.jsonl", "--reward", "exact-match"], "prompt-only.jsonl:1: reward 'exact-match' needs a 'solution' field" },
        { "pair without rejected", ["rm", "--data", "@pair-missing-rejected.jsonl", "--init", "{policy}", "--out", "{out}"], "pair-missing-rejected.jsonl:1: missing field 'rejected'" },
        { "identical chosen and rejected", ["rm", "--data", "@pair-identical.jsonl", "--init", "{policy}", "--out", "{out}"], "pair-identical.jsonl:1: 'chosen' and 'rejected' are identical" },
        { "margin not a number", ["rm", "--data", "@pair-bad-margin.jsonl", "--init", "{policy}", "--out", "{out}"], "pair-bad-margin.jsonl:1: 'margin' must be a finite number" },
        { "config file truncated", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--config", "@config-truncated.json"], "config-truncated.json: invalid JSON" },
        { "config file with unknown key", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--config", "@config-unknown-key.json"], "config-unknown-key.json: unknown key 'learning_rate'; allowed: iterations" },
        { "config enum value", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--config", "@config-bad-enum.json"], "config-bad-enum.json: 'critic' expects one of separate, shared" },
        { "config not an object", ["sft", "--data", "{prompts}", "--out", "{out}", "--config", "@config-not-object.json"], "config-not-object.json: a config file must hold one JSON object" },
        { "unknown --set key", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "clip_range=0.2"], "--set clip_range=0.2: unknown key 'clip_range'" },
        { "cliprange <= 0", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "cliprange=0"], "cliprange must be > 0 (got 0)" },
        { "unknown --gold reward", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--gold", "edit", "--out", "{out}"], "--gold: unknown reward 'edit'" },
        { "lam > 1", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "lam=1.5"], "lam must be in [0, 1] (got 1.5)" },
        { "minibatches not dividing the batch", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "num_mini_batches=5"], "num_mini_batches (5) must divide batch_size (64)" },
        { "value of the wrong type", ["sft", "--data", "{prompts}", "--out", "{out}", "--set", "steps=many"], "--set steps=many: 'steps' expects an integer" },
        { "missing model directory", ["ppo", "--data", "{prompts}", "--init", "/nonexistent/sft", "--reward", "edit-distance", "--out", "{out}"], "/nonexistent/sft: model directory not found" },
        { "directory that is no model", ["generate", "--model", "{data}", "--prompt", "sort: ba"], "config.json: missing (not a PpoSharp run directory)" },
        { "model file that is a pickle", ["generate", "--model", "{spoiled:pickle}", "--prompt", "sort: ba"], "model.safetensors: not a safetensors file" },
        { "truncated model file", ["generate", "--model", "{spoiled:truncated}", "--prompt", "sort: ba"], "model.safetensors: truncated (" },
        { "model shapes differ from config", ["generate", "--model", "{spoiled:shapes}", "--prompt", "sort: ba"], "the config expects Float32 [" },
        { "missing tokenizer", ["generate", "--model", "{spoiled:no-tokenizer}", "--prompt", "sort: ba"], "tokenizer.json: missing" },
        { "corrupt run config", ["eval", "--model", "{spoiled:bad-config}", "--data", "{prompts}"], "config.json: invalid config" },
        { "reward model where a policy is needed", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "model:{policy}", "--out", "{out}"], "holds a policy, but a reward model is needed here" },
        { "unknown reward", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "bleu", "--out", "{out}"], "--reward: unknown reward 'bleu'" },
    };

    [Theory, MemberData(nameof(Cases))]
    public void BadInput_OneLineNamingTheProblem_ExitCode2_NothingWritten(string name, string[] args, string message)
    {
        var outDir = Path.Combine(TestSupport.TempDir(), "out");
        var resolved = args.Select(a => a
            .Replace("{out}", outDir).Replace("{policy}", Policy).Replace("{prompts}", Prompts)
            .Replace("{data}", Path.Combine(TestSupport.TrainedSortModel, "data"))
            .Replace("@", Corpus(""))).Select(a => a.StartsWith("{spoiled:") ? Spoiled.Value[a[9..^1]] : a).ToArray();
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = Cli.Cli.Run(resolved, stdout, stderr);
        var errors = stderr.ToString();
        Assert.True(code == 2, $"{name}: exit {code}: {errors}");
        Assert.True(errors.Contains(message, StringComparison.Ordinal), $"{name}: expected '{message}' in: {errors}");
        Assert.Single(errors.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", errors);
        Assert.Equal("", stdout.ToString());
        Assert.False(Directory.Exists(outDir), $"{name}: {outDir} was written");
    }

    [Fact]
    public void ExistingRunDirectory_IsNeverOverwrittenWithoutResumeOrForce()
    {
        var dir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(dir, "metrics.jsonl"), "{\"step\":1}\n");
        var before = Directory.GetFiles(dir).ToDictionary(f => f, File.ReadAllText);
        foreach (var args in new[]
                 {
                     new[] { "sft", "--data", Path.Combine(TestSupport.TrainedSortModel, "data", "sft.jsonl"), "--out", dir, "--set", "steps=1" },
                     new[] { "ppo", "--data", Prompts, "--init", Policy, "--reward", "edit-distance", "--out", dir, "--set", "iterations=1" },
                     new[] { "rm", "--data", Path.Combine(TestSupport.TrainedSortModel, "data", "preferences.jsonl"), "--init", Policy, "--out", dir, "--set", "steps=1" },
                 })
        {
            var stderr = new StringWriter();
            Assert.Equal(2, Cli.Cli.Run(args, new StringWriter(), stderr));
            Assert.Contains("output directory is not empty (use --resume to continue it, --force to start over", stderr.ToString());
        }
        Assert.Equal(before, Directory.GetFiles(dir).ToDictionary(f => f, File.ReadAllText));
    }
}
