// A Llama-family decoder-only transformer laid out like HF's LlamaForCausalLM / Qwen2ForCausalLM, so that
// state_dict() keys equal HF keys (model.embed_tokens.weight, model.layers.N..., model.norm.weight, lm_head.weight
// when untied). Output modes follow torchtune's TransformerDecoder: full logits, logits in N chunks along the
// sequence (for chunked losses), or final hidden states only (for fused output-projection losses). The decoder owns
// these forward variants and activation checkpointing (CheckpointActivations), so recipes, evaluation and generation
// all run the same forward.
using SharpTune.Native;
using TorchSharp.Modules;
using TorchSharp.Utils;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>The inner <c>model.</c> stack: token embedding, decoder layers, final norm.</summary>
public sealed class DecoderStack : nn.Module
{
    [ComponentName(Name = "embed_tokens")] private readonly TokenEmbedding _embedTokens;
    [ComponentName(Name = "layers")] private readonly ModuleList<DecoderLayer> _layers;
    private readonly DecoderLayer[] _layerArray;
    [ComponentName(Name = "norm")] private readonly RmsNorm _norm;

    /// <summary>Composes the stack.</summary>
    public DecoderStack(TokenEmbedding embedTokens, IEnumerable<DecoderLayer> layers, RmsNorm norm) : base(nameof(DecoderStack))
    {
        _embedTokens = embedTokens;
        _layerArray = layers.ToArray();
        _layers = new ModuleList<DecoderLayer>(_layerArray);
        _norm = norm;
        RegisterComponents();
    }

    /// <summary>Token embedding [v, d].</summary>
    public TokenEmbedding EmbedTokens => _embedTokens;

    /// <summary>Decoder layers.</summary>
    public IReadOnlyList<DecoderLayer> Layers => _layerArray;

    /// <summary>Final norm.</summary>
    public RmsNorm Norm => _norm;
}

/// <summary>Decoder-only transformer with tied or untied output, KV cache and three output modes.</summary>
/// <remarks>
/// Shapes: <c>b</c> batch, <c>s</c> sequence, <c>s_kv</c> attended length, <c>d</c> model dim, <c>v</c> vocab.
/// Logits are returned in the model's dtype.
/// </remarks>
public sealed class TransformerDecoder : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "model")] private readonly DecoderStack _model;
    [ComponentName(Name = "lm_head")] private readonly nn.Module<Tensor, Tensor>? _lmHead;
    private readonly RotaryEmbedding _rope;
    private long _cachePos;

    /// <summary>
    /// Composes the decoder. Pass <paramref name="lmHead"/> null to tie the output to the token embedding (the one
    /// embedding Parameter is then used for both; nothing is copied).
    /// </summary>
    public TransformerDecoder(DecoderArgs args, DecoderStack model, nn.Module<Tensor, Tensor>? lmHead) : base(nameof(TransformerDecoder))
    {
        args.Validate();
        if (args.TieEmbeddings != (lmHead is null))
            throw new ArgumentException($"TieEmbeddings={args.TieEmbeddings} but lm_head was {(lmHead is null ? "not given" : "given")}");
        Args = args;
        _model = model;
        _lmHead = lmHead;
        _rope = new RotaryEmbedding(args.ResolvedHeadDim, args.RopeBase, args.RopeScaling);
        RegisterComponents();
    }

    /// <summary>The architecture.</summary>
    public DecoderArgs Args { get; }

    /// <summary>Vocabulary size v.</summary>
    public int VocabSize => Args.VocabSize;

    /// <summary>Maximum sequence length.</summary>
    public int MaxSeqLen => Args.MaxSeqLen;

    /// <summary>The <c>model.</c> stack.</summary>
    public DecoderStack Model => _model;

    /// <summary>The untied output head, or null when tied.</summary>
    public nn.Module<Tensor, Tensor>? LmHead => _lmHead;

    /// <summary>The RoPE helper (inverse frequencies).</summary>
    public RotaryEmbedding Rope => _rope;

    /// <summary>
    /// The output projection weight [v, d]: the embedding when tied, else <c>lm_head.weight</c>. When LoRA is applied
    /// to the output, this is the frozen base weight only; use <see cref="ApplyOutput"/> to include the adapter.
    /// </summary>
    public Tensor OutputWeight => _lmHead switch
    {
        null => _model.EmbedTokens.weight,
        Linear l => l.weight!,
        Peft.LoraLinear l => l.Weight,
        _ => throw new InvalidOperationException($"unsupported lm_head type {_lmHead.GetType().Name}"),
    };

    /// <summary>
    /// The output projection [v, d] as the model applies it, adapter included: <see cref="OutputWeight"/> when the output
    /// has no LoRA, else the adapter folded in with autograd (<see cref="Peft.LoraLinear.EffectiveWeight"/>, a new
    /// tensor per call). Fused-linear losses take this, so a LoRA output head trains through them.
    /// </summary>
    public Tensor TrainedOutputWeight() => _lmHead is Peft.LoraLinear l ? l.EffectiveWeight() : OutputWeight;

    /// <summary>
    /// Recompute each layer's activations in backward instead of keeping them (<see cref="ActivationCheckpointing"/>),
    /// in training mode with gradients enabled; evaluation, no_grad and cached decoding run the plain forward.
    /// </summary>
    public bool CheckpointActivations { get; set; }

    /// <summary>True after <see cref="SetupCaches(int, int)"/>.</summary>
    public bool CachesEnabled => _model.Layers.Count > 0 && _model.Layers[0].SelfAttn.Cache is not null;

    /// <summary>Positions already in the KV cache.</summary>
    public long CachePosition => _cachePos;

    /// <summary>Allocates KV caches for incremental decoding of up to <paramref name="maxSeqLen"/> positions.</summary>
    public void SetupCaches(int batchSize, int maxSeqLen)
    {
        if (maxSeqLen > MaxSeqLen) throw new ArgumentOutOfRangeException(nameof(maxSeqLen), maxSeqLen, $"exceeds the model's max_seq_len {MaxSeqLen}");
        var w = _model.EmbedTokens.weight;
        foreach (var layer in _model.Layers) layer.SelfAttn.SetupCache(batchSize, maxSeqLen, w.dtype, w.device);
        _cachePos = 0;
    }

    /// <summary>Installs one KV cache per layer (built over buffers the caller owns, as the fused decoding step does).</summary>
    internal void SetupCaches(IReadOnlyList<KvCache> caches)
    {
        if (caches.Count != _model.Layers.Count) throw new ArgumentException($"{caches.Count} caches for {_model.Layers.Count} layers");
        for (var i = 0; i < caches.Count; i++) _model.Layers[i].SelfAttn.SetupCache(caches[i]);
        _cachePos = 0;
    }

    /// <summary>Empties the KV caches (keeps their memory).</summary>
    public void ResetCaches()
    {
        foreach (var layer in _model.Layers) layer.SelfAttn.ResetCache();
        _cachePos = 0;
    }

    /// <summary>Frees the KV caches and returns to uncached (training) mode.</summary>
    public void RemoveCaches()
    {
        foreach (var layer in _model.Layers) layer.SelfAttn.RemoveCache();
        _cachePos = 0;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing) RemoveCaches(); // the caches are plain tensors, not registered buffers
        base.Dispose(disposing);
    }

    /// <summary>tokens [b, s] int64 -> logits [b, s, v] (causal attention, positions 0..s-1 or after the cache).</summary>
    public override Tensor forward(Tensor tokens) => Forward(tokens);

    /// <summary>
    /// tokens [b, s] int64 -> logits [b, s, v]. <paramref name="mask"/> [b, s, s_kv] bool (true = may attend) replaces
    /// the causal mask, e.g. block-causal for packed samples; <paramref name="inputPos"/> [b, s] int64 gives explicit
    /// RoPE positions (default: consecutive from the cache position).
    /// </summary>
    public Tensor Forward(Tensor tokens, Tensor? mask = null, Tensor? inputPos = null)
    {
        using var scope = NewDisposeScope();
        var h = ForwardHidden(tokens, mask, inputPos);
        return ApplyOutput(h).MoveToOuterDisposeScope();
    }

    /// <summary>Final normed hidden states [b, s, d], before the output projection (each layer checkpointed when
    /// <see cref="CheckpointActivations"/> applies).</summary>
    public Tensor ForwardHidden(Tensor tokens, Tensor? mask = null, Tensor? inputPos = null)
    {
        var checkpoint = CheckpointActivations && training && is_grad_enabled() && !CachesEnabled;
        // Checkpointed layers re-run their forward in backward, so cos/sin and the saved layer inputs must live as long
        // as the caller's (training-step) scope: no inner scope then.
        using var scope = checkpoint ? null : NewDisposeScope();
        if (tokens.dim() != 2) throw new ArgumentException($"tokens must be [b, s], got [{string.Join(", ", tokens.shape)}]");
        var b = tokens.shape[0];
        var s = tokens.shape[1];
        var cached = CachesEnabled;
        if (!cached && s > MaxSeqLen) throw new ArgumentException($"sequence length {s} exceeds max_seq_len {MaxSeqLen}");
        var pos = inputPos ?? Positions(_cachePos, s, b, tokens.device); // [b, s]
        if (pos.shape[0] != b || pos.shape[1] != s) throw new ArgumentException($"inputPos must be [b={b}, s={s}], got [{string.Join(", ", pos.shape)}]");
        var h = _model.EmbedTokens.call(tokens); // [b, s] -> [b, s, d]
        var (cos, sin) = _rope.CosSin(pos, h.dtype); // [b, 1, s, h_d]
        foreach (var layer in _model.Layers)
            h = checkpoint
                ? ActivationCheckpointing.Run(x => layer.Forward(x, cos, sin, mask), h, layer.parameters()) // [b, s, d]
                : layer.Forward(h, cos, sin, mask);                                                        // [b, s, d]
        if (cached) _cachePos += s;
        var normed = _model.Norm.call(h);
        return scope is null ? normed : normed.MoveToOuterDisposeScope();
    }

    // Positions start..start+s-1 for every row, [b, s] int64; arange's bounds as Scalars disposed here (a literal or a
    // cached one per start would leave one to the GC or grow with every decoded token).
    private static Tensor Positions(long start, long s, long b, Device device)
    {
        using var first = start.ToScalar();
        using var end = (start + s).ToScalar();
        return arange(first, end, Scalars.One, dtype: ScalarType.Int64, device: device).unsqueeze(0).expand(b, s);
    }

    /// <summary>
    /// Copies <paramref name="stateDict"/> (HF keys) into the model. Every missing/unexpected key and shape/dtype
    /// mismatch is reported in one error. Adapter weights (lora_A, lora_B, DoRA magnitude) may be missing so a base
    /// checkpoint loads into a LoRA model; missing DoRA magnitudes are then initialised from the loaded weights.
    /// </summary>
    public LoadReport LoadStateDict(IDictionary<string, Tensor> stateDict, bool strict = true, string sourceName = "state dict")
    {
        var result = StateDictLoader.Load(this, stateDict, strict, Peft.Adapters.IsAdapterKey, sourceName);
        // A DoRA magnitude absent from the source must describe the weights just loaded, not the random init.
        var missing = result.MissingKeys.ToHashSet();
        foreach (var (name, layer) in Peft.Adapters.LoraLayers(this))
            if (layer.UseDora && missing.Contains(name + ".lora_magnitude_vector")) layer.InitializeDoraMagnitude();
        return result;
    }

    /// <summary>Applies the output projection (including a LoRA adapter on lm_head) to hidden [.., d] -> [.., v].</summary>
    /// <remarks>
    /// The projection runs on a 2-D [tokens, d] view. On a 3-D sequence chunk (tensor_split along s) libtorch 2.10's
    /// CPU bf16 linear took a path 10-25x slower than the same matmul in 2-D: 3-4 GFLOP/s against 55-75 for
    /// [32, 896] x [896, 151936] with autograd on, and 7-23 against 64-177 for non-contiguous chunks without it
    /// (AVX-512 BF16 EPYC); on the Qwen2 0.5B LoRA step this projection was 75% of the bf16 step. fp32 is unaffected.
    /// reshape copies only a chunk that is not contiguous (b &gt; 1): b·s_i·d elements against b·s_i·d·v multiply-adds.
    /// </remarks>
    public Tensor ApplyOutput(Tensor hidden)
    {
        if (hidden.dim() == 2) return ApplyOutput2D(hidden);
        using var scope = NewDisposeScope();
        var flat = ApplyOutput2D(hidden.reshape(-1, hidden.shape[^1])); // [.., d] -> [tokens, d] -> [tokens, v]
        long[] shape = [.. hidden.shape[..^1], flat.shape[^1]];
        return flat.view(shape).MoveToOuterDisposeScope();                // [.., v]
    }

    /// <summary>
    /// The output projection of <paramref name="hidden"/> [b, s, d] in <paramref name="chunks"/> pieces along s
    /// (tensor_split semantics: the first s % n are one longer; torchtune's chunked_output), or whole when
    /// <paramref name="chunks"/> is 0: n x [b, s_i, v].
    /// </summary>
    public List<Tensor> ChunkedOutput(Tensor hidden, int chunks) =>
        chunks <= 0
            ? [ApplyOutput(hidden)]                                           // [b, s, v]
            : hidden.tensor_split(chunks, dim: 1).Select(ApplyOutput).ToList(); // n x [b, s_i, v]

    private Tensor ApplyOutput2D(Tensor hidden) =>
        _lmHead is null ? nn.functional.linear(hidden, _model.EmbedTokens.weight) : _lmHead.call(hidden);
}
