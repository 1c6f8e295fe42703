using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace PpoSharp.Serving;

/// <summary>
/// <c>ppo-sharp serve</c>: a Kestrel host with the OpenAI, SGLang and vLLM routes over one <see cref="BatchScheduler"/>.
/// Every request passes the same gate: the API key (all routes when one is set; the weight routes always need one),
/// the body cap, and one error shape (<c>{"error": {...}}</c>, 4xx for the client's mistakes) whatever goes wrong, so
/// no request can stop the server.
/// </summary>
public sealed class Server : IAsyncDisposable
{
    /// <summary>Routes that change the served weights: they need --weights-dir and an API key.</summary>
    public static readonly string[] WeightRoutes = ["/update_weights_from_disk", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"];

    private readonly WebApplication _app;
    private readonly BatchScheduler _scheduler;

    private Server(WebApplication app, BatchScheduler scheduler) => (_app, _scheduler) = (app, scheduler);

    public BatchScheduler Scheduler => _scheduler;

    /// <summary>The address it listens on, e.g. http://127.0.0.1:8000 (the real port when 0 was asked).</summary>
    public Uri Address => new(_app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

    /// <summary>Starts serving <paramref name="served"/>; <paramref name="log"/> gets the --verbose lines.</summary>
    public static async Task<Server> StartAsync(ServedModel served, ServeSettings settings, TextWriter log)
    {
        settings.Validate();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = settings.MaxBodyBytes;
            var address = settings.Host == "localhost" ? IPAddress.Loopback : IPAddress.Parse(settings.Host);
            k.Listen(address, settings.Port);
        });
        var app = builder.Build();
        var scheduler = new BatchScheduler(served, settings.MaxBatch);
        var context = new ServerContext(settings, scheduler);
        app.Use((ctx, next) => Gate(ctx, next, settings, log));
        OpenAiRoutes.Map(app, context);
        SglangRoutes.Map(app, context);
        LoraRoutes.Map(app, context);
        app.MapFallback((HttpContext ctx) => HttpIo.Error(ctx, 404, $"no route {ctx.Request.Method} {ctx.Request.Path}"));
        try { await app.StartAsync(); }
        catch (IOException e)
        {
            scheduler.Dispose();
            throw new PpoSharpException($"cannot listen on {settings.Host}:{settings.Port}: {e.Message}");
        }
        return new Server(app, scheduler);
    }

    /// <summary>Serves until Ctrl+C or SIGTERM, then stops taking requests, lets the running ones end and returns.</summary>
    public async Task WaitForShutdownAsync() => await _app.WaitForShutdownAsync();

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        _scheduler.Dispose();
        await _app.DisposeAsync();
    }

    /// <summary>The gate every request passes: key, errors, and the --verbose line.</summary>
    private static async Task Gate(HttpContext ctx, RequestDelegate next, ServeSettings settings, TextWriter log)
    {
        var clock = Stopwatch.StartNew();
        try
        {
            Authorize(ctx, settings);
            await next(ctx);
        }
        catch (Exception e) when (!ctx.Response.HasStarted && !ctx.RequestAborted.IsCancellationRequested)
        {
            var (status, message, param) = e switch
            {
                ServeException se => (se.Status, se.Message, se.Param),
                PpoSharpException pe => (400, pe.Message, null),
                BadHttpRequestException be => (be.StatusCode, be.Message, null),
                _ => (500, $"internal error: {e.GetType().Name}: {e.Message.Split('\n')[0]}", (string?)null),
            };
            await HttpIo.Error(ctx, status, message, param);
        }
        catch (Exception) when (ctx.RequestAborted.IsCancellationRequested || ctx.Response.HasStarted)
        {
            ctx.Abort();
        }
        finally
        {
            if (settings.Verbose)
                lock (log) log.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} {ctx.Request.Method} {ctx.Request.Path} {ctx.Response.StatusCode} {clock.ElapsedMilliseconds} ms" +
                    (ctx.Items.TryGetValue("rows", out var rows) ? $", {rows} rows, {ctx.Items["tokens"]} tokens" : ""));
        }
    }

    /// <summary>With a key, every request must carry it; the weight routes need a key to be configured at all.</summary>
    private static void Authorize(HttpContext ctx, ServeSettings settings)
    {
        bool weightRoute = WeightRoutes.Contains(ctx.Request.Path.Value, StringComparer.Ordinal);
        if (settings.ApiKey is null)
        {
            if (weightRoute) throw new ServeException(403, "weight endpoints need the server to run with --api-key KEY (and --weights-dir DIR)");
            return;
        }
        var header = ctx.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.Ordinal))
            throw new ServeException(401, "missing API key: send the header Authorization: Bearer KEY");
        var given = Encoding.UTF8.GetBytes(header["Bearer ".Length..].Trim());
        if (!CryptographicOperations.FixedTimeEquals(given, Encoding.UTF8.GetBytes(settings.ApiKey)))
            throw new ServeException(401, "wrong API key");
    }
}
