using System.Diagnostics;
using SharpTune.Native;
using SharpTune.Tests.Recipes;
using TorchSharp;

namespace SharpTune.Tests.Native;

public sealed class TorchRuntimeTests
{
    [Fact]
    public void EnsureLoaded_OnThisMachine_TensorOpsRun()
    {
        TorchRuntime.EnsureLoaded();
        using var a = torch.tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2);
        using var b = a.matmul(a);
        // [[1,2],[3,4]]^2 = [[7,10],[15,22]]
        Assert.Equal(new float[] { 7, 10, 15, 22 }, b.data<float>().ToArray());
    }

    [Fact]
    public void NativeShim_InOutputFolder_HasNoStrictGlibcxx332Need()
    {
        var shim = Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so");
        Assert.True(File.Exists(shim), $"expected the native shim at {shim}");
        var needs = ElfVersionNeeds.Read(shim);
        var need = Assert.Single(needs, n => n.Name == "GLIBCXX_3.4.32");
        Assert.True(need.Weak, "GLIBCXX_3.4.32 must be marked VER_FLG_WEAK so the shim loads on Debian 12");
        Assert.Contains(needs, n => n.Name == "GLIBCXX_3.4.30" && !n.Weak);
    }

    [Fact]
    public void EnsureLoaded_UserSetNoWaitPolicy_NativeEnvironmentAsksForPassive()
    {
        // Given the process's starting environment (the user's choice, if any, is kept)
        var userChoice = Environment.GetEnvironmentVariable("OMP_WAIT_POLICY");
        // When libtorch is initialised
        TorchRuntime.EnsureLoaded();
        // Then the native environment libgomp reads holds the user's policy, else PASSIVE
        Assert.Equal(userChoice ?? "PASSIVE", TorchRuntime.OpenMpWaitPolicy);
    }

    [Fact]
    public async Task CliRun_RecipeThatTouchesTorchInItsConstructor_LibgompStartsPassive()
    {
        // Given the CLI as a user starts it, with no policy in the environment, asking libgomp to print the settings
        // it read when it loaded (OMP_DISPLAY_ENV: the native side's own account, GOMP_SPINCOUNT 0 = passive)
        using var tmp = new Checkpointing.TempDir();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // The LoRA recipe's field initialiser reads torch.CPU, which loads libtorch before the recipe's Setup runs.
        foreach (var a in (string[])[Path.Combine(AppContext.BaseDirectory, "SharpTune.Cli.dll"), "run", "lora_finetune_single_device",
                     "--config", "tiny/lora_single_device", "--verbose", .. RecipeRunner.Fast, $"output_dir={tmp.Path}/run",
                     $"checkpointer.checkpoint_dir={tmp.Path}/init", "random_init_checkpoint=true", "max_steps_per_epoch=1", "lr_scheduler=null"])
            psi.ArgumentList.Add(a);
        psi.Environment.Remove("OMP_WAIT_POLICY");
        psi.Environment["OMP_DISPLAY_ENV"] = "VERBOSE";

        // When it runs one step
        using var child = Process.Start(psi)!;
        var stderr = child.StandardError.ReadToEndAsync();
        var stdout = await child.StandardOutput.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await child.WaitForExitAsync(timeout.Token);
        var output = stdout + await stderr;

        // Then libgomp started with passive waiting, because SharpTune set the policy before libgomp was mapped
        Assert.True(child.ExitCode == 0, output);
        Assert.Contains("OMP_WAIT_POLICY = 'PASSIVE'", output);
        Assert.Contains("GOMP_SPINCOUNT = '0'", output);
        Assert.Contains("openmp: OMP_WAIT_POLICY=PASSIVE (set by SharpTune before libgomp loaded)", output);
    }

    [Fact]
    public void SetFlushDenormal_OnAndOff_SubnormalProductsFlushedOrKept()
    {
        TorchRuntime.EnsureLoaded();
        const float subnormal = 1e-40f; // below float.MinNormal (1.18e-38)
        Exception? failure = null;
        // A fresh thread, so the setting cannot leak into other tests that run on this one.
        var thread = new Thread(() =>
        {
            try
            {
                Assert.True(TorchRuntime.SetFlushDenormal(true), "this x86-64 CPU should support flush-to-zero");
                using (var x = torch.tensor(new[] { subnormal, 1f }))
                using (var y = x * 1f)
                    Assert.Equal(new[] { 0f, 1f }, y.data<float>().ToArray());
                Assert.True(TorchRuntime.SetFlushDenormal(false));
                using (var x = torch.tensor(new[] { subnormal, 1f }))
                using (var y = x * 1f)
                    Assert.Equal(new[] { subnormal, 1f }, y.data<float>().ToArray());
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        thread.Start();
        thread.Join();
        if (failure is not null) throw failure;
    }
}
