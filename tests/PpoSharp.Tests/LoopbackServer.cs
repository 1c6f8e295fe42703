using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace PpoSharp.Tests;

/// <summary>
/// A small HTTP server on 127.0.0.1 (ASP.NET Core minimal API, a free port) for protocol tests: each POST path has a
/// handler from the request's JSON body to (status, body); every request body is recorded by path.
/// </summary>
public sealed class LoopbackServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    public ConcurrentDictionary<string, ConcurrentQueue<JsonNode>> Requests { get; } = new();
    public string Url { get; }

    public LoopbackServer(Dictionary<string, Func<JsonNode, (int Status, string Body)>> routes)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        _app = builder.Build();
        foreach (var (path, handler) in routes)
            _app.MapPost(path, async (HttpContext context) =>
            {
                var text = await new StreamReader(context.Request.Body).ReadToEndAsync();
                var body = JsonNode.Parse(text.Length == 0 ? "{}" : text)!;
                Requests.GetOrAdd(path, _ => new()).Enqueue(body);
                var (status, answer) = handler(body);
                context.Response.StatusCode = status;
                context.Response.ContentType = answer.StartsWith('{') || answer.StartsWith('[') ? "application/json" : "text/plain";
                await context.Response.WriteAsync(answer);
            });
        _app.StartAsync().GetAwaiter().GetResult();
        Url = _app.Urls.First();
    }

    /// <summary>The bodies received on <paramref name="path"/>, in order.</summary>
    public List<JsonNode> Bodies(string path) => Requests.TryGetValue(path, out var q) ? [.. q] : [];

    private int _disposed;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    /// <summary>A URL on 127.0.0.1 where nothing listens (a port bound, read and released).</summary>
    public static string DeadUrl()
    {
        var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        int port = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return $"http://127.0.0.1:{port}";
    }
}
