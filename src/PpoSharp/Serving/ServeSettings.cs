using System.Net;

namespace PpoSharp.Serving;

/// <summary>
/// How <c>ppo-sharp serve</c> runs. Defaults are safe: loopback only, no weight endpoints without
/// <see cref="WeightsDir"/> and <see cref="ApiKey"/>, and caps on what one request may ask for.
/// </summary>
/// <param name="Host">Address to bind (default 127.0.0.1); anything but loopback needs <see cref="ApiKey"/>.</param>
/// <param name="Port">TCP port (default 8000; 0 picks a free one).</param>
/// <param name="ApiKey">When set, every request needs <c>Authorization: Bearer KEY</c>; the weight endpoints need it always.</param>
/// <param name="MaxBatch">Most rows (prompt x n) generated together in one batch (default 32).</param>
/// <param name="WeightsDir">The only folder <c>/update_weights_from_disk</c> and <c>/v1/load_lora_adapter</c> read from; none disables them.</param>
/// <param name="MaxBodyBytes">Largest request body (default 4 MiB); larger is a 413.</param>
/// <param name="MaxN">Largest <c>n</c> (default 64).</param>
/// <param name="MaxTokens">Largest <c>max_tokens</c> / <c>max_new_tokens</c> (default 4096; a row also stops where the context ends).</param>
/// <param name="MaxPrompts">Most prompts in one request (default 256).</param>
/// <param name="ServedName">The model's name in requests and <c>/v1/models</c> (default: the model folder's name).</param>
/// <param name="Verbose">One line per request on the log: method, path, status, milliseconds, rows and tokens.</param>
public sealed record ServeSettings(string Host = "127.0.0.1", int Port = 8000, string? ApiKey = null, int MaxBatch = 32,
    string? WeightsDir = null, long MaxBodyBytes = 4 << 20, int MaxN = 64, int MaxTokens = 4096, int MaxPrompts = 256,
    string? ServedName = null, bool Verbose = false)
{
    /// <summary>Checks every field; names the option that is wrong.</summary>
    public ServeSettings Validate()
    {
        if (!IPAddress.TryParse(Host, out var address) && Host != "localhost")
            throw new PpoSharpException($"--host {Host}: not an IP address (use 127.0.0.1, ::1, or an interface address such as 0.0.0.0)");
        if (!(Host == "localhost" || IPAddress.IsLoopback(address!)) && string.IsNullOrEmpty(ApiKey))
            throw new PpoSharpException($"--host {Host} is reachable from other machines: give --api-key KEY too (every request then needs Authorization: Bearer KEY)");
        if (ApiKey is { Length: < 8 }) throw new PpoSharpException("--api-key must be at least 8 characters");
        if (Port is < 0 or > 65535) throw new PpoSharpException($"--port must be 0 to 65535 (got {Port})");
        if (MaxBatch < 1) throw new PpoSharpException($"--max-batch must be at least 1 (got {MaxBatch})");
        if (MaxBodyBytes < 1024) throw new PpoSharpException($"--max-body-bytes must be at least 1024 (got {MaxBodyBytes})");
        if (MaxN < 1) throw new PpoSharpException($"--max-n must be at least 1 (got {MaxN})");
        if (MaxTokens < 1) throw new PpoSharpException($"--max-tokens must be at least 1 (got {MaxTokens})");
        if (MaxPrompts < 1) throw new PpoSharpException($"--max-prompts must be at least 1 (got {MaxPrompts})");
        if (WeightsDir is not null && !Directory.Exists(WeightsDir)) throw new PpoSharpException($"--weights-dir {WeightsDir}: no such folder");
        return this;
    }
}
