using System.Text.Json;
using PpoSharp.Data;
using PpoSharp.Rewards;
using PpoSharp.Rollouts;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>
/// GRPO and PPO with rollouts from a fleet of <see cref="ModelServer"/>s on loopback (SGLang's and vLLM's protocols over a
/// PpoSharp model), weights synced to them after every update: the trainer's recomputed log-probs match the servers'
/// (rollout_logprob_diff_mean &lt; 1e-3), a killed server leaves the run on the other, a fleet with no server stops the run
/// with one line, and --resume continues once servers are back.
/// </summary>
public class FleetTrainingTests
{
    private static string Init => Path.Combine(TestSupport.FlawedSortModel, "model");
    private static IReadOnlyList<PromptRecord> Prompts => Jsonl.ReadPrompts(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PromptsFile)).Records;

    private static string Urls(params ModelServer[] servers) => "rollout_urls=[" + string.Join(",", servers.Select(s => $"\"{s.Url}\"")) + "]";

    private static GrpoConfig Grpo(params string[] sets) => ConfigLoader.Load(new GrpoConfig(), null,
        ["iterations=4", "batch_size=4", "num_generations=4", "num_mini_batches=2", "max_completion_length=8", "checkpoint_every=2", "lr=3e-4", "seed=3", .. sets],
        c => c.Validate());

    private static List<Dictionary<string, JsonElement>> Rows(string dir) => MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName));

    /// <summary>A GRPO run on <see cref="Grpo"/>'s settings and <paramref name="sets"/>; its metrics rows.</summary>
    private static List<Dictionary<string, JsonElement>> TrainGrpo(params string[] sets)
    {
        var dir = Path.Combine(TestSupport.TempDir(), "g");
        using (var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Grpo(sets), TextWriter.Null)) trainer.Train(dir);
        return Rows(dir);
    }

    private static void AssertSynced(List<Dictionary<string, JsonElement>> rows)
    {
        foreach (var row in rows)
            Assert.True(row["rollout_logprob_diff_mean"].GetDouble() < 1e-3, $"iteration {row["iteration"]}: diff {row["rollout_logprob_diff_mean"]}");
    }

    [Fact]
    public async Task Grpo_SglangFleetOfTwo_DiskSync_ServersMatchTrainer_KillOne_FinishesOnTheOther()
    {
        await using var a = new ModelServer(Init);
        await using var b = new ModelServer(Init, includeEos: false);                  // one server leaves EOS out of output_ids
        var dir = Path.Combine(TestSupport.TempDir(), "g");
        var (log, killedUrl) = (new StringWriter(), a.Url);
        using (var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Grpo("rollout_engine=sglang", Urls(a, b)), log))
        {
            trainer.AfterIteration = row => { if ((int)row["iteration"] == 2) a.Kill().Wait(); };
            trainer.Train(dir);
        }
        var rows = Rows(dir);
        Assert.Equal(4, rows.Count);
        AssertSynced(rows);
        Assert.Equal(["0", "1", "2", "3", "4"], b.Versions);                             // the initial weights, then after every update
        Assert.Equal(["0", "1", "2"], a.Versions);
        Assert.Equal(2, rows[1]["servers_in_service"].GetInt32());
        Assert.Equal(1, rows[3]["servers_in_service"].GetInt32());
        Assert.Contains($"warning: rollout server {killedUrl} out of service", log.ToString());
        Assert.Equal(["v000004"], Directory.GetDirectories(Path.Combine(dir, "weight_sync")).Select(Path.GetFileName));   // older folders deleted
        Assert.All(rows, r => Assert.Equal(r["iteration"].GetInt32(), r["weight_version"].GetInt32()));
    }

    [Fact]
    public async Task Grpo_EveryServerKilled_OneLine_ResumeContinuesWhenServersAreBack()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "g");
        await using (var a = new ModelServer(Init))
        await using (var b = new ModelServer(Init))
        {
            using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Grpo("rollout_engine=sglang", Urls(a, b)), TextWriter.Null);
            trainer.AfterIteration = row => { if ((int)row["iteration"] == 2) { a.Kill().Wait(); b.Kill().Wait(); } };
            var e = Assert.ThrowsAny<PpoSharpException>(() => trainer.Train(dir));
            Assert.StartsWith("rollout: every server is out of service", e.Message);
            Assert.DoesNotContain("\n", e.Message);
        }
        Assert.Equal(2, Rows(dir).Count);
        await using var c = new ModelServer(Init);
        await using var d = new ModelServer(Init);
        using (var resumed = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Grpo("rollout_engine=sglang", Urls(c, d)), TextWriter.Null))
            resumed.Train(dir, resume: true);
        var rows = Rows(dir);
        Assert.Equal([1, 2, 3, 4], rows.Select(r => r["iteration"].GetInt32()));
        Assert.Equal("2", c.Versions[0]);                                                // the checkpoint's weights reach the new servers first
        AssertSynced(rows);
    }

    [Fact]
    public async Task Ppo_SglangServer_DiskSync_ServerMatchesTrainer()
    {
        await using var a = new ModelServer(Init);
        var dir = Path.Combine(TestSupport.TempDir(), "p");
        var config = ConfigLoader.Load(new PpoConfig(), null, ["iterations=2", "batch_size=8", "num_mini_batches=2", "num_ppo_epochs=1", "response_length=8",
            "seed=5", "rollout_engine=sglang", Urls(a)], c => c.Validate());
        using (var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, config, TextWriter.Null)) trainer.Train(dir);
        var rows = Rows(dir);
        AssertSynced(rows);
        Assert.Equal(["0", "1", "2"], a.Versions);
    }

    [Fact]
    public async Task GrpoLora_VllmProtocol_LoraSync_AdapterLoadedInPlaceEveryUpdate_ServerMatchesTrainer()
    {
        await using var a = new ModelServer(Init);
        var dir = Path.Combine(TestSupport.TempDir(), "g");
        using (var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts,
            Grpo("iterations=3", "lora_r=4", "lr=3e-3", "rollout_engine=vllm", "weight_sync=lora", Urls(a)), TextWriter.Null))
            trainer.Train(dir);
        var rows = Rows(dir);
        AssertSynced(rows);
        Assert.Equal(4, a.Loads);                                                        // the initial adapter, then after each of 3 updates
        Assert.True(rows[^1]["rollout_logprob_diff_max"].GetDouble() < 1e-2);
    }

    [Fact]
    public async Task GrpoLora_VllmProtocol_LoraSync_KillOneThenBoth_OneLine_ResumeOnNewServers()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "g");
        string[] sets = ["iterations=6", "lora_r=4", "lr=3e-3", "rollout_engine=vllm", "weight_sync=lora"];
        var log = new StringWriter();
        await using (var a = new ModelServer(Init))
        await using (var b = new ModelServer(Init))
        {
            using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Grpo([.. sets, Urls(a, b)]), log);
            trainer.AfterIteration = row =>
            {
                if ((int)row["iteration"] == 2) a.Kill().Wait();                        // one gone: the run goes on on the other
                if ((int)row["iteration"] == 4) b.Kill().Wait();                        // both gone: one line
            };
            var e = Assert.ThrowsAny<PpoSharpException>(() => trainer.Train(dir));
            Assert.StartsWith("rollout: every server is out of service", e.Message);
            Assert.DoesNotContain("\n", e.Message);
            Assert.Equal(3, a.Loads);                                                    // the initial adapter, after updates 1 and 2
            Assert.Equal(5, b.Loads);                                                    // and after 3 and 4
        }
        Assert.Equal([2, 2, 1, 1], Rows(dir).Select(r => r["servers_in_service"].GetInt32()));
        await using var c = new ModelServer(Init);
        await using var d = new ModelServer(Init);
        using (var resumed = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Grpo([.. sets, Urls(c, d)]), TextWriter.Null))
            resumed.Train(dir, resume: true);
        var rows = Rows(dir);
        Assert.Equal([1, 2, 3, 4, 5, 6], rows.Select(r => r["iteration"].GetInt32()));
        Assert.Equal((3, 3), (c.Loads, d.Loads));                                        // the checkpoint's adapter first, then after updates 5 and 6
        AssertSynced(rows);
    }

    [Fact]
    public async Task Grpo_MaxStalenessOne_NextBatchGeneratedDuringUpdate_StalenessOneNoneDropped()
    {
        await using var a = new ModelServer(Init);
        var rows = TrainGrpo("rollout_engine=sglang", "max_staleness=1", Urls(a));
        Assert.Equal(0, rows[0]["staleness_mean"].GetDouble());                          // the first batch: generated with the current weights
        Assert.All(rows.Skip(1), r => Assert.Equal(1, r["staleness_mean"].GetDouble()));   // then one version behind
        Assert.All(rows, r => Assert.Equal(0, r["dropped_stale"].GetInt32()));
        Assert.True(rows[1]["rollout_logprob_diff_mean"].GetDouble() > 1e-4);            // one update apart: the mismatch IS corrects
    }

    [Fact]
    public async Task Grpo_MaxStalenessTwo_TwoBatchesGeneratedAhead_StalenessRisesToTwo()
    {
        // iteration 1 samples now (version 0) and queues batches 2 and 3, both generated by version 0 during its update;
        // iteration 2 (version 1) takes batch 2: 1 behind; it queues batch 4 (version 1); iteration 3 (version 2) takes
        // batch 3 (version 0): 2 behind; iteration 4 (version 3) takes batch 4 (version 1): 2 behind
        await using var a = new ModelServer(Init);
        var rows = TrainGrpo("rollout_engine=sglang", "max_staleness=2", Urls(a));
        Assert.Equal([0.0, 1, 2, 2], rows.Select(r => r["staleness_mean"].GetDouble()));
        Assert.All(rows, r => Assert.Equal(0, r["dropped_stale"].GetInt32()));
        Assert.Equal(["0", "1", "2", "3", "4"], a.Versions);
    }

    [Fact]
    public async Task Grpo_ServerLagsOneVersion_MaxStalenessOne_BatchAheadDroppedAndCounted()
    {
        // the server says each answer came from one version before the one it was synced to: the first batch (fresh) is
        // 1 behind, taken; from iteration 2 on, the batch generated ahead (reported version v - 2) is 2 behind: dropped,
        // its 4 x 4 completions counted, and a fresh batch (1 behind) taken
        await using var a = new ModelServer(Init) { VersionLag = 1 };
        var rows = TrainGrpo("rollout_engine=sglang", "max_staleness=1", Urls(a));
        Assert.Equal([0, 16, 16, 16], rows.Select(r => r["dropped_stale"].GetInt32()));
        Assert.All(rows, r => Assert.Equal(1, r["staleness_mean"].GetDouble()));
    }

    [Fact]
    public async Task Grpo_ServerLagsOneVersion_Synchronous_StopsWithOneLine()
    {
        await using var a = new ModelServer(Init) { VersionLag = 1 };
        using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Grpo("rollout_engine=sglang", Urls(a)), TextWriter.Null);
        var e = Assert.Throws<PpoSharpException>(() => trainer.Train(Path.Combine(TestSupport.TempDir(), "g")));
        Assert.StartsWith("rollout: a batch generated after the sync of version 0 came from weight version -1, more than max_staleness 0 behind", e.Message);
    }

    [Fact]
    public async Task WeightSync_ServerRefusesTheUpdate_RetriedThenOneLine()
    {
        await using var s = new LoopbackServer(new() { ["/update_weights_from_disk"] = _ => (400, "{\"success\":false,\"message\":\"shape mismatch\",\"num_paused_requests\":0}") });
        var (actor, tokenizer) = RunDirectory.LoadPolicy(Init);
        using var engine = new SglangEngine(new Fleet([s.Url], 30, TextWriter.Null), 1);
        var log = new StringWriter();
        var sync = new WeightSync(Grpo("rollout_engine=sglang", $"rollout_urls=[\"{s.Url}\"]").Rollout, TestSupport.TempDir(), engine, tokenizer, new { }, log);
        var e = Assert.Throws<PpoSharpException>(() => sync.Push(actor, 1));
        Assert.StartsWith($"weight sync of version 1 to {s.Url} failed 3 times: ", e.Message);
        Assert.Contains("shape mismatch", e.Message);
        Assert.EndsWith("so the run stops", e.Message);
        var body = s.Bodies("/update_weights_from_disk");
        Assert.Equal(3, body.Count);
        Assert.Equal("1", body[0]["weight_version"]!.GetValue<string>());
        Assert.EndsWith("v000001", body[0]["model_path"]!.GetValue<string>());
        Assert.Equal(2, log.ToString().Split('\n').Count(l => l.StartsWith("warning: weight sync to")));
    }

    [Theory]
    [InlineData("rollout_engine=vllm|rollout_urls=[\"http://127.0.0.1:1\"]", "weight_sync=disk with rollout_engine=vllm: vLLM has no HTTP endpoint that loads full weights from disk; train LoRA (lora_r > 0) with weight_sync=lora, or use rollout_engine=sglang")]
    [InlineData("rollout_engine=sglang", "rollout_engine=sglang needs rollout_urls")]
    [InlineData("rollout_engine=sglang|rollout_urls=[\"ftp://x\"]", "rollout_urls: 'ftp://x' is not an http(s) URL")]
    [InlineData("rollout_engine=sglang|rollout_urls=[\"http://127.0.0.1:1\"]|weight_sync=lora", "weight_sync=lora sends only LoRA adapters: set lora_r > 0")]
    [InlineData("max_staleness=1", "max_staleness overlaps server generation with training: it needs rollout_engine=sglang or vllm")]
    [InlineData("vllm_importance_sampling_mode=token", "'vllm_importance_sampling_mode' expects one of token_truncate, token_mask, sequence_truncate, sequence_mask")]
    public void Config_BadRolloutKeys_OneLineNamingTheKey(string sets, string message)
    {
        Assert.Contains(message, Assert.Throws<PpoSharpException>(() => Grpo(sets.Split('|'))).Message);
        Assert.Contains(message, Assert.Throws<PpoSharpException>(() => ConfigLoader.Load(new PpoConfig(), null, sets.Split('|'), c => c.Validate())).Message);
    }
}
