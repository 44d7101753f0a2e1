// Rotary position embeddings (Su et al. 2021, https://arxiv.org/abs/2104.09864) in Hugging Face's rotate-half
// layout (transformers modeling_llama.apply_rotary_pos_emb), so HF q/k weights load without permutation.
// Llama 3.1 frequency scaling follows transformers modeling_rope_utils._compute_llama3_parameters and Meta's
// llama-models reference (apply_scaling).
using SharpTune.Native;
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>Llama 3.1-style RoPE frequency scaling (<c>rope_scaling.rope_type == "llama3"</c>).</summary>
/// <param name="Factor">Divisor applied to low frequencies (8 for Llama 3.1, 32 for Llama 3.2).</param>
/// <param name="LowFreqFactor">Wavelengths above original/low are fully scaled.</param>
/// <param name="HighFreqFactor">Wavelengths below original/high are kept.</param>
/// <param name="OriginalMaxPositionEmbeddings">Context length the model was pretrained with (8192).</param>
public sealed record Llama3RopeScaling(double Factor, double LowFreqFactor = 1, double HighFreqFactor = 4, int OriginalMaxPositionEmbeddings = 8192);

/// <summary>
/// Computes RoPE cos/sin for explicit positions and applies them. It holds no tensors: the inverse frequencies are
/// a small managed array, and cos/sin are computed per forward from the position ids, so nothing is persisted in
/// the state dict and packed sequences with restarting positions work.
/// </summary>
/// <remarks>Shapes: <c>b</c> batch, <c>s</c> sequence, <c>n</c> heads, <c>h_d</c> head dim.</remarks>
public sealed class RotaryEmbedding
{
    private readonly float[] _invFreq;

    /// <summary>Creates the table for <paramref name="headDim"/> with base <paramref name="theta"/>.</summary>
    public RotaryEmbedding(int headDim, double theta = 10_000, Llama3RopeScaling? scaling = null)
    {
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentException($"head_dim must be positive and even, got {headDim}", nameof(headDim));
        HeadDim = headDim;
        Theta = theta;
        Scaling = scaling;
        var inv = InverseFrequencies(headDim, theta, scaling);
        _invFreq = inv.Select(v => (float)v).ToArray();
    }

    /// <summary>Head dimension the rotation acts on.</summary>
    public int HeadDim { get; }

    /// <summary>The RoPE base (<c>rope_theta</c>).</summary>
    public double Theta { get; }

    /// <summary>Llama 3.1 scaling, or null.</summary>
    public Llama3RopeScaling? Scaling { get; }

    /// <summary>The inverse frequencies actually used, [h_d/2], in float32 as HF keeps them.</summary>
    public IReadOnlyList<float> InvFreq => _invFreq;

    /// <summary>theta^(-2i/h_d), optionally rescaled with the Llama 3.1 rule; computed in double.</summary>
    public static double[] InverseFrequencies(int headDim, double theta, Llama3RopeScaling? scaling)
    {
        var inv = new double[headDim / 2];
        for (var i = 0; i < inv.Length; i++) inv[i] = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
        if (scaling is null) return inv;
        if (scaling.Factor <= 0 || scaling.HighFreqFactor <= scaling.LowFreqFactor)
            throw new ArgumentException($"invalid llama3 rope_scaling {scaling}: factor must be > 0 and high_freq_factor > low_freq_factor");
        double old = scaling.OriginalMaxPositionEmbeddings;
        var lowFreqWavelen = old / scaling.LowFreqFactor;
        var highFreqWavelen = old / scaling.HighFreqFactor;
        for (var i = 0; i < inv.Length; i++)
        {
            var wavelen = 2 * Math.PI / inv[i];
            if (wavelen < highFreqWavelen) continue; // high frequencies: unchanged
            if (wavelen > lowFreqWavelen) { inv[i] /= scaling.Factor; continue; } // low frequencies: scaled
            var smooth = (old / wavelen - scaling.LowFreqFactor) / (scaling.HighFreqFactor - scaling.LowFreqFactor);
            inv[i] = (1 - smooth) * inv[i] / scaling.Factor + smooth * inv[i];
        }
        return inv;
    }

    /// <summary>cos and sin for <paramref name="positions"/> [b, s] (int64), each [b, 1, s, h_d] in <paramref name="dtype"/>.</summary>
    public (Tensor Cos, Tensor Sin) CosSin(Tensor positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var inv = tensor(_invFreq, device: positions.device); // [h_d/2]
        var freqs = positions.to_type(ScalarType.Float32).unsqueeze(-1) * inv; // [b, s, 1] * [h_d/2] -> [b, s, h_d/2]
        var emb = cat([freqs, freqs], -1).unsqueeze(1); // [b, 1, s, h_d]
        var cos = emb.cos().to_type(dtype);
        var sin = emb.sin().to_type(dtype);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>x * cos + rotate_half(x) * sin for x [b, n, s, h_d].</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat([x2.neg(), x1], -1); // rotate_half
        return (x * cos).Plus(rotated * sin).MoveToOuterDisposeScope();
    }
}
