// Recipe `knowledge_distillation_single_device`: distil a frozen teacher into a student (LoRA-adapted, the seed's
// default, or fully trainable) on one device. Per micro-batch the loss is
//   (1 - kd_ratio) * sum_tokens CE(student, labels) + kd_ratio * sum_tokens KD(student || teacher)
// with any loss of the loss issue (plain, chunked, or fused-linear; any divergence and temperature); the sums of all
// micro-batches of an optimizer step are backpropagated and the gradients divided ONCE by the step's valid tokens.
// torchtune's KD recipe backprops per-micro-batch means and divides again by the token count (double
// normalisation); we do not reproduce that: k micro-batches give exactly the update of one batch of the same tokens.
// Under mpirun (`knowledge_distillation_distributed`) the same code is a data-parallel job: rank 0's student weights are
// broadcast, each rank runs student and teacher on its slice of every global batch, the gradients are summed in one
// flat buffer and divided by the GLOBAL valid-token count (DataParallelGradients), clipped on the global norm, logged
// losses are global means, and only rank 0 writes (docs/distributed.md).
// With `teacher_tokenizer` and kd_loss UldLoss, GoldLoss or ByteMarginalKdLoss the teacher keeps its own tokenizer: it reads the text of
// each student sequence tokenized its own way, and the loss compares the two models over aligned spans of text
// (Distillation/CrossTokenizer/CrossTokenizerKd.cs, docs/cross_tokenizer.md); the class loss stays on the student's tokens.
// Lifecycle and keys follow torchtune recipes/knowledge_distillation_single_device.py and
// knowledge_distillation_distributed.py and their configs.
using System.Diagnostics;
using SharpTune.Checkpointing;
using SharpTune.Config;
using SharpTune.Data;
using SharpTune.Distillation;
using SharpTune.Distillation.CrossTokenizer;
using SharpTune.Distributed;
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

/// <summary>Knowledge distillation from a frozen teacher into a LoRA or fully trained student, one device.</summary>
/// <remarks>Shapes: <c>b</c> batch, <c>s</c> sequence, <c>d</c> model dim, <c>v</c> vocabulary.</remarks>
[Recipe("knowledge_distillation_single_device", Description = "Distil a frozen teacher into a LoRA or fully trained student (1 device)")]
[Recipe("knowledge_distillation_distributed", Description = "Distil a frozen teacher into a student, data-parallel over MPI ranks (mpirun -np N)")]
[RecipeOptions(typeof(KnowledgeDistillationOptions))] // the plain settings; the components the recipe builds are declared here
[RecipeKey("model", typeof(TransformerDecoder), Required = true, Description = "the student (a lora_* builder trains adapters only)")]
[RecipeKey("teacher_model", typeof(TransformerDecoder), Description = "the teacher architecture (unless teacher.cache is set)")]
[RecipeKey("tokenizer", typeof(ITokenizer), Required = true)]
[RecipeKey("teacher_tokenizer", typeof(ITokenizer), Description = "the teacher's own tokenizer (cross-tokenizer distillation: kd_loss UldLoss, GoldLoss or ByteMarginalKdLoss)")]
[RecipeKey("checkpointer", typeof(HfCheckpointer), Required = true, Description = "student base weights in, checkpoints out")]
[RecipeKey("teacher_checkpointer", typeof(HfCheckpointer), Description = "teacher weights (HF folder; unless teacher.cache is set)")]
[RecipeKey("dataset", typeof(ISampleDataset), Required = true)]
[RecipeKey("optimizer", typeof(OptimizerHelper), Required = true)]
[RecipeKey("lr_scheduler", typeof(LrScheduler), Description = "null: constant learning rate")]
[RecipeKey("loss", typeof(object), Required = true, Description = "class loss: CEWithChunkedOutputLoss, CrossEntropyLoss, LinearCrossEntropyLoss")]
[RecipeKey("kd_loss", typeof(object), Required = true, Description = "KD loss: a KdLoss component or FusedLinearKdLoss; UldLoss, GoldLoss or ByteMarginalKdLoss with teacher_tokenizer")]
[RecipeKey("validation_dataset", typeof(ISampleDataset), Description = "held-out data scored during training (or use validation_split)")]
[RecipeKey("validation_split", typeof(double?), Description = "hold out this fraction of the dataset's tail (e.g. 0.1) instead of validation_dataset")]
[RecipeKey("run_val_every_n_steps", typeof(int?), Minimum = 1, Description = "held-out loss and perplexity every N optimizer steps (and after the last)")]
[RecipeKey("threads", typeof(int?), Minimum = 1, Description = "intra-op threads (per rank under mpirun; fix it for bit-reproducible CPU runs)")]
public sealed class KnowledgeDistillationSingleDevice : IRecipe
{
    private readonly SharpTuneConfig _config;
    private readonly KnowledgeDistillationOptions _o; // the plain settings, bound once
    private readonly IRecipeReporter _reporter;
    private DistributedContext _dist = DistributedContext.CurrentOrLocal;
    private RunFolder? _runFolder;
    private ConfigFingerprint? _fingerprint;
    private Device _device = CPU;
    private long _seed;
    private TransformerDecoder? _model;
    private TransformerDecoder? _teacher;
    private TeacherCache? _teacherCache;
    private readonly string? _cacheDir;
    private ITokenizer? _tokenizer;
    private HfCheckpointer? _checkpointer;
    private ISampleDataset? _dataset;
    private HeldOut? _heldOut;
    private OptimizerHelper? _optimizer;
    private LrScheduler? _scheduler;
    private IGradientSync? _accumulator;
    private LossStep? _step;
    private CrossEntropyLoss? _classLoss;
    private KdLoss? _kdLoss;
    private FusedLinearDistillationLoss? _fusedLoss;
    private object? _crossLoss; // UldLoss, GoldLossOptions or ByteMarginalKdLossOptions: the teacher keeps its own tokenizer
    private ITokenizer? _teacherTokenizer;
    private CrossTokenizerKd? _crossKd;
    private long _truncateTeacherTo;
    private string? _teacherTokenizerFile;
    private IMetricLogger? _metrics;
    private string? _jsonlPath;
    private int _stepsPerEpoch;
    private long _totalSteps;
    private int _epochsRun;
    private long _stepsRun;
    private int _resumeBatch;
    private long _totalTokens;

    /// <summary>Reads the config; nothing heavy happens here.</summary>
    public KnowledgeDistillationSingleDevice(SharpTuneConfig config, IRecipeReporter reporter)
    {
        _config = config;
        _reporter = reporter;
        _o = RecipeOptions.Bind<KnowledgeDistillationOptions>(config); // every plain setting, read and checked once
        _cacheDir = _o.Teacher?.Cache;
        var hasModel = config.IsSet("teacher_model");
        var hasCheckpointer = config.IsSet("teacher_checkpointer");
        Check(_cacheDir is null ? hasModel && hasCheckpointer : !hasModel && !hasCheckpointer, _cacheDir is null ? "teacher_model" : "teacher",
            _cacheDir is null ? "set teacher_model and teacher_checkpointer, or teacher: {cache: <dir>}"
                : "teacher.cache replaces teacher_model and teacher_checkpointer: remove them (or set them to null)");
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
        if (_config.Find("teacher_tokenizer") is { Kind: not ConfigNodeKind.Null }) _teacherTokenizer = _config.Instantiate<ITokenizer>("teacher_tokenizer");
        _checkpointer = _config.Instantiate<HfCheckpointer>("checkpointer");
        _dist.OnMain(() => RecipeCheckpoints.RecoverOutput(_checkpointer, _reporter)); // what a killed run left, before any resume
        _model = SetupModel(dtype);
        SetupLoss();
        if (_cacheDir is null)
        {
            _teacher = SetupTeacher(dtype);
            CheckCompatibility();
            _dataset = SetupData();
        }
        else
        {
            _dataset = SetupData();
            _teacherCache = SetupTeacherCache(_cacheDir);
        }
        // After the cache check: a validation_split keeps the head of the dataset, whose indices are the cache's.
        (_dataset, _heldOut) = HeldOut.Setup(_config, _dataset, _tokenizer, _o.BatchSize, _reporter);

        var trainable = ModuleParameters.Trainable(_model);
        _optimizer = _config.Instantiate<OptimizerHelper>("optimizer", trainable);
        _accumulator = _dist.GradientSync(trainable, _o.ClipGradNorm); // in place with one process, all-reduced under mpirun
        var batches = _dataset.Count / _o.BatchSize;
        _stepsPerEpoch = batches / _o.GradientAccumulationSteps;
        if (_o.MaxStepsPerEpoch is { } max) _stepsPerEpoch = Math.Min(_stepsPerEpoch, max);
        if (_stepsPerEpoch == 0)
            throw new ConfigException(new SourceLocation(_config.SourcePath ?? "<config>", 0, 0), "batch_size",
                $"{_dataset.Count} samples make {batches} batches of {_o.BatchSize}, fewer than gradient_accumulation_steps {_o.GradientAccumulationSteps}: no optimizer step fits in an epoch");
        _totalSteps = Math.Min((long)_o.Epochs * _stepsPerEpoch, _o.MaxSteps ?? long.MaxValue);
        _scheduler = _config.IsSet("lr_scheduler")
            ? RecipeRuntime.BuildScheduler(_config, "lr_scheduler", _optimizer, _totalSteps)
            : null;
        _step = new LossStep(_model, _teacher, _teacherCache, _classLoss, _kdLoss, _fusedLoss, _o.KdRatio, _truncateTeacherTo,
            _tokenizer.VocabSize, _device, _crossKd, _dataset);
        if (_o.ResumeFromCheckpoint) Resume();
        _runFolder.SaveConfig(_config); // only now: a run refused above leaves the saved run's config as it was
        SetupLogging();
        _reporter.Info($"student: {ModuleParameters.Trainable(_model).Sum(p => p.numel()):N0} trainable of {ModuleParameters.Count(_model):N0} parameters; " +
                       (_teacher is null ? $"teacher: cache {_cacheDir}" : $"teacher: {ModuleParameters.Count(_teacher):N0} (frozen)") +
                       $"; seed {_seed}; {_stepsPerEpoch} steps/epoch x {_o.Epochs} epochs" +
                       (_totalSteps < (long)_o.Epochs * _stepsPerEpoch ? $", stopping at max_steps {_totalSteps}" : "") +
                       (_dist.UsesMpi ? $"; {_dist.WorldSize} ranks x {_dist.Threads} threads, global batch {_o.BatchSize}" : ""));
    }

    /// <inheritdoc/>
    public void Train(CancellationToken cancellationToken)
    {
        var model = _model!;
        var totalSteps = _totalSteps;
        var padId = _tokenizer!.PadId;
        var loader = new DataLoader(_dataset!, _o.BatchSize, (int)_seed, _o.Shuffle, dropLast: true, padId: padId).ForRank(_dist.Rank, _dist.WorldSize); // with one process rank 0 of 1: the whole batch
        model.train();
        _teacher?.eval();
        for (var epoch = _epochsRun; epoch < _o.Epochs && _stepsRun < totalSteps; epoch++)
        {
            var startBatch = epoch == _epochsRun ? _resumeBatch : 0;
            var step = startBatch / _o.GradientAccumulationSteps;
            var watch = Stopwatch.StartNew();
            double classSum = 0, kdSum = 0;
            long stepTokens = 0, stepProcessed = 0;
            for (var b = startBatch; step < _stepsPerEpoch && _stepsRun < totalSteps; b++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using (var scope = NewDisposeScope())
                {
                    var batch = loader.Collated(epoch, b).To(_device); // padded (or packed) [b, s]
                    var (sum, cls, kd, count) = _step!.Run(batch, loader.Indices(epoch, b));
                    _accumulator!.Backward(sum, count);
                    classSum += cls;
                    kdSum += kd;
                    stepTokens += count;
                    stepProcessed += batch.Tokens.numel();
                }
                if ((b + 1) % _o.GradientAccumulationSteps != 0) continue;

                AccumulatedStep result;
                using (NewDisposeScope()) // the norm/clip and optimizer temporaries are freed now, not by the GC later
                {
                    result = _accumulator!.Finish(computeNorm: true); // collective: global gradients, loss, norm
                    _optimizer!.step();
                    _optimizer.zero_grad();
                    _scheduler?.Step();
                }
                step++;
                _stepsRun++;
                NativeHeap.AfterStep();
                var global = _dist.AllReduceSum(classSum, kdSum, stepProcessed); // logged losses are global means
                (classSum, kdSum, stepTokens, stepProcessed) = (global[0], global[1], result.Tokens, (long)Math.Round(global[2])); // Finish summed the tokens
                _totalTokens += stepTokens;
                if (_stepsRun % _o.LogEveryNSteps == 0 || step == _stepsPerEpoch)
                    Log(result, classSum / Math.Max(1, stepTokens), kdSum / Math.Max(1, stepTokens), new StepTiming(stepTokens, stepProcessed, watch.Elapsed.TotalSeconds));
                if (_heldOut is { } heldOut && heldOut.IsDue(_stepsRun, totalSteps)) Validate(heldOut);
                _reporter.Progress($"epoch {epoch + 1}/{_o.Epochs}", _stepsRun, totalSteps);
                classSum = kdSum = 0;
                stepTokens = stepProcessed = 0;
                watch.Restart();
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
        if (_heldOut?.Summary() is { } heldOutSummary) _reporter.Info(heldOutSummary);
        if (_crossKd is { } cross)
            _reporter.Info($"cross-tokenizer KD: {_step!.AlignedTokens:N0} of {_step.TrainedTokens:N0} trained student tokens lie in aligned spans" +
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
        // The run lock goes last and always: an exception (or a simulated kill) in the other disposals must not keep
        // the folder locked in this process, as the OS would not after a real kill.
        try
        {
            _metrics?.Dispose();
            _model?.Dispose();
            _teacher?.Dispose();
            _teacherCache?.Dispose();
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
                _reporter.Info($"created {_checkpointer.CheckpointDir} with random weights from seed {_seed}");
        });
        RecipeCheckpoints.LoadBase(model, _checkpointer!);
        _dist.BroadcastModule(model); // rank 0's weights everywhere (LoRA adapters start from each rank's own random init)
        _reporter.Info($"student loaded from {_checkpointer!.CheckpointDir} ({(RecipeCheckpoints.IsLora(model) ? "LoRA" : "full fine-tune")})");
        return model;
    }

    // The teacher: built, loaded strictly from its own checkpointer, frozen and in eval mode (dropout off).
    private TransformerDecoder SetupTeacher(ScalarType dtype)
    {
        var checkpointer = _config.Instantiate<HfCheckpointer>("teacher_checkpointer");
        // The tokenizer first: a teacher of another vocabulary is refused before its weights are loaded.
        _teacherTokenizerFile = _crossLoss is null ? TeacherTokenizer.Check(_config, _tokenizer!, checkpointer.CheckpointDir, "teacher_checkpointer")
            : TeacherTokenizer.Check(_config, _teacherTokenizer!, checkpointer.CheckpointDir, "teacher_checkpointer", "teacher_tokenizer");
        if (_teacherTokenizerFile is null && Directory.Exists(checkpointer.CheckpointDir))
            _reporter.Info($"{checkpointer.CheckpointDir} has no tokenizer files: the teacher's tokenizer cannot be compared with the student's ({TeacherTokenizer.Describe(_config)})");
        var teacher = RecipeRuntime.BuildModel(_config, "teacher_model", _device, dtype);
        if (RecipeCheckpoints.IsLora(teacher))
            throw new ConfigException(_config.Find("teacher_model")!.Location, "teacher_model",
                "the teacher must be a base model (merge its LoRA adapters first: a fine-tuned checkpoint folder holds merged weights)");
        checkpointer.LoadInto(teacher, strict: true, convertDtype: true);
        foreach (var p in teacher.parameters()) p.requires_grad = false;
        teacher.eval();
        _reporter.Info($"teacher loaded from {checkpointer.CheckpointDir} (frozen, eval mode)");
        return teacher;
    }

    // The offline teacher: a teacher_logits cache made from exactly this run's tokenized dataset (same data hash) for
    // the student's vocabulary at the KD loss's temperature, read by dataset index in the loader's shuffled order.
    private TeacherCache SetupTeacherCache(string dir)
    {
        if (_kdLoss is null || _kdLoss.Options.Kind != DivergenceKind.ForwardKl)
            throw new ConfigException(_config.Find("kd_loss")!.Location, "kd_loss",
                "a teacher cache holds top-k log-probs, which only forward KL (a chunked/plain KdLoss with divergence forward_kl) can use");
        var cache = TeacherCache.Open(dir, ContentHash.OfDataset(_dataset!), (int)_model!.VocabSize,
            expectedTokenizerHash: ContentHash.OfTokenizer(_tokenizer!));
        if (Math.Abs(cache.Manifest.Temperature - _kdLoss.Options.Temperature) > 1e-9)
        {
            cache.Dispose();
            throw new ConfigException(_config.Find("kd_loss")!.Location, "kd_loss",
                $"temperature {_kdLoss.Options.Temperature} but the teacher cache {dir} holds log-probs at temperature {cache.Manifest.Temperature}");
        }
        _reporter.Info($"teacher cache {dir}: {cache.Manifest.TeacherId}, k {cache.K}, {cache.Manifest.Tokens:N0} tokens, " +
                       $"{(double)cache.Manifest.Bytes / Math.Max(1, cache.Manifest.Tokens):F1} bytes/token, missing mass {_kdLoss.MissingMass}");
        return cache;
    }

    // The class loss and the KD loss: both chunked/plain, or one fused-linear KD loss computing both.
    private void SetupLoss()
    {
        var kd = _config.Instantiate<object>("kd_loss");
        var cls = _config.Instantiate<object>("loss");
        switch (kd)
        {
            case FusedLinearDistillationLoss fused:
                if (cls is not FusedLinearCrossEntropyLoss)
                    throw new ConfigException(_config.Find("loss")!.Location, "loss",
                        $"kd_loss is fused-linear, so loss must be sharptune.modules.loss.LinearCrossEntropyLoss (the fused KD loss computes both terms), got {cls.GetType().Name}");
                // One loss computes both terms, so every setting must have one source: kd_ratio is torchtune's top-level
                // key, and the class loss's chunking/ignore index must agree with the KD loss's rather than be dropped.
                if (_config.Has("kd_loss.kd_ratio") && Math.Abs(fused.KdRatio - _o.KdRatio) > 0)
                    throw new ConfigException(_config.Find("kd_loss.kd_ratio")!.Location, "kd_loss.kd_ratio",
                        $"{fused.KdRatio} differs from the top-level kd_ratio {_o.KdRatio}, which the recipe uses; set kd_ratio only at the top level");
                var ce = (FusedLinearCrossEntropyLoss)cls;
                if (ce.ChunkSize != fused.ChunkSize)
                    throw new ConfigException(_config.Find("loss")!.Location, "loss.chunk_size",
                        $"{ce.ChunkSize} differs from kd_loss.chunk_size {fused.ChunkSize}: the fused KD loss computes both terms in one pass, so set the same value (or only kd_loss.chunk_size)");
                if (ce.IgnoreIndex != fused.IgnoreIndex)
                    throw new ConfigException(_config.Find("loss")!.Location, "loss.ignore_index",
                        $"{ce.IgnoreIndex} differs from kd_loss.ignore_index {fused.IgnoreIndex}: both terms must mask the same positions");
                _fusedLoss = new FusedLinearDistillationLoss(fused.Options, _o.KdRatio, fused.ChunkSize, fused.IgnoreIndex, fused.MissingMass);
                break;
            case KdLoss k:
                _kdLoss = k;
                _classLoss = cls as CrossEntropyLoss ?? throw new ConfigException(_config.Find("loss")!.Location, "loss",
                    $"with a chunked/plain kd_loss the class loss must be CEWithChunkedOutputLoss or CrossEntropyLoss, got {cls.GetType().Name}");
                if (_classLoss.NumOutputChunks != _kdLoss.NumOutputChunks)
                    throw new ConfigException(_config.Find("kd_loss")!.Location, "kd_loss",
                        $"num_output_chunks {_kdLoss.NumOutputChunks} differs from loss.num_output_chunks {_classLoss.NumOutputChunks}; both split the same logits");
                // Both terms are summed over the same tokens and divided by one count (the class loss's): a KD mask of
                // its own would be normalised by the wrong count.
                if (_classLoss.IgnoreIndex != _kdLoss.IgnoreIndex)
                    throw new ConfigException((_config.Find("kd_loss.ignore_index") ?? _config.Find("kd_loss"))!.Location, "kd_loss.ignore_index",
                        $"{_kdLoss.IgnoreIndex} differs from loss.ignore_index {_classLoss.IgnoreIndex}: both terms must mask the same positions");
                break;
            case UldLoss or GoldLossOptions or ByteMarginalKdLossOptions:
                _crossLoss = kd;
                _classLoss = cls as CrossEntropyLoss ?? throw new ConfigException(_config.Find("loss")!.Location, "loss",
                    $"with kd_loss {kd.GetType().Name} the class loss must be CEWithChunkedOutputLoss or CrossEntropyLoss, got {cls.GetType().Name}");
                if (_teacherTokenizer is null)
                    throw new ConfigException(_config.Find("kd_loss")!.Location, "kd_loss",
                        $"{kd.GetType().Name} distils across tokenizers: set teacher_tokenizer to the teacher's tokenizer");
                if (_cacheDir is not null)
                    throw new ConfigException(_config.Find("teacher")!.Location, "teacher",
                        "a teacher cache holds top-k log-probs over the student's vocabulary; cross-tokenizer distillation runs the teacher on its own tokens: use teacher_model and teacher_checkpointer");
                break;
            default:
                throw new ConfigException(_config.Find("kd_loss")!.Location, "kd_loss", $"expected a KD loss component, got {kd.GetType().Name}");
        }
        if (_crossLoss is null && _teacherTokenizer is not null &&
            TokenizerComparison.Difference(_teacherTokenizer, _tokenizer!, "teacher_tokenizer", "tokenizer") is { } difference)
            throw new ConfigException(_config.Find("teacher_tokenizer")!.Location, "teacher_tokenizer",
                $"the teacher's tokenizer is not the student's ({difference}), and kd_loss {kd.GetType().Name} compares the two " +
                "distributions id by id; to distil across tokenizers set kd_loss to sharptune.modules.loss.UldLoss, " +
                "sharptune.modules.loss.GoldLoss or, for a byte-level student, sharptune.modules.loss.ByteMarginalKdLoss (docs/cross_tokenizer.md)");
    }

    // Teacher and student must share the token space: the same tokenizer (compared id by id with the teacher folder's
    // tokenizer files when it has them), the same vocabulary or a teacher padded beyond the tokenizer's ids (truncated
    // per step), and the same special ids where both checkpoints declare them.
    private void CheckCompatibility()
    {
        if (_crossLoss is not null)
        {
            SetupCrossTokenizer();
            return;
        }
        var teacherDir = _config.Instantiate<HfCheckpointer>("teacher_checkpointer").CheckpointDir;
        var teacherTokenizer = _teacherTokenizerFile;
        long sv = _model!.VocabSize, tv = _teacher!.VocabSize;
        if (tv != sv)
        {
            try { VocabAlignment.SharedVocab(sv, tv, _tokenizer!.VocabSize); }
            catch (ArgumentException e)
            {
                throw new ConfigException(_config.Find("teacher_model")!.Location, "teacher_model",
                    $"teacher vocabulary {tv} vs student vocabulary {sv}: {e.Message}");
            }
            _truncateTeacherTo = sv;
            var cut = $"teacher vocabulary {tv} is padded beyond the student's {sv}; the logits of its ids {sv}..{tv - 1} are cut off";
            if (teacherTokenizer is not null)
                _reporter.Info($"{cut} (both use {teacherTokenizer}, whose {_tokenizer!.VocabSize} ids all lie below {sv})");
            else
                _reporter.Warning($"{cut}. They lie beyond the student's tokenizer ({_tokenizer!.VocabSize} ids), but {teacherDir} has no " +
                                  "tokenizer files, so it is not established that they are padding of the same tokenizer: distil only a teacher trained with this tokenizer");
        }
        if (_tokenizer!.VocabSize > sv)
            throw new ConfigException(_config.Find("tokenizer")!.Location, "tokenizer",
                $"the tokenizer has {_tokenizer.VocabSize} tokens but the student's vocabulary is {sv}");
        var teacherConfig = HfCheckpointer.ReadConfig(_config.Instantiate<HfCheckpointer>("teacher_checkpointer").CheckpointDir);
        var studentConfig = HfCheckpointer.ReadConfig(_checkpointer!.CheckpointDir);
        foreach (var key in new[] { "bos_token_id", "eos_token_id", "pad_token_id" })
        {
            var t = teacherConfig[key]?.ToJsonString();
            var s = studentConfig[key]?.ToJsonString();
            if (t is not null && s is not null && t != s)
                throw new ConfigException(_config.Find("teacher_checkpointer")!.Location, "teacher_checkpointer",
                    $"teacher config.json {key} = {t} but student config.json {key} = {s}: the models use different tokenizers");
        }
    }

    // Cross-tokenizer: each model's vocabulary holds its own tokenizer's ids; the alignment and the loss are built here.
    private void SetupCrossTokenizer()
    {
        foreach (var (modelKey, vocab, tokenizerKey, tokenizer) in new[]
                 { ("model", _model!.VocabSize, "tokenizer", _tokenizer!), ("teacher_model", _teacher!.VocabSize, "teacher_tokenizer", _teacherTokenizer!) })
            if (tokenizer.VocabSize > vocab)
                throw new ConfigException(_config.Find(modelKey)!.Location, modelKey, $"vocabulary {vocab} is smaller than {tokenizerKey}'s {tokenizer.VocabSize} ids");
        try
        {
            _crossKd = new CrossTokenizerKd(_tokenizer!, _teacherTokenizer!, _crossLoss!,
                _dist.IsMain ? Path.Combine(_o.OutputDir, "vocab_map") : null, (int)_teacher!.MaxSeqLen);
        }
        catch (ArgumentException e)
        {
            throw new ConfigException(_config.Find("teacher_tokenizer")!.Location, "teacher_tokenizer", e.Message);
        }
        _reporter.Info($"cross-tokenizer distillation: {_crossKd.Description}");
    }

    private ISampleDataset SetupData()
    {
        var dataset = _config.InstantiateWith<ISampleDataset>("dataset", new Dictionary<string, object?> { ["tokenizer"] = _tokenizer });
        foreach (var line in DatasetSummary.Lines(dataset)) _reporter.Info($"dataset: {line}");
        return dataset;
    }

    // Held-out loss and perplexity of the student (the teacher is not scored), logged next to the training loss.
    private void Validate(HeldOut heldOut)
    {
        var score = heldOut.Score(_model!, _stepsRun, _tokenizer!.PadId, _device);
        _metrics?.Log(_stepsRun, score.Metrics);
        _reporter.Metrics(_stepsRun, score.Metrics);
    }

    /// <summary>
    /// The recipe's loss step and what it reads, built once in <see cref="Setup"/> (and by bench/KdStep, which times
    /// this very code): one micro-batch's weighted SUM of class and KD losses over its valid tokens (normalised later,
    /// once per step), plus the detached class and KD sums and the token count for logging.
    /// </summary>
    public sealed class LossStep(
        TransformerDecoder model, TransformerDecoder? teacher, TeacherCache? teacherCache, CrossEntropyLoss? classLoss, KdLoss? kdLoss,
        FusedLinearDistillationLoss? fusedLoss, double kdRatio, long truncateTeacherTo, int tokenizerVocab, Device device,
        CrossTokenizerKd? crossKd = null, ISampleDataset? dataset = null)
    {
        private readonly CrossTokenizerKd? _crossKd = crossKd;
        private readonly ISampleDataset? _dataset = dataset;
        private readonly TransformerDecoder _model = model;
        private readonly TransformerDecoder? _teacher = teacher;
        private readonly TeacherCache? _teacherCache = teacherCache;
        private readonly CrossEntropyLoss? _classLoss = classLoss;
        private readonly KdLoss? _kdLoss = kdLoss;
        private readonly FusedLinearDistillationLoss? _fusedLoss = fusedLoss;
        private readonly double _kdRatio = kdRatio;
        private readonly long _truncateTeacherTo = truncateTeacherTo; // 0: the teacher's vocabulary is the student's
        private readonly int _tokenizerVocab = tokenizerVocab;
        private readonly Device _device = device;

        /// <summary>Runs the step on <paramref name="batch"/>; <paramref name="sampleIndices"/> (its dataset indices) are read only with a teacher cache.</summary>
        public (Tensor Sum, double ClassSum, double KdSum, long Count) Run(Batch batch, IReadOnlyList<int> sampleIndices)
        {
            var model = _model;
            var hidden = model.ForwardHidden(batch.Tokens, batch.Mask, batch.InputPos); // [b, s, d]
            if (_teacherCache is { } cache)
            {
                var logits = model.ChunkedOutput(hidden, _classLoss!.NumOutputChunks); // n x [b, s_i, v]
                var sparse = cache.ReadBatch(sampleIndices, (int)batch.Tokens.shape[1]);      // [b, s, k] ids and log-probs
                sparse = new SparseTeacher(sparse.Indices.to(_device), sparse.LogProbs.to(_device));
                var whole = logits.Count == 1 ? logits[0] : torch.cat(logits, 1);            // [b, s, v]
                var clsSum = _classLoss.NumOutputChunks <= 0 ? _classLoss.Sum(logits[0], batch.Labels) : _classLoss.Sum(logits, batch.Labels);
                var kdSum = _kdLoss!.Sum(whole, sparse, batch.Labels);
                return ((1 - _kdRatio) * clsSum.Sum + _kdRatio * kdSum.Sum, clsSum.Sum.item<float>(), kdSum.Sum.item<float>(), clsSum.Count.item<long>());
            }
            var teacher = _teacher!;
            if (_crossKd is { } cross) return CrossStep(cross, hidden, batch, sampleIndices);
            if (_fusedLoss is { } fused)
            {
                TeacherOutput teacherOut;
                using (no_grad())
                {
                    var th = teacher.ForwardHidden(batch.Tokens, batch.Mask, batch.InputPos); // [b, s, d_t]
                    var tw = teacher.OutputWeight; // [v_t, d_t]
                    if (_truncateTeacherTo > 0) tw = VocabAlignment.TruncateTeacher(tw, _truncateTeacherTo, _tokenizerVocab, dim: 0); // [v, d_t]
                    teacherOut = TeacherOutput.FromLinear(th, tw);
                }
                var r = fused.Forward(hidden, model.TrainedOutputWeight(), teacherOut, batch.Labels, normalize: false); // a LoRA head included
                return (r.Loss, r.ClassLoss.item<float>(), r.KdLoss.item<float>(), r.ValidCount.item<long>());
            }
            var chunks = _classLoss!.NumOutputChunks;
            var studentLogits = model.ChunkedOutput(hidden, chunks); // n x [b, s_i, v]
            List<Tensor> teacherLogits;
            using (no_grad())
            {
                var th = teacher.ForwardHidden(batch.Tokens, batch.Mask, batch.InputPos); // [b, s, d_t]
                teacherLogits = teacher.ChunkedOutput(th, chunks); // n x [b, s_i, v_t]
                if (_truncateTeacherTo > 0)
                    teacherLogits = teacherLogits.Select(t => VocabAlignment.TruncateTeacher(t, _truncateTeacherTo, _tokenizerVocab)).ToList(); // n x [b, s_i, v]
            }
            // (1 - r) * CE + r * KD; one student softmax for both terms where the divergence allows (ClassAndKdSum).
            var sums = ClassAndKdSum.Compute(_classLoss, _kdLoss!, _kdRatio, studentLogits, teacherLogits, batch.Labels);
            return (sums.Weighted, sums.Class.Sum.item<float>(), sums.Kd.Sum.item<float>(), sums.Class.Count.item<long>());
        }

        /// <summary>Cross-tokenizer runs: trained student tokens that lay in spans aligned with the teacher's, and all trained tokens.</summary>
        public long AlignedTokens { get; private set; }

        /// <inheritdoc cref="AlignedTokens"/>
        public long TrainedTokens { get; private set; }

        // The cross-tokenizer micro-batch: the class loss on the student's tokens, the KD loss over spans aligned with the
        // teacher's own tokens of the same text (the samples are read again by index: the batch holds only padded tensors).
        private (Tensor Sum, double ClassSum, double KdSum, long Count) CrossStep(CrossTokenizerKd cross, Tensor hidden, Batch batch,
            IReadOnlyList<int> sampleIndices)
        {
            var aligned = cross.Prepare([.. sampleIndices.Select(i => _dataset![i])], _device);
            var logits = _model.ChunkedOutput(hidden, _classLoss!.NumOutputChunks); // n x [b, s_i, v]
            Tensor teacherLogits;
            using (no_grad())
                teacherLogits = _teacher!.ChunkedOutput(_teacher.ForwardHidden(aligned.TeacherTokens, null, null), 0)[0]; // [b, s_t, v_t]
            var clsSum = _classLoss.NumOutputChunks <= 0 ? _classLoss.Sum(logits[0], batch.Labels) : _classLoss.Sum(logits, batch.Labels);
            var kdSum = cross.Sum(logits.Count == 1 ? logits[0] : torch.cat(logits, 1), teacherLogits, aligned);
            (AlignedTokens, TrainedTokens) = (AlignedTokens + aligned.AlignedTokens, TrainedTokens + aligned.TrainedTokens);
            return ((1 - _kdRatio) * clsSum.Sum + _kdRatio * kdSum, clsSum.Sum.item<float>(), kdSum.item<float>(), clsSum.Count.item<long>());
        }
    }

    private void Log(AccumulatedStep result, double classLoss, double kdLoss, StepTiming timing)
    {
        var metrics = timing.Apply(new StepMetrics
        {
            Loss = result.Loss,
            ClassLoss = classLoss,
            KdLoss = kdLoss,
            Lr = Optimizers.LearningRate(_optimizer!),
            GradNorm = double.IsNaN(result.GradNorm) ? null : result.GradNorm,
            PeakMemoryGib = _o.LogPeakMemoryStats ? ProcessMemory.Read().PeakRssBytes / MemorySnapshot.GiB : null,
        }).ToDictionary();
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

    // Restores optimizer, scheduler, RNG, counters and the data position from recipe_state, and the trained weights
    // from the checkpoint folder it names.
    private void Resume()
    {
        var dir = _checkpointer!.OutputDir;
        ConfigFingerprint.CheckResume(dir, null, _fingerprint!, null); // a changed model is refused before its shapes fail to load
        var state = RecipeStateStore.Load(dir, _optimizer!);
        ConfigFingerprint.CheckResume(dir, state, _fingerprint!, _reporter); // refuses data-order/model changes, warns about the rest
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
}

/// <summary>The plain settings of <see cref="KnowledgeDistillationSingleDevice"/>: the shared ones and its own.</summary>
public sealed record KnowledgeDistillationOptions : FineTuneOptions
{
    /// <summary>Weight of the KD term.</summary>
    [RecipeKey(Description = "weight of the KD term; (1 - kd_ratio) weighs the class loss")]
    public double KdRatio { get; init; } = 0.5;

    /// <summary>LoRA: save only the adapter.</summary>
    [RecipeKey(Description = "LoRA: save only the adapter, not merged weights")]
    public bool SaveAdapterWeightsOnly { get; init; }

    /// <summary>An offline teacher (a teacher_logits cache) instead of teacher_model.</summary>
    [RecipeKey(Description = "{cache: <dir>}: read the teacher's top-k log-probs from a teacher_logits cache instead of running a teacher")]
    public TeacherSource? Teacher { get; init; }

    /// <inheritdoc/>
    public override IEnumerable<(string Key, string Message)> Problems() =>
        base.Problems().Concat(KdRatio is < 0 or > 1 ? [("kd_ratio", $"must be in [0, 1], got {KdRatio}")] : []);
}

/// <summary>The <c>teacher:</c> map of the KD config.</summary>
/// <param name="Cache">A teacher cache folder written by the <c>teacher_logits</c> recipe.</param>
public sealed record TeacherSource(string? Cache = null);
