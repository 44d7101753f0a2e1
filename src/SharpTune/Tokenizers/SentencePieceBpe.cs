// SentencePiece BPE model (the tokenizer.model protobuf of Llama 2, TinyLlama and llama2.c models) and its encoder,
// following sentencepiece's bpe_model.cc: symbols start as user-defined pieces (longest match) or single code points;
// the adjacent pair whose merged piece has the highest score is merged first, ties going to the leftmost pair;
// leftover symbols not in the vocabulary fall back to <0xXX> byte pieces. Protobuf fields from
// sentencepiece_model.proto (ModelProto.pieces=1, trainer_spec=2, normalizer_spec=3).
// Written here because Microsoft.ML.Tokenizers 2.0.1's SentencePiece BPE disagrees with llama2.c/sentencepiece on
// two points we measured: it returns no ids for inputs of exactly two unmergeable symbols ("6" with tok512.model), and
// it breaks ties between equal-score merges differently (runs of spaces with the Llama 2 tokenizer).
using System.Text;

namespace SharpTune.Tokenizers;

/// <summary>A SentencePiece BPE model read from its protobuf file.</summary>
public sealed class SentencePieceBpe
{
    private const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Byte = 6;

    private readonly string[] _pieces;
    private readonly float[] _scores;
    private readonly int[] _types;
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);
    private readonly int[] _byteIds = new int[256];
    private readonly string[] _userDefined;
    private readonly bool _addDummyPrefix, _removeExtraWhitespaces, _escapeWhitespaces, _byteFallback;

    private SentencePieceBpe(List<(string Piece, float Score, int Type)> pieces, Spec spec, string path)
    {
        _pieces = pieces.Select(p => p.Piece).ToArray();
        _scores = pieces.Select(p => p.Score).ToArray();
        _types = pieces.Select(p => p.Type).ToArray();
        for (var i = 0; i < _pieces.Length; i++)
        {
            if (_types[i] is < Normal or > Byte)
                throw new InvalidDataException($"{path}: piece {i} has type {_types[i]}, not a SentencePiece piece type (1-6); corrupt file?");
            _ids.TryAdd(_pieces[i], i);
            if (_types[i] == Byte)
            {
                if (_pieces[i].Length != 6 || !_pieces[i].StartsWith("<0x", StringComparison.Ordinal) || _pieces[i][5] != '>' ||
                    !byte.TryParse(_pieces[i].AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out var value))
                    throw new InvalidDataException($"{path}: byte piece {i} is '{_pieces[i]}', expected <0xHH>; corrupt file?");
                _byteIds[value] = i;
            }
        }
        if ((uint)spec.UnkId >= (uint)_pieces.Length || spec.BosId < -1 || spec.BosId >= _pieces.Length ||
            spec.EosId < -1 || spec.EosId >= _pieces.Length || spec.PadId < -1 || spec.PadId >= _pieces.Length)
            throw new InvalidDataException(
                $"{path}: special ids unk={spec.UnkId} bos={spec.BosId} eos={spec.EosId} pad={spec.PadId} lie outside the {_pieces.Length} pieces; corrupt file?");
        _userDefined = [.. Enumerable.Range(0, _pieces.Length).Where(i => _types[i] == UserDefined).Select(i => _pieces[i]).OrderByDescending(p => p.Length)];
        if (spec.ModelType != 2)
            throw new NotSupportedException($"{path}: SentencePiece model_type {spec.ModelType} is not BPE (2); unigram models are not supported");
        if (spec.NormalizerName is not (null or "identity") && spec.HasCharsMap)
            throw new NotSupportedException($"{path}: SentencePiece normalization '{spec.NormalizerName}' is not supported (only identity, as Llama models use)");
        _addDummyPrefix = spec.AddDummyPrefix;
        _removeExtraWhitespaces = spec.RemoveExtraWhitespaces;
        _escapeWhitespaces = spec.EscapeWhitespaces;
        _byteFallback = spec.ByteFallback;
        UnkId = spec.UnkId;
        BosId = spec.BosId;
        EosId = spec.EosId;
        PadId = spec.PadId;
        if (_byteFallback && _byteIds.Count(x => x != 0) < 255)
            throw new InvalidDataException($"{path}: byte_fallback is on but the <0x00>..<0xFF> pieces are missing");
    }

    /// <summary>Number of pieces.</summary>
    public int VocabSize => _pieces.Length;
    /// <summary>Unknown piece id.</summary>
    public int UnkId { get; }
    /// <summary>BOS id (-1 when disabled).</summary>
    public int BosId { get; }
    /// <summary>EOS id (-1 when disabled).</summary>
    public int EosId { get; }
    /// <summary>Pad id (-1 when disabled, as in Llama models).</summary>
    public int PadId { get; }
    /// <summary>The normalizer's remove_extra_whitespaces: strip ends and collapse runs of spaces before encoding.</summary>
    public bool RemoveExtraWhitespaces => _removeExtraWhitespaces;

    /// <summary>Piece text (U+2581 for spaces) to id.</summary>
    public IReadOnlyDictionary<string, int> Vocabulary => _ids;

    /// <summary>True for control and unknown pieces.</summary>
    public bool IsControl(int id) => (uint)id < (uint)_types.Length && _types[id] is Control or Unknown;

    /// <summary>What <paramref name="id"/> stands for: a normal or user-defined piece spells its text (U+2581 as a
    /// space), a byte piece its byte, a control piece nothing, the unknown piece one code point of unknown text.</summary>
    public TokenPiece PieceOf(int id)
    {
        if ((uint)id >= (uint)_pieces.Length)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"token id outside the vocabulary (0..{_pieces.Length - 1})");
        return _types[id] switch
        {
            Normal or UserDefined => TokenPiece.Text(_escapeWhitespaces ? _pieces[id].Replace('\u2581', ' ') : _pieces[id]),
            Byte => TokenPiece.Byte(Convert.ToByte(_pieces[id][3..5], 16)),
            Control => TokenPiece.Special(_pieces[id]),
            Unknown => TokenPiece.Unknown,
            _ => TokenPiece.Unused,
        };
    }

    /// <summary>Reads a tokenizer.model protobuf.</summary>
    public static SentencePieceBpe Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer file not found: {path}", path);
        var bytes = File.ReadAllBytes(path);
        var pieces = new List<(string, float, int)>();
        var spec = new Spec();
        try
        {
            var r = new ProtoReader(bytes, 0, bytes.Length);
            while (r.Next(out var field, out var wire))
            {
                if (field == 1 && wire == 2) pieces.Add(ReadPiece(r.Sub()));
                else if (field == 2 && wire == 2) { ReadTrainer(r.Sub(), spec); spec.HasTrainer = true; }
                else if (field == 3 && wire == 2) { ReadNormalizer(r.Sub(), spec); spec.HasNormalizer = true; }
                else r.Skip(wire);
            }
        }
        catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or DecoderFallbackException or OverflowException)
        {
            throw new InvalidDataException($"{path}: not a SentencePiece model protobuf, or truncated ({e.Message})", e);
        }
        if (pieces.Count == 0) throw new InvalidDataException($"{path}: no pieces; not a SentencePiece model");
        // sentencepiece writes both specs after the pieces; a file cut at a piece boundary parses but lacks them.
        if (!spec.HasTrainer || !spec.HasNormalizer)
            throw new InvalidDataException(
                $"{path}: no {(spec.HasTrainer ? "normalizer_spec" : "trainer_spec")} after {pieces.Count} pieces; truncated, or not a SentencePiece model");
        return new SentencePieceBpe(pieces, spec, path);
    }

    /// <summary>Encodes text (no BOS/EOS).</summary>
    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        var normalized = Normalize(text);
        if (normalized.Length == 0) return ids;

        // Initial symbols: user-defined pieces (longest first), else one code point.
        var starts = new List<int>();
        var lens = new List<int>();
        for (var i = 0; i < normalized.Length;)
        {
            var len = char.IsHighSurrogate(normalized[i]) && i + 1 < normalized.Length ? 2 : 1;
            foreach (var u in _userDefined)
                if (string.CompareOrdinal(normalized, i, u, 0, u.Length) == 0) { len = u.Length; break; }
            starts.Add(i);
            lens.Add(len);
            i += len;
        }
        var n = starts.Count;
        var prev = new int[n];
        var next = new int[n];
        for (var i = 0; i < n; i++) { prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }
        var len2 = lens.ToArray();

        // Agenda ordered by score (high first) then left position (low first), as sentencepiece's comparator.
        var agenda = new PriorityQueue<(int Left, int Right, int Size), (float, int)>();
        void Add(int left, int right)
        {
            if (left < 0 || right < 0) return;
            var piece = normalized.Substring(starts[left], len2[left] + len2[right]);
            if (_ids.TryGetValue(piece, out var id) && _types[id] is Normal or UserDefined)
                agenda.Enqueue((left, right, piece.Length), (-_scores[id], left));
        }
        for (var i = 0; i + 1 < n; i++) Add(i, i + 1);
        while (agenda.TryDequeue(out var top, out _))
        {
            // Skip stale pairs: a symbol already merged away or grown since the pair was queued.
            if (len2[top.Left] == 0 || len2[top.Right] == 0 || next[top.Left] != top.Right ||
                len2[top.Left] + len2[top.Right] != top.Size) continue;
            len2[top.Left] += len2[top.Right];
            len2[top.Right] = 0;
            next[top.Left] = next[top.Right];
            if (next[top.Right] >= 0) prev[next[top.Right]] = top.Left;
            Add(prev[top.Left], top.Left);
            Add(top.Left, next[top.Left]);
        }
        for (var i = 0; i >= 0 && i < n; i = next[i])
        {
            var piece = normalized.Substring(starts[i], len2[i]);
            if (_ids.TryGetValue(piece, out var id) && _types[id] != Unknown && _types[id] != Control) ids.Add(id);
            else if (_byteFallback) foreach (var b in Encoding.UTF8.GetBytes(piece)) ids.Add(_byteIds[b]);
            else ids.Add(UnkId);
        }
        return ids;
    }

    /// <summary>Decodes ids; control pieces are dropped when <paramref name="skipControl"/>.</summary>
    public string Decode(IEnumerable<int> ids, bool skipControl)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        var first = true;
        foreach (var id in ids)
        {
            if ((uint)id >= (uint)_pieces.Length)
                throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the vocabulary (0..{_pieces.Length - 1})");
            if (_types[id] == Byte) { bytes.Add(Convert.ToByte(_pieces[id][3..5], 16)); continue; }
            FlushBytes();
            if (_types[id] == Control) { if (!skipControl) sb.Append(_pieces[id]); continue; }
            var text = _types[id] == Unknown ? " \u2047 " : _pieces[id];
            if (_escapeWhitespaces) text = text.Replace('\u2581', ' ');
            if (first && _addDummyPrefix && text.StartsWith(' ')) text = text[1..];
            first = false;
            sb.Append(text);
        }
        FlushBytes();
        return sb.ToString();

        void FlushBytes()
        {
            if (bytes.Count == 0) return;
            var text = Encoding.UTF8.GetString(bytes.ToArray());
            if (first && _addDummyPrefix && text.StartsWith(' ')) text = text[1..];
            first = false;
            sb.Append(text);
            bytes.Clear();
        }
    }

    private string Normalize(string text)
    {
        if (_removeExtraWhitespaces)
        {
            var sb = new StringBuilder(text.Length);
            foreach (var part in text.Split(' ', StringSplitOptions.RemoveEmptyEntries)) { if (sb.Length > 0) sb.Append(' '); sb.Append(part); }
            text = sb.ToString();
        }
        if (text.Length == 0) return text;
        if (_addDummyPrefix) text = " " + text;
        return _escapeWhitespaces ? text.Replace(' ', '\u2581') : text;
    }

    private static (string, float, int) ReadPiece(ProtoReader r)
    {
        string piece = ""; float score = 0; var type = Normal;
        while (r.Next(out var f, out var w))
        {
            if (f == 1 && w == 2) piece = r.String();
            else if (f == 2 && w == 5) score = r.Float();
            else if (f == 3 && w == 0) type = (int)r.Varint();
            else r.Skip(w);
        }
        return (piece, score, type);
    }

    private static void ReadTrainer(ProtoReader r, Spec s)
    {
        while (r.Next(out var f, out var w))
        {
            if (w == 0 && f is 3 or 35 or 40 or 41 or 42 or 43)
            {
                var v = (int)(long)r.Varint();
                switch (f)
                {
                    case 3: s.ModelType = v; break;
                    case 35: s.ByteFallback = v != 0; break;
                    case 40: s.UnkId = v; break;
                    case 41: s.BosId = v; break;
                    case 42: s.EosId = v; break;
                    case 43: s.PadId = v; break;
                }
            }
            else r.Skip(w);
        }
    }

    private static void ReadNormalizer(ProtoReader r, Spec s)
    {
        while (r.Next(out var f, out var w))
        {
            if (f == 1 && w == 2) s.NormalizerName = r.String();
            else if (f == 2 && w == 2) s.HasCharsMap = r.Sub().Length > 0;
            else if (f is 3 or 4 or 5 && w == 0)
            {
                var v = r.Varint() != 0;
                if (f == 3) s.AddDummyPrefix = v; else if (f == 4) s.RemoveExtraWhitespaces = v; else s.EscapeWhitespaces = v;
            }
            else r.Skip(w);
        }
    }

    private sealed class Spec
    {
        public int ModelType = 1, UnkId, BosId = 1, EosId = 2, PadId = -1;
        public bool ByteFallback, AddDummyPrefix = true, RemoveExtraWhitespaces = true, EscapeWhitespaces = true, HasCharsMap;
        public bool HasTrainer, HasNormalizer;
        public string? NormalizerName;
    }

    private sealed class ProtoReader
    {
        private readonly byte[] _buffer;
        private readonly int _start;
        private readonly int _end;
        private int _pos;

        public ProtoReader(byte[] buffer, int start, int end) { _buffer = buffer; _start = start; _end = end; _pos = start; }

        public int Length => _end - _start;

        public bool Next(out int field, out int wire)
        {
            field = wire = 0;
            if (_pos >= _end) return false;
            var key = Varint();
            field = (int)(key >> 3);
            wire = (int)(key & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong v = 0;
            for (var shift = 0; shift < 64; shift += 7)
            {
                if (_pos >= _end) throw new ArgumentException("varint runs past its message");
                var b = _buffer[_pos++];
                v |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return v;
            }
            throw new ArgumentException("varint too long");
        }

        public float Float()
        {
            if (_pos + 4 > _end) throw new ArgumentException("float runs past its message");
            var f = BitConverter.ToSingle(_buffer, _pos);
            _pos += 4;
            return f;
        }

        public string String() { var r = Sub(); return new UTF8Encoding(false, true).GetString(_buffer, r._start, r.Length); }

        public ProtoReader Sub()
        {
            var len = checked((int)Varint());
            if (len < 0 || _pos + len > _end) throw new ArgumentException("length-delimited field runs past its message");
            var sub = new ProtoReader(_buffer, _pos, _pos + len);
            _pos += len;
            return sub;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: _pos += 8; break;
                case 2: Sub(); break;
                case 5: _pos += 4; break;
                default: throw new ArgumentException($"unsupported protobuf wire type {wire}");
            }
            if (_pos > _end) throw new ArgumentException("field runs past its message");
        }
    }
}
