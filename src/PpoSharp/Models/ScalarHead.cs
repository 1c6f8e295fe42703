using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PpoSharp.Models;

/// <summary>
/// The notes' MLP head on the backbone's last layer: Linear(C, C) -> GELU -> Linear(C, 1), hidden (B, T, C) -> (B, T).
/// Used for the critic's V(s_t) and the reward model's score.
/// </summary>
public sealed class ScalarHead : Module<Tensor, Tensor>
{
    private readonly TorchSharp.Modules.Linear fc, out_proj;

    /// <param name="dModel">Width of the backbone.</param>
    /// <param name="outputStd">Init of the last layer's weights: 0 for the critic (V starts at 0), small normal for reward models.</param>
    public ScalarHead(int dModel, double outputStd = 0) : base("scalar_head")
    {
        fc = Linear(dModel, dModel);
        out_proj = Linear(dModel, 1);
        RegisterComponents();
        using var _ = no_grad();
        init.normal_(fc.weight!, 0, 0.02);
        init.zeros_(fc.bias!);
        if (outputStd == 0) init.zeros_(out_proj.weight!);
        else init.normal_(out_proj.weight!, 0, outputStd);
        init.zeros_(out_proj.bias!);
    }

    public override Tensor forward(Tensor hidden) => out_proj.forward(functional.gelu(fc.forward(hidden))).squeeze(-1);
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

    public CriticModel(Decoder? ownBackbone, int dModel) : base("critic")
    {
        backbone = ownBackbone;
        value_head = new ScalarHead(dModel);
        RegisterComponents();
    }

    public bool Shared => backbone is null;

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
