// SharpTune's TransformerDecoder seen as an ICausalLm: Forward(tokens, mask, inputPos) already takes a [b, s, s]
// bool mask (true = may attend) and [b, s] position ids, which is what shared-context scoring needs.
using SharpTune.Modules;
using TorchSharp;

namespace SharpTune.Eval;

/// <summary>Evaluates a <see cref="TransformerDecoder"/> (KV caches must be off: scoring runs whole sequences).</summary>
public sealed class DecoderCausalLm(TransformerDecoder decoder) : ICausalLm
{
    private readonly TransformerDecoder _decoder = decoder ?? throw new ArgumentNullException(nameof(decoder));

    /// <inheritdoc />
    public int MaxSeqLen => _decoder.MaxSeqLen;

    /// <inheritdoc />
    public torch.Tensor Logits(torch.Tensor tokens, torch.Tensor? mask, torch.Tensor? inputPos)
    {
        if (_decoder.CachesEnabled)
            throw new InvalidOperationException("the decoder has KV caches set up; call RemoveCaches() before evaluation");
        return _decoder.Forward(tokens, mask, inputPos);
    }
}
