using System.Diagnostics;
using PpoSharp.Models;
using PpoSharp.Text;
using PpoSharp.Training;

namespace PpoSharp.Rollouts;

/// <summary>
/// Brings the servers of a <see cref="ServerEngine"/> to the trainer's weights after each update, over HTTP only (no NCCL):
/// <list type="bullet">
/// <item><c>disk</c>: the policy as an HF folder (LoRA merged) under <c>weight_sync_dir/v000012</c>, then SGLang's
/// <c>POST /update_weights_from_disk {"model_path", "weight_version"}</c> on every server;</item>
/// <item><c>lora</c>: the adapter folder only, then vLLM's <c>POST /v1/load_lora_adapter {"lora_name", "lora_path",
/// "load_inplace": true}</c> or SGLang's <c>/unload_lora_adapter</c> + <c>/load_lora_adapter</c>; requests then name the adapter.</item>
/// </list>
/// A server that cannot be reached is taken out of service (the rest go on; it gets the newest folder when it is back); one
/// that answers with an error is retried with backoff, then the run stops with one line. Folders older than the version
/// every server in service has confirmed are deleted.
/// </summary>
public sealed class WeightSync(RolloutSettings settings, string dir, ServerEngine engine, ITokenizer tokenizer, object training, TextWriter log)
{
    /// <summary>The adapter name under which a LoRA sync loads the policy.</summary>
    public const string AdapterName = "policy";
    private const int Tries = 3;
    private string? _current;                  // the newest folder written
    private long _version = -1;

    public string Dir { get; } = dir;

    /// <summary>Writes <paramref name="actor"/> as version <paramref name="version"/> and loads it on every server in service; returns the seconds taken.</summary>
    public double Push(Decoder actor, long version)
    {
        var clock = Stopwatch.StartNew();
        var folder = Path.Combine(Dir, $"v{version:D6}");
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        Directory.CreateDirectory(folder);
        Write(actor, folder);
        (_current, _version) = (folder, version);
        engine.Fleet.Admit = w => Load(w, _current!, _version);
        var live = engine.Fleet.InService;
        if (live.Count == 0) throw engine.Fleet.AllDown();
        var tasks = live.Select(async w =>
        {
            try { await Load(w, folder, version); }
            catch (Exception e) when (Fleet.IsWorkerFailure(e)) { engine.Fleet.TakeOut(w, e); }
        }).ToArray();
        Fleet.WaitAll(tasks);
        if (engine.Fleet.InService.Count == 0) throw engine.Fleet.AllDown();
        engine.WeightVersion = version;
        if (settings.WeightSync == WeightSyncKind.Lora) engine.Model = AdapterName;
        CleanUp();
        return clock.Elapsed.TotalSeconds;
    }

    /// <summary>Disk: the full HF folder (a LoRA policy merged into a fresh copy of its base); LoRA: the peft adapter folder.</summary>
    private void Write(Decoder actor, string folder)
    {
        if (settings.WeightSync == WeightSyncKind.Lora || actor.Adapter is null)
        {
            RunDirectory.SavePolicy(folder, actor, tokenizer, training);
            return;
        }
        using var merged = RunDirectory.LoadPolicyModel(RunDirectory.BaseDir(actor));
        actor.Adapter.MergeInto(merged);
        RunDirectory.SavePolicy(folder, merged, tokenizer, training);
    }

    /// <summary>Loads a folder on one server, retrying an error answer with backoff (0.5 s, 1 s); unreachable servers throw at once (the fleet takes them out).</summary>
    private async Task Load(Fleet.Worker w, string folder, long version)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                await LoadOnce(w.Url, folder, version);
                w.Version = version;
                return;
            }
            catch (PpoSharpException e) when (attempt < Tries)
            {
                log.WriteLine($"warning: weight sync to {w.Url} failed ({e.Message}); retry {attempt} of {Tries - 1}");
                await Task.Delay(500 * attempt);
            }
            catch (PpoSharpException e)
            {
                throw new PpoSharpException($"weight sync of version {version} to {w.Url} failed {Tries} times: {e.Message}; the servers would sample from stale weights, so the run stops");
            }
        }
    }

    private async Task LoadOnce(string url, string folder, long version)
    {
        var fleet = engine.Fleet;
        var path = Path.GetFullPath(folder);
        if (settings.WeightSync == WeightSyncKind.Disk)
        {
            var endpoint = url + "/update_weights_from_disk";
            SglangResponse.CheckSuccess(await fleet.PostJson(endpoint, new { model_path = path, weight_version = version.ToString() }), endpoint);
        }
        else if (engine is VllmEngine)
            await fleet.Post(url + "/v1/load_lora_adapter", new { lora_name = AdapterName, lora_path = path, load_inplace = true });   // 200 with a plain-text body
        else
        {
            try { await fleet.Post(url + "/unload_lora_adapter", new { lora_name = AdapterName }); }
            catch (PpoSharpException) { }                                                    // nothing loaded yet
            var endpoint = url + "/load_lora_adapter";
            SglangResponse.CheckSuccess(await fleet.PostJson(endpoint, new { lora_name = AdapterName, lora_path = path }), endpoint);
        }
    }

    /// <summary>Deletes the sync folders older than the version every server in service has confirmed.</summary>
    private void CleanUp()
    {
        long confirmed = engine.Fleet.InService.Min(w => w.Version);
        foreach (var d in Directory.GetDirectories(Dir, "v*"))
            if (long.TryParse(Path.GetFileName(d)[1..], out var v) && v < confirmed && d != _current)
                Directory.Delete(d, recursive: true);
    }
}
