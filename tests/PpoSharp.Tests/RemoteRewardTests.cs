using System.Text.Json;
using System.Text.Json.Nodes;
using PpoSharp.Data;
using PpoSharp.Rewards;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>Rewards from remote scorers over OpenRLHF's protocol, with in-test reward servers on 127.0.0.1.</summary>
public class RemoteRewardTests
{
    private static RewardInput Input(string prompt, string response, string? solution) =>
        new([new ChatMessage(Role.User, prompt)], response, solution is null ? [] : [solution], new Source("t.jsonl", 1), Query: $"<|user|>{prompt}<|end|><|assistant|>{response}<|end|>");

    /// <summary>
    /// A reward server in the way OpenRLHF's are written: the response is the query's text after the last assistant
    /// marker, special tokens removed; reward 1 when it equals the label (trimmed), else 0; extra_logs carries the lengths.
    /// </summary>
    private static (int, string) ExactMatchServer(JsonNode body)
    {
        var queries = body["query"]!.AsArray().Select(q => q!.GetValue<string>()).ToList();
        var labels = body["labels"]!.AsArray().Select(l => l?.GetValue<string>()).ToList();
        var responses = queries.Select(q => System.Text.RegularExpressions.Regex.Replace(
            q[(q.LastIndexOf("<|assistant|>", StringComparison.Ordinal) + "<|assistant|>".Length)..], @"<\|[a-z]+\|>", "")).ToList();
        var rewards = responses.Zip(labels, (r, l) => l is not null && r.Trim() == l.Trim() ? 1.0 : 0.0).ToList();
        return (200, new JsonObject
        {
            ["rewards"] = new JsonArray(rewards.Select(r => (JsonNode)r).ToArray()),
            ["scores"] = new JsonArray(rewards.Select(r => (JsonNode)r).ToArray()),
            ["extra_logs"] = new JsonObject { ["response_chars"] = new JsonArray(responses.Select(r => (JsonNode)r.Length).ToArray()) },
        }.ToJsonString());
    }

    [Fact]
    public async Task Score_TwoUrls_BatchShardedInOrder_OpenRlhfFields_RewardsAndExtraLogs()
    {
        await using var a = new LoopbackServer(new() { ["/get_reward"] = ExactMatchServer });
        await using var b = new LoopbackServer(new() { ["/get_reward"] = ExactMatchServer });
        using var reward = new RemoteReward([a.Url + "/get_reward", b.Url + "/get_reward"]);
        var scores = reward.Score([Input("p1", "abc", "abc"), Input("p2", "x", "y"), Input("p3", " q ", "q"), Input("p4", "n", null), Input("p5", "zz", "zz")]);
        Assert.Equal([1.0, 0, 1, 0, 1], scores);
        var first = a.Bodies("/get_reward").Single();
        Assert.Equal("[\"p1\",\"p2\"]", first["prompts"]!.ToJsonString());                 // 5 over 2 URLs: 2 then 3
        Assert.Equal("[\"abc\",\"y\"]", first["labels"]!.ToJsonString());
        Assert.Equal("<|user|>p1<|end|><|assistant|>abc<|end|>", first["query"]![0]!.GetValue<string>());
        Assert.Equal("[\"q\",null,\"zz\"]", b.Bodies("/get_reward").Single()["labels"]!.ToJsonString());
        Assert.Equal((3 + 1 + 3 + 1 + 2) / 5.0, reward.LastExtraLogs["response_chars"], 6);
    }

    [Fact]
    public async Task Score_ServerFailsOnceThenAnswers_Retried()
    {
        int calls = 0;
        await using var a = new LoopbackServer(new() { ["/r"] = body => Interlocked.Increment(ref calls) == 1 ? (503, "busy") : ExactMatchServer(body) });
        using var reward = new RemoteReward([a.Url + "/r"], tries: 3, backoffSeconds: 0.01);
        Assert.Equal([1.0], reward.Score([Input("p", "a", "a")]));
        Assert.Equal(2, calls);
    }

    [Theory]
    [InlineData(200, "{\"scores\":[1]}", "answer has no 'rewards' list")]
    [InlineData(200, "{\"rewards\":[1,2]}", "2 rewards for 1 queries")]
    [InlineData(200, "{\"rewards\":[\"high\"]}", "reward \"high\" is not a finite number")]
    [InlineData(200, "<html>oops</html>", "response is not JSON: <html>oops</html>")]
    [InlineData(422, "{\"detail\":\"field required\"}", "HTTP 422: {\"detail\":\"field required\"} (after 3 tries)")]
    public async Task Score_BadAnswer_OneLineNamingTheUrlAndWhatCameBack(int status, string answer, string message)
    {
        await using var a = new LoopbackServer(new() { ["/r"] = _ => (status, answer) });
        using var reward = new RemoteReward([a.Url + "/r"], tries: 3, backoffSeconds: 0.01);
        var e = Assert.Throws<PpoSharpException>(() => reward.Score([Input("p", "a", "a")]));
        Assert.Contains(a.Url + "/r", e.Message);
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain("\n", e.Message);
        if (status == 422) Assert.Single(a.Bodies("/r"));                                  // a client error is not retried
    }

    [Fact]
    public void RewardSpec_Urls_WeightAfterThePathNotThePort_ShardsJoinedWithPlus()
    {
        var r = RewardSpec.Parse("http://127.0.0.1:8000/get_reward:0.5,exact-match");
        Assert.Equal(0.5, r.Parts[0].Weight);
        Assert.Equal(["http://127.0.0.1:8000/get_reward"], ((RemoteReward)r.Parts[0].Function).Urls);
        Assert.Equal(1, RewardSpec.Parse("http://127.0.0.1:8000").Parts[0].Weight);              // a port is not a weight
        Assert.Equal(["http://a:1/r", "http://b:2/r"], ((RemoteReward)RewardSpec.Parse("http://a:1/r+http://b:2/r:2").Parts[0].Function).Urls);
    }

    private static string Init => Path.Combine(TestSupport.FlawedSortModel, "model");
    private static IReadOnlyList<PromptRecord> Prompts => Jsonl.ReadPrompts(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PromptsFile)).Records;

    private static PpoConfig Ppo(int iterations) => new() { Iterations = iterations, BatchSize = 8, NumMiniBatches = 2, NumPpoEpochs = 1, ResponseLength = 8, Seed = 5, CheckpointEvery = 1 };


    private static List<string> Figures(string dir) => MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName))
        .Select(r => string.Join(",", r.Where(kv => !TestSupport.IsTiming(kv.Key) && !kv.Key.StartsWith("extra_logs/")).Select(kv => $"{kv.Key}={kv.Value}"))).ToList();

    [Fact]
    public async Task Ppo_RemoteExactMatchServer_SameRunAsLocalExactMatch_SameSeed()
    {
        await using var server = new LoopbackServer(new() { ["/get_reward"] = ExactMatchServer });
        string local = Path.Combine(TestSupport.TempDir(), "local"), remote = Path.Combine(TestSupport.TempDir(), "remote");
        using (var t = PpoTrainer.FromRunDirectory(Init, new ExactMatch(), Prompts, Ppo(3), TextWriter.Null)) t.Train(local);
        using (var t = PpoTrainer.FromRunDirectory(Init, RewardSpec.Parse(server.Url + "/get_reward"), Prompts, Ppo(3), TextWriter.Null)) t.Train(remote);
        var (a, b) = (Figures(local), Figures(remote));
        Assert.Equal(3, a.Count);
        for (int i = 0; i < a.Count; i++) Assert.Equal(a[i], b[i]);                       // reward, kl, losses, ratios: every figure equal
        Assert.Equal(3, server.Bodies("/get_reward").Count);                               // one request per batch
        Assert.Equal(File.ReadAllBytes(Path.Combine(local, "model.safetensors")), File.ReadAllBytes(Path.Combine(remote, "model.safetensors")));
    }

    [Fact]
    public async Task Ppo_RewardServerDies_OneLineNamingIt_ResumeFromCheckpointFinishes()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "p");
        string url;
        await using (var server = new LoopbackServer(new() { ["/get_reward"] = ExactMatchServer }))
        {
            url = server.Url + "/get_reward";
            using var t = PpoTrainer.FromRunDirectory(Init, new RemoteReward([url], tries: 2, backoffSeconds: 0.01), Prompts, Ppo(3), TextWriter.Null);
            t.AfterIteration = row => { if ((int)row["iteration"] == 1) server.DisposeAsync().AsTask().Wait(); };
            var e = Assert.Throws<PpoSharpException>(() => t.Train(dir));
            Assert.StartsWith($"reward server {url}: ", e.Message);
            Assert.EndsWith("(after 2 tries)", e.Message);
        }
        Assert.Single(MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName)));
        await using var back = new LoopbackServer(new() { ["/get_reward"] = ExactMatchServer });
        using (var t = PpoTrainer.FromRunDirectory(Init, RewardSpec.Parse(back.Url + "/get_reward"), Prompts, Ppo(3), TextWriter.Null)) t.Train(dir, resume: true);
        Assert.Equal([1, 2, 3], MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName)).Select(r => r["iteration"].GetInt32()));
    }
}
