using System.Diagnostics;
using Xunit.Abstractions;

namespace PpoSharp.Tests;

/// <summary>A fact that runs only when PPOSHARP_SERVE_LOAD_SECONDS is set (a measurement, too long for the unit suite).</summary>
public sealed class LoadMeasurementFactAttribute : FactAttribute
{
    public LoadMeasurementFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("PPOSHARP_SERVE_LOAD_SECONDS") is null) Skip = "set PPOSHARP_SERVE_LOAD_SECONDS=60 to measure serve under load";
    }
}

/// <summary>
/// The README's serving figures: tokens/s for 1, 4 and 16 concurrent clients on loopback (16 for the full
/// PPOSHARP_SERVE_LOAD_SECONDS, the others for a third of it), every answer checked against the same prompt's answer
/// alone, and the process's peak resident memory. Run:
/// <c>PPOSHARP_SERVE_LOAD_SECONDS=60 dotnet test -c Release --filter FullyQualifiedName~ServeLoadMeasurement --logger "console;verbosity=detailed"</c>.
/// </summary>
public sealed class ServeLoadMeasurement(ITestOutputHelper output)
{
    [LoadMeasurementFact]
    public async Task Serve_1_4_16Clients_NoMixUpsAndTokensPerSecond()
    {
        double seconds = double.Parse(Environment.GetEnvironmentVariable("PPOSHARP_SERVE_LOAD_SECONDS")!, System.Globalization.CultureInfo.InvariantCulture);
        await using var host = await ServeHost.StartAsync();
        var prompts = Enumerable.Range(0, 16).Select(i => new[] { 128000, 9906 + 7 * i, 11 + i, 1917 }).ToArray();
        var alone = new int[16][];
        for (int i = 0; i < 16; i++)
            alone[i] = ServeHost.Ints((await host.PostJson("/v1/completions", Body(prompts[i])))["choices"]![0]!["token_ids"]);
        foreach (var clients in new[] { 1, 4, 16 })
        {
            var limit = TimeSpan.FromSeconds(clients == 16 ? seconds : seconds / 3);
            var clock = Stopwatch.StartNew();
            var done = await Task.WhenAll(Enumerable.Range(0, clients).Select(async i =>
            {
                long tokens = 0, requests = 0;
                while (clock.Elapsed < limit)
                {
                    var choice = (await host.PostJson("/v1/completions", Body(prompts[i])))["choices"]![0]!;
                    Assert.Equal(prompts[i], ServeHost.Ints(choice["prompt_token_ids"]));
                    Assert.Equal(alone[i], ServeHost.Ints(choice["token_ids"]));
                    tokens += alone[i].Length;
                    requests++;
                }
                return (tokens, requests);
            }));
            double elapsed = clock.Elapsed.TotalSeconds;
            output.WriteLine($"{clients,2} clients, {elapsed:F0} s: {done.Sum(d => d.requests)} requests, none dropped or mixed up, " +
                $"{done.Sum(d => d.tokens) / elapsed:F0} tokens/s, largest batch {host.Server.Scheduler.LargestBatch}");
        }
        using var self = Process.GetCurrentProcess();
        output.WriteLine($"peak resident memory of the test process (server and clients): {self.PeakWorkingSet64 / (1 << 20)} MiB");
    }

    private static string Body(int[] prompt) =>
        $$"""{"prompt":[{{string.Join(",", prompt)}}],"max_tokens":32,"temperature":0,"ignore_eos":true,"return_token_ids":true}""";
}
