using SharpTune.Native;
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
