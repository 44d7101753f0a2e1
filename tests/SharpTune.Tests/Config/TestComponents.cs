// Components used only by the config tests: a tiny "model", an optimizer that needs recipe-supplied parameters,
// and an options record, exercising every binding path (scalars, enums, lists, nullable, defaults, nesting).
using SharpTune.Config;

namespace SharpTune.Tests.Config;

public enum TestDtype { Float32, BFloat16 }

public sealed record TestModel(int NumLayers, float Dropout, TestDtype Dtype, IReadOnlyList<string> Targets, string? Name, TestModel? Inner);

public sealed record TestParameter(double Value);

public sealed record TestOptimizer(IEnumerable<TestParameter> Parameters, double Lr, double WeightDecay);

public sealed record TestLoss(string Kind, TestModel? Teacher);

public sealed record TestOptions(int Rank, double Alpha = 16);

public static class TestComponents
{
    public static ComponentRegistry Registry { get; } = ComponentRegistry.Scan([typeof(TestComponents).Assembly]);

    [Component("test.models.tiny")]
    public static TestModel Tiny(int numLayers, float dropout = 0.0f, TestDtype dtype = TestDtype.Float32,
        IReadOnlyList<string>? loraTargets = null, string? name = null, TestModel? inner = null) =>
        new(numLayers, dropout, dtype, loraTargets ?? [], name, inner);

    [Component("test.models.tiny_big")]
    public static TestModel TinyBig(int? maxSeqLen = null) => new(maxSeqLen ?? 99, 0, TestDtype.Float32, [], null, null);

    [Component("test.optim.AdamW")]
    public static TestOptimizer AdamW(IEnumerable<TestParameter> parameters, double lr, double weightDecay = 0.01) => new(parameters, lr, weightDecay);

    [Component("test.loss.ForwardKL")]
    public static TestLoss ForwardKl(string kind = "fkl", TestModel? teacher = null) => new(kind, teacher);

    [Component("test.options")]
    public static TestOptions Options(TestOptions options) => options;

    [Component("test.throws")]
    public static TestOptions Throws(int rank) => throw new ArgumentOutOfRangeException(nameof(rank), $"rank must be positive, got {rank}");
}
