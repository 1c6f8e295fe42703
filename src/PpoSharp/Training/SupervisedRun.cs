using PpoSharp.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>
/// What SFT and reward-model training share around their own loss: the batch of a step (a function of seed and step,
/// so that a resumed run draws the same ones), the warm-up + cosine learning rate, gradient clipping, the non-finite
/// guard, and checkpoints of model, optimizer and guard.
/// </summary>
public sealed class SupervisedRun(TrainingConfig config, nn.Module model, OptimizerHelper optimizer, NonFiniteGuard guard, LoraMotion? motion = null)
{
    /// <summary>The <c>batch_size</c> examples of step <paramref name="step"/> (1-based), drawn with replacement.</summary>
    public List<T> Batch<T>(IReadOnlyList<T> train, int step)
    {
        var rng = new Random(Seeds.Derive(config.Seed, step));
        return Enumerable.Range(0, config.BatchSize).Select(_ => train[rng.Next(train.Count)]).ToList();
    }

    /// <summary>Whether step <paramref name="step"/> (1-based) evaluates the held-out share: every <c>eval_every</c> steps and the last.</summary>
    public bool EvalDue(int step) => step % config.EvalEvery == 0 || step == config.Steps;

    /// <summary>
    /// One optimizer step at index <paramref name="step"/> (0-based): sets the scheduled learning rate, back-propagates
    /// <paramref name="loss"/>(), clips the gradient norm, and applies the step unless the guard refuses a non-finite one.
    /// </summary>
    public (double Loss, double GradNorm, double Lr) Step(int step, Func<Tensor> loss)
    {
        double lr = Optimization.CosineWithWarmup(step, config.Steps, config.Warmup, config.Lr, config.MinLrRatio);
        Optimization.SetLearningRate(optimizer, lr);
        optimizer.zero_grad();
        var value = loss();
        value.backward();
        double gradNorm = nn.utils.clip_grad_norm_(model.parameters(), config.MaxGradNorm);
        double item = value.item<float>();
        if (guard.Allows(item, gradNorm, step + 1)) optimizer.step();
        else optimizer.zero_grad();                                  // non-finite: skipped and counted
        return (item, gradNorm, lr);
    }

    /// <summary>Fills a checkpoint folder with the state after step <paramref name="step"/>.</summary>
    public void Save(string dir, int step)
    {
        Checkpoints.SaveTraining(dir, model, optimizer, new StepState(step, guard.InARow, guard.Total));
        motion?.AfterCheckpoint(model is RewardModel rm ? rm.Backbone.Adapter : (model as Decoder)?.Adapter, step);
    }

    /// <summary>Restores a checkpoint folder and returns its step.</summary>
    public int Restore(string dir)
    {
        var state = Checkpoints.RestoreTraining(dir, model, optimizer);
        guard.Restore(state.SkippedInARow, state.SkippedTotal);
        return state.Step;
    }
}
