// SwiGLU feed-forward (Shazeer 2020, https://arxiv.org/abs/2002.05202): down(silu(gate(x)) * up(x)), named as HF's
// LlamaMLP/Qwen2MLP (gate_proj, up_proj, down_proj) so checkpoints load by identity.
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>SwiGLU MLP. Keys: <c>gate_proj</c>, <c>up_proj</c>, <c>down_proj</c> (each a Linear or LoraLinear).</summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
    [TorchSharp.Utils.ComponentName(Name = "gate_proj")] private readonly nn.Module<Tensor, Tensor> _gateProj;
    [TorchSharp.Utils.ComponentName(Name = "up_proj")] private readonly nn.Module<Tensor, Tensor> _upProj;
    [TorchSharp.Utils.ComponentName(Name = "down_proj")] private readonly nn.Module<Tensor, Tensor> _downProj;

    /// <summary>Composes the MLP from its three projections ([d]->[f], [d]->[f], [f]->[d]).</summary>
    public FeedForward(nn.Module<Tensor, Tensor> gateProj, nn.Module<Tensor, Tensor> upProj, nn.Module<Tensor, Tensor> downProj) : base(nameof(FeedForward))
    {
        _gateProj = gateProj;
        _upProj = upProj;
        _downProj = downProj;
        RegisterComponents();
    }

    internal nn.Module<Tensor, Tensor> GateProj => _gateProj;
    internal nn.Module<Tensor, Tensor> UpProj => _upProj;
    internal nn.Module<Tensor, Tensor> DownProj => _downProj;

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        Tensor h;
        if (is_grad_enabled())
            h = nn.functional.silu(_gateProj.call(x)) * _upProj.call(x); // [b, s, f]
        else
            h = nn.functional.silu(_gateProj.call(x), inplace: true).mul_(_upProj.call(x)); // no graph: reuse the gate buffer
        return _downProj.call(h).MoveToOuterDisposeScope(); // [b, s, d]
    }
}
