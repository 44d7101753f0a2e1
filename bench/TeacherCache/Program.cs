// KD step throughput with an offline teacher cache vs an online teacher 4x the student's size (parameters), on CPU.
// Online: teacher forward (no grad) + student forward/backward + dense forward KL + AdamW. Cached: read the batch's
// top-k from the cache on disk + student forward/backward + sparse forward KL (tail bucket) + AdamW. Prints tokens/s
// of both, their ratio, the cache's bytes/token and the disk read rate the cached run needs at its speed.
// First it measures the cache's size at k = 128 over a 128,256 vocabulary (Llama 3's), with the default format (every
// top-k entry kept) and with a 200-byte budget: bytes/token of the shard files and entries kept per position, on three
// kinds of rows: this bench's teacher architecture at that vocabulary (random weights: near-flat rows, the costliest
// id sets) and Gaussian logits of scale 2 and 4 (peaked rows: the log-probs spread over several nats).
// Run: dotnet run -c Release --project bench/TeacherCache [-- steps [positions]]   (steps 0: size only)
using System.Diagnostics;
using SharpTune.Distillation;
using SharpTune.Losses;
using SharpTune.Models;
using SharpTune.Modules;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

TorchRuntime.EnsureLoaded();
torch.set_num_threads(Math.Max(1, Environment.ProcessorCount / 2));
var steps = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 6;
var sizePositions = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1024;
const int vocab = 4096, batch = 4, seqLen = 128, k = 128;
DecoderArgs Args(int dim, int layers, int hidden, int v = vocab) => new()
{
    VocabSize = v, NumLayers = layers, NumHeads = 4, NumKvHeads = 2, EmbedDim = dim, IntermediateDim = hidden, MaxSeqLen = seqLen,
};

// Cache size at k = 128, V = 128,256: samples of seqLen positions, written with the given budget (null: none).
const int llamaVocab = 128_256;
(double BytesPerToken, double MeanKept, int MinKept) CacheSize(Func<int, Tensor> rows, int samples, int? maxBytesPerToken)
{
    var sizeDir = Directory.CreateTempSubdirectory("sharptune-bench-tcache-size-").FullName;
    try
    {
        var w = TeacherCacheWriter.Open(sizeDir, new TeacherCacheManifest
        {
            K = k, Vocab = llamaVocab, LogProbStep = TopKFormat.DefaultLogProbStep, MaxBytesPerToken = maxBytesPerToken, Temperature = 1,
            TeacherId = "bench", DataHash = "bench", TokenizerHash = "bench", TeacherHash = "bench", Samples = samples, SamplesPerShard = 8,
        });
        for (var i = 0; i < samples; i++)
        {
            using var scope = torch.NewDisposeScope();
            w.AppendLogits(i, rows(i));                                                  // [seqLen, V]
        }
        var m = w.Complete();
        return ((double)m.Bytes / m.Tokens, m.MeanEntries, m.MinEntries);
    }
    finally { Directory.Delete(sizeDir, recursive: true); }
}
{
    var sizeSamples = Math.Max(1, sizePositions / seqLen);
    torch.manual_seed(0);
    using var wideTeacher = DecoderBuilder.Build(Args(256, 7, 704, llamaVocab));
    wideTeacher.eval();
    var rowKinds = new (string Name, Func<int, Tensor> Rows)[]
    {
        ("bench teacher (random weights)", i => { using var _ = torch.no_grad(); return wideTeacher.Forward(torch.randint(3, llamaVocab, [1, seqLen], generator: new Generator((ulong)i + 100), dtype: ScalarType.Int64))[0]; }),
        ("gaussian logits, scale 2", i => torch.randn(seqLen, llamaVocab, generator: new Generator((ulong)i + 200)) * 2),
        ("gaussian logits, scale 4", i => torch.randn(seqLen, llamaVocab, generator: new Generator((ulong)i + 300)) * 4),
    };
    Console.WriteLine($"cache size, k {k}, vocab {llamaVocab}, {sizeSamples * seqLen} positions per row kind, log_prob_step {TopKFormat.DefaultLogProbStep}:");
    Console.WriteLine($"  {"rows",-32} {"default B/token",16} {"kept mean/min",14} {"budget 200: B/token",20} {"kept mean/min",14}");
    foreach (var (name, rows) in rowKinds)
    {
        var full = CacheSize(rows, sizeSamples, null);
        var budget = CacheSize(rows, sizeSamples, 200);
        Console.WriteLine($"  {name,-32} {full.BytesPerToken,16:F1} {$"{full.MeanKept:F1}/{full.MinKept}",14} {budget.BytesPerToken,20:F1} {$"{budget.MeanKept:F1}/{budget.MinKept}",14}");
    }
}
if (steps == 0) return;

torch.manual_seed(0);
using var student = DecoderBuilder.Build(Args(128, 4, 352));
using var teacher = DecoderBuilder.Build(Args(256, 7, 704));
teacher.eval();
long Params(nn.Module m) => m.parameters().Sum(p => p.numel());
Console.WriteLine($"student {Params(student) / 1e6:F2}M params, teacher {Params(teacher) / 1e6:F2}M ({(double)Params(teacher) / Params(student):F1}x); " +
    $"batch {batch} x {seqLen}, vocab {vocab}, k {k}, threads {torch.get_num_threads()}");

var samples = steps * batch;
var g = new Generator(1);
var data = Enumerable.Range(0, samples).Select(_ => torch.randint(3, vocab, [seqLen], generator: g, dtype: ScalarType.Int64)).ToArray();

// Build the cache once (this is the teacher_logits recipe's work, paid once for every later student run).
var dir = Directory.CreateTempSubdirectory("sharptune-bench-tcache-").FullName;
var sw = Stopwatch.StartNew();
var writer = TeacherCacheWriter.Open(dir, new TeacherCacheManifest
{
    K = k, Vocab = vocab, LogProbStep = TopKFormat.DefaultLogProbStep, Temperature = 1, TeacherId = "bench",
    DataHash = "bench", TokenizerHash = "bench", TeacherHash = ContentHash.OfWeights(teacher), Samples = samples, SamplesPerShard = 8,
});
using (torch.no_grad())
    for (var i = 0; i < samples; i++)
    {
        using var scope = torch.NewDisposeScope();
        writer.AppendLogits(i, teacher.Forward(data[i].unsqueeze(0))[0]);
    }
var manifest = writer.Complete();
var bytesPerToken = (double)manifest.Bytes / manifest.Tokens;
Console.WriteLine($"cache: {manifest.Tokens} tokens, {bytesPerToken:F1} bytes/token, entries kept per position mean {manifest.MeanEntries:F1}, min {manifest.MinEntries}, written in {sw.Elapsed.TotalSeconds:F1} s");

var loss = new KdLoss(new DivergenceOptions(), missingMass: MissingMass.Tail);
using var cache = TeacherCache.Open(dir, expectedDataHash: "bench", expectedVocab: vocab);

double Run(bool cached)
{
    torch.manual_seed(2);
    using var opt = torch.optim.AdamW(student.parameters(), lr: 1e-4);
    double seconds = 0;
    for (var step = -1; step < steps; step++) // step -1 warms up
    {
        var b = Math.Max(step, 0);
        var indices = Enumerable.Range(b * batch, batch).ToArray();
        var t0 = Stopwatch.GetTimestamp();
        using var scope = torch.NewDisposeScope();
        var tokens = torch.stack(indices.Select(i => data[i]).ToArray());               // [b, s]
        var labels = tokens.roll(-1, 1);                                                  // [b, s]
        Tensor kd;
        if (cached)
        {
            var sparse = cache.ReadBatch(indices, seqLen);                                // [b, s, k] ids and log-probs
            kd = loss.Forward(student.Forward(tokens), sparse, labels);
        }
        else
        {
            Tensor teacherLogits;
            using (torch.no_grad()) teacherLogits = teacher.Forward(tokens);             // [b, s, v]
            kd = loss.Forward(student.Forward(tokens), teacherLogits, labels);
        }
        opt.zero_grad();
        kd.backward();
        opt.step();
        if (step >= 0) seconds += Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }
    return steps * batch * seqLen / seconds;
}

var online = Run(cached: false);
var offline = Run(cached: true);
Console.WriteLine($"online teacher : {online,10:F0} tokens/s");
Console.WriteLine($"teacher cache  : {offline,10:F0} tokens/s");
Console.WriteLine($"ratio cached/online: {offline / online:F2}x");
Console.WriteLine($"disk read needed at the cached speed: {offline * bytesPerToken / 1e6:F2} MB/s ({bytesPerToken:F1} bytes/token)");
Directory.Delete(dir, recursive: true);
