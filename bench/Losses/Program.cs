// Loss benchmark at Llama 3.1 8B -> 3.2 1B distillation shapes: student hidden 2048, teacher hidden 4096, vocabulary
// 128,256. Measures forward+backward time and peak extra resident memory of (1 - r) CE + r forward-KL (torchtune's
// value convention, kd_ratio 0.5) computed three ways: plain (whole logits), chunked (8 sequence chunks, torchtune's
// recipe) and fused-linear (hidden states + output weights, chunked over tokens with a fused backward).
// Each variant runs in a fresh child process so its peak RSS (VmHWM, reset through /proc/self/clear_refs after setup)
// is its own. Usage:
//   dotnet run -c Release --project bench/Losses -- [--tokens 1024] [--trainable-weight] [--iters 1] [--threads 0]
//     [--chunk-size 0 (fused tokens per chunk; 0 = automatic)] [--variants plain,chunked,fused]
using System.Diagnostics;
using System.Globalization;
using SharpTune.Losses;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

var opts = BenchOptions.Parse(args);
if (opts.Child is { } variant)
{
    Child.Run(variant, opts);
    return 0;
}

Console.WriteLine($"tokens {opts.Tokens} (batch 4), student d {opts.StudentDim}, teacher d {opts.TeacherDim}, vocab {opts.Vocab}, " +
                  $"student output weight {(opts.TrainableWeight ? "trainable" : "frozen (LoRA)")}, threads {opts.Threads}, iters {opts.Iters}");
var results = new Dictionary<string, (double Seconds, double ExtraMiB, double Loss, double CpuSeconds)>();
foreach (var v in opts.Variants)
{
    var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
    if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet") psi.ArgumentList.Add(typeof(Child).Assembly.Location);
    foreach (var a in args) psi.ArgumentList.Add(a);
    psi.ArgumentList.Add("--child");
    psi.ArgumentList.Add(v);
    using var p = Process.Start(psi)!;
    var stdout = p.StandardOutput.ReadToEnd();
    var stderr = p.StandardError.ReadToEnd();
    p.WaitForExit();
    var line = stdout.Split('\n').FirstOrDefault(l => l.StartsWith("RESULT ", StringComparison.Ordinal));
    if (p.ExitCode != 0 || line is null)
    {
        Console.WriteLine($"{v}: failed (exit {p.ExitCode}) {stderr.Trim()}");
        continue;
    }
    var f = line.Split(' ');
    results[v] = (double.Parse(f[2], CultureInfo.InvariantCulture), double.Parse(f[3], CultureInfo.InvariantCulture),
        double.Parse(f[4], CultureInfo.InvariantCulture), double.Parse(f[5], CultureInfo.InvariantCulture));
}

// CPU seconds (all threads) are reported beside wall seconds: on a shared machine they are the steadier measure.
Console.WriteLine($"{"variant",-8} {"wall s",8} {"cpu s",8} {"peak extra MiB",15} {"loss",10} {"wall/plain",11} {"cpu/plain",10} {"mem/plain",10}");
foreach (var (name, r) in results)
{
    var basis = results.TryGetValue("plain", out var b) ? b : r;
    Console.WriteLine($"{name,-8} {r.Seconds,8:F2} {r.CpuSeconds,8:F2} {r.ExtraMiB,15:F0} {r.Loss,10:F5} " +
                      $"{r.Seconds / basis.Seconds,11:F2} {r.CpuSeconds / basis.CpuSeconds,10:F2} {r.ExtraMiB / basis.ExtraMiB,10:F3}");
}
return 0;

internal sealed record BenchOptions(int Tokens, int StudentDim, int TeacherDim, int Vocab, bool TrainableWeight, int Iters,
    int Threads, string[] Variants, string? Child, int ChunkSize)
{
    public static BenchOptions Parse(string[] args)
    {
        int tokens = 1024, sd = 2048, td = 4096, vocab = 128_256, iters = 1, threads = 0, chunkSize = 0;
        var trainable = false;
        string[] variants = ["plain", "chunked", "fused"];
        string? child = null;
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--tokens": tokens = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--student-dim": sd = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--teacher-dim": td = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--vocab": vocab = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--iters": iters = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--threads": threads = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--chunk-size": chunkSize = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--trainable-weight": trainable = true; break;
                case "--variants": variants = Next().Split(','); break;
                case "--child": child = Next(); break;
                default: throw new ArgumentException($"unknown argument {args[i]}");
            }
        }
        if (tokens % 4 != 0) throw new ArgumentException($"--tokens must be a multiple of the batch size 4, got {tokens}");
        return new(tokens, sd, td, vocab, trainable, iters, threads, variants, child, chunkSize);
    }
}

internal static class Child
{
    private const double KdRatio = 0.5;

    public static void Run(string variant, BenchOptions o)
    {
        TorchRuntime.EnsureLoaded();
        if (o.Threads > 0) torch.set_num_threads(o.Threads);
        var g = new Generator(0);
        const int b = 4;
        var s = o.Tokens / b;
        var hS = torch.randn(new long[] { b, s, o.StudentDim }, generator: g);                  // [b, s, d]
        var wS = torch.rand(new long[] { o.Vocab, o.StudentDim }, generator: g).sub_(0.5).mul_(0.07).requires_grad_(o.TrainableWeight); // [v, d]
        var hT = torch.randn(new long[] { b, s, o.TeacherDim }, generator: g);                  // [b, s, d_t]
        // Output weights uniform with std 0.02 (cheaper to draw than normals at 0.4 G entries).
        var wT = torch.rand(new long[] { o.Vocab, o.TeacherDim }, generator: g).sub_(0.5).mul_(0.07);      // [v, d_t]
        var labels = torch.randint(0, o.Vocab, new long[] { b, s }, generator: g);             // [b, s]
        labels.masked_fill_(torch.rand(new long[] { b, s }, generator: g).lt(0.1), -100);

        // Warm up the kernels (and create the weight's .grad buffer, as in a steady training step) on 8 positions.
        Step(variant, hS.narrow(1, 0, 8), wS, hT.narrow(1, 0, 8), wT, labels.narrow(1, 0, 8), o.ChunkSize);
        wS.grad?.zero_();
        GC.Collect();
        GC.WaitForPendingFinalizers();

        var baseline = Memory.ResetPeak();
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var watch = Stopwatch.StartNew();
        double loss = 0;
        for (var i = 0; i < o.Iters; i++)
        {
            loss = Step(variant, hS, wS, hT, wT, labels, o.ChunkSize);
            wS.grad?.zero_();
        }
        var seconds = watch.Elapsed.TotalSeconds / o.Iters;
        var cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds / o.Iters;
        var peak = Memory.PeakKiB();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"RESULT {variant} {seconds:F3} {(peak - baseline) / 1024.0:F1} {loss:F6} {cpuSeconds:F3}"));
    }

    private static double Step(string variant, Tensor hS, Tensor wS, Tensor hT, Tensor wT, Tensor labels, int chunkSize)
    {
        using var scope = torch.NewDisposeScope();
        var h = hS.detach().requires_grad_(true);                   // stands in for the decoder's final hidden state
        Tensor loss;
        switch (variant)
        {
            case "plain":
            {
                var logits = h.matmul(wS.t());                      // [b, s, v]
                Tensor teacher;
                using (torch.no_grad()) teacher = hT.matmul(wT.t());  // [b, s, v]
                var ce = new CrossEntropyLoss().Forward(logits, labels);
                var kd = KdLoss.TorchtuneForwardKl().Forward(logits, teacher, labels);
                loss = (1 - KdRatio) * ce + KdRatio * kd;
                break;
            }
            case "chunked":
            {
                var studentChunks = h.tensor_split(8, 1).Select(c => c.matmul(wS.t())).ToList();   // 8 x [b, s/8, v]
                List<Tensor> teacherChunks;
                using (torch.no_grad()) teacherChunks = hT.tensor_split(8, 1).Select(c => c.matmul(wT.t())).ToList();
                var ce = CrossEntropyLoss.WithChunkedOutput().Forward(studentChunks, labels);
                var kd = KdLoss.TorchtuneForwardKlChunked().Forward(studentChunks, teacherChunks, labels);
                loss = (1 - KdRatio) * ce + KdRatio * kd;
                break;
            }
            case "fused":
            {
                var fused = new FusedLinearDistillationLoss(
                    new DivergenceOptions { Kind = DivergenceKind.ForwardKlCrossEntropy }, KdRatio, chunkSize);
                loss = fused.Forward(h, wS, TeacherOutput.FromLinear(hT, wT), labels).Loss;
                break;
            }
            default: throw new ArgumentException($"unknown variant {variant}; expected plain, chunked or fused");
        }
        loss.backward();
        return loss.item<float>();
    }
}

internal static class Memory
{
    /// <summary>Resets VmHWM to the current RSS (Linux clear_refs 5) and returns the current RSS in KiB.</summary>
    public static long ResetPeak()
    {
        File.WriteAllText("/proc/self/clear_refs", "5");
        return Read("VmRSS:");
    }

    public static long PeakKiB() => Read("VmHWM:");

    private static long Read(string key)
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith(key, StringComparison.Ordinal));
        return long.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
    }
}
