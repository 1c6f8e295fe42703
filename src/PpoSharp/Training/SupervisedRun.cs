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
    /// <summary>
    /// The micro-batches of step <paramref name="step"/> (1-based), a function of seed and step. Without num_train_epochs,
    /// gradient_accumulation_steps x batch_size examples drawn with replacement, cut into micro-batches of batch_size in
    /// draw order (so k micro-batches of b hold the examples of one batch of k x b). With num_train_epochs, the step's
    /// micro-batches of its epoch's shuffle (see <see cref="TrainingConfig.NumTrainEpochs"/>).
    /// </summary>
    public List<List<T>> Batches<T>(IReadOnlyList<T> train, int step)
    {
        int b = config.BatchSize, k = config.GradientAccumulationSteps;
        if (config.NumTrainEpochs is null)
        {
            var rng = new Random(Seeds.Derive(config.Seed, step));
            var drawn = Enumerable.Range(0, b * k).Select(_ => train[rng.Next(train.Count)]).ToList();
            return [.. drawn.Chunk(b).Select(c => c.ToList())];
        }
        int perEpoch = config.StepsPerEpoch(train.Count), epoch = (step - 1) / perEpoch, first = (step - 1) % perEpoch * k * b;
        var order = Enumerable.Range(0, train.Count).ToArray();
        new Random(Seeds.Derive(config.Seed, -1 - epoch)).Shuffle(order);               // negative index: apart from the steps' seeds
        return [.. order.Skip(first).Take(k * b).Chunk(b).Select(c => c.Select(i => train[i]).ToList())];
    }

    /// <summary>Whether step <paramref name="step"/> (1-based) evaluates the held-out share: every <c>eval_every</c> steps and the last.</summary>
    public bool EvalDue(int step) => step % config.EvalEvery == 0 || step == config.Steps;

    /// <summary>
    /// One optimizer step at index <paramref name="step"/> (0-based): sets the scheduled learning rate, back-propagates
    /// <paramref name="loss"/>(i) of each of the <paramref name="microBatches"/> micro-batches (each normalised by the whole
    /// step's count, so that their sum is the step's loss; each in its own dispose scope, so one micro-batch's activations
    /// are freed before the next), clips the gradient norm, and applies the step unless the guard refuses a non-finite one.
    /// </summary>
    public (double Loss, double GradNorm, double Lr) Step(int step, int microBatches, Func<int, Tensor> loss)
    {
        double lr = Optimization.CosineWithWarmup(step, config.Steps, config.Warmup, config.Lr, config.MinLrRatio);
        Optimization.SetLearningRate(optimizer, lr);
        optimizer.zero_grad();
        double item = 0;
        for (int i = 0; i < microBatches; i++)
        {
            using var scope = NewDisposeScope();
            var value = loss(i);
            value.backward();
            item += value.item<float>();
        }
        double gradNorm = nn.utils.clip_grad_norm_(model.parameters(), config.MaxGradNorm);
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
