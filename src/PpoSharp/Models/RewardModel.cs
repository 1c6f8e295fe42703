using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// The notes' reward model: a scalar head on the backbone's last layer (the notes' MLP for built-in models, the linear
/// <c>score</c> of Hugging Face's *ForSequenceClassification for pretrained ones), read at the last non-pad token of
/// prompt + response. The head's last layer starts as N(0, 1/(d_model + 1)), bias 0 (Stiennon et al. 2020);
/// <c>reward_offset</c> (saved with the model) is subtracted so that rewards on the training set have mean 0.
/// </summary>
public sealed class RewardModel : nn.Module
{
    private readonly Decoder backbone;
    private readonly ScalarHead reward_head;
    private readonly Tensor reward_offset;

    public RewardModel(Decoder backbone, bool mlpHead = true) : base("reward_model")
    {
        this.backbone = backbone;
        reward_head = new ScalarHead(backbone.Config.DModel, outputStd: 1 / Math.Sqrt(backbone.Config.DModel + 1), mlp: mlpHead);
        reward_offset = zeros(1);
        RegisterComponents();
    }

    public Decoder Backbone => backbone;
    public ScalarHead Head => reward_head;
    public double Offset => reward_offset.item<float>();

    public void SetOffset(double offset)
    {
        using var _ = no_grad();
        reward_offset.fill_(offset);
    }

    /// <summary>Scores (B) of sequences (B, T) with mask (B, T), padded on either side: the head at each row's last real token.</summary>
    public Tensor Score(Tensor ids, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var hidden = backbone.Hidden(ids, Sampling.PositionIds(mask), mask);           // (B, T, C)
        var values = reward_head.forward(hidden);                                     // (B, T)
        return (values.gather(1, LastRealToken(mask).unsqueeze(1)).squeeze(1) - reward_offset).MoveToOuterDisposeScope();   // (B)
    }

    /// <summary>Index of each row's last real token (B) for left or right padding: arg-max of mask * (1..T).</summary>
    public static Tensor LastRealToken(Tensor mask)
    {
        long t = mask.shape[1];
        return (mask.to(ScalarType.Int64) * arange(1, t + 1, dtype: ScalarType.Int64, device: mask.device)).argmax(1);
    }
}
