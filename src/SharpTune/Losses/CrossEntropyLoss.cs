// Next-token cross-entropy over logits, whole or in sequence chunks, with ignore_index masking and a per-token mean
// over valid tokens. Mirrors torchtune's CEWithChunkedOutputLoss (torchtune/modules/loss/ce_chunked_output_loss.py)
// except that an all-ignored batch gives 0 instead of NaN.
using SharpTune.Native;
using SharpTune.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>
/// Cross-entropy of logits [b, s, v] (or a list of sequence chunks [b, s_i, v], or [n, v]) against labels [b, s]
/// (or [n]); computed in fp32 whatever the logits' dtype.
/// </summary>
public sealed class CrossEntropyLoss
{
    /// <param name="numOutputChunks">How many sequence chunks the model should emit (0 = one whole tensor).</param>
    /// <param name="ignoreIndex">Label value that marks a position without a target.</param>
    public CrossEntropyLoss(int numOutputChunks = 0, long ignoreIndex = -100)
    {
        if (numOutputChunks < 0)
            throw new ArgumentOutOfRangeException(nameof(numOutputChunks), numOutputChunks, "must be >= 0");
        NumOutputChunks = numOutputChunks;
        IgnoreIndex = ignoreIndex;
    }

    /// <summary>Chunks the recipe should ask the model for (torchtune's <c>num_output_chunks</c>); 0 = unchunked.</summary>
    public int NumOutputChunks { get; }

    /// <summary>Label value that is masked out.</summary>
    public long IgnoreIndex { get; }

    /// <summary>torchtune's <c>CEWithChunkedOutputLoss(num_output_chunks=8, ignore_index=-100)</c>.</summary>
    [Component("sharptune.modules.loss.CEWithChunkedOutputLoss")]
    public static CrossEntropyLoss WithChunkedOutput(int numOutputChunks = 8, long ignoreIndex = -100) =>
        new(numOutputChunks, ignoreIndex);

    /// <summary>Unchunked cross-entropy (<c>torch.nn.CrossEntropyLoss(ignore_index=-100)</c>).</summary>
    [Component("sharptune.modules.loss.CrossEntropyLoss")]
    public static CrossEntropyLoss Plain(long ignoreIndex = -100) => new(0, ignoreIndex);

    /// <summary>Mean cross-entropy over valid tokens of whole logits.</summary>
    public Tensor Forward(Tensor logits, Tensor labels) => Sum(logits, labels).Mean();

    /// <summary>Mean cross-entropy over valid tokens of logits given as sequence chunks.</summary>
    public Tensor Forward(IReadOnlyList<Tensor> logitChunks, Tensor labels) => Sum(logitChunks, labels).Mean();

    /// <summary>Sum over valid tokens and their count (divide once per optimizer step).</summary>
    public LossSum Sum(Tensor logits, Tensor labels)
    {
        using var scope = torch.NewDisposeScope();
        var (flat, flatLabels) = LossInputs.Flatten(logits, labels, nameof(CrossEntropyLoss));
        var sum = DivergenceMath.CrossEntropyPerToken(flat, flatLabels, IgnoreIndex).sum();
        return new LossSum(sum.MoveToOuterDisposeScope(), flatLabels.ne(Scalars.Of(IgnoreIndex)).sum().MoveToOuterDisposeScope());
    }

    /// <summary>Sum over valid tokens and their count, from sequence chunks (labels split with tensor_split).</summary>
    public LossSum Sum(IReadOnlyList<Tensor> logitChunks, Tensor labels)
    {
        var pieces = LossInputs.SplitLabels(labels, logitChunks, nameof(CrossEntropyLoss));
        Tensor? total = null;
        for (var i = 0; i < pieces.Length; i++)
        {
            var part = Sum(logitChunks[i], pieces[i]).Sum;
            total = total is null ? part : total.Plus(part);
        }
        return new LossSum(total!, labels.ne(Scalars.Of(IgnoreIndex)).sum());
    }
}
