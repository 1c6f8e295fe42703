using System.ClientModel;
using System.Text.Json.Nodes;
using OpenAI;
using OpenAI.Chat;
using System.ClientModel.Primitives;

namespace PpoSharp.Tests;

/// <summary>
/// <c>serve</c> against the official OpenAI .NET library (NuGet OpenAI, a client nobody here wrote) on a loopback port:
/// chat, streaming, completions with token-id prompts, and n &gt; 1 in prompt-major order, each compared with what
/// <c>ppo-sharp generate</c> gives for the same prompt.
/// </summary>
public sealed class ServeOpenAiTests(ServeHostFixture fixture) : IClassFixture<ServeHostFixture>
{
    private readonly ServeHost _host = fixture.Host;
    private static readonly int[] PromptA = [128000, 9906, 11, 1917], PromptB = [128000, 791, 4062, 14198, 39935, 35308];

    private OpenAIClientOptions Options => new() { Endpoint = new Uri(_host.Address, "/v1") };

    private ChatClient Chat => new("tiny", new ApiKeyCredential(ServeHost.Key), Options);

    /// <summary>
    /// POST /v1/completions through the library's own HTTP pipeline (its key policy, retries and error handling): in
    /// OpenAI 2.15 the legacy completions client is internal, so the request is sent on the pipeline that ChatClient uses.
    /// </summary>
    private async Task<JsonNode> Completions(string body)
    {
        var pipeline = Chat.Pipeline;
        using PipelineMessage message = pipeline.CreateMessage();
        message.Request.Method = "POST";
        message.Request.Uri = new Uri(_host.Address, "/v1/completions");
        message.Request.Headers.Set("Content-Type", "application/json");
        message.Request.Content = BinaryContent.Create(BinaryData.FromString(body));
        await pipeline.SendAsync(message);
        Assert.True(message.Response!.Status == 200, message.Response.Content.ToString());
        return JsonNode.Parse(message.Response.Content.ToString())!;
    }

    [Fact]
    public async Task ChatCompletion_Greedy_EqualsGenerate()
    {
        var expected = ServeHost.GenerateChat(_host.BaseDir, "Hello there", 12);
        ChatCompletion reply = await Chat.CompleteChatAsync([new UserChatMessage("Hello there")], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 });
        Assert.Equal(expected, reply.Content[0].Text);
        Assert.Equal(ChatFinishReason.Length, reply.FinishReason);     // random weights do not find EOS in 12 tokens
        Assert.Equal(12, reply.Usage.OutputTokenCount);
    }

    [Fact]
    public async Task ChatCompletionStreaming_Deltas_ConcatenateToTheWholeAnswer()
    {
        var messages = new ChatMessage[] { new SystemChatMessage("Be brief."), new UserChatMessage("Name a colour") };
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 20 };
        ChatCompletion whole = await Chat.CompleteChatAsync(messages, options);
        var streamed = new System.Text.StringBuilder();
        int updates = 0;
        ChatFinishReason? finish = null;
        await foreach (var update in Chat.CompleteChatStreamingAsync(messages, options))
        {
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
            finish ??= update.FinishReason;
            updates++;
        }
        Assert.Equal(whole.Content[0].Text, streamed.ToString());
        Assert.True(updates >= 20, $"{updates} updates for 20 tokens");      // one chunk per token, then the finish
        Assert.Equal(ChatFinishReason.Length, finish);
    }

    [Fact]
    public async Task Completions_TokenIdPrompt_ReturnsTokenIdsAndLogprobsOfGenerate()
    {
        var expected = ServeHost.GenerateJson(_host.BaseDir, PromptA, 10);
        var body = $$"""{"model":"tiny","prompt":[{{string.Join(",", PromptA)}}],"max_tokens":10,"temperature":0,"logprobs":0,"return_token_ids":true}""";
        var choice = (await Completions(body))["choices"]![0]!;
        Assert.Equal(PromptA, ServeHost.Ints(choice["prompt_token_ids"]));
        Assert.Equal(ServeHost.Ints(expected["ids"]), ServeHost.Ints(choice["token_ids"]));
        var want = ServeHost.Doubles(expected["logprobs"]);
        var got = ServeHost.Doubles(choice["logprobs"]!["token_logprobs"]);
        Assert.Equal(want.Length, got.Length);
        for (int k = 0; k < want.Length; k++) Assert.True(Math.Abs(want[k] - got[k]) <= 1e-5, $"token {k}: {got[k]} vs generate's {want[k]}");
        Assert.Equal(expected["text"]!.GetValue<string>(), choice["text"]!.GetValue<string>());
    }

    [Fact]
    public async Task Completions_TwoPromptsNTwo_ChoicesArePromptMajorAndSeeded()
    {
        var body = $$"""{"prompt":[[{{string.Join(",", PromptA)}}],[{{string.Join(",", PromptB)}}]],"n":2,"max_tokens":6,"temperature":1.0,"top_k":5,"seed":7,"return_token_ids":true}""";
        var choices = (await Completions(body))["choices"]!.AsArray();
        Assert.Equal(4, choices.Count);
        // index = prompt * n + sample; sample j of a request with seed s draws as generate --seed s+j does. Top-k 5
        // keeps the draw away from float-rounding ties between near-equal tokens of this random-weight model.
        int[][] prompts = [PromptA, PromptA, PromptB, PromptB];
        int[] seeds = [7, 8, 7, 8];
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(i, choices[i]!["index"]!.GetValue<int>());
            Assert.Equal(prompts[i], ServeHost.Ints(choices[i]!["prompt_token_ids"]));
            var expected = ServeHost.GenerateJson(_host.BaseDir, prompts[i], 6, temperature: 1.0, seed: seeds[i], topK: 5);
            Assert.Equal(ServeHost.Ints(expected["ids"]), ServeHost.Ints(choices[i]!["token_ids"]));
        }
        Assert.NotEqual(ServeHost.Ints(choices[0]!["token_ids"]), ServeHost.Ints(choices[1]!["token_ids"]));
    }

    [Fact]
    public async Task ConcurrentRequests_ArriveTogether_ShareOneBatchWithTheirOwnOutputs()
    {
        // Eight greedy requests sent at once: each must get its own prompt's answer (as when alone), and the scheduler
        // must have put several into one batch.
        var prompts = Enumerable.Range(0, 8).Select(i => PromptB.Take(2 + i % 4).ToArray()).ToArray();
        var answers = await Task.WhenAll(prompts.Select(p => _host.PostJson("/v1/completions",
            $$"""{"prompt":[{{string.Join(",", p)}}],"max_tokens":8,"temperature":0,"return_token_ids":true}""")));
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = ServeHost.GenerateJson(_host.BaseDir, prompts[i], 8);
            Assert.Equal(ServeHost.Ints(alone["ids"]), ServeHost.Ints(answers[i]["choices"]![0]!["token_ids"]));
        }
        Assert.True(_host.Server.Scheduler.LargestBatch > 1, $"largest batch {_host.Server.Scheduler.LargestBatch}");
    }
}
