// Knowledge-distillation training-step throughput: SharpTune vs an eager PyTorch reference on the same machine.
// The SharpTune step is knowledge_distillation_single_device's LossStep + optimizer step built from the same library
// pieces (TransformerDecoder.ForwardHidden, chunked output projection, CrossEntropyLoss + KdLoss sums over 8 output
// chunks, the gradient sync, AdamW, NativeHeap.AfterStep); the reference is bench/reference/kd_step.py. Rounds
// alternate SharpTune and PyTorch so both see the same background load; each reports median tokens/s after warm-up.
// Model FLOPs utilisation counts matmul FLOPs as PaLM (Chowdhery et al. 2022, appendix B): 6N + 12·L·d·s per
// trained token and 2N + 4·L·d·s per teacher token, against a GEMM peak of the step's dtype measured in each round.
// --dtype bf16 builds both models in bf16 (as a recipe's dtype: bf16 does) and compares with a bf16 GEMM peak; the
// PyTorch reference is fp32 only, so it is skipped then.
// Usage: dotnet run -c Release --project bench/KdStep -- [--quick] [--rounds 3] [--steps 3] [--warmup 1] [--dtype fp32|bf16]
//        [--threads 0] [--python /usr/bin/python3] [--no-python] [--variant recipe,twoloss,nonorm,inference,fused|all] [--profile]
//        [--thp] [--mmap-threshold BYTES|none] [--trim-threshold BYTES] [--trim-every N] [--arena-max N]
//        [--no-gc-policy]: no step-end collection on RSS growth (the .NET GC left to the runtime alone)
//        [--rss-steps N]: no timing; N steps of the first variant, then the peak RSS of steps 81-100 and of the last 20
//        steps and their ratio (flat memory: <= 1.05), and the collections (those the step-end policy forced apart).
// --profile also prints, per step, RSS and glibc's own counts (mallinfo2: bytes in use, free in the heap, mmapped): a
// free count that climbs while in-use stays flat is fragmentation. To find native objects left to the finalizer, take
// a heap dump of a run with no collection (dotnet-dump collect, then dumpheap -type TorchSharp.Scalar: a Scalar whose
// handle is not zero was never disposed; its native at::Scalar holds the value 16 bytes in).
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using SharpTune.Bench.KdStep;
using SharpTune.Native;
using SharpTune.Training;
using static TorchSharp.torch;

var o = BenchOptions.Parse(args);
if (o.Dtype != ScalarType.Float32 && o.Python is not null)
{
    Console.WriteLine("the PyTorch reference runs fp32 only: skipped for --dtype bf16");
    o = o with { Python = null };
}
if (args.Contains("--thp")) setenv("THP_MEM_ALLOC_ENABLE", "1", 1); // before libtorch loads: c10 reads it once
TorchRuntime.SetThreads(o.Threads);
// Allocator settings (NativeHeapOptions; the recipes' defaults when not given): --mmap-threshold BYTES|none (none
// leaves glibc as it is), --trim-threshold BYTES, --trim-every N.
string? Arg(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
var heap = new NativeHeapOptions();
if (Arg("--mmap-threshold") is { } mt && mt != "none") heap = heap with { MmapThresholdBytes = int.Parse(mt, CultureInfo.InvariantCulture) };
if (Arg("--trim-threshold") is { } tt) heap = heap with { TrimThresholdBytes = int.Parse(tt, CultureInfo.InvariantCulture) };
if (Arg("--trim-every") is { } te) heap = heap with { TrimEveryNSteps = int.Parse(te, CultureInfo.InvariantCulture) };
if (Arg("--arena-max") is { } am) heap = heap with { ArenaMax = int.Parse(am, CultureInfo.InvariantCulture) };
if (args.Contains("--no-gc-policy")) heap = heap with { CollectOnRssGrowth = 0 };
Console.WriteLine(Arg("--mmap-threshold") == "none" ? "allocator left at glibc defaults" : NativeHeap.Configure(heap));
Console.WriteLine($"KD step: teacher {o.Teacher}, student {o.Student}, vocab {o.Vocab}, seq {o.Seq}, batch {o.Batch}, {o.Step.DtypeName}, " +
                  $"{get_num_threads()} threads, {o.Rounds} rounds x {o.Steps} steps (+{o.Warmup} warm-up)");
if (Arg("--rss-steps") is { } rssSteps)
{
    RssRun(int.Parse(rssSteps, CultureInfo.InvariantCulture));
    return;
}
var flopsPerStep = Flops.KdStep(o);
Console.WriteLine($"model FLOPs per step: {flopsPerStep / 1e9:F1} GFLOP (student fwd+bwd, teacher fwd, matmuls only)");

var variants = o.Variant == "all" ? new[] { "recipe", "twoloss", "nonorm", "inference", "fused" } : o.Variant.Split(',');
var runners = variants.Select(v => new KdStepRunner(o, v)).ToList();
var results = variants.ToDictionary(v => v, _ => new List<double>());
var torchResults = new List<double>();
var torchGemm = new List<double>();
var torchBlas = new HashSet<string>();
var peakRss = new Dictionary<string, long>();
var peaks = new List<double>();
string? torchVersion = null;
for (var round = 1; round <= o.Rounds; round++)
{
    var peak = Flops.MatmulPeakGflops(o.Dtype);
    peaks.Add(peak);
    Console.WriteLine($"round {round}: {o.Step.DtypeName} GEMM peak {peak:F1} GFLOP/s, load average {LoadAverage()}");
    foreach (var r in runners)
    {
        ProcessMemory.TryResetPeak();
        var tps = r.Run(o.Warmup, o.Steps);
        peakRss[r.Variant] = Math.Max(peakRss.GetValueOrDefault(r.Variant), ProcessMemory.Read().PeakRssBytes);
        results[r.Variant].AddRange(tps);
        Console.WriteLine($"  sharptune[{r.Variant}]: {string.Join(" ", tps.Select(x => x.ToString("F0", CultureInfo.InvariantCulture)))} tokens/s (loss {r.LastLoss:F4})");
    }
    if (o.Python is not null)
    {
        var (tps, version, gemm, blas) = RunPython(o);
        torchVersion = version;
        torchResults.AddRange(tps);
        torchGemm.Add(gemm);
        torchBlas.UnionWith(blas);
        Console.WriteLine($"  pytorch {version}: {string.Join(" ", tps.Select(x => x.ToString("F0", CultureInfo.InvariantCulture)))} tokens/s; " +
                          $"its own fp32 GEMM {gemm:F1} GFLOP/s");
    }
}

var medPeak = Median(peaks);
var medTorch = torchResults.Count > 0 ? Median(torchResults) : double.NaN;
Console.WriteLine();
Console.WriteLine($"median {o.Step.DtypeName} GEMM peak {medPeak:F1} GFLOP/s; tokens per step {o.Batch * o.Seq}");
// A ratio against a reference is only worth printing when the reference could use the machine as SharpTune did: its
// own GEMM probe (same size, same method, in its process with the BLAS it loaded) must be within 25% of libtorch's.
var referenceHealthy = false;
if (torchResults.Count > 0)
{
    var medTorchGemm = Median(torchGemm);
    var gap = Math.Abs(medTorchGemm / medPeak - 1);
    referenceHealthy = gap <= 0.25;
    Console.WriteLine($"reference health: PyTorch's own fp32 GEMM {medTorchGemm:F1} GFLOP/s vs SharpTune's libtorch probe {medPeak:F1} GFLOP/s " +
                      $"({gap:P0} apart, limit 25%): {(referenceHealthy ? "healthy" : "UNHEALTHY, ratio not reported")}");
    Console.WriteLine($"reference BLAS/OpenMP libraries: {(torchBlas.Count == 0 ? "none found in its maps" : string.Join(", ", torchBlas))}");
}
Console.WriteLine($"{"implementation",-24} {"tokens/s",10} {"MFU",7} {"vs PyTorch",11} {"MFU/step",9} {"peak RSS",9}");
foreach (var r in runners)
{
    // MFU/step: each step's FLOP rate over a 5-matmul GEMM probe taken just before it (this VM's speed drifts by
    // up to 2x within minutes, so a probe at the start of the round can be far from the step it is compared with).
    var perStep = results[r.Variant].Zip(r.StepPeaks, (tps, peak) => tps / (o.Batch * o.Seq) * flopsPerStep / (peak * 1e9)).ToList();
    Row($"sharptune [{r.Variant}]", Median(results[r.Variant]), $"{Median(perStep),9:P0} {peakRss[r.Variant] / 1073741824.0,7:F2} GiB");
}
if (torchResults.Count > 0) Row($"pytorch {torchVersion}", medTorch, "");
foreach (var r in runners.Where(r => r.Phases.Count > 0))
{
    var total = r.Phases.Values.Sum();
    Console.WriteLine($"\nphases of sharptune [{r.Variant}] over its timed steps (share of {total:F1} s):");
    foreach (var (phase, seconds) in r.Phases)
        Console.WriteLine($"  {phase,-28} {seconds,8:F2} s {seconds / total,7:P1}");
}
foreach (var r in runners) r.Dispose();

// Steps the first variant N times; per window (81-100 and the last 20) the highest RSS the kernel saw (its peak counter
// reset at the window's start where the kernel allows, else the highest RSS read after each step).
void RssRun(int n)
{
    if (n < 120) throw new ArgumentException($"--rss-steps {n}: at least 120 (windows 81-100 and the last 20 steps)");
    using var runner = new KdStepRunner(o, o.Variant.Split(',')[0]);
    var windows = new[] { (First: 81, Last: 100), (First: n - 19, Last: n) };
    var peak = new long[windows.Length];
    var resetWorks = new bool[windows.Length];
    var outsideBefore = TorchSharp.DisposeScopeManager.Statistics.CreatedOutsideScopeCount;
    var gcBefore = (GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2));
    for (var step = 1; step <= n; step++)
    {
        for (var w = 0; w < windows.Length; w++)
            if (step == windows[w].First) resetWorks[w] = ProcessMemory.TryResetPeak();
        runner.Run(warmup: 0, steps: 1, probePeak: false);
        var mem = ProcessMemory.Read();
        for (var w = 0; w < windows.Length; w++)
            if (step >= windows[w].First && step <= windows[w].Last)
                peak[w] = Math.Max(peak[w], resetWorks[w] ? mem.PeakRssBytes : mem.RssBytes);
        if (step % 100 == 0)
            Console.WriteLine($"  step {step}: RSS {mem.RssBytes / 1048576.0:F0} MiB, tensors created outside a dispose scope so far " +
                              $"{TorchSharp.DisposeScopeManager.Statistics.CreatedOutsideScopeCount - outsideBefore}, live tensors {TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount}");
    }
    Console.WriteLine($"GC collections during the run (gen0/1/2): {GC.CollectionCount(0) - gcBefore.Item1}/{GC.CollectionCount(1) - gcBefore.Item2}/{GC.CollectionCount(2) - gcBefore.Item3}, of which the step-end policy forced {NativeHeap.Collections} (--no-gc-policy: none)");
    for (var w = 0; w < windows.Length; w++)
        Console.WriteLine($"peak RSS steps {windows[w].First}-{windows[w].Last}: {peak[w] / 1048576.0:F1} MiB ({(resetWorks[w] ? "kernel peak" : "max after each step")})");
    Console.WriteLine($"ratio (last / 81-100): {(double)peak[1] / peak[0]:F3} (flat: <= 1.05)");
}

void Row(string name, double tps, string extra)
{
    var mfu = tps / (o.Batch * o.Seq) * flopsPerStep / (medPeak * 1e9);
    var ratio = double.IsNaN(medTorch) ? "n/a" : !referenceHealthy ? "invalid" : (tps / medTorch).ToString("F2", CultureInfo.InvariantCulture);
    Console.WriteLine($"{name,-24} {tps,10:F0} {mfu,7:P0} {ratio,11} {extra}");
}

static double Median(List<double> xs)
{
    var s = xs.OrderBy(x => x).ToArray();
    return s.Length == 0 ? double.NaN : s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
}

[System.Runtime.InteropServices.DllImport("libc.so.6")] static extern int setenv(string name, string value, int overwrite);

static string LoadAverage() =>
    File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";

static (List<double> Tps, string Version, double GemmGflops, List<string> Blas) RunPython(BenchOptions o)
{
    var script = Path.Combine(AppContext.BaseDirectory, "kd_step.py");
    var psi = new ProcessStartInfo(o.Python!) { RedirectStandardOutput = true, RedirectStandardError = true };
    psi.ArgumentList.Add(script);
    foreach (var a in new[]
             {
                 "--vocab", $"{o.Vocab}", "--seq", $"{o.Seq}", "--batch", $"{o.Batch}", "--teacher", o.Teacher.ToArg(),
                 "--student", o.Student.ToArg(), "--steps", $"{o.Steps}", "--warmup", $"{o.Warmup}", "--threads", $"{get_num_threads()}",
             })
        psi.ArgumentList.Add(a);
    psi.Environment["OMP_WAIT_POLICY"] = "PASSIVE";
    using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {o.Python}");
    var stderr = p.StandardError.ReadToEndAsync();
    var stdout = p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    if (p.ExitCode != 0)
        throw new InvalidOperationException($"{o.Python} {script} exited with {p.ExitCode}: {stderr.Result}");
    var line = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Last();
    using var doc = JsonDocument.Parse(line);
    var tps = doc.RootElement.GetProperty("tokens_per_s").EnumerateArray().Select(e => e.GetDouble()).ToList();
    var blas = doc.RootElement.GetProperty("blas").EnumerateArray().Select(e => e.GetString() ?? "").ToList();
    return (tps, doc.RootElement.GetProperty("torch").GetString() ?? "?", doc.RootElement.GetProperty("gemm_gflops").GetDouble(), blas);
}
