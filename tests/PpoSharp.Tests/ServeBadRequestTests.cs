using System.Diagnostics;
using System.Text.Json.Nodes;

namespace PpoSharp.Tests;

/// <summary>
/// Requests the server must refuse with a 4xx and one message in OpenAI's error shape, while it keeps serving; and a
/// short load of 16 concurrent clients with no dropped or mixed-up response.
/// </summary>
public sealed class ServeBadRequestTests(ServeHostFixture fixture) : IClassFixture<ServeHostFixture>
{
    private readonly ServeHost _host = fixture.Host;
    private const string Ok = """{"prompt":[128000,9906],"max_tokens":2,"temperature":0}""";

    /// <summary>(path, body, key, status, a fragment of the message).</summary>
    public static TheoryData<string, string, string?, int, string> Cases => new()
    {
        { "/v1/completions", """{"prompt": [1, 2""", ServeHost.Key, 400, "not valid JSON" },
        { "/v1/completions", """[1, 2]""", ServeHost.Key, 400, "must be a JSON object" },
        { "/v1/completions", """{"prompt": 5}""", ServeHost.Key, 400, "'prompt' must be" },
        { "/v1/completions", """{"prompt": [1, 2], "n": "two"}""", ServeHost.Key, 400, "'n' must be an integer" },
        { "/v1/completions", """{"prompt": [1, 2], "temperature": "hot"}""", ServeHost.Key, 400, "'temperature' must be a number" },
        { "/v1/completions", """{"prompt": [1, 2], "n": 100000}""", ServeHost.Key, 400, "--max-n" },
        { "/v1/completions", """{"prompt": [1, 2], "max_tokens": 1000000000}""", ServeHost.Key, 400, "--max-tokens" },
        { "/v1/completions", """{"prompt": [1, 999999999]}""", ServeHost.Key, 400, "outside the vocabulary" },
        { "/v1/completions", "{\"prompt\": [" + string.Join(",", Enumerable.Repeat(9906, 128)) + "]}", ServeHost.Key, 400, "maximum context length is 128" },
        { "/v1/completions", """{"model": "gpt-4", "prompt": [1, 2]}""", ServeHost.Key, 404, "`gpt-4` does not exist" },
        { "/v1/completions", Ok, null, 401, "missing API key" },
        { "/v1/completions", Ok, "wrong-key-0000000", 401, "wrong API key" },
        { "/v1/chat/completions", """{"messages": "hi"}""", ServeHost.Key, 400, "'messages' must be a non-empty list" },
        { "/v1/chat/completions", """{"messages": [{"role": "robot", "content": "x"}]}""", ServeHost.Key, 400, "messages[0].role" },
        { "/generate", """{"text": "hi", "input_ids": [1, 2]}""", ServeHost.Key, 400, "exactly one of 'text' and 'input_ids'" },
        { "/generate", """{"input_ids": [1, 2], "sampling_params": 3}""", ServeHost.Key, 400, "'sampling_params' must be an object" },
        { "/generate", """{"input_ids": [1, 2], "sampling_params": {"max_new_tokens": -4}}""", ServeHost.Key, 400, "sampling_params.max_new_tokens" },
        { "/update_weights_from_disk", """{"model_path": "/etc"}""", ServeHost.Key, 400, "outside the server's --weights-dir" },
        { "/update_weights_from_disk", """{"model_path": "base/../../x"}""", ServeHost.Key, 400, "'..' is not allowed" },
        { "/update_weights_from_disk", """{"model_path": "link-out"}""", ServeHost.Key, 400, "symbolic link leads outside" },
        { "/update_weights_from_disk", """{"model_path": "other"}""", null, 401, "missing API key" },
        { "/v1/load_lora_adapter", """{"lora_name": "a", "lora_path": "/tmp"}""", ServeHost.Key, 400, "outside the server's --weights-dir" },
        { "/v1/unload_lora_adapter", """{"lora_name": "never-loaded"}""", ServeHost.Key, 404, "cannot be found" },
        { "/no/such/route", "{}", ServeHost.Key, 404, "no route" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task BadRequest_Refused_4xxWithOneMessageAndServerKeepsServing(string path, string body, string? key, int status, string message)
    {
        var outside = TestSupport.TempDir();
        var link = Path.Combine(_host.WeightsDir, "link-out");
        if (!Directory.Exists(link)) Directory.CreateSymbolicLink(link, outside);
        var (got, text) = await _host.Post(path, body, key);
        Assert.True(got == status, $"{path} {body[..Math.Min(body.Length, 60)]}: {got} {text}");
        // OpenAI's {"error": {...}} everywhere, except SGLang's own {"success": false, "message"} for a weight update.
        var json = JsonNode.Parse(text)!;
        var said = (json["error"]?["message"] ?? json["message"])!.GetValue<string>();
        Assert.Contains(message, said);
        Assert.DoesNotContain("\n", said);
        if (json["error"] is { } error) Assert.Equal(status, error["code"]!.GetValue<int>());
        else Assert.False(json["success"]!.GetValue<bool>());
        var next = await _host.PostJson("/v1/completions", Ok);
        Assert.Equal(2, next["usage"]!["completion_tokens"]!.GetValue<int>());
    }

    [Fact]
    public async Task HugeBody_Over1MiB_Is413AndServerKeepsServing()
    {
        var body = "{\"prompt\": \"" + new string('a', 2 << 20) + "\"}";
        var (status, text) = await _host.Post("/v1/completions", body);
        Assert.Equal(413, status);
        Assert.Contains("--max-body-bytes", JsonNode.Parse(text)!["error"]!["message"]!.GetValue<string>());
        Assert.Equal("length", (await _host.PostJson("/v1/completions", Ok))["choices"]![0]!["finish_reason"]!.GetValue<string>());
    }

    [Fact]
    public async Task SixteenClients_ThreeSeconds_EveryAnswerIsItsOwn()
    {
        // 16 clients each loop over their own prompt for 3 s; every answer must carry the client's prompt ids and the
        // greedy ids that prompt gets alone (a mixed-up or dropped response fails).
        var prompts = Enumerable.Range(0, 16).Select(i => new[] { 128000, 9906 + i, 11 + i }).ToArray();
        var alone = new int[16][];
        for (int i = 0; i < 16; i++)                                                             // each prompt alone first
            alone[i] = ServeHost.Ints((await _host.PostJson("/v1/completions", $$"""{"prompt":[{{string.Join(",", prompts[i])}}],"max_tokens":4,"temperature":0,"return_token_ids":true}"""))["choices"]![0]!["token_ids"]);
        var clock = Stopwatch.StartNew();
        var counts = await Task.WhenAll(prompts.Select(async (p, i) =>
        {
            int n = 0;
            while (clock.Elapsed < TimeSpan.FromSeconds(3) && n < 200)
            {
                var r = (await _host.PostJson("/v1/completions", $$"""{"prompt":[{{string.Join(",", p)}}],"max_tokens":4,"temperature":0,"return_token_ids":true}"""))["choices"]![0]!;
                Assert.Equal(p, ServeHost.Ints(r["prompt_token_ids"]));
                Assert.Equal(alone[i], ServeHost.Ints(r["token_ids"]));
                n++;
            }
            return n;
        }));
        Assert.All(counts, c => Assert.True(c > 0));
        Assert.True(_host.Server.Scheduler.LargestBatch > 1);
    }
}
