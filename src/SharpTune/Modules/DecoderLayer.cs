// One pre-norm transformer decoder block, named like HF's LlamaDecoderLayer:
// h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h)).
using SharpTune.Native;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>Pre-norm decoder block. Keys: <c>self_attn</c>, <c>mlp</c>, <c>input_layernorm</c>, <c>post_attention_layernorm</c>.</summary>
public sealed class DecoderLayer : nn.Module
{
    [ComponentName(Name = "self_attn")] private readonly Attention _selfAttn;
    [ComponentName(Name = "mlp")] private readonly FeedForward _mlp;
    [ComponentName(Name = "input_layernorm")] private readonly RmsNorm _inputLayernorm;
    [ComponentName(Name = "post_attention_layernorm")] private readonly RmsNorm _postAttentionLayernorm;

    /// <summary>Composes the block.</summary>
    public DecoderLayer(Attention selfAttn, FeedForward mlp, RmsNorm inputLayernorm, RmsNorm postAttentionLayernorm) : base(nameof(DecoderLayer))
    {
        _selfAttn = selfAttn;
        _mlp = mlp;
        _inputLayernorm = inputLayernorm;
        _postAttentionLayernorm = postAttentionLayernorm;
        RegisterComponents();
    }

    /// <summary>The attention sub-module.</summary>
    public Attention SelfAttn => _selfAttn;

    internal FeedForward Mlp => _mlp;
    internal RmsNorm InputLayernorm => _inputLayernorm;
    internal RmsNorm PostAttentionLayernorm => _postAttentionLayernorm;


    /// <summary>x [b, s, d] -> [b, s, d].</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        var h = x.Plus(_selfAttn.Forward(_inputLayernorm.call(x), cos, sin, mask));
        var output = h.Plus(_mlp.call(_postAttentionLayernorm.call(h)));
        return output.MoveToOuterDisposeScope();
    }
}
