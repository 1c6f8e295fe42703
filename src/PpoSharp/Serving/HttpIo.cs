using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http;
using PpoSharp.Serving.Protocol;

namespace PpoSharp.Serving;

/// <summary>Reading request bodies under the size cap, and writing JSON, plain text, errors and server-sent events.</summary>
internal static class HttpIo
{
    /// <summary>snake_case names as the protocols spell them; nulls written (vLLM writes "stop_reason": null).</summary>
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>The body as a JSON object; 413 when it is longer than <paramref name="cap"/> bytes (by header or by count).</summary>
    public static async Task<JsonFields> ReadJson(HttpContext ctx, long cap)
    {
        var chunk = new byte[16384];
        if (ctx.Request.ContentLength > cap)
        {
            await Drain(ctx, chunk, 16 * cap);
            throw TooLarge(ctx.Request.ContentLength.Value, cap);
        }
        using var buffer = new MemoryStream();
        int read;
        while ((read = await ctx.Request.Body.ReadAsync(chunk, ctx.RequestAborted)) > 0)
        {
            if (buffer.Length + read > cap)
            {
                await Drain(ctx, chunk, 16 * cap);
                throw TooLarge(buffer.Length + read, cap);
            }
            buffer.Write(chunk, 0, read);
        }
        return JsonFields.Parse(buffer.GetBuffer().AsMemory(0, (int)buffer.Length));
    }

    /// <summary>A body that may be empty (SGLang's control endpoints): an empty object then.</summary>
    public static async Task<JsonFields> ReadOptionalJson(HttpContext ctx, long cap) =>
        ctx.Request.ContentLength is 0 || (ctx.Request.ContentLength is null && !ctx.Request.Headers.TransferEncoding.Any())
            ? JsonFields.Parse("{}"u8.ToArray()) : await ReadJson(ctx, cap);

    /// <summary>
    /// Reads and drops up to <paramref name="most"/> bytes of a refused body, so that a client still uploading gets the
    /// 413 rather than a reset connection; Kestrel's own limit (the same cap) cuts off anything beyond.
    /// </summary>
    private static async Task Drain(HttpContext ctx, byte[] chunk, long most)
    {
        var size = ctx.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>();
        if (size is { IsReadOnly: false }) size.MaxRequestBodySize = most;
        long total = 0;
        try
        {
            int read;
            while (total < most && (read = await ctx.Request.Body.ReadAsync(chunk, ctx.RequestAborted)) > 0) total += read;
        }
        catch (BadHttpRequestException) { }
    }

    private static ServeException TooLarge(long length, long cap) =>
        new(413, $"the request body is {length} bytes or more; the server takes at most {cap} (--max-body-bytes)");

    public static Task Json<T>(HttpContext ctx, T value, int status = 200)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        return ctx.Response.WriteAsync(JsonSerializer.Serialize(value, Options), ctx.RequestAborted);
    }

    public static Task Text(HttpContext ctx, string text, int status = 200)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "text/plain; charset=utf-8";
        return ctx.Response.WriteAsync(text, ctx.RequestAborted);
    }

    public static Task Error(HttpContext ctx, int status, string message, string? param = null) =>
        Json(ctx, new ErrorBody(new ErrorInfo(message, ServeException.TypeOf(status), param, status)), status);

    /// <summary>Starts a server-sent event stream.</summary>
    public static async Task StartEvents(HttpContext ctx)
    {
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "text/event-stream";
        ctx.Response.Headers.CacheControl = "no-cache";
        await ctx.Response.StartAsync(ctx.RequestAborted);
    }

    /// <summary>One <c>data: {json}</c> event, flushed.</summary>
    public static async Task Event<T>(HttpContext ctx, T value)
    {
        await ctx.Response.WriteAsync($"data: {JsonSerializer.Serialize(value, Options)}\n\n", ctx.RequestAborted);
        await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
    }

    public static async Task Done(HttpContext ctx)
    {
        await ctx.Response.WriteAsync("data: [DONE]\n\n", ctx.RequestAborted);
        await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
    }
}
