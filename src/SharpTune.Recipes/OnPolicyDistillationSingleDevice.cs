// Recipe `on_policy_distillation_single_device`: distil a frozen teacher into a student on sequences the student
// samples itself (GKD, Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from Self-Generated
// Mistakes"), with the semantics of TRL's GKDTrainer so a TRL user finds the same knobs:
//   - each micro-batch, with probability `lmbda` the student samples the completions of the batch's prompts
//     (temperature, top_p, top_k, max_new_tokens, stop at EOS); otherwise, with `seq_kd`, the teacher samples them;
//     otherwise the dataset's completions are used (TRL: `if random() <= lmbda: student elif seq_kd: teacher`);
//   - loss_type gkd: the generalized JSD with teacher weight `beta` between the teacher's and the student's token
//     distributions on the completion tokens (beta 0 = forward KL, 1 = reverse KL; TRL's generalized_jsd_loss, which
//     takes no temperature: `temperature` is the sampling temperature only, as in TRL);
//   - loss_type reverse_kl_pg: the reverse-KL on-policy variant as a per-token policy gradient: the reward of each
//     sampled token is log p_T - log p_S of that token (detached), the loss -w * reward * log p_S, where w is the
//     importance weight p_S / p_sampler of the token (1 at temperature 1 without top-k/top-p; capped at
//     max_importance_weight). Samples are drawn with the learner's current weights, so the sampler lags only by its
//     temperature and filtering, which w corrects.
// Prompt and completion come from any instruct/chat dataset with train_on_input false: the prompt is everything
// before the first trained token (PromptCompletion). Each micro-batch's loss is a SUM over its completion tokens;
// the gradients of an optimizer step are divided once by the step's completion tokens (as the KD recipe does).
// The coin and the sampler's generator of every micro-batch are derived from (seed, epoch, batch), so a resumed run
// draws exactly what the interrupted one would have: the sampler's RNG state is the step counter in recipe_state.
// Under mpirun (`on_policy_distillation_distributed`) the same code is a data-parallel job, as the KD recipe: rank 0's
// student weights are broadcast, each rank takes its slice of every global batch and samples its completions with
// its own generator (the micro-batch's stream mixed with the rank; rank 0's is the one-process stream, and the coin
// is the same on every rank), gradients are summed over ranks and divided by the GLOBAL completion-token count, the
// step metrics are global, and only rank 0 writes.
// With `teacher_tokenizer` and `kd_loss` (UldLoss, GoldLoss or ByteMarginalKdLoss; TRL's GOLDTrainer: GKD's sampling
// with ULD or the GOLD hybrid) the teacher keeps its own tokenizer: each micro-batch's sequences (the dataset's or the
// sampled completions behind their prompts) are read by the teacher in its own tokens of the same text, and the loss
// is the cross-tokenizer loss summed over the spans of completion text aligned between the two tokenizations
// (Distillation/CrossTokenizer/CrossTokenizerKd.cs), normalised by completion tokens like the GKD loss. What needs one
// vocabulary is refused: reverse_kl_pg (the teacher's log-prob of each sampled student token), seq_kd (the teacher
// samples in its own tokens) and `beta` (the GKD JSD's weight: the divergence is kd_loss's); the per-token metrics on
// student samples are not logged (docs/on_policy.md, docs/cross_tokenizer.md).
// Lifecycle, checkpointing, run lock and resume follow knowledge_distillation_single_device.
using System.Diagnostics;
using SharpTune.Checkpointing;
using SharpTune.Config;
using SharpTune.Data;
using SharpTune.Distillation;
using SharpTune.Distillation.CrossTokenizer;
using SharpTune.Distributed;
using SharpTune.Eval;
using SharpTune.Losses;
using SharpTune.Modules;
using SharpTune.Native;
using SharpTune.Recipes.Plotting;
using SharpTune.Recipes.Support;
using SharpTune.Tokenizers;
using SharpTune.Training;
using TorchSharp;
using static TorchSharp.torch;
using OptimizerHelper = TorchSharp.Modules.OptimizerHelper;

namespace SharpTune.Recipes;

/// <summary>On-policy distillation (GKD / reverse-KL policy gradient / sequence-level KD), one device.</summary>
/// <remarks>Shapes: <c>b</c> batch, <c>s</c> sequence, <c>d</c> model dim, <c>v</c> vocabulary.</remarks>
[Recipe("on_policy_distillation_single_device", Description = "Distil a frozen teacher on the student's own samples (GKD, reverse-KL policy gradient, seq-KD; 1 device)")]
[Recipe("on_policy_distillation_distributed", Description = "On-policy distillation, data-parallel over MPI ranks (mpirun -np N)")]
[RecipeKey("model", typeof(TransformerDecoder), Required = true, Description = "the student (a lora_* builder trains adapters only)")]
[RecipeKey("teacher_model", typeof(TransformerDecoder), Required = true, Description = "the teacher architecture")]
[RecipeKey("tokenizer", typeof(ITokenizer), Required = true)]
[RecipeKey("teacher_tokenizer", typeof(ITokenizer), Description = "the teacher's own tokenizer (cross-tokenizer: with kd_loss UldLoss, GoldLoss or ByteMarginalKdLoss)")]
[RecipeKey("checkpointer", typeof(HfCheckpointer), Required = true, Description = "student base weights in, checkpoints out")]
[RecipeKey("teacher_checkpointer", typeof(HfCheckpointer), Required = true, Description = "teacher weights (HF folder)")]
[RecipeKey("dataset", typeof(ISampleDataset), Required = true, Description = "instruct/chat data with train_on_input false: prompt = the untrained prefix")]
[RecipeKey("optimizer", typeof(OptimizerHelper), Required = true)]
[RecipeKey("lr_scheduler", typeof(LrScheduler), Description = "null: constant learning rate")]
[RecipeKey("kd_loss", typeof(object), Description = "with teacher_tokenizer: UldLoss, GoldLoss or ByteMarginalKdLoss on aligned completion spans, in place of the GKD JSD")]
[RecipeKey("threads", typeof(int?), Minimum = 1, Description = "intra-op threads (fix it for bit-reproducible CPU runs)")]
[RecipeOptions(typeof(OnPolicyDistillationOptions))] // the plain settings; the components the recipe builds are declared here
public sealed class OnPolicyDistillationSingleDevice : IRecipe
{
    private readonly SharpTuneConfig _config;
    private readonly IRecipeReporter _reporter;
    private readonly OnPolicyDistillationOptions _o; // the plain settings, bound once
    private readonly bool _policyGradient;
    private readonly GenerationOptions _sampling;

    private DistributedContext _dist = DistributedContext.CurrentOrLocal;
    private RunFolder? _runFolder;
    private ConfigFingerprint? _fingerprint;
    private Device _device = CPU;
    private long _seed;
    private TransformerDecoder? _model;
    private TransformerDecoder? _teacher;
    private ITokenizer? _tokenizer;
    private HfCheckpointer? _checkpointer;
    private ISampleDataset? _dataset;
    private OptimizerHelper? _optimizer;
    private LrScheduler? _scheduler;
    private IGradientSync? _accumulator;
    private KdLoss? _jsd;
    private ITokenizer? _teacherTokenizer;
    private object? _crossLoss; // UldLoss, GoldLossOptions or ByteMarginalKdLossOptions: the teacher keeps its own tokenizer
    private CrossTokenizerKd? _crossKd;
    private long _runAlignedTokens, _runCompletionTokens; // cross-tokenizer coverage of this process's steps
    private long _truncateTeacherTo;
    private IMetricLogger? _metrics;
    private string? _jsonlPath;
    private int _stepsPerEpoch;
    private long _totalSteps; // epochs x steps per epoch, or max_steps if fewer
    private int _epochsRun;
    private long _stepsRun;
    private int _resumeBatch;
    private long _totalTokens;

    /// <summary>Reads the config; nothing heavy happens here.</summary>
    public OnPolicyDistillationSingleDevice(SharpTuneConfig config, IRecipeReporter reporter)
    {
        _config = config;
        _reporter = reporter;
        _o = RecipeOptions.Bind<OnPolicyDistillationOptions>(config); // every plain setting, read and checked once
        _policyGradient = _o.LossType == "reverse_kl_pg";
        _sampling = new GenerationOptions { Temperature = _o.Temperature, TopP = _o.TopP, TopK = _o.TopK, MaxNewTokens = _o.MaxNewTokens };
        if (config.IsSet("kd_loss")) // cross-tokenizer: what needs the student's and the teacher's ids to be one vocabulary
        {
            Check(!_policyGradient, "loss_type",
                "reverse_kl_pg needs the teacher's log-prob of each sampled student token, which a teacher with its own tokenizer " +
                "does not give (its tokens split the text differently): use loss_type: gkd with kd_loss");
            Check(!_o.SeqKd, "seq_kd",
                "with kd_loss the teacher has its own tokenizer, so its samples are in its own tokens, not the student's: " +
                "set seq_kd: false (or write the teacher's completions once with generate_dataset and train on them)");
            Check(!config.IsSet("beta"), "beta",
                "beta weighs the same-vocabulary GKD JSD, which kd_loss replaces: set the divergence on kd_loss instead " +
                "(kd_loss.divergence: jsd and kd_loss.beta for GoldLoss or ByteMarginalKdLoss) and remove beta");
        }
    }

    /// <inheritdoc/>
    public void Setup(CancellationToken cancellationToken)
    {
        TorchRuntime.EnsureLoaded();
        _reporter.Verbose(NativeHeap.Configure());
        RecipeRuntime.ConfigureThreads(_config, _reporter);
        _device = RecipeRuntime.ResolveDevice(_o.Device);
        var dtype = RecipeRuntime.ResolveDtype(_o.Dtype, _device, _reporter);
        _seed = Determinism.Seed(_o.Seed);
        _dist = DistributedContext.CurrentOrLocal;
        _runFolder = RunFolder.Open(_config, _dist); // this run alone writes output_dir until it ends
        _fingerprint = ConfigFingerprint.Of(_config);

        _tokenizer = _config.Instantiate<ITokenizer>("tokenizer");
        SetupTeacherTokenizer();
        _checkpointer = _config.Instantiate<HfCheckpointer>("checkpointer");
        _dist.OnMain(() => RecipeCheckpoints.RecoverOutput(_checkpointer, _reporter)); // what a killed run left, before any resume
        _model = SetupModel(dtype);
        _teacher = SetupTeacher(dtype);
        if (_crossLoss is null) _jsd = new KdLoss(new DivergenceOptions { Kind = DivergenceKind.Jsd, Beta = _o.Beta }.Validated(), _o.NumOutputChunks);
        else _crossKd = SetupCrossTokenizer();
        _dataset = _config.InstantiateWith<ISampleDataset>("dataset", new Dictionary<string, object?> { ["tokenizer"] = _tokenizer });
        PromptCompletion.Split(_dataset[0], 0); // a dataset without prompts fails here, not at the first step

        var trainable = ModuleParameters.Trainable(_model);
        _optimizer = _config.Instantiate<OptimizerHelper>("optimizer", trainable);
        _accumulator = _dist.GradientSync(trainable, _o.ClipGradNorm); // in place with one process, all-reduced under mpirun
        var batches = _dataset.Count / _o.BatchSize;
        _stepsPerEpoch = batches / _o.GradientAccumulationSteps;
        if (_o.MaxStepsPerEpoch is { } max) _stepsPerEpoch = Math.Min(_stepsPerEpoch, max);
        Check(_stepsPerEpoch > 0, "batch_size",
            $"{_dataset.Count} samples make {batches} batches of {_o.BatchSize}, fewer than gradient_accumulation_steps {_o.GradientAccumulationSteps}: no optimizer step fits in an epoch");
        _totalSteps = Math.Min((long)_o.Epochs * _stepsPerEpoch, _o.MaxSteps ?? long.MaxValue);
        _scheduler = _config.IsSet("lr_scheduler")
            ? RecipeRuntime.BuildScheduler(_config, "lr_scheduler", _optimizer, _totalSteps)
            : null;
        if (_o.ResumeFromCheckpoint) Resume();
        _runFolder.SaveConfig(_config); // only now: a run refused above leaves the saved run's config as it was
        SetupLogging();
        _reporter.Info($"student: {ModuleParameters.Trainable(_model).Sum(p => p.numel()):N0} trainable of {ModuleParameters.Count(_model):N0} parameters; " +
                       $"teacher: {ModuleParameters.Count(_teacher):N0} (frozen); " +
                       (_policyGradient ? "reverse-KL policy gradient"
                           : _crossKd is not null ? $"cross-tokenizer GKD sampling, lmbda {_o.Lmbda}"
                           : $"GKD beta {_o.Beta}, lmbda {_o.Lmbda}{(_o.SeqKd ? ", seq_kd" : "")}") +
                       $"; seed {_seed}; {_stepsPerEpoch} steps/epoch x {_o.Epochs} epochs" +
                       (_totalSteps < (long)_o.Epochs * _stepsPerEpoch ? $", stopping at max_steps {_totalSteps}" : "") +
                       (_dist.UsesMpi ? $"; {_dist.WorldSize} ranks x {_dist.Threads} threads, global batch {_o.BatchSize}" : ""));
    }

    /// <inheritdoc/>
    public void Train(CancellationToken cancellationToken)
    {
        var model = _model!;
        var totalSteps = _totalSteps;
        var loader = new DataLoader(_dataset!, _o.BatchSize, (int)_seed, _o.Shuffle, dropLast: true, padId: _tokenizer!.PadId).ForRank(_dist.Rank, _dist.WorldSize); // one process: the whole batch
        model.train();
        _teacher!.eval();
        for (var epoch = _epochsRun; epoch < _o.Epochs && _stepsRun < totalSteps; epoch++)
        {
            var startBatch = epoch == _epochsRun ? _resumeBatch : 0;
            var step = startBatch / _o.GradientAccumulationSteps;
            var stats = new StepStats();
            for (var b = startBatch; step < _stepsPerEpoch && _stepsRun < totalSteps; b++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using (var scope = NewDisposeScope())
                {
                    var samples = loader.Samples(epoch, b);
                    var clock = Stopwatch.StartNew();
                    var (sequences, sampler) = Completions(samples, epoch, b, stats);
                    stats.GenerationSeconds += clock.Elapsed.TotalSeconds;
                    clock.Restart();
                    var (sum, count) = LossStep(Collated(sequences), sequences, sampler == Sampler.Student, stats);
                    _accumulator!.Backward(sum, count);
                    stats.LearningSeconds += clock.Elapsed.TotalSeconds;
                }
                if ((b + 1) % _o.GradientAccumulationSteps != 0) continue;

                AccumulatedStep result;
                var learn = Stopwatch.StartNew();
                using (NewDisposeScope()) // the norm/clip and optimizer temporaries are freed now, not by the GC later
                {
                    result = _accumulator!.Finish(computeNorm: true);
                    _optimizer!.step();
                    _optimizer.zero_grad();
                    _scheduler?.Step();
                }
                stats.LearningSeconds += learn.Elapsed.TotalSeconds;
                step++;
                _stepsRun++;
                NativeHeap.AfterStep();
                stats.SumOverRanks(_dist);
                _totalTokens += stats.CompletionTokens;
                (_runAlignedTokens, _runCompletionTokens) = (_runAlignedTokens + stats.AlignedTokens, _runCompletionTokens + stats.CompletionTokens);
                if (_stepsRun % _o.LogEveryNSteps == 0 || step == _stepsPerEpoch) Log(result, stats);
                _reporter.Progress($"epoch {epoch + 1}/{_o.Epochs}", _stepsRun, totalSteps);
                stats = new StepStats();
                if (_o.SaveEveryNSteps is { } n && _stepsRun % n == 0 && step < _stepsPerEpoch && _stepsRun < totalSteps)
                {
                    var (tag, e, position) = (CheckpointTag.Step(_stepsRun), epoch, step * _o.GradientAccumulationSteps);
                    _dist.OnMain(() => Save(tag, e, position));
                }
            }
            if (step < _stepsPerEpoch) // max_steps ended the run inside this epoch
            {
                var (tag, e, position) = (CheckpointTag.Step(_stepsRun), epoch, step * _o.GradientAccumulationSteps);
                _dist.OnMain(() => Save(tag, e, position));
                break;
            }
            var epochsRun = epoch + 1;
            _dist.OnMain(() => Save(CheckpointTag.Epoch(epochsRun - 1), epochsRun, 0));
        }
        if (_crossKd is { } cross)
            _reporter.Info($"cross-tokenizer KD: {_runAlignedTokens:N0} of {_runCompletionTokens:N0} completion tokens lie in aligned spans" +
                           (cross.FirstProblem is { } problem ? $"; first text left out: {problem}" : ""));
        _metrics?.Dispose();
        _metrics = null;
        if (_dist.IsMain && _jsonlPath is not null && File.Exists(_jsonlPath))
        {
            var png = Path.Combine(_o.OutputDir, "loss_curves.png");
            var drawn = LossCurves.Plot(_jsonlPath, png);
            _reporter.Info($"wrote {png} ({string.Join(", ", drawn)}; raw and smoothed)");
        }
    }

    /// <inheritdoc/>
    public void Cleanup()
    {
        // The run lock goes last and always, as in the other recipes.
        try
        {
            _metrics?.Dispose();
            _model?.Dispose();
            _teacher?.Dispose();
            _optimizer?.Dispose();
            _accumulator?.Dispose();
        }
        finally
        {
            _runFolder?.Dispose();
        }
    }

    private TransformerDecoder SetupModel(ScalarType dtype)
    {
        var model = RecipeRuntime.BuildModel(_config, "model", _device, dtype);
        model.CheckpointActivations = _o.EnableActivationCheckpointing; // each layer recomputed in backward
        _dist.OnMain(() =>
        {
            if (RecipeCheckpoints.CreateRandomBase(model, _checkpointer!.CheckpointDir, _o.RandomInitCheckpoint, _o.RandomInitStd))
                _reporter.Info($"created {_checkpointer.CheckpointDir} with random weights from seed {_seed} (a random student samples noise: warm-start it for real runs)");
        });
        RecipeCheckpoints.LoadBase(model, _checkpointer!);
        _dist.BroadcastModule(model); // rank 0's weights everywhere (LoRA adapters start from each rank's own random init)
        if (_o.EnableActivationCheckpointing) _reporter.Info("activation checkpointing: on (student layers are recomputed in backward)");
        _reporter.Info($"student loaded from {_checkpointer!.CheckpointDir} ({(RecipeCheckpoints.IsLora(model) ? "LoRA" : "full fine-tune")})");
        return model;
    }

    // The teacher's tokenizer: the student's (GKD compares the two distributions id by id), or its own with a
    // cross-tokenizer kd_loss (checked as in the KD recipe: a kd_loss needs a teacher_tokenizer, a foreign
    // teacher_tokenizer needs a kd_loss).
    private void SetupTeacherTokenizer()
    {
        if (_config.IsSet("teacher_tokenizer")) _teacherTokenizer = _config.Instantiate<ITokenizer>("teacher_tokenizer");
        if (_config.IsSet("kd_loss"))
        {
            var loss = _config.Instantiate<object>("kd_loss");
            Check(loss is UldLoss or GoldLossOptions or ByteMarginalKdLossOptions, "kd_loss",
                "expected sharptune.modules.loss.UldLoss, sharptune.modules.loss.GoldLoss or sharptune.modules.loss.ByteMarginalKdLoss " +
                $"(a cross-tokenizer loss; without a teacher_tokenizer leave kd_loss out: the GKD JSD with beta is the loss), got {loss.GetType().Name}");
            Check(_teacherTokenizer is not null, "kd_loss", $"{loss.GetType().Name} distils across tokenizers: set teacher_tokenizer to the teacher's tokenizer");
            _crossLoss = loss;
        }
        else if (_teacherTokenizer is not null &&
                 TokenizerComparison.Difference(_teacherTokenizer, _tokenizer!, "teacher_tokenizer", "tokenizer") is { } difference)
            Check(false, "teacher_tokenizer",
                $"the teacher's tokenizer is not the student's ({difference}), and the GKD loss compares the two distributions id by id; " +
                "to distil across tokenizers set kd_loss to sharptune.modules.loss.UldLoss, sharptune.modules.loss.GoldLoss or, " +
                "for a byte-level student, sharptune.modules.loss.ByteMarginalKdLoss (docs/cross_tokenizer.md)");
    }

    // The teacher: built, loaded strictly, frozen, in eval mode. Without kd_loss it is of the student's token space (a
    // teacher vocabulary padded beyond the tokenizer's ids is cut to the student's, as in the KD recipe); with one,
    // its checkpoint's tokenizer files are checked against teacher_tokenizer instead.
    private TransformerDecoder SetupTeacher(ScalarType dtype)
    {
        var checkpointer = _config.Instantiate<HfCheckpointer>("teacher_checkpointer");
        if (_crossLoss is null) TeacherTokenizer.Check(_config, _tokenizer!, checkpointer.CheckpointDir, "teacher_checkpointer");
        else TeacherTokenizer.Check(_config, _teacherTokenizer!, checkpointer.CheckpointDir, "teacher_checkpointer", "teacher_tokenizer");
        var teacher = RecipeRuntime.BuildModel(_config, "teacher_model", _device, dtype);
        if (RecipeCheckpoints.IsLora(teacher))
            throw new ConfigException(_config.Find("teacher_model")!.Location, "teacher_model", "the teacher must be a base model (merge its LoRA adapters first)");
        checkpointer.LoadInto(teacher, strict: true, convertDtype: true);
        foreach (var p in teacher.parameters()) p.requires_grad = false;
        teacher.eval();
        long sv = _model!.VocabSize, tv = teacher.VocabSize;
        if (_crossLoss is null && tv != sv)
        {
            try { VocabAlignment.SharedVocab(sv, tv, _tokenizer!.VocabSize); }
            catch (ArgumentException e)
            {
                throw new ConfigException(_config.Find("teacher_model")!.Location, "teacher_model", $"teacher vocabulary {tv} vs student vocabulary {sv}: {e.Message}");
            }
            _truncateTeacherTo = sv;
        }
        _reporter.Info($"teacher loaded from {checkpointer.CheckpointDir} (frozen, eval mode)");
        return teacher;
    }

    // Cross-tokenizer: each model's vocabulary holds its own tokenizer's ids; the alignment and the loss are built here
    // (the vocabulary map is cached in output_dir/vocab_map, as in the KD recipe).
    private CrossTokenizerKd SetupCrossTokenizer()
    {
        foreach (var (modelKey, vocab, tokenizerKey, tokenizer) in new[]
                 { ("model", _model!.VocabSize, "tokenizer", _tokenizer!), ("teacher_model", _teacher!.VocabSize, "teacher_tokenizer", _teacherTokenizer!) })
            Check(tokenizer.VocabSize <= vocab, modelKey, $"vocabulary {vocab} is smaller than {tokenizerKey}'s {tokenizer.VocabSize} ids");
        CrossTokenizerKd cross;
        try
        {
            cross = new CrossTokenizerKd(_tokenizer!, _teacherTokenizer!, _crossLoss!,
                _dist.IsMain ? Path.Combine(_o.OutputDir, "vocab_map") : null, (int)_teacher!.MaxSeqLen);
        }
        catch (ArgumentException e)
        {
            throw new ConfigException(_config.Find("teacher_tokenizer")!.Location, "teacher_tokenizer", e.Message);
        }
        _reporter.Info($"cross-tokenizer distillation: {cross.Description}; the teacher reads its own tokens of each sequence, " +
                       "the loss covers the completion spans aligned with them; reverse_kl_student_samples and " +
                       "teacher_nll_student_samples compare ids of one vocabulary and are not logged (aligned_fraction is)");
        return cross;
    }

    private enum Sampler { Dataset, Student, Teacher }

    // The micro-batch's sequences: the dataset's samples, or their prompts completed by the student (probability
    // lmbda) or, with seq_kd, by the teacher. The coin and the generator are functions of (seed, epoch, batch).
    private (IReadOnlyList<Sample> Sequences, Sampler Sampler) Completions(IReadOnlyList<Sample> samples, int epoch, int batch, StepStats stats)
    {
        var key = StreamSeed(_seed, epoch, batch);
        var coin = new Random(unchecked((int)(key >> 33))).NextDouble();
        var sampler = coin < _o.Lmbda ? Sampler.Student : _o.SeqKd ? Sampler.Teacher : Sampler.Dataset;
        stats.MicroBatches++;
        if (sampler == Sampler.Student) stats.OnPolicyMicroBatches++;
        if (sampler == Sampler.Dataset) return (samples, sampler);

        var prompts = samples.Select((s, i) => PromptCompletion.Split(s, i).Prompt).ToList();
        var longest = prompts.Max(p => p.Length);
        var options = _sampling with
        {
            MaxNewTokens = Math.Min(_sampling.MaxNewTokens, _model!.MaxSeqLen - longest), // prompt + completion must fit a training forward
            StopTokens = _tokenizer!.StopTokens.ToHashSet(),
        };
        if (options.MaxNewTokens < 1)
            throw new InvalidOperationException($"a prompt of {longest} tokens leaves no room to sample within the student's max_seq_len {_model.MaxSeqLen}");
        using var generator = new Generator(RankStream(key, _dist.Rank), _device);
        var result = Generation.GenerateBatch(sampler == Sampler.Student ? _model : _teacher!, [.. prompts], options, generator);
        return ([.. prompts.Select((p, i) => PromptCompletion.Join(p, result.GeneratedTokens[i]))], sampler);
    }

    /// <summary>The seed of the coin and sampler of micro-batch <paramref name="batch"/> of <paramref name="epoch"/>
    /// (SplitMix64 of the run seed and the position, so neighbouring batches draw unrelated streams).</summary>
    internal static ulong StreamSeed(long seed, int epoch, int batch)
    {
        var z = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + ((ulong)(uint)epoch << 32 | (uint)batch) + 0x632BE59BD9B4E019UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }

    /// <summary>The sampler seed of <paramref name="rank"/> for a micro-batch stream: the stream itself on rank 0 (a
    /// one-process run), a SplitMix64 of it and the rank elsewhere, so that ranks draw unrelated samples.</summary>
    internal static ulong RankStream(ulong key, int rank) => rank == 0 ? key : StreamSeed(unchecked((long)key), rank, 0);

    private Batch Collated(IReadOnlyList<Sample> samples)
    {
        var batch = Collate.PadSft(samples, _tokenizer!.PadId);
        return _device.type == DeviceType.CPU ? batch : new Batch(batch.Tokens.to(_device), batch.Labels.to(_device));
    }

    // One micro-batch (its padded batch and its sequences): the SUM of the loss over its completion tokens (normalised
    // once per step) and their count; on student samples also the reverse KL and the teacher's NLL of the sampled
    // tokens, for the metrics (one vocabulary only).
    private (Tensor Sum, long Count) LossStep(Batch batch, IReadOnlyList<Sample> sequences, bool studentSamples, StepStats stats)
    {
        var model = _model!;
        var hidden = model.ForwardHidden(batch.Tokens, batch.Mask, batch.InputPos); // [b, s, d]
        var studentLogits = model.ChunkedOutput(hidden, _o.NumOutputChunks); // n x [b, s_i, v]
        var count = batch.Labels.ne(Sample.IgnoreIndex).sum().item<long>();
        stats.CompletionTokens += count;
        if (_crossKd is { } cross) return (CrossTokenizerSum(cross, studentLogits, sequences, stats), count);
        List<Tensor> teacherLogits;
        using (no_grad())
        {
            var th = _teacher!.ForwardHidden(batch.Tokens, batch.Mask, batch.InputPos); // [b, s, d_t]
            teacherLogits = _teacher.ChunkedOutput(th, _o.NumOutputChunks); // n x [b, s_i, v_t]
            if (_truncateTeacherTo > 0)
                teacherLogits = [.. teacherLogits.Select(t => VocabAlignment.TruncateTeacher(t, _truncateTeacherTo, _tokenizer!.VocabSize))]; // n x [b, s_i, v]
        }
        var labelChunks = batch.Labels.tensor_split(studentLogits.Count, dim: 1); // as the logits: n x [b, s_i]
        Tensor? sum = null;
        for (var c = 0; c < studentLogits.Count; c++)
        {
            var part = _policyGradient
                ? PolicyGradientSum(studentLogits[c], teacherLogits[c], labelChunks[c], stats)
                : _jsd!.Sum(studentLogits[c], teacherLogits[c], labelChunks[c]).Sum;
            sum = sum is null ? part : sum + part;
            if (studentSamples) SampleMetrics(studentLogits[c], teacherLogits[c], labelChunks[c], stats);
        }
        return (sum!, count); // at least one chunk
    }

    // Cross-tokenizer: the teacher reads its own tokens of the same sequences (prompt and completion, whoever wrote the
    // completion); the loss is summed over the spans of completion text aligned between the two tokenizations (the
    // prompt's labels are masked, so its spans are not trained). The loss needs each sequence's rows whole: the chunks
    // are joined ([b, s, v]).
    private Tensor CrossTokenizerSum(CrossTokenizerKd cross, List<Tensor> studentLogits, IReadOnlyList<Sample> sequences, StepStats stats)
    {
        var aligned = cross.Prepare(sequences, _device);
        Tensor teacherLogits;
        using (no_grad())
            teacherLogits = _teacher!.ChunkedOutput(_teacher.ForwardHidden(aligned.TeacherTokens, null, null), 0)[0]; // [b, n_t, v_t]
        stats.AlignedTokens += aligned.AlignedTokens;
        return cross.Sum(studentLogits.Count == 1 ? studentLogits[0] : torch.cat(studentLogits, 1), teacherLogits, aligned); // [b, s, v]
    }

    // The reverse-KL policy gradient over one chunk: sum over completion tokens y of -w * (log p_T(y) - log p_S(y)) *
    // log p_S(y), reward and w detached; w = p_S(y) / p_sampler(y) capped (the sampler: the same student logits at the
    // sampling temperature, top-k and top-p). Its gradient is the per-token estimate of the reverse KL's gradient.
    private Tensor PolicyGradientSum(Tensor student, Tensor teacher, Tensor labels, StepStats stats)
    {
        using var scope = NewDisposeScope();
        var valid = labels.ne(Sample.IgnoreIndex); // [b, s_i]
        var ids = labels.clamp_min(0).unsqueeze(-1); // [b, s_i, 1]
        var s = student.to_type(ScalarType.Float32);
        var logPs = s.log_softmax(-1).gather(-1, ids).squeeze(-1); // [b, s_i], with grad
        Tensor reward, weight;
        using (no_grad())
        {
            var logPt = teacher.to_type(ScalarType.Float32).log_softmax(-1).gather(-1, ids).squeeze(-1); // [b, s_i]
            reward = logPt - logPs.detach();
            var logPsampler = Generation.Filter(s.detach(), _sampling).log_softmax(-1).gather(-1, ids).squeeze(-1); // [b, s_i]
            weight = (logPs.detach() - logPsampler).exp().clamp_max(_o.MaxImportanceWeight).masked_fill(valid.logical_not(), 0);
            stats.ImportanceWeightSum += weight.sum().item<float>();
        }
        return (-(weight * reward * logPs.masked_fill(valid.logical_not(), 0))).sum().MoveToOuterDisposeScope();
    }

    // Exact per-token reverse KL(p_S || p_T) and the teacher's NLL of the sampled token, summed over one chunk.
    private static void SampleMetrics(Tensor student, Tensor teacher, Tensor labels, StepStats stats)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var valid = labels.ne(Sample.IgnoreIndex); // [b, s_i]
        var logPs = student.detach().to_type(ScalarType.Float32).log_softmax(-1); // [b, s_i, v]
        var logPt = teacher.to_type(ScalarType.Float32).log_softmax(-1);
        var reverseKl = (logPs.exp() * (logPs - logPt)).sum(-1).masked_fill(valid.logical_not(), 0); // [b, s_i]
        var nll = -logPt.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1).masked_fill(valid.logical_not(), 0);
        stats.SampledTokens += valid.sum().item<long>();
        stats.ReverseKlSum += reverseKl.sum().item<float>();
        stats.TeacherNllSum += nll.sum().item<float>();
    }

    private void Log(AccumulatedStep result, StepStats stats)
    {
        var metrics = new Dictionary<string, double>(new StepMetrics
        {
            Loss = result.Loss,
            Lr = Optimizers.LearningRate(_optimizer!),
            GradNorm = double.IsNaN(result.GradNorm) ? null : result.GradNorm,
            TokensPerSecond = stats.CompletionTokens / Math.Max(1e-9, stats.GenerationSeconds + stats.LearningSeconds),
            PeakMemoryGib = _o.LogPeakMemoryStats ? ProcessMemory.Read().PeakRssBytes / MemorySnapshot.GiB : null,
        }.ToDictionary())
        {
            ["on_policy_fraction"] = (double)stats.OnPolicyMicroBatches / Math.Max(1, stats.MicroBatches),
            ["completion_length"] = (double)stats.CompletionTokens / (stats.MicroBatches * (double)_o.BatchSize),
            ["generation_seconds"] = stats.GenerationSeconds,
            ["learning_seconds"] = stats.LearningSeconds,
        };
        if (stats.SampledTokens > 0)
        {
            metrics["reverse_kl_student_samples"] = stats.ReverseKlSum / stats.SampledTokens;
            metrics["teacher_nll_student_samples"] = stats.TeacherNllSum / stats.SampledTokens;
        }
        if (_policyGradient) metrics["importance_weight"] = stats.ImportanceWeightSum / Math.Max(1, stats.CompletionTokens);
        if (_crossKd is not null) metrics["aligned_fraction"] = (double)stats.AlignedTokens / Math.Max(1, stats.CompletionTokens);
        _metrics?.Log(_stepsRun, metrics);
        _reporter.Metrics(_stepsRun, metrics);
    }

    private void Save(CheckpointTag tag, int epochsRun, int dataloaderPosition)
    {
        var state = new RecipeState
        {
            Seed = _seed,
            EpochsRun = epochsRun,
            TotalEpochs = _o.Epochs,
            StepsRun = _stepsRun,
            MaxStepsPerEpoch = _o.MaxStepsPerEpoch,
            DataLoaderPosition = dataloaderPosition,
            SchedulerLastEpoch = _scheduler?.LastEpoch ?? 0,
            TotalTokens = _totalTokens,
            Extra = new Dictionary<string, string> { [ConfigFingerprint.StateKey] = _fingerprint!.ToJson() },
        };
        var folder = RecipeCheckpoints.Save(_model!, _checkpointer!, tag, state, _optimizer!, _o.SaveAdapterWeightsOnly);
        _reporter.Info($"saved {folder}");
    }

    // Restores optimizer, scheduler, counters and the data position from recipe_state, and the trained weights from
    // the checkpoint folder it names. The coin and sampler streams follow from the seed and the data position.
    private void Resume()
    {
        var dir = _checkpointer!.OutputDir;
        ConfigFingerprint.CheckResume(dir, null, _fingerprint!, null);
        var state = RecipeStateStore.Load(dir, _optimizer!);
        ConfigFingerprint.CheckResume(dir, state, _fingerprint!, _reporter);
        if (!state.Extra.TryGetValue(RecipeCheckpoints.CheckpointKey, out var folderName))
            throw new InvalidDataException($"'{dir}/recipe_state' does not name its checkpoint folder");
        RecipeCheckpoints.LoadResumeWeights(_model!, Path.Combine(dir, folderName));
        _seed = state.Seed;
        _epochsRun = state.EpochsRun;
        _stepsRun = state.StepsRun;
        _resumeBatch = (int)state.DataLoaderPosition;
        _totalTokens = state.TotalTokens;
        if (_scheduler is not null && state.SchedulerLastEpoch > 0) _scheduler.Restore(state.SchedulerLastEpoch);
        _reporter.Info($"resumed from {Path.Combine(dir, folderName)}: epoch {_epochsRun}, step {_stepsRun}, batch {_resumeBatch}");
    }

    private void SetupLogging()
    {
        if (!_dist.IsMain) return; // only rank 0 writes logs
        var logDir = _o.MetricLogger.LogDir ?? Path.Combine(_o.OutputDir, "logs");
        var loggers = new List<IMetricLogger>();
        if (_o.MetricLogger.Jsonl)
        {
            _jsonlPath = Path.Combine(logDir, "metrics.jsonl");
            if (!_o.ResumeFromCheckpoint && File.Exists(_jsonlPath)) File.Delete(_jsonlPath); // a fresh run starts a fresh log
            if (_o.ResumeFromCheckpoint) RecipeRuntime.TrimMetricLog(_jsonlPath, _stepsRun); // steps after the checkpoint are logged again
            loggers.Add(new JsonlMetricLogger(_jsonlPath));
        }
        if (_o.MetricLogger.Tensorboard) loggers.Add(new TensorBoardMetricLogger(Path.Combine(logDir, "tensorboard")));
        _metrics = new CompositeMetricLogger([.. loggers]);
    }

    private void Check(bool ok, string key, string message)
    {
        if (!ok) throw new ConfigException(_config.Find(key)?.Location ?? new SourceLocation(_config.SourcePath ?? "<config>", 0, 0), key, message);
    }

    // What one optimizer step did, for its metrics line.
    private sealed class StepStats
    {
        public int MicroBatches;
        public int OnPolicyMicroBatches;
        public long CompletionTokens;
        public long SampledTokens;
        public long AlignedTokens;
        public double ReverseKlSum;
        public double TeacherNllSum;
        public double ImportanceWeightSum;
        public double GenerationSeconds;
        public double LearningSeconds;

        // The token counts and metric sums of all ranks (one collective; the coin, hence the micro-batch counts, is the
        // same everywhere; the timings stay this rank's).
        public void SumOverRanks(DistributedContext dist)
        {
            if (dist.WorldSize == 1) return;
            var sums = dist.AllReduceSum(CompletionTokens, SampledTokens, ReverseKlSum, TeacherNllSum, ImportanceWeightSum, AlignedTokens);
            (CompletionTokens, SampledTokens) = ((long)Math.Round(sums[0]), (long)Math.Round(sums[1]));
            (ReverseKlSum, TeacherNllSum, ImportanceWeightSum) = (sums[2], sums[3], sums[4]);
            AlignedTokens = (long)Math.Round(sums[5]);
        }
    }
}

/// <summary>The on-policy recipe's plain settings: the training settings every recipe shares, and GKD's (TRL's names
/// and defaults where TRL has the setting).</summary>
public sealed record OnPolicyDistillationOptions : FineTuneOptions
{
    /// <summary>gkd or reverse_kl_pg.</summary>
    [RecipeKey(Description = "gkd (generalized JSD with beta) | reverse_kl_pg (per-token policy gradient, needs lmbda 1)")]
    public string LossType { get; init; } = "gkd";

    /// <summary>Fraction of micro-batches whose completions the student samples.</summary>
    [RecipeKey(Description = "fraction of micro-batches whose completions the student samples (TRL lmbda, default 0.5)")]
    public double Lmbda { get; init; } = 0.5;

    /// <summary>JSD teacher weight.</summary>
    [RecipeKey(Description = "JSD teacher weight: 0 forward KL, 1 reverse KL (TRL beta, default 0.5); with kd_loss set its divergence instead")]
    public double Beta { get; init; } = 0.5;

    /// <summary>The teacher samples the completions of the batches the student does not sample.</summary>
    [RecipeKey(Description = "the teacher samples the completions of the batches the student does not sample")]
    public bool SeqKd { get; init; }

    /// <summary>Sampling temperature.</summary>
    [RecipeKey(Description = "sampling temperature (TRL default 0.9); the GKD loss uses none, kd_loss has its own")]
    public double Temperature { get; init; } = 0.9;

    /// <summary>Nucleus sampling mass.</summary>
    [RecipeKey(Description = "nucleus sampling mass (1 = off)")]
    public double TopP { get; init; } = 1.0;

    /// <summary>Sample among the k most likely tokens.</summary>
    [RecipeKey(Description = "sample among the k most likely tokens (null = all)")]
    public int? TopK { get; init; }

    /// <summary>Completion length limit when sampling.</summary>
    [RecipeKey(Description = "completion length limit when sampling (TRL default 128)")]
    public int MaxNewTokens { get; init; } = 128;

    /// <summary>Cap of the per-token importance weight (reverse_kl_pg).</summary>
    [RecipeKey(Description = "reverse_kl_pg: cap of the per-token importance weight p_S / p_sampler")]
    public double MaxImportanceWeight { get; init; } = 10.0;

    /// <summary>Logits in this many sequence chunks.</summary>
    [RecipeKey(Description = "logits are computed in this many sequence chunks (0 = whole)")]
    public int NumOutputChunks { get; init; } = 8;

    /// <summary>LoRA: save only the adapter.</summary>
    [RecipeKey(Description = "LoRA: save only the adapter, not merged weights")]
    public bool SaveAdapterWeightsOnly { get; init; }

    /// <inheritdoc/>
    public override IEnumerable<(string Key, string Message)> Problems()
    {
        foreach (var problem in base.Problems()) yield return problem;
        if (LossType is not ("gkd" or "reverse_kl_pg")) yield return ("loss_type", $"expected gkd or reverse_kl_pg, got '{LossType}'");
        if (Lmbda is not (>= 0 and <= 1)) yield return ("lmbda", $"must be in [0, 1], got {Lmbda}");
        if (Beta is not (>= 0 and <= 1)) yield return ("beta", $"must be in [0, 1], got {Beta}");
        if (!(Temperature > 0) || double.IsInfinity(Temperature)) yield return ("temperature", $"must be a finite number > 0 (sampling), got {Temperature}");
        if (TopP is not (> 0 and <= 1)) yield return ("top_p", $"must be in (0, 1], got {TopP}");
        if (TopK is < 1) yield return ("top_k", $"must be at least 1 or null, got {TopK}");
        if (MaxNewTokens < 1) yield return ("max_new_tokens", $"must be at least 1, got {MaxNewTokens}");
        if (!(MaxImportanceWeight >= 1)) yield return ("max_importance_weight", $"must be at least 1, got {MaxImportanceWeight}");
        if (NumOutputChunks < 0) yield return ("num_output_chunks", $"must be 0 (whole logits) or more, got {NumOutputChunks}");
        if (LossType == "reverse_kl_pg" && (Lmbda != 1 || SeqKd))
            yield return ("loss_type", "reverse_kl_pg learns from the student's own samples only: set lmbda: 1 and seq_kd: false");
    }
}
