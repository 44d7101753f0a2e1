// Training steps at real shapes, batch 1 x 256/512 tokens: knowledge distillation Qwen2 1.5B -> 0.5B with a LoRA
// student (the seed's qwen2/1.5_to_0.5B_KD_lora_single_device), and LoRA fine-tunes of Qwen2 0.5B and Llama 3.2 1B
// (qwen2/0.5B_lora_single_device, llama3_2/1B_lora_single_device: same ranks, alphas and adapted modules).
// Weights: random HF-style folders (matrices N(0, 0.02)) written once by the same code as `sharptune init`, from
// config.json files made from SharpTune's own builders (their literal sizes cite the HF model cards), kept in
// --models (default: $TMPDIR/sharptune-realshapes) and reused. The step is bench/KdStep's KdStepRunner, the recipes'
// step (chunked output, closed-form CE + forward KL, DataParallelGradients, AdamW over the adapters).
// Reported per case: seconds per step (median of the timed steps), processed tokens/s, MFU against a GEMM probe of
// the step's dtype taken just before each step in this process, and peak RSS against an estimate printed beside it.
// FLOPs (matmuls only, PaLM appendix B style): a LoRA student costs 4N + 12·L·d·s per token (forward 2N + 4·L·d·s;
// backward only input gradients through the frozen weights, 2N, plus 8·L·d·s for attention), a frozen teacher
// 2N + 4·L·d·s; N counts the weights that enter a matmul (output projection included, embeddings' lookup not).
// Usage: dotnet run -c Release --project bench/RealShapes -- [--only kd,lora05,lora1b] [--seq 256,512] [--steps 3]
//        [--warmup 1] [--dtype fp32|bf16|auto] [--threads 0] [--profile] [--models DIR]
// Smoke test: --only lora05 --seq 256 --steps 1 --warmup 0 (a few minutes on 2 cores, most of it writing weights).
using System.Globalization;
using SharpTune.Bench.KdStep;
using SharpTune.Checkpointing;
using SharpTune.Models;
using SharpTune.Models.Llama3;
using SharpTune.Models.Qwen2;
using SharpTune.Modules;
using SharpTune.Modules.Peft;
using SharpTune.Native;
using SharpTune.Training;
using static TorchSharp.torch;

string Arg(string name, string fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
int IntArg(string name, int fallback) => int.Parse(Arg(name, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);

var only = Arg("--only", "kd,lora05,lora1b").Split(',');
foreach (var c in only)
    if (c is not ("kd" or "lora05" or "lora1b")) throw new ArgumentException($"--only {c}: expected kd, lora05, lora1b");
var seqs = Arg("--seq", "256,512").Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
var steps = IntArg("--steps", 3);
var warmup = IntArg("--warmup", 1);
if (steps < 1 || warmup < 0) throw new ArgumentException("--steps must be at least 1 and --warmup at least 0");
var modelsDir = Arg("--models", Path.Combine(Path.GetTempPath(), "sharptune-realshapes"));
TorchRuntime.SetThreads(IntArg("--threads", 0));
Console.WriteLine(NativeHeap.Configure());
var runtimeRss = ProcessMemory.Read().RssBytes; // the process before any model: CLR, libtorch, thread pools
var dtypeArg = Arg("--dtype", "fp32");
var dtype = dtypeArg switch
{
    "fp32" => ScalarType.Float32,
    "bf16" => ScalarType.BFloat16,
    "auto" => Precision.ProbeCpu().Choice,
    _ => throw new ArgumentException($"--dtype {dtypeArg}: expected fp32, bf16 or auto"),
};
var dtypeName = dtype == ScalarType.BFloat16 ? "bf16" : "fp32";
Console.WriteLine($"machine: {CpuModel()}, {Environment.ProcessorCount} logical CPUs, {get_num_threads()} threads, load {LoadAverage()}");
Console.WriteLine($"{(dtypeArg == "auto" ? Precision.ProbeCpu().ToString() : $"dtype {dtypeName}")}; {TorchRuntime.WaitPolicySetup}");

var rows = new List<string>();
foreach (var name in only)
foreach (var seq in seqs)
{
    var (teacherArgs, studentArgs, lora) = name switch
    {
        "kd" => ((DecoderArgs?)Qwen2Models.Qwen2_1_5BArgs(), Qwen2Models.Qwen2_0_5BArgs(), Lora(32, 64)),
        "lora05" => (null, Qwen2Models.Qwen2_0_5BArgs(), Lora(32, 64)),
        _ => (null, Llama3Models.Llama3_2_1BArgs(), Lora(64, 128)),
    };
    var label = $"{name} {(teacherArgs is null ? "" : "qwen2 1.5B -> ")}{Describe(studentArgs)} LoRA r{lora.Rank}, 1 x {seq}, {dtypeName}";
    Console.WriteLine($"\n=== {label} (load {LoadAverage()})");
    var studentDir = EnsureWeights(studentArgs);
    var teacherDir = teacherArgs is null ? null : EnsureWeights(teacherArgs);
    ProcessMemory.TryResetPeak(); // writing weights above, and earlier cases, do not count
    var student = Load(studentArgs, studentDir, lora);
    var teacher = teacherArgs is null ? null : Load(teacherArgs, teacherDir!, null);
    var estimate = Estimate(studentArgs, student, teacherArgs, seq) + runtimeRss;
    var runner = new KdStepRunner(new StepOptions((int)studentArgs.VocabSize, seq, 1, dtype, args.Contains("--profile")), "recipe", teacher, student);
    runner.Run(warmup, steps);
    var peakRss = ProcessMemory.Read().PeakRssBytes;
    var flops = seq * (4 * MatmulParams(studentArgs) + 12.0 * studentArgs.NumLayers * studentArgs.EmbedDim * seq
                       + (teacherArgs is null ? 0 : 2 * MatmulParams(teacherArgs) + 4.0 * teacherArgs.NumLayers * teacherArgs.EmbedDim * seq));
    var seconds = Median(runner.StepSeconds);
    var mfu = Median(runner.StepSeconds.Zip(runner.StepPeaks, (s, peak) => flops / s / (peak * 1e9)).ToList());
    foreach (var (phase, t) in runner.Phases) Console.WriteLine($"  {phase,-28} {t,8:F2} s {t / runner.Phases.Values.Sum(),7:P1}");
    var row = string.Create(CultureInfo.InvariantCulture,
        $"{label,-62} {seconds,8:F2} {seq / seconds,9:F0} {Median(runner.StepPeaks),8:F0} {mfu,6:P0} {peakRss / GiB,7:F2} {estimate / GiB,7:F2}  loss {runner.LastLoss:F3}");
    Console.WriteLine(row);
    rows.Add(row);
    runner.Dispose(); // disposes teacher and student
}
Console.WriteLine($"\n{"case",-62} {"s/step",8} {"tok/s",9} {"GEMM GF",8} {"MFU",6} {"RSS GiB",7} {"est GiB",7}");
foreach (var r in rows) Console.WriteLine(r);
return 0;

// The weights folder for these sizes, written once (bf16, as Hub checkpoints store them) and reused.
string EnsureWeights(DecoderArgs a)
{
    var dir = Path.Combine(modelsDir, Describe(a).Replace(' ', '_'));
    if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
    Directory.CreateDirectory(modelsDir);
    var configPath = Path.Combine(modelsDir, Describe(a).Replace(' ', '_') + ".config.json");
    File.WriteAllText(configPath, HfModelConfig.FromDecoderArgs(a, a.QkvBias ? "qwen2" : "llama").ToJson());
    var w = System.Diagnostics.Stopwatch.StartNew();
    var report = RandomInit.WriteHfFolder(configPath, dir, seed: 0, ScalarType.BFloat16);
    Console.WriteLine($"wrote {report.Folder}: {report.Parameters:N0} parameters in {w.Elapsed.TotalSeconds:F0} s");
    return dir;
}

TransformerDecoder Load(DecoderArgs a, string dir, LoraOptions? options)
{
    Determinism.Seed(0); // LoRA A matrices
    var model = DecoderBuilder.Build(a, options, null, dtype);
    var target = options is null ? model.state_dict() : model.state_dict().Where(kv => !Adapters.IsAdapterKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
    HfCheckpointer.LoadInto(target, dir, strict: true, convertDtype: true);
    return model;
}

// Bytes the step should need: weights in the step's dtype, adapter parameters with their gradients and AdamW moments,
// the student's saved activations, the logits chunks' saved gradients and temporaries, the teacher's live activations.
double Estimate(DecoderArgs s, TransformerDecoder student, DecoderArgs? t, int seq)
{
    double bytes = dtype == ScalarType.BFloat16 ? 2 : 4;
    var trainable = ModuleParameters.Trainable(student).Sum(p => p.numel());
    var weights = (ModuleParameters.Count(student) + (t is null ? 0 : ParamsOf(t))) * bytes;
    var optimizer = trainable * bytes * 3; // gradient + two AdamW moments
    var hd = s.HeadDim ?? s.EmbedDim / s.NumHeads;
    // per layer and token: 2 norm inputs, q/k/v, attention output, o_proj input, gate, up, SwiGLU output, down input
    var perLayer = (4.0 * s.EmbedDim + 2.0 * s.NumKvHeads * hd + 4.0 * s.IntermediateDim) * bytes;
    var activations = s.NumLayers * perLayer * seq;
    var logits = seq * (double)s.VocabSize * (bytes /* saved gradient */ + 4 * 3.0 / 8 /* fp32 softmax buffers, one chunk of 8 */)
                 + (t is null ? 0 : seq * (double)s.VocabSize * bytes);
    var line = string.Create(CultureInfo.InvariantCulture,
        $"estimate: weights {weights / GiB:F2} + adapters/optimizer {optimizer / GiB:F2} + activations {activations / GiB:F2} + logits {logits / GiB:F2} GiB + runtime {runtimeRss / GiB:F2} GiB");
    Console.WriteLine(line);
    return weights + optimizer + activations + logits;
}

static long ParamsOf(DecoderArgs a)
{
    var hd = (long)(a.HeadDim ?? a.EmbedDim / a.NumHeads);
    long d = a.EmbedDim, f = a.IntermediateDim, v = a.VocabSize;
    var attn = d * a.NumHeads * hd * 2 + 2 * d * a.NumKvHeads * hd + (a.QkvBias ? a.NumHeads * hd + 2 * a.NumKvHeads * hd : 0);
    return a.NumLayers * (attn + 3 * d * f + 2 * d) + d + v * d * (a.TieEmbeddings ? 1 : 2);
}

static double MatmulParams(DecoderArgs a)
{
    var hd = (double)(a.HeadDim ?? a.EmbedDim / a.NumHeads);
    double d = a.EmbedDim, f = a.IntermediateDim;
    return a.NumLayers * (d * a.NumHeads * hd * 2 + 2 * d * a.NumKvHeads * hd + 3 * d * f) + d * a.VocabSize;
}

static LoraOptions Lora(int rank, double alpha) =>
    DecoderBuilder.Lora(["q_proj", "v_proj", "output_proj"], applyLoraToMlp: true, applyLoraToOutput: false, rank, alpha, 0.0, useDora: false);

static string Describe(DecoderArgs a) => $"{(a.QkvBias ? "qwen2" : "llama")} d{a.EmbedDim} L{a.NumLayers}";

static double Median(List<double> xs)
{
    var s = xs.OrderBy(x => x).ToArray();
    return s.Length == 0 ? double.NaN : s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
}

static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";

static string CpuModel() => File.Exists("/proc/cpuinfo")
    ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU"
    : "unknown CPU";

internal static partial class Program
{
    private const double GiB = 1024.0 * 1024 * 1024;
}
