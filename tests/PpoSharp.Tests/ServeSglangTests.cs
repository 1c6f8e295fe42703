using System.Text.Json.Nodes;

namespace PpoSharp.Tests;

/// <summary>
/// SGLang's routes with the response shapes of its http_server / io_struct: /generate with input_ids (single, batched,
/// n &gt; 1), weight updates from disk whose weight_version then shows in meta_info, a failed load that keeps the old
/// weights, and the control routes. Expected ids and log-probs come from <c>ppo-sharp generate --json</c>.
/// </summary>
public sealed class ServeSglangTests(ServeHostFixture fixture) : IClassFixture<ServeHostFixture>
{
    private readonly ServeHost _host = fixture.Host;
    private static readonly int[] PromptA = [128000, 9906, 11, 1917], PromptB = [128000, 791, 4062];

    [Fact]
    public async Task Generate_SingleInputIds_ObjectWithOutputIdsAndLogprobTriples()
    {
        var expected = ServeHost.GenerateJson(_host.BaseDir, PromptA, 8);
        var r = await _host.PostJson("/generate", $$$"""{"input_ids":[{{{string.Join(",", PromptA)}}}],"sampling_params":{"max_new_tokens":8,"temperature":0},"return_logprob":true}""");
        Assert.IsType<JsonObject>(r);
        Assert.Equal(ServeHost.Ints(expected["ids"]), ServeHost.Ints(r["output_ids"]));
        Assert.Equal(expected["text"]!.GetValue<string>(), r["text"]!.GetValue<string>());
        var meta = r["meta_info"]!;
        Assert.Equal(PromptA.Length, meta["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(8, meta["completion_tokens"]!.GetValue<int>());
        Assert.Equal("length", meta["finish_reason"]!["type"]!.GetValue<string>());
        Assert.Equal(8, meta["finish_reason"]!["length"]!.GetValue<int>());
        Assert.Equal("default", meta["weight_version"]!.GetValue<string>());
        var triples = meta["output_token_logprobs"]!.AsArray();
        var want = ServeHost.Doubles(expected["logprobs"]);
        for (int k = 0; k < 8; k++)
        {
            Assert.Equal(want[k], triples[k]![0]!.GetValue<double>(), 1e-5);                 // [logprob, token_id, text|null]
            Assert.Equal(ServeHost.Ints(expected["ids"])[k], triples[k]![1]!.GetValue<int>());
            Assert.Null(triples[k]![2]);
        }
    }

    [Fact]
    public async Task Generate_BatchedInputIds_ListInPromptOrder()
    {
        var r = await _host.PostJson("/generate", $$$"""{"input_ids":[[{{{string.Join(",", PromptA)}}}],[{{{string.Join(",", PromptB)}}}]],"sampling_params":{"max_new_tokens":5,"temperature":0}}""");
        var list = r.AsArray();
        Assert.Equal(2, list.Count);
        Assert.Equal(ServeHost.Ints(ServeHost.GenerateJson(_host.BaseDir, PromptA, 5)["ids"]), ServeHost.Ints(list[0]!["output_ids"]));
        Assert.Equal(ServeHost.Ints(ServeHost.GenerateJson(_host.BaseDir, PromptB, 5)["ids"]), ServeHost.Ints(list[1]!["output_ids"]));
        Assert.Null(list[0]!["meta_info"]!["output_token_logprobs"]);                      // only with return_logprob
    }

    [Fact]
    public async Task Generate_NTwoOverTwoPrompts_ExpandedAsInputIdsTimesN()
    {
        // SGLang expands a batch with n as input_ids * n: output k*B + i is sample k of prompt i (seed + k here).
        var r = await _host.PostJson("/generate", $$$"""{"input_ids":[[{{{string.Join(",", PromptA)}}}],[{{{string.Join(",", PromptB)}}}]],"sampling_params":{"max_new_tokens":5,"temperature":1.0,"top_k":5,"n":2,"sampling_seed":11}}""");
        var list = r.AsArray();
        Assert.Equal(4, list.Count);
        int[][] prompts = [PromptA, PromptB, PromptA, PromptB];
        int[] seeds = [11, 11, 12, 12];
        for (int j = 0; j < 4; j++)
        {
            Assert.Equal(prompts[j].Length, list[j]!["meta_info"]!["prompt_tokens"]!.GetValue<int>());
            Assert.Equal(ServeHost.Ints(ServeHost.GenerateJson(_host.BaseDir, prompts[j], 5, 1.0, seeds[j], topK: 5)["ids"]), ServeHost.Ints(list[j]!["output_ids"]));
        }
    }

    [Fact]
    public async Task UpdateWeightsFromDisk_NewVersion_ServesNewWeightsAndFailedLoadKeepsThem()
    {
        await using var host = await ServeHost.StartAsync();
        var body = $$$"""{"input_ids":[{{{string.Join(",", PromptA)}}}],"sampling_params":{"max_new_tokens":6,"temperature":0}}""";
        var before = await host.PostJson("/generate", body);
        Assert.Equal(ServeHost.Ints(ServeHost.GenerateJson(host.BaseDir, PromptA, 6)["ids"]), ServeHost.Ints(before["output_ids"]));

        var update = await host.PostJson("/update_weights_from_disk", """{"model_path":"other","weight_version":"step-12","load_format":"auto"}""");
        Assert.True(update["success"]!.GetValue<bool>());
        Assert.Equal(0, update["num_paused_requests"]!.GetValue<int>());
        var version = await host.Get("/get_weight_version");
        Assert.Equal("step-12", version["weight_version"]!.GetValue<string>());
        var after = await host.PostJson("/generate", body);
        var expectedNew = ServeHost.Ints(ServeHost.GenerateJson(host.OtherDir, PromptA, 6)["ids"]);
        Assert.NotEqual(ServeHost.Ints(before["output_ids"]), expectedNew);                 // the update is visible
        Assert.Equal(expectedNew, ServeHost.Ints(after["output_ids"]));
        Assert.Equal("step-12", after["meta_info"]!["weight_version"]!.GetValue<string>());
        var batch = (await host.PostJson("/generate", $$$"""{"input_ids":[[{{{string.Join(",", PromptA)}}}],[{{{string.Join(",", PromptB)}}}]],"sampling_params":{"max_new_tokens":2}}""")).AsArray();
        Assert.All(batch, o => Assert.Equal("step-12", o!["meta_info"]!["weight_version"]!.GetValue<string>()));

        // A folder whose weights are cut short: the load fails, says why, and step-12 keeps serving.
        var broken = Path.Combine(host.WeightsDir, "broken");
        Directory.CreateDirectory(broken);
        foreach (var f in Directory.GetFiles(host.OtherDir)) File.Copy(f, Path.Combine(broken, Path.GetFileName(f)));
        var weights = Path.Combine(broken, "model.safetensors");
        File.WriteAllBytes(weights, File.ReadAllBytes(weights)[..1000]);
        var (status, text) = await host.Post("/update_weights_from_disk", """{"model_path":"broken","weight_version":"step-13"}""");
        Assert.Equal(400, status);
        var failed = JsonNode.Parse(text)!;
        Assert.False(failed["success"]!.GetValue<bool>());
        Assert.Contains("model.safetensors", failed["message"]!.GetValue<string>());
        var still = await host.PostJson("/generate", body);
        Assert.Equal(expectedNew, ServeHost.Ints(still["output_ids"]));
        Assert.Equal("step-12", still["meta_info"]!["weight_version"]!.GetValue<string>());
    }

    [Fact]
    public async Task ControlRoutes_PauseContinueFlushHealth_AnswerAsSglang()
    {
        var pause = await _host.PostJson("/pause_generation", "{}");
        Assert.Equal("ok", pause["status"]!.GetValue<string>());
        var held = _host.PostJson("/generate", $$$"""{"input_ids":[{{{string.Join(",", PromptB)}}}],"sampling_params":{"max_new_tokens":2}}""");
        await Task.Delay(300);
        Assert.False(held.IsCompleted);                                                     // paused: queued, not generated
        Assert.Equal("Generation continued successfully.", (await _host.PostJson("/continue_generation", "{}"))["message"]!.GetValue<string>());
        Assert.Equal(2, (await held)["meta_info"]!["completion_tokens"]!.GetValue<int>());
        var flush = await _host.Http.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/flush_cache") { Headers = { Authorization = new("Bearer", ServeHost.Key) } });
        Assert.StartsWith("Cache flushed.", await flush.Content.ReadAsStringAsync());
        Assert.Equal(200, (await _host.Send(HttpMethod.Get, "/health", null, ServeHost.Key)).Status);
        Assert.Equal(200, (await _host.Send(HttpMethod.Get, "/health_generate", null, ServeHost.Key)).Status);
        Assert.Equal(401, (await _host.Send(HttpMethod.Get, "/health", null, null)).Status);   // with a key, every route needs it
    }
}
