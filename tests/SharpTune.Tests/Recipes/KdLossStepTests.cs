// The KD recipe's loss step, run as its Train loop runs it, leaves nothing for the .NET finalizers: the recipes no
// longer force a GC after each step, so a tensor created outside the step's dispose scopes would hold its native
// memory until the runtime happened to collect (the issue this guards against grew RSS ~0.4 GiB per benchmark step).
using SharpTune.Data;
using SharpTune.Losses;
using SharpTune.Models;
using SharpTune.Modules;
using SharpTune.Recipes;
using SharpTune.Tests.Training;
using SharpTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Recipes;

[Collection(GlobalTorchStateCollection.Name)]
public sealed class KdLossStepTests
{
    private const int Vocab = 64;

    [Theory]
    [InlineData("chunked", false)]
    [InlineData("chunked", true)]
    [InlineData("fused", false)]
    public void Run_ThreeTrainingSteps_NoTensorOutsideADisposeScope(string loss, bool activationCheckpointing)
    {
        Determinism.Seed(5);
        using var student = DecoderBuilder.Build(Args(dim: 16, layers: 2, tie: true));
        student.CheckpointActivations = activationCheckpointing;
        using var teacher = DecoderBuilder.Build(Args(dim: 32, layers: 2, tie: false));
        foreach (var p in teacher.parameters()) p.requires_grad = false;
        teacher.eval();
        var fused = loss == "fused";
        var step = new KnowledgeDistillationSingleDevice.LossStep(student, teacher, null,
            fused ? null : CrossEntropyLoss.WithChunkedOutput(4), fused ? null : KdLoss.TorchtuneForwardKlChunked(4),
            fused ? FusedLinearDistillationLoss.Create("forward_kl_ce", kdRatio: 0.5) : null,
            kdRatio: 0.5, truncateTeacherTo: 0, tokenizerVocab: Vocab, CPU);
        var trainable = ModuleParameters.Trainable(student);
        using var optimizer = Optimizers.AdamW(trainable, lr: 1e-3);
        using var sync = new LocalGradientSync(trainable, maxGradNorm: 1.0);
        var generator = new Generator(11);
        var statistics = DisposeScopeManager.Statistics;
        var outsideBefore = statistics.CreatedOutsideScopeCount;
        var liveBefore = statistics.ThreadTotalLiveCount;
        var losses = new List<double>();
        var recomputedBefore = ActivationCheckpointing.RecomputationsOnThisThread;

        for (var i = 0; i < 3; i++)
        {
            using (NewDisposeScope()) // as KnowledgeDistillationSingleDevice.Train: one scope per micro-batch
            {
                var tokens = randint(0, Vocab, [2, 12], generator: generator); // [b, s]
                var labels = cat([tokens[.., 1..], full(2, 1, (long)Sample.IgnoreIndex, ScalarType.Int64)], 1); // [b, s]
                var (sum, _, _, count) = step.Run(new Batch(tokens, labels), []);
                sync.Backward(sum, count);
            }
            using (NewDisposeScope()) // and one around the norm, the clip and the optimizer
            {
                losses.Add(sync.Finish().Loss);
                optimizer.step();
                optimizer.zero_grad();
            }
        }

        Assert.Equal(activationCheckpointing, ActivationCheckpointing.RecomputationsOnThisThread > recomputedBefore);
        Assert.All(losses, l => Assert.True(double.IsFinite(l) && l > 0, $"loss {l}"));
        Assert.Equal(0, statistics.CreatedOutsideScopeCount - outsideBefore);
        Assert.Equal(liveBefore, statistics.ThreadTotalLiveCount);
    }

    private static DecoderArgs Args(int dim, int layers, bool tie) => new()
    {
        VocabSize = Vocab, NumLayers = layers, NumHeads = 2, NumKvHeads = 1, EmbedDim = dim, IntermediateDim = 2 * dim,
        MaxSeqLen = 16, TieEmbeddings = tie,
    };
}
