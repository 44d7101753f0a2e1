// KdLoss and CrossEntropyLoss: masking and per-token mean, chunked == plain (values and gradients) with uneven chunks
// and padding-only rows, the sum-and-count form, the all-masked batch, torch's own cross_entropy as reference, and
// the clear errors.
using SharpTune.Losses;
using TorchSharp;
using static SharpTune.Tests.Losses.LossTestUtil;
using static TorchSharp.torch;

namespace SharpTune.Tests.Losses;

public sealed class KdLossTests
{
    // [b=3, s=7] labels: row 1 is padding only, the others partly masked.
    private static Tensor Labels(long v) => torch.tensor(new long[]
    {
        1, 2, -100, 3, 0, v - 1, -100,
        -100, -100, -100, -100, -100, -100, -100,
        4, -100, 5, 5, 1, 2, 3,
    }).reshape(3, 7);

    private static (Tensor S, Tensor T) Logits(long seed, long v)
    {
        var g = Seeded(seed);
        return (RandLogits(g, 21, v).reshape(3, 7, v), RandLogits(g, 21, v).reshape(3, 7, v));
    }

    [Fact]
    public void Forward_MaskedLabels_IsMeanOfPerTokenOverValidTokens()
    {
        const long v = 13;
        var (s, t) = Logits(10, v);
        var labels = Labels(v);
        var o = new DivergenceOptions { Kind = DivergenceKind.ReverseKl, Temperature = 2 };
        var loss = new KdLoss(o).Forward(s, t, labels);
        var flatS = s.reshape(-1, v);
        var flatT = t.reshape(-1, v);
        var flatL = labels.reshape(-1).data<long>().ToArray();
        var valid = Enumerable.Range(0, 21).Where(i => flatL[i] != -100).ToArray();
        var expected = valid.Average(i => Reference(Row(flatS, i), Row(flatT, i), o));
        Close(expected, loss, 1e-5, "masked mean");
    }

    [Fact]
    public void ChunkedForward_UnevenChunksEveryDivergence_EqualsPlainValuesAndGradients()
    {
        const long v = 17;
        var (s0, t) = Logits(11, v);
        var labels = Labels(v);
        foreach (var o in AllDivergences(1.3))
        {
            var loss = new KdLoss(o, numOutputChunks: 3);
            var sPlain = s0.detach().requires_grad_(true);
            var plain = loss.Forward(sPlain, t, labels);
            plain.backward();
            var sChunk = s0.detach().requires_grad_(true);
            var studentChunks = sChunk.tensor_split(3, 1);                // s=7 -> 3, 2, 2
            var teacherChunks = t.tensor_split(3, 1);
            var chunked = loss.Forward(studentChunks, teacherChunks, labels);
            chunked.backward();
            Close(plain.detach(), chunked.detach(), 1e-5, $"{o.Kind} chunked value");
            Close(sPlain.grad!, sChunk.grad!, 1e-5, $"{o.Kind} chunked grad");
            Close(torch.zeros(7, v), sChunk.grad![1], 0, $"{o.Kind} padding-only row gets no gradient");
        }
    }

    [Fact]
    public void Sum_TwoMicroBatches_DividedOnceEqualsWholeBatchMean()
    {
        const long v = 9;
        var (s, t) = Logits(12, v);
        var labels = Labels(v);
        var loss = new KdLoss(new DivergenceOptions());
        var a = loss.Sum(s.narrow(0, 0, 2), t.narrow(0, 0, 2), labels.narrow(0, 0, 2));
        var b = loss.Sum(s.narrow(0, 2, 1), t.narrow(0, 2, 1), labels.narrow(0, 2, 1));
        var stepMean = (a.Sum + b.Sum) / (a.Count + b.Count).to(ScalarType.Float32);
        Close(loss.Forward(s, t, labels), stepMean, 1e-6, "sum-and-count");
        Assert.Equal(11L, (a.Count + b.Count).item<long>());
    }

    [Fact]
    public void Forward_AllLabelsIgnored_ReturnsZeroAndZeroGradient()
    {
        const long v = 5;
        var (s0, t) = Logits(13, v);
        var labels = torch.full(new long[] { 3, 7 }, -100L);
        var s = s0.detach().requires_grad_(true);
        var kd = new KdLoss(new DivergenceOptions(), numOutputChunks: 2).Forward(s.tensor_split(2, 1), t.tensor_split(2, 1), labels);
        var ce = new CrossEntropyLoss().Forward(s, labels);
        Close(0.0, kd, 0, "kd");
        Close(0.0, ce, 0, "ce");
        (kd + ce).backward();
        Close(torch.zeros(3, 7, v), s.grad!, 0, "gradient");
    }

    [Fact]
    public void CrossEntropy_PlainAndChunked_MatchTorchCrossEntropy()
    {
        const long v = 19;
        var (s0, _) = Logits(14, v);
        var labels = Labels(v);
        var reference = torch.nn.functional.cross_entropy(s0.reshape(-1, v), labels.reshape(-1), ignore_index: -100);
        var s = s0.detach().requires_grad_(true);
        var plain = new CrossEntropyLoss().Forward(s, labels);
        Close(reference, plain, 1e-6, "plain CE");
        var chunked = CrossEntropyLoss.WithChunkedOutput(numOutputChunks: 4).Forward(s.tensor_split(4, 1), labels);
        Close(reference, chunked, 1e-6, "chunked CE");
        var sRef = s0.detach().requires_grad_(true);
        torch.nn.functional.cross_entropy(sRef.reshape(-1, v), labels.reshape(-1), ignore_index: -100).backward();
        chunked.backward();
        Close(sRef.grad!, s.grad!, 1e-6, "chunked CE grad");
    }

    [Fact]
    public void Forward_BFloat16Logits_ComputedInFloat32()
    {
        const long v = 11;
        var (s, t) = Logits(15, v);
        var labels = Labels(v);
        var loss = new KdLoss(new DivergenceOptions());
        var low = loss.Forward(s.to(ScalarType.BFloat16), t.to(ScalarType.BFloat16), labels);
        Assert.Equal(ScalarType.Float32, low.dtype);
        var fromRounded = loss.Forward(s.to(ScalarType.BFloat16).to(ScalarType.Float32), t.to(ScalarType.BFloat16).to(ScalarType.Float32), labels);
        Close(fromRounded, low, 1e-6, "bf16 input, fp32 math");
    }

    [Fact]
    public void Forward_MismatchedShapes_ThrowNamingBoth()
    {
        var (s, t) = Logits(16, 8);
        var labels = Labels(8);
        var e = Assert.Throws<ArgumentException>(() => new KdLoss(new DivergenceOptions()).Forward(s, t.narrow(2, 0, 6), labels));
        Assert.Contains("student vocabulary 8", e.Message);
        Assert.Contains("teacher vocabulary 6", e.Message);
        var e2 = Assert.Throws<ArgumentException>(() => new CrossEntropyLoss().Forward(s, labels.narrow(1, 0, 5)));
        Assert.Contains("[3, 7, 8]", e2.Message);
        var e3 = Assert.Throws<ArgumentException>(() =>
            new KdLoss(new DivergenceOptions()).Forward(s.chunk(3, 1), t.chunk(3, 1), labels));   // chunk() gives 3, 3, 1
        Assert.Contains("tensor_split", e3.Message);
    }

    [Fact]
    public void Components_TorchtuneNames_BuildExpectedLosses()
    {
        var methods = typeof(KdLoss).Assembly.GetTypes().SelectMany(t => t.GetMethods())
            .SelectMany(m => m.GetCustomAttributes(typeof(SharpTune.Config.ComponentAttribute), false)
                .Cast<SharpTune.Config.ComponentAttribute>().Select(a => (a.Name, m)))
            .ToDictionary(x => x.Name, x => x.m);
        foreach (var name in new[] { "CEWithChunkedOutputLoss", "ForwardKLWithChunkedOutputLoss", "ReverseKLWithChunkedOutputLoss",
                     "SymmetricKLWithChunkedOutputLoss", "ForwardKLLoss", "LinearCrossEntropyLoss" })
            Assert.True(methods.ContainsKey("sharptune.modules.loss." + name), name);
        var fkl = (KdLoss)methods["sharptune.modules.loss.ForwardKLWithChunkedOutputLoss"].Invoke(null, [8, -100L])!;
        Assert.Equal(DivergenceKind.ForwardKlCrossEntropy, fkl.Options.Kind);
        Assert.Equal(8, fkl.NumOutputChunks);
        var jsd = KdLoss.Create("jsd", temperature: 2, beta: 0.9);
        Assert.Equal(DivergenceKind.Jsd, jsd.Options.Kind);
        Assert.Equal(0.9, jsd.Options.Beta);
    }
}
