using PpoSharp.Text;

namespace PpoSharp.Serving;

/// <summary>
/// The running state of one row in a batch: its ids and log-probs so far, its token cap (its max_tokens, and what its
/// prompt leaves of the context), and the stop checks: a stop token id, EOS (unless ignored), a stop string in the text.
/// Text goes out in deltas whose concatenation is the final text: a trailing replacement character (an incomplete
/// UTF-8 sequence) or a tail that could begin a stop string is held back until the next token settles it.
/// </summary>
internal sealed class RowState(RowJob job, int contextLength, ITokenizer tokenizer, string version)
{
    private readonly List<int> _ids = [];
    private readonly List<double> _logprobs = [];
    private readonly List<IReadOnlyList<(int, double)>> _top = [];
    private string _sent = "";

    public RowJob Job { get; } = job;
    public int Cap { get; } = Math.Max(0, Math.Min(job.Sampling.MaxTokens, contextLength - job.Prompt.Count));
    public bool Finished { get; private set; }
    private FinishKind _finish = FinishKind.Length;
    private int? _matchedToken;
    private string? _matchedStop;
    private string _text = "";

    /// <summary>Takes the next token; finishes the row when it stops it. Streams a delta when the row has a callback.</summary>
    public void Accept(int id, double logprob, IReadOnlyList<(int, double)> top)
    {
        _ids.Add(id);
        _logprobs.Add(Math.Max(logprob, -9999.0));
        _top.Add(top);
        var s = Job.Sampling;
        bool stopToken = s.StopTokenIds?.Contains(id) == true || (!s.IgnoreEos && tokenizer.Special.IsEos(id));
        if (stopToken) (Finished, _finish, _matchedToken) = (true, FinishKind.Stop, id);
        bool stopStrings = s.Stop is { Count: > 0 };
        if (stopStrings || Job.OnToken is not null || Finished || _ids.Count >= Cap)       // the text is decoded only when something reads it
            _text = tokenizer.Decode(stopToken ? _ids.Take(_ids.Count - 1) : _ids);
        if (!Finished && stopStrings && FirstStop(_text, s.Stop!) is var (at, stop) && at >= 0)
            (Finished, _finish, _matchedStop, _text) = (true, FinishKind.Stop, stop, _text[..at]);
        if (!Finished && _ids.Count >= Cap) Finished = true;
        if (Job.OnToken is { } send)
        {
            var visible = Finished ? _text : Settled(_text, s.Stop);
            var delta = visible.StartsWith(_sent, StringComparison.Ordinal) ? visible[_sent.Length..] : "";
            if (delta.Length > 0) _sent = visible;
            send(new RowDelta(id, _logprobs[^1], top, delta));
        }
    }

    /// <summary>Ends the row early (its client went away, or the server stops).</summary>
    public void Abort() => (Finished, _finish) = (true, FinishKind.Abort);

    public RowOutput Output(string? error = null) =>
        new(Job.Prompt, _ids, _logprobs, _top, _text, _finish, _matchedToken, _matchedStop, version, error);

    /// <summary>The earliest occurrence of any stop string in text: (index, stop), or (-1, null).</summary>
    private static (int At, string? Stop) FirstStop(string text, IReadOnlyList<string> stops)
    {
        (int At, string? Stop) best = (-1, null);
        foreach (var stop in stops)
        {
            int at = stop.Length == 0 ? -1 : text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (best.At < 0 || at < best.At)) best = (at, stop);
        }
        return best;
    }

    /// <summary>The text without a trailing incomplete character and without a tail that is a prefix of a stop string.</summary>
    private static string Settled(string text, IReadOnlyList<string>? stops)
    {
        text = text.TrimEnd('\uFFFD');
        int hold = 0;
        foreach (var stop in stops ?? [])
            for (int k = Math.Min(stop.Length - 1, text.Length); k > hold; k--)
                if (text.AsSpan(text.Length - k).SequenceEqual(stop.AsSpan(0, k))) { hold = k; break; }
        return text[..^hold];
    }
}
