using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PpoSharp.Models;

/// <summary>
/// A scalar head on the backbone's last layer, hidden (B, T, C) -> (B, T), for the critic's V(s_t) and the reward model's
/// score. Either the notes' MLP, Linear(C, C) -> GELU -> Linear(C, 1), or one bias-free Linear(C, 1): the <c>score</c>
/// layer of Hugging Face's *ForSequenceClassification models, which TRL and OpenRLHF load as reward models.
/// </summary>
public sealed class ScalarHead : Module<Tensor, Tensor>
{
    private readonly TorchSharp.Modules.Linear? fc;
    private readonly TorchSharp.Modules.Linear out_proj;

    /// <param name="dModel">Width of the backbone.</param>
    /// <param name="outputStd">Init of the last layer's weights: 0 for the critic (V starts at 0), small normal for reward models.</param>
    /// <param name="mlp">The notes' MLP (true) or the single linear <c>score</c> layer (false).</param>
    public ScalarHead(int dModel, double outputStd = 0, bool mlp = true) : base("scalar_head")
    {
        if (mlp) fc = Linear(dModel, dModel);
        out_proj = Linear(dModel, 1, hasBias: mlp);
        RegisterComponents();
        using var _ = no_grad();
        if (fc is not null)
        {
            init.normal_(fc.weight!, 0, 0.02);
            init.zeros_(fc.bias!);
            init.zeros_(out_proj.bias!);
        }
        if (outputStd == 0) init.zeros_(out_proj.weight!);
        else init.normal_(out_proj.weight!, 0, outputStd);
    }

    public bool IsMlp => fc is not null;

    /// <summary>The parameters' shapes of a head of width <paramref name="dModel"/>, by name, without allocating it.</summary>
    public static Dictionary<string, long[]> Shapes(int dModel, bool mlp) => mlp
        ? new() { ["fc.weight"] = [dModel, dModel], ["fc.bias"] = [dModel], ["out_proj.weight"] = [1, dModel], ["out_proj.bias"] = [1] }
        : new() { ["out_proj.weight"] = [1, dModel] };

    public override Tensor forward(Tensor hidden) =>
        (fc is null ? out_proj.forward(hidden) : out_proj.forward(functional.gelu(fc.forward(hidden)))).squeeze(-1);
}

/// <summary>Where the critic's value head reads its hidden states.</summary>
public enum CriticArrangement
{
    /// <summary>A backbone of its own, initialised from the SFT model (TRL, OpenRLHF, verl).</summary>
    Separate,
    /// <summary>The actor's backbone with a second head (the notes' graph: backbone -> critic).</summary>
    Shared,
}

/// <summary>
/// The critic V(s_t): a <see cref="ScalarHead"/> (last layer zero-initialised) on a backbone's last hidden layer.
/// With <see cref="CriticArrangement.Shared"/> the backbone is the actor and is not registered here (it is saved with the actor).
/// </summary>
public sealed class CriticModel : Module
{
    private readonly Decoder? backbone;       // null when shared with the actor
    private readonly ScalarHead value_head;

    public CriticModel(Decoder? ownBackbone, int dModel, bool mlpHead = true) : base("critic")
    {
        backbone = ownBackbone;
        value_head = new ScalarHead(dModel, mlp: mlpHead);
        RegisterComponents();
    }

    public bool Shared => backbone is null;
    public Decoder? Backbone => backbone;
    public ScalarHead Head => value_head;

    /// <summary>Copies a reward model's head into the value head (critic initialised from a reward model, as OpenRLHF and DeepSpeed-Chat do).</summary>
    public void InitHeadFrom(ScalarHead head)
    {
        using var _ = no_grad();
        foreach (var (target, source) in value_head.parameters().Zip(head.parameters())) target.copy_(source);
    }

    /// <summary>
    /// V(s_t) (B, N) for the <paramref name="length"/> positions from <paramref name="start"/>: read from the actor's hidden
    /// states (B, L, C) when shared, else from the critic's own pass over the same ids, positions and mask (B, L).
    /// </summary>
    public Tensor Values(Tensor actorHidden, Tensor ids, Tensor positions, Tensor mask, long start, long length)
    {
        var hidden = backbone is null ? actorHidden : backbone.Hidden(ids, positions, mask);   // (B, L, C)
        return value_head.forward(hidden.narrow(1, start, length));                            // (B, N)
    }
}
