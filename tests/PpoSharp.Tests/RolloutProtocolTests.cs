using System.Text.Json.Nodes;
using PpoSharp.Models;
using PpoSharp.Rollouts;

namespace PpoSharp.Tests;

/// <summary>
/// The SGLang and vLLM clients against every response shape of the engines' protocols (PROTOCOLS section 1.1 and 2.1):
/// EOS included in the returned ids or left out (unconfirmed in both engines), older and newer field names, batch order,
/// errors; first as parsing alone, then over HTTP with in-test servers on 127.0.0.1. EOS id 9, max_new_tokens 6.
/// </summary>
public class RolloutProtocolTests
{
    private static readonly int[] Eos = [9];
    private const string U = "http://test/generate";

    private static RolloutCompletion Normalize(RawCompletion r, int maxNew = 6) => RolloutCompletion.FromServer(r.Ids, r.LogProbs, r.Stopped, r.Matched, Eos, maxNew, r.Version ?? 0);

    [Fact]
    public void Sglang_BatchListWithEosInOutputIds_IdsLogProbsVersionAndStop()
    {
        var json = """
            [{"text":"ab","output_ids":[4,5,9],"meta_info":{"id":"a","finish_reason":{"type":"stop","matched":9},"weight_version":"3",
              "output_token_logprobs":[[-0.5,4,null],[-0.25,5,null],[-0.125,9,null]]}},
             {"text":"c","output_ids":[6,7,8,6,7,8],"meta_info":{"id":"b","finish_reason":{"type":"length","length":6},"weight_version":"3",
              "output_token_logprobs":[[-1,6,null],[-1,7,null],[-1,8,null],[-1,6,null],[-1,7,null],[-1,8,null]]}}]
            """;
        var raw = SglangResponse.Read(JsonNode.Parse(json)!, U);
        var a = Normalize(raw[0]);
        Assert.Equal([4, 5, 9], a.Ids);
        Assert.Equal([-0.5f, -0.25f, -0.125f], a.LogProbs!);
        Assert.Equal((FinishReason.Stop, 3L), (a.Finish, a.WeightVersion));
        var b = Normalize(raw[1]);
        Assert.Equal((6, FinishReason.Length), (b.Ids.Count, b.Finish));
    }

    [Fact]
    public void Sglang_EosLeftOutOfOutputIds_MatchedIdAppendedWithoutEngineLogProb()
    {
        // a server that trims the matched stop token: the trainer still sees the EOS it must learn to emit
        var json = """{"output_ids":[4,5],"meta_info":{"finish_reason":{"type":"stop","matched":9},"output_token_logprobs":[[-0.5,4,"a"],[-0.25,5,"b"]]}}""";
        var c = Normalize(SglangResponse.Read(JsonNode.Parse(json)!, U)[0]);
        Assert.Equal([4, 5, 9], c.Ids);
        Assert.Equal(-0.25f, c.LogProbs![1]);
        Assert.True(float.IsNaN(c.LogProbs[2]));
        Assert.Equal(FinishReason.Stop, c.Finish);
    }

    [Fact]
    public void Sglang_OlderShape_NoOutputIds_PairsAndStringFinishReason_VersionDefault()
    {
        // older servers: ids only in the [logprob, id] pairs, finish_reason a bare string, weight_version "default"
        var json = """{"text":"x","meta_info":{"finish_reason":"stop","weight_version":"default","output_token_logprobs":[[-0.5,4],[-0.75,9]]}}""";
        var raw = SglangResponse.Read(JsonNode.Parse(json)!, U)[0];
        Assert.Null(raw.Version);                                                 // not a number: the client's own count is used
        var c = Normalize(raw);
        Assert.Equal([4, 9], c.Ids);
        Assert.Equal([-0.5f, -0.75f], c.LogProbs!);
    }

    [Fact]
    public void FromServer_IdsPastEosOrPastCap_CutAtFirstEosAndAtMaxNew()
    {
        Assert.Equal([4, 9], RolloutCompletion.FromServer([4, 9, 5, 9], null, true, 9, Eos, 6, 0).Ids);       // ignore_eos-like output
        var capped = RolloutCompletion.FromServer([1, 2, 3, 4, 5, 6, 7], null, false, null, Eos, 6, 0);
        Assert.Equal((6, FinishReason.Length), (capped.Ids.Count, capped.Finish));
        // "stop" at the cap without EOS room: nothing appended, counted as truncated
        Assert.Equal(FinishReason.Length, RolloutCompletion.FromServer([1, 2, 3, 4, 5, 6], null, true, 9, Eos, 6, 0).Finish);
    }

    [Fact]
    public void Sglang_AbortOrError_OneLineNamingTheUrl()
    {
        var abort = """{"output_ids":[],"meta_info":{"finish_reason":{"type":"abort","message":"oom","status_code":503}}}""";
        Assert.Contains("http://test/generate: generation aborted", Assert.Throws<PpoSharpException>(() => SglangResponse.Read(JsonNode.Parse(abort)!, U)).Message);
        Assert.Contains("error", Assert.Throws<PpoSharpException>(() => SglangResponse.Read(JsonNode.Parse("""{"error":{"message":"bad input_ids"}}""")!, U)).Message);
    }

    [Fact]
    public void Vllm_ChoicesReorderedByIndex_TokenIdsWithAndWithoutEos()
    {
        // prompt-major choices given out of order; choice 0 includes its stop token, choice 1 leaves it out (stop_reason 9)
        var json = """
            {"id":"cmpl-1","object":"text_completion","model":"m","choices":[
              {"index":1,"text":"","finish_reason":"stop","stop_reason":9,"token_ids":[7],"logprobs":{"token_logprobs":[-2.0],"tokens":["x"]}},
              {"index":0,"text":"","finish_reason":"stop","stop_reason":9,"token_ids":[4,5,9],"prompt_token_ids":[1,2],
               "logprobs":{"text_offset":[0,1,2],"token_logprobs":[-0.5,-0.25,-0.125],"tokens":["a","b","<e>"],"top_logprobs":null}},
              {"index":2,"text":"","finish_reason":"length","stop_reason":null,"token_ids":[1,2,3,4,5,6],"logprobs":{"token_logprobs":[-1,-1,-1,-1,-1,-1]}}],
             "usage":{"prompt_tokens":4,"completion_tokens":10,"total_tokens":14}}
            """;
        var c = VllmResponse.Read(JsonNode.Parse(json)!, U).Select(r => Normalize(r)).ToList();
        Assert.Equal([4, 5, 9], c[0].Ids);
        Assert.Equal([7, 9], c[1].Ids);
        Assert.True(float.IsNaN(c[1].LogProbs![1]));
        Assert.Equal((FinishReason.Length, 6), (c[2].Finish, c[2].Ids.Count));
    }

    [Fact]
    public void Vllm_OlderShape_NoTokenIds_TokensAsTokenIdStrings()
    {
        var json = """{"choices":[{"index":0,"finish_reason":"stop","logprobs":{"token_logprobs":[-0.5,-0.1],"tokens":["token_id:4","token_id:9"]}}]}""";
        var c = Normalize(VllmResponse.Read(JsonNode.Parse(json)!, U)[0]);
        Assert.Equal([4, 9], c.Ids);
        Assert.Equal([-0.5f, -0.1f], c.LogProbs!);
        var bad = """{"choices":[{"index":0,"finish_reason":"stop","logprobs":{"token_logprobs":[-0.5],"tokens":["a"]}}]}""";
        Assert.Contains("is not 'token_id:ID'", Assert.Throws<PpoSharpException>(() => VllmResponse.Read(JsonNode.Parse(bad)!, U)).Message);
    }

    /// <summary>An SGLang /generate handler answering each prompt with [prompt's first id + 10, EOS] (EOS optionally left out), logprob -0.5 each, weight_version 7.</summary>
    private static (int, string) SglangAnswer(JsonNode body, bool includeEos = true)
    {
        var items = body["input_ids"]!.AsArray().Select(p =>
        {
            int first = p![0]!.GetValue<int>() + 10;
            var ids = includeEos ? new JsonArray(first, 9) : new JsonArray(first);
            var lps = new JsonArray(new JsonArray(-0.5, first, null));
            if (includeEos) lps.Add(new JsonArray(-0.5, 9, null));
            return (JsonNode)new JsonObject
            {
                ["output_ids"] = ids,
                ["meta_info"] = new JsonObject { ["finish_reason"] = new JsonObject { ["type"] = "stop", ["matched"] = 9 }, ["weight_version"] = "7", ["output_token_logprobs"] = lps },
            };
        });
        return (200, new JsonArray(items.ToArray()).ToJsonString());
    }

    private static RolloutRequest Request(int prompts) =>
        new(Enumerable.Range(1, prompts).Select(i => (IReadOnlyList<int>)[i, i]).ToList(), new SamplingOptions(6, 0.7, 0, 0.9), Eos, 100);

    [Fact]
    public async Task SglangEngine_OverHttp_RequestFieldsAndTwoServersShareTheBatchInOrder()
    {
        await using var a = new LoopbackServer(new() { ["/generate"] = b => SglangAnswer(b) });
        await using var b = new LoopbackServer(new() { ["/generate"] = b => SglangAnswer(b, includeEos: false) });
        using var engine = new SglangEngine(new Fleet([a.Url, b.Url], 30, TextWriter.Null), groupSize: 2);
        var c = engine.Generate(Request(4));
        Assert.Equal([11, 9], c[0].Ids);
        Assert.Equal([14, 9], c[3].Ids);                                                       // server b left EOS out: appended
        Assert.All(c, x => Assert.Equal(7, x.WeightVersion));
        var sent = a.Bodies("/generate").Single();
        Assert.Equal("[[1,1],[2,2]]", sent["input_ids"]!.ToJsonString());                  // whole groups of 2, token ids only
        Assert.True(sent["return_logprob"]!.GetValue<bool>());
        var sp = sent["sampling_params"]!.AsArray();
        Assert.Equal(6, sp[0]!["max_new_tokens"]!.GetValue<int>());
        Assert.Equal(0.7, sp[0]!["temperature"]!.GetValue<double>());
        Assert.Equal(-1, sp[0]!["top_k"]!.GetValue<int>());                                 // 0 = off here, -1 = off in SGLang
        Assert.Equal("[9]", sp[0]!["stop_token_ids"]!.ToJsonString());
        Assert.NotEqual(sp[0]!["sampling_seed"]!.GetValue<long>(), sp[1]!["sampling_seed"]!.GetValue<long>());   // a group's copies differ
        Assert.Equal("[[3,3],[4,4]]", b.Bodies("/generate").Single()["input_ids"]!.ToJsonString());
    }

    [Fact]
    public async Task VllmEngine_OverHttp_OneEntryPerGroupWithN_ReturnTokenIdsLogprobsZero()
    {
        await using var v = new LoopbackServer(new()
        {
            ["/v1/completions"] = body =>
            {
                var prompts = body["prompt"]!.AsArray();
                int n = body["n"]!.GetValue<int>();
                var choices = new JsonArray();
                for (int p = 0; p < prompts.Count; p++)
                    for (int j = 0; j < n; j++)
                        choices.Add(new JsonObject
                        {
                            ["index"] = p * n + j, ["finish_reason"] = "stop", ["stop_reason"] = 9,
                            ["token_ids"] = new JsonArray(prompts[p]![0]!.GetValue<int>() * 10 + j, 9),
                            ["logprobs"] = new JsonObject { ["token_logprobs"] = new JsonArray(-0.5, -0.5) },
                        });
                return (200, new JsonObject { ["choices"] = choices }.ToJsonString());
            },
        });
        using var engine = new VllmEngine(new Fleet([v.Url], 30, TextWriter.Null), groupSize: 2) { Model = "policy" };
        var c = engine.Generate(Request(4) with { Prompts = [[1], [1], [2], [2]] });
        Assert.Equal([[10, 9], [11, 9], [20, 9], [21, 9]], c.Select(x => x.Ids.ToArray()));
        var sent = v.Bodies("/v1/completions").Single();
        Assert.Equal("[[1],[2]]", sent["prompt"]!.ToJsonString());
        Assert.Equal(2, sent["n"]!.GetValue<int>());
        Assert.Equal(0, sent["logprobs"]!.GetValue<int>());
        Assert.True(sent["return_token_ids"]!.GetValue<bool>());
        Assert.Equal("policy", sent["model"]!.GetValue<string>());
        Assert.Equal("[9]", sent["stop_token_ids"]!.ToJsonString());
        Assert.Equal(6, sent["max_tokens"]!.GetValue<int>());
    }

    [Fact]
    public async Task Fleet_OneServerDownOneFailing_SharesRetriedOnTheLiveServer_WarningLines()
    {
        await using var good = new LoopbackServer(new() { ["/generate"] = b => SglangAnswer(b) });
        await using var failing = new LoopbackServer(new() { ["/generate"] = _ => (500, "{\"error\":{\"message\":\"CUDA error\"}}") });
        var log = new StringWriter();
        using var engine = new SglangEngine(new Fleet([LoopbackServer.DeadUrl(), failing.Url, good.Url], 30, log), groupSize: 1);
        var c = engine.Generate(Request(6));
        Assert.Equal(Enumerable.Range(1, 6).Select(i => i + 10), c.Select(x => x.Ids[0]));   // every prompt answered, in order
        Assert.Equal(6, good.Bodies("/generate").Sum(x => x["input_ids"]!.AsArray().Count));
        Assert.Equal(2, log.ToString().Split('\n').Count(l => l.StartsWith("warning: rollout server")));
        Assert.Contains("HTTP 500", log.ToString());
        Assert.Single(engine.Fleet.InService);
    }

    [Fact]
    public void Fleet_EveryServerDown_OneLineNamingEachServer()
    {
        string x = LoopbackServer.DeadUrl(), y = LoopbackServer.DeadUrl();
        using var engine = new SglangEngine(new Fleet([x, y], 30, TextWriter.Null), groupSize: 1);
        var e = Assert.Throws<FleetDownException>(() => engine.Generate(Request(2)));
        Assert.StartsWith("rollout: every server is out of service: ", e.Message);
        Assert.Contains(x, e.Message);
        Assert.Contains(y, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}
