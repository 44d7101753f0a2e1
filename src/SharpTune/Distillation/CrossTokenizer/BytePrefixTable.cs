// The teacher vocabulary as a table of byte prefixes, for marginalising a distribution over pieces to a distribution
// over the next byte (Losses/ByteMarginalKdLoss.cs). Every proper prefix s of a piece's bytes (including the empty one)
// is a node; a node lists each piece v whose bytes start with s and are longer than s, with the byte that follows s in
// v. Summing the teacher's probabilities of a node's pieces by that byte gives the (unnormalised) next-byte
// distribution after s. Pieces that spell no bytes (special/control tokens, the unknown piece, unused ids) are in no
// node: they get no byte mass. Byte-fallback pieces <0xNN> are the byte NN, SentencePiece's U+2581 a space
// (Tokenizers/TokenPieces.cs). Entries in all: the total length of the vocabulary's pieces (about 7 per piece for the
// large BPE vocabularies), built once per teacher tokenizer and shared by every loss that uses it.
using System.Runtime.CompilerServices;
using System.Text;
using SharpTune.Tokenizers;

namespace SharpTune.Distillation.CrossTokenizer;

/// <summary>The byte-prefix nodes of a vocabulary and the pieces that continue each one.</summary>
public sealed class BytePrefixTable
{
    /// <summary>The node of the empty prefix (every piece that spells bytes, grouped by its first byte).</summary>
    public const int EmptyPrefix = 0;

    /// <summary>Index of "no byte" in <see cref="FirstByte"/> (a 257th column that is dropped).</summary>
    public const int NoByte = 256;

    private static readonly ConditionalWeakTable<ITokenPieces, BytePrefixTable> s_cache = [];
    private readonly byte[][] _bytes;
    private readonly int[][] _pieceNodes; // _pieceNodes[v][j]: node of bytes(v)[..j], j < |bytes(v)|
    private readonly int[] _nodeStart;    // entries of node n: [_nodeStart[n], _nodeStart[n + 1])
    private readonly int[] _entryPiece;
    private readonly byte[] _entryByte;

    private BytePrefixTable(byte[][] bytes, int[][] pieceNodes, int[] nodeStart, int[] entryPiece, byte[] entryByte)
    {
        _bytes = bytes;
        _pieceNodes = pieceNodes;
        _nodeStart = nodeStart;
        _entryPiece = entryPiece;
        _entryByte = entryByte;
        FirstByte = [.. bytes.Select(b => b.Length == 0 ? (long)NoByte : b[0])];
    }

    /// <summary>Number of ids of the vocabulary.</summary>
    public int VocabSize => _bytes.Length;

    /// <summary>Number of prefix nodes.</summary>
    public int NodeCount => _nodeStart.Length - 1;

    /// <summary>Each id's first byte, or <see cref="NoByte"/> for an id that spells no bytes [v].</summary>
    public long[] FirstByte { get; }

    /// <summary>The table of <paramref name="vocabulary"/>, built on first use and kept while the tokenizer lives.</summary>
    public static BytePrefixTable For(ITokenPieces vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        return s_cache.GetValue(vocabulary, Build);
    }

    /// <summary>Builds the table of <paramref name="vocabulary"/> (no cache).</summary>
    public static BytePrefixTable Build(ITokenPieces vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        var bytes = new byte[vocabulary.VocabSize][];
        for (var id = 0; id < bytes.Length; id++)
        {
            var p = vocabulary.PieceOf(id);
            bytes[id] = p.Kind is TokenPieceKind.Text or TokenPieceKind.ByteFallback ? p.Bytes : [];
        }
        // Node ids by prefix (bytes as a Latin-1 string: one char per byte, so equal strings are equal byte strings).
        var nodes = new Dictionary<string, int>(StringComparer.Ordinal) { [""] = EmptyPrefix };
        var entries = new List<List<(int Piece, byte Next)>> { new() };
        var pieceNodes = new int[bytes.Length][];
        for (var v = 0; v < bytes.Length; v++)
        {
            var b = bytes[v];
            pieceNodes[v] = new int[b.Length];
            for (var j = 0; j < b.Length; j++)
            {
                var key = Encoding.Latin1.GetString(b, 0, j);
                if (!nodes.TryGetValue(key, out var node))
                {
                    node = entries.Count;
                    nodes.Add(key, node);
                    entries.Add([]);
                }
                pieceNodes[v][j] = node;
                entries[node].Add((v, b[j]));
            }
        }
        var nodeStart = new int[entries.Count + 1];
        for (var n = 0; n < entries.Count; n++) nodeStart[n + 1] = nodeStart[n] + entries[n].Count;
        var entryPiece = new int[nodeStart[^1]];
        var entryByte = new byte[nodeStart[^1]];
        for (var n = 0; n < entries.Count; n++)
            for (var k = 0; k < entries[n].Count; k++)
                (entryPiece[nodeStart[n] + k], entryByte[nodeStart[n] + k]) = entries[n][k];
        return new BytePrefixTable(bytes, pieceNodes, nodeStart, entryPiece, entryByte);
    }

    /// <summary>The bytes id <paramref name="piece"/> spells (empty for an id that spells none).</summary>
    public ReadOnlySpan<byte> BytesOf(int piece) => _bytes[piece];

    /// <summary>The node of the first <paramref name="prefixLength"/> bytes of <paramref name="piece"/>
    /// (0 &lt;= prefixLength &lt; its length).</summary>
    public int NodeOf(int piece, int prefixLength)
    {
        var nodes = _pieceNodes[piece];
        if ((uint)prefixLength >= (uint)nodes.Length)
            throw new ArgumentOutOfRangeException(nameof(prefixLength), prefixLength,
                $"piece {piece} spells {nodes.Length} bytes: a proper prefix has 0..{nodes.Length - 1} of them");
        return nodes[prefixLength];
    }

    /// <summary>The pieces that continue node <paramref name="node"/>'s prefix, and the byte each puts after it.</summary>
    public (ReadOnlyMemory<int> Pieces, ReadOnlyMemory<byte> NextBytes) Continuations(int node)
    {
        var (from, to) = (_nodeStart[node], _nodeStart[node + 1]);
        return (_entryPiece.AsMemory(from, to - from), _entryByte.AsMemory(from, to - from));
    }
}
