// Saves and loads a Llama-3.2-1B-shaped checkpoint (random weights) and prints throughput and peak memory.
// Shapes: https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json (16 layers, hidden 2048, 32 heads,
// 8 KV heads, intermediate 8192, vocab 128256, tied embeddings): 1,235,814,400 parameters.
// Usage: dotnet run -c Release -- [--dir PATH] [--layers N] [--dtype bf16|f32] [--shard-gb G] [--keep]
// The load runs in a child process so its peak RSS (VmHWM) measures loading alone. The cold load first evicts the
// file from the page cache with posix_fadvise(DONTNEED), so it reads from disk.
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

var opts = Options.Parse(args);
TorchRuntime.EnsureLoaded();
if (opts.Mode == "load") return Bench.Load(opts);
Bench.Save(opts);
var code = Bench.RunChild(opts, "load");
if (!opts.Keep) Directory.Delete(opts.Dir, recursive: true);
return code;

internal sealed record Options(string Dir, int Layers, ScalarType DType, double ShardGb, bool Keep, string Mode)
{
    public static Options Parse(string[] args)
    {
        string Get(string name, string fallback)
        {
            var i = Array.IndexOf(args, name);
            return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
        }
        var dtype = Get("--dtype", "bf16") switch
        {
            "bf16" => ScalarType.BFloat16,
            "f32" => ScalarType.Float32,
            var d => throw new ArgumentException($"--dtype {d}: expected bf16 or f32"),
        };
        return new Options(Get("--dir", Path.Combine(Path.GetTempPath(), "sharptune-ckpt-bench")), int.Parse(Get("--layers", "16")),
            dtype, double.Parse(Get("--shard-gb", "5"), System.Globalization.CultureInfo.InvariantCulture),
            args.Contains("--keep"), Get("--mode", "all"));
    }

    public string Folder => Path.Combine(Dir, "epoch_0");
}

internal static class Bench
{
    private const long Vocab = 128_256, Dim = 2048, KvDim = 512, Inter = 8192;

    public static Dictionary<string, long[]> Shapes(int layers)
    {
        var s = new Dictionary<string, long[]> { ["model.embed_tokens.weight"] = [Vocab, Dim], ["model.norm.weight"] = [Dim] };
        for (var i = 0; i < layers; i++)
        {
            var p = $"model.layers.{i}.";
            s[p + "self_attn.q_proj.weight"] = [Dim, Dim];
            s[p + "self_attn.k_proj.weight"] = [KvDim, Dim];
            s[p + "self_attn.v_proj.weight"] = [KvDim, Dim];
            s[p + "self_attn.o_proj.weight"] = [Dim, Dim];
            s[p + "mlp.gate_proj.weight"] = [Inter, Dim];
            s[p + "mlp.up_proj.weight"] = [Inter, Dim];
            s[p + "mlp.down_proj.weight"] = [Dim, Inter];
            s[p + "input_layernorm.weight"] = [Dim];
            s[p + "post_attention_layernorm.weight"] = [Dim];
        }
        return s;
    }

    public static void Save(Options o)
    {
        if (Directory.Exists(o.Dir)) Directory.Delete(o.Dir, recursive: true);
        var shapes = Shapes(o.Layers);
        var sw = Stopwatch.StartNew();
        var sd = new Dictionary<string, Tensor>();
        // randn over 1.2B elements takes minutes on a small CPU; tile one random block instead (I/O does not care).
        using var block = torch.randn(new long[] { 1 << 24 }, generator: new Generator(0)).to(o.DType);
        foreach (var (k, shape) in shapes)
        {
            var tensor = torch.empty(shape, o.DType);
            using var flat = tensor.view(-1);
            for (long start = 0; start < flat.numel(); start += block.numel())
            {
                var n = Math.Min(block.numel(), flat.numel() - start);
                using var dst = flat.narrow(0, start, n);
                using var src = block.narrow(0, 0, n);
                dst.copy_(src);
            }
            sd[k] = tensor;
        }
        var parameters = sd.Values.Sum(t => t.numel());
        var bytes = sd.Values.Sum(SafetensorsWriter.ByteLength);
        Console.WriteLine($"model: {o.Layers} layers, {parameters:N0} parameters, {o.DType}, {bytes / 1e9:F2} GB (random init {sw.Elapsed.TotalSeconds:F1} s)");
        var config = new JsonObject { ["model_type"] = "llama", ["num_hidden_layers"] = o.Layers, ["tie_word_embeddings"] = true };
        var rssBefore = Rss().Current;
        sw.Restart();
        HfCheckpointer.Save(o.Dir, CheckpointTag.Epoch(0), sd, config, null, maxShardBytes: (long)(o.ShardGb * 1e9));
        var t = sw.Elapsed.TotalSeconds;
        var files = Directory.EnumerateFiles(o.Folder, "*.safetensors").ToArray();
        var fileBytes = files.Sum(f => new FileInfo(f).Length);
        Console.WriteLine($"save: {fileBytes / 1e9:F2} GB in {files.Length} file(s), {t:F2} s, {fileBytes / 1e9 / t:F2} GB/s (incl. fsync); " +
                          $"RSS growth during save {(Rss().Peak - rssBefore) / 1e6:F0} MB");
        foreach (var v in sd.Values) v.Dispose();
        var baseline = RawWriteSeconds(Path.Combine(o.Dir, "raw.bin"), fileBytes);
        Console.WriteLine($"baseline: plain sequential write of {fileBytes / 1e9:F2} GB + fsync: {baseline:F2} s, {fileBytes / 1e9 / baseline:F2} GB/s; " +
                          $"save time / baseline = {t / baseline:F2}x");
    }

    private static double RawWriteSeconds(string path, long bytes)
    {
        var buffer = new byte[4 << 20];
        new Random(0).NextBytes(buffer);
        var sw = Stopwatch.StartNew();
        using (var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1))
        {
            for (long done = 0; done < bytes; done += buffer.Length)
                fs.Write(buffer, 0, (int)Math.Min(buffer.Length, bytes - done));
            fs.Flush(flushToDisk: true);
        }
        var s = sw.Elapsed.TotalSeconds;
        File.Delete(path);
        return s;
    }

    public static int Load(Options o)
    {
        var files = Directory.EnumerateFiles(o.Folder, "*.safetensors").ToArray();
        var fileBytes = files.Sum(f => new FileInfo(f).Length);
        foreach (var f in files) Evict(f);
        var baseline = Rss().Current;
        // The "model": parameters allocated once, as a model constructor would.
        var shapes = Shapes(o.Layers);
        var model = shapes.ToDictionary(p => p.Key, p => torch.empty(p.Value, o.DType));
        var sw = Stopwatch.StartNew();
        HfCheckpointer.LoadInto(model, o.Folder);
        var cold = sw.Elapsed.TotalSeconds;
        var peakCold = Rss().Peak;
        sw.Restart();
        HfCheckpointer.LoadInto(model, o.Folder);
        var warm = sw.Elapsed.TotalSeconds;
        Console.WriteLine($"load into model (cold cache): {cold:F2} s, {fileBytes / 1e9 / cold:F2} GB/s");
        Console.WriteLine($"load into model (warm cache): {warm:F2} s, {fileBytes / 1e9 / warm:F2} GB/s");
        Console.WriteLine($"peak RSS {peakCold / 1e9:F2} GB (process baseline {baseline / 1e9:F2} GB); " +
                          $"(peak - baseline) / file size = {(double)(peakCold - baseline) / fileBytes:F3}x; peak / file size = {(double)peakCold / fileBytes:F3}x");
        foreach (var v in model.Values) v.Dispose();
        return 0;
    }

    public static int RunChild(Options o, string mode)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false };
        foreach (var a in new[] { "--dir", o.Dir, "--layers", o.Layers.ToString(), "--dtype", o.DType == ScalarType.BFloat16 ? "bf16" : "f32", "--mode", mode })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        return p.ExitCode;
    }

    private static (long Current, long Peak) Rss()
    {
        long current = 0, peak = 0;
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:")) current = KiB(line);
            if (line.StartsWith("VmHWM:")) peak = KiB(line);
        }
        return (current, peak);
        static long KiB(string line) => long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int posix_fadvise(int fd, long offset, long len, int advice);

    [DllImport("libc", SetLastError = true)]
    private static extern int open([MarshalAs(UnmanagedType.LPStr)] string path, int flags);

    [DllImport("libc")]
    private static extern int close(int fd);

    private static void Evict(string path)
    {
        const int dontNeed = 4;
        var fd = open(path, 0);
        if (fd < 0) return;
        posix_fadvise(fd, 0, 0, dontNeed);
        close(fd);
    }
}
