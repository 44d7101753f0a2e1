// Peak resident memory of forward+backward through a deep stack of residual MLP blocks, plain vs activation
// checkpointed (each block through SharpTune.Modules.ActivationCheckpointing.Run, as TransformerDecoder does with
// CheckpointActivations). Run each mode in its own process: peak RSS is per process.
using System.Diagnostics;
using SharpTune.Modules;
using SharpTune.Native;
using SharpTune.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

var mode = args.Length > 0 ? args[0] : "ckpt";
var layers = args.Length > 1 ? int.Parse(args[1]) : 8;
TorchRuntime.SetThreads(1);
// RSS must follow live tensor memory here, so every tensor above 64 KiB gets its own mmap (returned on free) and the
// heap is trimmed before each step. The recipes' defaults keep freed activations resident for speed, which would hide
// the difference this bench measures.
NativeHeap.Configure(new NativeHeapOptions { MmapThresholdBytes = 64 * 1024, TrimThresholdBytes = 64 * 1024, TrimEveryNSteps = 1 });
manual_seed(0);
const int dim = 256, hidden = 1024, batch = 4, seq = 512;
var blocks = Enumerable.Range(0, layers).Select(i =>
{
    nn.Module<Tensor, Tensor> b = new Block(dim, hidden);
    return ($"{i}", mode == "ckpt" ? new Checkpointed(b) : b);
}).ToArray();
var model = nn.Sequential(blocks);
model.train();
using var x = randn(batch, seq, dim);
var times = new List<double>();
long peak = 0;
for (var step = 0; step < 4; step++)
{
    NativeHeap.AfterStep();
    ProcessMemory.TryResetPeak();
    var before = ProcessMemory.Read().RssBytes;
    var sw = Stopwatch.StartNew();
    using (var scope = NewDisposeScope())
    {
        model.zero_grad();
        model.call(x).square().mean().backward();
    }
    times.Add(sw.Elapsed.TotalMilliseconds);
    if (step > 0) peak = Math.Max(peak, ProcessMemory.Read().PeakRssBytes - before);
}
times.Sort();
Console.WriteLine($"{mode}: {layers} blocks (d {dim}, ffn {hidden}, tokens {batch * seq}): peak RSS above baseline {peak / 1048576.0:F0} MiB, " +
                  $"median step {times[times.Count / 2]:F0} ms");

sealed class Block : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm norm;
    private readonly Linear up;
    private readonly Linear down;

    public Block(int dim, int hidden) : base(nameof(Block))
    {
        norm = nn.LayerNorm(dim);
        up = nn.Linear(dim, hidden);
        down = nn.Linear(hidden, dim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => x + down.call(nn.functional.gelu(up.call(norm.call(x))));
}

/// <summary>A block run through ActivationCheckpointing.Run.</summary>
internal sealed class Checkpointed : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> inner;

    public Checkpointed(nn.Module<Tensor, Tensor> inner) : base(nameof(Checkpointed))
    {
        this.inner = inner;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => ActivationCheckpointing.Run(inner, x);
}
