// The checkpoint commit protocol survives a kill at every point: a tiny full fine-tune (2 epochs x 3 steps, a
// checkpoint every step, keep_last_n_checkpoints 1, so folders are replaced, committed and pruned) is stopped at each
// rename/unlink/rmdir of the commit path in turn (CommitFs, armed with a KillSwitch: from operation N on nothing is
// performed and no cleanup runs, as after kill -9), then resumed; and for a sample of those, the resumed run is
// stopped again at each of a spread of its own operations (its start-up recovery included) and resumed once more.
// Every run must end with the uninterrupted run's bytes (weights, optimizer state, RNG) and no hidden folders.
using SharpTune.Checkpointing;
using SharpTune.Recipes.Support;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class CheckpointKillPointTests
{
    private const string Recipe = "full_finetune_single_device";
    private const string Config = "tiny/teacher_full_single_device";

    // Files that must match the uninterrupted run byte for byte.
    private static readonly string[] Compared =
        ["epoch_1/model.safetensors", "step_5/model.safetensors", "recipe_state/optimizer.bin", "recipe_state/rng_cpu.bin"];

    [Fact]
    public void Resume_KilledAtEveryCommitOperationOnceOrTwice_EndsByteIdenticalWithNoLeftovers()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        using var tmp = new Checkpointing.TempDir();
        var root = tmp.Path;

        // Given the uninterrupted run (which also creates the shared random init) and the operations it performs
        Run(root, "straight", resume: false, killSwitch: null);
        var recording = new KillSwitch();
        Run(root, "recorded", resume: false, recording);
        var expected = Compared.ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(root, "straight", f)));
        AssertFinished(Path.Combine(root, "recorded"), expected, "recorded run");
        var operations = recording.Performed;
        var commits = operations.Select((op, i) => (op, i)).Where(x => x.op.EndsWith(RecipeStateStore.PendingName, StringComparison.Ordinal)).Select(x => x.i).ToList();
        Assert.Equal(6, commits.Count); // step_1, step_2, epoch_0, step_4, step_5, epoch_1
        Assert.Contains(operations, op => op.StartsWith("rmdir", StringComparison.Ordinal) && op.Contains(".step_", StringComparison.Ordinal)); // pruning is covered
        Assert.Contains(operations, op => op.StartsWith("rename", StringComparison.Ordinal) && op.Contains(".recipe_state.trash-", StringComparison.Ordinal));

        var secondKills = 0;
        for (var n = 0; n < operations.Count; n++)
        {
            // When the run is killed before operation n
            var dir = Path.Combine(root, $"kill_{n}");
            Assert.Throws<SimulatedKillException>(() => Run(root, $"kill_{n}", resume: false, new KillSwitch { KillAt = n }));

            // Then the newest committed state is the one found, and its checkpoint folder is complete
            var committed = commits.Count(c => c < n);
            var found = RecipeStateStore.Peek(dir);
            if (committed > 0) Assert.True(found?.StepsRun == committed, $"kill at {n} ({operations[n]}): found state of step {found?.StepsRun}, the newest committed is step {committed}");
            else Assert.True(found is null || found.StepsRun == 1, $"kill at {n}: found a state of step {found?.StepsRun} before the first commit");
            AssertVisibleCheckpointsComplete(dir, $"kill at {n} ({operations[n]})");

            // And resuming (or starting again when nothing was committed) ends as the uninterrupted run did
            var snapshot = Path.Combine(root, $"snapshot_{n}");
            CopyDirectory(dir, snapshot);
            var resumed = new KillSwitch();
            Run(root, $"kill_{n}", resume: found is not null, resumed);
            AssertFinished(dir, expected, $"kill at {n} ({operations[n]})");
            Directory.Delete(dir, recursive: true);

            // And a second kill of the resumed run, at a spread of its operations for every third first kill, also resumes
            if (n % 3 == 0)
                foreach (var m in Spread(resumed.Performed.Count, n))
                {
                    var again = Path.Combine(root, $"kill_{n}_{m}");
                    CopyDirectory(snapshot, again);
                    Assert.Throws<SimulatedKillException>(() => Run(root, $"kill_{n}_{m}", resume: found is not null, new KillSwitch { KillAt = m }));
                    AssertVisibleCheckpointsComplete(again, $"kill at {n}, then at {m} ({resumed.Performed[m]})");
                    Run(root, $"kill_{n}_{m}", resume: RecipeStateStore.Exists(again), killSwitch: null);
                    AssertFinished(again, expected, $"kill at {n} ({operations[n]}), then at {m} ({resumed.Performed[m]})");
                    Directory.Delete(again, recursive: true);
                    secondKills++;
                }
            Directory.Delete(snapshot, recursive: true);
        }
        Assert.True(secondKills >= operations.Count, $"only {secondKills} second kills for {operations.Count} first ones");
        Console.WriteLine($"kill points: {operations.Count} single, {secondKills} double; {watch.Elapsed.TotalSeconds:F1} s");
    }

    // Up to 4 operation indices spread over [0, count), shifted by the first kill so that the sample covers them all.
    private static IEnumerable<int> Spread(int count, int salt) =>
        Enumerable.Range(0, 4).Select(k => (k * count / 4 + salt / 3) % count).Distinct();

    private static void Run(string root, string name, bool resume, KillSwitch? killSwitch)
    {
        using var armed = killSwitch is null ? null : CommitFs.Arm(killSwitch);
        RecipeRunner.Run(Recipe, Config,
            $"output_dir={root}/{name}", $"checkpointer.checkpoint_dir={root}/init", "epochs=2", "max_steps_per_epoch=3",
            "save_every_n_steps=1", "checkpointer.keep_last_n_checkpoints=1", "log_peak_memory_stats=false", "dataset.num_samples=12", "metric_logger.jsonl=false",
            $"resume_from_checkpoint={(resume ? "true" : "false")}");
    }

    private static void AssertFinished(string dir, Dictionary<string, byte[]> expected, string what)
    {
        foreach (var (file, bytes) in expected)
            Assert.True(bytes.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir, file))), $"{what}: {file} differs from the uninterrupted run");
        // The run lock (RunFolder) is meant to stay: deleting it would let two later runs lock different files.
        var hidden = Directory.EnumerateFileSystemEntries(dir).Select(Path.GetFileName)
            .Where(n => n!.StartsWith('.') && n is not (RunFolder.LockFileName or RunFolder.OwnerFileName)).ToList();
        Assert.True(hidden.Count == 0, $"{what}: left {string.Join(", ", hidden)}");
        var checkpoints = Directory.EnumerateDirectories(dir).Select(Path.GetFileName).Where(n => n!.StartsWith("step_", StringComparison.Ordinal) || n!.StartsWith("epoch_", StringComparison.Ordinal));
        var left = string.Join(", ", checkpoints.Order(StringComparer.Ordinal));
        Assert.True(left == "epoch_1, step_5", $"{what}: checkpoint folders {left}, expected epoch_1, step_5");
    }

    // No kill may leave a visible checkpoint folder that is partly written or partly deleted.
    private static void AssertVisibleCheckpointsComplete(string dir, string what)
    {
        foreach (var folder in Directory.EnumerateDirectories(dir).Where(d => Path.GetFileName(d).StartsWith("step_", StringComparison.Ordinal) || Path.GetFileName(d).StartsWith("epoch_", StringComparison.Ordinal)))
            Assert.True(File.Exists(Path.Combine(folder, "model.safetensors")) && File.Exists(Path.Combine(folder, "config.json")),
                $"{what}: {Path.GetFileName(folder)} is incomplete");
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        foreach (var sub in Directory.GetDirectories(from)) CopyDirectory(sub, Path.Combine(to, Path.GetFileName(sub)));
    }
}
