// RSS of a tiny language-model training loop over many steps, under glibc malloc as it is ("off") and with
// SharpTune's NativeHeap: malloc_trim after each step ("trim"), mallopt settings only ("tune"), or both ("both").
// Batches have random sequence lengths, as padded real data does, so tensor sizes vary from step to step.
// Prints RSS at a few steps, the ratio RSS(last)/RSS(100), the peak RSS (VmHWM, reset per window) over steps 81-100
// and over the last 20 steps with its ratio (a trim schedule cannot hide growth from it), and the mean step time.
// Usage: Memory [steps=1000] [off|trim|tune|both] [threads=1] [mmap_threshold_bytes] [trim_every_n_steps] [trim_threshold_bytes] [arena_max]
using System.Diagnostics;
using SharpTune.Native;
using SharpTune.Training;
using TorchSharp;
using static TorchSharp.torch;

var steps = args.Length > 0 ? int.Parse(args[0]) : 1000;
var mode = args.Length > 1 ? args[1] : "both";
var threads = args.Length > 2 ? int.Parse(args[2]) : 1;
var defaults = new NativeHeapOptions();
var options = defaults with
{
    MmapThresholdBytes = args.Length > 3 ? int.Parse(args[3]) : defaults.MmapThresholdBytes,
    TrimEveryNSteps = mode == "tune" ? 0 : args.Length > 4 ? int.Parse(args[4]) : defaults.TrimEveryNSteps,
    TrimThresholdBytes = args.Length > 5 ? int.Parse(args[5]) : defaults.TrimThresholdBytes,
    ArenaMax = args.Length > 6 ? int.Parse(args[6]) : defaults.ArenaMax,
};
var configured = mode is "tune" or "both" ? NativeHeap.Configure(options) : "glibc defaults";
TorchRuntime.SetThreads(threads);
Determinism.Seed(0);

const int vocab = 2000, dim = 64, hidden = 256;
var model = nn.Sequential(
    ("embed", nn.Embedding(vocab, dim)),
    ("fc1", nn.Linear(dim, hidden)), ("act1", nn.GELU()), ("fc2", nn.Linear(hidden, dim)),
    ("fc3", nn.Linear(dim, hidden)), ("act2", nn.GELU()), ("fc4", nn.Linear(hidden, dim)),
    ("head", nn.Linear(dim, vocab)));
var opt = Optimizers.AdamW(model.parameters(), lr: 1e-3);
var rng = new Random(0);
var report = new SortedDictionary<int, long>();
Console.WriteLine($"mode={mode} ({configured}), allocator={NativeHeap.Allocator}, threads={threads}, steps={steps}");
var marks = new HashSet<int> { 1, 10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, steps };
var watch = Stopwatch.StartNew();
long early = 0, late = 0;
for (var step = 1; step <= steps; step++)
{
    if (step == 81 || step == steps - 19) ProcessMemory.TryResetPeak();
    using (var scope = NewDisposeScope())
    {
        var seq = rng.Next(16, 129);
        var tokens = randint(0, vocab, new long[] { 4, seq + 1 });
        var logits = model.call(tokens[.., ..^1]); // [b, s, v]
        var loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[.., 1..].reshape(-1));
        opt.zero_grad();
        loss.backward();
        opt.step();
    }
    if (mode is "trim") NativeHeap.Trim();
    else NativeHeap.AfterStep();
    if (step == 100) early = ProcessMemory.Read().PeakRssBytes;
    if (step == steps) late = ProcessMemory.Read().PeakRssBytes;
    if (marks.Contains(step))
    {
        report[step] = ProcessMemory.Read().RssBytes;
        var heap = NativeHeap.Statistics();
        var gc = GC.GetGCMemoryInfo();
        Console.WriteLine($"  step {step,5}: RSS {report[step] / 1048576.0,8:F1} MiB | malloc in use {heap?.InUseBytes / 1048576.0,6:F1}, free {heap?.FreeBytes / 1048576.0,6:F1}, " +
                          $"mmapped {heap?.MmappedBytes / 1048576.0,6:F1} | .NET heap {gc.HeapSizeBytes / 1048576.0,6:F1}, committed {gc.TotalCommittedBytes / 1048576.0,6:F1} MiB ({watch.Elapsed.TotalMilliseconds / step:F1} ms/step)");
    }
}
var msPerStep = watch.Elapsed.TotalMilliseconds / steps;
Console.WriteLine($"  {msPerStep:F1} ms/step");
if (report.TryGetValue(100, out var at100))
    Console.WriteLine($"  RSS(step {steps}) / RSS(step 100) = {report[steps] / (double)at100:F3}");
if (early > 0)
    Console.WriteLine($"  peak RSS steps 81-100 {early / 1048576.0:F1} MiB, steps {steps - 19}-{steps} {late / 1048576.0:F1} MiB: ratio {late / (double)early:F3}");
