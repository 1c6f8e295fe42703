using System.Diagnostics;
using PpoSharp.Algorithms;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Rollouts;
using PpoSharp.Text;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>What a PPO checkpoint records beside the weights and the optimizer: everything else the next iteration depends on.</summary>
public sealed record PpoState(int Iteration, double KlCoef, int DataEpoch, int DataCursor, string GeneratorState, int SkippedInARow, int SkippedTotal,
    List<RunningMoments>? RewardMoments = null);

/// <summary>Figures of a finished PPO run.</summary>
public sealed record PpoResult(int Iterations, double FirstRewardMean, double LastRewardMean, double LastKl, double Seconds, string Title = "ppo", double GeneratedTokens = 0)
{
    public string Summary(string dir) =>
        $"{Title}: {Iterations} iterations in {Seconds:F0} s; sampled reward {FirstRewardMean:F3} (first 10%) -> {LastRewardMean:F3} (last 10%)" +
        (double.IsNaN(LastKl) ? "" : $", kl {LastKl:F3}") + $" -> {dir}";
}

/// <summary>
/// PPO for a causal LM, as in the notes: prompt batch -> actor generates (old log-probs) -> reward -> critic values ->
/// buffer -> several epochs of clipped updates -> resample. One iteration is
/// <see cref="CollectRollouts"/> -> <see cref="ComputeAdvantages"/> -> <see cref="Update"/> -> <see cref="LogMetrics"/>.
/// The critic-free algorithms of <see cref="GrpoConfig"/> (GRPO, RLOO, REINFORCE++) run on the same rollout and update
/// loop: each prompt sampled G times, advantages from the group or the batch instead of a critic and GAE, reference
/// log-probs only when a KL term is on, and no critic at all.
/// </summary>
public sealed partial class PpoTrainer : IDisposable
{
    private readonly PpoConfig _config;                  // the loop's settings (a GRPO config's, under PPO's names)
    private readonly GrpoConfig? _grpo;                  // null: PPO with critic and GAE
    private readonly Decoder _actor;
    private readonly Decoder? _reference;                // null when no KL term needs it (critic-free only)
    private readonly CriticModel? _critic;               // PPO only
    private readonly int _numGenerations;                // G completions per prompt (1 for PPO)
    private readonly string _title;
    private string? _outDir;
    private RolloutText? _texts;                         // the current rollout's decoded prompts, completions and reward parts
    private readonly ITokenizer _tokenizer;
    private readonly IRewardFunction _reward;
    private readonly List<NormalizedReward> _normalizers;   // one per model: reward part (normalising with normalize_reward), checkpointed
    private readonly IRewardFunction? _gold;
    private readonly List<PromptRecord> _prompts;
    private readonly List<int>[] _encodedPrompts;
    private readonly AdamW _optimizer;
    private readonly KlController _kl;
    private readonly Generator _generator;
    private readonly TextWriter _log;
    private int[] _order = [];
    private int _dataEpoch = -1, _cursor;
    private readonly NonFiniteGuard _guard;
    private readonly LoraMotion _motion;
    private (double Generate, double Forward, double Reward) _phases;     // seconds of the last rollout's phases
    private readonly RolloutSettings _rollout;
    private readonly IRolloutEngine _engine;             // local, or a fleet of servers
    private WeightSync? _sync;                           // servers only: set up by Train
    private long _version;                               // the trainer's weight version: updates done (= iterations)
    private readonly Queue<Prefetch> _ahead = new();     // max_staleness = N >= 1: the next N batches, generated (in order) during the updates
    private (double Mean, double Max)? _logProbDiff;     // |log pi_train - log pi_rollout| of the last rollout
    private (double Staleness, int Dropped, double Sync, double Wait) _fleetStats;   // of the current iteration

    /// <summary>A batch being generated ahead, and the data position before it (what a checkpoint keeps: it is generated again after a resume).</summary>
    private sealed record Prefetch(Task<PendingRollout> Task, (int Epoch, int Cursor) Before);

    /// <summary>Called with each iteration's metrics row before it is written (benchmarks add figures of their own).</summary>
    public Action<Dictionary<string, object>>? AfterIteration { get; set; }

    /// <summary>Held-out evaluation during training, which keeps <c>best/</c> (null: none).</summary>
    public HeldOutEval? HeldOut { get; set; }

    /// <summary>The initial model's evaluation on <see cref="HeldOut"/>, when the caller has made it (not made twice).</summary>
    public EvalResult? InitialHeldOut { get; set; }

    /// <summary>The last iteration's evaluation on <see cref="HeldOut"/>: the trained model's.</summary>
    public EvalResult? LastHeldOut { get; private set; }

    /// <summary>Test seam: transforms each minibatch loss before backward (e.g. to inject NaN).</summary>
    internal Func<Tensor, Tensor>? LossFault { get; set; }

    /// <summary>A trainer over ready models. <c>gold</c>: a rule reward logged as <c>gold_reward_mean</c> beside a proxy reward, to show over-optimisation; not trained on.</summary>
    public PpoTrainer(Decoder actor, Decoder reference, CriticModel critic, ITokenizer tokenizer, IRewardFunction reward,
        IReadOnlyList<PromptRecord> prompts, PpoConfig config, TextWriter log, IRewardFunction? gold = null, InvalidRecords? invalid = null)
        : this(actor, reference, critic, null, tokenizer, reward, prompts, config, log, gold, invalid) { }

    /// <summary>A critic-free trainer (GRPO, RLOO, REINFORCE++) over ready models; <paramref name="reference"/> is needed only when beta or kl_coef is set.</summary>
    public PpoTrainer(Decoder actor, Decoder? reference, ITokenizer tokenizer, IRewardFunction reward,
        IReadOnlyList<PromptRecord> prompts, GrpoConfig config, TextWriter log, IRewardFunction? gold = null, InvalidRecords? invalid = null)
        : this(actor, reference, null, config.Validate(), tokenizer, reward, prompts, config.Loop(), log, gold, invalid) { }

    private PpoTrainer(Decoder actor, Decoder? reference, CriticModel? critic, GrpoConfig? grpo, ITokenizer tokenizer, IRewardFunction reward,
        IReadOnlyList<PromptRecord> prompts, PpoConfig config, TextWriter log, IRewardFunction? gold, InvalidRecords? invalid)
    {
        (_actor, _reference, _critic, _grpo, _tokenizer, _config, _log, _gold) = (actor, reference, critic, grpo, tokenizer, config, log, gold);
        (_reward, _normalizers) = NormalizedReward.ForModels(reward, config.NormalizeReward);
        if (grpo is null && (reference is null || critic is null)) throw new ArgumentException("PPO needs a reference model and a critic");
        if (grpo is { NeedsReference: true } && reference is null)
            throw new PpoSharpException($"beta ({grpo.Beta}) or kl_coef ({grpo.KlCoef}) needs the reference model");
        _numGenerations = grpo?.NumGenerations ?? 1;
        _title = grpo?.Algo ?? "ppo";
        if (_reference is not null)
        {
            _reference.eval();
            foreach (var p in _reference.parameters()) p.requires_grad = false;
        }
        foreach (var model in new nn.Module?[] { actor, critic, reference }) if (model is not null) config.ApplyTo(model, log);   // the reference too: its log-probs take the actor's path
        (_prompts, _encodedPrompts) = EncodePrompts(prompts, tokenizer, actor.Config.ContextLength, invalid ?? new InvalidRecords(skip: false));
        var parameters = critic is null ? actor.parameters().ToList() : actor.parameters().Concat(critic.parameters()).Distinct().ToList();
        _optimizer = LeanAdamW.For(parameters, config.Lr, 0.9, 0.99, config.WeightDecay);   // TorchSharp's optim.AdamW defaults (beta2 0.99)
        _kl = new KlController(config.KlCoef, config.AdaptiveKl ?? RewardSpec.HasModel(reward) ? config.KlTarget : null, config.KlHorizon);
        _generator = new Generator((ulong)config.Seed);
        _guard = new NonFiniteGuard(config.MaxSkippedSteps, log, _title);
        _motion = new LoraMotion(log, _title, config.Lr);
        _rollout = (grpo?.Rollout ?? config.Rollout).Validate(config.Lora.Enabled);
        _engine = RolloutEngines.Create(_rollout, actor, tokenizer.Special, _generator, _numGenerations, log);
    }

    public Decoder Actor => _actor;

    /// <summary>
    /// Refuses, before a run writes anything, a batch_size larger than the prompts or an update step that cannot fit in
    /// memory (<see cref="MemoryCheck"/>): a minibatch of batch_size x G / num_mini_batches sequences of the longest prompt
    /// plus the response length, through the actor (and the critic).
    /// </summary>
    public void CheckBatch()
    {
        int context = _actor.Config.ContextLength;
        if (_config.ResponseLength >= context)
            throw new PpoSharpException($"{(_grpo is null ? "response_length" : "max_completion_length")} {_config.ResponseLength} does not fit in the model's context_length {context}, which prompt and completion share (set at most {context - 1})");
        int length = _encodedPrompts.Select(p => p.Count).DefaultIfEmpty(0).Max() + _config.ResponseLength;
        long sequences = (long)_config.BatchSize * _numGenerations / _config.NumMiniBatches * (_critic is null ? 1 : 2);
        MemoryCheck.Check(_title, "batch_size", _config.BatchSize, _prompts.Count, "prompts", _actor.Config, sequences, length, logits: true,
            MemoryCheck.Trainable(OptimizedParameters), _log);
    }
    /// <summary>The critic; null for the critic-free algorithms.</summary>
    public CriticModel? Critic => _critic;
    /// <summary>The reference model; null when no KL term needs it.</summary>
    public Decoder? Reference => _reference;
    /// <summary>Every parameter the optimizer updates.</summary>
    internal IEnumerable<Parameter> OptimizedParameters => _optimizer.parameters();
    public ITokenizer Tokenizer => _tokenizer;
    public double KlCoef => _kl.Value;

    /// <summary>
    /// Runs the iterations, appending metrics to <c>metrics.jsonl</c>, writing checkpoints every <c>checkpoint_every</c>
    /// iterations, and saves the actor (and critic) into <paramref name="outDir"/>. With <paramref name="resume"/> it
    /// continues from the newest usable checkpoint, exactly: same seed, same metrics as an uninterrupted run. A stop
    /// request (Ctrl+C, SIGTERM) ends it after the current iteration with a checkpoint.
    /// </summary>
    public PpoResult Train(string outDir, bool resume = false, StopSignal? stop = null)
    {
        _outDir = outDir;
        if (_engine is ServerEngine server)
            _sync = new WeightSync(_rollout, _rollout.WeightSyncDir.Length > 0 ? _rollout.WeightSyncDir : Path.Combine(outDir, "weight_sync"),
                server, _tokenizer, (object?)_grpo ?? _config, _log);
        var best = HeldOut is null ? null : new BestPolicy(outDir, HeldOut, _tokenizer, (object?)_grpo ?? _config, resume);
        best?.Offer(_actor, 0, _config.Iterations, () => 0, null, InitialHeldOut);              // the initial model: the first candidate
        double seconds = new ResumableLoop(_title, _config.Iterations, outDir, _config.CheckpointEvery, _config.KeepCheckpoints, _log).Run(resume, stop,
            i =>
            {
                var row = Iteration(i);
                var eval = best?.Offer(_actor, i, _config.Iterations, () => HeldOutKl(i, row), row);
                if (i == _config.Iterations) LastHeldOut = eval;
                return row;
            },
            row => $"reward {row["reward_mean"]:F3}" + (row.TryGetValue("kl", out var kl) ? $" kl {kl:F3}" : "") + $" entropy {row["entropy"]:F3}",
            (dir, i) => SaveCheckpoint(dir, i),
            Restore,
            () => _guard.Failure);
        Save(outDir);
        var rows = MetricsWriter.Read(Path.Combine(outDir, MetricsWriter.FileName));
        int k = Math.Max(1, rows.Count / 10);
        double Mean(IEnumerable<Dictionary<string, System.Text.Json.JsonElement>> r) => r.Average(x => x["reward_mean"].GetDouble());
        double lastKl = rows[^1].TryGetValue("kl", out var kl) ? kl.GetDouble() : double.NaN;
        double generated = rows.Sum(x => x.TryGetValue("generated_tokens", out var g) ? g.GetDouble() : 0);
        foreach (var warning in RunWarnings.Of(rows)) _log.WriteLine($"warning: {warning}");
        if (best?.Best is { } b)
            _log.WriteLine($"{_title}: best/ is {(b.Iteration == 0 ? "the initial model" : $"iteration {b.Iteration}")}: {b.Metric} {b.Reward:F3}, exact match {b.ExactMatch:P1} -> {Path.Combine(outDir, BestPolicy.Folder)}");
        return new PpoResult(rows.Count, Mean(rows.Take(k)), Mean(rows.TakeLast(k)), lastKl, seconds, _title, generated);
    }

    private void SaveCheckpoint(string dir, int iteration)
    {
        _motion.AfterCheckpoint(_actor.Adapter, iteration);
        _actor.save_safetensors(Path.Combine(dir, RunDirectory.ModelFile));
        _critic?.save_safetensors(Path.Combine(dir, CriticFile));
        _optimizer.save_state_dict(Path.Combine(dir, Checkpoints.OptimizerFile));
        using var state = _generator.get_state();
        var (epoch, cursor) = _ahead.Count > 0 ? _ahead.Peek().Before : (_dataEpoch, _cursor);   // batches generated ahead are generated again after a resume
        Checkpoints.WriteState(dir, new PpoState(iteration, _kl.Value, epoch, cursor,
            Convert.ToBase64String(state.data<byte>().ToArray()), _guard.InARow, _guard.Total, _normalizers.Select(n => n.Moments).ToList()));
    }

    /// <summary>Restores a checkpoint (throws <see cref="PpoSharpException"/> if it is incomplete or corrupt); returns its iteration.</summary>
    private int Restore(string dir)
    {
        var state = Checkpoints.ReadState<PpoState>(dir);
        RunDirectory.LoadWeights(_actor, Path.Combine(dir, RunDirectory.ModelFile));
        if (_critic is not null) RunDirectory.LoadWeights(_critic, Path.Combine(dir, CriticFile));
        Checkpoints.LoadOptimizer(_optimizer, dir);
        try
        {
            using var generatorState = tensor(Convert.FromBase64String(state.GeneratorState));
            _generator.set_state(generatorState);
        }
        catch (Exception e) when (e is FormatException or ArgumentException or System.Runtime.InteropServices.ExternalException)
        {
            throw new PpoSharpException($"{Path.Combine(dir, Checkpoints.StateFile)}: bad generator state ({e.Message.Split('\n')[0]})");
        }
        _kl.Restore(state.KlCoef);
        foreach (var (normalizer, moments) in _normalizers.Zip(state.RewardMoments ?? [])) normalizer.Moments = moments;
        (_dataEpoch, _cursor) = (state.DataEpoch, state.DataCursor);
        _version = state.Iteration;
        _guard.Restore(state.SkippedInARow, state.SkippedTotal);
        _order = _dataEpoch < 0 ? [] : EpochOrder(_dataEpoch);
        if (_outDir is not null) TruncateCompletions(_outDir, state.Iteration);
        return state.Iteration;
    }

    public const string CriticFile = "critic.safetensors";

    public void Save(string outDir)
    {
        RunDirectory.SavePolicy(outDir, _actor, _tokenizer, (object?)_grpo ?? _config);
        if (_critic is null) return;
        RunDirectory.SaveScalarModel(Path.Combine(outDir, RunDirectory.CriticFolder), _critic.Backbone ?? _actor, _critic.Head, 0, _tokenizer, _config);
    }

    /// <summary>
    /// One iteration of the notes' loop; returns its metrics row. With servers: their weights are brought to the trainer's
    /// version first (at the start and after a resume), and after the update; with max_staleness = N >= 1 the next N
    /// batches are generated while this one trains (one new batch per iteration once the queue is full: staleness N), and
    /// a batch more than N versions old is dropped and counted (<see cref="Staleness"/>). The servers finish the batches in
    /// flight before they load new weights, so every batch comes from one version.
    /// </summary>
    public Dictionary<string, object> Iteration(int iteration)
    {
        using var scope = NewDisposeScope();
        var clock = Stopwatch.StartNew();
        _fleetStats = (0, 0, 0, 0);
        if (_sync is not null && _engine.WeightVersion != _version) _fleetStats.Sync += _sync.Push(_actor, _version);
        var pending = NextRollout();
        var rollout = BuildExperience(pending);                   // tensors owned by this iteration's scope
        double rolloutSeconds = clock.Elapsed.TotalSeconds;
        var experience = ComputeAdvantages(rollout);
        NativeHeap.Trim();                                        // the rollout's freed memory back before the update's peak
        var update = Update(experience);
        double updateSeconds = clock.Elapsed.TotalSeconds - rolloutSeconds;
        _fleetStats.Wait = WaitAhead();                          // the batches ahead are done before the servers get new weights
        _version = iteration;
        if (_sync is not null) _fleetStats.Sync += _sync.Push(_actor, _version);
        WriteCompletions(iteration, experience);
        var row = _grpo is null
            ? LogMetrics(iteration, experience, update, rolloutSeconds, updateSeconds)
            : CriticFreeMetrics(iteration, experience, update, rolloutSeconds, updateSeconds);
        row["iteration_seconds"] = clock.Elapsed.TotalSeconds;
        return row;
    }

    /// <summary>Waits for the batches generated ahead; returns the seconds waited. A failure is raised when its batch is taken.</summary>
    private double WaitAhead()
    {
        var wait = Stopwatch.StartNew();
        try { Task.WaitAll(_ahead.Select(p => p.Task).ToArray()); }
        catch (AggregateException) { }
        return wait.Elapsed.TotalSeconds;
    }

    /// <summary>
    /// The batch to train on: the oldest one generated ahead, or one generated now; a batch too stale is dropped and the
    /// next taken (<see cref="Staleness.Take"/>). Then tops the batches generated ahead up to max_staleness.
    /// </summary>
    private PendingRollout NextRollout()
    {
        (PendingRollout, bool Ahead) Next() => _ahead.TryDequeue(out var ahead)
            ? (ahead.Task.GetAwaiter().GetResult(), true)
            : (GenerateRollout(NextRolloutBatch(), RolloutSeed()), false);
        if (!_rollout.Remote) return Next().Item1;               // local: always the current weights
        var (pending, dropped, staleness) = Staleness.Take(Next, p => p.Completions.Select(c => c.WeightVersion).ToList(), _version, _rollout.MaxStaleness);
        (_fleetStats.Dropped, _fleetStats.Staleness) = (dropped, staleness);
        while (_ahead.Count < _rollout.MaxStaleness)
        {
            var before = (_dataEpoch, _cursor);
            var (next, seed) = (NextRolloutBatch(), RolloutSeed());
            var previous = _ahead.Count > 0 ? _ahead.Last().Task : Task.CompletedTask;
            _ahead.Enqueue(new Prefetch(Task.Run(() =>             // HTTP only: no tensors on this thread
            {
                try { previous.Wait(); } catch (AggregateException) { }   // in order, one batch at a time
                return GenerateRollout(next, seed);
            }), before));
        }
        return pending;
    }

    /// <summary>The sampling seed of the batch just taken: a function of the seed and the data position, so a resume samples alike.</summary>
    private long RolloutSeed() => Seeds.Derive(_config.Seed, _dataEpoch * 1_000_003 + _cursor);

    /// <summary>The next batch_size prompts, each repeated G times in a row: one prompt index per completion to sample.</summary>
    internal List<int> NextRolloutBatch()
    {
        var batch = NextBatch();
        return _numGenerations == 1 ? batch : batch.SelectMany(i => Enumerable.Repeat(i, _numGenerations)).ToList();   // groups of G, contiguous
    }

    private List<int> NextBatch()
    {
        var batch = new List<int>(_config.BatchSize);
        while (batch.Count < _config.BatchSize)
        {
            if (_cursor >= _order.Length)
            {
                _order = EpochOrder(++_dataEpoch);
                _cursor = 0;
            }
            batch.Add(_order[_cursor++]);
        }
        return batch;
    }

    /// <summary>The prompt order of one pass over the data: a function of (seed, epoch) alone, so a checkpoint needs only the position.</summary>
    private int[] EpochOrder(int epoch)
    {
        var rng = new Random(Seeds.Derive(_config.Seed, epoch));
        return Enumerable.Range(0, _prompts.Count).OrderBy(_ => rng.Next()).ToArray();
    }

    /// <summary>
    /// Phase 1 (no grad): generate, then old log-probs, reference log-probs (when a KL term needs them), values (PPO
    /// only) and scores into an <see cref="Experience"/>. <paramref name="batch"/> holds one prompt index per completion,
    /// a group's G copies contiguous.
    /// </summary>
    public Experience CollectRollouts(IReadOnlyList<int> batch) => BuildExperience(GenerateRollout(batch, RolloutSeed()));

    /// <summary>Generation of <paramref name="batch"/> by the rollout engine: token ids in, completions out, timed.</summary>
    private PendingRollout GenerateRollout(IReadOnlyList<int> batch, long seed)
    {
        var clock = Stopwatch.StartNew();
        var prompts = batch.Select(i => (IReadOnlyList<int>)_encodedPrompts[i]).ToList();
        int room = _actor.Config.ContextLength - prompts.Max(x => x.Count);             // the trainer's sequences are P + N long
        var sampling = new SamplingOptions(Math.Min(_config.ResponseLength, Math.Max(room, 1)), _config.Temperature, _config.TopK, _config.TopP);
        if (!_rollout.Remote) _actor.eval();                                            // LoRA dropout off while sampling locally
        var request = new RolloutRequest(prompts, _rollout.Remote ? sampling : sampling with { MaxNewTokens = _config.ResponseLength },
            _tokenizer.Special.Eos, seed);
        var completions = _engine.Generate(request);
        return new PendingRollout(batch, completions, clock.Elapsed.TotalSeconds);
    }

    /// <summary>A generated batch waiting to become an <see cref="Experience"/>: prompt indices, completions, seconds of generation.</summary>
    private sealed record PendingRollout(IReadOnlyList<int> Batch, IReadOnlyList<RolloutCompletion> Completions, double Seconds);

    /// <summary>
    /// Phase 1 after generation (no grad): old log-probs recomputed by the trainer on the returned tokens, reference
    /// log-probs (when a KL term needs them), values (PPO only) and scores into an <see cref="Experience"/>; with an
    /// engine's log-probs, the rollout_logprob_diff metrics and the importance weights of <see cref="RolloutCorrection"/>.
    /// </summary>
    private Experience BuildExperience(PendingRollout pending)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        _actor.eval();
        _critic?.eval();                                                                // LoRA dropout off while collecting
        var batch = pending.Batch;
        var device = Devices.DeviceOf(_actor);
        var (prompts, promptMask) = Sampling.LeftPad(batch.Select(i => (IReadOnlyList<int>)_encodedPrompts[i]).ToList(), _tokenizer.Special.Pad, device);   // (B, P)
        var (responses, responseMask, engineLogProbs) = Completions.ToTensors(pending.Completions, _tokenizer.Special.Pad, device);   // (B, N) x 3
        var generation = new Generation(responses, responseMask);
        long p = prompts.shape[1], n = responses.shape[1];
        var sequences = cat([prompts, responses], 1);                                   // (B, P+N)
        var mask = cat([promptMask, responseMask], 1);                                  // (B, P+N)
        double generateSeconds = pending.Seconds;
        var clock = Stopwatch.StartNew();

        var (oldLogProbs, _, hidden, positions) = ResponseScoring.Forward(_actor, sequences, mask, p, _config.Temperature);   // (B, N) ...
        var refLogProbs = _reference is null ? null : ResponseScoring.LogProbs(_reference, sequences, mask, p, _config.Temperature);   // (B, N)
        var values = _critic?.Values(hidden, sequences, positions, mask, p - 1, n);     // (B, N)
        Tensor? isWeights = null;                                                       // (B, N)
        _logProbDiff = null;
        if (engineLogProbs is not null)
        {
            _logProbDiff = RolloutCorrection.LogProbDiff(oldLogProbs, engineLogProbs, responseMask);
            if (_rollout.IsCorrection)
                isWeights = RolloutCorrection.Weights(oldLogProbs, engineLogProbs, responseMask, _rollout.IsMode, _rollout.IsClipMin, _rollout.IsClipMax);
        }
        double forwardSeconds = clock.Elapsed.TotalSeconds;
        var (scores, gold) = Score(batch, generation);             // (B), (B)?
        _phases = (generateSeconds, forwardSeconds, clock.Elapsed.TotalSeconds - forwardSeconds);
        var truncated = Sampling.EndedWithEos(responses, responseMask, _tokenizer.Special.Eos).logical_not();   // (B)
        var groups = arange(responses.shape[0], ScalarType.Int64, device: responses.device).div(_numGenerations, rounding_mode: RoundingMode.floor);   // (B)
        var experience = new Experience
        {
            Sequences = sequences, AttentionMask = mask, ResponseMask = responseMask,
            OldLogProbs = oldLogProbs, RefLogProbs = refLogProbs, OldValues = values, Scores = scores, GoldScores = gold,
            Truncated = truncated, GroupIds = groups, IsWeights = isWeights,
        };
        foreach (var t in new[] { sequences, mask, responseMask, oldLogProbs, refLogProbs, values, scores, gold, truncated, groups, isWeights }) t?.MoveToOuterDisposeScope();
        return experience;
    }

    /// <summary>
    /// The reward's scores (B) of decoded responses, minus the missing-EOS penalty, clipped if configured; and the gold
    /// rule's raw scores (B) when one is set.
    /// </summary>
    private (Tensor Scores, Tensor? Gold) Score(IReadOnlyList<int> batch, Generation generation)
    {
        var texts = Evaluator.Decode(_tokenizer, generation);
        var inputs = batch.Select((idx, k) => new RewardInput(_prompts[idx].Messages, texts[k].Text, _prompts[idx].Solutions, _prompts[idx].Source, texts[k].Length, _prompts[idx].Columns)).ToList();
        if (RewardSpec.Functions(_reward).Any(f => f is RemoteReward)) inputs = WithQueries(inputs, batch, generation);
        var device = generation.Responses.device;
        var (total, parts) = ScoreParts(inputs);
        _texts = new RolloutText(inputs.Select(x => x.Prompt).ToList(), inputs.Select(x => x.Response).ToList(), parts);
        var scores = tensor(total.Select(s => (float)s).ToArray(), device: device);    // (B)
        var gold = _gold is null ? null : tensor(_gold.Score(inputs).Select(s => (float)s).ToArray(), device: device);   // (B)
        if (_config.MissingEosPenalty > 0)
        {
            var hasEos = Sampling.EndedWithEos(generation.Responses, generation.Mask, _tokenizer.Special.Eos);   // (B)
            scores = scores - _config.MissingEosPenalty * hasEos.logical_not().to(scores.dtype);
        }
        if (_config.ScoreClip > 0) scores = scores.clamp(-_config.ScoreClip, _config.ScoreClip);
        return (scores, gold);
    }

    /// <summary>
    /// The inputs with OpenRLHF's <c>query</c> for remote reward servers: the prompt as the model saw it (chat template
    /// applied) followed by the response, decoded with special tokens kept.
    /// </summary>
    private List<RewardInput> WithQueries(List<RewardInput> inputs, IReadOnlyList<int> batch, Generation generation)
    {
        var ids = generation.Responses.cpu().data<long>().ToArray();
        var mask = generation.Mask.cpu().data<bool>().ToArray();
        long n = generation.Responses.shape[1];
        return inputs.Select((x, k) =>
        {
            var response = Enumerable.Range(0, (int)n).Where(j => mask[k * n + j]).Select(j => (int)ids[k * n + j]);
            return x with { Query = _tokenizer.Decode(_encodedPrompts[batch[k]].Concat(response), skipSpecial: false) };
        }).ToList();
    }

    /// <summary>The reward's total score per input and each function's own scores by name (one part unless it is a <see cref="CompositeReward"/>).</summary>
    private (double[] Total, Dictionary<string, double[]> Parts) ScoreParts(IReadOnlyList<RewardInput> inputs)
    {
        if (_reward is CompositeReward composite) return composite.ScoreParts(inputs);
        var s = _reward.Score(inputs).ToArray();
        return (s, new Dictionary<string, double[]> { [_reward.Name] = s });
    }

    /// <summary>Phase 2: per-token rewards (score + KL penalty), GAE advantages and returns, whitening; the critic-free estimators without a critic.</summary>
    public Experience ComputeAdvantages(Experience e)
    {
        if (_grpo is not null) return CriticFreeAdvantages(e, _grpo);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var kl = Kl.PerToken(e.OldLogProbs, e.RefLogProbs!, _config.KlEstimator);     // (B, N)
        var rewards = RewardShaping.Rewards(e.Scores, kl, e.ResponseMask, _kl.Value);   // (B, N)
        if (_config.WhitenRewards) rewards = Masked.Whiten(rewards, e.ResponseMask, shiftMean: false);
        var (advantages, returns) = Gae.Compute(rewards, e.OldValues!, e.ResponseMask, _config.Gamma, _config.Lam);
        if (_config.WhitenAdvantages) advantages = Masked.Whiten(advantages, e.ResponseMask);
        return e with
        {
            Rewards = rewards.MoveToOuterDisposeScope(),
            Advantages = advantages.MoveToOuterDisposeScope(),
            Returns = returns.MoveToOuterDisposeScope(),
        };
    }

    /// <summary>Averages of the update's diagnostics over every minibatch step taken.</summary>
    public sealed record UpdateStats(double PolicyLoss, double ValueLoss, double Entropy, double ApproxKl, double ClipFrac,
        double ValueClipFrac, double RatioMean, double RatioMax, double FirstRatioMean, double FirstRatioMax, int Epochs, double GradNorm, int SkippedSteps,
        double ClipRatioLow = double.NaN, double ClipRatioHigh = double.NaN, int Sequences = 0);

    /// <summary>
    /// Phase 3: <c>num_ppo_epochs</c> passes over the buffer in <c>num_mini_batches</c> shuffled minibatches, each
    /// minimising L = L^CLIP_loss + c1 L^value - c2 H (the notes' L^PPO, maximised); early stop on <c>target_kl</c>.
    /// A critic with a backbone of its own takes its step after the actor's, each clipped to max_grad_norm on its own (as
    /// OpenRLHF and verl do), so that one model's gradients are alive at a time; <c>grad_norm</c> is both together.
    /// </summary>
    public UpdateStats Update(Experience e)
    {
        if (_grpo is { DynamicSampling: true }) e = e.Select(nonzero(GroupHasSignal(e.Scores)).squeeze(1));   // groups of equal rewards dropped
        long b = e.Sequences.shape[0];
        if (b == 0) return new UpdateStats(double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN,
            double.NaN, double.NaN, 0, double.NaN, 0);
        _actor.train();
        _critic?.train();
        long p = e.PromptLength, n = e.ResponseMask.shape[1];
        long miniBatch = (b + _config.NumMiniBatches - 1) / _config.NumMiniBatches;  // PPO: batch_size / num_mini_batches exactly
        var sums = new double[9];
        double clipLow = 0, clipHigh = 0;
        int steps = 0, epochs = 0, skipped = 0;
        double firstRatioMean = double.NaN, firstRatioMax = double.NaN;
        var policyLossOptions = _grpo?.LossOptions ?? new PolicyLossOptions(_config.Cliprange);   // PPO: symmetric clip, token mean
        for (int epoch = 0; epoch < _config.NumPpoEpochs; epoch++)
        {
            using var order = randperm(b, generator: _generator).to(e.Sequences.device);
            double epochKl = 0;
            for (int mb = 0; mb < _config.NumMiniBatches && mb * miniBatch < b; mb++)
            {
                using var scope = NewDisposeScope();
                using var m = e.Select(order.narrow(0, mb * miniBatch, Math.Min(miniBatch, b - mb * miniBatch)));
                var responses = m.Sequences.narrow(1, p, n);                                          // (M, N)
                var (logp, tokenEntropy, hidden, positions) = ResponseScoring.Forward(_actor, m.Sequences, m.AttentionMask, p, _config.Temperature, entropy: true);   // (M, N) x2
                var lossMask = m.LossMask ?? m.ResponseMask;                                          // (M, N)
                var (policyLoss, ps) = PolicyLoss.Compute(logp, m.OldLogProbs, m.Advantages!, lossMask, policyLossOptions,
                    policyLossOptions.Beta > 0 ? m.RefLogProbs : null, isWeights: m.IsWeights);
                var entropy = Masked.Mean(tokenEntropy!, lossMask);
                var actorLoss = policyLoss - _config.EntCoef * entropy;
                // A critic with its own backbone: the actor steps first, so that its gradients and activations are gone before the critic's pass.
                bool apart = _critic is { Shared: false };
                double actorNorm = apart ? Step(actorLoss, _actor) : 0;
                var (valueLoss, valueClipFrac) = _critic is null ? (zeros(1), 0)                      // no critic: no value loss
                    : ValueLoss.Compute(_critic.Values(hidden, m.Sequences, positions, m.AttentionMask, p - 1, n), m.OldValues!, m.Returns!, m.ResponseMask, _config.CliprangeValue);   // V: (M, N)
                var loss = _critic is null ? actorLoss : actorLoss + _config.VfCoef * valueLoss;
                double gradNorm = apart ? Math.Sqrt(actorNorm * actorNorm + Math.Pow(Step(_config.VfCoef * valueLoss, _critic), 2)) : Step(loss, _actor, _critic);
                if (!_guard.Allows(loss.item<float>(), gradNorm, steps + skipped + 1))
                {
                    skipped++;                                           // non-finite: not applied (Step), counted
                    if (_guard.Exhausted) break;
                    continue;
                }
                CpuThreads.Adapt();                                  // between minibatches: give cores back early

                if (steps == 0) (firstRatioMean, firstRatioMax) = (ps.RatioMean, ps.RatioMax);
                double[] values9 = [policyLoss.item<float>(), valueLoss.item<float>(), entropy.item<float>(), ps.ApproxKl, ps.ClipFrac, valueClipFrac, ps.RatioMean, ps.RatioMax, gradNorm];
                for (int k = 0; k < sums.Length; k++) sums[k] = k == 7 ? Math.Max(sums[k], values9[k]) : sums[k] + values9[k];
                (clipLow, clipHigh) = (clipLow + ps.ClipRatioLow, clipHigh + ps.ClipRatioHigh);
                epochKl += ps.ApproxKl / _config.NumMiniBatches;
                steps++;
            }
            epochs++;
            if (_config.TargetKl > 0 && epochKl > _config.TargetKl || _guard.Exhausted) break;
        }
        _actor.eval();
        double Avg(int k) => steps == 0 ? double.NaN : sums[k] / steps;
        return new UpdateStats(Avg(0), Avg(1), Avg(2), Avg(3), Avg(4), Avg(5), Avg(6), sums[7], firstRatioMean, firstRatioMax, epochs, Avg(8), skipped,
            steps == 0 ? double.NaN : clipLow / steps, steps == 0 ? double.NaN : clipHigh / steps, (int)b);
    }

    /// <summary>
    /// One optimizer step of <paramref name="models"/>: loss.backward(), their gradient norm clipped to max_grad_norm, and
    /// AdamW's step when the loss and the norm are finite (else <see cref="NonFiniteGuard"/> counts it). The gradients are
    /// then freed (PyTorch's zero_grad(set_to_none=True)), so that they take memory only within a step. Returns the norm
    /// before clipping.
    /// </summary>
    private double Step(Tensor loss, params nn.Module?[] models)
    {
        if (LossFault != null) loss = LossFault(loss);
        loss.backward();
        var parameters = models.OfType<nn.Module>().SelectMany(model => model.parameters()).Where(q => q.requires_grad).ToList();
        double norm = nn.utils.clip_grad_norm_(parameters, _config.MaxGradNorm);
        if (double.IsFinite(loss.item<float>()) && double.IsFinite(norm)) _optimizer.step();   // steps the parameters with a gradient: these models'
        foreach (var model in models) model?.zero_grad(set_to_none: true);
        NativeHeap.Trim();                                           // the step's activations and gradients back
        return norm;
    }

    /// <summary>Phase 4: the iteration's metrics row (flat snake_case keys); updates the adaptive KL controller.</summary>
    private Dictionary<string, object> LogMetrics(int iteration, Experience e, UpdateStats u, double rolloutSeconds, double updateSeconds)
    {
        using var scope = NewDisposeScope();
        var mask = e.ResponseMask.to(ScalarType.Float32);
        double kl = SequenceKl.Compute(e.OldLogProbs, e.RefLogProbs!, e.ResponseMask).mean().item<float>();
        double lengthMean = mask.sum(1).mean().item<float>();
        var responses = e.Sequences.narrow(1, e.PromptLength, e.ResponseMask.shape[1]);                // (B, N)
        double eosRate = Sampling.EndedWithEos(responses, e.ResponseMask, _tokenizer.Special.Eos).to(ScalarType.Float32).mean().item<float>();
        WarnIfFirstRatioNotOne(iteration, u);
        var row = new Dictionary<string, object>
        {
            ["iteration"] = iteration,
            ["reward_mean"] = (double)e.Scores.mean().item<float>(),
            ["reward_std"] = (double)e.Scores.std().item<float>(),
            ["kl"] = kl,
            ["kl_coef"] = _kl.Value,
            ["approx_kl"] = u.ApproxKl,
            ["clipfrac"] = u.ClipFrac,
            ["value_clipfrac"] = u.ValueClipFrac,
            ["entropy"] = u.Entropy,
            ["policy_loss"] = u.PolicyLoss,
            ["value_loss"] = u.ValueLoss,
            ["explained_variance"] = ValueLoss.ExplainedVariance(e.OldValues!, e.Returns!, e.ResponseMask),
            ["ratio_mean"] = u.RatioMean,
            ["ratio_max"] = u.RatioMax,
            ["first_ratio_mean"] = u.FirstRatioMean,
            ["grad_norm"] = u.GradNorm,
            ["ppo_epochs"] = u.Epochs,
            ["skipped_steps"] = u.SkippedSteps,
            ["response_length"] = lengthMean,
            ["eos_rate"] = eosRate,
        };
        _kl.Update(kl, (int)e.Scores.shape[0]);
        return Finish(row, e, lengthMean * e.Scores.shape[0], rolloutSeconds, updateSeconds);
    }

    /// <summary>A rollout/training mismatch: the first minibatch's ratio should be 1 (same weights, same log-probs).</summary>
    private void WarnIfFirstRatioNotOne(int iteration, UpdateStats u)
    {
        if (double.IsFinite(u.FirstRatioMean) && (Math.Abs(u.FirstRatioMean - 1) > 1e-3 || Math.Abs(u.FirstRatioMax - 1) > 1e-2))
            _log.WriteLine($"warning: iteration {iteration}: ratio on the first minibatch is {u.FirstRatioMean:F5} (max {u.FirstRatioMax:F5}), not 1: rollout and training log-probabilities disagree");
    }

    /// <summary>
    /// The keys every online algorithm logs at the end of its row: generated tokens, phase timings, throughput, live
    /// tensors and the gold reward; then the <see cref="AfterIteration"/> hook.
    /// </summary>
    private Dictionary<string, object> Finish(Dictionary<string, object> row, Experience e, double generatedTokens, double rolloutSeconds, double updateSeconds)
    {
        row["generated_tokens"] = generatedTokens;
        row["rollout_seconds"] = rolloutSeconds;
        row["generate_seconds"] = _phases.Generate;
        row["forward_seconds"] = _phases.Forward;
        row["reward_seconds"] = _phases.Reward;
        row["update_seconds"] = updateSeconds;
        row["tokens_per_second"] = generatedTokens / (rolloutSeconds + updateSeconds);
        row["live_tensors"] = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        if (_logProbDiff is var (diffMean, diffMax))
        {
            row["rollout_logprob_diff_mean"] = diffMean;
            row["rollout_logprob_diff_max"] = diffMax;
        }
        foreach (var remote in RewardSpec.Functions(_reward).OfType<RemoteReward>())
            foreach (var (name, mean) in remote.LastExtraLogs) row[$"extra_logs/{name}"] = mean;   // a remote reward server's extra_logs
        if (_rollout.Remote)
        {
            row["weight_version"] = _version;
            row["staleness_mean"] = _fleetStats.Staleness;
            row["dropped_stale"] = _fleetStats.Dropped;
            row["sync_seconds"] = _fleetStats.Sync;
            row["train_seconds"] = updateSeconds;
            row["prefetch_wait_seconds"] = _fleetStats.Wait;
            row["servers_in_service"] = ((ServerEngine)_engine).Fleet.InService.Count;
        }
        if (e.GoldScores is not null) row["gold_reward_mean"] = (double)e.GoldScores.to(ScalarType.Float32).mean().item<float>();
        if (_normalizers.Count > 0)
        {
            row["proxy_score_mean"] = _normalizers.Average(n => n.LastRawMean);               // the reward models' raw scores
            row["proxy_score_running_std"] = _normalizers.Average(n => n.Moments.Std);
        }
        AfterIteration?.Invoke(row);
        return row;
    }

    public void Dispose()
    {
        WaitAhead();                                                   // batches still on their way are dropped
        _engine.Dispose();
        _optimizer.Dispose();
        _generator.Dispose();
    }

    /// <summary>
    /// The KL to the reference of the model just updated (what a held-out evaluation without a gold is held to): sampled
    /// on the held-out prompts with a generator seeded by (seed, iteration), so a resume draws the same. Without a
    /// reference model (critic-free, beta 0), the rollout's KL of this iteration, measured before its update.
    /// </summary>
    private double HeldOutKl(int iteration, Dictionary<string, object> row)
    {
        if (_reference is null) return row.TryGetValue("kl", out var kl) ? (double)kl : 0;
        using var generator = new Generator((ulong)_config.Seed + (ulong)iteration);
        return Evaluator.KlToReference(_actor, _reference, _tokenizer, HeldOut!.Prompts, HeldOut.MaxNewTokens, generator);
    }
}
