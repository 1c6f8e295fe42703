using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace PpoSharp.Rollouts;

/// <summary>
/// A fleet of inference servers behind one interface: work is spread over the servers in service, and a server that
/// fails (connection refused, timeout, HTTP 5xx) is taken out of service with one warning line and its share retried on
/// the others. A server out of service is offered back (<see cref="Admit"/>: the weight sync brings it to the current
/// version) at the start of each batch. When none is left, one line names each server and what it said.
/// </summary>
public sealed class Fleet : IDisposable
{
    /// <summary>One server: its base URL, whether it is in service, the weight version it confirmed (-1: none) and its last failure.</summary>
    public sealed class Worker(string url)
    {
        public string Url { get; } = url.TrimEnd('/');
        public bool InService { get; set; } = true;
        public long Version { get; set; } = -1;
        public string? LastError { get; set; }
    }

    private readonly HttpClient _http;
    private readonly TextWriter _log;

    /// <summary>The environment variable whose value, when set, is sent as <c>Authorization: Bearer KEY</c> (SGLang's and vLLM's <c>--api-key</c>, <c>ppo-sharp serve --api-key</c>).</summary>
    public const string ApiKeyVariable = "PPOSHARP_ROLLOUT_API_KEY";

    public Fleet(IReadOnlyList<string> urls, double timeoutSeconds, TextWriter log)
    {
        Workers = urls.Select(u => new Worker(u)).ToList();
        _http = new HttpClient { Timeout = TimeSpan.FromSeconds(timeoutSeconds) };
        if (Environment.GetEnvironmentVariable(ApiKeyVariable) is { Length: > 0 } key)
            _http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        _log = log;
    }

    public IReadOnlyList<Worker> Workers { get; }

    /// <summary>Brings a server that was out of service up to date (the weight sync); null: it is taken back as it is.</summary>
    public Func<Worker, Task>? Admit { get; set; }

    /// <summary>The servers in service.</summary>
    public List<Worker> InService => Workers.Where(w => w.InService).ToList();

    /// <summary>
    /// Splits <paramref name="count"/> items into contiguous shares of whole <paramref name="unit"/>s, one per server in
    /// service, runs <paramref name="call"/>(server, first item, item count) for all at once and joins the results in item
    /// order. A share whose server fails is retried on the next server in service.
    /// </summary>
    public List<T> Spread<T>(int count, int unit, Func<Worker, int, int, Task<List<T>>> call)
    {
        Readmit();
        var live = InService;
        if (live.Count == 0) throw AllDown();
        int units = count / unit, shares = Math.Min(live.Count, units);
        var tasks = Enumerable.Range(0, shares).Select(s =>
        {
            int from = units * s / shares * unit, to = units * (s + 1) / shares * unit;
            return RunShare(live[s], from, to - from, call);
        }).ToArray();
        WaitAll(tasks);
        return tasks.SelectMany(t => t.Result).ToList();
    }

    /// <summary>Waits for every task; the first failure is rethrown as itself (one line), not inside an AggregateException.</summary>
    public static void WaitAll(params Task[] tasks)
    {
        try { Task.WaitAll(tasks); }
        catch (AggregateException e) { System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.Flatten().InnerExceptions[0]).Throw(); }
    }

    private async Task<List<T>> RunShare<T>(Worker first, int from, int count, Func<Worker, int, int, Task<List<T>>> call)
    {
        var worker = first;
        while (true)
        {
            try { return await call(worker, from, count); }
            catch (Exception e) when (IsWorkerFailure(e))
            {
                TakeOut(worker, e);
                lock (Workers) worker = Workers.FirstOrDefault(w => w.InService) ?? throw AllDown();
            }
        }
    }

    /// <summary>Whether an exception means the server is gone or broken (try another), rather than a protocol error (stop).</summary>
    public static bool IsWorkerFailure(Exception e) => e is HttpRequestException or TaskCanceledException or TimeoutException
        or ServerErrorException || e is AggregateException a && a.InnerExceptions.All(IsWorkerFailure);

    /// <summary>Marks a server out of service with one warning line.</summary>
    public void TakeOut(Worker worker, Exception e)
    {
        lock (Workers)
        {
            if (!worker.InService) return;
            worker.InService = false;
            worker.LastError = Describe(e);
            _log.WriteLine($"warning: rollout server {worker.Url} out of service ({worker.LastError}); {Workers.Count(w => w.InService)} left");
        }
    }

    /// <summary>The one line of a fleet with no server left.</summary>
    public PpoSharpException AllDown() => new FleetDownException("rollout: every server is out of service: " +
        string.Join("; ", Workers.Select(w => $"{w.Url} ({w.LastError ?? "in service"})")));

    private void Readmit()
    {
        foreach (var w in Workers.Where(w => !w.InService))
        {
            try
            {
                Admit?.Invoke(w).GetAwaiter().GetResult();
                w.InService = true;
                w.LastError = null;
                _log.WriteLine($"rollout server {w.Url} back in service");
            }
            catch (Exception e) when (IsWorkerFailure(e)) { w.LastError = Describe(e); }
        }
    }

    /// <summary>POSTs a JSON body; returns the response text. HTTP 5xx (and 429) is a <see cref="ServerErrorException"/>, other errors a <see cref="PpoSharpException"/> naming the URL and the body.</summary>
    public async Task<string> Post<TBody>(string url, TBody body)
    {
        using var response = await _http.PostAsJsonAsync(url, body, Wire.Options);
        var text = await response.Content.ReadAsStringAsync();
        if ((int)response.StatusCode >= 500 || response.StatusCode == HttpStatusCode.TooManyRequests)
            throw new ServerErrorException($"HTTP {(int)response.StatusCode}: {Wire.Snippet(text)}");
        if (!response.IsSuccessStatusCode) throw new PpoSharpException($"{url}: HTTP {(int)response.StatusCode}: {Wire.Snippet(text)}");
        return text;
    }

    /// <summary>POSTs and parses the JSON answer.</summary>
    public async Task<JsonNode> PostJson<TBody>(string url, TBody body) => Wire.Parse(await Post(url, body), url);

    private static string Describe(Exception e) => e switch
    {
        TaskCanceledException => "timed out",
        HttpRequestException h => h.InnerException?.Message ?? h.Message,
        AggregateException a => Describe(a.InnerExceptions[0]),
        _ => e.Message,
    };

    public void Dispose() => _http.Dispose();
}

/// <summary>A server answered with HTTP 5xx: it counts as failed, and its work goes to another.</summary>
public sealed class ServerErrorException(string message) : Exception(message);

/// <summary>No rollout server is left: the run stops; its last checkpoint is intact and <c>--resume</c> continues.</summary>
public sealed class FleetDownException(string message) : PpoSharpException(message);
