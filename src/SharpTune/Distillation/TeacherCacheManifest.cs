// The manifest (manifest.json) of a teacher cache folder: encoding parameters, what produced the cache (teacher id,
// temperature, content hashes) and the list of complete shards. It is rewritten atomically after every shard, so an
// interrupted generation leaves a manifest naming exactly the shards that are complete; a rerun continues from there.
using System.Text.Json;
using System.Text.Json.Serialization;
using SharpTune.Checkpointing;

namespace SharpTune.Distillation;

/// <summary>One shard file of a teacher cache.</summary>
/// <param name="File">File name inside the cache folder.</param>
/// <param name="FirstSample">Index of its first sample in the dataset.</param>
/// <param name="Samples">Number of consecutive samples it holds.</param>
/// <param name="Tokens">Token positions it holds.</param>
/// <param name="Bytes">File length.</param>
/// <param name="Sha256">Hex SHA-256 of the whole file.</param>
/// <param name="Entries">Top-k entries stored over all its positions.</param>
/// <param name="MinEntries">Fewest entries stored at one of its positions (k when it has no positions).</param>
/// <param name="Folded">Entries with a finite log-prob folded into the tail (by max_bytes_per_token or max_log_ratio).</param>
public sealed record TeacherCacheShard(string File, int FirstSample, int Samples, long Tokens, long Bytes, string Sha256,
    long Entries, int MinEntries, long Folded);

/// <summary>What a teacher cache was made from and how it is encoded.</summary>
public sealed record TeacherCacheManifest
{
    /// <summary>Format marker.</summary>
    public const string FormatName = "sharptune-teacher-topk";

    /// <summary>The manifest file name.</summary>
    public const string FileName = "manifest.json";

    /// <summary>Always <see cref="FormatName"/>.</summary>
    public string Format { get; init; } = FormatName;

    /// <summary>The format version this build writes and reads: 2 (ids as sorted gaps; version 1 stored them in rank order).</summary>
    public const int CurrentVersion = 2;

    /// <summary>Format version (<see cref="CurrentVersion"/>).</summary>
    public int Version { get; init; } = CurrentVersion;

    /// <summary>Most ids per position.</summary>
    public required int K { get; init; }

    /// <summary>Teacher vocabulary size.</summary>
    public required int Vocab { get; init; }

    /// <summary>Log-prob quantisation step in nats.</summary>
    public required double LogProbStep { get; init; }

    /// <summary>Entries this many nats below the top-1 are folded into the tail; null: none is.</summary>
    public double? MaxLogRatio { get; init; }

    /// <summary>Budget of one position record in bytes; null: every top-k entry is stored.</summary>
    public int? MaxBytesPerToken { get; init; }

    /// <summary>Temperature the log-probs were computed at (log_softmax(logits / T)).</summary>
    public required double Temperature { get; init; }

    /// <summary>Free-form teacher name (model component and checkpoint folder).</summary>
    public required string TeacherId { get; init; }

    /// <summary><see cref="ContentHash.OfDataset"/> of the tokenized dataset.</summary>
    public required string DataHash { get; init; }

    /// <summary><see cref="ContentHash.OfPath"/> of the tokenizer files.</summary>
    public required string TokenizerHash { get; init; }

    /// <summary><see cref="ContentHash.OfWeights"/> of the teacher.</summary>
    public required string TeacherHash { get; init; }

    /// <summary>Samples in the dataset.</summary>
    public required int Samples { get; init; }

    /// <summary>Samples per shard (the last shard may hold fewer).</summary>
    public required int SamplesPerShard { get; init; }

    /// <summary>Complete shards, in sample order.</summary>
    public IReadOnlyList<TeacherCacheShard> Shards { get; init; } = [];

    /// <summary>True once every sample is in a shard.</summary>
    public bool Complete { get; init; }

    /// <summary>The encoding parameters.</summary>
    [JsonIgnore]
    public TopKFormat Encoding => new(K, Vocab, LogProbStep, MaxLogRatio, MaxBytesPerToken);

    /// <summary>Hash of everything that determines the cache contents; written into every shard header.</summary>
    [JsonIgnore]
    public string CacheHash => ContentHash.Combine(FormatName, Version.ToString(System.Globalization.CultureInfo.InvariantCulture),
        K.ToString(System.Globalization.CultureInfo.InvariantCulture), Vocab.ToString(System.Globalization.CultureInfo.InvariantCulture),
        LogProbStep.ToString("R", System.Globalization.CultureInfo.InvariantCulture), MaxLogRatio?.ToString("R", System.Globalization.CultureInfo.InvariantCulture) ?? "null",
        MaxBytesPerToken?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "null", Temperature.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        DataHash, TokenizerHash, TeacherHash, Samples.ToString(System.Globalization.CultureInfo.InvariantCulture),
        SamplesPerShard.ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>Token positions in complete shards.</summary>
    [JsonIgnore]
    public long Tokens => Shards.Sum(s => s.Tokens);

    /// <summary>Bytes of complete shards.</summary>
    [JsonIgnore]
    public long Bytes => Shards.Sum(s => s.Bytes);

    /// <summary>Mean top-k entries stored per position in complete shards.</summary>
    [JsonIgnore]
    public double MeanEntries => Tokens == 0 ? 0 : (double)Shards.Sum(s => s.Entries) / Tokens;

    /// <summary>Fewest top-k entries stored at one position of the complete shards.</summary>
    [JsonIgnore]
    public int MinEntries => Shards.Where(s => s.Tokens > 0).Select(s => s.MinEntries).DefaultIfEmpty(0).Min();

    /// <summary>Entries folded into the tail in complete shards.</summary>
    [JsonIgnore]
    public long FoldedEntries => Shards.Sum(s => s.Folded);

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        // A null where the record has a non-nullable string or list is a corrupt manifest, not a NullReferenceException later.
        RespectNullableAnnotations = true,
        RespectRequiredConstructorParameters = true,
    };

    /// <summary>Reads <c>manifest.json</c> of <paramref name="folder"/>.</summary>
    /// <exception cref="InvalidDataException">Missing, unreadable or not a teacher cache manifest.</exception>
    public static TeacherCacheManifest Read(string folder)
    {
        var path = Path.Combine(folder, FileName);
        if (!File.Exists(path)) throw new InvalidDataException($"teacher cache: {path} not found (not a teacher cache folder, or generation never wrote a shard)");
        TeacherCacheManifest? manifest;
        try
        {
            var text = File.ReadAllText(path);
            // The format and version are checked before the rest, whose fields differ between versions.
            using (var doc = JsonDocument.Parse(text))
            {
                var root = doc.RootElement;
                var format = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("format", out var f) ? f.ToString() : null;
                if (format != FormatName)
                    throw new InvalidDataException($"teacher cache: {path}: format is '{format}', expected '{FormatName}'");
                var version = root.TryGetProperty("version", out var v) && v.TryGetInt32(out var n) ? n : (int?)null;
                if (version != CurrentVersion)
                    throw new InvalidDataException(
                        $"teacher cache: {path}: format version {version?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "(missing)"} " +
                        $"is not read by this build, which reads version {CurrentVersion}" +
                        (version == 1 ? " (version 1 stored ids in rank order; version 2 stores them as sorted gaps)" : "") +
                        "; regenerate the cache with the teacher_logits recipe");
            }
            manifest = JsonSerializer.Deserialize<TeacherCacheManifest>(text, Json);
        }
        catch (JsonException e) { throw new InvalidDataException($"teacher cache: {path} is not a valid manifest: {e.Message}", e); }
        if (manifest is null) throw new InvalidDataException($"teacher cache: {path} is not a valid manifest (null)");
        try { manifest.Encoding.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
        foreach (var shard in manifest.Shards)
            if (shard.File.Contains('/') || shard.File.Contains('\\') || shard.File is "" or "." or "..")
                throw new InvalidDataException($"teacher cache: {path}: shard '{shard.File}' is not a file name in the cache folder");
        return manifest;
    }

    /// <summary>Writes <c>manifest.json</c> of <paramref name="folder"/> atomically.</summary>
    public void Write(string folder) =>
        AtomicFile.WriteAllText(Path.Combine(folder, FileName), JsonSerializer.Serialize(this, Json));
}
