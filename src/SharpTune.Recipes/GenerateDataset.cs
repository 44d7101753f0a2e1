// Recipe `generate_dataset`: offline sequence-level KD (Kim & Rush 2016). A model (normally the teacher) completes
// the prompts of an instruct/chat dataset once (the prompt is the untrained prefix of each sample, as in on-policy
// distillation) with batched sampling, and the completions are written to JSONL, one row per sample in dataset
// order: {"prompt", "completion", "prompt_ids", "completion_ids", "stopped"}. The sampling settings, the model folder
// and the dataset component are written beside it (<output>.settings.json). Both files are written atomically.
// A model whose vocabulary is padded beyond the tokenizer's ids can sample such a padding id (an undertrained one
// does): it stays in completion_ids and has no text in "completion".
// Any SFT/KD recipe can then train on the rows (e.g. instruct_dataset with column_map {input: prompt, output: completion}).
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Config;
using SharpTune.Data;
using SharpTune.Distillation;
using SharpTune.Eval;
using SharpTune.Modules;
using SharpTune.Native;
using SharpTune.Recipes.Support;
using SharpTune.Tokenizers;
using TorchSharp;

namespace SharpTune.Recipes;

/// <summary>Writes a model's sampled completions of a dataset's prompts to JSONL (offline seq-KD data).</summary>
[Recipe("generate_dataset", Description = "Write a (teacher) model's sampled completions of a dataset's prompts to JSONL for sequence-level KD")]
[RecipeKey("output_path", typeof(string), Required = true, Description = "the JSONL file written (settings go to <output_path>.settings.json)")]
[RecipeKey("model", typeof(TransformerDecoder), Required = true, Description = "the generating model's architecture")]
[RecipeKey("checkpointer", typeof(HfCheckpointer), Required = true, Description = "its weights (checkpoint_dir)")]
[RecipeKey("tokenizer", typeof(ITokenizer), Required = true)]
[RecipeKey("dataset", typeof(ISampleDataset), Required = true, Description = "instruct/chat data with train_on_input false")]
[RecipeKey("max_samples", typeof(int?), Description = "complete only the first N samples (null = all)")]
[RecipeKey("batch_size", typeof(int), Description = "prompts sampled together")]
[RecipeKey("temperature", typeof(double), Description = "0 = greedy")]
[RecipeKey("top_p", typeof(double?), Description = "nucleus sampling mass (null = off)")]
[RecipeKey("top_k", typeof(int?), Description = "sample among the k most likely tokens (null = all)")]
[RecipeKey("max_new_tokens", typeof(int))]
[RecipeKey("seed", typeof(long), Description = "seed of the sampling generator")]
[RecipeKey("device", typeof(string), Description = "cpu | cuda")]
[RecipeKey("dtype", typeof(string), Description = "fp32 | bf16")]
[RecipeKey("threads", typeof(int?), Minimum = 1)]
public sealed class GenerateDataset : IRecipe
{
    private readonly SharpTuneConfig _config;
    private readonly IRecipeReporter _reporter;
    private readonly string _outputPath;
    private readonly int? _maxSamples;
    private readonly int _batchSize;
    private readonly long _seed;
    private readonly GenerationOptions _options;
    private TransformerDecoder? _model;
    private ITokenizer? _tokenizer;
    private ISampleDataset? _dataset;
    private string _modelDir = "";

    /// <summary>Reads and checks the config.</summary>
    public GenerateDataset(SharpTuneConfig config, IRecipeReporter reporter)
    {
        _config = config;
        _reporter = reporter;
        _outputPath = config.Get<string>("output_path");
        _maxSamples = config.Get<int?>("max_samples", null);
        _batchSize = config.Get("batch_size", 8);
        _seed = config.Get("seed", 0L);
        _options = new GenerationOptions
        {
            Temperature = config.Get("temperature", 1.0),
            TopP = config.Get<double?>("top_p", null),
            TopK = config.Get<int?>("top_k", null),
            MaxNewTokens = config.Get("max_new_tokens", 128),
        };
        if (_batchSize < 1) throw new ConfigException(config.Find("batch_size")?.Location, "batch_size", $"must be at least 1, got {_batchSize}");
        if (_maxSamples is < 1) throw new ConfigException(config.Find("max_samples")?.Location, "max_samples", $"must be at least 1 or null, got {_maxSamples}");
        try { _options.Validate(); }
        catch (ArgumentException e)
        {
            var key = e.Message.Split(' ')[0];
            throw new ConfigException(config.Find(key)?.Location, key, e.Message);
        }
    }

    /// <inheritdoc/>
    public void Setup(CancellationToken cancellationToken)
    {
        TorchRuntime.EnsureLoaded();
        if (_config.Get<int?>("threads", null) is { } threads) TorchRuntime.SetThreads(threads);
        var device = RecipeRuntime.ResolveDevice(_config.Get("device", "cpu"));
        var dtype = RecipeRuntime.ResolveDtype(_config.Get("dtype", "fp32"), device, _reporter);
        _tokenizer = _config.Instantiate<ITokenizer>("tokenizer");
        var checkpointer = _config.Instantiate<HfCheckpointer>("checkpointer");
        _modelDir = checkpointer.CheckpointDir;
        _model = RecipeRuntime.BuildModel(_config, "model", device, dtype);
        checkpointer.LoadInto(_model, strict: true, convertDtype: true);
        _dataset = _config.InstantiateWith<ISampleDataset>("dataset", new Dictionary<string, object?> { ["tokenizer"] = _tokenizer });
    }

    /// <inheritdoc/>
    public void Train(CancellationToken cancellationToken)
    {
        var model = _model!;
        var tokenizer = _tokenizer!;
        var count = Math.Min(_dataset!.Count, _maxSamples ?? int.MaxValue);
        var options = _options with { StopTokens = tokenizer.StopTokens.ToHashSet() };
        using var generator = new torch.Generator(unchecked((ulong)_seed), model.OutputWeight.device);
        var rows = new StringBuilder();
        long tokens = 0;
        for (var start = 0; start < count; start += _batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var prompts = Enumerable.Range(start, Math.Min(_batchSize, count - start))
                .Select(i => (IReadOnlyList<int>)PromptCompletion.Split(_dataset[i], i).Prompt).ToList();
            var longest = prompts.Max(p => p.Count);
            var result = Generation.GenerateBatch(model, prompts, options with { MaxNewTokens = Math.Min(options.MaxNewTokens, model.MaxSeqLen - longest) }, generator);
            for (var i = 0; i < prompts.Count; i++)
            {
                var completion = result.GeneratedTokens[i];
                var shown = result.StoppedAtStopToken[i] ? completion.Take(completion.Count - 1) : completion;
                var row = new JsonObject
                {
                    ["prompt"] = tokenizer.Decode(prompts[i], skipSpecialTokens: true),
                    ["completion"] = tokenizer.Decode(shown.Where(t => t < tokenizer.VocabSize), skipSpecialTokens: true),
                    ["prompt_ids"] = new JsonArray([.. prompts[i].Select(t => (JsonNode?)t)]),
                    ["completion_ids"] = new JsonArray([.. completion.Select(t => (JsonNode?)t)]),
                    ["stopped"] = result.StoppedAtStopToken[i],
                };
                rows.Append(row.ToJsonString()).Append('\n');
                tokens += completion.Count;
            }
            _reporter.Progress("generating", start + prompts.Count, count);
        }
        var settings = new JsonObject
        {
            ["model_dir"] = _modelDir,
            ["dataset"] = _config.Find("dataset._component_")?.Text,
            ["samples"] = count,
            ["temperature"] = _options.Temperature,
            ["top_p"] = _options.TopP,
            ["top_k"] = _options.TopK,
            ["max_new_tokens"] = _options.MaxNewTokens,
            ["seed"] = _seed,
            ["batch_size"] = _batchSize,
            ["stop_tokens"] = new JsonArray([.. options.StopTokens.Order().Select(t => (JsonNode?)t)]),
        };
        var dir = Path.GetDirectoryName(Path.GetFullPath(_outputPath))!;
        Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(_outputPath, rows.ToString());
        AtomicFile.WriteAllText(_outputPath + ".settings.json", settings.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        _reporter.Info($"wrote {count} completions ({tokens} tokens) to {_outputPath}; settings in {_outputPath}.settings.json");
    }

    /// <inheritdoc/>
    public void Cleanup()
    {
        _model?.Dispose();
        _model = null;
    }
}
