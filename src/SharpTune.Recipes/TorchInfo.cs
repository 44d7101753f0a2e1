// Recipe `torch_info`: reports what this machine's libtorch is (TorchSharp and libtorch versions, intra/inter-op
// threads, CUDA availability) and measures dense matmul throughput, checking one result element against a plain
// dot product first so the figure is for a correct multiply. Writes torch_info.json (atomically) to output_dir.
// A square [n, n] x [n, n] matmul costs 2 n^3 floating-point operations (n^3 multiply-adds).
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using SharpTune.Config;
using SharpTune.Native;
using SharpTune.Training;
using TorchSharp;

namespace SharpTune.Recipes;

/// <summary>Element types the matmul benchmark can use.</summary>
public enum BenchmarkDtype
{
    /// <summary>32-bit float.</summary>
    Float32,
    /// <summary>64-bit float.</summary>
    Float64,
    /// <summary>bfloat16 (slow on CPUs without native support).</summary>
    BFloat16,
}

/// <summary>The matmul benchmark's settings (the <c>benchmark:</c> map of the config).</summary>
/// <param name="Size">n of the square matrices.</param>
/// <param name="Repeats">Timed multiplies (after one warm-up).</param>
/// <param name="Dtype">Element type.</param>
public sealed record MatmulBenchmark(int Size = 512, int Repeats = 5, BenchmarkDtype Dtype = BenchmarkDtype.Float32);

/// <summary>Reports the libtorch runtime and a measured matmul GFLOP/s figure.</summary>
[Recipe("torch_info", Description = "libtorch/TorchSharp versions, threads, and measured matmul GFLOP/s on this machine")]
[RecipeKey("output_dir", typeof(string), Required = true, Description = "folder for torch_info.json")]
[RecipeKey("threads", typeof(int?), Minimum = 1, Description = "intra-op threads; null keeps libtorch's default")]
[RecipeKey("seed", typeof(int), Description = "random seed for the benchmark matrices")]
[RecipeKey("benchmark", typeof(MatmulBenchmark), Required = true, Description = "matmul size, repeats, dtype")]
public sealed class TorchInfo : IRecipe
{
    private readonly IRecipeReporter _reporter;
    private readonly string _outputDir;
    private readonly int? _threads;
    private readonly int _seed;
    private readonly MatmulBenchmark _benchmark;
    private readonly Dictionary<string, object> _report = [];

    /// <summary>Reads the config; nothing heavy happens here.</summary>
    public TorchInfo(SharpTuneConfig config, IRecipeReporter reporter)
    {
        _reporter = reporter;
        _outputDir = config.Get<string>("output_dir");
        _threads = config.Get<int?>("threads", null);
        _seed = config.Get("seed", 0);
        _benchmark = config.Get<MatmulBenchmark>("benchmark");
        if (_benchmark.Size < 1 || _benchmark.Repeats < 1)
            throw new ConfigException(config.Find("benchmark")!.Location, "benchmark", $"size and repeats must be at least 1, got size {_benchmark.Size}, repeats {_benchmark.Repeats}");
    }

    /// <inheritdoc/>
    public void Setup(CancellationToken cancellationToken)
    {
        TorchRuntime.EnsureLoaded();
        if (_threads is { } t) TorchRuntime.SetThreads(t);
        _report["torchsharp_version"] = VersionOf(typeof(torch).Assembly);
        _report["libtorch_version"] = SharpTune.Native.LibTorchNatives.Find()?.ToString() ?? "unknown";
        _report["intra_op_threads"] = torch.get_num_threads();
        _report["inter_op_threads"] = torch.get_num_interop_threads();
        _report["cuda_available"] = torch.cuda.is_available();
        _report["logical_cpus"] = Environment.ProcessorCount;
        foreach (var (k, v) in _report) _reporter.Info($"{k}: {Format(v)}");
    }

    /// <inheritdoc/>
    public void Train(CancellationToken cancellationToken)
    {
        var n = _benchmark.Size;
        var dtype = _benchmark.Dtype switch
        {
            BenchmarkDtype.Float64 => torch.float64,
            BenchmarkDtype.BFloat16 => torch.bfloat16,
            _ => torch.float32,
        };
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(_seed);
        var a = torch.randn(n, n).to(dtype); // [n, n]
        var b = torch.randn(n, n).to(dtype); // [n, n]
        var c = torch.matmul(a, b);          // [n, n], warm-up and correctness check
        var check = CheckOneElement(a, b, c, n);
        _reporter.Info($"matmul check: c[{check.Row},{check.Col}] = {check.Got:G6}, plain dot product = {check.Expected:G6}");
        var stopwatch = Stopwatch.StartNew();
        for (var i = 0; i < _benchmark.Repeats; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var step = torch.NewDisposeScope();
            torch.matmul(a, b);
            _reporter.Progress("matmul", i + 1, _benchmark.Repeats);
        }
        var seconds = stopwatch.Elapsed.TotalSeconds;
        var gflops = 2.0 * n * n * (double)n * _benchmark.Repeats / seconds / 1e9;
        _reporter.Metrics(_benchmark.Repeats, new Dictionary<string, double> { ["matmul_gflops"] = gflops, ["seconds"] = seconds });
        _report["matmul"] = new Dictionary<string, object>
        {
            ["size"] = n, ["repeats"] = _benchmark.Repeats, ["dtype"] = _benchmark.Dtype.ToString().ToLowerInvariant(),
            ["seconds"] = seconds, ["gflops"] = gflops,
        };
        // What `dtype: auto` picks here, from fp32 and bf16 rates measured now (bf16 even without native support).
        var probe = Precision.ProbeCpu(measureBf16Always: true);
        _reporter.Info(probe.ToString());
        _report["dtype_auto"] = new Dictionary<string, object>
        {
            ["native_bf16"] = probe.NativeBf16, ["fp32_gflops"] = probe.Fp32Gflops, ["bf16_gflops"] = probe.Bf16Gflops,
            ["choice"] = probe.ChoiceName,
        };
        _report["openmp"] = TorchRuntime.WaitPolicySetup?.ToString() ?? "unknown";
        var path = Path.Combine(_outputDir, "torch_info.json");
        WriteAtomically(path, JsonSerializer.Serialize(_report, new JsonSerializerOptions { WriteIndented = true }));
        _reporter.Info($"matmul {n}x{n} {_benchmark.Dtype}: {gflops:F1} GFLOP/s over {_benchmark.Repeats} repeats; wrote {path}");
    }

    /// <inheritdoc/>
    public void Cleanup()
    {
    }

    // One element of c against a sum of products in float64, with a tolerance suited to the dtype.
    private static (int Row, int Col, double Got, double Expected) CheckOneElement(torch.Tensor a, torch.Tensor b, torch.Tensor c, int n)
    {
        var row = n / 3;
        var col = n - 1 - n / 5;
        var ad = a.to(torch.float64);
        var bd = b.to(torch.float64);
        double expected = 0;
        for (var k = 0; k < n; k++) expected += ad[row, k].item<double>() * bd[k, col].item<double>();
        var got = c.to(torch.float64)[row, col].item<double>();
        var tolerance = (a.dtype == torch.bfloat16 ? 5e-2 : 1e-3) * Math.Sqrt(n) + 1e-6;
        if (Math.Abs(got - expected) > tolerance)
            throw new InvalidOperationException($"matmul result is wrong: c[{row},{col}] = {got}, dot product gives {expected}");
        return (row, col, got, expected);
    }

    private static void WriteAtomically(string path, string text)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var tmp = path + $".tmp{Environment.ProcessId}";
        File.WriteAllText(tmp, text);
        File.Move(tmp, path, overwrite: true);
    }

    private static string VersionOf(System.Reflection.Assembly assembly)
    {
        var info = assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion;
        return info?.Split('+')[0] ?? assembly.GetName().Version?.ToString() ?? "unknown";
    }

    private static string Format(object v) => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "";
}
