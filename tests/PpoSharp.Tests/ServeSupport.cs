using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using PpoSharp.Serving;
using PpoSharp.Training;
using TorchSharp;

namespace PpoSharp.Tests;

/// <summary>One <see cref="ServeHost"/> shared by the tests of a class.</summary>
public sealed class ServeHostFixture : IAsyncLifetime
{
    public ServeHost Host { get; private set; } = null!;

    public async Task InitializeAsync() => Host = await ServeHost.StartAsync(new ServeSettings(MaxBodyBytes: 1 << 20, MaxN: 16, MaxTokens: 256));

    public async Task DisposeAsync() => await Host.DisposeAsync();
}

/// <summary>
/// A <c>serve</c> host in this process on 127.0.0.1 and a free port, serving a copy of tiny-llama3 (the real Llama 3
/// tokenizer and chat template) from a weights folder that also holds a second model of the same shape (weights
/// scaled) for weight updates. Requests carry the API key.
/// </summary>
public sealed class ServeHost : IAsyncDisposable
{
    public const string Key = "test-key-0123456789";
    public string WeightsDir { get; }
    public string BaseDir { get; }
    public string OtherDir { get; }
    public Server Server { get; }
    public HttpClient Http { get; }
    public Uri Address => Server.Address;

    private ServeHost(string weights, string baseDir, string other, Server server)
    {
        (WeightsDir, BaseDir, OtherDir, Server) = (weights, baseDir, other, server);
        Http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromSeconds(60) };
    }

    public static async Task<ServeHost> StartAsync(ServeSettings? settings = null, TextWriter? log = null)
    {
        var weights = TestSupport.TempDir();
        var baseDir = Path.Combine(weights, "base");
        Directory.Move(TestSupport.HfModel("tiny-llama3"), baseDir);
        var other = Path.Combine(weights, "other");
        var (model, tokenizer) = RunDirectory.LoadPolicy(baseDir);
        using (torch.no_grad()) foreach (var p in model.parameters()) p.mul_(1.5);
        RunDirectory.SavePolicy(other, model, tokenizer, new SftConfig());
        settings ??= new ServeSettings();
        var server = await Server.StartAsync(ServedModel.Load(baseDir, "tiny"), settings with { Port = 0, ApiKey = settings.ApiKey ?? Key, WeightsDir = weights }, log ?? TextWriter.Null);
        return new ServeHost(weights, baseDir, other, server);
    }

    public Task<(int Status, string Body)> Post(string path, string json, string? key = Key) => Send(HttpMethod.Post, path, json, key);

    public async Task<JsonNode> Get(string path)
    {
        var (status, body) = await Send(HttpMethod.Get, path, null, Key);
        Assert.True(status == 200, $"{path}: {status} {body}");
        return JsonNode.Parse(body)!;
    }

    public async Task<(int Status, string Body)> Send(HttpMethod method, string path, string? json, string? key)
    {
        using var request = new HttpRequestMessage(method, path) { Content = json is null ? null : new StringContent(json, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = key is null ? null : new AuthenticationHeaderValue("Bearer", key);
        request.Headers.ExpectContinue = json?.Length > 1 << 20;                 // as curl does for large bodies: a 413 comes before the upload
        using var response = await Http.SendAsync(request);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    public async Task<JsonNode> PostJson(string path, string json)
    {
        var (status, body) = await Post(path, json);
        Assert.True(status == 200, $"{path}: {status} {body}");
        return JsonNode.Parse(body)!;
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
    }

    private static readonly Dictionary<string, (PpoSharp.Models.Decoder, PpoSharp.Text.ITokenizer)> Loaded = [];

    /// <summary>
    /// What <c>ppo-sharp generate --prompt-ids .. --json</c> prints (the reference the server must reproduce), by the
    /// library call generate makes (Inspection.Complete with generate's options and seed) on a model loaded once per folder.
    /// </summary>
    public static JsonNode GenerateJson(string model, IEnumerable<int> promptIds, int maxNew, double temperature = 0, int seed = 1, int topK = 0)
    {
        PpoSharp.Models.Decoder policy;
        PpoSharp.Text.ITokenizer tokenizer;
        lock (Loaded)
        {
            if (!Loaded.TryGetValue(model, out var pair)) Loaded[model] = pair = RunDirectory.LoadPolicy(model);
            (policy, tokenizer) = pair;
        }
        var options = new PpoSharp.Models.SamplingOptions(maxNew, temperature == 0 ? 1 : temperature, topK, 1.0, Greedy: temperature == 0);
        using var generator = new torch.Generator((ulong)seed);
        PpoSharp.Training.Completion completion;
        lock (policy) completion = Inspection.Complete(policy, tokenizer, [.. promptIds], options, generator);
        return JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(completion, PpoSharp.Json.Compact))!;
    }

    /// <summary>What <c>ppo-sharp generate --prompt TEXT</c> prints: the greedy reply through the chat template.</summary>
    public static string GenerateChat(string model, string prompt, int maxNew)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = Cli.Cli.Run(["generate", "--model", model, "--prompt", prompt, "--max-new-tokens", $"{maxNew}", "--greedy"], stdout, stderr);
        Assert.True(code == 0, stderr.ToString());
        return stdout.ToString().TrimEnd('\n');
    }

    public static int[] Ints(JsonNode? array) => [.. array!.AsArray().Select(x => x!.GetValue<int>())];

    public static double[] Doubles(JsonNode? array) => [.. array!.AsArray().Select(x => x!.GetValue<double>())];
}
