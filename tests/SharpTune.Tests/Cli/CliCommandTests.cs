// The CLI verbs end to end, in-process: ls, cp, cat, validate, run (validate-first, nothing written on failure),
// download against the loopback fake Hub, --help on every verb, and one-line errors with non-zero exit codes.
using System.Text.Json;
using SharpTune.Recipes;
using SharpTune.Tests.Hub;

namespace SharpTune.Tests.Cli;

public sealed class CliCommandTests : IDisposable
{
    private readonly string _tmp = Directory.CreateTempSubdirectory("sharptune-cli-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_tmp, recursive: true); } catch (IOException) { }
    }

    private static string ShippedConfig(string name) => ConfigCatalog.CreateDefault().Resolve(name);

    [Fact]
    public void Ls_Default_ListsRecipeWithItsConfig()
    {
        var r = CliHarness.Run("ls");
        Assert.Equal(0, r.ExitCode);
        var line = r.Out.Split('\n').Single(l => l.Contains("torch_info", StringComparison.Ordinal) && l.Contains("dev/torch_info", StringComparison.Ordinal));
        Assert.True(line.IndexOf("torch_info", StringComparison.Ordinal) < line.IndexOf("dev/torch_info", StringComparison.Ordinal));
    }

    [Fact]
    public void Ls_ConfigWithoutRecipeLine_IsListedAsOrphan()
    {
        Directory.CreateDirectory(Path.Combine(_tmp, "fam"));
        File.WriteAllText(Path.Combine(_tmp, "fam", "lonely.yaml"), "# no recipe here\na: 1\n");
        var r = CliHarness.Run(["ls"], _tmp);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("fam/lonely", r.Out);
        Assert.Contains("(no '# recipe:' line)", r.Out);
    }

    [Fact]
    public void Ls_Piped_LongNamesNotWrappedOrCut()
    {
        // A redirected stdout has no terminal width; the table must not fall back to 80 columns and break names.
        var family = "family_" + new string('f', 60);
        var name = "config_" + new string('c', 60);
        Directory.CreateDirectory(Path.Combine(_tmp, family));
        File.WriteAllText(Path.Combine(_tmp, family, name + ".yaml"), "# recipe: torch_info\noutput_dir: /tmp/x\n");
        var r = CliHarness.Run(["ls"], _tmp);
        Assert.Equal(0, r.ExitCode);
        var line = Assert.Single(r.Out.Split('\n'), l => l.Contains(family, StringComparison.Ordinal));
        Assert.Contains($"{family}/{name}", line);
        Assert.Contains("torch_info", line);
    }

    [Fact]
    public void Version_PrintsVersionCommitLibTorchAndNativesKind()
    {
        var r = CliHarness.Run("--version");
        Assert.True(r.ExitCode == 0, r.Err);
        var lines = r.Out.Trim().Split('\n').Select(l => l.TrimEnd()).ToArray();
        var props = File.ReadAllText(Path.Combine(SharedData.RepoRoot, "Directory.Build.props"));
        var version = System.Text.RegularExpressions.Regex.Match(props, "<Version>([^<]+)</Version>").Groups[1].Value;
        Assert.Equal($"sharptune {version}", lines[0]);
        // The commit the SDK's Source Link recorded at build time: a full sha in a git checkout.
        var inCheckout = Directory.Exists(Path.Combine(SharedData.RepoRoot, ".git")) || File.Exists(Path.Combine(SharedData.RepoRoot, ".git"));
        Assert.Matches(inCheckout ? "^commit: [0-9a-f]{40}$" : "^commit: unknown$", lines[1]);
        var packages = File.ReadAllText(Path.Combine(SharedData.RepoRoot, "Directory.Packages.props"));
        var torchSharp = System.Text.RegularExpressions.Regex.Match(packages, "Include=\"TorchSharp\" Version=\"([^\"]+)\"").Groups[1].Value;
        Assert.Equal($"torchsharp: {torchSharp}", lines[2]);
        // The natives the test build got: libtorch-cpu-linux-x64 unless built with SharpTuneNatives=cuda, at LibTorchVersion.
        var libtorchVersion = System.Text.RegularExpressions.Regex.Match(packages, "<LibTorchVersion>([^<]+)</LibTorchVersion>").Groups[1].Value;
        var cuda = System.Text.RegularExpressions.Regex.Match(packages, "<LibTorchCudaPackage>([^<]+)</LibTorchCudaPackage>").Groups[1].Value;
        var natives = lines[4] == "natives: cuda" ? cuda : "libtorch-cpu-linux-x64";
        Assert.Equal($"libtorch: {libtorchVersion} ({natives})", lines[3]);
        Assert.Contains(lines[4], new[] { "natives: cpu", "natives: cuda" });
    }

    [Theory]
    [InlineData("0.1.0+0123abc", "0.1.0", "0123abc")]
    [InlineData("0.1.0", "0.1.0", "unknown")]
    [InlineData(null, "unknown", "unknown")]
    public void BuildInfo_Split_VersionAndCommit(string? informational, string version, string commit) =>
        Assert.Equal((version, commit), SharpTune.Cli.BuildInfo.Split(informational));

    [Fact]
    public void Cp_Config_CopiesFileVerbatimAndAddsExtension()
    {
        var dest = Path.Combine(_tmp, "mine");
        var r = CliHarness.Run("cp", "dev/torch_info", dest);
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(File.ReadAllText(ShippedConfig("dev/torch_info")), File.ReadAllText(dest + ".yaml"));
    }

    [Fact]
    public void Cp_IntoExistingFolder_KeepsFileName()
    {
        Assert.Equal(0, CliHarness.Run("cp", "dev/torch_info", _tmp).ExitCode);
        Assert.True(File.Exists(Path.Combine(_tmp, "torch_info.yaml")));
    }

    [Fact]
    public void Cp_TrailingSlashToNewFolder_WritesUnderSourceName()
    {
        // docs/cli.md: `cp dev/torch_info my_configs/ --make-parents` -> my_configs/torch_info.yaml (not my_configs/.yaml)
        var folder = Path.Combine(_tmp, "my_configs");
        Assert.Equal(0, CliHarness.Run("cp", "dev/torch_info", folder + "/", "--make-parents").ExitCode);
        Assert.Equal(["torch_info.yaml"], Directory.GetFiles(folder).Select(Path.GetFileName));
        Assert.Equal(0, CliHarness.Run("cp", "torch_info", Path.Combine(_tmp, "recipes") + "/", "--make-parents").ExitCode);
        Assert.Equal(["TorchInfo.cs"], Directory.GetFiles(Path.Combine(_tmp, "recipes")).Select(Path.GetFileName));
    }

    [Fact]
    public void Cp_NoClobber_LeavesExistingFile()
    {
        var dest = Path.Combine(_tmp, "x.yaml");
        File.WriteAllText(dest, "keep");
        var r = CliHarness.Run("cp", "dev/torch_info", dest, "--no-clobber");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal("keep", File.ReadAllText(dest));
        Assert.Contains("not overwriting", r.Out);
        Assert.Equal(0, CliHarness.Run("cp", "dev/torch_info", dest).ExitCode);
        Assert.NotEqual("keep", File.ReadAllText(dest));
    }

    [Fact]
    public void Cp_MissingParent_FailsUnlessMakeParents()
    {
        var dest = Path.Combine(_tmp, "a", "b", "c.yaml");
        var r = CliHarness.Run("cp", "dev/torch_info", dest);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--make-parents", r.Err);
        Assert.Single(r.Err.Trim().Split('\n'));
        Assert.Equal(0, CliHarness.Run("cp", "dev/torch_info", dest, "--make-parents").ExitCode);
        Assert.True(File.Exists(dest));
    }

    [Fact]
    public void Cp_Recipe_CopiesItsSource()
    {
        var dest = Path.Combine(_tmp, "MyInfo");
        Assert.Equal(0, CliHarness.Run("cp", "torch_info", dest).ExitCode);
        var source = File.ReadAllText(dest + ".cs");
        Assert.Contains("[Recipe(\"torch_info\"", source);
        Assert.Contains("public sealed class TorchInfo : IRecipe", source);
    }

    [Fact]
    public void Cp_UnknownSource_SuggestsAndFails()
    {
        var r = CliHarness.Run("cp", "dev/torch_inf", Path.Combine(_tmp, "x"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("did you mean 'dev/torch_info'", r.Err);
    }

    [Fact]
    public void Cat_Config_PrintsFileAsWritten()
    {
        var r = CliHarness.Run("cat", "dev/torch_info");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(File.ReadAllText(ShippedConfig("dev/torch_info")), r.Out);
    }

    [Fact]
    public void Cat_Sort_PrintsKeysSortedWithoutComments()
    {
        var path = Path.Combine(_tmp, "s.yaml");
        File.WriteAllText(path, "# c\nzeta: 1\nalpha:\n  y: 2\n  b: 'x'\n");
        var r = CliHarness.Run("cat", path, "--sort");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal("alpha:\n  b: x\n  y: 2\nzeta: 1\n", r.Out);
    }

    [Fact]
    public void Cat_RecipeName_SaysItIsARecipe()
    {
        var r = CliHarness.Run("cat", "torch_info");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("is a recipe", r.Err);
    }

    [Fact]
    public void Validate_ShippedConfig_IsWellFormed()
    {
        var r = CliHarness.Run("validate", "dev/torch_info");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("well-formed for recipe 'torch_info'", r.Out);
    }

    [Fact]
    public void Validate_SeveralProblems_ListsEachWithSourceAndExitsOne()
    {
        var r = CliHarness.Run("validate", "dev/torch_info", "threads=many", "benchmark.sise=3", "~output_dir", "seed=${nope}");
        Assert.Equal(1, r.ExitCode);
        var lines = r.Err.Trim().Split('\n');
        Assert.Equal(5, lines.Length);
        Assert.Contains(lines, l => l.StartsWith("override 'threads=many': threads: expected int", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("did you mean 'size'", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("missing required key 'output_dir'", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("bad interpolation", StringComparison.Ordinal));
        Assert.Equal("error: 4 problems in dev/torch_info", lines[^1]);
    }

    [Fact]
    public void Validate_MalformedYaml_ReportsFileLineColumn()
    {
        var path = Path.Combine(_tmp, "bad.yaml");
        File.WriteAllText(path, "a: 1\n  b: 2\nc: 3\n");
        var r = CliHarness.Run("validate", path);
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"{path}:2:", r.Err);
        Assert.Contains("malformed YAML", r.Err);
    }

    [Fact]
    public void Run_InvalidConfig_RunsNothingAndWritesNothing()
    {
        var output = Path.Combine(_tmp, "run");
        var r = CliHarness.Run("run", "torch_info", "--config", "dev/torch_info", $"output_dir={output}", "benchmark.size=lots");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("benchmark.size: expected int, got 'lots'", r.Err);
        Assert.Contains("nothing was run", r.Err);
        Assert.False(Directory.Exists(output));
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void Run_TorchInfo_WritesReportWithMeasuredFigure()
    {
        var output = Path.Combine(_tmp, "run");
        var r = CliHarness.Run("run", "torch_info", "--config", "dev/torch_info", $"output_dir={output}", "benchmark.size=48", "benchmark.repeats=2");
        Assert.True(r.ExitCode == 0, r.Err);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "torch_info.json")));
        var matmul = report.RootElement.GetProperty("matmul");
        Assert.Equal(48, matmul.GetProperty("size").GetInt32());
        Assert.True(matmul.GetProperty("gflops").GetDouble() > 0);
        Assert.Equal("0.107.0", report.RootElement.GetProperty("torchsharp_version").GetString());
        Assert.Contains("matmul check", r.Out);
        Assert.Empty(Directory.GetFiles(output, "*.tmp*"));
    }

    [Fact]
    public void Run_UnknownRecipe_OneLineErrorWithSuggestion()
    {
        var r = CliHarness.Run("run", "torchinfo", "--config", "dev/torch_info");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("error: unknown recipe 'torchinfo' (did you mean 'torch_info'?); `sharptune ls` lists the recipes", r.Err.Trim());
    }

    [Fact]
    public void Run_WithoutConfig_IsUsageError()
    {
        var r = CliHarness.Run("run", "torch_info");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--config", r.Err);
    }

    [Fact]
    public void UnknownVerb_IsUsageErrorOnOneLine()
    {
        var r = CliHarness.Run("frobnicate");
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.Err.Trim().Split('\n'));
    }

    [Theory]
    [InlineData("ls")]
    [InlineData("cp")]
    [InlineData("cat")]
    [InlineData("validate")]
    [InlineData("run")]
    [InlineData("download")]
    public void Help_EveryVerb_PrintsUsageAndExitsZero(string verb)
    {
        var r = CliHarness.Run(verb, "--help");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("USAGE:", r.Out);
        Assert.Contains($"sharptune {verb}", r.Out);
    }

    [Fact]
    public void Download_FromFakeHub_WritesFilesAndNeverPrintsToken()
    {
        using var hub = new FakeHub { RequiredToken = "hf_cli_secret" };
        hub.Repos["acme/tiny"] = new() { ["config.json"] = "{}"u8.ToArray(), ["original/big.pth"] = [1, 2] };
        var output = Path.Combine(_tmp, "dl");
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = hub.Endpoint, ["HF_TOKEN"] = "hf_cli_secret" };
        var r = CliHarness.Run(["download", "acme/tiny", "--output-dir", output, "--ignore-patterns", "original/*"], null, env);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.True(File.Exists(Path.Combine(output, "config.json")));
        Assert.False(File.Exists(Path.Combine(output, "original", "big.pth")));
        Assert.True(File.Exists(Path.Combine(output, "original_repo_id.json")));
        Assert.Contains("1 downloaded", r.Out);
        Assert.DoesNotContain("hf_cli_secret", r.Out + r.Err);
    }

    [Fact]
    public void Download_RefusedToken_OneLine401AndTokenHidden()
    {
        using var hub = new FakeHub { RequiredToken = "hf_right" };
        hub.Repos["acme/tiny"] = new() { ["config.json"] = "{}"u8.ToArray() };
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = hub.Endpoint };
        var r = CliHarness.Run(["download", "acme/tiny", "--output-dir", Path.Combine(_tmp, "dl"), "--hf-token", "hf_wrong_secret"], null, env);
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith("error: 401 Unauthorized", r.Err);
        Assert.Single(r.Err.Trim().Split('\n'));
        Assert.DoesNotContain("hf_wrong_secret", r.Out + r.Err);
    }
}
