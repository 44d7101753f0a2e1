// Save -> load round trips of the safetensors writer and reader: raw bytes must come back identical for every dtype.
using SharpTune.Checkpointing;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Checkpointing;

public sealed class SafetensorsRoundTripTests
{
    public SafetensorsRoundTripTests() => TorchRuntime.EnsureLoaded();

    private static byte[] RawBytes(Tensor t)
    {
        using var c = t.contiguous();
        return c.bytes.ToArray();
    }

    private static Dictionary<string, Tensor> Sample()
    {
        var g = new Generator(1234);
        using var f = torch.randn(new long[] { 5, 7 }, generator: g);
        return new Dictionary<string, Tensor>
        {
            ["model.layers.0.self_attn.q_proj.weight"] = torch.randn(new long[] { 6, 4 }, generator: g),
            ["bf16"] = f.to(ScalarType.BFloat16),
            ["f16"] = f.to(ScalarType.Float16),
            ["f64"] = torch.randn(new long[] { 3 }, dtype: ScalarType.Float64, generator: g),
            ["i64"] = torch.tensor(new long[] { long.MinValue, -1, 0, 1, long.MaxValue }),
            ["i32"] = torch.tensor(new[] { int.MinValue, 7, int.MaxValue }),
            ["u8"] = torch.tensor(new byte[] { 0, 128, 255 }),
            ["bool"] = torch.tensor(new[] { true, false, true }),
            ["scalar"] = torch.tensor(3.5f),
            ["empty"] = torch.empty(new long[] { 0, 3 }),
            // Special float bit patterns (NaN payload, -0, inf, subnormal) must survive untouched.
            ["specials"] = torch.tensor(new[] { float.NaN, -0.0f, float.PositiveInfinity, 1e-45f }),
        };
    }

    [Fact]
    public void SaveThenLoad_AllDtypes_BytesIdentical()
    {
        using var dir = new TempDir();
        var tensors = Sample();
        var path = dir.File("x.safetensors");

        SafetensorsWriter.Save(path, tensors);
        using var file = SafetensorsFile.Open(path);

        Assert.Equal(tensors.Keys.Order(StringComparer.Ordinal), file.Keys);
        Assert.Equal("pt", file.Metadata["format"]);
        foreach (var (key, expected) in tensors)
        {
            using var actual = file.Load(key);
            Assert.Equal(expected.dtype, actual.dtype);
            Assert.Equal(expected.shape, actual.shape);
            Assert.Equal(RawBytes(expected), RawBytes(actual));
        }
    }

    [Fact]
    public void LoadInto_ContiguousDestination_FillsItsStorage()
    {
        using var dir = new TempDir();
        using var src = torch.arange(12, dtype: ScalarType.BFloat16).reshape(3, 4);
        SafetensorsWriter.Save(dir.File("a.safetensors"), new Dictionary<string, Tensor> { ["w"] = src });
        using var file = SafetensorsFile.Open(dir.File("a.safetensors"));
        using var dst = torch.zeros(new long[] { 3, 4 }, ScalarType.BFloat16);

        file.LoadInto("w", dst);

        Assert.Equal(RawBytes(src), RawBytes(dst));
    }

    [Fact]
    public void LoadInto_NonContiguousDestination_CopiesValues()
    {
        using var dir = new TempDir();
        using var src = torch.arange(12, dtype: ScalarType.Float32).reshape(3, 4);
        SafetensorsWriter.Save(dir.File("a.safetensors"), new Dictionary<string, Tensor> { ["w"] = src });
        using var file = SafetensorsFile.Open(dir.File("a.safetensors"));
        using var backing = torch.zeros(4, 3);
        using var dst = backing.t(); // [3, 4] view, not contiguous

        file.LoadInto("w", dst);

        using var packed = dst.contiguous();
        Assert.Equal(Enumerable.Range(0, 12).Select(i => (float)i), packed.data<float>().ToArray());
    }

    [Fact]
    public void Save_NonContiguousSource_WritesLogicalOrder()
    {
        using var dir = new TempDir();
        using var m = torch.arange(6, dtype: ScalarType.Float32).reshape(2, 3);
        using var t = m.t(); // [3, 2]: 0 3 1 4 2 5
        SafetensorsWriter.Save(dir.File("t.safetensors"), new Dictionary<string, Tensor> { ["t"] = t });
        using var file = SafetensorsFile.Open(dir.File("t.safetensors"));
        using var back = file.Load("t");

        Assert.Equal(new float[] { 0, 3, 1, 4, 2, 5 }, back.data<float>().ToArray());
    }

    [Fact]
    public void Save_TensorsSharingMemory_Throws()
    {
        using var dir = new TempDir();
        using var w = torch.ones(4, 4);
        var e = Assert.Throws<ArgumentException>(() => SafetensorsWriter.Save(dir.File("t.safetensors"),
            new Dictionary<string, Tensor> { ["lm_head.weight"] = w, ["model.embed_tokens.weight"] = w }));
        Assert.Contains("share memory", e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
    }

    [Fact]
    public void SaveSharded_TinyShardLimit_SeveralShardsAndIndexRoundTrip()
    {
        using var dir = new TempDir();
        var g = new Generator(7);
        var tensors = Enumerable.Range(0, 5).ToDictionary(
            i => $"model.layers.{i}.mlp.up_proj.weight",
            _ => torch.randn(new long[] { 8, 8 }, dtype: ScalarType.BFloat16, generator: g)); // 128 bytes each

        var files = SafetensorsWriter.SaveSharded(dir.Path, tensors, maxShardBytes: 300); // two tensors per shard

        Assert.Equal(new[] { "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors" }, files);
        var index = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File(SafetensorsWriter.IndexFileName)))!;
        Assert.Equal(5 * 128, index["metadata"]!["total_size"]!.GetValue<long>());
        Assert.Equal("model-00003-of-00003.safetensors", index["weight_map"]!["model.layers.4.mlp.up_proj.weight"]!.GetValue<string>());
        using var ckpt = SafetensorsCheckpoint.Open(dir.Path);
        Assert.Equal(3, ckpt.Files.Count);
        foreach (var (k, v) in tensors)
        {
            using var back = ckpt.Load(k);
            Assert.Equal(RawBytes(v), RawBytes(back));
        }
    }

    [Fact]
    public void SaveSharded_FitsInOneShard_SingleFileAndStaleShardsRemoved()
    {
        using var dir = new TempDir();
        using var a = torch.ones(10);
        using var b = torch.zeros(10);
        var tensors = new Dictionary<string, Tensor> { ["a"] = a, ["b"] = b };
        SafetensorsWriter.SaveSharded(dir.Path, tensors, maxShardBytes: 40);
        Assert.True(File.Exists(dir.File(SafetensorsWriter.IndexFileName)));

        var files = SafetensorsWriter.SaveSharded(dir.Path, tensors);

        Assert.Equal(new[] { "model.safetensors" }, files);
        Assert.Equal(new[] { "model.safetensors" }, Directory.EnumerateFiles(dir.Path).Select(Path.GetFileName));
        using var ckpt = SafetensorsCheckpoint.Open(dir.Path);
        Assert.Equal(new[] { "a", "b" }, ckpt.Keys);
    }

    [Fact]
    public void SaveSharded_TensorLargerThanLimit_GetsItsOwnShard()
    {
        using var dir = new TempDir();
        using var big = torch.ones(100);
        using var small = torch.ones(2);
        var files = SafetensorsWriter.SaveSharded(dir.Path, new Dictionary<string, Tensor> { ["a_small"] = small, ["b_big"] = big }, 64);
        Assert.Equal(2, files.Count);
        using var ckpt = SafetensorsCheckpoint.Open(dir.Path);
        Assert.Equal(400, ckpt.GetInfo("b_big").ByteLength);
    }
}
