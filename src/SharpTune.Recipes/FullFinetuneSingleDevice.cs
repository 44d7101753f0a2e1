// Recipe `full_finetune_single_device`: every weight of the decoder trains, on one device. Each micro-batch
// contributes the SUM of its per-token cross-entropies; the gradients of an optimizer step are divided once by the
// step's valid tokens, so k micro-batches give exactly the update of one batch of the same tokens. Checkpoints hold
// the model in HF layout. With random_init_checkpoint it also trains from scratch (the tiny configs' teacher).
// Under mpirun (`full_finetune_distributed`) the same code is a data-parallel job: rank 0's weights are broadcast, each rank
// runs its slice of every global batch, the gradients are summed in one flat buffer and divided by the GLOBAL
// valid-token count (DataParallelGradients), clipped on the global norm, logged losses are global means, and only
// rank 0 writes (docs/distributed.md).
// Lifecycle and keys follow torchtune recipes/full_finetune_single_device.py and full_finetune_distributed.py and their configs.
using System.Diagnostics;
using SharpTune.Checkpointing;
using SharpTune.Config;
using SharpTune.Data;
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

/// <summary>Full fine-tuning on one device.</summary>
/// <remarks>Shapes: <c>b</c> batch, <c>s</c> sequence, <c>d</c> model dim, <c>v</c> vocabulary.</remarks>
[Recipe("full_finetune_single_device", Description = "Full fine-tune of every weight of a decoder on one device")]
[Recipe("full_finetune_distributed", Description = "Full fine-tune of every weight of a decoder, data-parallel over MPI ranks (mpirun -np N)")]
[RecipeOptions(typeof(FineTuneOptions))] // the plain settings; the components the recipe builds are declared here
[RecipeKey("model", typeof(TransformerDecoder), Required = true, Description = "a base (non-LoRA) builder")]
[RecipeKey("tokenizer", typeof(ITokenizer), Required = true)]
[RecipeKey("checkpointer", typeof(HfCheckpointer), Required = true, Description = "weights in, checkpoints out")]
[RecipeKey("dataset", typeof(ISampleDataset), Required = true)]
[RecipeKey("optimizer", typeof(OptimizerHelper), Required = true)]
[RecipeKey("lr_scheduler", typeof(LrScheduler), Description = "null: constant learning rate")]
[RecipeKey("loss", typeof(object), Required = true, Description = "CEWithChunkedOutputLoss, CrossEntropyLoss or LinearCrossEntropyLoss")]
[RecipeKey("validation_dataset", typeof(ISampleDataset), Description = "held-out data scored during training (or use validation_split)")]
[RecipeKey("validation_split", typeof(double?), Description = "hold out this fraction of the dataset's tail (e.g. 0.1) instead of validation_dataset")]
[RecipeKey("run_val_every_n_steps", typeof(int?), Minimum = 1, Description = "held-out loss and perplexity every N optimizer steps (and after the last)")]
[RecipeKey("threads", typeof(int?), Minimum = 1, Description = "intra-op threads (per rank under mpirun; fix it for bit-reproducible CPU runs)")]
public sealed class FullFinetuneSingleDevice : IRecipe
{
    private readonly SharpTuneConfig _config;
    private readonly FineTuneOptions _o; // the plain settings, bound once
    private readonly IRecipeReporter _reporter;
    private DistributedContext _dist = DistributedContext.CurrentOrLocal;
    private RunFolder? _runFolder;
    private ConfigFingerprint? _fingerprint;
    private Device _device = CPU;
    private long _seed;
    private TransformerDecoder? _model;
    private ITokenizer? _tokenizer;
    private HfCheckpointer? _checkpointer;
    private ISampleDataset? _dataset;
    private HeldOut? _heldOut;
    private OptimizerHelper? _optimizer;
    private LrScheduler? _scheduler;
    private IGradientSync? _accumulator;
    private CrossEntropyLoss? _classLoss;
    private FusedLinearCrossEntropyLoss? _fusedLoss;
    private IMetricLogger? _metrics;
    private string? _jsonlPath;
    private int _stepsPerEpoch;
    private long _totalSteps;
    private int _epochsRun;
    private long _stepsRun;
    private int _resumeBatch;
    private long _totalTokens;

    /// <summary>Reads the config; nothing heavy happens here.</summary>
    public FullFinetuneSingleDevice(SharpTuneConfig config, IRecipeReporter reporter)
    {
        _config = config;
        _reporter = reporter;
        _o = RecipeOptions.Bind<FineTuneOptions>(config); // every plain setting, read and checked once
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
        _checkpointer = _config.Instantiate<HfCheckpointer>("checkpointer");
        _dist.OnMain(() => RecipeCheckpoints.RecoverOutput(_checkpointer, _reporter)); // what a killed run left, before any resume
        _model = SetupModel(dtype);
        SetupLoss();
        if (_tokenizer.VocabSize > _model.VocabSize)
            throw new ConfigException(_config.Find("tokenizer")!.Location, "tokenizer",
                $"the tokenizer has {_tokenizer.VocabSize} tokens but the model's vocabulary is {_model.VocabSize}");
        _dataset = SetupData();
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
        if (_o.ResumeFromCheckpoint) Resume();
        _runFolder.SaveConfig(_config); // only now: a run refused above leaves the saved run's config as it was
        SetupLogging();
        _reporter.Info($"model: {ModuleParameters.Trainable(_model).Sum(p => p.numel()):N0} trainable of {ModuleParameters.Count(_model):N0} parameters; " +
                       $"seed {_seed}; {_stepsPerEpoch} steps/epoch x {_o.Epochs} epochs" +
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
        for (var epoch = _epochsRun; epoch < _o.Epochs && _stepsRun < totalSteps; epoch++)
        {
            var startBatch = epoch == _epochsRun ? _resumeBatch : 0;
            var step = startBatch / _o.GradientAccumulationSteps;
            var watch = Stopwatch.StartNew();
            long stepTokens = 0, stepProcessed = 0;
            for (var b = startBatch; step < _stepsPerEpoch && _stepsRun < totalSteps; b++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using (var scope = NewDisposeScope())
                {
                    var batch = loader.Collated(epoch, b).To(_device); // padded (or packed) [b, s]
                    var (sum, count) = LossStep(batch);
                    _accumulator!.Backward(sum, count);
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
                stepTokens = result.Tokens; // global tokens of the step (Finish summed them)
                _totalTokens += stepTokens;
                stepProcessed = _dist.AllReduceSum(stepProcessed);
                if (_stepsRun % _o.LogEveryNSteps == 0 || step == _stepsPerEpoch)
                    Log(result, new StepTiming(stepTokens, stepProcessed, watch.Elapsed.TotalSeconds));
                if (_heldOut is { } heldOut && heldOut.IsDue(_stepsRun, totalSteps)) Validate(heldOut);
                _reporter.Progress($"epoch {epoch + 1}/{_o.Epochs}", _stepsRun, totalSteps);
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
        if (RecipeCheckpoints.IsLora(model))
            throw new ConfigException(_config.Find("model")!.Location, "model",
                "full_finetune_single_device trains every weight: use a base builder, or lora_finetune_single_device for a lora_* model");
        _reporter.Info($"model loaded from {_checkpointer!.CheckpointDir}");
        return model;
    }

    // Plain/chunked cross-entropy on logits, or the fused-linear form on hidden states (no [tokens, v] logits).
    private void SetupLoss()
    {
        var loss = _config.Instantiate<object>("loss");
        switch (loss)
        {
            case FusedLinearCrossEntropyLoss fused: _fusedLoss = fused; break;
            case CrossEntropyLoss ce: _classLoss = ce; break;
            default:
                throw new ConfigException(_config.Find("loss")!.Location, "loss",
                    $"expected CEWithChunkedOutputLoss, CrossEntropyLoss or LinearCrossEntropyLoss, got {loss.GetType().Name}");
        }
    }

    private ISampleDataset SetupData()
    {
        var dataset = _config.InstantiateWith<ISampleDataset>("dataset", new Dictionary<string, object?> { ["tokenizer"] = _tokenizer });
        foreach (var line in DatasetSummary.Lines(dataset)) _reporter.Info($"dataset: {line}");
        return dataset;
    }

    // Held-out loss and perplexity, logged next to the training loss.
    private void Validate(HeldOut heldOut)
    {
        var score = heldOut.Score(_model!, _stepsRun, _tokenizer!.PadId, _device);
        _metrics?.Log(_stepsRun, score.Metrics);
        _reporter.Metrics(_stepsRun, score.Metrics);
    }

    // One micro-batch: the SUM of its per-token cross-entropies (normalised later, once per step) and its valid tokens.
    private (Tensor Sum, long Count) LossStep(Batch batch)
    {
        var model = _model!;
        var hidden = model.ForwardHidden(batch.Tokens, batch.Mask, batch.InputPos); // [b, s, d]
        LossSum sum;
        if (_fusedLoss is { } fused) sum = fused.Sum(hidden, model.TrainedOutputWeight(), batch.Labels); // a LoRA head included
        else
        {
            var chunks = _classLoss!.NumOutputChunks;
            var logits = model.ChunkedOutput(hidden, chunks); // n x [b, s_i, v]
            sum = chunks <= 0 ? _classLoss.Sum(logits[0], batch.Labels) : _classLoss.Sum(logits, batch.Labels);
        }
        return (sum.Sum, sum.Count.item<long>());
    }

    private void Log(AccumulatedStep result, StepTiming timing)
    {
        var metrics = timing.Apply(new StepMetrics
        {
            Loss = result.Loss,
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
        var folder = RecipeCheckpoints.Save(_model!, _checkpointer!, tag, state, _optimizer!, adapterOnly: false);
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
}
