// Token embedding lookup with a single `weight` Parameter [v, d], created directly on the target device (so a meta
// build allocates nothing) and shareable with the output projection for tied embeddings.
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>Embedding table; key <c>weight</c> [v, d], initialised N(0, 1) like torch.nn.Embedding.</summary>
public sealed class TokenEmbedding : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;

    /// <summary>Creates the table on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public TokenEmbedding(long vocabSize, long dim, Device? device = null, ScalarType dtype = ScalarType.Float32) : base(nameof(TokenEmbedding))
    {
        var w = empty(vocabSize, dim, dtype: dtype, device: device);
        if (!w.is_meta) using (no_grad()) w.normal_();
        _weight = new Parameter(w);
        RegisterComponents();
    }

    /// <summary>The table [v, d].</summary>
    public Parameter weight => _weight;

    /// <summary>tokens [b, s] int64 -> [b, s, d].</summary>
    public override Tensor forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        var flat = _weight.index_select(0, tokens.reshape(-1)); // [b*s, d]
        return flat.view([.. tokens.shape, _weight.shape[1]]).MoveToOuterDisposeScope(); // -> [b, s, d]
    }
}
