// A truncated or garbled file in recipe_state/ must end a resume with a CheckpointFormatException that names the file
// and says what is wrong, never an exception from deep inside the reader ("Attempted to read past the end of the
// stream") that leaves the user guessing which of the three files is broken.
using SharpTune.Checkpointing;
using SharpTune.Tests.Training;

namespace SharpTune.Tests.Checkpointing;

[Collection(GlobalTorchStateCollection.Name)]
public sealed class RecipeStateCorruptFileTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string SaveState(TinyRun run)
    {
        run.RunUntil(2); // AdamW has per-parameter state (step, exp_avg, exp_avg_sq) only after a step
        return RecipeStateStore.Save(_dir.Path, new RecipeState { Seed = 1, StepsRun = 2 }, run.Optimizer);
    }

    private CheckpointFormatException LoadBroken(TinyRun run, string file)
    {
        var e = Assert.Throws<CheckpointFormatException>(() => RecipeStateStore.Load(_dir.Path, run.Optimizer));
        Assert.Equal(file, e.FilePath);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    [Theory]
    [InlineData("manifest.json", 0.0)]
    [InlineData("manifest.json", 0.5)]
    [InlineData("manifest.json", 0.99)]
    [InlineData("optimizer.bin", 0.0)]
    [InlineData("optimizer.bin", 0.1)]
    [InlineData("optimizer.bin", 0.5)]
    [InlineData("optimizer.bin", 0.999)]
    [InlineData("rng_cpu.bin", 0.0)]
    [InlineData("rng_cpu.bin", 0.01)]
    [InlineData("rng_cpu.bin", 0.5)]
    [InlineData("rng_cpu.bin", 0.999)]
    public void Load_TruncatedFile_ThrowsNamingFile(string name, double keep)
    {
        using var run = new TinyRun(seed: 1);
        var file = Path.Combine(SaveState(run), name);
        var bytes = File.ReadAllBytes(file);
        File.WriteAllBytes(file, bytes[..(int)(bytes.Length * keep)]);

        var e = LoadBroken(run, file);
        Assert.Contains(name == "manifest.json" ? "not valid JSON" : "truncated", e.Message);
    }

    [Theory]
    [InlineData("optimizer.bin")]
    [InlineData("rng_cpu.bin")]
    public void Load_BytesAppended_ThrowsNamingFile(string name)
    {
        using var run = new TinyRun(seed: 1);
        var file = Path.Combine(SaveState(run), name);
        File.AppendAllText(file, "extra");

        Assert.Contains("5 bytes", LoadBroken(run, file).Message);
    }

    [Theory]
    [InlineData("optimizer.bin", 1)]
    [InlineData("optimizer.bin", 2)]
    [InlineData("optimizer.bin", 3)]
    [InlineData("rng_cpu.bin", 1)]
    [InlineData("rng_cpu.bin", 2)]
    public void Load_GarbageOfSameLength_ThrowsNamingFile(string name, int seed)
    {
        using var run = new TinyRun(seed: 1);
        var file = Path.Combine(SaveState(run), name);
        var garbage = new byte[new FileInfo(file).Length];
        new Random(seed).NextBytes(garbage);
        File.WriteAllBytes(file, garbage);

        LoadBroken(run, file);
    }

    [Fact]
    public void Load_ManifestNotAnObject_ThrowsNamingFile()
    {
        using var run = new TinyRun(seed: 1);
        var file = Path.Combine(SaveState(run), "manifest.json");
        File.WriteAllText(file, "[1, 2]");

        Assert.Contains("not valid JSON", LoadBroken(run, file).Message);
    }
}
