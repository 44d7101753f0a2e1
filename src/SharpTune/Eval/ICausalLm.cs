// The model seam evaluation codes against: a causal language model that returns logits for a batch of token ids,
// optionally under an explicit attention mask and explicit position ids (needed for shared-context scoring, where
// several continuations sit side by side in one sequence and each restarts its positions after the context).
// The lead adapts SharpTune.Modules.TransformerDecoder.Forward(tokens, mask, inputPos) to it.
using TorchSharp;

namespace SharpTune.Eval;

/// <summary>A causal LM as evaluation sees it.</summary>
/// <remarks>Shapes: <c>b</c> batch, <c>s</c> sequence, <c>v</c> vocab.</remarks>
public interface ICausalLm
{
    /// <summary>
    /// Logits for every position.
    /// </summary>
    /// <param name="tokens">[b, s] int64 token ids.</param>
    /// <param name="mask">
    /// [b, s, s] bool, <c>mask[i, q, k] == true</c> when query position <c>q</c> may attend key position <c>k</c>;
    /// null means the ordinary causal mask (<c>k &lt;= q</c>).
    /// </param>
    /// <param name="inputPos">[b, s] int64 position ids (rotary/learned positions); null means 0..s-1 per row.</param>
    /// <returns>[b, s, v] logits (any floating dtype; scoring upcasts half precision to float32).</returns>
    torch.Tensor Logits(torch.Tensor tokens, torch.Tensor? mask, torch.Tensor? inputPos);

    /// <summary>The longest sequence the model accepts (the harness's <c>max_length</c>).</summary>
    int MaxSeqLen { get; }
}

/// <summary>
/// Adapts any forward function with the decoder's signature (e.g. <c>TransformerDecoder.Forward(tokens, mask,
/// inputPos)</c>) to <see cref="ICausalLm"/>.
/// </summary>
/// <param name="forward">tokens [b, s], mask [b, s, s] or null, inputPos [b, s] or null → logits [b, s, v].</param>
/// <param name="maxSeqLen">The model's maximum sequence length.</param>
public sealed class DelegateCausalLm(Func<torch.Tensor, torch.Tensor?, torch.Tensor?, torch.Tensor> forward, int maxSeqLen) : ICausalLm
{
    private readonly Func<torch.Tensor, torch.Tensor?, torch.Tensor?, torch.Tensor> _forward =
        forward ?? throw new ArgumentNullException(nameof(forward));

    /// <inheritdoc />
    public int MaxSeqLen { get; } = maxSeqLen > 0 ? maxSeqLen
        : throw new ArgumentOutOfRangeException(nameof(maxSeqLen), maxSeqLen, "must be positive");

    /// <inheritdoc />
    public torch.Tensor Logits(torch.Tensor tokens, torch.Tensor? mask, torch.Tensor? inputPos) => _forward(tokens, mask, inputPos);
}
