// The ids two vocabularies share: a teacher token and a student token match when they spell the same bytes after each
// tokenizer's own notation is undone (SentencePiece's U+2581 and byte-level BPE's GPT-2 alphabet, where " the" is
// "▁the" in one and "Ġthe" in the other; a byte-fallback piece <0xE4> is the byte 0xE4), or when both are special
// tokens with the same string. TRL's GOLDTrainer (ULDLoss._initialize_vocabulary_mapping) matches the raw vocabulary
// strings instead, which never pairs a SentencePiece token with a byte-level one that has a space or a non-ASCII byte.
// A vocabulary can spell one byte string twice (SentencePiece's "A" and <0x41>); the match then takes the ordinary
// piece, which is what the tokenizer emits for that text, so the map stays one-to-one (the byte piece matches only the
// same byte piece of another SentencePiece vocabulary). The unknown pieces of two SentencePiece vocabularies match
// each other (both mean "text I cannot spell", as TRL's match of the two "<unk>" strings does), so that one tokenizer
// matched with itself matches every id.
// The map is cached on disk under both tokenizers' fingerprints (a SHA-256 of every id's meaning), written atomically,
// and checked on load (magic, length, checksum, fingerprints, ids).
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using SharpTune.Checkpointing;
using SharpTune.Tokenizers;

namespace SharpTune.Distillation.CrossTokenizer;

/// <summary>Teacher id to student id for the tokens both vocabularies share.</summary>
public sealed class VocabularyMap
{
    private static readonly byte[] s_magic = "STVMAP1\0"u8.ToArray();
    private const int HeaderBytes = 8 + 32 + 32 + 12;

    private VocabularyMap(int teacherVocab, int studentVocab, int[] teacherIds, int[] studentIds, string teacherFp, string studentFp)
    {
        TeacherVocab = teacherVocab;
        StudentVocab = studentVocab;
        TeacherIds = teacherIds;
        StudentIds = studentIds;
        TeacherFingerprint = teacherFp;
        StudentFingerprint = studentFp;
    }

    /// <summary>Teacher vocabulary size.</summary>
    public int TeacherVocab { get; }

    /// <summary>Student vocabulary size.</summary>
    public int StudentVocab { get; }

    /// <summary>Matched teacher ids, ascending.</summary>
    public IReadOnlyList<int> TeacherIds { get; }

    /// <summary>The student id matched with each of <see cref="TeacherIds"/> (all distinct).</summary>
    public IReadOnlyList<int> StudentIds { get; }

    /// <summary>Hex SHA-256 fingerprint of the teacher tokenizer (<see cref="Fingerprint"/>).</summary>
    public string TeacherFingerprint { get; }

    /// <summary>Hex SHA-256 fingerprint of the student tokenizer.</summary>
    public string StudentFingerprint { get; }

    /// <summary>Number of matched pairs.</summary>
    public int Count => TeacherIds.Count;

    /// <summary>True when every id of both vocabularies is matched with the same id (one tokenizer on both sides).</summary>
    public bool IsIdentity => TeacherVocab == StudentVocab && Count == TeacherVocab &&
        Enumerable.Range(0, Count).All(i => TeacherIds[i] == i && StudentIds[i] == i);

    /// <summary>Matches the two vocabularies (no cache).</summary>
    public static VocabularyMap Build(ITokenPieces teacher, ITokenPieces student)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(student);
        var studentByKey = Keys(student);
        var teacherByKey = Keys(teacher);
        var pairs = new List<(int T, int S)>();
        foreach (var (key, t) in teacherByKey)
            if (studentByKey.TryGetValue(key, out var s)) pairs.Add((t, s));
        pairs.Sort();
        return new VocabularyMap(teacher.VocabSize, student.VocabSize, [.. pairs.Select(p => p.T)], [.. pairs.Select(p => p.S)],
            Fingerprint(teacher), Fingerprint(student));
    }

    /// <summary>A map that matches nothing: every id of both vocabularies is unmatched, so <see cref="Losses.GoldLoss"/>
    /// with it is ULD on span-merged probabilities (how the recipes run <see cref="Losses.UldLoss"/> across tokenizers).</summary>
    public static VocabularyMap None(ITokenPieces teacher, ITokenPieces student)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(student);
        return new VocabularyMap(teacher.VocabSize, student.VocabSize, [], [], Fingerprint(teacher), Fingerprint(student));
    }

    /// <summary>
    /// The map of this pair from <paramref name="cacheDir"/> when it holds one (file named by both fingerprints),
    /// otherwise built and written there atomically.
    /// </summary>
    /// <exception cref="InvalidDataException">The cache file is corrupt or belongs to other tokenizers; names the file
    /// and what is wrong (delete it to rebuild).</exception>
    public static VocabularyMap LoadOrBuild(ITokenPieces teacher, ITokenPieces student, string cacheDir)
    {
        var fpT = Fingerprint(teacher);
        var fpS = Fingerprint(student);
        var path = CachePath(cacheDir, fpT, fpS);
        if (File.Exists(path)) return Read(path, fpT, fpS, teacher.VocabSize, student.VocabSize);
        var map = Build(teacher, student);
        map.Write(path);
        return map;
    }

    /// <summary>Cache file of a pair: <c>vocab-map-{teacher fp[..16]}-{student fp[..16]}.bin</c> in <paramref name="cacheDir"/>.</summary>
    public static string CachePath(string cacheDir, string teacherFingerprint, string studentFingerprint) =>
        Path.Combine(cacheDir, $"vocab-map-{teacherFingerprint[..16]}-{studentFingerprint[..16]}.bin");

    /// <summary>Hex SHA-256 over the vocabulary size and every id's kind and bytes (or special name), in id order.</summary>
    public static string Fingerprint(ITokenPieces tokenizer)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> head = stackalloc byte[8];
        BinaryPrimitives.WriteInt32LittleEndian(head, tokenizer.VocabSize);
        sha.AppendData(head[..4]);
        for (var id = 0; id < tokenizer.VocabSize; id++)
        {
            var p = tokenizer.PieceOf(id);
            var bytes = p.Kind == TokenPieceKind.Special ? Encoding.UTF8.GetBytes(p.Name) : p.Bytes;
            head[0] = (byte)p.Kind;
            BinaryPrimitives.WriteInt32LittleEndian(head[1..], bytes.Length);
            sha.AppendData(head[..5]);
            sha.AppendData(bytes);
        }
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
    }

    /// <summary>Writes the map to <paramref name="path"/> (temp file, then rename).</summary>
    public void Write(string path)
    {
        var body = new byte[HeaderBytes + 8 * Count];
        s_magic.CopyTo(body, 0);
        Convert.FromHexString(TeacherFingerprint).CopyTo(body, 8);
        Convert.FromHexString(StudentFingerprint).CopyTo(body, 40);
        BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(72), TeacherVocab);
        BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(76), StudentVocab);
        BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(80), Count);
        for (var i = 0; i < Count; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(HeaderBytes + 8 * i), TeacherIds[i]);
            BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(HeaderBytes + 8 * i + 4), StudentIds[i]);
        }
        var hash = SHA256.HashData(body);
        AtomicFile.Write(path, fs => { fs.Write(body); fs.Write(hash); });
    }

    /// <summary>Reads a cache file written by <see cref="Write"/> and checks it belongs to the given pair.</summary>
    /// <exception cref="InvalidDataException">Names <paramref name="path"/> and the first thing that is wrong.</exception>
    public static VocabularyMap Read(string path, string teacherFingerprint, string studentFingerprint, int teacherVocab, int studentVocab)
    {
        var data = File.ReadAllBytes(path);
        InvalidDataException Bad(string what) => new($"{path}: corrupt vocabulary-map cache ({what}); delete the file to rebuild it");
        if (data.Length < HeaderBytes + 32 || !data.AsSpan(0, 8).SequenceEqual(s_magic))
            throw Bad($"not a SharpTune vocabulary map: {data.Length} bytes, expected the STVMAP1 header");
        var count = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(80));
        var expected = HeaderBytes + 8L * count + 32;
        if (count < 0 || data.Length != expected) throw Bad($"{data.Length} bytes, expected {expected} for {count} pairs");
        if (!SHA256.HashData(data.AsSpan(0, data.Length - 32)).AsSpan().SequenceEqual(data.AsSpan(data.Length - 32)))
            throw Bad("checksum mismatch");
        var fpT = Convert.ToHexString(data, 8, 32).ToLowerInvariant();
        var fpS = Convert.ToHexString(data, 40, 32).ToLowerInvariant();
        if (fpT != teacherFingerprint || fpS != studentFingerprint)
            throw Bad($"written for tokenizers {fpT[..16]}/{fpS[..16]}, expected {teacherFingerprint[..16]}/{studentFingerprint[..16]}");
        var vt = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(72));
        var vs = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(76));
        if (vt != teacherVocab || vs != studentVocab)
            throw Bad($"vocabulary sizes {vt}/{vs}, expected {teacherVocab}/{studentVocab}");
        var t = new int[count];
        var s = new int[count];
        var seen = new HashSet<int>();
        for (var i = 0; i < count; i++)
        {
            t[i] = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(HeaderBytes + 8 * i));
            s[i] = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(HeaderBytes + 8 * i + 4));
            if ((uint)t[i] >= (uint)vt || (uint)s[i] >= (uint)vs || (i > 0 && t[i] <= t[i - 1]) || !seen.Add(s[i]))
                throw Bad($"pair {i} ({t[i]} -> {s[i]}) is out of range, out of order or repeats a student id");
        }
        return new VocabularyMap(vt, vs, t, s, fpT, fpS);
    }

    // One id per meaning: bytes for ordinary and byte-fallback tokens (ordinary first, then the lowest id), names for
    // special tokens, one key for the unknown piece; unused ids have no key.
    private static Dictionary<string, int> Keys(ITokenPieces tokenizer)
    {
        var keys = new Dictionary<string, int>(tokenizer.VocabSize, StringComparer.Ordinal);
        var fallback = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var id = 0; id < tokenizer.VocabSize; id++)
        {
            var p = tokenizer.PieceOf(id);
            switch (p.Kind)
            {
                case TokenPieceKind.Text: keys.TryAdd("b" + Convert.ToHexString(p.Bytes), id); break;
                case TokenPieceKind.ByteFallback: fallback.TryAdd("b" + Convert.ToHexString(p.Bytes), id); break;
                case TokenPieceKind.Special: keys.TryAdd("s" + p.Name, id); break;
                case TokenPieceKind.Unknown: keys.TryAdd("u", id); break;
            }
        }
        // A byte piece whose byte an ordinary piece already spells keeps a key of its own, so that one tokenizer
        // matched with itself still matches every id.
        foreach (var (key, id) in fallback)
            if (!keys.TryAdd(key, id)) keys.Add("f" + key, id);
        return keys;
    }
}
