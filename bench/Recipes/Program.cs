// Flat-memory check of a real training recipe: runs full_finetune_single_device on the tiny config for N optimizer
// steps (default 1000) and prints process RSS at steps 1, 10, 100, 200, ..., N, the ratio RSS(N)/RSS(100) (the
// issue's bar: within 10%), and the mean step time. The recipe configures the allocator itself (NativeHeap).
// Usage: dotnet run -c Release --project bench/Recipes -- [steps] [output folder]
using System.Diagnostics;
using SharpTune.Recipes;
using SharpTune.Training;

var steps = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 1000;
var output = args.Length > 1 ? args[1] : Path.Combine(Path.GetTempPath(), $"sharptune-rss-{Environment.ProcessId}");
var registry = RecipeRegistry.CreateDefault();
var recipe = registry.Get("full_finetune_single_device");
var config = ConfigCatalog.CreateDefault().Resolve("tiny/teacher_full_single_device");
var validation = registry.Validate(recipe, config,
[
    $"output_dir={output}", $"checkpointer.checkpoint_dir={output}/init", $"max_steps_per_epoch={steps}",
    $"dataset.num_samples={steps * 2}", "batch_size=2", "log_every_n_steps=50", "metric_logger.tensorboard=false", "threads=1",
]);
if (!validation.IsValid)
{
    foreach (var p in validation.Problems) Console.Error.WriteLine(p);
    return 1;
}
var reporter = new RssReporter(steps);
var watch = Stopwatch.StartNew();
RecipeRegistry.Run(recipe, validation.Config!, reporter, CancellationToken.None);
watch.Stop();
foreach (var (step, rss) in reporter.Rss) Console.WriteLine($"step {step,5}: RSS {rss / 1048576.0,8:F1} MiB");
var at100 = reporter.Rss.GetValueOrDefault(100);
var last = reporter.Rss[steps];
Console.WriteLine($"RSS(step {steps}) / RSS(step 100) = {(double)last / at100:F4}  (bar: <= 1.10)");
Console.WriteLine($"mean step time {watch.Elapsed.TotalMilliseconds / steps:F1} ms over {steps} steps (incl. setup and saves)");
Directory.Delete(output, recursive: true);
return 0;

internal sealed class RssReporter(int steps) : IRecipeReporter
{
    public SortedDictionary<long, long> Rss { get; } = [];

    public void Info(string message) { }
    public void Warning(string message) => Console.Error.WriteLine("warning: " + message);
    public void Metrics(long step, IReadOnlyDictionary<string, double> values) { }

    public void Progress(string stage, long completed, long total)
    {
        if (completed is 1 or 10 || completed % 100 == 0 || completed == steps)
        {
            if (Environment.GetEnvironmentVariable("BENCH_GC") == "1") { GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect(); }
            Rss[completed] = ProcessMemory.Read().RssBytes;
            if (Environment.GetEnvironmentVariable("BENCH_GC") == "1") Console.WriteLine($"{completed}: managed {GC.GetTotalMemory(false) / 1048576.0:F1} MiB, rss {Rss[completed] / 1048576.0:F1}");
        }
    }
}
