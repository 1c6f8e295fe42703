using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>AdamW with weight-decay groups and the warm-up + cosine learning-rate schedule.</summary>
public static class Optimization
{
    /// <summary>
    /// AdamW (Loshchilov and Hutter 2019) with two groups, as nanoGPT and Hugging Face do: parameters of two or more
    /// dimensions (matrices, embeddings) decay; biases and LayerNorm gains do not.
    /// </summary>
    public static AdamW AdamW(nn.Module model, double lr, double weightDecay, double beta1, double beta2)
    {
        var parameters = model.parameters().Where(p => p.requires_grad).ToList();
        var groups = new[]
        {
            new AdamW.ParamGroup(parameters.Where(p => p.dim() >= 2), new AdamW.Options { weight_decay = weightDecay }),
            new AdamW.ParamGroup(parameters.Where(p => p.dim() < 2), new AdamW.Options { weight_decay = 0.0 }),
        };
        return new LeanAdamW(groups, lr, beta1, beta2);
    }

    /// <summary>
    /// lr(step) = peak * step / warmup during warm-up, then
    /// peak * (min + (1 - min) * 0.5 * (1 + cos(pi * progress))) with progress from 0 to 1 over the remaining steps.
    /// </summary>
    public static double CosineWithWarmup(int step, int totalSteps, int warmupSteps, double peak, double minRatio)
    {
        if (step < warmupSteps) return peak * (step + 1) / warmupSteps;
        double progress = totalSteps <= warmupSteps ? 1 : (double)(step - warmupSteps) / Math.Max(1, totalSteps - warmupSteps - 1);
        progress = Math.Clamp(progress, 0, 1);
        return peak * (minRatio + (1 - minRatio) * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }

    public static void SetLearningRate(OptimizerHelper optimizer, double lr)
    {
        foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
    }
}
