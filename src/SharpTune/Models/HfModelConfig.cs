// Hugging Face config.json for model_type "llama" and "qwen2" (transformers LlamaConfig / Qwen2Config): parsed
// strictly (unknown keys and unsupported values are errors naming the field, never ignored) and written back for
// checkpoint folders.
using System.Text.Json;
using System.Text.Json.Nodes;
using SharpTune.Modules;

namespace SharpTune.Models;

/// <summary>The architecture fields of an HF Llama/Qwen2 <c>config.json</c>.</summary>
public sealed record HfModelConfig
{
    /// <summary><c>model_type</c>: llama or qwen2.</summary>
    public required string ModelType { get; init; }
    /// <summary><c>vocab_size</c>.</summary>
    public required int VocabSize { get; init; }
    /// <summary><c>hidden_size</c>.</summary>
    public required int HiddenSize { get; init; }
    /// <summary><c>intermediate_size</c>.</summary>
    public required int IntermediateSize { get; init; }
    /// <summary><c>num_hidden_layers</c>.</summary>
    public required int NumHiddenLayers { get; init; }
    /// <summary><c>num_attention_heads</c>.</summary>
    public required int NumAttentionHeads { get; init; }
    /// <summary><c>num_key_value_heads</c> (defaults to num_attention_heads).</summary>
    public required int NumKeyValueHeads { get; init; }
    /// <summary><c>head_dim</c>, or null for hidden_size / num_attention_heads.</summary>
    public int? HeadDim { get; init; }
    /// <summary><c>max_position_embeddings</c>.</summary>
    public required int MaxPositionEmbeddings { get; init; }
    /// <summary><c>rms_norm_eps</c>.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary><c>rope_theta</c>.</summary>
    public double RopeTheta { get; init; } = 10_000;
    /// <summary><c>rope_scaling</c> with rope_type llama3, or null.</summary>
    public Llama3RopeScaling? RopeScaling { get; init; }
    /// <summary><c>tie_word_embeddings</c>.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>q/k/v bias: <c>attention_bias</c> for llama, always true for qwen2.</summary>
    public bool AttentionBias { get; init; }
    /// <summary><c>bos_token_id</c>.</summary>
    public int? BosTokenId { get; init; }
    /// <summary><c>eos_token_id</c> (one or several).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary><c>torch_dtype</c>, e.g. bfloat16.</summary>
    public string? TorchDtype { get; init; }

    // Keys that do not change the forward pass (or are checked below) and are accepted.
    private static readonly HashSet<string> Harmless =
    [
        "architectures", "transformers_version", "initializer_range", "use_cache", "_name_or_path", "pad_token_id",
        "torch_dtype", "dtype", "bos_token_id", "eos_token_id", "model_type", "vocab_size", "hidden_size",
        "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "tie_word_embeddings",
        "attention_bias", "attention_dropout", "hidden_act", "mlp_bias", "pretraining_tp", "use_sliding_window",
        "sliding_window", "max_window_layers", "layer_types", "rope_parameters", "unsloth_version", "is_decoder",
    ];

    /// <summary>Reads and validates <paramref name="path"/>.</summary>
    public static HfModelConfig Parse(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"config.json not found: {path}", path);
        return ParseJson(File.ReadAllText(path), path);
    }

    /// <summary>Parses config.json text; <paramref name="source"/> names the file in errors.</summary>
    public static HfModelConfig ParseJson(string json, string source = "config.json")
    {
        JsonObject o;
        try { o = JsonNode.Parse(json)?.AsObject() ?? throw new InvalidDataException($"{source}: not a JSON object"); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: invalid JSON: {e.Message}", e); }
        string Err(string key, string msg) => $"{source}: '{key}' {msg}";
        foreach (var (key, _) in o)
            if (!Harmless.Contains(key)) throw new NotSupportedException(Err(key, "is not supported by SharpTune's Llama/Qwen2 decoder (refusing to ignore it)"));

        int ReqInt(string key) => o[key] is JsonValue v && v.TryGetValue<int>(out var i) ? i
            : throw new InvalidDataException(Err(key, o.ContainsKey(key) ? $"must be an integer, got {o[key]?.ToJsonString()}" : "is missing"));
        int? OptInt(string key) => o[key] is null ? null : o[key] is JsonValue v && v.TryGetValue<int>(out var i) ? i
            : throw new InvalidDataException(Err(key, $"must be an integer, got {o[key]?.ToJsonString()}"));
        double OptDouble(string key, double dflt) => o[key] is null ? dflt : o[key] is JsonValue v && v.TryGetValue<double>(out var d) ? d
            : throw new InvalidDataException(Err(key, $"must be a number, got {o[key]?.ToJsonString()}"));
        bool OptBool(string key, bool dflt) => o[key] is null ? dflt : o[key] is JsonValue v && v.TryGetValue<bool>(out var b) ? b
            : throw new InvalidDataException(Err(key, $"must be true/false, got {o[key]?.ToJsonString()}"));
        string? OptString(string key) => o[key] is null ? null : o[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s
            : throw new InvalidDataException(Err(key, $"must be a string, got {o[key]?.ToJsonString()}"));

        var modelType = OptString("model_type") ?? throw new InvalidDataException(Err("model_type", "is missing"));
        if (modelType is not ("llama" or "qwen2"))
            throw new NotSupportedException(Err("model_type", $"is '{modelType}'; supported: llama, qwen2"));
        var act = OptString("hidden_act") ?? "silu";
        if (act != "silu") throw new NotSupportedException(Err("hidden_act", $"is '{act}'; only silu (SwiGLU) is supported"));
        if (OptBool("mlp_bias", false)) throw new NotSupportedException(Err("mlp_bias", "is true; MLP bias is not supported"));
        if (OptInt("pretraining_tp") is { } tp && tp != 1) throw new NotSupportedException(Err("pretraining_tp", $"is {tp}; only 1 is supported"));
        if (OptDouble("attention_dropout", 0) != 0) throw new NotSupportedException(Err("attention_dropout", "is non-zero; attention dropout is not supported"));
        if (OptBool("use_sliding_window", false))
            throw new NotSupportedException(Err("use_sliding_window", "is true; sliding-window attention is not supported"));
        if (o["layer_types"] is JsonArray lt && lt.Any(t => t?.ToJsonString() != "\"full_attention\""))
            throw new NotSupportedException(Err("layer_types", "contains a non full_attention layer; sliding-window attention is not supported"));
        if (o["rope_parameters"] is not null)
            throw new NotSupportedException(Err("rope_parameters", "is not supported; use rope_theta and rope_scaling"));

        // Sizes are checked here, against the file's own key names, so a bad config.json is named with its key
        // (DecoderArgs.Validate would only say "NumHeads must be positive").
        int Positive(string key, int value) => value > 0 ? value
            : throw new InvalidDataException(Err(key, $"must be a positive integer, got {value}"));
        var heads = Positive("num_attention_heads", ReqInt("num_attention_heads"));
        var hidden = Positive("hidden_size", ReqInt("hidden_size"));
        var kvHeads = Positive("num_key_value_heads", OptInt("num_key_value_heads") ?? heads);
        var headDim = OptInt("head_dim") is { } hd ? Positive("head_dim", hd) : (int?)null;
        if (heads % kvHeads != 0)
            throw new InvalidDataException(Err("num_key_value_heads", $"must divide num_attention_heads ({heads}), got {kvHeads}"));
        if (headDim is null && hidden % heads != 0)
            throw new InvalidDataException(Err("hidden_size", $"must be a multiple of num_attention_heads ({heads}) when head_dim is absent, got {hidden}"));
        return new HfModelConfig
        {
            ModelType = modelType,
            VocabSize = Positive("vocab_size", ReqInt("vocab_size")),
            HiddenSize = hidden,
            IntermediateSize = Positive("intermediate_size", ReqInt("intermediate_size")),
            NumHiddenLayers = Positive("num_hidden_layers", ReqInt("num_hidden_layers")),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            MaxPositionEmbeddings = Positive("max_position_embeddings", ReqInt("max_position_embeddings")),
            RmsNormEps = OptDouble("rms_norm_eps", 1e-6),
            RopeTheta = OptDouble("rope_theta", 10_000),
            RopeScaling = ParseRopeScaling(o["rope_scaling"], source),
            TieWordEmbeddings = OptBool("tie_word_embeddings", false),
            AttentionBias = modelType == "qwen2" || OptBool("attention_bias", false),
            BosTokenId = OptInt("bos_token_id"),
            EosTokenIds = ParseIds(o["eos_token_id"]) ?? throw new InvalidDataException(Err("eos_token_id", $"must be an integer or a list of integers, got {o["eos_token_id"]?.ToJsonString()}")),
            TorchDtype = OptString("torch_dtype") ?? OptString("dtype"),
        };
    }

    private static List<int>? ParseIds(JsonNode? node)
    {
        static int? One(JsonNode? n) => n is JsonValue v && v.TryGetValue<int>(out var i) ? i : null;
        if (node is null) return [];
        if (node is JsonArray a)
        {
            var ids = a.Select(One).ToList();
            return ids.Any(i => i is null) ? null : ids.Select(i => i!.Value).ToList();
        }
        return One(node) is { } single ? [single] : null;
    }

    private static Llama3RopeScaling? ParseRopeScaling(JsonNode? node, string source)
    {
        if (node is null) return null;
        if (node is not JsonObject rs) throw new InvalidDataException($"{source}: 'rope_scaling' must be an object or null");
        var type = (rs["rope_type"] ?? rs["type"])?.GetValue<string>();
        if (type != "llama3")
            throw new NotSupportedException($"{source}: 'rope_scaling.rope_type' is '{type ?? "(missing)"}'; only llama3 is supported");
        var allowed = new HashSet<string> { "rope_type", "type", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings" };
        foreach (var (k, _) in rs)
            if (!allowed.Contains(k)) throw new NotSupportedException($"{source}: 'rope_scaling.{k}' is not supported for rope_type llama3");
        double Req(string k) => rs[k]?.GetValue<double>() ?? throw new InvalidDataException($"{source}: 'rope_scaling.{k}' is missing");
        return new Llama3RopeScaling(Req("factor"), Req("low_freq_factor"), Req("high_freq_factor"), (int)Req("original_max_position_embeddings"));
    }

    /// <summary>The decoder architecture this config describes.</summary>
    public DecoderArgs ToDecoderArgs() => new()
    {
        VocabSize = VocabSize, NumLayers = NumHiddenLayers, NumHeads = NumAttentionHeads, NumKvHeads = NumKeyValueHeads,
        EmbedDim = HiddenSize, IntermediateDim = IntermediateSize, MaxSeqLen = MaxPositionEmbeddings, HeadDim = HeadDim,
        NormEps = RmsNormEps, RopeBase = RopeTheta, RopeScaling = RopeScaling, TieEmbeddings = TieWordEmbeddings, QkvBias = AttentionBias,
    };

    /// <summary>The config for a decoder architecture (inverse of <see cref="ToDecoderArgs"/>).</summary>
    public static HfModelConfig FromDecoderArgs(DecoderArgs a, string modelType = "llama", int? bosTokenId = null, IReadOnlyList<int>? eosTokenIds = null, string? torchDtype = null)
    {
        if (modelType == "qwen2" && !a.QkvBias) throw new ArgumentException("qwen2 models always have q/k/v bias");
        return new HfModelConfig
        {
            ModelType = modelType, VocabSize = a.VocabSize, HiddenSize = a.EmbedDim, IntermediateSize = a.IntermediateDim,
            NumHiddenLayers = a.NumLayers, NumAttentionHeads = a.NumHeads, NumKeyValueHeads = a.NumKvHeads, HeadDim = a.HeadDim,
            MaxPositionEmbeddings = a.MaxSeqLen, RmsNormEps = a.NormEps, RopeTheta = a.RopeBase, RopeScaling = a.RopeScaling,
            TieWordEmbeddings = a.TieEmbeddings, AttentionBias = a.QkvBias, BosTokenId = bosTokenId, EosTokenIds = eosTokenIds ?? [], TorchDtype = torchDtype,
        };
    }

    /// <summary>config.json text that transformers and <see cref="ParseJson"/> both read.</summary>
    public string ToJson()
    {
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray(ModelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"),
            ["model_type"] = ModelType,
            ["vocab_size"] = VocabSize,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["hidden_act"] = "silu",
            ["tie_word_embeddings"] = TieWordEmbeddings,
        };
        if (HeadDim is { } hd) o["head_dim"] = hd;
        if (ModelType == "llama") { o["attention_bias"] = AttentionBias; o["mlp_bias"] = false; }
        else o["use_sliding_window"] = false;
        o["rope_scaling"] = RopeScaling is null ? null : new JsonObject
        {
            ["rope_type"] = "llama3",
            ["factor"] = RopeScaling.Factor,
            ["low_freq_factor"] = RopeScaling.LowFreqFactor,
            ["high_freq_factor"] = RopeScaling.HighFreqFactor,
            ["original_max_position_embeddings"] = RopeScaling.OriginalMaxPositionEmbeddings,
        };
        if (BosTokenId is { } bos) o["bos_token_id"] = bos;
        if (EosTokenIds.Count == 1) o["eos_token_id"] = EosTokenIds[0];
        else if (EosTokenIds.Count > 1) o["eos_token_id"] = new JsonArray(EosTokenIds.Select(e => (JsonNode)e).ToArray());
        if (TorchDtype is not null) o["torch_dtype"] = TorchDtype;
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}
