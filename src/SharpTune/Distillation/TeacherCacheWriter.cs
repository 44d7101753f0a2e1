// Writes a teacher cache folder: samples are encoded position by position (TopKCodec) and collected into shards of
// `SamplesPerShard` consecutive samples; each shard is written atomically (temp file + rename), then the manifest is
// rewritten atomically to name it. Opening a folder that already holds a manifest for the same cache hash resumes
// after its last complete shard; a manifest for anything else (other data, teacher, k, temperature) is refused.
//
// Shard file layout (little-endian), format version 2:
//   "STKC" | u32 version | i32 first_sample | i32 samples | 32-byte cache hash | u64 payload bytes
//   | u64 entries stored | u32 fewest entries at one position | u64 entries folded into the tail
//   samples x (u64 payload offset, i32 tokens, 8-byte checksum)  -- the sample index; the checksum is the first 8 bytes
//                                                                  of the SHA-256 of the sample's payload bytes
//   payload: per sample, its position records bit-packed and padded to a byte
using System.Buffers.Binary;
using System.Security.Cryptography;
using SharpTune.Checkpointing;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Distillation;

/// <summary>Appends samples to a teacher cache, shard by shard, resumably.</summary>
public sealed class TeacherCacheWriter
{
    internal const uint Magic = 0x434B5453; // "STKC"
    internal const int HeaderBytes = 4 + 4 + 4 + 4 + 32 + 8 + 8 + 4 + 8;
    internal const int IndexEntryBytes = 8 + 4 + ChecksumBytes;
    internal const int ChecksumBytes = 8;

    private readonly string _folder;
    private readonly TopKFormat _format;
    private readonly BitWriter _bits = new();
    private readonly List<(long Offset, int Tokens)> _index = [];
    private readonly TopKCodec.Scratch _scratch;
    private TeacherCacheManifest _manifest;
    private readonly bool _part;
    private readonly int _end;
    private int _shardFirst;
    private int _shardIndex;
    private long _shardEntries;
    private int _shardMinEntries;
    private long _shardFolded;

    private TeacherCacheWriter(string folder, TeacherCacheManifest manifest, int firstShard = -1, int shardCount = 0)
    {
        _folder = folder;
        _manifest = manifest;
        _format = manifest.Encoding;
        _scratch = new TopKCodec.Scratch(_format.K);
        _shardMinEntries = _format.K;
        _part = firstShard >= 0;
        _shardIndex = _part ? firstShard : manifest.Shards.Count;
        _shardFirst = _part ? firstShard * manifest.SamplesPerShard : manifest.Shards.Sum(s => s.Samples);
        _end = _part ? (int)Math.Min(manifest.Samples, (long)(firstShard + shardCount) * manifest.SamplesPerShard) : manifest.Samples;
    }

    /// <summary>Number of shards a complete cache of <paramref name="manifest"/> has.</summary>
    public static int ShardCount(TeacherCacheManifest manifest) => (manifest.Samples + manifest.SamplesPerShard - 1) / manifest.SamplesPerShard;

    /// <summary>One past the last sample this writer appends (the dataset's end, or the end of its part).</summary>
    public int EndSample => _end;

    /// <summary>The manifest as of the last complete shard.</summary>
    public TeacherCacheManifest Manifest => _manifest;

    /// <summary>The next sample to append (0 for a new cache; after the last complete shard when resuming).</summary>
    public int NextSample => _shardFirst + _index.Count;

    /// <summary>Samples that were already complete when the folder was opened (skipped by a resumed run).</summary>
    public int ResumedSamples { get; private init; }

    /// <summary>
    /// Opens <paramref name="folder"/> for writing the cache described by <paramref name="template"/> (its shard list
    /// and completion flag are ignored). Resumes when the folder's manifest has the same <see cref="TeacherCacheManifest.CacheHash"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The folder holds a cache made from something else.</exception>
    /// <exception cref="InvalidDataException">A shard the manifest lists is missing or has the wrong length.</exception>
    public static TeacherCacheWriter Open(string folder, TeacherCacheManifest template)
    {
        template.Encoding.Validate();
        if (template.Samples < 0 || template.SamplesPerShard < 1)
            throw new ArgumentException($"teacher cache: samples must be >= 0 and samples_per_shard >= 1, got {template.Samples}, {template.SamplesPerShard}");
        Directory.CreateDirectory(folder);
        var fresh = template with { Shards = [], Complete = false };
        var manifest = fresh;
        if (File.Exists(Path.Combine(folder, TeacherCacheManifest.FileName)))
        {
            var existing = TeacherCacheManifest.Read(folder);
            if (existing.CacheHash != fresh.CacheHash)
                throw new InvalidOperationException(
                    $"teacher cache: {folder} already holds a cache made from other inputs ({Differences(existing, fresh)}); " +
                    "delete the folder or choose another output_dir");
            foreach (var shard in existing.Shards)
            {
                var path = Path.Combine(folder, shard.File);
                var length = File.Exists(path) ? new FileInfo(path).Length : -1;
                if (length != shard.Bytes)
                    throw new InvalidDataException($"teacher cache: {path}: {(length < 0 ? "missing" : $"{length} bytes")}, manifest says {shard.Bytes} bytes");
            }
            manifest = existing;
        }
        foreach (var stray in Directory.EnumerateFiles(folder, ".*.tmp-*")) File.Delete(stray); // left by a killed run
        return new TeacherCacheWriter(folder, manifest) { ResumedSamples = manifest.Shards.Sum(s => s.Samples) };
    }

    /// <summary>
    /// Opens a writer for shards <paramref name="firstShard"/> .. <paramref name="firstShard"/> + <paramref name="shardCount"/> - 1
    /// of the cache described by <paramref name="template"/>, for one rank of a distributed generation. Its shard files
    /// are the ones a one-process run writes (same names, same bytes), each atomically; it never writes the manifest:
    /// once every part is written, one process calls <see cref="Assemble"/>.
    /// </summary>
    public static TeacherCacheWriter OpenPart(string folder, TeacherCacheManifest template, int firstShard, int shardCount)
    {
        template.Encoding.Validate();
        var total = template.SamplesPerShard < 1 ? 0 : ShardCount(template);
        if (firstShard < 0 || shardCount < 0 || firstShard + shardCount > total)
            throw new ArgumentException($"teacher cache: shards {firstShard}..{firstShard + shardCount - 1} outside the cache's {total} shards");
        Directory.CreateDirectory(folder);
        return new TeacherCacheWriter(folder, template with { Shards = [], Complete = false }, firstShard, shardCount);
    }

    /// <summary>
    /// Writes the complete manifest of <paramref name="folder"/> from its shard files (written by <see cref="OpenPart"/>
    /// writers, or listed by an earlier manifest): every shard of <paramref name="template"/> must be present with the
    /// expected header (first sample, sample count, cache hash) and length.
    /// </summary>
    /// <exception cref="InvalidDataException">A shard is missing, truncated or belongs to another cache.</exception>
    public static TeacherCacheManifest Assemble(string folder, TeacherCacheManifest template)
    {
        var shards = new List<TeacherCacheShard>();
        var hash = Convert.FromHexString(template.CacheHash);
        for (var i = 0; i < ShardCount(template); i++)
        {
            var name = ShardName(i);
            var path = Path.Combine(folder, name);
            if (!File.Exists(path)) throw new InvalidDataException($"teacher cache: {path} missing (shard {i} of {ShardCount(template)})");
            var bytes = File.ReadAllBytes(path);
            var first = i * template.SamplesPerShard;
            var samples = Math.Min(template.SamplesPerShard, template.Samples - first);
            if (bytes.Length < HeaderBytes + (long)samples * IndexEntryBytes
                || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != Magic
                || BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(4)) != TeacherCacheManifest.CurrentVersion
                || BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8)) != first
                || BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(12)) != samples
                || !bytes.AsSpan(16, 32).SequenceEqual(hash))
                throw new InvalidDataException($"teacher cache: {path} is not shard {i} (samples {first}..{first + samples - 1}) of this cache");
            var payload = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(48));
            if (bytes.Length != HeaderBytes + (long)samples * IndexEntryBytes + payload)
                throw new InvalidDataException($"teacher cache: {path}: {bytes.Length} bytes, header says {HeaderBytes + (long)samples * IndexEntryBytes + payload}");
            long tokens = 0;
            for (var s = 0; s < samples; s++) tokens += BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(HeaderBytes + s * IndexEntryBytes + 8));
            var (entries, minEntries, folded) = ReadStats(bytes);
            shards.Add(new TeacherCacheShard(name, first, samples, tokens, bytes.Length, Convert.ToHexStringLower(SHA256.HashData(bytes)),
                entries, minEntries, folded));
        }
        var manifest = template with { Shards = shards, Complete = true };
        manifest.Write(folder);
        return manifest;
    }

    private static string ShardName(int index) => $"shard-{index:D5}.tkc";

    /// <summary>The entry statistics of a shard header: entries stored, fewest at one position, entries folded.</summary>
    internal static (long Entries, int MinEntries, long Folded) ReadStats(ReadOnlySpan<byte> header) =>
        (BinaryPrimitives.ReadInt64LittleEndian(header[56..]), BinaryPrimitives.ReadInt32LittleEndian(header[64..]),
            BinaryPrimitives.ReadInt64LittleEndian(header[68..]));

    /// <summary>The checksum a sample index entry holds for <paramref name="payload"/>.</summary>
    internal static ulong Checksum(ReadOnlySpan<byte> payload) => BinaryPrimitives.ReadUInt64LittleEndian(SHA256.HashData(payload));

    /// <summary>
    /// Appends sample <paramref name="sampleIndex"/> (must equal <see cref="NextSample"/>): for each of its
    /// <paramref name="tokens"/> positions, <paramref name="width"/> ids and log-probs in descending order
    /// (row-major [tokens, width], width &lt;= K). Writes a shard when it is full or the dataset ends.
    /// </summary>
    public void Append(int sampleIndex, int tokens, int width, ReadOnlySpan<long> ids, ReadOnlySpan<float> logProbs)
    {
        if (_manifest.Complete) throw new InvalidOperationException("teacher cache: already complete");
        if (sampleIndex != NextSample) throw new ArgumentException($"teacher cache: expected sample {NextSample}, got {sampleIndex}");
        if (sampleIndex >= _end) throw new ArgumentException($"teacher cache: sample {sampleIndex} beyond the {(_part ? "part's" : "dataset's")} {_end} samples");
        if (ids.Length != (long)tokens * width || logProbs.Length != ids.Length)
            throw new ArgumentException($"teacher cache: expected {tokens} x {width} ids and log-probs, got {ids.Length} and {logProbs.Length}");
        var start = (_bits.BitLength + 7) >> 3;
        _bits.Write(0, (int)(start * 8 - _bits.BitLength)); // byte-align each sample
        _index.Add((start, tokens));
        for (var t = 0; t < tokens; t++)
        {
            var (stored, folded) = TopKCodec.Encode(_bits, _format, ids.Slice(t * width, width), logProbs.Slice(t * width, width), _scratch);
            _shardEntries += stored;
            _shardMinEntries = Math.Min(_shardMinEntries, stored);
            _shardFolded += folded;
        }
        if (_index.Count == _manifest.SamplesPerShard || NextSample == _end) FlushShard();
    }

    /// <summary>
    /// Appends sample <paramref name="sampleIndex"/> from the teacher's logits [s, v] over its positions: the top-K of
    /// log_softmax(logits / temperature) with the manifest's temperature.
    /// </summary>
    public void AppendLogits(int sampleIndex, Tensor logits)
    {
        if (logits.dim() != 2 || logits.shape[1] != _manifest.Vocab)
            throw new ArgumentException($"teacher cache: logits must be [tokens, {_manifest.Vocab}], got [{string.Join(", ", logits.shape)}]");
        using var scope = torch.NewDisposeScope();
        var scaled = logits.detach().to(ScalarType.Float32);
        if (_manifest.Temperature != 1) scaled = scaled / _manifest.Temperature;
        var (values, indices) = scaled.log_softmax(-1).topk(_format.K); // [s, K] each, descending
        var tokens = (int)logits.shape[0];
        Append(sampleIndex, tokens, _format.K, indices.cpu().data<long>().ToArray(), values.cpu().data<float>().ToArray());
    }

    /// <summary>Marks the cache complete (every sample appended) and rewrites the manifest.</summary>
    public TeacherCacheManifest Complete()
    {
        if (_part) throw new InvalidOperationException("teacher cache: a part writer does not complete the cache; call Assemble once every part is written");
        if (NextSample != _manifest.Samples)
            throw new InvalidOperationException($"teacher cache: {NextSample} of {_manifest.Samples} samples written");
        if (!_manifest.Complete)
        {
            _manifest = _manifest with { Complete = true };
            _manifest.Write(_folder);
        }
        return _manifest;
    }

    private void FlushShard()
    {
        var payload = _bits.ToArray();
        var samples = _index.Count;
        var name = ShardName(_shardIndex);
        var header = new byte[HeaderBytes + samples * IndexEntryBytes];
        BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(4), TeacherCacheManifest.CurrentVersion);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), _shardFirst);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(12), samples);
        Convert.FromHexString(_manifest.CacheHash).CopyTo(header.AsSpan(16));
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(48), payload.Length);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(56), _shardEntries);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(64), _shardMinEntries);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(68), _shardFolded);
        long tokens = 0;
        for (var i = 0; i < samples; i++)
        {
            var entry = header.AsSpan(HeaderBytes + i * IndexEntryBytes);
            var end = i + 1 < samples ? _index[i + 1].Offset : payload.Length;
            BinaryPrimitives.WriteInt64LittleEndian(entry, _index[i].Offset);
            BinaryPrimitives.WriteInt32LittleEndian(entry[8..], _index[i].Tokens);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[12..], Checksum(payload.AsSpan((int)_index[i].Offset, (int)(end - _index[i].Offset))));
            tokens += _index[i].Tokens;
        }
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(header);
        sha.AppendData(payload);
        AtomicFile.Write(Path.Combine(_folder, name), fs => { fs.Write(header); fs.Write(payload); });
        var shard = new TeacherCacheShard(name, _shardFirst, samples, tokens, header.Length + payload.LongLength,
            Convert.ToHexStringLower(sha.GetHashAndReset()), _shardEntries, _shardMinEntries, _shardFolded);
        if (!_part)
        {
            _manifest = _manifest with { Shards = [.. _manifest.Shards, shard] };
            _manifest.Write(_folder);
        }
        _shardFirst += samples;
        _shardIndex++;
        _index.Clear();
        _bits.Clear();
        _shardEntries = 0;
        _shardMinEntries = _format.K;
        _shardFolded = 0;
    }

    internal static string Differences(TeacherCacheManifest a, TeacherCacheManifest b)
    {
        var diffs = new List<string>();
        void Check(string key, object? x, object? y) { if (!Equals(x, y)) diffs.Add($"{key} {x ?? "null"} vs {y ?? "null"}"); }
        Check("data_hash", a.DataHash, b.DataHash);
        Check("tokenizer_hash", a.TokenizerHash, b.TokenizerHash);
        Check("teacher_hash", a.TeacherHash, b.TeacherHash);
        Check("k", a.K, b.K);
        Check("vocab", a.Vocab, b.Vocab);
        Check("temperature", a.Temperature, b.Temperature);
        Check("log_prob_step", a.LogProbStep, b.LogProbStep);
        Check("max_log_ratio", a.MaxLogRatio, b.MaxLogRatio);
        Check("max_bytes_per_token", a.MaxBytesPerToken, b.MaxBytesPerToken);
        Check("samples", a.Samples, b.Samples);
        Check("samples_per_shard", a.SamplesPerShard, b.SamplesPerShard);
        return diffs.Count == 0 ? "format differs" : string.Join(", ", diffs) + " (existing vs requested)";
    }
}
