using SharpTune.Checkpointing;
using SharpTune.Tests.Training;
using SharpTune.Training;
using TorchSharp;

namespace SharpTune.Tests.Checkpointing;

[Collection(GlobalTorchStateCollection.Name)]
public sealed class RecipeStateStoreTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "sharptune-rs-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    [Fact]
    public void Load_SavedMidRunIntoFreshObjects_ContinuesBitExactly()
    {
        // Uninterrupted: 14 steps (crosses an epoch boundary at 6 and 12).
        byte[] expected;
        using (var full = new TinyRun(seed: 11))
        {
            full.RunUntil(14);
            expected = full.WeightBytes();
        }

        // Interrupted at step 8: save weights + recipe state, then draw from the RNG to disturb it.
        var weights = Path.Combine(_dir, "model.bin");
        Directory.CreateDirectory(_dir);
        using (var first = new TinyRun(seed: 11))
        {
            first.RunUntil(8);
            first.Model.save(weights);
            RecipeStateStore.Save(_dir, new RecipeState
            {
                Seed = 11, EpochsRun = 1, TotalEpochs = 3, StepsRun = 8, DataLoaderPosition = 2,
                SchedulerLastEpoch = first.Scheduler.LastEpoch, TotalTokens = 32,
            }, first.Optimizer);
        }

        // Fresh objects built from a different seed, then restored.
        using var resumed = new TinyRun(seed: 99);
        torch.rand(1000).Dispose();
        resumed.Model.load(weights);
        var state = RecipeStateStore.Load(_dir, resumed.Optimizer);
        resumed.Scheduler.Restore(state.SchedulerLastEpoch);
        resumed.ResumeAt(state.StepsRun, state.Seed);
        resumed.RunUntil(14);

        Assert.Equal(8, state.StepsRun);
        Assert.Equal(2, state.DataLoaderPosition);
        Assert.Equal(expected, resumed.WeightBytes());
    }

    [Fact]
    public void Load_WithoutRngRestore_Diverges()
    {
        // Guards the test above: the RNG state is what makes dropout masks line up after resume.
        byte[] expected;
        using (var full = new TinyRun(seed: 11))
        {
            full.RunUntil(10);
            expected = full.WeightBytes();
        }
        var weights = Path.Combine(_dir, "model.bin");
        Directory.CreateDirectory(_dir);
        using (var first = new TinyRun(seed: 11))
        {
            first.RunUntil(5);
            first.Model.save(weights);
            RecipeStateStore.Save(_dir, new RecipeState { Seed = 11, StepsRun = 5, SchedulerLastEpoch = first.Scheduler.LastEpoch }, first.Optimizer);
        }
        using var resumed = new TinyRun(seed: 99);
        resumed.Model.load(weights);
        var state = RecipeStateStore.Load(_dir, resumed.Optimizer, restoreRng: false);
        resumed.Scheduler.Restore(state.SchedulerLastEpoch);
        resumed.ResumeAt(state.StepsRun, state.Seed);
        resumed.RunUntil(10);
        Assert.NotEqual(expected, resumed.WeightBytes());
    }

    [Fact]
    public void Save_Twice_ReplacesAndLeavesNoTemporaryFolders()
    {
        using var run = new TinyRun(seed: 1);
        RecipeStateStore.Save(_dir, new RecipeState { StepsRun = 1 }, run.Optimizer);
        RecipeStateStore.Save(_dir, new RecipeState { StepsRun = 2 }, run.Optimizer);
        Assert.Equal(new[] { RecipeStateStore.FolderName }, Directory.GetDirectories(_dir).Select(Path.GetFileName));
        Assert.Equal(2, RecipeStateStore.Load(_dir, run.Optimizer).StepsRun);
    }

    [Fact]
    public void Load_DifferentModelShape_ThrowsNamingShapes()
    {
        using (var run = new TinyRun(seed: 1))
            RecipeStateStore.Save(_dir, new RecipeState(), run.Optimizer);
        var p = torch.nn.Parameter(torch.zeros(3, 3));
        var q = torch.nn.Parameter(torch.zeros(16));
        var r = torch.nn.Parameter(torch.zeros(1, 16));
        var s = torch.nn.Parameter(torch.zeros(1));
        using var other = Optimizers.AdamW(new[] { p, q, r, s });
        var e = Assert.Throws<InvalidDataException>(() => RecipeStateStore.Load(_dir, other));
        Assert.Contains("[16, 8]", e.Message);
        Assert.Contains("[3, 3]", e.Message);
    }

    [Fact]
    public void Load_MissingFolder_ThrowsNamingFolder()
    {
        using var run = new TinyRun(seed: 1);
        var e = Assert.Throws<FileNotFoundException>(() => RecipeStateStore.Load(_dir, run.Optimizer));
        Assert.Contains("recipe_state", e.Message);
    }

    [Fact]
    public void Load_KilledBetweenRenames_UsesPreviousState()
    {
        // Given a save that was killed after moving the old folder aside and before renaming the new one in
        using var run = new TinyRun(seed: 1);
        RecipeStateStore.Save(_dir, new RecipeState { StepsRun = 7 }, run.Optimizer);
        Directory.Move(Path.Combine(_dir, RecipeStateStore.FolderName), Path.Combine(_dir, $".{RecipeStateStore.FolderName}.old-1234"));
        // Then the previous state is still found
        Assert.Equal(7, RecipeStateStore.Load(_dir, run.Optimizer).StepsRun);
    }

    [Fact]
    public void Load_SeveralLeftoversAndNoCommittedState_PicksMostStepsNotDirectoryOrder()
    {
        // Given the folder of issue 16: two kills between the renames of older versions left superseded states whose
        // names sort before the newest, complete one
        using var run = new TinyRun(seed: 1);
        Directory.CreateDirectory(_dir);
        foreach (var (steps, name) in new[] { (4, ".recipe_state.old-0000"), (12, ".recipe_state.tmp-ffff"), (8, ".recipe_state.old-1111") })
        {
            var source = RecipeStateStore.Save(_dir + "-" + name, new RecipeState { StepsRun = steps }, run.Optimizer);
            Directory.Move(source, Path.Combine(_dir, name));
            Directory.Delete(_dir + "-" + name);
        }
        Directory.CreateDirectory(Path.Combine(_dir, ".recipe_state.tmp-0001")); // cut short: no manifest
        // Then the newest complete one is loaded, and Recover puts it in place
        Assert.Equal(12, RecipeStateStore.Load(_dir, run.Optimizer).StepsRun);
        var recovery = CheckpointCommit.Recover(_dir);
        Assert.True(recovery.StateMoved);
        Assert.Equal(new[] { RecipeStateStore.FolderName }, Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName));
        Assert.Equal(12, RecipeStateStore.Load(_dir, run.Optimizer).StepsRun);
    }

    [Fact]
    public void Load_PendingStateBesideCommittedOne_PicksPendingAndRecoverPromotesIt()
    {
        // Given a save killed after its commit rename, before the pending state was renamed into place, plus the
        // hidden folders other kills leave, and folders recovery must not touch
        using var run = new TinyRun(seed: 1);
        RecipeStateStore.Save(_dir, new RecipeState { StepsRun = 9 }, run.Optimizer);
        Directory.Move(Path.Combine(_dir, RecipeStateStore.FolderName), Path.Combine(_dir, RecipeStateStore.PendingName));
        RecipeStateStore.Save(_dir + "-older", new RecipeState { StepsRun = 7 }, run.Optimizer);
        Directory.Move(Path.Combine(_dir + "-older", RecipeStateStore.FolderName), Path.Combine(_dir, RecipeStateStore.FolderName));
        Directory.Delete(_dir + "-older");
        foreach (var name in new[] { ".step_3.tmp-abc123", ".epoch_0.trash-0f", ".recipe_state.trash-99", "step_2", ".cache", ".step_x.tmp-1" })
            File.WriteAllText(Path.Combine(Directory.CreateDirectory(Path.Combine(_dir, name)).FullName, "f"), "x");

        // Then the pending state is the one found, and Recover leaves it as recipe_state/ with only the visible and
        // foreign folders beside it
        Assert.Equal(9, RecipeStateStore.Peek(_dir)!.StepsRun);
        var recovery = CheckpointCommit.Recover(_dir);
        Assert.Equal(new[] { ".epoch_0.trash-0f", ".recipe_state.trash-99", ".step_3.tmp-abc123" }, recovery.Removed);
        Assert.Equal(new[] { ".cache", ".step_x.tmp-1", "recipe_state", "step_2" },
            Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(9, RecipeStateStore.Load(_dir, run.Optimizer).StepsRun);
        Assert.True(CheckpointCommit.Recover(_dir).Clean);
    }

    [Fact]
    public void Load_WrongFormatVersion_ThrowsNamingManifest()
    {
        using var run = new TinyRun(seed: 1);
        var folder = RecipeStateStore.Save(_dir, new RecipeState(), run.Optimizer);
        var manifest = Path.Combine(folder, "manifest.json");
        File.WriteAllText(manifest, File.ReadAllText(manifest).Replace("\"version\": 1", "\"version\": 99"));
        var e = Assert.Throws<InvalidDataException>(() => RecipeStateStore.Load(_dir, run.Optimizer));
        Assert.Contains("manifest.json", e.Message);
        Assert.Contains("version 99", e.Message);
    }
}
