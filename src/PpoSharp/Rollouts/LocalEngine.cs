using PpoSharp.Models;
using PpoSharp.Text;
using static TorchSharp.torch;

namespace PpoSharp.Rollouts;

/// <summary>
/// Generation in the trainer's process with <see cref="Sampling.Generate(Decoder, Tensor, Tensor, SamplingOptions, SpecialTokenIds, Generator?, bool)"/>
/// and the trainer's generator: the numbers of a run are those of the trainer before engines existed. Gives no log-probs
/// (the trainer's own are the rollout's), so no importance weights either.
/// </summary>
public sealed class LocalEngine(Decoder model, SpecialTokenIds special, Generator generator) : IRolloutEngine
{
    public long WeightVersion { get; set; }

    public IReadOnlyList<RolloutCompletion> Generate(RolloutRequest request)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var (prompts, promptMask) = Sampling.LeftPad(request.Prompts, special.Pad, Devices.DeviceOf(model));   // (B, P)
        var g = Sampling.Generate(model, prompts, promptMask, request.Sampling, special, generator);
        long n = g.Responses.shape[1];
        var ids = g.Responses.cpu().data<long>().ToArray();
        var mask = g.Mask.cpu().data<bool>().ToArray();
        var result = new List<RolloutCompletion>(request.Prompts.Count);
        for (int i = 0; i < request.Prompts.Count; i++)
        {
            var row = new List<int>();
            for (long j = 0; j < n && mask[i * n + j]; j++) row.Add((int)ids[i * n + j]);
            bool eos = row.Count > 0 && request.Eos.Contains(row[^1]);
            result.Add(new RolloutCompletion(row, null, eos ? FinishReason.Stop : FinishReason.Length, WeightVersion));
        }
        return result;
    }

    public void Dispose() { }
}
