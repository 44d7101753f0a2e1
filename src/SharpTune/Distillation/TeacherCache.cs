// Reads a teacher cache folder written by TeacherCacheWriter: checks the manifest against what the caller expects
// (data hash, vocabulary), checks every shard's length and header, keeps each shard's sample index in memory and reads
// samples by dataset index with positional reads, so a shuffled DataLoader order costs one read per sample. Each
// sample's bytes are checked against the checksum in the index before they are decoded.
using System.Buffers.Binary;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using SharpTune.Losses;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Distillation;

/// <summary>An open teacher cache.</summary>
public sealed class TeacherCache : IDisposable
{
    private readonly string _folder;
    private readonly ShardReader[] _shards;

    private TeacherCache(string folder, TeacherCacheManifest manifest, ShardReader[] shards)
    {
        _folder = folder;
        Manifest = manifest;
        _shards = shards;
    }

    /// <summary>The manifest.</summary>
    public TeacherCacheManifest Manifest { get; }

    /// <summary>Ids per position in what <see cref="ReadSample"/> and <see cref="ReadBatch"/> return (the cache's k).</summary>
    public int K => Manifest.K;

    /// <summary>
    /// Opens <paramref name="folder"/>. With <paramref name="expectedDataHash"/> (the KD run's
    /// <see cref="ContentHash.OfDataset"/>) or <paramref name="expectedVocab"/> (the student's vocabulary) given, a
    /// cache made for other data or another vocabulary is refused; with <paramref name="expectedTokenizerHash"/> (the KD
    /// run's <see cref="ContentHash.OfTokenizer"/>), a cache made with another tokenizer is refused first, by name.
    /// </summary>
    /// <exception cref="InvalidDataException">Missing/corrupt manifest or shard, incomplete cache, or a mismatch.</exception>
    public static TeacherCache Open(string folder, string? expectedDataHash = null, int? expectedVocab = null, bool allowIncomplete = false,
        string? expectedTokenizerHash = null)
    {
        var manifest = TeacherCacheManifest.Read(folder);
        if (expectedTokenizerHash is not null && manifest.TokenizerHash != expectedTokenizerHash)
            throw new InvalidDataException(
                $"teacher cache {folder}: made with another tokenizer (tokenizer hash {manifest.TokenizerHash[..Math.Min(12, manifest.TokenizerHash.Length)]}) " +
                $"than this run's ({expectedTokenizerHash[..Math.Min(12, expectedTokenizerHash.Length)]}); distillation compares the two " +
                "distributions id by id, and distilling between different tokenizers (cross-tokenizer distillation) is not supported yet " +
                "by the recipes (docs/cross_tokenizer.md)");
        if (expectedDataHash is not null && manifest.DataHash != expectedDataHash)
            throw new InvalidDataException(
                $"teacher cache {folder}: made for data hash {manifest.DataHash} but this run's dataset hashes to {expectedDataHash} " +
                "(different data, tokenizer, packing, truncation or sample order); regenerate it with the teacher_logits recipe");
        if (expectedVocab is { } v && manifest.Vocab != v)
            throw new InvalidDataException($"teacher cache {folder}: vocab is {manifest.Vocab} but the student's vocabulary is {v}");
        if (!manifest.Complete && !allowIncomplete)
            throw new InvalidDataException(
                $"teacher cache {folder}: incomplete ({manifest.Shards.Sum(s => s.Samples)} of {manifest.Samples} samples); rerun teacher_logits to finish it");
        var shards = new List<ShardReader>();
        try
        {
            var expectedFirst = 0;
            foreach (var shard in manifest.Shards)
            {
                if (shard.FirstSample != expectedFirst)
                    throw new InvalidDataException($"teacher cache {folder}: shard {shard.File} starts at sample {shard.FirstSample}, expected {expectedFirst}");
                shards.Add(ShardReader.Open(Path.Combine(folder, shard.File), shard, manifest));
                expectedFirst += shard.Samples;
            }
        }
        catch
        {
            foreach (var s in shards) s.Dispose();
            throw;
        }
        return new TeacherCache(folder, manifest, [.. shards]);
    }

    /// <summary>Samples readable (all of them when complete).</summary>
    public int Samples => _shards.Sum(s => s.Info.Samples);

    /// <summary>Token positions stored for sample <paramref name="index"/>.</summary>
    public int SampleTokens(int index)
    {
        var (shard, local) = Locate(index);
        return shard.Tokens(local);
    }

    /// <summary>
    /// Decodes sample <paramref name="index"/> into <paramref name="ids"/> and <paramref name="logProbs"/>
    /// ([tokens, K] row-major; unused slots id 0, log-prob -inf) and <paramref name="tailMass"/> [tokens].
    /// </summary>
    public void ReadSample(int index, Span<long> ids, Span<float> logProbs, Span<float> tailMass)
    {
        var (shard, local) = Locate(index);
        var tokens = shard.Tokens(local);
        if (ids.Length < tokens * K || logProbs.Length < tokens * K || tailMass.Length < tokens)
            throw new ArgumentException($"teacher cache: buffers too small for {tokens} x {K}");
        var bytes = shard.ReadPayload(local);
        var reader = new BitReader(bytes);
        var format = Manifest.Encoding;
        try
        {
            for (var t = 0; t < tokens; t++)
                tailMass[t] = TopKCodec.Decode(ref reader, format, ids.Slice(t * K, K), logProbs.Slice(t * K, K)).Tail;
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"teacher cache {shard.Path}: sample {index} is corrupt: {e.Message}", e);
        }
        if ((reader.Position + 7) / 8 != bytes.Length)
            throw new InvalidDataException($"teacher cache {shard.Path}: sample {index} decodes to {(reader.Position + 7) / 8} bytes, the index says {bytes.Length}");
    }

    /// <summary>
    /// The sparse teacher for a batch of dataset samples, padded to <paramref name="seqLen"/> positions:
    /// Indices [b, s, K] int64 and LogProbs [b, s, K] float32 (-inf on unused slots and padding positions).
    /// </summary>
    /// <exception cref="InvalidDataException">A sample is longer than <paramref name="seqLen"/>.</exception>
    public SparseTeacher ReadBatch(IReadOnlyList<int> sampleIndices, int seqLen)
    {
        var b = sampleIndices.Count;
        var ids = new long[(long)b * seqLen * K];
        var lps = new float[ids.Length];
        Array.Fill(lps, float.NegativeInfinity);
        var tail = new float[seqLen];
        for (var i = 0; i < b; i++)
        {
            var tokens = SampleTokens(sampleIndices[i]);
            if (tokens > seqLen)
                throw new InvalidDataException($"teacher cache {_folder}: sample {sampleIndices[i]} has {tokens} positions, the batch only {seqLen}");
            ReadSample(sampleIndices[i], ids.AsSpan(i * seqLen * K, tokens * K), lps.AsSpan(i * seqLen * K, tokens * K), tail);
        }
        return new SparseTeacher(torch.tensor(ids).reshape(b, seqLen, K), torch.tensor(lps).reshape(b, seqLen, K));
    }

    /// <summary>Re-hashes every shard file against the manifest's SHA-256.</summary>
    /// <exception cref="InvalidDataException">A shard's content differs.</exception>
    public void Verify()
    {
        foreach (var shard in _shards)
        {
            using var stream = File.OpenRead(shard.Path);
            var actual = Convert.ToHexStringLower(SHA256.HashData(stream));
            if (actual != shard.Info.Sha256)
                throw new InvalidDataException($"teacher cache {shard.Path}: SHA-256 {actual}, manifest says {shard.Info.Sha256} (corrupt shard)");
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var s in _shards) s.Dispose();
    }

    private (ShardReader Shard, int Local) Locate(int index)
    {
        foreach (var shard in _shards)
            if (index >= shard.Info.FirstSample && index < shard.Info.FirstSample + shard.Info.Samples)
                return (shard, index - shard.Info.FirstSample);
        throw new ArgumentOutOfRangeException(nameof(index), $"teacher cache {_folder}: no sample {index} (it holds {Samples} of {Manifest.Samples})");
    }

    private sealed class ShardReader : IDisposable
    {
        private readonly SafeFileHandle _handle;
        private readonly long[] _offsets;
        private readonly int[] _tokens;
        private readonly ulong[] _checksums;
        private readonly long _payloadStart;

        private ShardReader(string path, TeacherCacheShard info, SafeFileHandle handle, long[] offsets, int[] tokens, ulong[] checksums, long payloadStart)
        {
            Path = path;
            Info = info;
            _handle = handle;
            _offsets = offsets;
            _tokens = tokens;
            _checksums = checksums;
            _payloadStart = payloadStart;
        }

        public string Path { get; }

        public TeacherCacheShard Info { get; }

        public static ShardReader Open(string path, TeacherCacheShard info, TeacherCacheManifest manifest)
        {
            if (!File.Exists(path)) throw new InvalidDataException($"teacher cache {path}: shard listed in the manifest is missing");
            var handle = File.OpenHandle(path);
            try
            {
                var length = RandomAccess.GetLength(handle);
                if (length != info.Bytes)
                    throw new InvalidDataException($"teacher cache {path}: {length} bytes, manifest says {info.Bytes} (truncated or overwritten shard)");
                if (length < TeacherCacheWriter.HeaderBytes)
                    throw new InvalidDataException($"teacher cache {path}: {length} bytes is shorter than the {TeacherCacheWriter.HeaderBytes}-byte header");
                var header = new byte[TeacherCacheWriter.HeaderBytes];
                RandomAccess.Read(handle, header, 0);
                if (BinaryPrimitives.ReadUInt32LittleEndian(header) != TeacherCacheWriter.Magic)
                    throw new InvalidDataException($"teacher cache {path}: not a teacher cache shard (bad magic)");
                var version = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(4));
                if (version != TeacherCacheManifest.CurrentVersion)
                    throw new InvalidDataException($"teacher cache {path}: shard format version {version}, this build reads version {TeacherCacheManifest.CurrentVersion}");
                var first = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
                var samples = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12));
                if (first != info.FirstSample || samples != info.Samples)
                    throw new InvalidDataException($"teacher cache {path}: header says samples [{first}, {first + samples}), manifest says [{info.FirstSample}, {info.FirstSample + info.Samples})");
                if (Convert.ToHexStringLower(header.AsSpan(16, 32)) != manifest.CacheHash)
                    throw new InvalidDataException($"teacher cache {path}: shard belongs to another cache (its cache hash differs from the manifest's)");
                var payloadBytes = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(48));
                var payloadStart = TeacherCacheWriter.HeaderBytes + (long)samples * TeacherCacheWriter.IndexEntryBytes;
                if (payloadStart + payloadBytes != length)
                    throw new InvalidDataException($"teacher cache {path}: header + index + payload is {payloadStart + payloadBytes} bytes, the file {length}");
                var index = new byte[samples * TeacherCacheWriter.IndexEntryBytes];
                RandomAccess.Read(handle, index, TeacherCacheWriter.HeaderBytes);
                var offsets = new long[samples + 1];
                var tokens = new int[samples];
                var checksums = new ulong[samples];
                for (var i = 0; i < samples; i++)
                {
                    offsets[i] = BinaryPrimitives.ReadInt64LittleEndian(index.AsSpan(i * TeacherCacheWriter.IndexEntryBytes));
                    tokens[i] = BinaryPrimitives.ReadInt32LittleEndian(index.AsSpan(i * TeacherCacheWriter.IndexEntryBytes + 8));
                    checksums[i] = BinaryPrimitives.ReadUInt64LittleEndian(index.AsSpan(i * TeacherCacheWriter.IndexEntryBytes + 12));
                    if (tokens[i] < 0 || offsets[i] < (i == 0 ? 0 : offsets[i - 1]) || offsets[i] > payloadBytes)
                        throw new InvalidDataException($"teacher cache {path}: sample index entry {i} is corrupt (offset {offsets[i]}, tokens {tokens[i]})");
                }
                offsets[samples] = payloadBytes;
                return new ShardReader(path, info, handle, offsets, tokens, checksums, payloadStart);
            }
            catch
            {
                handle.Dispose();
                throw;
            }
        }

        public int Tokens(int local) => _tokens[local];

        public byte[] ReadPayload(int local)
        {
            var bytes = new byte[_offsets[local + 1] - _offsets[local]];
            var read = RandomAccess.Read(_handle, bytes, _payloadStart + _offsets[local]);
            if (read != bytes.Length) throw new InvalidDataException($"teacher cache {Path}: short read of sample {local} (file changed while open?)");
            if (TeacherCacheWriter.Checksum(bytes) != _checksums[local])
                throw new InvalidDataException($"teacher cache {Path}: sample {Info.FirstSample + local} is corrupt (its bytes do not match the checksum in the shard's index)");
            return bytes;
        }

        public void Dispose() => _handle.Dispose();
    }
}
