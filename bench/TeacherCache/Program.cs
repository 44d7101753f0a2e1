// KD step throughput with an offline teacher cache vs an online teacher 4x the student's size (parameters), on CPU.
// Online: teacher forward (no grad) + student forward/backward + dense forward KL + AdamW. Cached: read the batch's
// top-k from the cache on disk + student forward/backward + sparse forward KL (tail bucket) + AdamW. Prints tokens/s
// of both, their ratio, the cache's bytes/token and the disk read rate the cached run needs at its speed.
// Run: dotnet run -c Release --project bench/TeacherCache [-- steps]
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
const int vocab = 4096, batch = 4, seqLen = 128, k = 128;
DecoderArgs Args(int dim, int layers, int hidden) => new()
{
    VocabSize = vocab, NumLayers = layers, NumHeads = 4, NumKvHeads = 2, EmbedDim = dim, IntermediateDim = hidden, MaxSeqLen = seqLen,
};
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
    K = k, Vocab = vocab, LogProbStep = 1.0 / 64, MaxLogRatio = 20, MaxBytesPerToken = 200, Temperature = 1, TeacherId = "bench",
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
Console.WriteLine($"cache: {manifest.Tokens} tokens, {bytesPerToken:F1} bytes/token, mean stored k {writer.MeanStoredK:F1}, written in {sw.Elapsed.TotalSeconds:F1} s");

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
