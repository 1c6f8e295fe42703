using PpoSharp.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class LeanAdamWTests
{
    /// <summary>LeanAdamW takes TorchSharp's AdamW steps bit for bit (two groups, one with weight decay, three steps).</summary>
    [Fact]
    public void StepsEqualTorchSharpsAdamW()
    {
        manual_seed(3);
        var init = new[] { randn(4, 3), randn(5) };
        var grads = Enumerable.Range(0, 3).Select(_ => init.Select(t => randn(t.shape)).ToArray()).ToArray();
        var ours = Train(p => new LeanAdamW(Groups(p), 0.01, 0.9, 0.99), init, grads);
        var theirs = Train(p => optim.AdamW(Groups(p), lr: 0.01, beta1: 0.9, beta2: 0.99), init, grads);
        Assert.False(ours[0].eq(init[0]).all().item<bool>());                                 // it moved
        for (int i = 0; i < init.Length; i++) Assert.True(ours[i].eq(theirs[i]).all().item<bool>());
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
        [new(p.Take(1), new AdamW.Options { weight_decay = 0.1 }), new(p.Skip(1), new AdamW.Options { weight_decay = 0.0 })];

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
