// Root-mean-square layer normalisation (Zhang & Sennrich 2019, https://arxiv.org/abs/1910.07467), computed in fp32
// as Hugging Face's LlamaRMSNorm does: y = weight * (x / sqrt(mean(x^2) + eps)).to(input dtype), returned in the
// input dtype (torchtune's RMSNorm type_as(x)).
using SharpTune.Native;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>RMSNorm over the last dimension; the statistic is always computed in float32.</summary>
/// <remarks>State-dict key: <c>weight</c> [d].</remarks>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;
    private readonly double _eps;

    /// <summary>Creates the norm with weight initialised to ones.</summary>
    public RmsNorm(long dim, double eps = 1e-6, Device? device = null, ScalarType dtype = ScalarType.Float32) : base(nameof(RmsNorm))
    {
        _eps = eps;
        _weight = new Parameter(ones(dim, dtype: dtype, device: device));
        RegisterComponents();
    }

    /// <summary>The learned scale [d].</summary>
    public Parameter Weight => _weight;

    /// <summary>Epsilon added to the mean square.</summary>
    public double Eps => _eps;

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var xf = x.to_type(ScalarType.Float32);
        var normed = xf * rsqrt(xf.pow(Scalars.Of(2L)).mean([-1L], keepdim: true).add(Scalars.Of(_eps), Scalars.One));
        return (_weight * normed.to_type(x.dtype)).to_type(x.dtype).MoveToOuterDisposeScope(); // torchtune: type_as(x)
    }
}
