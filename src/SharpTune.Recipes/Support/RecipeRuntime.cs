// Setup helpers the training recipes share: device and dtype selection (with the CPU bf16 warning and a clear CUDA
// error), building config components with the recipe's device/dtype when the factory accepts them, LR schedulers
// with the recipe-supplied num_training_steps.
// Kept to plain functions so each recipe still reads top to bottom (torchtune's recipes call training.* the same way).
// References: torchtune training/precision.py (get_dtype, bf16 check), training/_device.py (get_device),
// torchtune recipes/*_single_device.py (_setup_lr_scheduler passes num_training_steps and last_epoch).
using SharpTune.Config;
using SharpTune.Modules;
using SharpTune.Native;
using SharpTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Recipes.Support;

/// <summary>Device, dtype and component-building helpers for recipes.</summary>
public static class RecipeRuntime
{
    /// <summary>
    /// <c>cpu</c> or <c>cuda</c> (<c>cuda:N</c>). CUDA needs libtorch's CUDA natives (SharpTune.Cuda, or the source
    /// build's SharpTuneNatives=cuda) instead of the CPU ones: without them this throws a message saying how to get them.
    /// </summary>
    public static Device ResolveDevice(string device)
    {
        var d = device.Trim().ToLowerInvariant();
        if (d == "auto") return cuda.is_available() ? new Device("cuda") : CPU;
        if (d == "cpu") return CPU;
        if (d == "cuda" || d.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!cuda.is_available()) throw new NotSupportedException(CudaUnavailable(device, LibTorchNatives.Find()));
            return new Device(d);
        }
        throw new ArgumentException($"device must be 'cpu', 'cuda' (or 'cuda:N') or 'auto', got '{device}'", nameof(device));
    }

    /// <summary>Why <paramref name="device"/> cannot be used, and what to do, given the natives this build has.</summary>
    public static string CudaUnavailable(string device, LibTorchNatives? natives) => LibTorchNatives.CudaUnavailable(device, natives);

    /// <summary>
    /// The training dtype from the config value (<see cref="Precision.Resolve"/>): <c>auto</c> is decided by the CPU
    /// flags alone under mpirun (ranks must agree), by a measured probe otherwise; slow bf16 is reported as a warning.
    /// </summary>
    public static ScalarType ResolveDtype(string dtype, Device device, IRecipeReporter reporter) =>
        Precision.Resolve(dtype, device, reporter.Info, reporter.Warning, flagsOnly: SharpTune.Distributed.Mpi.LauncherEnvironment() is not null);

    /// <summary>
    /// The intra-op thread count, said once at startup: the config's <c>threads</c>; under mpirun what the job chose
    /// (threads_per_rank); otherwise the cores other processes left idle when the run started (<see cref="CpuLoad"/>), so
    /// that two runs on one machine do not each spin a thread per core and slow each other down tens of times.
    /// </summary>
    public static int ConfigureThreads(SharpTuneConfig config, IRecipeReporter reporter)
    {
        if (config.Get<int?>("threads", null) is { } threads)
        {
            TorchRuntime.SetThreads(threads);
            reporter.Info($"threads: {threads} (from the config)");
            return threads;
        }
        if (Distributed.Mpi.LauncherEnvironment() is not null) return torch.get_num_threads(); // set per rank by the job
        var cores = Environment.ProcessorCount;
        var busy = CpuLoad.OtherBusyCores(TimeSpan.FromMilliseconds(300));
        var chosen = CpuLoad.ChooseThreads(cores, busy);
        TorchRuntime.SetThreads(chosen);
        reporter.Info($"threads: {chosen} of {cores} cores" +
                      (busy is { } b ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $" ({b:F1} busy with other processes at startup)") : "") +
                      "; set threads: N in the config (or threads=N on the command line) to choose");
        return chosen;
    }

    /// <summary>
    /// Builds the decoder at <paramref name="path"/>, passing <paramref name="device"/>/<paramref name="dtype"/> to
    /// the factory when it takes them (no full-size fp32 copy of a bf16 model); otherwise converts afterwards.
    /// </summary>
    public static TransformerDecoder BuildModel(SharpTuneConfig config, string path, Device device, ScalarType dtype)
    {
        var named = new Dictionary<string, object?>();
        if (Accepts(config, path, "device")) named["device"] = device;
        if (Accepts(config, path, "dtype")) named["dtype"] = dtype;
        var model = config.InstantiateWith<TransformerDecoder>(path, named);
        if (!named.ContainsKey("dtype")) model.to(dtype);
        if (!named.ContainsKey("device")) model.to(device);
        return model;
    }

    /// <summary>
    /// Builds the LR scheduler at <paramref name="path"/> for <paramref name="optimizer"/>, supplying
    /// <c>num_training_steps</c> when the schedule takes it and the config leaves it out (torchtune computes it from epochs and steps per epoch).
    /// </summary>
    public static LrScheduler BuildScheduler(SharpTuneConfig config, string path, optim.Optimizer optimizer, long numTrainingSteps)
    {
        var named = new Dictionary<string, object?> { ["optimizer"] = optimizer };
        if (Accepts(config, path, "num_training_steps") && !config.Has(path + ".num_training_steps")) named["num_training_steps"] = (int)Math.Max(1, numTrainingSteps);
        return config.InstantiateWith<LrScheduler>(path, named);
    }

    /// <summary>True when the component at <paramref name="path"/> has a parameter called <paramref name="snakeName"/>.</summary>
    public static bool Accepts(SharpTuneConfig config, string path, string snakeName)
    {
        var node = config.Find(path);
        if (node?.ComponentName is not { } name || !config.Registry.TryGet(name, out var factory)) return false;
        return factory.GetParameters().Any(p => Names.ToSnakeCase(p.Name!) == snakeName);
    }

    /// <summary>
    /// Drops the lines of a JSONL metric log whose <c>step</c> is past <paramref name="lastStep"/> (rewritten
    /// atomically): a resumed run logs those steps again, and the curves should not show them twice.
    /// </summary>
    public static void TrimMetricLog(string path, long lastStep)
    {
        if (!File.Exists(path)) return;
        var kept = File.ReadAllLines(path).Where(line =>
        {
            if (string.IsNullOrWhiteSpace(line)) return false;
            try
            {
                using var doc = System.Text.Json.JsonDocument.Parse(line);
                return !doc.RootElement.TryGetProperty("step", out var step) || step.GetInt64() <= lastStep;
            }
            catch (System.Text.Json.JsonException) { return false; } // a line cut short by the kill
        });
        Checkpointing.AtomicFile.WriteAllText(path, string.Concat(kept.Select(l => l + "\n")));
    }
}
