using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// Activation checkpointing (torch.utils.checkpoint's idea, which TorchSharp lacks): <see cref="Run"/> computes a function
/// without recording its graph, keeps only its inputs, and in the backward pass runs it again with gradients on to get
/// the gradients of its inputs. Memory held between forward and backward falls from every intermediate of the function
/// to its inputs; the price is a second forward. The CPU generator's state is replayed, so dropout draws the same mask.
/// </summary>
public sealed class Checkpoint : autograd.MultiTensorFunction<Checkpoint>
{
    public override string Name => "Checkpoint";

    /// <summary>
    /// <paramref name="function"/>(<paramref name="inputs"/>), with the gradient recomputed in backward. Every tensor the
    /// function reads must be among <paramref name="inputs"/> (null entries allowed), including the trainable parameters
    /// it uses: they receive their gradients as inputs do, even where no activation input requires one. Under no_grad or
    /// when nothing requires a gradient, this is just the call.
    /// </summary>
    public static Tensor[] Run(Func<Tensor?[], Tensor[]> function, params Tensor?[] inputs)
    {
        if (!is_grad_enabled() || !inputs.Any(t => t is not null && t.requires_grad)) return Scoped(function, inputs);
        ReleaseHandedOver();
        return [.. apply([new Call(function, inputs.Length), .. inputs])];
    }

    /// <summary>The function and the number of tensor slots after it (a tensor-free object, so autograd passes it through as data).</summary>
    private sealed record Call(Func<Tensor?[], Tensor[]> Function, int Count);

    /// <summary>Runs the function under no_grad (apply turns gradients off) and saves its inputs and the generator's state.</summary>
    public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var call = (Call)vars[0];
        var inputs = vars.Skip(1).Select(v => v as Tensor).ToArray();
        ctx.save_for_backward([.. inputs]);
        ctx.save_data("call", call);
        ctx.save_data("grad", inputs.Select(t => t is not null && t.requires_grad).ToArray());
        using (var state = torch.random.get_rng_state()) ctx.save_data("rng", state.bytes.ToArray());
        ctx.set_materialize_grads(false);
        return [.. Scoped(call.Function, inputs)];
    }

    /// <summary>
    /// The function's outputs, its intermediates freed on return: they would otherwise live in the caller's dispose scope
    /// until the step ends, which for a loop of chunks is the whole (B, T, V) this class exists to avoid.
    /// </summary>
    private static Tensor[] Scoped(Func<Tensor?[], Tensor[]> function, Tensor?[] inputs)
    {
        using var scope = NewDisposeScope();
        return [.. function(inputs).Select(t => t.MoveToOuterDisposeScope())];
    }

    /// <summary>
    /// The gradients handed to autograd by the last backward: autograd copies them when the call returns, so they are
    /// disposed at the next backward or forward (not left to the step's dispose scope, which would hold a second copy of
    /// every gradient until the step ends).
    /// </summary>
    [ThreadStatic] private static List<Tensor>? _handedOver;

    private static void ReleaseHandedOver()
    {
        _handedOver?.ForEach(t => t.Dispose());
        _handedOver = null;
    }

    /// <summary>
    /// Re-runs the function with gradients on from detached copies of the activation inputs (leaf inputs, the weights, as
    /// they are), then returns d(outputs)/d(inputs) for the incoming gradients.
    /// </summary>
    public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
    {
        ReleaseHandedOver();
        using var scope = NewDisposeScope();                                      // the recomputed graph dies here
        var call = (Call)ctx.get_data("call");
        var needs = (bool[])ctx.get_data("grad");
        var inputs = ctx.get_saved_variables().Select((t, i) => t is null || t.is_leaf ? t : t.detach().requires_grad_(needs[i])).ToArray();   // weights as they are: the function reads them itself
        Tensor[] outputs;
        var now = torch.random.get_rng_state();
        torch.random.set_rng_state(torch.tensor((byte[])ctx.get_data("rng")));
        using (enable_grad()) outputs = call.Function(inputs);
        torch.random.set_rng_state(now);
        var wanted = Enumerable.Range(0, inputs.Length).Where(i => needs[i]).ToArray();
        var live = Enumerable.Range(0, outputs.Length).Where(i => outputs[i].requires_grad && gradOutputs[i] is { IsInvalid: false }).ToArray();
        var result = new Tensor[call.Count + 1];                                  // slot 0: the call itself (no gradient)
        if (live.Length == 0) return [.. result];
        var grads = autograd.grad([.. live.Select(i => outputs[i])], [.. wanted.Select(i => inputs[i]!)],
            [.. live.Select(i => gradOutputs[i])], allow_unused: true);
        for (int k = 0; k < wanted.Length; k++) result[wanted[k] + 1] = grads[k];
        _handedOver = [.. result.Where(t => t is not null).Select(t => t.DetachFromDisposeScope())];
        gradOutputs.ForEach(g => g?.Dispose());
        return [.. result];
    }
}
