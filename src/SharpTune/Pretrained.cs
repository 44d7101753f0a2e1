// The one-call entry point for the common jobs, in the spirit of transformers' from_pretrained: load a Hugging Face
// model folder (config.json + safetensors + tokenizer + generation_config.json), generate or stream text, score
// log-likelihoods. It only assembles the library's parts (TokenizerLoader, HfModels, HfCheckpointer, Generation,
// LoglikelihoodScorer) the way the generate and evaluate recipes do; nothing here has its own numerics.
// Reference: transformers AutoModelForCausalLM.from_pretrained / generate / GenerationConfig (eos_token_id).
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Eval;
using SharpTune.Models;
using SharpTune.Modules;
using SharpTune.Native;
using SharpTune.Tokenizers;
using TorchSharp;

namespace SharpTune;

/// <summary>
/// A Hugging Face model folder loaded in one call: the model, its tokenizer and the stop tokens of its generation
/// config. Dispose it to free the weights.
/// </summary>
/// <example>
/// Greedy story from stories260K converted with <c>sharptune convert llama2c</c>:
/// <code>
/// using var lm = Pretrained.Load("/tmp/stories260K");
/// Console.WriteLine(lm.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 64 }));
/// lm.Generate("Once upon a time", onText: Console.Write);               // streamed piece by piece
/// double ll = lm.LogLikelihood("Once upon a time", " there was a girl"); // sum of log p(continuation | context)
/// </code>
/// </example>
public sealed class Pretrained : IDisposable
{
    private Pretrained(string folder, TransformerDecoder model, IChatTokenizer tokenizer, IReadOnlyCollection<int> stopTokens)
    {
        Folder = folder;
        Model = model;
        Tokenizer = tokenizer;
        StopTokens = stopTokens;
    }

    /// <summary>The folder it was loaded from.</summary>
    public string Folder { get; }

    /// <summary>The decoder, in eval mode, on <see cref="PretrainedOptions.Device"/>.</summary>
    public TransformerDecoder Model { get; }

    /// <summary>The folder's tokenizer (tokenizer.json, tokenizer.model ...).</summary>
    public IChatTokenizer Tokenizer { get; }

    /// <summary>Ids that end generation: the tokenizer's stop tokens and generation_config.json's eos_token_id.</summary>
    public IReadOnlyCollection<int> StopTokens { get; }

    /// <summary>
    /// Loads model, tokenizer and generation config from <paramref name="folder"/> (as written by
    /// <c>sharptune download</c>, <c>sharptune convert llama2c</c> or a recipe's epoch folder).
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="NotSupportedException"><see cref="PretrainedOptions.Device"/> is CUDA and this program has no CUDA natives or GPU.</exception>
    public static Pretrained Load(string folder, PretrainedOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        options ??= new PretrainedOptions();
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"model folder not found: {folder}");
        TorchRuntime.EnsureLoaded();
        var device = ResolveDevice(options.Device);
        var tokenizer = TokenizerLoader.Load(folder);
        // Built on the device (Module.to fails on TransformerDecoder's read-only module properties), then loaded into.
        var model = HfModels.FromConfig(HfModelConfig.Parse(Path.Combine(folder, "config.json")), device: device, dtype: options.DType);
        try
        {
            HfCheckpointer.LoadInto(model, folder, strict: true, convertDtype: true);
            model.eval();
        }
        catch
        {
            model.Dispose();
            throw;
        }
        var stops = tokenizer.StopTokens.Concat(GenerationConfigStops(folder)).ToHashSet();
        return new Pretrained(folder, model, tokenizer, stops);
    }

    /// <summary>
    /// Continues <paramref name="prompt"/> (empty: from BOS) and returns the prompt and continuation as text, without
    /// the stop token. <paramref name="onText"/> receives the new text as it is generated (streaming). Options default
    /// to greedy decoding of up to 256 tokens; the model's stop tokens are always added to theirs.
    /// </summary>
    /// <example><code>string story = lm.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 100, Temperature = 0.8, TopK = 40, Seed = 1 });</code></example>
    public string Generate(string prompt, GenerationOptions? options = null, Action<string>? onText = null) =>
        Tokenizer.Decode(GenerateTokens(prompt, options, onText).Tokens, skipSpecialTokens: true);

    /// <summary>As <see cref="Generate"/>, returning the ids and timings (<see cref="GenerationResult"/>) as well.</summary>
    public (IReadOnlyList<int> Tokens, GenerationResult Result) GenerateTokens(string prompt, GenerationOptions? options = null,
        Action<string>? onText = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        options ??= new GenerationOptions();
        var ids = prompt.Length == 0 ? (IReadOnlyList<int>)[] : Tokenizer.Encode(prompt, addBos: true, addEos: false);
        options = options with
        {
            StopTokens = options.StopTokens.Concat(StopTokens).ToHashSet(),
            BosId = options.BosId ?? (Tokenizer.BosId >= 0 ? Tokenizer.BosId : null),
        };
        var stream = onText is null ? null : new TextStream(Tokenizer, ids, options.StopTokens, onText);
        var result = Generation.Generate(Model, ids, options, stream is null ? null : stream.Add);
        stream?.Flush();
        var generated = result.StoppedAtStopToken ? result.GeneratedTokens.Take(result.GeneratedTokens.Count - 1) : result.GeneratedTokens;
        // Decoding prompt and continuation together keeps SentencePiece's word-boundary spaces right.
        return ([.. result.PromptTokens.Concat(generated)], result);
    }

    /// <summary>
    /// log p(<paramref name="continuation"/> | <paramref name="context"/>) under the model, summed over the
    /// continuation's tokens, with lm-evaluation-harness's tokenisation rules (a trailing space of the context moves
    /// to the continuation).
    /// </summary>
    public double LogLikelihood(string context, string continuation) => Score([new(context, continuation)])[0].LogLikelihood;

    /// <summary>Scores many (context, continuation) pairs in batches; results in request order.</summary>
    /// <example><code>var r = lm.Score([new("The sky is", " blue"), new("The sky is", " green")]); // r[i].LogLikelihood, r[i].IsGreedy</code></example>
    public IReadOnlyList<LoglikelihoodResult> Score(IReadOnlyList<LoglikelihoodRequest> requests, int batchSize = 8,
        IProgress<ScoringProgress>? progress = null) =>
        new LoglikelihoodScorer(new DecoderCausalLm(Model), Tokenizer, batchSize).Score(requests, progress);

    /// <inheritdoc/>
    public void Dispose() => Model.Dispose();

    /// <summary>
    /// The ids generation_config.json lists as <c>eos_token_id</c> (a number or a list), on which transformers'
    /// generate stops; none when the file is absent.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not valid JSON or holds a null id.</exception>
    public static IReadOnlyList<int> GenerationConfigStops(string folder)
    {
        var path = Path.Combine(folder, "generation_config.json");
        if (!File.Exists(path)) return [];
        JsonNode? eos;
        try { eos = JsonNode.Parse(File.ReadAllText(path))?["eos_token_id"]; }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e); }
        return eos switch
        {
            null => [],
            JsonArray a => a.Select(x => x?.GetValue<int>() ?? throw new InvalidDataException($"{path}: eos_token_id holds a null")).ToArray(),
            _ => [eos.GetValue<int>()],
        };
    }

    /// <summary><c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>; CUDA without CUDA natives or a GPU says which package gives them.</summary>
    private static torch.Device ResolveDevice(string device)
    {
        var d = device.Trim().ToLowerInvariant();
        if (d == "cpu") return torch.CPU;
        if (d != "cuda" && !d.StartsWith("cuda:", StringComparison.Ordinal))
            throw new ArgumentException($"device must be 'cpu' or 'cuda' (or 'cuda:N'), got '{device}'", nameof(device));
        if (!torch.cuda.is_available()) throw new NotSupportedException(LibTorchNatives.CudaUnavailable(device, LibTorchNatives.Find()));
        return new torch.Device(d);
    }

    // Turns streamed ids into text pieces. A piece is the growth of the decoded continuation (SentencePiece puts word
    // spaces on the following token, so ids cannot be decoded one by one); it waits while the text ends in an
    // incomplete UTF-8 sequence (U+FFFD from byte-fallback tokens) and never emits a stop token.
    private sealed class TextStream(ITokenizer tokenizer, IReadOnlyList<int> prompt, IReadOnlyCollection<int> stops, Action<string> onText)
    {
        private readonly List<int> _ids = [.. prompt];
        private readonly int _promptCount = prompt.Count;
        private int _emitted = -1;

        public void Add(int id)
        {
            if (stops.Contains(id)) return;
            _ids.Add(id);
            Emit(final: false);
        }

        public void Flush() => Emit(final: true);

        private void Emit(bool final)
        {
            if (_emitted < 0) _emitted = tokenizer.Decode(_ids.Take(_promptCount), skipSpecialTokens: true).Length;
            var text = tokenizer.Decode(_ids, skipSpecialTokens: true);
            if (!final && text.EndsWith('\uFFFD')) return;
            if (text.Length > _emitted) onText(text[_emitted..]);
            _emitted = Math.Max(_emitted, text.Length);
        }
    }
}

/// <summary>How <see cref="Pretrained.Load"/> places the model.</summary>
public sealed record PretrainedOptions
{
    /// <summary><c>cpu</c> (default), <c>cuda</c> or <c>cuda:N</c> (needs the SharpTune.Cuda package and a GPU).</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Parameter dtype: float32 (default) or bfloat16.</summary>
    public torch.ScalarType DType { get; init; } = torch.ScalarType.Float32;
}
