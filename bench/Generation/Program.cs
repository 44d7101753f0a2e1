// Generation and evaluation speed on the real stories260K model (llama2.c weights, 512-token SentencePiece vocab):
//  1. greedy decoding with the KV cache (Generation.Generate) vs recomputing the whole sequence every step, checking
//     both produce the same tokens, reported as generated tokens/s;
//  2. hellaswag-shaped multiple-choice scoring (contexts of ~40-80 tokens, 4 endings of ~15-30 tokens cut from the
//     model's own greedy story) with shared-context packing vs one row per choice, checking the log-likelihoods agree.
//  3. with --runc <run.c>: llama2.c's run.c built here (gcc -O3 -march=native, one thread, no OpenMP) on the same
//     model, alternating with SharpTune at batch 1 and at batch --gen-batch (32) prompts, greedy, --tokens positions:
//     tokens/s of each and the ratios the generation targets are stated in (batch 1 vs run.c; batch-32 aggregate vs
//     run.c's batch 1). run.c reports its own "achieved tok/s".
// Usage: dotnet run -c Release --project bench/Generation -- <folder with stories260K.bin and tok512.model>
//        [--threads 1] [--tokens 256] [--docs 32] [--batch 8] [--repeats 3] [--gen-batch 32] [--runc path/to/run.c]
using System.Diagnostics;
using SharpTune.Eval;
using SharpTune.Models;
using SharpTune.Models.Llama2c;
using SharpTune.Native;
using SharpTune.Tokenizers;
using static TorchSharp.torch;

if (args.Length == 0 || args[0].StartsWith('-'))
{
    Console.Error.WriteLine("usage: <stories260K folder> [--threads N] [--tokens N] [--docs N] [--batch N] [--repeats N]");
    return 2;
}
var folder = args[0];
int Opt(string name, int fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : fallback;
}
var threads = Opt("--threads", 1);
var newTokens = Opt("--tokens", 256);
var docCount = Opt("--docs", 32);
var batch = Opt("--batch", 8);
var repeats = Opt("--repeats", 3);
var genBatch = Opt("--gen-batch", 32);
var runcIndex = Array.IndexOf(args, "--runc");
var runc = runcIndex >= 0 && runcIndex + 1 < args.Length ? args[runcIndex + 1] : null;

TorchRuntime.EnsureLoaded();
TorchRuntime.SetThreads(threads);
var imported = Llama2cImporter.Read(Path.Combine(folder, "stories260K.bin"));
using var model = HfModels.FromConfig(imported.Config);
model.LoadStateDict(imported.StateDict);
model.eval();
var tokenizer = TokenizerLoader.Load(Path.Combine(folder, "tok512.model"));
Console.WriteLine($"stories260K, {threads} thread(s), libtorch CPU; best of {repeats} runs");

// 1. KV cache vs recompute.
var options = new GenerationOptions { MaxNewTokens = newTokens, BosId = tokenizer.BosId };
GenerationResult? cached = null;
var cachedBest = double.MaxValue;
for (var r = 0; r < repeats; r++)
{
    var result = Generation.Generate(model, [], options);
    var s = (result.PrefillTime + result.DecodeTime).TotalSeconds;
    if (s < cachedBest) (cachedBest, cached) = (s, result);
}
var recomputeBest = double.MaxValue;
List<int> recomputed = [];
for (var r = 0; r < repeats; r++)
{
    var clock = Stopwatch.StartNew();
    var seq = new List<long> { tokenizer.BosId };
    using (no_grad())
    {
        for (var step = 0; step < cached!.GeneratedTokens.Count; step++)
        {
            using var scope = NewDisposeScope();
            var logits = model.Forward(tensor(seq.ToArray()).unsqueeze(0)); // [1, s, v]
            seq.Add(logits[0, -1].argmax().item<long>());
        }
    }
    recomputeBest = Math.Min(recomputeBest, clock.Elapsed.TotalSeconds);
    recomputed = seq.Skip(1).Select(t => (int)t).ToList();
}
var same = recomputed.SequenceEqual(cached!.GeneratedTokens);
var n = cached.GeneratedTokens.Count;
Console.WriteLine($"greedy decoding, {n} tokens from BOS:");
Console.WriteLine($"  KV cache   {n / cachedBest,8:F1} tokens/s ({cachedBest:F3} s)");
Console.WriteLine($"  recompute  {n / recomputeBest,8:F1} tokens/s ({recomputeBest:F3} s)");
Console.WriteLine($"  speed-up   {recomputeBest / cachedBest,8:F2}x; same tokens: {same}");

// 2. Shared-context scoring on hellaswag-shaped requests cut from the model's own story text.
var story = tokenizer.Decode(cached.GeneratedTokens);
var words = story.Split(' ', StringSplitOptions.RemoveEmptyEntries);
var rng = new Random(1234);
string Slice(int minWords, int maxWords)
{
    var len = rng.Next(minWords, maxWords + 1);
    var start = rng.Next(0, Math.Max(1, words.Length - len));
    return string.Join(' ', words.Skip(start).Take(len));
}
var requests = new List<LoglikelihoodRequest>();
for (var d = 0; d < docCount; d++)
{
    var context = Slice(30, 60);
    for (var c = 0; c < 4; c++) requests.Add(new LoglikelihoodRequest(context, " " + Slice(10, 22)));
}
var lm = new DelegateCausalLm((t, m, p) => model.Forward(t, m, p), model.MaxSeqLen);
(double Seconds, IReadOnlyList<LoglikelihoodResult> Results) Time(bool shared)
{
    var best = double.MaxValue;
    IReadOnlyList<LoglikelihoodResult> results = [];
    for (var r = 0; r < repeats; r++)
    {
        var scorer = new LoglikelihoodScorer(lm, tokenizer, batch, shared);
        var clock = Stopwatch.StartNew();
        results = scorer.Score(requests);
        best = Math.Min(best, clock.Elapsed.TotalSeconds);
    }
    return (best, results);
}
var separate = Time(false);
var packed = Time(true);
var maxDiff = separate.Results.Zip(packed.Results, (a, b) => Math.Abs(a.LogLikelihood - b.LogLikelihood)).Max();
var meanLl = separate.Results.Average(r => Math.Abs(r.LogLikelihood));
Console.WriteLine($"multiple-choice scoring, {docCount} docs x 4 choices, batch {batch}:");
Console.WriteLine($"  one row per choice  {separate.Seconds:F3} s ({requests.Count / separate.Seconds:F1} requests/s)");
Console.WriteLine($"  shared context      {packed.Seconds:F3} s ({requests.Count / packed.Seconds:F1} requests/s)");
Console.WriteLine($"  speed-up            {separate.Seconds / packed.Seconds:F2}x; max |ll difference| {maxDiff:E2} (mean |ll| {meanLl:F1})");
// 3. Batched generation, and llama2.c's run.c alternating with it.
var prompts = Enumerable.Range(0, genBatch).Select(i => (IReadOnlyList<int>)[tokenizer.BosId, .. tokenizer.Encode(Slice(1, 4), addBos: false, addEos: false)]).ToList();
double Tps(IReadOnlyList<IReadOnlyList<int>> batchPrompts)
{
    var r = Generation.GenerateBatch(model, batchPrompts, new GenerationOptions { MaxNewTokens = newTokens, BosId = tokenizer.BosId });
    return r.TokensPerSecond;
}
string? runBinary = runc is null ? null : BuildRunC(runc);
var best = new Dictionary<string, double>();
void Keep(string key, double v) => best[key] = Math.Max(best.GetValueOrDefault(key), v);
var batchSame = true;
for (var r = 0; r < repeats; r++)
{
    if (runBinary is not null) Keep("run.c", RunC(runBinary));
    Keep("batch 1", Tps([[tokenizer.BosId]]));
    Keep($"batch {genBatch}", Tps(prompts));
}
var greedyBatch = Generation.GenerateBatch(model, prompts, new GenerationOptions { MaxNewTokens = 32 });
for (var i = 0; i < prompts.Count; i++)
    batchSame &= greedyBatch.GeneratedTokens[i].SequenceEqual(Generation.Generate(model, prompts[i], new GenerationOptions { MaxNewTokens = 32 }).GeneratedTokens);
Console.WriteLine($"generation, greedy, {newTokens} positions, best of {repeats} alternating runs:");
foreach (var (k, v) in best) Console.WriteLine($"  {k,-10} {v,10:F0} tokens/s");
if (best.TryGetValue("run.c", out var runcTps))
{
    Console.WriteLine($"  batch 1 / run.c          {best["batch 1"] / runcTps:F2} (target >= 0.33)");
    Console.WriteLine($"  batch {genBatch} / run.c batch 1  {best[$"batch {genBatch}"] / runcTps:F2} (target >= 3)");
}
Console.WriteLine($"  batch {genBatch} greedy rows equal batch 1's: {batchSame}");
return same && maxDiff < 1e-3 && batchSame ? 0 : 1;

string BuildRunC(string source)
{
    var exe = Path.Combine(Path.GetTempPath(), $"sharptune-runc-{Environment.ProcessId}");
    var gcc = Process.Start(new ProcessStartInfo("gcc", ["-O3", "-march=native", "-o", exe, source, "-lm"]) { RedirectStandardError = true })!;
    var err = gcc.StandardError.ReadToEnd();
    gcc.WaitForExit();
    if (gcc.ExitCode != 0) throw new InvalidOperationException($"gcc failed on {source}: {err}");
    return exe;
}

double RunC(string exe)
{
    var psi = new ProcessStartInfo(exe, [Path.Combine(folder, "stories260K.bin"), "-z", Path.Combine(folder, "tok512.bin"), "-t", "0", "-n", newTokens.ToString(System.Globalization.CultureInfo.InvariantCulture)])
        { RedirectStandardOutput = true, RedirectStandardError = true };
    psi.Environment["OMP_NUM_THREADS"] = "1";
    var p = Process.Start(psi)!;
    var output = p.StandardOutput.ReadToEndAsync();
    var err = p.StandardError.ReadToEnd();
    p.WaitForExit();
    var m = System.Text.RegularExpressions.Regex.Match(err + output.Result, @"achieved tok/s: ([0-9.]+)");
    if (!m.Success) throw new InvalidOperationException($"run.c printed no speed: {err}");
    return double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
}
