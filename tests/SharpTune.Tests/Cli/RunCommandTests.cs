// `sharptune run` on a training recipe, end to end in-process: what a newcomer sees on every run. The allocator
// settings are a debugging detail (only with --verbose), and `device: cuda` on a build without CUDA is an expected,
// one-line error that says which natives this build has and how to get CUDA ones, not an "unexpected failure".
using SharpTune.Native;
using SharpTune.Recipes.Support;
using SharpTune.Tests.Recipes;
using SharpTune.Training;

namespace SharpTune.Tests.Cli;

[Collection(RecipeCollection.Name)]
public sealed class RunCommandTests : IDisposable
{
    private readonly string _tmp = Directory.CreateTempSubdirectory("sharptune-run-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_tmp, recursive: true); } catch (IOException) { }
    }

    private CliResult RunTeacher(string name, params string[] extra) => CliHarness.Run(
        ["run", "full_finetune_single_device", "--config", "tiny/teacher_full_single_device", .. RecipeRunner.Fast,
         $"output_dir={_tmp}/{name}", $"checkpointer.checkpoint_dir={_tmp}/{name}/init", "max_steps_per_epoch=1", .. extra]);

    [Fact]
    public void Run_TrainingRecipe_AllocatorLineOnlyWithVerbose()
    {
        var quiet = RunTeacher("quiet");
        Assert.True(quiet.ExitCode == 0, quiet.Err);
        Assert.Contains("step 1 |", quiet.Out);
        Assert.DoesNotContain("malloc", quiet.Out + quiet.Err);
        Assert.DoesNotContain("allocator", quiet.Out + quiet.Err);

        var verbose = RunTeacher("verbose", "--verbose");
        Assert.True(verbose.ExitCode == 0, verbose.Err);
        var expected = Environment.GetEnvironmentVariable("SHARPTUNE_MALLOC_TUNING") == "0" ? "SHARPTUNE_MALLOC_TUNING"
            : NativeHeap.Allocator == NativeAllocator.Glibc ? "glibc malloc: mmap threshold" : "allocator";
        Assert.Contains(expected, verbose.Out);
    }

    [Fact]
    public void Run_DeviceCudaOnCpuBuild_ExpectedErrorNamingNativesAndFix()
    {
        if (TorchSharp.torch.cuda.is_available()) return; // a CUDA build on a GPU machine: the run is valid there
        var r = RunTeacher("cuda", "device=cuda");
        Assert.Equal(1, r.ExitCode);
        var line = Assert.Single(r.Err.Trim().Split('\n'));
        Assert.StartsWith("error: device 'cuda': this build has libtorch's CPU natives (libtorch-cpu-linux-x64/", line);
        Assert.Contains("TorchSharp-cuda-linux", line);
        Assert.Contains("SharpTune.Cuda instead of SharpTune", line);
        Assert.Contains("-p:SharpTuneNatives=cuda", line);
        Assert.Contains("README, 'CUDA'", line);
        Assert.DoesNotContain("unexpected", line);
    }

    [Fact]
    public void CudaUnavailable_CudaNativesWithoutGpu_SaysNoDriver()
    {
        var message = RecipeRuntime.CudaUnavailable("cuda:1", new LibTorchNatives("libtorch-cuda-12.8-linux-x64", "2.10.0"));
        Assert.Contains("CUDA natives (libtorch-cuda-12.8-linux-x64/2.10.0)", message);
        Assert.Contains("no NVIDIA GPU or driver", message);
    }

    [Fact]
    public void LibTorchNatives_ThisBuild_IsTheCpuPackageOfDirectoryPackagesProps()
    {
        var natives = LibTorchNatives.Find();
        Assert.NotNull(natives);
        Assert.Equal(natives.Package.StartsWith("libtorch-cpu", StringComparison.Ordinal) ? "cpu" : "cuda", natives.Kind);
        var props = File.ReadAllText(Path.Combine(SharedData.RepoRoot, "Directory.Packages.props"));
        Assert.Contains($"<PackageVersion Include=\"{natives.Package}\" Version=\"$(LibTorchVersion)\" />", props);
        Assert.Contains($"<LibTorchVersion>{natives.Version}</LibTorchVersion>", props);
    }
}
