// The one-pass class + KD sum against the two plain autograd losses it replaces in the KD recipe: values, the
// logged terms and the gradient with respect to the student logits, for the closed-form path (forward KL and
// torchtune's forward-KL value at T = 1) and for every fallback (other divergences, temperature, masked vocabulary).
using SharpTune.Losses;
using TorchSharp;
using static SharpTune.Tests.Losses.LossTestUtil;
using static TorchSharp.torch;

namespace SharpTune.Tests.Losses;

public sealed class ClassAndKdSumTests
{
    private const long Vocab = 37;

    // Student logits [2, 7, v] as 3 tensor_split chunks of a leaf, teacher chunks, labels with ignored positions.
    private static (Tensor Leaf, List<Tensor> Student, List<Tensor> Teacher, Tensor Labels) Batch(long seed, bool maskedVocab = false)
    {
        var g = Seeded(seed);
        var leaf = RandLogits(g, 14, Vocab).reshape(2, 7, Vocab).requires_grad_(true);
        var teacher = RandLogits(g, 14, Vocab).reshape(2, 7, Vocab);
        if (maskedVocab) teacher[.., .., ^3..] = float.NegativeInfinity; // padded vocabulary entries
        var labels = torch.randint(0, Vocab, new long[] { 2, 7 }, generator: g);
        labels[0, 6] = -100;
        labels[1, 2] = -100;
        var student = leaf.tensor_split(3, 1).ToList();
        return (leaf, student, teacher.tensor_split(3, 1).ToList(), labels);
    }

    public static IEnumerable<object[]> Cases()
    {
        foreach (var kind in new[] { "forward_kl_ce", "forward_kl", "reverse_kl", "jsd" })
        foreach (var temperature in new[] { 1.0, 2.0 })
        foreach (var masked in new[] { false, true })
            yield return [kind, temperature, masked];
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Compute_EqualsWeightedPlainLosses_ValuesAndGradients(string kind, double temperature, bool maskedVocab)
    {
        using var scope = NewDisposeScope();
        const double ratio = 0.3;
        var ce = CrossEntropyLoss.WithChunkedOutput(3);
        var kd = KdLoss.Create(kind, temperature, numOutputChunks: 3);

        var (leaf, student, teacher, labels) = Batch(11, maskedVocab);
        var plainCls = ce.Sum(student, labels);
        var plainKd = kd.Sum(student, teacher, labels);
        var plain = (1 - ratio) * plainCls.Sum + ratio * plainKd.Sum;
        plain.backward();
        var plainGrad = leaf.grad!.clone();

        var (leaf2, student2, teacher2, labels2) = Batch(11, maskedVocab);
        var r = ClassAndKdSum.Compute(ce, kd, ratio, student2, teacher2, labels2);
        r.Weighted.backward();

        Close(plain.detach(), r.Weighted.detach(), 1e-5, $"{kind} weighted sum");
        Close(plainCls.Sum.detach(), r.Class.Sum, 1e-5, $"{kind} class sum");
        Close(plainKd.Sum.detach(), r.Kd.Sum, 1e-5, $"{kind} KD sum");
        Assert.Equal(plainCls.Count.item<long>(), r.Class.Count.item<long>());
        Assert.Equal(12, r.Kd.Count.item<long>());
        Close(plainGrad, leaf2.grad!, 1e-5, $"{kind} gradient wrt student logits");
    }

    [Fact]
    public void Compute_GradientScalesWithUpstreamGradient()
    {
        using var scope = NewDisposeScope();
        var ce = CrossEntropyLoss.WithChunkedOutput(3);
        var kd = KdLoss.TorchtuneForwardKlChunked(3);
        var (leaf, student, teacher, labels) = Batch(5);
        ClassAndKdSum.Compute(ce, kd, 0.5, student, teacher, labels).Weighted.backward();
        var once = leaf.grad!.clone();
        var (leaf2, student2, teacher2, labels2) = Batch(5);
        (ClassAndKdSum.Compute(ce, kd, 0.5, student2, teacher2, labels2).Weighted * 2.5).backward();
        Close(once * 2.5, leaf2.grad!, 1e-6, "gradient of 2.5 * loss");
    }

    [Fact]
    public void Compute_MismatchedChunks_ThrowsNamingBoth()
    {
        var ce = CrossEntropyLoss.WithChunkedOutput(3);
        var kd = KdLoss.TorchtuneForwardKlChunked(3);
        var (_, student, teacher, labels) = Batch(3);
        var e = Assert.Throws<ArgumentException>(() => ClassAndKdSum.Compute(ce, kd, 0.5, student, teacher.Take(2).ToList(), labels));
        Assert.Contains("3 student chunks but 2 teacher chunks", e.Message);
    }
}
