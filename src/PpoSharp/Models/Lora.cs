using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PpoSharp.Models;

/// <summary>
/// LoRA settings (Hu et al. 2021), peft's names: rank <see cref="R"/> (0 = off: train every weight), scale
/// <see cref="Alpha"/> / r, dropout on the adapter's input, and the target modules: "" for peft's default of the
/// architecture (q_proj and v_proj for the Llama family, c_attn for GPT-2), <c>all-linear</c> for every linear layer but the
/// LM head, or a comma-separated list of module names (a name matches a module whose path ends with it).
/// </summary>
public sealed record LoraSettings(int R, double Alpha, double Dropout, string TargetModules)
{
    public const string AllLinear = "all-linear";

    public bool Enabled => R > 0;
    public double Scaling => Alpha / R;

    /// <summary>The target names, or null for every linear layer.</summary>
    public IReadOnlyList<string>? Targets(Hf.HfArchitecture arch) =>
        TargetModules.Trim() == AllLinear ? null
        : TargetModules.Trim().Length == 0 ? arch.DefaultLoraTargets
        : TargetModules.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);

    public LoraSettings Validate()
    {
        if (R < 0) throw new PpoSharpException($"lora_r must be >= 0 (got {R}; 0 trains every weight)");
        if (R == 0) return this;
        if (!(Alpha > 0) || !double.IsFinite(Alpha)) throw new PpoSharpException($"lora_alpha must be > 0 (got {Alpha})");
        if (!(Dropout >= 0 && Dropout < 1)) throw new PpoSharpException($"lora_dropout must be in [0, 1) (got {Dropout})");
        return this;
    }
}

/// <summary>
/// One adapted linear layer: rows [<see cref="Offset"/>, Offset + <see cref="Rows"/>) of the decoder's
/// <c>layers.{Layer}.{Module}</c> projection (q, k and v are slices of the fused qkv), which Hugging Face calls
/// <see cref="HfPath"/>; <see cref="FanInFanOut"/> marks GPT-2's Conv1D, stored as (in, out).
/// </summary>
public sealed record LoraSite(int Layer, string Module, long Offset, long Rows, long InFeatures, string HfPath, bool FanInFanOut)
{
    /// <summary>The module's own name, the last part of its path (q_proj, c_attn), as target_modules lists it.</summary>
    public string Name => HfPath[(HfPath.LastIndexOf('.') + 1)..];

    public bool Matches(string target) => HfPath == target || HfPath.EndsWith("." + target, StringComparison.Ordinal);
}

/// <summary>
/// y = W x + (alpha / r) B A dropout(x), as peft parametrises it: A (r, in) Kaiming-uniform with a = √5, B (out, r) zero,
/// so that a new adapter changes nothing.
/// </summary>
internal sealed class LoraLinear : Module<Tensor, Tensor>
{
    private readonly Linear lora_A, lora_B;
    private readonly double _scaling, _dropout;

    public LoraLinear(long inFeatures, long outFeatures, LoraSettings s) : base("lora")
    {
        lora_A = Linear(inFeatures, s.R, hasBias: false);
        lora_B = Linear(s.R, outFeatures, hasBias: false);
        (_scaling, _dropout) = (s.Scaling, s.Dropout);
        RegisterComponents();
        using var _ = no_grad();
        init.kaiming_uniform_(lora_A.weight!, a: Math.Sqrt(5));
        init.zeros_(lora_B.weight!);
    }

    public Parameter A => lora_A.weight!;
    public Parameter B => lora_B.weight!;

    /// <summary>alpha / r.</summary>
    public double Scaling => _scaling;

    /// <summary>Whether dropout changes the input now (a rate above 0, in training mode).</summary>
    public bool DropsOut => _dropout > 0 && training;

    /// <summary>The adapter's share of the output (..., out) for input (..., in).</summary>
    public override Tensor forward(Tensor x) =>
        lora_B.forward(lora_A.forward(_dropout > 0 ? functional.dropout(x, _dropout, training) : x)) * _scaling;

    /// <summary>(alpha / r) B A (out, in): what merging adds to the base weight.</summary>
    public Tensor DeltaWeight() => B.matmul(A) * _scaling;
}

/// <summary>
/// One named adapter (the actor's, the critic's, a reward model's) over a frozen base <see cref="Decoder"/>: a
/// <see cref="LoraLinear"/> per targeted site. The decoder's blocks call <see cref="Add"/> on each projection's output.
/// </summary>
public sealed class LoraAdapter : Module
{
    private readonly ModuleList<LoraLinear> sites;
    private readonly Dictionary<(int Layer, string Module), int[]> _byModule;

    public LoraSettings Settings { get; }

    /// <summary>The largest |B| over every site: 0 as initialised (peft's B = 0), so a measure of how far training moved the adapters.</summary>
    public double MaxAbsB()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return sites.Max(s => (double)s.B.abs().max().item<float>());
    }
    public IReadOnlyList<LoraSite> Sites { get; }

    public LoraAdapter(Decoder baseModel, LoraSettings settings) : base("lora")
    {
        Settings = settings.Validate();
        if (!settings.Enabled) throw new ArgumentException("lora_r is 0");
        Sites = Select(baseModel, settings);
        foreach (var site in Sites.Where(x => settings.R > Math.Max(x.InFeatures, x.Rows)))
            throw new PpoSharpException($"r {settings.R} is larger than the layer it adapts ({site.Name}: {site.Rows}x{site.InFeatures}); LoRA's A and B would outgrow the weight");
        sites = new ModuleList<LoraLinear>(Sites.Select(s => new LoraLinear(s.InFeatures, s.Rows, settings)).ToArray());
        _byModule = Sites.Select((s, i) => (s, i)).GroupBy(p => (p.s.Layer, p.s.Module)).ToDictionary(g => g.Key, g => g.Select(p => p.i).ToArray());
        RegisterComponents();
        var device = Devices.DeviceOf(baseModel);
        if (device.type != DeviceType.CPU) this.to(device);
    }

    /// <summary>The targeted sites of a base model; a target that names no module is an error listing the names there are.</summary>
    public static List<LoraSite> Select(Decoder baseModel, LoraSettings settings)
    {
        var all = AllSites(baseModel);
        var targets = settings.Targets(baseModel.Format.Arch);
        if (targets is null) return all;
        foreach (var t in targets.Where(t => !all.Any(s => s.Matches(t))))
            throw new PpoSharpException($"lora_target_modules: '{t}' names no linear layer of {baseModel.Format.Arch.CausalLm} (its names: {string.Join(", ", all.Select(s => s.Name).Distinct())}, or all-linear)");
        return all.Where(s => targets.Any(s.Matches)).ToList();
    }

    /// <summary>
    /// Every linear layer of the blocks, from the architecture's weight table: a plain or transposed (Conv1D) weight is one
    /// site, the three tensors stacked into qkv are three row slices.
    /// </summary>
    private static List<LoraSite> AllSites(Decoder model)
    {
        var spec = model.Config;
        var weights = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
        var sites = new List<LoraSite>();
        foreach (var m in model.Format.Arch.Backbone(spec))
        {
            var parts = m.Ours.Split('.');                                      // layers.{i}.{module}.weight
            if (parts is not ["layers", var layer, var module, "weight"] || weights[m.Ours].Length != 2) continue;
            long rows = weights[m.Ours][0], inFeatures = weights[m.Ours][1], offset = 0;
            long[] slices = m.Layout == Hf.WeightLayout.Concat
                ? [spec.NHead * spec.HeadDim, spec.KvHeadCount * spec.HeadDim, spec.KvHeadCount * spec.HeadDim] : [rows];
            foreach (var (hf, size) in m.Hf.Zip(slices))
            {
                var path = model.Format.Arch.Prefix + hf[..^".weight".Length];
                sites.Add(new LoraSite(int.Parse(layer), module, offset, size, inFeatures, path, m.Layout == Hf.WeightLayout.Transposed));
                offset += size;
            }
        }
        return sites;
    }

    internal LoraLinear Site(int i) => sites[i];

    /// <summary>The parameters of the adapters on <paramref name="layer"/>'s projections.</summary>
    internal IEnumerable<Parameter> LayerParameters(int layer) =>
        Sites.Select((s, i) => (s, i)).Where(p => p.s.Layer == layer).SelectMany(p => sites[p.i].parameters());

    /// <summary>
    /// y (..., out) of projection <paramref name="module"/> in <paramref name="layer"/>, for input x (..., in), plus the
    /// adapters on its rows: a slice without one adds zeros. The adapters compute in their own dtype; the sum is in x's.
    /// </summary>
    internal Tensor Add(int layer, string module, Tensor x, Tensor y)
    {
        if (!_byModule.TryGetValue((layer, module), out var ids)) return y;
        var own = sites[ids[0]].A.dtype;                                     // bf16 activations or products: the adapters work in
        if (x.dtype != own || y.dtype != own) return Add(layer, module, x.to(own), y.to(own)).to(x.dtype);   // their fp32; the sum in x's dtype
        long width = y.shape[^1], at = 0;
        if (ids.Length == 1 && Sites[ids[0]].Rows == width) return y + sites[ids[0]].forward(x);
        var parts = new List<Tensor>();
        long[] lead = y.shape[..^1];
        foreach (var i in ids)
        {
            if (Sites[i].Offset > at) parts.Add(zeros([.. lead, Sites[i].Offset - at], y.dtype, y.device));
            parts.Add(sites[i].forward(x));                                   // (..., rows)
            at = Sites[i].Offset + Sites[i].Rows;
        }
        if (at < width) parts.Add(zeros([.. lead, width - at], y.dtype, y.device));
        return y + cat(parts, -1);                                            // (..., out)
    }

    /// <summary>
    /// Whether <see cref="AddRows"/> serves this adapter for rows in <paramref name="dtype"/>: r a multiple of 8, no
    /// dropout at work, every A and B in that dtype, contiguous, on the CPU.
    /// </summary>
    internal bool AddsRows(ScalarType dtype) =>
        Settings.R % 8 == 0 && sites.All(s => !s.DropsOut && s.A.device_type == DeviceType.CPU
            && SmallMatmul.Suits(s.A, null, dtype) && SmallMatmul.Suits(s.B, null, dtype));

    /// <summary>
    /// <see cref="Add"/> on a decode step's raw rows: y (M, width) at <paramref name="py"/> gains the adapters of
    /// <paramref name="module"/> in <paramref name="layer"/> for input x (M, in) at <paramref name="px"/>, each rounded as
    /// libtorch rounds it (B A x, then its scaling, then the sum); <paramref name="scratch"/> holds M (r + out) values.
    /// </summary>
    internal unsafe void AddRows(int layer, string module, byte* px, int m, byte* py, int width, bool bf16, byte* scratch)
    {
        if (!_byModule.TryGetValue((layer, module), out var ids)) return;
        int size = bf16 ? 2 : 4;
        byte* t = scratch, u = scratch + (long)m * Settings.R * size;
        foreach (var i in ids)
        {
            SmallMatmul.Product(px, m, sites[i].A, null, t, bf16);                          // (M, r)
            SmallMatmul.Product(t, m, sites[i].B, null, u, bf16);                           // (M, rows)
            RowKernels.AddScaled(u, (int)Sites[i].Rows, sites[i].Scaling, py + Sites[i].Offset * size, width, m, bf16);
        }
    }

    /// <summary>Adds each site's (alpha / r) B A into the weights of <paramref name="target"/> (a full decoder of the same base shape).</summary>
    public void MergeInto(Decoder target)
    {
        using var _ = no_grad();
        var weights = target.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        for (int i = 0; i < Sites.Count; i++)
        {
            var s = Sites[i];
            using var delta = sites[i].DeltaWeight();
            weights[$"layers.{s.Layer}.{s.Module}.weight"].narrow(0, s.Offset, s.Rows).add_(delta.to(weights[$"layers.{s.Layer}.{s.Module}.weight"].dtype));
        }
    }
}
