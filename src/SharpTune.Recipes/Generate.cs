// Recipe `generate`: loads an HF checkpoint folder and its tokenizer, generates from a prompt with the KV cache
// (greedy at temperature 0, else temperature / top-k / top-p sampling from a seeded generator), prints the text and
// then the speed. An empty prompt starts from BOS alone. Generation stops at max_new_tokens, at the model's
// max_seq_len, or at a stop token: the tokenizer's stop tokens, the ids generation_config.json lists as eos_token_id
// (as transformers' generate does) and any `stop_tokens` given.
// References: torchtune recipes/generate.py and recipes/configs/generation.yaml; transformers GenerationConfig.
using SharpTune.Checkpointing;
using SharpTune.Config;
using SharpTune.Eval;
using SharpTune.Models;
using SharpTune.Modules;
using SharpTune.Native;
using SharpTune.Tokenizers;
using TorchSharp;

namespace SharpTune.Recipes;

/// <summary>Generates text from a checkpoint.</summary>
[Recipe("generate", Description = "Generate text from an HF checkpoint with the KV cache (greedy or top-k/top-p sampling)")]
[RecipeKey("checkpoint_dir", typeof(string), Description = "HF model folder (config.json, safetensors, tokenizer)")]
[RecipeKey("tokenizer", typeof(object), Description = "tokenizer path or component; null loads it from checkpoint_dir")]
[RecipeKey("prompt", typeof(string), Description = "text to continue; empty starts from BOS")]
[RecipeKey("chat", typeof(bool), Description = "format the prompt as a user message of the model's chat format")]
[RecipeKey("max_new_tokens", typeof(int), Description = "tokens to generate at most")]
[RecipeKey("temperature", typeof(double), Description = "0 = greedy")]
[RecipeKey("top_k", typeof(int?), Description = "sample among the k most likely tokens (null = all)")]
[RecipeKey("top_p", typeof(double?), Description = "nucleus sampling mass (null = off)")]
[RecipeKey("seed", typeof(int), Description = "seed of the sampling generator")]
[RecipeKey("stop_tokens", typeof(List<int>), Description = "extra ids that end generation")]
[RecipeKey("dtype", typeof(string), Description = "float32 or bfloat16")]
[RecipeKey("threads", typeof(int?), Minimum = 1, Description = "intra-op threads; null keeps libtorch's default")]
public sealed class Generate : IRecipe
{
    private readonly SharpTuneConfig _config;
    private readonly IRecipeReporter _reporter;
    private readonly string _checkpointDir;
    private readonly string _prompt;
    private readonly bool _chat;
    private readonly GenerationOptions _options;
    private readonly List<int> _extraStops;
    private readonly torch.ScalarType _dtype;
    private readonly int? _threads;
    private TransformerDecoder? _model;
    private IChatTokenizer? _tokenizer;

    /// <summary>Reads and checks the config; nothing heavy happens here.</summary>
    public Generate(SharpTuneConfig config, IRecipeReporter reporter)
    {
        _config = config;
        _reporter = reporter;
        _checkpointDir = config.Get<string?>("checkpoint_dir", null) ?? throw new ConfigException(
            config.Find("checkpoint_dir")?.Location ?? new SourceLocation(config.SourcePath ?? "config", 0, 0), "checkpoint_dir",
            "set checkpoint_dir=<HF model folder> (e.g. one written by `sharptune convert llama2c`)");
        _prompt = config.Get("prompt", "");
        _chat = config.Get("chat", false);
        _extraStops = config.Get("stop_tokens", new List<int>());
        _threads = config.Get<int?>("threads", null);
        _dtype = config.Get("dtype", "float32") switch
        {
            "float32" or "fp32" => torch.ScalarType.Float32,
            "bfloat16" or "bf16" => torch.ScalarType.BFloat16,
            var other => throw new ConfigException(config.Find("dtype")!.Location, "dtype", $"expected float32 or bfloat16, got '{other}'"),
        };
        var seed = config.Get("seed", 0);
        _options = new GenerationOptions
        {
            MaxNewTokens = config.Get("max_new_tokens", 256),
            Temperature = config.Get("temperature", 0.0),
            TopK = config.Get<int?>("top_k", null),
            TopP = config.Get<double?>("top_p", null),
            Seed = unchecked((ulong)seed),
        };
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
        if (_threads is { } t) TorchRuntime.SetThreads(t);
        if (!Directory.Exists(_checkpointDir)) throw new DirectoryNotFoundException($"checkpoint_dir not found: {_checkpointDir}");
        var node = _config.Find("tokenizer");
        _tokenizer = node is null || node.Kind == ConfigNodeKind.Null ? TokenizerLoader.Load(_checkpointDir)
            : node.Kind == ConfigNodeKind.Scalar ? TokenizerLoader.Load(node.Text!)
            : _config.Instantiate<IChatTokenizer>("tokenizer");
        _model = HfModels.FromConfig(HfModelConfig.Parse(Path.Combine(_checkpointDir, "config.json")), dtype: _dtype);
        HfCheckpointer.LoadInto(_model, _checkpointDir, strict: true, convertDtype: true);
    }

    /// <inheritdoc/>
    public void Train(CancellationToken cancellationToken)
    {
        var tokenizer = _tokenizer!;
        IReadOnlyList<int> prompt = _prompt.Length == 0 ? []
            : _chat ? tokenizer.TokenizeMessages([new Message("user", _prompt), new Message("assistant", "", Eot: false)], addEos: false).Tokens
            : tokenizer.Encode(_prompt, addBos: true, addEos: false);
        var stops = tokenizer.StopTokens.Concat(Pretrained.GenerationConfigStops(_checkpointDir)).Concat(_extraStops).ToHashSet();
        var options = _options with { StopTokens = stops, BosId = tokenizer.BosId >= 0 ? tokenizer.BosId : null };
        cancellationToken.ThrowIfCancellationRequested();
        // Tokens are printed as they come: the text of prompt + generated so far is decoded again after each token and
        // the part not yet shown is written (decoding them together keeps SentencePiece's word-boundary spaces right;
        // a piece that is not yet a whole character waits for the next token). A stop token is not shown.
        var promptIds = prompt.Count > 0 ? prompt.ToList() : options.BosId is { } bosId ? [bosId] : new List<int>();
        var sofar = new List<int>(promptIds);
        var shown = "";
        void Show(string text)
        {
            if (!text.StartsWith(shown, StringComparison.Ordinal) || text.EndsWith('\uFFFD')) return;
            var fresh = text[shown.Length..];
            if (fresh.Length > 0 && _reporter.Stream(fresh)) shown = text;
        }
        Show(tokenizer.Decode(promptIds, skipSpecialTokens: true));
        var result = Generation.Generate(_model!, prompt, options, token =>
        {
            if (stops.Contains(token)) return;
            sofar.Add(token);
            Show(tokenizer.Decode(sofar, skipSpecialTokens: true));
        });
        var generated = result.StoppedAtStopToken ? result.GeneratedTokens.Take(result.GeneratedTokens.Count - 1) : result.GeneratedTokens;
        var full = tokenizer.Decode(result.PromptTokens.Concat(generated), skipSpecialTokens: true);
        if (shown.Length == 0) _reporter.Info(full); // the reporter does not stream: the whole text at once
        else if (full.StartsWith(shown, StringComparison.Ordinal)) _reporter.Stream(full[shown.Length..] + "\n");
        else _reporter.Info("\n" + full); // the streamed text was revised by later tokens: print the final text whole
        var seconds = (result.PrefillTime + result.DecodeTime).TotalSeconds;
        _reporter.Info($"{result.GeneratedTokens.Count} tokens in {seconds:F2} s: {result.TokensPerSecond:F1} tokens/s " +
            $"(prompt {result.PromptTokens.Count} tokens, prefill {result.PrefillTime.TotalMilliseconds:F0} ms" +
            (result.StoppedAtStopToken ? $", stopped at token {result.GeneratedTokens[^1]})" : ")"));
    }

    /// <inheritdoc/>
    public void Cleanup()
    {
        _model?.Dispose();
        _model = null;
    }
}
