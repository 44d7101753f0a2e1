// The `sharptune` launcher script at the repository root, run with bash against a stand-in `dotnet` (so nothing is
// built): it must point the CLI at the repository's configs/ folder, which the user edits, so that config errors
// name configs/<family>/<name>.yaml instead of the build copy under .build/cli.
using System.Diagnostics;

namespace SharpTune.Tests.Cli;

public sealed class LauncherScriptTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("sharptune-launcher-").FullName;

    public LauncherScriptTests()
    {
        // A repository with the real script, its watched folders and a build stamp newer than every source.
        File.Copy(Path.Combine(SharedData.RepoRoot, "sharptune"), Path.Combine(_root, "sharptune"));
        foreach (var d in new[] { "src", "configs", "build", ".build/cli", "bin" }) Directory.CreateDirectory(Path.Combine(_root, d));
        File.WriteAllText(Path.Combine(_root, "Directory.Build.props"), "<Project />");
        File.WriteAllText(Path.Combine(_root, "Directory.Packages.props"), "<Project />");
        File.WriteAllText(Path.Combine(_root, ".build/cli/.stamp"), "");
        File.SetLastWriteTimeUtc(Path.Combine(_root, ".build/cli/.stamp"), DateTime.UtcNow.AddMinutes(5));
        // The stand-in prints the configs folder the CLI would read.
        var dotnet = Path.Combine(_root, "bin", "dotnet");
        File.WriteAllText(dotnet, "#!/usr/bin/env bash\necho \"configs=${SHARPTUNE_CONFIGS_DIR:-}\"\necho \"args=$*\"\n");
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(dotnet, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    public void Dispose()
    {
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { }
    }

    private string Launch(string? configsDir)
    {
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(_root, "sharptune"));
        start.ArgumentList.Add("validate");
        start.ArgumentList.Add("tiny/x");
        start.Environment["PATH"] = Path.Combine(_root, "bin") + ":" + Environment.GetEnvironmentVariable("PATH");
        if (configsDir is null) start.Environment.Remove("SHARPTUNE_CONFIGS_DIR");
        else start.Environment["SHARPTUNE_CONFIGS_DIR"] = configsDir;
        using var p = Process.Start(start)!;
        var output = p.StandardOutput.ReadToEnd();
        var error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, error);
        Assert.DoesNotContain("building", error); // the stamp is fresh: the stand-in was not asked to build
        return output;
    }

    [Fact]
    public void Launcher_Default_PointsCliAtRepositoryConfigs()
    {
        var output = Launch(null);
        Assert.Contains($"configs={Path.Combine(_root, "configs")}\n", output);
        Assert.Contains($"args={Path.Combine(_root, ".build/cli/SharpTune.Cli.dll")} validate tiny/x\n", output);
    }

    [Fact]
    public void Launcher_UserConfigsDir_IsKept()
    {
        Assert.Contains("configs=/elsewhere/configs\n", Launch("/elsewhere/configs"));
    }

    [Fact]
    public void Validate_ProblemInShippedConfig_NamesTheFileInTheConfigsFolder()
    {
        // What the CLI then prints: the problem's file is the one in the configs folder it was pointed at.
        Directory.CreateDirectory(Path.Combine(_root, "configs", "tiny"));
        var file = Path.Combine(_root, "configs", "tiny", "x.yaml");
        File.WriteAllText(file, "# recipe: torch_info\noutput_dir: /tmp/x\nbenchmark: {size: lots}\n");
        var r = CliHarness.Run(["validate", "tiny/x"], Path.Combine(_root, "configs"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"{file}:3:", r.Err);
    }
}
