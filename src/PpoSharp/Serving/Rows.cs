using PpoSharp.Models;

namespace PpoSharp.Serving;

/// <summary>
/// How one sequence is sampled: the union of what OpenAI/vLLM and SGLang requests carry. A temperature below 1e-5
/// (vLLM's sampling epsilon) is greedy decoding. <paramref name="TopK"/> 0 or -1 keeps every token; <paramref name="Seed"/>
/// seeds this row's own generator (none: a random seed), so a seeded row samples the same tokens whatever else is in the batch.
/// </summary>
public sealed record RowSampling(int MaxTokens, double Temperature = 1.0, double TopP = 1.0, int TopK = 0, long? Seed = null,
    IReadOnlyList<string>? Stop = null, IReadOnlyList<int>? StopTokenIds = null, bool IgnoreEos = false, int TopLogprobs = 0)
{
    public const double GreedyBelow = 1e-5;

    public bool Greedy => Temperature < GreedyBelow;

    /// <summary>The library's sampling options for this row (top-k -1 means off, as in vLLM and SGLang).</summary>
    public SamplingOptions Options => new(MaxTokens, Greedy ? 1.0 : Temperature, Math.Max(TopK, 0), TopP, Greedy);
}

/// <summary>Why a row stopped: an EOS or stop token or stop string, its token cap, or an abort (client gone, shutdown).</summary>
public enum FinishKind { Stop, Length, Abort }

/// <summary>One token of a row as it is generated: its id, log p at temperature 1, and the text it adds (held back while it may be part of a stop string).</summary>
public sealed record RowDelta(int Id, double Logprob, IReadOnlyList<(int Id, double Logprob)> Top, string Text);

/// <summary>
/// A finished row. <paramref name="Ids"/> are the new ids, up to and including a matched EOS or stop token (as
/// <c>generate</c> returns them); <paramref name="Logprobs"/> are log p of each under the model at temperature 1 (raw,
/// vLLM's default logprobs mode), clamped at -9999 as vLLM does; <paramref name="Text"/> leaves out a matched stop
/// token or string and everything after it. <paramref name="MatchedToken"/> or <paramref name="MatchedStop"/> says what stopped it.
/// </summary>
public sealed record RowOutput(IReadOnlyList<int> PromptIds, IReadOnlyList<int> Ids, IReadOnlyList<double> Logprobs,
    IReadOnlyList<IReadOnlyList<(int Id, double Logprob)>> Top, string Text, FinishKind Finish, int? MatchedToken, string? MatchedStop,
    string WeightVersion, string? Error = null);

/// <summary>
/// One sequence to generate: prompt ids, sampling, the adapter it asks for (null: the base model), the request's
/// cancellation, and an optional callback per token (streaming). The scheduler completes <see cref="Result"/>.
/// </summary>
public sealed class RowJob(IReadOnlyList<int> prompt, RowSampling sampling, string? adapter, CancellationToken cancel, Action<RowDelta>? onToken = null)
{
    private readonly TaskCompletionSource<RowOutput> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public IReadOnlyList<int> Prompt { get; } = prompt;
    public RowSampling Sampling { get; } = sampling;
    public string? Adapter { get; } = adapter;
    public CancellationToken Cancel { get; } = cancel;
    public Action<RowDelta>? OnToken { get; } = onToken;
    public Task<RowOutput> Result => _done.Task;

    internal void Complete(RowOutput output) => _done.TrySetResult(output);
    internal void Fail(Exception e) => _done.TrySetException(e);
}
