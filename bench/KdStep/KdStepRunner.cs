// The SharpTune side of the KD step benchmark: options, model shapes, the FLOP count and the step itself, as
// KnowledgeDistillationSingleDevice.Train runs it: one dispose scope per micro-batch around the recipe's own
// LossStep.Run and the gradient sync's Backward (the sync the recipe builds for one process), then Finish(computeNorm:
// true), optimizer step and zero_grad inside one dispose scope, then NativeHeap.AfterStep. The variants twoloss and
// inference are alternatives to the recipe's step kept for comparison. Without a teacher the step is the LoRA/full
// fine-tune recipes' (class loss only). bench/RealShapes compiles this file too and passes models it loaded from HF
// folders.
using System.Diagnostics;
using System.Globalization;
using SharpTune.Data;
using SharpTune.Distributed;
using SharpTune.Losses;
using SharpTune.Models;
using SharpTune.Modules;
using SharpTune.Recipes;
using SharpTune.Recipes.Support;
using SharpTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Bench.KdStep;

/// <summary>A Llama shape: model dim, layers, heads, KV heads, SwiGLU hidden size.</summary>
internal sealed record ModelShape(int Dim, int Layers, int Heads, int KvHeads, int Hidden)
{
    public static ModelShape Parse(string s)
    {
        var p = s.Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        if (p.Length != 5) throw new ArgumentException($"model shape '{s}': expected dim,layers,heads,kv_heads,hidden");
        return new ModelShape(p[0], p[1], p[2], p[3], p[4]);
    }

    public string ToArg() => $"{Dim},{Layers},{Heads},{KvHeads},{Hidden}";

    public override string ToString() => $"d{Dim}/L{Layers}/h{Heads}/kv{KvHeads}/f{Hidden}";

    /// <summary>Parameters that enter a matmul per token: the layers' projections plus the output projection.</summary>
    public double MatmulParams(int vocab)
    {
        var hd = Dim / Heads;
        double attn = (double)Dim * Heads * hd * 2 + 2.0 * Dim * KvHeads * hd;
        return Layers * (attn + 3.0 * Dim * Hidden) + (double)Dim * vocab;
    }
}

/// <summary>What one timed step needs: the batch shape, the element type, and whether to time its phases.</summary>
internal sealed record StepOptions(int Vocab, int Seq, int Batch, ScalarType Dtype, bool Profile)
{
    public string DtypeName => Dtype == ScalarType.BFloat16 ? "bf16" : "fp32";

    /// <summary>--dtype fp32|bf16 (default fp32).</summary>
    public static ScalarType ParseDtype(string[] args)
    {
        var i = Array.IndexOf(args, "--dtype");
        var value = i >= 0 && i + 1 < args.Length ? args[i + 1] : "fp32";
        return value switch
        {
            "fp32" => ScalarType.Float32,
            "bf16" => ScalarType.BFloat16,
            _ => throw new ArgumentException($"--dtype {value}: expected fp32 or bf16"),
        };
    }
}

internal sealed record BenchOptions(
    ModelShape Teacher, ModelShape Student, int Vocab, int Seq, int Batch, int Rounds, int Steps, int Warmup,
    int Threads, string? Python, string Variant, bool Profile, ScalarType Dtype)
{
    public StepOptions Step => new(Vocab, Seq, Batch, Dtype, Profile);

    public static BenchOptions Parse(string[] args)
    {
        var quick = args.Contains("--quick");
        string Get(string name, string fallback)
        {
            var i = Array.IndexOf(args, name);
            return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
        }
        int Int(string name, int fallback) => int.Parse(Get(name, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
        var variant = Get("--variant", "recipe");
        foreach (var v in variant.Split(','))
            if (v is not ("recipe" or "twoloss" or "nonorm" or "inference" or "fused" or "all"))
                throw new ArgumentException($"--variant {v}: expected a comma-separated list of recipe, twoloss, nonorm, inference, fused, or all");
        return new BenchOptions(
            ModelShape.Parse(Get("--teacher", quick ? "256,4,4,2,768" : "768,12,12,4,2048")),
            ModelShape.Parse(Get("--student", quick ? "128,2,2,1,384" : "384,6,6,2,1024")),
            Int("--vocab", quick ? 8000 : 32_000), Int("--seq", quick ? 128 : 512), Int("--batch", quick ? 2 : 4),
            Int("--rounds", quick ? 2 : 3), Int("--steps", quick ? 3 : 3), Int("--warmup", 1), Int("--threads", 0),
            args.Contains("--no-python") ? null : Get("--python", "/usr/bin/python3"), variant, args.Contains("--profile"),
            StepOptions.ParseDtype(args));
    }
}

internal static class Flops
{
    /// <summary>PaLM-style model FLOPs of one KD step: student 6N + 12·L·d·s per token, teacher 2N + 4·L·d·s.</summary>
    public static double KdStep(BenchOptions o)
    {
        double tokens = (double)o.Batch * o.Seq;
        var student = 6 * o.Student.MatmulParams(o.Vocab) + 12.0 * o.Student.Layers * o.Student.Dim * o.Seq;
        var teacher = 2 * o.Teacher.MatmulParams(o.Vocab) + 4.0 * o.Teacher.Layers * o.Teacher.Dim * o.Seq;
        return tokens * (student + teacher);
    }

    /// <summary>Median GFLOP/s of a 1024³ matmul in <paramref name="dtype"/> (what libtorch reaches on this machine now).</summary>
    public static double MatmulPeakGflops(ScalarType dtype = ScalarType.Float32, int reps = 9) =>
        Precision.GemmGflops(dtype, 1024, reps);
}

/// <summary>Teacher + student and their optimizer; <see cref="Run"/> times KD steps of one variant.</summary>
internal sealed class KdStepRunner : IDisposable
{
    private static readonly Scalar IgnoreLabel = -100L; // one native Scalar for the run (a literal makes one per call, freed by the GC)
    private readonly StepOptions _o;
    private readonly TransformerDecoder? _teacher;
    private readonly TransformerDecoder _student;
    private readonly optim.Optimizer _optimizer;
    private readonly IGradientSync _accumulator;
    private readonly KnowledgeDistillationSingleDevice.LossStep? _recipeStep;
    private readonly KnowledgeDistillationSingleDevice.LossStep? _fusedStep;
    private readonly CrossEntropyLoss _classLoss = CrossEntropyLoss.WithChunkedOutput(8);
    private readonly KdLoss _kdLoss = KdLoss.TorchtuneForwardKlChunked(8);
    private readonly FusedLinearDistillationLoss _fused = FusedLinearDistillationLoss.Create("forward_kl_ce", kdRatio: 0.5);
    private const double KdRatio = 0.5;
    private readonly Generator _data = new Generator(1234);

    public KdStepRunner(BenchOptions o, string variant)
        : this(o.Step, variant, Seeded(() => DecoderBuilder.Build(Args(o, o.Teacher, tie: false), null, null, o.Dtype)),
            DecoderBuilder.Build(Args(o, o.Student, tie: true), null, null, o.Dtype)) // teacher untied like Llama 3.1 8B, student tied like Llama 3.2 1B
    {
    }

    /// <summary>Steps over given models: with a teacher the KD step, without one the fine-tune step (class loss only).</summary>
    public KdStepRunner(StepOptions o, string variant, TransformerDecoder? teacher, TransformerDecoder student)
    {
        _o = o;
        Variant = variant;
        _teacher = teacher;
        _student = student;
        if (_teacher is not null)
        {
            foreach (var p in _teacher.parameters()) p.requires_grad = false;
            _teacher.eval();
            // The recipe's step as its Setup builds it for an unfused and a fused kd_loss (no cache, same vocabulary).
            _recipeStep = new KnowledgeDistillationSingleDevice.LossStep(_student, _teacher, null, _classLoss, _kdLoss, null, KdRatio, 0, o.Vocab, CPU);
            _fusedStep = new KnowledgeDistillationSingleDevice.LossStep(_student, _teacher, null, null, null, _fused, KdRatio, 0, o.Vocab, CPU);
        }
        _student.train();
        var trainable = ModuleParameters.Trainable(_student);
        _optimizer = Optimizers.AdamW(trainable, lr: 3e-4, weightDecay: 0.01);
        _accumulator = DistributedContext.CurrentOrLocal.GradientSync(trainable, maxGradNorm: null); // as the recipe, clip_grad_norm unset
    }

    public string Variant { get; }

    public double LastLoss { get; private set; }

    /// <summary>Seconds spent in each phase of the timed steps (filled when <c>--profile</c> is given).</summary>
    public Dictionary<string, double> Phases { get; } = new();

    private Stopwatch? _lap;
    private readonly Dictionary<string, double> _lastPhases = new();

    private void Lap(string phase)
    {
        if (_lap is null) return;
        Phases[phase] = Phases.GetValueOrDefault(phase) + _lap.Elapsed.TotalSeconds;
        _lap.Restart();
    }

    private static T Seeded<T>(Func<T> build)
    {
        Determinism.Seed(0);
        return build();
    }

    private static DecoderArgs Args(BenchOptions o, ModelShape m, bool tie) => new()
    {
        VocabSize = o.Vocab, NumLayers = m.Layers, NumHeads = m.Heads, NumKvHeads = m.KvHeads, EmbedDim = m.Dim,
        IntermediateDim = m.Hidden, MaxSeqLen = o.Seq, TieEmbeddings = tie,
    };

    /// <summary>Wall seconds of each timed step, paired with <see cref="Run"/>'s result.</summary>
    public List<double> StepSeconds { get; } = new();

    /// <summary>GEMM rate (GFLOP/s) measured just before each timed step, paired with <see cref="Run"/>'s result.</summary>
    public List<double> StepPeaks { get; } = new();

    /// <summary>Runs warm-up then timed steps; returns tokens/s of each timed step. <paramref name="probePeak"/>: a
    /// GEMM probe before each timed step (for MFU/step).</summary>
    public List<double> Run(int warmup, int steps, bool probePeak = true)
    {
        var result = new List<double>();
        for (var i = 0; i < warmup + steps; i++)
        {
            if (i >= warmup && probePeak) StepPeaks.Add(Flops.MatmulPeakGflops(_o.Dtype, reps: 5)); // the machine's speed right now, in the step's dtype
            Tensor tokens, labels;
            using (NewDisposeScope()) // the slice and the pad column too, not only the two tensors kept
            {
                tokens = randint(0, _o.Vocab, [_o.Batch, _o.Seq], generator: _data).DetachFromDisposeScope(); // [b, s]
                labels = cat([tokens[.., 1..], full(_o.Batch, 1, IgnoreLabel, ScalarType.Int64)], 1).DetachFromDisposeScope(); // [b, s]
            }
            var watch = Stopwatch.StartNew();
            _lap = _o.Profile && i >= warmup ? Stopwatch.StartNew() : null;
            using (var scope = NewDisposeScope())
            {
                var (sum, count) = LossStep(tokens, labels);
                _accumulator.Backward(sum, count);
                Lap("backward");
            }
            Lap("free step tensors");
            AccumulatedStep r;
            using (NewDisposeScope())
            {
                r = _accumulator.Finish(computeNorm: Variant != "nonorm");
                Lap("finish (scale, grad norm)");
                _optimizer.step();
                Lap("adamw step");
                _optimizer.zero_grad();
            }
            Lap("zero_grad");
            NativeHeap.AfterStep();
            Lap("heap trim");
            var dt = watch.Elapsed.TotalSeconds;
            if (_lap is not null)
            {
                var mem = ProcessMemory.Read();
                var heap = NativeHeap.Statistics();
                Console.WriteLine($"    step {i}: {dt:F2} s, RSS {mem.RssBytes / 1073741824.0:F2} GiB (peak {mem.PeakRssBytes / 1073741824.0:F2}), " +
                                  $"malloc in use {heap?.InUseBytes / 1073741824.0:F2} free {heap?.FreeBytes / 1073741824.0:F2} mmapped {heap?.MmappedBytes / 1073741824.0:F2} GiB, " +
                                  $"live tensors {TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount}, gen0 GCs {GC.CollectionCount(0)}, " +
                                  string.Join(", ", Phases.Select(kv => $"{kv.Key} {kv.Value - _lastPhases.GetValueOrDefault(kv.Key):F2}")));
                foreach (var (k, v) in Phases) _lastPhases[k] = v;
            }
            LastLoss = r.Loss;
            tokens.Dispose();
            labels.Dispose();
            if (i >= warmup)
            {
                result.Add(_o.Batch * _o.Seq / dt);
                StepSeconds.Add(dt);
            }
        }
        return result;
    }

    // The recipe's LossStep (variants recipe, nonorm, fused), or an alternative to it (twoloss, inference).
    private (Tensor Sum, long Count) LossStep(Tensor tokens, Tensor labels)
    {
        if (_teacher is null)
        {
            // The fine-tune recipes' step: chunked cross-entropy over the student's logits.
            var h = _student.ForwardHidden(tokens, null, null); // [b, s, d]
            Lap("student forward");
            var logits = _student.ChunkedOutput(h, 8); // 8 x [b, s_i, v]
            Lap("student logits");
            var ce = _classLoss.Sum(logits, labels);
            Lap("ce loss");
            return (ce.Sum, ce.Count.item<long>());
        }
        if (Variant is "recipe" or "nonorm" or "fused")
        {
            var (sum, _, _, count) = (Variant == "fused" ? _fusedStep! : _recipeStep!).Run(new Batch(tokens, labels), []);
            Lap("loss step (forward, teacher, loss)");
            return (sum, count);
        }
        var hidden = _student.ForwardHidden(tokens, null, null); // [b, s, d]
        Lap("student forward");
        var studentLogits = _student.ChunkedOutput(hidden, 8); // 8 x [b, s_i, v]
        Lap("student logits");
        List<Tensor> teacherLogits;
        using (Variant == "inference" ? inference_mode() : no_grad())
        {
            var th = _teacher.ForwardHidden(tokens); // [b, s, d_t]
            Lap("teacher forward");
            teacherLogits = _teacher.ChunkedOutput(th, 8); // 8 x [b, s_i, v]
            Lap("teacher logits");
        }
        if (Variant == "twoloss")
        {
            // the recipe before ClassAndKdSum: two autograd losses over the same student logits
            var cls = _classLoss.Sum(studentLogits, labels);
            Lap("ce loss");
            var kd = _kdLoss.Sum(studentLogits, teacherLogits, labels);
            Lap("kd loss");
            _ = cls.Sum.item<float>();
            _ = kd.Sum.item<float>();
            return ((1 - KdRatio) * cls.Sum + KdRatio * kd.Sum, cls.Count.item<long>());
        }
        var sums = ClassAndKdSum.Compute(_classLoss, _kdLoss, KdRatio, studentLogits, teacherLogits, labels); // inference: the recipe's loss under inference_mode
        Lap("ce + kd loss");
        _ = sums.Class.Sum.item<float>(); // the recipe logs both terms
        _ = sums.Kd.Sum.item<float>();
        return (sums.Weighted, sums.Class.Count.item<long>());
    }

    public void Dispose()
    {
        _optimizer.Dispose();
        _accumulator.Dispose();
        _teacher?.Dispose();
        _student.Dispose();
        _data.Dispose();
    }
}
