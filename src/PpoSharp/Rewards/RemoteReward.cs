using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace PpoSharp.Rewards;

/// <summary>
/// Rewards from remote scorers over OpenRLHF's remote reward protocol (<c>--remote_rm_url</c>, its <c>serve_rm.py</c>):
/// <c>POST {"query": [...], "prompts": [...], "labels": [...]}</c> answered by <c>{"rewards": [...]}</c> with optional
/// <c>"scores"</c> and <c>"extra_logs": {name: [...]}</c>, every list parallel to <c>query</c>. <c>query</c> is the prompt
/// as the model saw it followed by the response (special tokens kept), <c>prompts</c> the prompt text, <c>labels</c> the
/// record's solution (the first of a group; null without one). One request per batch, split evenly over several URLs
/// (OpenRLHF 0.9's sharding), each with a timeout and tries with doubling backoff; then one line naming the URL and what came back.
/// </summary>
public sealed class RemoteReward : IRewardFunction, IDisposable
{
    private readonly HttpClient _http;
    private readonly int _tries;
    private readonly TimeSpan _backoff;

    /// <param name="urls">One URL, or several that share each batch.</param>
    /// <param name="timeoutSeconds">Per request (OpenRLHF: 180 s).</param>
    /// <param name="tries">Attempts per request (OpenRLHF: 5).</param>
    /// <param name="backoffSeconds">Wait after the first failed attempt, doubled after each further one.</param>
    public RemoteReward(IReadOnlyList<string> urls, double timeoutSeconds = 180, int tries = 5, double backoffSeconds = 1)
    {
        if (urls.Count == 0) throw new PpoSharpException("--reward: a remote reward needs a URL");
        foreach (var u in urls)
            if (!Uri.TryCreate(u, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
                throw new PpoSharpException($"--reward: '{u}' is not an http(s) URL");
        Urls = urls;
        _http = new HttpClient { Timeout = TimeSpan.FromSeconds(timeoutSeconds) };
        (_tries, _backoff) = (Math.Max(1, tries), TimeSpan.FromSeconds(backoffSeconds));
    }

    public IReadOnlyList<string> Urls { get; }
    public string Name => string.Join("+", Urls);

    /// <summary>The mean of each <c>extra_logs</c> list of the last batch (what the trainers add to their metrics).</summary>
    public IReadOnlyDictionary<string, double> LastExtraLogs { get; private set; } = new Dictionary<string, double>();

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch)
    {
        int shards = Math.Min(Urls.Count, batch.Count);
        var tasks = Enumerable.Range(0, shards).Select(s =>
        {
            int from = batch.Count * s / shards, to = batch.Count * (s + 1) / shards;
            return Post(Urls[s], batch.Skip(from).Take(to - from).ToList());
        }).ToArray();
        Rollouts.Fleet.WaitAll(tasks);
        var extra = new Dictionary<string, List<double>>();
        foreach (var (_, logs) in tasks.Select(t => t.Result))
            foreach (var (k, v) in logs) (extra.TryGetValue(k, out var l) ? l : extra[k] = []).AddRange(v);
        LastExtraLogs = extra.Where(kv => kv.Value.Count > 0).ToDictionary(kv => kv.Key, kv => kv.Value.Average());
        return tasks.SelectMany(t => t.Result.Rewards).ToArray();
    }

    private async Task<(List<double> Rewards, Dictionary<string, List<double>> Extra)> Post(string url, List<RewardInput> shard)
    {
        var body = new
        {
            query = shard.Select(x => x.Query ?? x.Prompt + x.Response).ToList(),
            prompts = shard.Select(x => x.Prompt).ToList(),
            labels = shard.Select(x => x.Solutions.Count > 0 ? x.Solutions[0] : null).ToList(),
        };
        string failure = "";
        for (int attempt = 1; attempt <= _tries; attempt++)
        {
            if (attempt > 1) await Task.Delay(_backoff * Math.Pow(2, attempt - 2));
            try
            {
                using var response = await _http.PostAsJsonAsync(url, body);
                var text = await response.Content.ReadAsStringAsync();
                if (!response.IsSuccessStatusCode)
                {
                    failure = $"HTTP {(int)response.StatusCode}: {Rollouts.Wire.Snippet(text)}";
                    if ((int)response.StatusCode is >= 400 and < 500 and not 408 and not 429) break;   // the request itself is wrong: no retry helps
                    continue;
                }
                return Read(Rollouts.Wire.Parse(text, url), shard.Count, url);
            }
            catch (HttpRequestException e) { failure = e.InnerException?.Message ?? e.Message; }
            catch (TaskCanceledException) { failure = $"no answer within {_http.Timeout.TotalSeconds:G} s"; }
        }
        throw new PpoSharpException($"reward server {url}: {failure} (after {_tries} tries)");
    }

    /// <summary>Reads one answer: <c>rewards</c> (required, one number per query); <c>extra_logs</c> lists of numbers; <c>scores</c> is accepted and not used (OpenRLHF's dynamic filtering).</summary>
    public static (List<double> Rewards, Dictionary<string, List<double>> Extra) Read(JsonNode root, int count, string url)
    {
        if (root["rewards"] is not JsonArray rewards)
            throw new PpoSharpException($"reward server {url}: answer has no 'rewards' list: {Rollouts.Wire.Snippet(root.ToJsonString())}");
        if (rewards.Count != count) throw new PpoSharpException($"reward server {url}: {rewards.Count} rewards for {count} queries");
        var values = rewards.Select(r => r is JsonValue v && v.TryGetValue<double>(out var d) && double.IsFinite(d) ? d
            : throw new PpoSharpException($"reward server {url}: reward {r?.ToJsonString() ?? "null"} is not a finite number")).ToList();
        var extra = new Dictionary<string, List<double>>();
        if (root["extra_logs"] is JsonObject logs)
            foreach (var (k, v) in logs)
                extra[k] = v is JsonArray a ? a.Select(x => x is JsonValue n && n.TryGetValue<double>(out var d) ? d : double.NaN).Where(double.IsFinite).ToList()
                    : v is JsonValue one && one.TryGetValue<double>(out var single) ? [single] : [];
        return (values, extra);
    }

    public void Dispose() => _http.Dispose();
}
