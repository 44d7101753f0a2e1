// Fused-linear losses against the plain computation (project to full logits, plain loss, autograd): values and
// gradients for hidden states and output weight, every divergence, uneven chunks, padding-only rows, -inf teacher
// entries, teacher given as hidden+weight / logits / top-k, and the sum form.
using SharpTune.Losses;
using TorchSharp;
using static SharpTune.Tests.Losses.LossTestUtil;
using static TorchSharp.torch;

namespace SharpTune.Tests.Losses;

public sealed class FusedLinearLossTests
{
    private const long N = 10, D = 6, DT = 8, V = 23;

    // Row 3..5 ignored (a padding-only stretch), the rest real targets.
    private static readonly Tensor Labels = torch.tensor(new long[] { 1, 22, 0, -100, -100, -100, 7, 7, 3, 15 });

    private sealed record Inputs(Tensor H, Tensor W, Tensor Ht, Tensor Wt);

    private static Inputs Make(long seed)
    {
        var g = Seeded(seed);
        return new Inputs(
            torch.randn(new[] { N, D }, generator: g), torch.randn(new[] { V, D }, generator: g) * 0.7,
            torch.randn(new[] { N, DT }, generator: g), torch.randn(new[] { V, DT }, generator: g) * 0.7);
    }

    private static (Tensor H, Tensor W) Leaves(Inputs x) => (x.H.detach().requires_grad_(true), x.W.detach().requires_grad_(true));

    [Fact]
    public void FusedCrossEntropy_UnevenChunks_EqualsPlainValuesAndGradients()
    {
        var x = Make(20);
        var (h, w) = Leaves(x);
        var plain = new CrossEntropyLoss().Forward(h.matmul(w.t()), Labels);
        plain.backward();
        var (hf, wf) = Leaves(x);
        var fused = new FusedLinearCrossEntropyLoss(chunkSize: 3).Forward(hf, wf, Labels);   // 10 = 3+3+3+1
        fused.backward();
        Close(plain.detach(), fused.detach(), 1e-5, "value");
        Close(h.grad!, hf.grad!, 1e-5, "hidden grad");
        Close(w.grad!, wf.grad!, 1e-5, "weight grad");
        Close(torch.zeros(3, D), hf.grad!.narrow(0, 3, 3), 0, "ignored rows");
    }

    [Fact]
    public void FusedDistillation_EveryDivergenceTeacherFromLinear_EqualsPlain()
    {
        var x = Make(21);
        // T = 1 forward KL takes the shared-softmax hot path; other temperatures and divergences the general one.
        foreach (var o in AllDivergences(1.6).Concat(AllDivergences(1.0)))
        {
            const double ratio = 0.4;
            var (h, w) = Leaves(x);
            var logits = h.matmul(w.t());
            var teacherLogits = x.Ht.matmul(x.Wt.t());
            var ce = new CrossEntropyLoss().Forward(logits, Labels);
            var kd = new KdLoss(o).Forward(logits, teacherLogits, Labels);
            var plain = (1 - ratio) * ce + ratio * kd;
            plain.backward();
            var (hf, wf) = Leaves(x);
            var fused = new FusedLinearDistillationLoss(o, ratio, chunkSize: 4)
                .Forward(hf, wf, TeacherOutput.FromLinear(x.Ht, x.Wt), Labels);
            fused.Loss.backward();
            Close(plain.detach(), fused.Loss.detach(), 1e-5, $"{o.Kind} value");
            Close(ce.detach(), fused.ClassLoss, 1e-5, $"{o.Kind} class part");
            Close(kd.detach(), fused.KdLoss, 1e-5, $"{o.Kind} kd part");
            Close(h.grad!, hf.grad!, 1e-5, $"{o.Kind} hidden grad");
            Close(w.grad!, wf.grad!, 1e-5, $"{o.Kind} weight grad");
        }
    }

    [Fact]
    public void FusedDistillation_TeacherLogitsWithNegativeInfinity_EqualsPlainWithoutNaN()
    {
        var x = Make(22);
        var teacherLogits = x.Ht.matmul(x.Wt.t());
        teacherLogits[.., 5] = torch.tensor(float.NegativeInfinity);       // a masked vocabulary entry
        foreach (var o in AllDivergences())
        {
            var (h, w) = Leaves(x);
            var plain = new KdLoss(o).Forward(h.matmul(w.t()), teacherLogits, Labels);
            plain.backward();
            var (hf, wf) = Leaves(x);
            var fused = new FusedLinearDistillationLoss(o, kdRatio: 1, chunkSize: 7).Forward(hf, wf, TeacherOutput.FromLogits(teacherLogits), Labels);
            fused.Loss.backward();
            Close(plain.detach(), fused.Loss.detach(), 1e-5, $"{o.Kind} value");
            Close(h.grad!, hf.grad!, 1e-5, $"{o.Kind} hidden grad");
            Close(w.grad!, wf.grad!, 1e-5, $"{o.Kind} weight grad");
        }
    }

    [Fact]
    public void FusedDistillation_FrozenWeightAndSumForm_HiddenGradientScalesWithOutsideDivision()
    {
        var x = Make(23);
        var o = new DivergenceOptions { Temperature = 2 };
        var h = x.H.detach().requires_grad_(true);
        var plain = new KdLoss(o).Sum(h.matmul(x.W.t()), x.Ht.matmul(x.Wt.t()), Labels);
        (plain.Sum / 5.0).backward();
        var hf = x.H.detach().requires_grad_(true);
        var fused = new FusedLinearDistillationLoss(o, kdRatio: 1).Forward(hf, x.W, x.Ht, x.Wt, Labels, normalize: false);
        Assert.Equal(7L, fused.ValidCount.item<long>());
        (fused.Loss / 5.0).backward();
        Close(plain.Sum.detach(), fused.Loss.detach(), 1e-5, "sum");
        Close(h.grad!, hf.grad!, 1e-5, "hidden grad of sum / 5");
        Assert.Null(x.W.grad);
    }

    [Fact]
    public void FusedDistillation_KdRatioOne_StillReportsClassLossForLogging()
    {
        var x = Make(27);
        var (hf, wf) = Leaves(x);
        var fused = new FusedLinearDistillationLoss(new DivergenceOptions(), kdRatio: 1).Forward(hf, wf, TeacherOutput.FromLinear(x.Ht, x.Wt), Labels);
        Close(new CrossEntropyLoss().Forward(x.H.matmul(x.W.t()), Labels), fused.ClassLoss, 1e-5, "class loss");
        Close(fused.KdLoss, fused.Loss.detach(), 1e-6, "loss is the KD part only");
    }

    [Fact]
    public void FusedDistillation_BFloat16Model_MatchesPlainOnSameLogitsToBf16Precision()
    {
        var x = Make(28);
        var bf = ScalarType.BFloat16;
        var h = x.H.to(bf).requires_grad_(true);
        var w = x.W.to(bf).requires_grad_(true);
        var o = new DivergenceOptions();
        var logits = h.matmul(w.t());                                      // bf16 logits, as a bf16 model emits
        var plain = 0.5 * new CrossEntropyLoss().Forward(logits, Labels) +
                    0.5 * new KdLoss(o).Forward(logits, x.Ht.to(bf).matmul(x.Wt.to(bf).t()), Labels);
        plain.backward();
        var hf = x.H.to(bf).requires_grad_(true);
        var wf = x.W.to(bf).requires_grad_(true);
        var fused = new FusedLinearDistillationLoss(o).Forward(hf, wf, TeacherOutput.FromLinear(x.Ht.to(bf), x.Wt.to(bf)), Labels);
        fused.Loss.backward();
        Assert.Equal(ScalarType.Float32, fused.Loss.dtype);
        Assert.Equal(bf, hf.grad!.dtype);
        Close(plain.detach(), fused.Loss.detach(), 1e-5, "value from the same bf16 logits");
        Close(h.grad!, hf.grad!, 2e-2, "hidden grad");
        Close(w.grad!, wf.grad!, 2e-2, "weight grad");
    }

    [Fact]
    public void FusedDistillation_AllLabelsIgnored_ReturnsZero()
    {
        var x = Make(24);
        var (hf, wf) = Leaves(x);
        var labels = torch.full(N, -100L);
        var fused = new FusedLinearDistillationLoss(new DivergenceOptions()).Forward(hf, wf, TeacherOutput.FromLinear(x.Ht, x.Wt), labels);
        fused.Loss.backward();
        Close(0.0, fused.Loss, 0, "value");
        Close(torch.zeros(N, D), hf.grad!, 0, "hidden grad");
    }

    [Fact]
    public void FusedDistillation_SparseTeacherBothModes_EqualsPlainSparse()
    {
        var x = Make(25);
        var teacherLogProbs = x.Ht.matmul(x.Wt.t()).log_softmax(-1);
        var (lp, idx) = teacherLogProbs.topk(5);
        foreach (var mode in new[] { MissingMass.Zero, MissingMass.Tail })
        {
            var o = new DivergenceOptions { Temperature = 1.5 };
            var sparse = new SparseTeacher(idx, lp);
            var (h, w) = Leaves(x);
            var plain = new KdLoss(o, missingMass: mode).Forward(h.matmul(w.t()), sparse, Labels);
            plain.backward();
            var (hf, wf) = Leaves(x);
            var fused = new FusedLinearDistillationLoss(o, kdRatio: 1, chunkSize: 4, missingMass: mode)
                .Forward(hf, wf, TeacherOutput.FromSparse(sparse), Labels);
            fused.Loss.backward();
            Close(plain.detach(), fused.Loss.detach(), 1e-5, $"{mode} value");
            Close(h.grad!, hf.grad!, 1e-5, $"{mode} hidden grad");
            Close(w.grad!, wf.grad!, 1e-5, $"{mode} weight grad");
        }
    }

    [Fact]
    public void FusedDistillation_ShapeMismatch_ThrowsNamingSizes()
    {
        var x = Make(26);
        var loss = new FusedLinearDistillationLoss(new DivergenceOptions());
        var e = Assert.Throws<ArgumentException>(() =>
            loss.Forward(x.H, x.W, TeacherOutput.FromLinear(x.Ht, x.Wt.narrow(0, 0, 20)), Labels));
        Assert.Contains("student vocabulary 23", e.Message);
        Assert.Contains("teacher vocabulary 20", e.Message);
        Assert.Throws<ArgumentException>(() => loss.Forward(x.H, x.W.t(), TeacherOutput.FromLinear(x.Ht, x.Wt), Labels));
        Assert.Throws<NotSupportedException>(() =>
            new FusedLinearDistillationLoss(new DivergenceOptions { Kind = DivergenceKind.ReverseKl })
                .Forward(x.H, x.W, TeacherOutput.FromSparse(new SparseTeacher(torch.zeros(N, 2, ScalarType.Int64), torch.zeros(N, 2))), Labels));
    }
}
