// LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) and DoRA (Liu et al. 2024, https://arxiv.org/abs/2402.09353)
// linear layers, following torchtune.modules.peft.LoRALinear/DoRALinear and PEFT's naming so that keys are
// `<name>.weight`, `<name>.bias`, `<name>.lora_A.weight`, `<name>.lora_B.weight`, `<name>.lora_magnitude_vector`.
using SharpTune.Native;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace SharpTune.Modules.Peft;

/// <summary>
/// y = W0 x + b + (alpha/r) B(A(dropout(x))), with A kaiming-uniform(a = sqrt 5) and B zero so that a fresh adapter
/// is the identity change. With DoRA the result is rescaled per output row by m / ||W0 + (alpha/r) B A||
/// (norm detached, as in the paper's section 4.3).
/// </summary>
/// <remarks>Shapes: <c>in</c> input features, <c>out</c> output features, <c>r</c> rank.</remarks>
public sealed class LoraLinear : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;
    [ComponentName(Name = "bias")] private readonly Parameter? _bias;
    [ComponentName(Name = "lora_A")] private readonly Linear _loraA;
    [ComponentName(Name = "lora_B")] private readonly Linear _loraB;
    [ComponentName(Name = "lora_magnitude_vector")] private readonly Parameter? _magnitude;
    [ComponentName(Name = "lora_dropout")] private readonly Dropout _dropout;

    /// <summary>Creates the layer with a frozen base (randomly initialised like nn.Linear until weights are loaded).</summary>
    public LoraLinear(long inFeatures, long outFeatures, int rank, double alpha, double dropout = 0.0, bool hasBias = false,
        bool useDora = false, Device? device = null, ScalarType dtype = ScalarType.Float32) : base(nameof(LoraLinear))
    {
        if (rank <= 0) throw new ArgumentOutOfRangeException(nameof(rank), rank, "lora_rank must be positive");
        if (dropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(dropout), dropout, "lora_dropout must be in [0, 1)");
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        Rank = rank;
        Alpha = alpha;
        UseDora = useDora;
        // Base initialised as nn.Linear would be (kaiming-uniform a = sqrt 5, bias U(+-1/sqrt(in))) until weights load.
        var w = empty(outFeatures, inFeatures, dtype: dtype, device: device);
        var bound = 1 / Math.Sqrt(inFeatures);
        using (no_grad())
        {
            nn.init.kaiming_uniform_(w, a: Math.Sqrt(5));
            _weight = new Parameter(w, requires_grad: false);
            _bias = hasBias ? new Parameter(empty(outFeatures, dtype: dtype, device: device).uniform_(-bound, bound), requires_grad: false) : null;
        }
        _loraA = nn.Linear(inFeatures, rank, false, device, dtype);
        _loraB = nn.Linear(rank, outFeatures, false, device, dtype);
        _dropout = nn.Dropout(dropout);
        if (useDora) _magnitude = new Parameter(ones(outFeatures, dtype: dtype, device: device));
        RegisterComponents();
        ResetAdapter();
        if (useDora) InitializeDoraMagnitude();
    }

    /// <summary>Input features.</summary>
    public long InFeatures { get; }

    /// <summary>Output features.</summary>
    public long OutFeatures { get; }

    /// <summary>LoRA rank r.</summary>
    public int Rank { get; }

    /// <summary>LoRA alpha.</summary>
    public double Alpha { get; }

    /// <summary>alpha / r.</summary>
    public double Scale => Alpha / Rank;

    /// <summary>True for DoRA.</summary>
    public bool UseDora { get; }

    /// <summary>Frozen base weight [out, in].</summary>
    public Parameter Weight => _weight;

    /// <summary>Frozen base bias [out], or null.</summary>
    public Parameter? Bias => _bias;

    /// <summary>A [r, in].</summary>
    public Parameter LoraA => _loraA.weight!;

    /// <summary>B [out, r].</summary>
    public Parameter LoraB => _loraB.weight!;

    /// <summary>DoRA magnitude [out], or null for plain LoRA.</summary>
    public Parameter? Magnitude => _magnitude;

    /// <summary>Re-initialises A with kaiming-uniform(a = sqrt 5) and B with zeros.</summary>
    public void ResetAdapter()
    {
        using var _ = no_grad();
        nn.init.kaiming_uniform_(_loraA.weight!, a: Math.Sqrt(5));
        nn.init.zeros_(_loraB.weight!);
    }

    /// <summary>Sets the DoRA magnitude to ||W0 + (alpha/r) B A|| per output row; call after loading base weights.</summary>
    public void InitializeDoraMagnitude()
    {
        if (_magnitude is null) throw new InvalidOperationException("InitializeDoraMagnitude called on a plain LoRA layer (use_dora is false)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        _magnitude.copy_(WeightNorm());
    }

    private Tensor Delta() => _loraB.weight!.matmul(_loraA.weight!) * Scalars.Of(Scale); // [out, r] @ [r, in] -> [out, in]

    private Tensor WeightNorm() =>
        _weight.to_type(ScalarType.Float32).Plus(Delta().to_type(ScalarType.Float32)).norm(1, keepdim: false).to_type(_weight.dtype); // [out]

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var baseOut = nn.functional.linear(x, _weight); // [.., out]
        var loraOut = _loraB.call(_loraA.call(_dropout.call(x))) * Scalars.Of(Scale); // [.., in] -> [.., r] -> [.., out]
        Tensor y;
        if (_magnitude is null)
        {
            y = baseOut.Plus(loraOut);
        }
        else
        {
            var scale = _magnitude / WeightNorm().detach(); // [out]
            y = scale * baseOut.Plus(loraOut);
        }
        if (_bias is not null) y = y.Plus(_bias);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The weight this layer applies, with autograd through the adapter: W0 + (alpha/r) B A, DoRA-rescaled if enabled
    /// (the magnitude over the detached row norm, as <see cref="forward"/>), so that x W_eff^T equals forward(x).
    /// For callers that need the projection as a matrix (fused-linear losses); [out, in], one extra weight-sized tensor.
    /// </summary>
    /// <exception cref="NotSupportedException">Dropout is active (training with lora_dropout &gt; 0, which a single
    /// matrix cannot express) or the layer has a bias.</exception>
    public Tensor EffectiveWeight()
    {
        if (training && _dropout.p > 0)
            throw new NotSupportedException($"LoRA dropout {_dropout.p} is active: the adapter cannot be folded into one weight matrix (set lora_dropout: 0.0 for this layer's use with a fused-linear loss)");
        if (_bias is not null) throw new NotSupportedException("the LoRA layer has a bias, which a weight matrix alone leaves out (a fused-linear loss takes no bias)");
        using var scope = NewDisposeScope();
        var merged = _weight + Delta(); // [out, in]
        if (_magnitude is not null) merged = merged * (_magnitude / WeightNorm().detach()).unsqueeze(1);
        return merged.MoveToOuterDisposeScope();
    }

    /// <summary>The weight the adapter is equivalent to in eval mode: W0 + (alpha/r) B A, DoRA-rescaled if enabled.</summary>
    public Tensor MergedWeight()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var merged = _weight + Delta();
        if (_magnitude is not null) merged = merged * (_magnitude / WeightNorm()).unsqueeze(1);
        return merged.to_type(_weight.dtype).MoveToOuterDisposeScope();
    }
}
