// A teacher cache written in parts (one writer per rank of a distributed generation, each its own contiguous run of
// shards, in any order) and assembled afterwards is byte for byte the cache one sequential writer produces; the
// assembly refuses missing shards and shards of another cache.
using SharpTune.Distillation;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Distillation;

public sealed class TeacherCachePartTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-tcpart-").FullName;

    public TeacherCachePartTests() => TorchRuntime.EnsureLoaded();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static TeacherCacheManifest Template(string dataHash = "d0") => new()
    {
        K = 4, Vocab = 10, LogProbStep = 1.0 / 64, MaxLogRatio = 40, MaxBytesPerToken = 4096, Temperature = 1,
        TeacherId = "test-teacher", DataHash = dataHash, TokenizerHash = "t0", TeacherHash = "w0", Samples = 7, SamplesPerShard = 2,
    };

    private static Tensor[] Logits()
    {
        var g = new Generator(3);
        return [.. Enumerable.Range(0, 7).Select(i => torch.randn(4 + i % 3, 10, generator: g))];
    }

    private void WritePart(string folder, TeacherCacheManifest template, Tensor[] logits, int firstShard, int shardCount)
    {
        var part = TeacherCacheWriter.OpenPart(folder, template, firstShard, shardCount);
        for (var i = part.NextSample; i < part.EndSample; i++) part.AppendLogits(i, logits[i]);
    }

    [Fact]
    public void Assemble_PartsWrittenInAnyOrder_EqualsSequentialCacheByteForByte()
    {
        // Given a sequential cache of 7 samples in shards of 2 (4 shards, the last holding 1 sample)
        var logits = Logits();
        var sequential = Path.Combine(_dir, "seq");
        var writer = TeacherCacheWriter.Open(sequential, Template());
        for (var i = 0; i < 7; i++) writer.AppendLogits(i, logits[i]);
        writer.Complete();

        // When three "ranks" write shards 3, 1..2 and 0 (in that order) and the folder is assembled
        var parts = Path.Combine(_dir, "parts");
        WritePart(parts, Template(), logits, 3, 1);
        WritePart(parts, Template(), logits, 1, 2);
        WritePart(parts, Template(), logits, 0, 1);
        Assert.False(File.Exists(Path.Combine(parts, TeacherCacheManifest.FileName)));
        var manifest = TeacherCacheWriter.Assemble(parts, Template());

        // Then every file, the manifest included, is the sequential writer's, and the cache reads
        Assert.True(manifest.Complete);
        var names = Directory.GetFiles(sequential).Select(Path.GetFileName).Order().ToArray();
        Assert.Equal(5, names.Length);
        Assert.Equal(names, Directory.GetFiles(parts).Select(Path.GetFileName).Order().ToArray());
        foreach (var name in names)
            Assert.True(File.ReadAllBytes(Path.Combine(sequential, name!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(parts, name!))), name);
    }

    [Fact]
    public void Assemble_ShardMissingOrFromAnotherCache_Throws()
    {
        var logits = Logits();
        var folder = Path.Combine(_dir, "bad");
        WritePart(folder, Template(), logits, 0, 3);
        var missing = Assert.Throws<InvalidDataException>(() => TeacherCacheWriter.Assemble(folder, Template()));
        Assert.Contains("shard-00003.tkc missing", missing.Message);

        WritePart(folder, Template(dataHash: "other"), logits, 3, 1);
        var foreign = Assert.Throws<InvalidDataException>(() => TeacherCacheWriter.Assemble(folder, Template()));
        Assert.Contains("is not shard 3", foreign.Message);
    }

    [Fact]
    public void OpenPart_ShardsBeyondTheCache_Throws()
    {
        var e = Assert.Throws<ArgumentException>(() => TeacherCacheWriter.OpenPart(Path.Combine(_dir, "x"), Template(), 3, 2));
        Assert.Contains("outside the cache's 4 shards", e.Message);
    }
}
