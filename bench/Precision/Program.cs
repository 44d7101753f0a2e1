// fp32 vs bf16 matmul throughput on this CPU (square matrices, median of several runs), and whether the CPU has
// native bf16 instructions. The KD recipe's `dtype: bf16` warning points here.
using System.Diagnostics;
using SharpTune.Native;
using SharpTune.Training;
using static TorchSharp.torch;

var n = args.Length > 0 ? int.Parse(args[0]) : 512;
var threads = args.Length > 1 ? int.Parse(args[1]) : 1;
TorchRuntime.SetThreads(threads);
manual_seed(0);

double Gflops(ScalarType type, int reps)
{
    using var a = randn(n, n).to_type(type);
    using var b = randn(n, n).to_type(type);
    a.matmul(b).Dispose(); // warm-up
    var times = new List<double>();
    for (var r = 0; r < reps; r++)
    {
        var sw = Stopwatch.StartNew();
        a.matmul(b).Dispose();
        times.Add(sw.Elapsed.TotalSeconds);
    }
    times.Sort();
    return 2.0 * n * n * n / times[times.Count / 2] / 1e9;
}

var fp32 = Gflops(ScalarType.Float32, 7);
var bf16 = Gflops(ScalarType.BFloat16, 3);
Console.WriteLine($"matmul {n}x{n}, {threads} thread(s), native bf16: {Precision.CpuHasNativeBf16()}");
Console.WriteLine($"  fp32: {fp32,8:F1} GFLOP/s");
Console.WriteLine($"  bf16: {bf16,8:F1} GFLOP/s");
Console.WriteLine($"  fp32 / bf16 speed ratio: {fp32 / bf16:F1}x");
