// Recipe `evaluate`: scores a checkpoint on zero-shot multiple-choice tasks (hellaswag, truthfulqa_mc1/mc2,
// commonsense_qa, and the generic multiple_choice) with lm-evaluation-harness semantics, plus rolling-window perplexity
// of text files, and the teacher's NLL of the model's sampled completions of held-out prompts (teacher_nll); prints the harness-style table and writes results.json (SharpTune's report, read by
// `sharptune eval --compare`) and results_harness.json (the harness's own results.json shape) to output_dir.
// The model comes from an HF checkpoint folder (architecture from its config.json), or from a `model` component loaded
// by a `checkpointer` component, as torchtune's eleuther_eval config does. Task data comes from local files in the
// layouts the datasets are distributed in, or from a Hub dataset id through the dataset resolver (cached on disk).
// References: torchtune recipes/eleuther_eval.py and recipes/configs/eleuther_evaluation.yaml; lm_eval/evaluator.py.
using System.Text;
using SharpTune.Checkpointing;
using SharpTune.Config;
using SharpTune.Data;
using SharpTune.Eval;
using SharpTune.Models;
using SharpTune.Modules;
using SharpTune.Native;
using SharpTune.Tokenizers;
using TorchSharp;

namespace SharpTune.Recipes;

/// <summary>Evaluates a checkpoint on harness tasks and perplexity.</summary>
[Recipe("evaluate", Description = "Zero-shot hellaswag / truthfulqa_mc2 / commonsense_qa / multiple_choice / perplexity with lm-evaluation-harness semantics")]
[RecipeKey("output_dir", typeof(string), Required = true, Description = "folder for results.json and results_harness.json")]
[RecipeKey("checkpoint_dir", typeof(string), Description = "HF model folder (config.json, safetensors, tokenizer); or give `checkpointer`")]
[RecipeKey("checkpointer", typeof(HfCheckpointer), Description = "component loading the weights (its checkpoint_dir is used)")]
[RecipeKey("model", typeof(TransformerDecoder), Description = "model component; null builds the architecture from config.json")]
[RecipeKey("tokenizer", typeof(object), Description = "tokenizer path or component; null loads it from the checkpoint folder")]
[RecipeKey("tasks", typeof(List<string>), Required = true, Description = "hellaswag, truthfulqa_mc1, truthfulqa_mc2, commonsense_qa, multiple_choice, perplexity, teacher_nll")]
[RecipeKey("data_files", typeof(object), Description = "per task: a local file/folder or Hub dataset id, or {source, data_files, split}")]
[RecipeKey("split", typeof(string), Description = "split picked from a folder or Hub dataset (default validation, as the harness)")]
[RecipeKey("limit", typeof(int?), Description = "at most this many documents per task (the first ones)")]
[RecipeKey("batch_size", typeof(int), Description = "sequences per forward pass")]
[RecipeKey("max_length", typeof(int?), Description = "scoring window; null uses the model's max_seq_len")]
[RecipeKey("shared_context", typeof(bool), Description = "score a document's shared context once (same numbers, faster)")]
[RecipeKey("dtype", typeof(string), Description = "float32 or bfloat16")]
[RecipeKey("threads", typeof(int?), Minimum = 1, Description = "intra-op threads; null keeps libtorch's default")]
[RecipeKey("passage_bytes", typeof(int?), Minimum = 1, Description = "perplexity: score each file as passages of at least this many bytes cut at blank lines, written to perplexity_passages.jsonl (the units of bootstrap intervals); null: one document per file")]
[RecipeKey("sample_prompt", typeof(string), Description = "also write sample.txt: the greedy continuation of this text")]
[RecipeKey("sample_max_new_tokens", typeof(int), Minimum = 1, Description = "tokens generated for sample.txt (default 64)")]
[RecipeKey("teacher_nll", typeof(TeacherNllOptions), Description = "task teacher_nll: {teacher_checkpoint_dir, num_prompts, prompt_tokens, completion_tokens, temperature, top_p, top_k, seed, batch_size, add_bos}; prompts from data_files.teacher_nll, one line per prompt in teacher_nll.jsonl")]
[RecipeKey("model_name", typeof(string), Description = "label of this run in reports and comparisons (default: the checkpoint folder name)")]
public sealed class Evaluate : IRecipe
{
    /// <summary>The pseudo-task that computes perplexity of text files.</summary>
    public const string PerplexityTask = "perplexity";

    /// <summary>The pseudo-task that samples completions of held-out prompts and scores them with a teacher.</summary>
    public const string TeacherNllTask = "teacher_nll";

    private readonly SharpTuneConfig _config;
    private readonly IRecipeReporter _reporter;
    private readonly string _outputDir;
    private readonly List<string> _tasks;
    private readonly string _split;
    private readonly int? _limit;
    private readonly int _batchSize;
    private readonly int? _maxLength;
    private readonly bool _sharedContext;
    private readonly torch.ScalarType _dtype;
    private readonly int? _threads;
    private readonly int? _passageBytes;
    private readonly string? _samplePrompt;
    private readonly int _sampleTokens;
    private readonly TeacherNllOptions? _teacherNll;
    private TransformerDecoder? _model;
    private TransformerDecoder? _teacher;
    private ITokenizer? _tokenizer;
    private string _modelName = "";
    private readonly List<(string Task, IReadOnlyList<string> Files, List<MultipleChoiceDoc>? Docs)> _data = [];

    /// <summary>Reads the config; nothing heavy happens here.</summary>
    public Evaluate(SharpTuneConfig config, IRecipeReporter reporter)
    {
        _config = config;
        _reporter = reporter;
        _outputDir = config.Get<string>("output_dir");
        _tasks = config.Get<List<string>>("tasks");
        _split = config.Get("split", "validation");
        _limit = config.Get<int?>("limit", null);
        _batchSize = config.Get("batch_size", 8);
        _maxLength = config.Get<int?>("max_length", null);
        _sharedContext = config.Get("shared_context", true);
        _threads = config.Get<int?>("threads", null);
        _passageBytes = config.Get<int?>("passage_bytes", null);
        _samplePrompt = config.Get<string?>("sample_prompt", null);
        _sampleTokens = config.Get("sample_max_new_tokens", 64);
        _dtype = ParseDtype(config, "dtype");
        var where = config.Find("tasks")!.Location;
        if (_tasks.Count == 0) throw new ConfigException(where, "tasks", "give at least one task");
        foreach (var t in _tasks)
            if (t is not (PerplexityTask or TeacherNllTask) && !EvalTasks.All.ContainsKey(t))
                throw new ConfigException(where, "tasks",
                    $"unknown task '{t}'{Names.Suggest(t, EvalTasks.All.Keys.Append(PerplexityTask).Append(TeacherNllTask))} (known: {string.Join(", ", EvalTasks.All.Keys)}, {PerplexityTask}, {TeacherNllTask})");
        if (_tasks.Contains(TeacherNllTask))
        {
            _teacherNll = config.Get<TeacherNllOptions>(TeacherNllTask);
            if (_teacherNll.Problem() is { } problem)
                throw new ConfigException(config.Find($"{TeacherNllTask}.{problem.Key}")?.Location ?? config.Find(TeacherNllTask)!.Location,
                    $"{TeacherNllTask}.{problem.Key}", problem.Message);
        }
        if (_tasks.Distinct().Count() != _tasks.Count) throw new ConfigException(where, "tasks", "a task is listed twice");
        if (_batchSize < 1) throw new ConfigException(config.Find("batch_size")!.Location, "batch_size", $"must be at least 1, got {_batchSize}");
        if (_limit is < 1) throw new ConfigException(config.Find("limit")!.Location, "limit", $"must be at least 1 or null, got {_limit}");
        if (_maxLength is < 2) throw new ConfigException(config.Find("max_length")!.Location, "max_length", $"must be at least 2 or null, got {_maxLength}");
    }

    /// <inheritdoc/>
    public void Setup(CancellationToken cancellationToken)
    {
        TorchRuntime.EnsureLoaded();
        if (_threads is { } t) TorchRuntime.SetThreads(t);
        // Data first: a missing file, a misspelt dataset id or a file in the wrong layout fails before the model loads.
        foreach (var task in _tasks)
        {
            var files = SetupData(task);
            var docs = task is PerplexityTask or TeacherNllTask ? null : LoadDocs(EvalTasks.Get(task), files);
            _data.Add((task, files, docs));
        }
        var checkpointDir = SetupModel();
        _tokenizer = SetupTokenizer(checkpointDir);
        if (_tokenizer.VocabSize > _model!.VocabSize)
            _reporter.Warning($"the tokenizer has {_tokenizer.VocabSize} ids but the model's vocabulary is {_model.VocabSize}");
        if (_teacherNll is not null) _teacher = SetupTeacher(_teacherNll);
        _modelName = _config.Get<string?>("model_name", null) ?? Path.GetFileName(Path.GetFullPath(checkpointDir).TrimEnd(Path.DirectorySeparatorChar));
        _reporter.Info($"model {_modelName}: {_model.Args.NumLayers} layers, d={_model.Args.EmbedDim}, vocab {_model.VocabSize}, max_seq_len {_model.MaxSeqLen}, {_dtype}");
    }

    /// <inheritdoc/>
    public void Train(CancellationToken cancellationToken)
    {
        var model = _model!;
        var tokenizer = _tokenizer!;
        model.eval();
        var lm = new DelegateCausalLm((tokens, mask, pos) => model.Forward(tokens, mask, pos), model.MaxSeqLen);
        var results = new List<EvalResult>();
        var seconds = 0.0;
        var maxLength = _maxLength ?? model.MaxSeqLen;
        foreach (var (task, files, loadedDocs) in _data)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            if (task == PerplexityTask) results.AddRange(RunPerplexity(lm, tokenizer, files, cancellationToken));
            else if (task == TeacherNllTask) results.AddRange(RunTeacherNll(model, tokenizer, files));
            else
            {
                var definition = EvalTasks.Get(task);
                var docs = loadedDocs!;
                _reporter.Info($"{task}: {docs.Count} documents, {docs.Sum(d => d.Choices.Count)} requests from {string.Join(", ", files)}");
                var report = Evaluator.Run(lm, tokenizer, [(definition, docs)], _limit, _batchSize,
                    new ReporterProgress(_reporter, cancellationToken), _sharedContext, _maxLength);
                maxLength = report.MaxLength;
                results.AddRange(report.Results);
            }
            seconds += clock.Elapsed.TotalSeconds;
        }
        var final = new EvalReport { Model = _modelName, Results = results, Limit = _limit, MaxLength = maxLength, Seconds = seconds };
        Directory.CreateDirectory(_outputDir);
        var path = Path.Combine(_outputDir, "results.json");
        final.Save(path);
        AtomicFile.WriteAllText(Path.Combine(_outputDir, "results_harness.json"), final.ToHarnessJson());
        if (_samplePrompt is { Length: > 0 } prompt) WriteSample(model, tokenizer, prompt);
        _reporter.Info(final.ToMarkdown().TrimEnd('\n'));
        _reporter.Info($"scored in {seconds:F1} s; wrote {path}");
    }

    /// <inheritdoc/>
    public void Cleanup()
    {
        _model?.Dispose();
        _model = null;
        _teacher?.Dispose();
        _teacher = null;
    }

    // The model: a `model` component or the architecture of config.json; weights through the checkpointer or the folder.
    private string SetupModel()
    {
        var checkpointer = _config.Find("checkpointer") is { Kind: not ConfigNodeKind.Null } ? _config.Instantiate<HfCheckpointer>("checkpointer") : null;
        var checkpointDir = checkpointer?.CheckpointDir ?? _config.Get<string?>("checkpoint_dir", null)
            ?? throw new ConfigException(new SourceLocation(_config.SourcePath ?? "config", 0, 0), "checkpoint_dir",
                "give checkpoint_dir (an HF model folder) or a checkpointer component");
        if (!Directory.Exists(checkpointDir)) throw new DirectoryNotFoundException($"checkpoint_dir not found: {checkpointDir}");
        if (_config.Find("model") is { Kind: not ConfigNodeKind.Null })
        {
            _model = _config.Instantiate<TransformerDecoder>("model");
            if (_dtype != torch.ScalarType.Float32) _model.to(_dtype);
        }
        else _model = HfModels.FromConfig(HfModelConfig.Parse(Path.Combine(checkpointDir, "config.json")), dtype: _dtype);
        var loaded = checkpointer is not null
            ? checkpointer.LoadInto(_model, strict: true, convertDtype: true)
            : HfCheckpointer.LoadInto(_model, checkpointDir, strict: true, convertDtype: true);
        foreach (var extra in loaded.UnexpectedKeys) _reporter.Warning($"{checkpointDir}: ignored tensor {extra}");
        return checkpointDir;
    }

    private ITokenizer SetupTokenizer(string checkpointDir)
    {
        var node = _config.Find("tokenizer");
        if (node is null || node.Kind == ConfigNodeKind.Null) return TokenizerLoader.Load(checkpointDir);
        if (node.Kind == ConfigNodeKind.Scalar) return TokenizerLoader.Load(node.Text!);
        return _config.Instantiate<ITokenizer>("tokenizer");
    }

    // Where a task's documents are: data_files.<task> as a path or dataset id, or {source, data_files, split}.
    private IReadOnlyList<string> SetupData(string task)
    {
        var key = $"data_files.{task}";
        var node = _config.Find(key);
        if (node is null || node.Kind == ConfigNodeKind.Null)
            throw new ConfigException(_config.Find("tasks")!.Location, key,
                $"task '{task}' has no data: set {key}=<file, folder or Hub dataset id>");
        string source;
        string? files = null;
        var split = _split;
        if (node.Kind == ConfigNodeKind.Scalar) source = node.Text!;
        else if (node.Kind == ConfigNodeKind.Map)
        {
            source = _config.Get<string>(key + ".source");
            files = _config.Get<string?>(key + ".data_files", null);
            split = _config.Get(key + ".split", _split);
            foreach (var entry in node.Entries)
                if (entry.Key is not ("source" or "data_files" or "split"))
                    throw new ConfigException(entry.Value.Location, $"{key}.{entry.Key}", "unknown key (expected source, data_files, split)");
        }
        else throw new ConfigException(node.Location, key, $"expected a path, a dataset id or {{source, data_files, split}}, got {node.Describe()}");
        if (task is PerplexityTask or TeacherNllTask && File.Exists(source)) return [source];
        return DataSources.ResolveFiles(source, files, split);
    }

    private List<MultipleChoiceDoc> LoadDocs(MultipleChoiceTask task, IReadOnlyList<string> files)
    {
        var docs = new List<MultipleChoiceDoc>();
        foreach (var file in files)
        {
            var remaining = _limit is { } n ? n - docs.Count : (int?)null;
            if (remaining <= 0) break;
            docs.AddRange(task.Load(file, remaining));
        }
        if (docs.Count == 0) throw new InvalidDataException($"{task.Name}: no documents in {string.Join(", ", files)}");
        return docs;
    }

    // Perplexity of each text file; the figures are summed over files (one document per file, or with passage_bytes
    // one document per passage, each passage's figures written to perplexity_passages.jsonl).
    private IEnumerable<EvalResult> RunPerplexity(ICausalLm lm, ITokenizer tokenizer, IReadOnlyList<string> files, CancellationToken cancellationToken)
    {
        var (tokens, words, bytes, ll) = (0, 0, 0, 0.0);
        var passageLines = new StringBuilder();
        foreach (var file in files)
        {
            cancellationToken.ThrowIfCancellationRequested();
            IReadOnlyList<PerplexityResult> parts;
            if (_passageBytes is { } minBytes)
            {
                if (!File.Exists(file)) throw new FileNotFoundException($"text file not found: {file}", file);
                var passages = Perplexity.Passages(File.ReadAllText(file, Encoding.UTF8), minBytes);
                parts = Perplexity.ComputePassages(lm, tokenizer, passages, _batchSize, _maxLength);
                for (var i = 0; i < parts.Count; i++)
                    passageLines.Append(System.Text.Json.JsonSerializer.Serialize(new PassageScore(file, i, parts[i].Tokens, parts[i].Bytes, parts[i].LogLikelihood), PassageScore.Json)).Append('\n');
            }
            else parts = [Perplexity.ComputeFile(lm, tokenizer, file, _batchSize, _maxLength)];
            var r = new PerplexityResult(parts.Sum(p => p.Tokens), parts.Sum(p => p.Words), parts.Sum(p => p.Bytes), parts.Sum(p => p.LogLikelihood));
            _reporter.Info($"perplexity: {file}: {r.Tokens} tokens{(parts.Count > 1 ? $" in {parts.Count} passages" : "")}, loss {r.LossPerToken:F4} nats/token");
            (tokens, words, bytes, ll) = (tokens + r.Tokens, words + r.Words, bytes + r.Bytes, ll + r.LogLikelihood);
        }
        if (_passageBytes is not null)
        {
            Directory.CreateDirectory(_outputDir);
            AtomicFile.WriteAllText(Path.Combine(_outputDir, PassageScore.FileName), passageLines.ToString());
        }
        var total = new PerplexityResult(tokens, words, bytes, ll);
        return
        [
            new EvalResult(PerplexityTask, "word_perplexity", total.WordPerplexity, null, files.Count),
            new EvalResult(PerplexityTask, "byte_perplexity", total.BytePerplexity, null, files.Count),
            new EvalResult(PerplexityTask, "bits_per_byte", total.BitsPerByte, null, files.Count),
            new EvalResult(PerplexityTask, "token_perplexity", total.TokenPerplexity, null, files.Count),
            new EvalResult(PerplexityTask, "loss", total.LossPerToken, null, files.Count), // nats per token, as training logs it
        ];
    }

    // The teacher of teacher_nll: the architecture of its config.json, weights loaded strictly, of the student's vocabulary.
    private TransformerDecoder SetupTeacher(TeacherNllOptions options)
    {
        var dir = options.TeacherCheckpointDir;
        var where = _config.Find($"{TeacherNllTask}.teacher_checkpoint_dir")!.Location;
        if (!Directory.Exists(dir)) throw new ConfigException(where, $"{TeacherNllTask}.teacher_checkpoint_dir", $"folder not found: {dir}");
        var teacher = HfModels.FromConfig(HfModelConfig.Parse(Path.Combine(dir, "config.json")), dtype: _dtype);
        HfCheckpointer.LoadInto(teacher, dir, strict: true, convertDtype: true);
        if (teacher.VocabSize != _model!.VocabSize)
            throw new ConfigException(where, $"{TeacherNllTask}.teacher_checkpoint_dir",
                $"the teacher in {dir} has vocabulary {teacher.VocabSize} but the model {_model.VocabSize}: teacher_nll needs one token space");
        var length = options.PromptTokens + options.CompletionTokens;
        foreach (var (who, m) in new[] { ("teacher", teacher), ("model", _model) })
            if (m.MaxSeqLen < length)
                throw new ConfigException(where, $"{TeacherNllTask}.prompt_tokens",
                    $"prompt_tokens + completion_tokens = {length} exceeds the {who}'s max_seq_len {m.MaxSeqLen}");
        _reporter.Info($"teacher_nll: teacher {dir}: {teacher.Args.NumLayers} layers, d={teacher.Args.EmbedDim}");
        return teacher;
    }

    // The teacher's NLL of the model's sampled completions of held-out prompts: the prompts are the first prompt_tokens
    // of evenly spaced windows of prompt_tokens + completion_tokens tokens over the files' token stream; one line per
    // prompt in teacher_nll.jsonl (the units of bootstrap intervals).
    private IEnumerable<EvalResult> RunTeacherNll(TransformerDecoder model, ITokenizer tokenizer, IReadOnlyList<string> files)
    {
        var o = _teacherNll!;
        foreach (var f in files)
            if (!File.Exists(f)) throw new FileNotFoundException($"text file not found: {f}", f);
        var windows = new TextStreamDataset(tokenizer, files.Select(f => File.ReadAllText(f, Encoding.UTF8)), o.PromptTokens + o.CompletionTokens,
            addBos: o.AddBos, addEos: true, promptTokens: o.PromptTokens);
        var prompts = TeacherNll.Prompts(windows, o.NumPrompts);
        var ids = prompts.Select(p => p.Prompt).ToList();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var completions = TeacherNll.Sample(model, ids, o.Sampling(tokenizer.StopTokens.ToHashSet()), o.BatchSize, o.Seed);
        var sampled = clock.Elapsed.TotalSeconds;
        var scored = TeacherNll.Score(_teacher!, tokenizer, ids, completions, o.BatchSize);
        var units = prompts.Select((p, i) => new CompletionScore(p.Window, scored[i].Tokens, scored[i].Nll)).ToList();
        Directory.CreateDirectory(_outputDir);
        AtomicFile.WriteAllText(Path.Combine(_outputDir, CompletionScore.FileName), CompletionScore.ToJsonl(units));
        var tokens = units.Sum(u => (long)u.Tokens);
        var perToken = units.Sum(u => u.Nll) / tokens;
        _reporter.Info($"teacher_nll: {units.Count} prompts of {windows.Count} windows in {string.Join(", ", files)}; {tokens} sampled tokens " +
                       $"(temperature {o.Temperature}, seed {o.Seed}) in {sampled:F1} s; teacher NLL {perToken:F4} nats/token");
        return
        [
            new EvalResult(TeacherNllTask, "nll_per_token", perToken, null, units.Count),
            new EvalResult(TeacherNllTask, "completion_length", (double)tokens / units.Count, null, units.Count),
        ];
    }

    // The greedy continuation of sample_prompt, written to sample.txt (prompt, then the generated text).
    private void WriteSample(TransformerDecoder model, ITokenizer tokenizer, string prompt)
    {
        var ids = tokenizer.Encode(prompt, addBos: tokenizer.BosId >= 0, addEos: false);
        var room = model.MaxSeqLen - ids.Count;
        if (room < 1) throw new ConfigException(_config.Find("sample_prompt")!.Location, "sample_prompt", $"the prompt is {ids.Count} tokens; the model's max_seq_len is {model.MaxSeqLen}");
        var options = new GenerationOptions { MaxNewTokens = Math.Min(_sampleTokens, room), Temperature = 0, StopTokens = tokenizer.EosId >= 0 ? [tokenizer.EosId] : [] };
        var result = Generation.Generate(model, ids, options);
        var text = tokenizer.Decode([.. result.GeneratedTokens]);
        Directory.CreateDirectory(_outputDir);
        AtomicFile.WriteAllText(Path.Combine(_outputDir, SampleFileName), prompt + text);
        _reporter.Info($"sample ({result.GeneratedTokens.Count} tokens, greedy): {text.ReplaceLineEndings(" ")}");
    }

    /// <summary>The file <c>sample_prompt</c>'s continuation is written to.</summary>
    public const string SampleFileName = "sample.txt";

    private static torch.ScalarType ParseDtype(SharpTuneConfig config, string key) => config.Get(key, "float32") switch
    {
        "float32" or "fp32" => torch.ScalarType.Float32,
        "bfloat16" or "bf16" => torch.ScalarType.BFloat16,
        var other => throw new ConfigException(config.Find(key)!.Location, key, $"expected float32 or bfloat16, got '{other}'"),
    };

    // Scoring progress to the reporter; also where a long scoring run notices Ctrl-C.
    private sealed class ReporterProgress(IRecipeReporter reporter, CancellationToken cancellationToken) : IProgress<EvalProgress>
    {
        public void Report(EvalProgress value)
        {
            cancellationToken.ThrowIfCancellationRequested();
            reporter.Progress(value.Task, value.Done, value.Total);
        }
    }
}
