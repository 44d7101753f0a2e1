// The `ablate` and `validate` verbs on study files, through the real command app.
using SharpTune.Tests.Cli;

namespace SharpTune.Tests.Study;

public sealed class AblateCommandTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "sharptune-ablate-" + Guid.NewGuid().ToString("N"));

    public AblateCommandTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    [Fact]
    public void Validate_StudyWithMisspelledKey_ExitsOneNamingKeyAndSuggestion()
    {
        var path = Path.Combine(_dir, "s.yaml");
        File.WriteAllText(path, "# study: typo\noutput_dir: out\nbaseline: a\narms:\n  a: {checkpoint: /m, evalaute: false}\n");

        var r = CliHarness.Run("validate", path);

        Assert.Equal(1, r.ExitCode);
        Assert.Contains("arms.a.evalaute", r.Err, StringComparison.Ordinal);
        Assert.Contains("evaluate", r.Err, StringComparison.Ordinal);
    }

    [Fact]
    public void Ablate_DryRunOfDemoStudy_PrintsArmsInDependencyOrderWithCommands()
    {
        var r = CliHarness.Run("ablate", "--config", "studies/demo", "--dry-run", $"output_dir={_dir}");

        Assert.True(r.ExitCode == 0, r.Err);
        var lines = r.Out.Split('\n');
        Assert.Contains(lines, l => l.StartsWith("1. teacher", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("3. kd_fkl.kd_ratio-0.5 after student_ce", StringComparison.Ordinal));
        Assert.Contains($"sharptune run knowledge_distillation_single_device --config demo/kd output_dir={Path.Combine(_dir, "arms", "kd_fkl.kd_ratio-1.0")} max_steps=300", r.Out, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(_dir, "arms")), "a dry run must not run anything");
    }
}
