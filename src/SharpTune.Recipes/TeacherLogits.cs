// Recipe `teacher_logits`: runs a teacher once over the tokenized dataset of a KD run (same tokenizer and dataset
// components, so the same packing and truncation) and writes its top-k log-probabilities per token position into a
// teacher cache folder (src/SharpTune/Distillation), keyed by sample index so a shuffled KD DataLoader can look entries
// up. Each shard is written atomically and the manifest after it, so an interrupted run continues where it stopped.
// Under mpirun the shards still to write are split into contiguous runs, one per rank; each rank writes its own shard
// files (the same names and bytes as a one-process run) and, after a barrier, rank 0 checks them and writes the manifest.
// References: torchtune issue #2007 (precomputed teacher logits), Arcee DistillKit (offline top-k logits).
using SharpTune.Checkpointing;
using SharpTune.Config;
using SharpTune.Data;
using SharpTune.Distillation;
using SharpTune.Distributed;
using SharpTune.Modules;
using SharpTune.Native;
using SharpTune.Recipes.Support;
using SharpTune.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Recipes;

/// <summary>Writes a top-k teacher log-prob cache for a dataset.</summary>
[Recipe("teacher_logits", Description = "run a teacher once over a KD dataset and cache its top-k log-probs (offline KD)")]
[RecipeKey("output_dir", typeof(string), Required = true, Description = "the cache folder (rerun to resume)")]
[RecipeKey("tokenizer", typeof(ITokenizer), Required = true, Description = "the KD run's tokenizer")]
[RecipeKey("dataset", typeof(ISampleDataset), Required = true, Description = "the KD run's dataset component (same packing/truncation)")]
[RecipeKey("teacher_model", typeof(TransformerDecoder), Required = true, Description = "the teacher architecture")]
[RecipeKey("teacher_checkpointer", typeof(HfCheckpointer), Required = true, Description = "teacher weights (HF folder)")]
[RecipeKey("teacher_id", typeof(string), Description = "name recorded in the manifest; default: the checkpoint folder")]
[RecipeKey("k", typeof(int), Description = "ids per position (default 128)")]
[RecipeKey("temperature", typeof(double), Description = "log_softmax(logits / T) is cached; the KD run must use the same T (default 1)")]
[RecipeKey("log_prob_step", typeof(double), Description = "log-prob quantisation step in nats (default 1/32: relative p error <= 1.6%)")]
[RecipeKey("max_log_ratio", typeof(double?), Description = "fold ids this many nats below the top-1 into the tail (default null: keep them)")]
[RecipeKey("max_bytes_per_token", typeof(int?), Description = "per-position byte budget; the lowest-ranked ids that do not fit are folded into the tail (default null: keep every top-k id)")]
[RecipeKey("samples_per_shard", typeof(int), Description = "samples per atomically written shard (default 256)")]
[RecipeKey("batch_size", typeof(int), Description = "samples per teacher forward (right-padded; default 8)")]
[RecipeKey("device", typeof(string), Description = "cpu | cuda | auto (cuda when available)")]
[RecipeKey("dtype", typeof(string), Description = "fp32 | bf16 (teacher weights; log-probs are computed in fp32)")]
[RecipeKey("threads", typeof(int?), Minimum = 1, Description = "intra-op threads; null keeps libtorch's default")]
public sealed class TeacherLogits : IRecipe
{
    private readonly SharpTuneConfig _config;
    private readonly IRecipeReporter _reporter;
    private readonly string _outputDir;
    private readonly TopKFormat _format;
    private readonly double _temperature;
    private readonly int _samplesPerShard;
    private readonly int _batchSize;
    private Device _device = CPU;
    private ITokenizer? _tokenizer;
    private ISampleDataset? _dataset;
    private TransformerDecoder? _teacher;
    private TeacherCacheWriter? _writer;
    private TeacherCacheManifest? _template;
    private RunFolder? _runFolder;
    private DistributedContext _dist = DistributedContext.CurrentOrLocal;

    /// <summary>Reads the config; nothing heavy happens here.</summary>
    public TeacherLogits(SharpTuneConfig config, IRecipeReporter reporter)
    {
        _config = config;
        _reporter = reporter;
        _outputDir = config.Get<string>("output_dir");
        _temperature = config.Get("temperature", 1.0);
        _samplesPerShard = config.Get("samples_per_shard", 256);
        _batchSize = config.Get("batch_size", 8);
        if (_batchSize < 1) throw new ConfigException(config.Find("batch_size")!.Location, "batch_size", $"must be at least 1, got {_batchSize}");
        _format = new TopKFormat(K: config.Get("k", 128), Vocab: 2, LogProbStep: config.Get("log_prob_step", TopKFormat.DefaultLogProbStep),
            MaxLogRatio: config.Get<double?>("max_log_ratio", null), MaxBytesPerToken: config.Get<int?>("max_bytes_per_token", null));
        if (!(_temperature > 0)) throw new ConfigException(config.Find("temperature")!.Location, "temperature", $"must be positive, got {_temperature}");
        if (_samplesPerShard < 1) throw new ConfigException(config.Find("samples_per_shard")!.Location, "samples_per_shard", $"must be at least 1, got {_samplesPerShard}");
    }

    /// <inheritdoc/>
    public void Setup(CancellationToken cancellationToken)
    {
        TorchRuntime.EnsureLoaded();
        _dist = DistributedContext.CurrentOrLocal;
        _runFolder = RunFolder.Open(_config, _dist); // this run alone writes the cache folder until it ends
        if (_config.Get<int?>("threads", null) is { } t) TorchRuntime.SetThreads(t);
        _device = RecipeRuntime.ResolveDevice(_config.Get("device", "cpu"));
        var dtype = RecipeRuntime.ResolveDtype(_config.Get("dtype", "fp32"), _device, _reporter);
        _tokenizer = _config.Instantiate<ITokenizer>("tokenizer");
        _dataset = _config.InstantiateWith<ISampleDataset>("dataset", new Dictionary<string, object?> { ["tokenizer"] = _tokenizer });
        _teacher = SetupTeacher(dtype, out var teacherDir);
        var vocab = (int)_teacher.VocabSize;
        var format = _format with { Vocab = vocab };
        try { format.Validate(); }
        catch (ArgumentException e) { throw new ConfigException(_config.Find("k")?.Location ?? _config.Find("output_dir")!.Location, "k", e.Message); }
        _reporter.Info($"hashing dataset ({_dataset.Count} samples), tokenizer and teacher weights");
        var template = new TeacherCacheManifest
        {
            K = format.K, Vocab = vocab, LogProbStep = format.LogProbStep, MaxLogRatio = format.MaxLogRatio,
            MaxBytesPerToken = format.MaxBytesPerToken, Temperature = _temperature,
            TeacherId = _config.Get<string?>("teacher_id", null) ?? Path.GetFileName(Path.GetFullPath(teacherDir).TrimEnd(Path.DirectorySeparatorChar)),
            DataHash = ContentHash.OfDataset(_dataset), TokenizerHash = ContentHash.OfTokenizer(_tokenizer), TeacherHash = ContentHash.OfWeights(_teacher),
            Samples = _dataset.Count, SamplesPerShard = _samplesPerShard,
        };
        _template = template;
        if (_dist.WorldSize == 1) _writer = TeacherCacheWriter.Open(_outputDir, template);
        else
        {
            // Rank 0 alone checks the folder (a cache of other inputs is refused), drops a killed run's temp files and
            // finds the complete shards; the shards after them are split into one contiguous run per rank.
            var done = 0;
            _dist.OnMain(() => done = TeacherCacheWriter.Open(_outputDir, template).Manifest.Shards.Count);
            done = (int)_dist.AllReduceSum(_dist.IsMain ? done : 0L);
            var (start, count) = Sharding.Range(TeacherCacheWriter.ShardCount(template) - done, _dist.Rank, _dist.WorldSize);
            _writer = TeacherCacheWriter.OpenPart(_outputDir, template, done + start, count);
            if (done > 0) _reporter.Info($"resuming: {done} shards already cached in {_outputDir}");
            _reporter.Info($"{_dist.WorldSize} ranks: rank 0 writes samples {_writer.NextSample}..{_writer.EndSample - 1}");
        }
        if (_writer.ResumedSamples > 0)
            _reporter.Info($"resuming: {_writer.ResumedSamples} of {template.Samples} samples already cached in {_outputDir}");
        _reporter.Info($"teacher vocab {vocab}, k {format.K}, T {_temperature}, data hash {template.DataHash[..12]}");
    }

    /// <inheritdoc/>
    public void Train(CancellationToken cancellationToken)
    {
        var writer = _writer!;
        var dataset = _dataset!;
        var teacher = _teacher!;
        var stopwatch = System.Diagnostics.Stopwatch.StartNew();
        long tokens = 0;
        using var noGrad = torch.no_grad();
        var end = writer.EndSample;
        // Batches never cross a shard boundary and start at each shard's first sample, so a shard's bytes depend on that
        // shard alone (a batch's padding changes the teacher's float results in the last bits): a resumed run, or any
        // number of ranks, writes the shards an uninterrupted one-process run writes.
        for (var first = writer.NextSample; first < end;)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = torch.NewDisposeScope();
            var shardEnd = (first / _samplesPerShard + 1) * _samplesPerShard;
            var count = Math.Min(_batchSize, Math.Min(end, shardEnd) - first);
            var samples = Enumerable.Range(first, count).Select(i => dataset[i]).ToArray();
            // Packs keep their block-causal mask and per-document positions, as in KD; other samples are right-padded,
            // which a causal teacher never attends to from the real positions.
            var batch = samples[0].SeqLens is not null && samples[0].InputPos is not null
                ? Collate.Packed(samples) : Collate.PadSft(samples, _tokenizer!.PadId);
            var logits = teacher.Forward(batch.Tokens.to(_device), batch.Mask?.to(_device), batch.InputPos?.to(_device)); // [b, s, v]
            for (var j = 0; j < samples.Length; j++)
            {
                var len = samples[j].Tokens.Length;
                writer.AppendLogits(first + j, logits[j, ..len]);                                                        // [len, v]
                tokens += len;
            }
            first += count;
            _reporter.Progress("teacher_logits", first, end);
        }
        TeacherCacheManifest manifest;
        if (_dist.WorldSize == 1) manifest = writer.Complete();
        else
        {
            // Every rank's shards are on disk once all reach the barrier; rank 0 then writes the manifest (the others
            // wait for it in OnMain's barrier, so the job ends with a complete cache).
            _dist.Barrier();
            TeacherCacheManifest? assembled = null;
            _dist.OnMain(() => assembled = TeacherCacheWriter.Assemble(_outputDir, _template!));
            manifest = assembled ?? _template!;
            tokens = _dist.AllReduceSum(tokens);
        }
        var seconds = stopwatch.Elapsed.TotalSeconds;
        _reporter.Metrics(dataset.Count, new Dictionary<string, double>
        {
            ["tokens_per_second"] = seconds > 0 ? tokens / seconds : 0,
            ["bytes_per_token"] = manifest.Tokens == 0 ? 0 : (double)manifest.Bytes / manifest.Tokens,
            ["mean_stored_k"] = manifest.MeanEntries,
            ["min_stored_k"] = manifest.MinEntries,
            ["folded_entries"] = manifest.FoldedEntries,
        });
        _reporter.Info($"wrote {manifest.Tokens} positions in {manifest.Shards.Count} shards to {_outputDir} " +
            $"({(manifest.Tokens == 0 ? 0 : (double)manifest.Bytes / manifest.Tokens):F1} bytes/token)");
        _reporter.Info($"entries kept per position: mean {manifest.MeanEntries:F2}, min {manifest.MinEntries} of k {manifest.K}; " +
            $"{manifest.FoldedEntries} folded into the tail" + (manifest.MaxBytesPerToken is { } b ? $" (max_bytes_per_token {b})" : "") +
            (manifest.MaxLogRatio is { } r ? $" (max_log_ratio {r})" : ""));
    }

    /// <inheritdoc/>
    public void Cleanup()
    {
        _teacher?.Dispose();
        _runFolder?.Dispose();
    }

    private TransformerDecoder SetupTeacher(ScalarType dtype, out string checkpointDir)
    {
        var checkpointer = _config.Instantiate<HfCheckpointer>("teacher_checkpointer");
        // The tokenizer first: a teacher of another vocabulary is refused before its weights are loaded.
        if (TeacherTokenizer.Check(_config, _tokenizer!, checkpointer.CheckpointDir, "teacher_checkpointer") is null && Directory.Exists(checkpointer.CheckpointDir))
            _reporter.Info($"{checkpointer.CheckpointDir} has no tokenizer files: the teacher's tokenizer cannot be compared with the run's ({TeacherTokenizer.Describe(_config)})");
        var teacher = RecipeRuntime.BuildModel(_config, "teacher_model", _device, dtype);
        checkpointer.LoadInto(teacher, strict: true, convertDtype: true);
        foreach (var p in teacher.parameters()) p.requires_grad = false;
        teacher.eval();
        checkpointDir = checkpointer.CheckpointDir;
        return teacher;
    }
}
