using PpoSharp.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class LeanAdamWTests
{
    /// <summary>
    /// LeanAdamW takes TorchSharp's AdamW steps (two groups, one with weight decay, three steps; tails, a vector body and
    /// a share per thread): bit for bit but for libtorch's square root (MKL's, not correctly rounded), so within an ulp.
    /// </summary>
    [Fact]
    public void StepsEqualTorchSharpsAdamW_ToAnUlp()
    {
        manual_seed(3);
        var init = new[] { randn(4, 3), randn(5), randn(37, 19), randn(600, 500) };
        var grads = Enumerable.Range(0, 3).Select(_ => init.Select(t => randn(t.shape)).ToArray()).ToArray();
        var ours = Train(p => new LeanAdamW(Groups(p), 0.01, 0.9, 0.99), init, grads);
        var theirs = Train(p => optim.AdamW(Groups(p), lr: 0.01, beta1: 0.9, beta2: 0.99), init, grads);
        Assert.False(ours[0].eq(init[0]).all().item<bool>());                                 // it moved
        for (int i = 0; i < init.Length; i++)
        {
            Assert.True((ours[i] - theirs[i]).abs().le(theirs[i].abs() * 2.5e-7 + 1e-8).all().item<bool>(), $"tensor {i}");   // 2^-23 is an ulp
            Assert.True(ours[i].eq(theirs[i]).to(ScalarType.Float32).mean().item<float>() > 0.9);                          // most bit-equal
        }
    }

    /// <summary>
    /// One step by hand: θ 1, g 0.5, lr 0.1, β 0.9 and 0.99, ε 1e-8, decay 0.1: m = 0.05, v = 0.0025; bias-corrected 0.5 and
    /// 0.25, so θ ← 1·(1 - 0.01) - 0.1·0.5/(0.5 + 1e-8) = 0.89. A second step with g -0.5: m = 0.045 - 0.05 = -0.005,
    /// v = 0.002475 + 0.0025 = 0.004975; corrected -0.005/0.19 and 0.004975/0.0199 = 0.25, so
    /// θ ← 0.89·0.99 - 0.1·(-0.005/0.19)/(0.5 + 1e-8) = 0.8863632.
    /// </summary>
    [Fact]
    public void TakesTheStepsComputedByHand()
    {
        var p = new Parameter(full(1000, 1.0f));                                             // a vector body and a thread share
        using var optimizer = LeanAdamW.For([p], 0.1, 0.9, 0.99, 0.1);
        foreach (var (g, expected) in new[] { (0.5f, 0.89), (-0.5f, 0.89 * 0.99 + 0.1 * (0.005 / 0.19) / (0.5 + 1e-8)) })
        {
            p.grad = full(1000, g);
            optimizer.step();
            Assert.True((p - expected).abs().max().item<float>() < 1e-6, $"{p[0].item<float>()} against {expected}");
        }
    }

    /// <summary>
    /// Built from plain parameters, as PPO builds it, LeanAdamW takes the learning rate, betas and weight decay it is
    /// given, as optim.AdamW does (a group without options once fell back to TorchSharp's default lr 1e-3).
    /// </summary>
    [Fact]
    public void FromParameters_StepsEqualOptimAdamW_WithTheGivenLearningRate()
    {
        manual_seed(4);
        var init = new[] { randn(4, 3), randn(5) };
        var grads = Enumerable.Range(0, 3).Select(_ => init.Select(t => randn(t.shape)).ToArray()).ToArray();
        var ours = Train(p => LeanAdamW.For(p, 1e-5, 0.9, 0.99, 0.01), init, grads);
        var theirs = Train(p => optim.AdamW(p, lr: 1e-5, beta1: 0.9, beta2: 0.99, weight_decay: 0.01), init, grads);
        Assert.False(ours[0].eq(init[0]).all().item<bool>());                                 // it moved
        for (int i = 0; i < init.Length; i++) Assert.True(ours[i].eq(theirs[i]).all().item<bool>());
        Assert.True((ours[0] - init[0]).abs().max().item<float>() < 1e-4);                      // steps of about lr, not 1e-3
    }

    private static AdamW.ParamGroup[] Groups(Parameter[] p) =>
        [new(p.Where((_, i) => i % 2 == 0), new AdamW.Options { weight_decay = 0.1 }), new(p.Where((_, i) => i % 2 == 1), new AdamW.Options { weight_decay = 0.0 })];

    private static Tensor[] Train(Func<Parameter[], AdamW> make, Tensor[] init, Tensor[][] grads)
    {
        var p = init.Select(t => new Parameter(t.clone())).ToArray();
        using var optimizer = make(p);
        foreach (var step in grads)
        {
            for (int i = 0; i < p.Length; i++) p[i].grad = step[i].clone();
            optimizer.step();
        }
        return p.Select(x => x.detach().clone()).ToArray();
    }
}
