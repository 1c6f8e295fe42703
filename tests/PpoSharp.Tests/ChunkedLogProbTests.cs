using PpoSharp.Algorithms;
using PpoSharp.Models;
using PpoSharp.Models.Hf;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// Log-probs, entropy and losses taken a chunk of positions at a time from hidden states (never the whole (B, T, V)
/// logits) against the same quantities from the full logits, values and gradients; and gradient checkpointing of the
/// decoder's blocks against the plain backward pass.
/// </summary>
public class ChunkedLogProbTests
{
    /// <summary>
    /// Hand-computed: W = [[0, 0], [ln 3, 0], [0, ln 2]], h1 = (1, 0), h2 = (0, 1), actions (1, 2).
    /// z1 = (0, ln 3, 0): p1 = (1/5, 3/5, 1/5), log p1[1] = ln 0.6, H1 = -(2 * 0.2 ln 0.2 + 0.6 ln 0.6).
    /// z2 = (0, 0, ln 2): p2 = (1/4, 1/4, 1/2), log p2[2] = ln 0.5, H2 = -(2 * 0.25 ln 0.25 + 0.5 ln 0.5).
    /// d(log p1[1] + log p2[2])/dW = sum_t (onehot_t - p_t) h_t^T = [[-0.2, -0.25], [0.4, -0.25], [-0.2, 0.5]].
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(0)]
    public void FromHidden_HandSizedVocabulary_MatchesHandComputed(long chunk)
    {
        var w = tensor(new float[] { 0, 0, (float)Math.Log(3), 0, 0, (float)Math.Log(2) }).view(3, 2).requires_grad_();
        var h = tensor(new float[] { 1, 0, 0, 1 }).view(1, 2, 2);                               // (B=1, T=2, C=2)
        var (logp, entropy) = LogProbs.FromHidden(h, w, tensor(new long[] { 1, 2 }).view(1, 2), entropy: true, chunk: chunk);
        Assert.Equal(Math.Log(0.6), logp[0, 0].item<float>(), 5);
        Assert.Equal(Math.Log(0.5), logp[0, 1].item<float>(), 5);
        Assert.Equal(-(0.4 * Math.Log(0.2) + 0.6 * Math.Log(0.6)), entropy![0, 0].item<float>(), 5);
        Assert.Equal(-(0.5 * Math.Log(0.25) + 0.5 * Math.Log(0.5)), entropy[0, 1].item<float>(), 5);
        logp.sum().backward();
        float[] expected = [-0.2f, -0.25f, 0.4f, -0.25f, -0.2f, 0.5f];
        var grad = w.grad!.data<float>().ToArray();
        for (int i = 0; i < 6; i++) Assert.Equal(expected[i], grad[i], 5);
    }

    /// <summary>Chunks of 4 positions of 13 at temperature 0.7: log-probs, entropies and both gradients equal the full logits' to 1e-5.</summary>
    [Fact]
    public void FromHidden_Chunks_EqualFullLogitsAndGradients()
    {
        manual_seed(3);
        var h0 = randn(13, 8);
        var w0 = randn(50, 8);
        var actions = randint(0, 50, [13]);
        var mix = randn(13);                                                                    // weights the entropy term so its gradient counts
        (Tensor Logp, Tensor Ent, Tensor GradH, Tensor GradW) Run(Func<Tensor, Tensor, (Tensor, Tensor)> f)
        {
            var (h, w) = (h0.clone().requires_grad_(), w0.clone().requires_grad_());
            var (logp, ent) = f(h, w);
            (logp.sum() + (ent * mix).sum()).backward();
            return (logp.detach(), ent.detach(), h.grad!, w.grad!);
        }
        var full = Run((h, w) =>
        {
            var logits = nn.functional.linear(h, w) / 0.7;                                      // (13, 50)
            return (LogProbs.OfActions(logits, actions), LogProbs.Entropy(logits));
        });
        var chunked = Run((h, w) =>
        {
            var (logp, ent) = LogProbs.FromHidden(h, w, actions, 0.7, entropy: true, chunk: 4);
            return (logp, ent!);
        });
        AssertClose(full.Logp, chunked.Logp);
        AssertClose(full.Ent, chunked.Ent);
        AssertClose(full.GradH, chunked.GradH);
        AssertClose(full.GradW, chunked.GradW);
    }

    /// <summary>
    /// tiny-llama3 (a 128,256-token vocabulary, so 130 positions a chunk): 135 trained positions make two chunks. The SFT loss and every
    /// weight's gradient equal cross_entropy over the full logits (the formula before chunking) to 1e-5.
    /// </summary>
    [Fact]
    public void SftLoss_TinyLlama3_EqualsFullCrossEntropyWithGradients()
    {
        var model = Load("tiny-llama3");
        using var g = new Generator(7);
        var inputs = randint(0, 128_000, [2, 101], generator: g);
        var targets = inputs.narrow(1, 1, 100).clone();
        targets[0].narrow(0, 0, 5).fill_(SftTrainer.IgnoreIndex);                          // a prompt: 95 + 100 trained positions
        inputs = inputs.narrow(1, 0, 100);
        var (fullLoss, fullGrads) = LossAndGrads(model, () =>
            nn.functional.cross_entropy(model.forward(inputs).flatten(0, 1), targets.flatten(), ignore_index: SftTrainer.IgnoreIndex));
        var (loss, grads) = LossAndGrads(model, () => SftTrainer.Loss(model, inputs, targets));
        Assert.Equal(fullLoss, loss, 5);
        foreach (var (name, grad) in fullGrads) AssertClose(grad, grads[name], name);
    }

    /// <summary>
    /// Gradient checkpointing on tiny-mistral (full weights) and on tiny-qwen2 with a LoRA adapter whose dropout draws a
    /// mask (the recomputation must replay the generator): the loss and every trainable gradient equal the plain pass's.
    /// </summary>
    [Theory]
    [InlineData("tiny-mistral", 0)]
    [InlineData("tiny-qwen2", 4)]
    public void GradientCheckpointing_Blocks_EqualPlainGradients(string name, int loraR)
    {
        var full = Load(name);
        var model = loraR == 0 ? full : full.WithAdapter(new LoraAdapter(Frozen(full), new LoraSettings(loraR, 8, 0.3, "")));
        model.train();
        if (loraR > 0)
        {
            using var _ = no_grad();
            foreach (var p in model.parameters()) p.normal_(0, 0.05);                           // B = 0 would make every base-side gradient vanish
        }
        using var g = new Generator(9);
        var inputs = randint(0, 500, [2, 12], generator: g);
        var targets = randint(0, 500, [2, 12], generator: g);
        (double, Dictionary<string, Tensor>) Run(bool checkpointing)
        {
            model.GradientCheckpointing = checkpointing;
            manual_seed(21);                                                                    // the same dropout masks in both runs
            return LossAndGrads(model, () => SftTrainer.Loss(model, inputs, targets));
        }
        var (plainLoss, plain) = Run(false);
        var (loss, grads) = Run(true);
        Assert.NotEmpty(plain);
        Assert.Equal(plainLoss, loss, 5);
        foreach (var (key, grad) in plain) AssertClose(grad, grads[key], key);
    }

    private static Decoder Frozen(Decoder model)
    {
        foreach (var p in model.parameters()) p.requires_grad = false;
        return model;
    }

    private static Decoder Load(string name)
    {
        var dir = Path.Combine(AppContext.BaseDirectory, "HfData", "models", name);              // read only: config and weights
        var (info, spec) = HfCheckpoint.Read(dir);
        var model = new Decoder(spec, info);
        HfCheckpoint.Load(dir, info, model);
        return model;
    }

    /// <summary>The loss and the gradient of every trainable parameter, by name.</summary>
    private static (double Loss, Dictionary<string, Tensor> Grads) LossAndGrads(Decoder model, Func<Tensor> loss)
    {
        model.zero_grad();
        var l = loss();
        l.backward();
        return (l.item<float>(), model.named_parameters().Where(p => p.parameter.requires_grad && p.parameter.grad is not null)
            .ToDictionary(p => p.name, p => p.parameter.grad!.clone()));
    }

    /// <summary>Equal within 1e-5 of the larger of 1 and the tensor's scale (fp32 sums taken in a different order).</summary>
    private static void AssertClose(Tensor expected, Tensor actual, string what = "")
    {
        double scale = expected.abs().max().item<float>(), difference = (actual - expected).abs().max().item<float>();
        Assert.True(difference <= 1e-5 * Math.Max(1, scale), $"{what}: max difference {difference} at values up to {scale}");
    }
}
