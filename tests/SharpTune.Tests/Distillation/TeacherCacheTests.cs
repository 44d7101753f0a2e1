// The teacher cache folder end to end: cached KD equals online KD (k = vocab) within the closed-form effect of the
// stated quantisation bound on values and gradients; file-level bytes/token; clear errors for mismatched or damaged
// caches; an interrupted generation resumes and produces the same shards as an uninterrupted one.
using SharpTune.Distillation;
using SharpTune.Losses;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Distillation;

public sealed class TeacherCacheTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-tcache-").FullName;

    public TeacherCacheTests() => TorchRuntime.EnsureLoaded();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static TeacherCacheManifest Template(int samples, int vocab, int k, int perShard = 2, string dataHash = "d0", double temperature = 1) => new()
    {
        K = k, Vocab = vocab, LogProbStep = 1.0 / 64, MaxLogRatio = 40, MaxBytesPerToken = 4096, Temperature = temperature,
        TeacherId = "test-teacher", DataHash = dataHash, TokenizerHash = "t0", TeacherHash = "w0", Samples = samples, SamplesPerShard = perShard,
    };

    // Teacher logits per sample, [len_i, v], fixed seed.
    private static Tensor[] TeacherLogits(int samples, int vocab, int seed)
    {
        var g = new Generator((ulong)seed);
        return [.. Enumerable.Range(0, samples).Select(i => torch.randn(5 + i % 3, vocab, generator: g) * 2)];
    }

    private static string Write(string folder, TeacherCacheManifest template, Tensor[] logits, int stopAfter = int.MaxValue)
    {
        var writer = TeacherCacheWriter.Open(folder, template);
        for (var i = writer.NextSample; i < logits.Length && i < stopAfter; i++) writer.AppendLogits(i, logits[i]);
        if (stopAfter >= logits.Length) writer.Complete();
        return folder;
    }

    [Fact]
    public void CachedKd_KEqualsVocab_MatchesOnlineKdWithinQuantisationBound()
    {
        // Given a tiny vocabulary, k = vocab, and a teacher at temperature 2
        const int vocab = 12, seqLen = 7;
        const double temperature = 2;
        var logits = TeacherLogits(4, vocab, 3);
        var folder = Write(Path.Combine(_dir, "c"), Template(4, vocab, vocab, temperature: temperature), logits);
        using var cache = TeacherCache.Open(folder, expectedDataHash: "d0", expectedVocab: vocab);
        var order = new[] { 2, 0, 3 }; // a shuffled batch: entries are keyed by sample index
        var teacherDense = torch.full(order.Length, seqLen, vocab, -30f);
        var labels = torch.full(order.Length, seqLen, -100L, dtype: ScalarType.Int64);
        for (var b = 0; b < order.Length; b++)
        {
            var len = (int)logits[order[b]].shape[0];
            teacherDense[b, ..len] = logits[order[b]];
            labels[b, ..len] = torch.arange(len, dtype: ScalarType.Int64) % vocab;
        }
        var sparse = cache.ReadBatch(order, seqLen);
        Assert.Equal(new long[] { 3, seqLen, vocab }, sparse.Indices.shape);

        foreach (var mode in new[] { MissingMass.Zero, MissingMass.Tail })
        {
            var loss = new KdLoss(new DivergenceOptions { Temperature = temperature }, missingMass: mode);
            var s1 = (torch.randn(order.Length, seqLen, vocab, generator: new Generator(5)) * 2).requires_grad_();
            var s2 = s1.detach().clone().requires_grad_();
            // When online and cached KD run on the same student logits
            var online = loss.Forward(s1, teacherDense, labels);
            var cached = loss.Forward(s2, sparse, labels);
            online.backward();
            cached.backward();

            // Then the values differ by at most the bound's effect: |dKL| <= T^2 eps sum_i p_i (1 + |log p_i - log q_i|) per token
            var eps = new TopKFormat(Vocab: vocab, K: vocab).RelativeErrorBound;
            var p = (teacherDense / temperature).log_softmax(-1).exp();
            var logq = (s1.detach() / temperature).log_softmax(-1);
            var valid = labels.ne(-100);
            var perToken = (p * (1 + (p.log() - logq).abs())).sum(-1) * eps * temperature * temperature;
            var valueBound = perToken.masked_fill(valid.logical_not(), 0).sum().to(ScalarType.Float64).item<double>() / valid.sum().item<long>();
            var diff = Math.Abs(online.item<float>() - cached.item<float>());
            Assert.True(diff <= valueBound + 1e-6, $"{mode}: |online - cached| = {diff:G4} > bound {valueBound:G4}");
            Assert.True(diff > 0, "cached KD equals online KD exactly: is the cache quantising at all?");
            // ... and each gradient element by at most T eps (p_i + q_i) / N: d/ds of T^2 sum p'(log p' - log q) is
            // T (q sum(p') - p') / N, with |p' - p| <= eps p and |sum(p') - 1| <= eps
            var gradBound = ((p + logq.exp()) * eps * temperature / valid.sum().item<long>()).masked_fill(valid.logical_not().unsqueeze(-1), 0) + 1e-7;
            var gradDiff = (s1.grad! - s2.grad!).abs();
            Assert.True(gradDiff.le(gradBound).all().item<bool>(), $"{mode}: gradient difference {gradDiff.max().item<float>():G4} exceeds bound");
        }
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(2.0)]
    public void WriteAndOpen_K128Vocab128256Default_KeepsEveryEntryWithin300BytesPerToken(double scale)
    {
        // Given k = 128 over a 128,256 vocabulary with the default format (no budget, no ratio), 4 samples x 32 tokens
        var template = Template(4, 128_256, 128, perShard: 2) with
        {
            LogProbStep = TopKFormat.DefaultLogProbStep, MaxBytesPerToken = null, MaxLogRatio = null,
        };
        var writer = TeacherCacheWriter.Open(Path.Combine(_dir, "big"), template);
        var g = new Generator(9);
        for (var i = 0; i < 4; i++) writer.AppendLogits(i, torch.randn(32, 128_256, generator: g) * scale);
        var manifest = writer.Complete();
        // Then every position keeps all 128 entries and the files (headers and sample index included) hold <= 300 bytes/token
        var bytesPerToken = (double)manifest.Bytes / manifest.Tokens;
        Assert.Equal(128, manifest.Tokens);
        Assert.Equal(128, manifest.MinEntries);
        Assert.Equal(128.0, manifest.MeanEntries);
        Assert.Equal(0, manifest.FoldedEntries);
        Assert.True(bytesPerToken <= 300, $"{bytesPerToken:F1} bytes/token");
    }

    [Fact]
    public void WriteAndOpen_K128Vocab128256Budget200_WithinBudgetAndReportsKeptEntries()
    {
        // Given the same rows with max_bytes_per_token 200
        var template = Template(4, 128_256, 128, perShard: 2) with { LogProbStep = TopKFormat.DefaultLogProbStep, MaxBytesPerToken = 200, MaxLogRatio = null };
        var folder = Path.Combine(_dir, "budget");
        var writer = TeacherCacheWriter.Open(folder, template);
        var g = new Generator(9);
        for (var i = 0; i < 4; i++) writer.AppendLogits(i, torch.randn(32, 128_256, generator: g) * 2);
        var manifest = writer.Complete();
        // Then the files hold at most 200 bytes/token
        Assert.True((double)manifest.Bytes / manifest.Tokens <= 200, $"{(double)manifest.Bytes / manifest.Tokens:F1} bytes/token");
        // ... and the manifest's kept-entry statistics are those of the decoded positions
        using var cache = TeacherCache.Open(folder);
        var kept = new List<int>();
        for (var i = 0; i < 4; i++)
        {
            var lps = new float[32 * 128];
            cache.ReadSample(i, new long[lps.Length], lps, new float[32]);
            for (var t = 0; t < 32; t++) kept.Add(lps.AsSpan(t * 128, 128).ToArray().Count(float.IsFinite));
        }
        Assert.True(kept.Max() < 128, "the budget should fold entries at every position");
        Assert.Equal(kept.Average(), manifest.MeanEntries, 10);
        Assert.Equal(kept.Min(), manifest.MinEntries);
        Assert.Equal(128L * 128 - kept.Sum(), manifest.FoldedEntries);
    }

    [Fact]
    public void ReadSample_CorruptPayloadByte_ThrowsNamingShardFile()
    {
        // Given a shard whose payload has one flipped bit (its length and header are intact)
        var folder = Write(Path.Combine(_dir, "cp"), Template(3, 10, 4), TeacherLogits(3, 10, 1));
        var shard = Path.Combine(folder, "shard-00000.tkc");
        var bytes = File.ReadAllBytes(shard);
        bytes[^3] ^= 0x08;
        File.WriteAllBytes(shard, bytes);
        // When the damaged sample is read, Then the error names the file and the sample
        using var cache = TeacherCache.Open(folder);
        var e = Assert.Throws<InvalidDataException>(() => cache.ReadSample(1, new long[7 * 4], new float[7 * 4], new float[7]));
        Assert.Contains("shard-00000.tkc", e.Message);
        Assert.Contains("sample 1 is corrupt", e.Message);
    }

    [Fact]
    public void Open_Version1Manifest_RefusedNamingTheVersion()
    {
        // Given a cache folder written by the version-1 format (ids in rank order)
        var folder = Write(Path.Combine(_dir, "v1"), Template(3, 10, 4), TeacherLogits(3, 10, 1));
        var path = Path.Combine(folder, TeacherCacheManifest.FileName);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"version\": 2", "\"version\": 1"));
        // When it is opened, Then it is refused with the file, the version found and the version read
        var e = Assert.Throws<InvalidDataException>(() => TeacherCache.Open(folder));
        Assert.Contains(path, e.Message);
        Assert.Contains("format version 1", e.Message);
        Assert.Contains("reads version 2", e.Message);
    }

    [Fact]
    public void Open_WrongDataHash_ThrowsNamingBothHashes()
    {
        var folder = Write(Path.Combine(_dir, "h"), Template(3, 10, 4, dataHash: "aaaa"), TeacherLogits(3, 10, 1));
        var e = Assert.Throws<InvalidDataException>(() => TeacherCache.Open(folder, expectedDataHash: "bbbb"));
        Assert.Contains("aaaa", e.Message);
        Assert.Contains("bbbb", e.Message);
    }

    [Fact]
    public void Open_DifferentVocab_ThrowsNamingBothSizes()
    {
        var folder = Write(Path.Combine(_dir, "v"), Template(3, 10, 4), TeacherLogits(3, 10, 1));
        var e = Assert.Throws<InvalidDataException>(() => TeacherCache.Open(folder, expectedVocab: 11));
        Assert.Contains("vocab is 10", e.Message);
        Assert.Contains("11", e.Message);
    }

    [Fact]
    public void Open_TruncatedShard_ThrowsNamingFileAndLengths()
    {
        var folder = Write(Path.Combine(_dir, "t"), Template(3, 10, 4), TeacherLogits(3, 10, 1));
        var shard = Path.Combine(folder, "shard-00001.tkc");
        var length = new FileInfo(shard).Length;
        using (var fs = new FileStream(shard, FileMode.Open)) fs.SetLength(length - 5);
        var e = Assert.Throws<InvalidDataException>(() => TeacherCache.Open(folder));
        Assert.Contains("shard-00001.tkc", e.Message);
        Assert.Contains($"manifest says {length}", e.Message);
    }

    [Fact]
    public void Open_ManifestTruncatedAnywhere_ThrowsNamingManifest()
    {
        // Every prefix of a real manifest: an interrupted copy, a full disk. Each must be one error naming the file.
        var folder = Write(Path.Combine(_dir, "m"), Template(3, 10, 4), TeacherLogits(3, 10, 1));
        var path = Path.Combine(folder, TeacherCacheManifest.FileName);
        var whole = File.ReadAllBytes(path);
        for (var length = 0; length < whole.Length; length += 3)
        {
            File.WriteAllBytes(path, whole[..length]);
            var e = Assert.Throws<InvalidDataException>(() => TeacherCache.Open(folder).Dispose());
            Assert.Contains(path, e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
    }

    [Theory]
    [InlineData("shards", "null", "shards")]
    [InlineData("teacher_id", "null", "teacher_id")]
    [InlineData("data_hash", "null", "data_hash")]
    [InlineData("k", "\"4\"", "k")]
    [InlineData("shards.0.file", "null", "file")]
    [InlineData("shards.0.file", "\"../shard-00000.tkc\"", "not a file name")]
    [InlineData("shards.0.sha256", "null", "sha256")]
    public void Open_ManifestFieldNullOrWrongType_ThrowsNamingManifest(string key, string json, string expected)
    {
        var folder = Write(Path.Combine(_dir, "n"), Template(3, 10, 4), TeacherLogits(3, 10, 1));
        var path = Path.Combine(folder, TeacherCacheManifest.FileName);
        var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!;
        var parts = key.Split('.');
        var parent = parts[..^1].Aggregate(root, (node, p) => int.TryParse(p, out var i) ? node[i]! : node[p]!);
        parent[parts[^1]] = System.Text.Json.Nodes.JsonNode.Parse(json);
        File.WriteAllText(path, root.ToJsonString());

        var e = Assert.Throws<InvalidDataException>(() => TeacherCache.Open(folder).Dispose());
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Verify_FlippedByte_ThrowsCorruptShard()
    {
        var folder = Write(Path.Combine(_dir, "f"), Template(3, 10, 4), TeacherLogits(3, 10, 1));
        var shard = Path.Combine(folder, "shard-00000.tkc");
        var bytes = File.ReadAllBytes(shard);
        bytes[^2] ^= 0x40;
        File.WriteAllBytes(shard, bytes);
        using var cache = TeacherCache.Open(folder);
        var e = Assert.Throws<InvalidDataException>(cache.Verify);
        Assert.Contains("shard-00000.tkc", e.Message);
    }

    [Fact]
    public void Open_IncompleteCache_ThrowsUnlessAllowed()
    {
        var folder = Write(Path.Combine(_dir, "i"), Template(5, 10, 4), TeacherLogits(5, 10, 1), stopAfter: 3);
        Assert.Contains("incomplete (2 of 5", Assert.Throws<InvalidDataException>(() => TeacherCache.Open(folder)).Message);
        using var partial = TeacherCache.Open(folder, allowIncomplete: true);
        Assert.Equal(2, partial.Samples);
    }

    [Fact]
    public void Writer_InterruptedGeneration_ResumesAndMatchesUninterrupted()
    {
        // Given a generation killed after sample 2 of 5 (shards of 2: one complete shard, sample 2 buffered and lost)
        var logits = TeacherLogits(5, 10, 4);
        var resumed = Write(Path.Combine(_dir, "r"), Template(5, 10, 4), logits, stopAfter: 3);
        // When it is rerun
        var writer = TeacherCacheWriter.Open(resumed, Template(5, 10, 4));
        Assert.Equal(2, writer.NextSample);
        Assert.Equal(2, writer.ResumedSamples);
        for (var i = writer.NextSample; i < 5; i++) writer.AppendLogits(i, logits[i]);
        writer.Complete();
        // Then its shards are byte-identical to an uninterrupted run's
        var whole = Write(Path.Combine(_dir, "w"), Template(5, 10, 4), logits);
        var a = TeacherCacheManifest.Read(resumed);
        var b = TeacherCacheManifest.Read(whole);
        Assert.Equal(b.Shards.Select(s => s.Sha256), a.Shards.Select(s => s.Sha256));
        Assert.True(a.Complete);
    }

    [Fact]
    public void Writer_FolderHoldsCacheOfOtherData_RefusesToResume()
    {
        var folder = Write(Path.Combine(_dir, "o"), Template(5, 10, 4, dataHash: "x1"), TeacherLogits(5, 10, 1), stopAfter: 3);
        var e = Assert.Throws<InvalidOperationException>(() => TeacherCacheWriter.Open(folder, Template(5, 10, 4, dataHash: "x2")));
        Assert.Contains("data_hash x1 vs x2", e.Message);
    }

    [Fact]
    public void ReadBatch_ShuffledDataLoaderOrder_LinesUpWithEachSample()
    {
        // Given samples of different lengths and a cache of them, and a shuffled loader over the same samples
        var logits = TeacherLogits(6, 10, 8);
        var folder = Write(Path.Combine(_dir, "s"), Template(6, 10, 10, perShard: 4), logits);
        var samples = logits.Select(l => new SharpTune.Data.Sample(new int[l.shape[0]], new int[l.shape[0]])).ToArray();
        var loader = new SharpTune.Data.DataLoader(new ListDataset(samples), batchSize: 3, seed: 5);
        using var cache = TeacherCache.Open(folder);
        for (var batch = 0; batch < loader.BatchesPerEpoch; batch++)
        {
            // When the cache is read for the loader's batch indices
            var indices = loader.Indices(1, batch);
            var sparse = cache.ReadBatch(indices, 9);
            // Then row b holds sample indices[b]'s teacher (top-1 equals its argmax), padding rows are unused
            for (var b = 0; b < indices.Count; b++)
            {
                var len = logits[indices[b]].shape[0];
                Assert.Equal(logits[indices[b]].argmax(-1).data<long>().ToArray(), sparse.Indices[b, ..(int)len, 0].data<long>().ToArray());
                Assert.True(sparse.LogProbs[b, (int)len..].isinf().all().item<bool>());
            }
        }
        Assert.NotEqual([0, 1, 2], loader.Indices(1, 0));
    }

    private sealed class ListDataset(SharpTune.Data.Sample[] samples) : SharpTune.Data.ISampleDataset
    {
        public int Count => samples.Length;

        public SharpTune.Data.Sample this[int index] => samples[index];
    }
}
