// Small deterministic models and a tokenizer for evaluation tests. TableLm's logits are simple enough to recompute
// by hand in plain C# doubles (the independent reference for scoring tests); TinyAttentionLm is a one-layer
// attention model with learned positions, so it is sensitive to the mask and the position ids the scorer passes.
using System.Text;
using SharpTune.Eval;
using SharpTune.Native;
using SharpTune.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Eval;

/// <summary>
/// Byte-level tokenizer with extra multi-byte pieces matched greedily (longest first), so that
/// encode(a + b) can differ from encode(a) + encode(b) the way BPE does. Ids: 0..255 bytes, then the pieces, then BOS, EOS.
/// </summary>
internal sealed class GreedyTestTokenizer : ITokenizer
{
    private readonly byte[][] _pieces;

    public GreedyTestTokenizer(params string[] pieces) =>
        _pieces = pieces.Select(p => Encoding.UTF8.GetBytes(p)).ToArray();

    public int VocabSize => 256 + _pieces.Length + 2;
    public int BosId => 256 + _pieces.Length;
    public int EosId => BosId + 1;
    public int PadId => 0;
    public IReadOnlyList<int> StopTokens => [EosId];

    public int PieceId(string piece) =>
        256 + Array.FindIndex(_pieces, p => p.AsSpan().SequenceEqual(Encoding.UTF8.GetBytes(piece)));

    public IReadOnlyList<int> Encode(string text, bool addBos = true, bool addEos = true)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var ids = new List<int>();
        if (addBos) ids.Add(BosId);
        var i = 0;
        while (i < bytes.Length)
        {
            var best = -1;
            for (var p = 0; p < _pieces.Length; p++)
                if (_pieces[p].Length > 1 && i + _pieces[p].Length <= bytes.Length
                    && bytes.AsSpan(i, _pieces[p].Length).SequenceEqual(_pieces[p])
                    && (best < 0 || _pieces[p].Length > _pieces[best].Length))
                    best = p;
            if (best >= 0) { ids.Add(256 + best); i += _pieces[best].Length; }
            else ids.Add(bytes[i++]);
        }
        if (addEos) ids.Add(EosId);
        return ids;
    }

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        var bytes = new List<byte>();
        foreach (var id in ids)
        {
            if (id < 256) bytes.Add((byte)id);
            else if (id < 256 + _pieces.Length) bytes.AddRange(_pieces[id - 256]);
            else if (!skipSpecialTokens) bytes.AddRange(Encoding.UTF8.GetBytes(id == BosId ? "<s>" : "</s>"));
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}

/// <summary>
/// logits[q] = A[token_q] + P[pos_q] + mean over attended k of B[token_k]: causal by default, honours mask and
/// positions, and is recomputable by hand (<see cref="ReferenceRowLogits"/>).
/// </summary>
internal sealed class TableLm : ICausalLm
{
    public double[,] A { get; }
    public double[,] P { get; }
    public double[,] B { get; }
    public int Vocab { get; }
    public int MaxSeqLen { get; }

    public TableLm(int vocab, int maxSeqLen, int seed)
    {
        Vocab = vocab;
        MaxSeqLen = maxSeqLen;
        var rng = new Random(seed);
        A = Fill(vocab, vocab, rng, 2.0);
        P = Fill(maxSeqLen, vocab, rng, 1.0);
        B = Fill(vocab, vocab, rng, 1.0);
    }

    private static double[,] Fill(int r, int c, Random rng, double scale)
    {
        var m = new double[r, c];
        for (var i = 0; i < r; i++)
            for (var j = 0; j < c; j++) m[i, j] = (rng.NextDouble() * 2 - 1) * scale;
        return m;
    }

    private static Tensor ToTensor(double[,] m) => torch.tensor(m.Cast<double>().ToArray(), new long[] { m.GetLength(0), m.GetLength(1) });

    public Tensor Logits(Tensor tokens, Tensor? mask, Tensor? inputPos)
    {
        TorchRuntime.EnsureLoaded();
        var b = tokens.shape[0];
        var s = tokens.shape[1];
        if (s > MaxSeqLen) throw new ArgumentException($"sequence {s} longer than {MaxSeqLen}");
        var pos = inputPos ?? torch.arange(s, dtype: ScalarType.Int64).expand(b, s);
        var m = (mask ?? torch.ones(s, s, dtype: ScalarType.Bool).tril().expand(b, s, s)).to_type(ScalarType.Float64); // [b, s, s]
        var a = ToTensor(A).index_select(0, tokens.reshape(-1)).reshape(b, s, Vocab);   // [b, s, v]
        var p = ToTensor(P).index_select(0, pos.reshape(-1)).reshape(b, s, Vocab);      // [b, s, v]
        var bt = ToTensor(B).index_select(0, tokens.reshape(-1)).reshape(b, s, Vocab);  // [b, s, v]
        var mean = m.matmul(bt) / m.sum(-1, keepdim: true);                               // [b, s, v]
        return a + p + mean;
    }

    /// <summary>Logits of one causal row with positions 0..n-1, in plain doubles.</summary>
    public double[][] ReferenceRowLogits(IReadOnlyList<int> row)
    {
        var result = new double[row.Count][];
        for (var q = 0; q < row.Count; q++)
        {
            result[q] = new double[Vocab];
            for (var v = 0; v < Vocab; v++)
            {
                double mean = 0;
                for (var k = 0; k <= q; k++) mean += B[row[k], v];
                result[q][v] = A[row[q], v] + P[q, v] + mean / (q + 1);
            }
        }
        return result;
    }

    /// <summary>log softmax of one logit vector at one index, in plain doubles.</summary>
    public static double LogSoftmaxAt(double[] logits, int index)
    {
        var max = logits.Max();
        var lse = max + Math.Log(logits.Sum(x => Math.Exp(x - max)));
        return logits[index] - lse;
    }
}

/// <summary>A one-layer, single-head attention LM with learned position embeddings (float64 by default).</summary>
internal sealed class TinyAttentionLm : ICausalLm
{
    private readonly Tensor _emb, _pos, _wq, _wk, _wv, _wo, _out;
    private readonly int _dim;

    /// <summary>Tokens passed through <see cref="Logits"/> so far (padding included).</summary>
    public long TokensSeen { get; private set; }

    public int MaxSeqLen { get; }

    public TinyAttentionLm(int vocab, int maxSeqLen, int dim = 32, long seed = 1, ScalarType dtype = ScalarType.Float64)
    {
        TorchRuntime.EnsureLoaded();
        MaxSeqLen = maxSeqLen;
        _dim = dim;
        var g = new Generator((ulong)seed);
        Tensor R(long r, long c, double scale) => (torch.randn(r, c, generator: g, dtype: ScalarType.Float64) * scale).to_type(dtype).DetachFromDisposeScope();
        _emb = R(vocab, dim, 1.0);
        _pos = R(maxSeqLen, dim, 1.0);
        _wq = R(dim, dim, 1.0 / Math.Sqrt(dim));
        _wk = R(dim, dim, 1.0 / Math.Sqrt(dim));
        _wv = R(dim, dim, 1.0 / Math.Sqrt(dim));
        _wo = R(dim, dim, 1.0 / Math.Sqrt(dim));
        _out = R(dim, vocab, 2.0 / Math.Sqrt(dim));
    }

    public Tensor Logits(Tensor tokens, Tensor? mask, Tensor? inputPos)
    {
        var b = tokens.shape[0];
        var s = tokens.shape[1];
        if (s > MaxSeqLen) throw new ArgumentException($"sequence {s} longer than {MaxSeqLen}");
        TokensSeen += b * s;
        var pos = inputPos ?? torch.arange(s, dtype: ScalarType.Int64).expand(b, s);
        var m = mask ?? torch.ones(s, s, dtype: ScalarType.Bool).tril().expand(b, s, s);           // [b, s, s]
        var h = _emb.index_select(0, tokens.reshape(-1)).reshape(b, s, _dim)
              + _pos.index_select(0, pos.reshape(-1)).reshape(b, s, _dim);                         // [b, s, d]
        var q = h.matmul(_wq);
        var k = h.matmul(_wk);
        var v = h.matmul(_wv);
        var scores = q.matmul(k.transpose(1, 2)) / Math.Sqrt(_dim);                                 // [b, s, s]
        scores = scores.masked_fill(m.logical_not(), double.NegativeInfinity);
        var attn = torch.nn.functional.softmax(scores, -1).matmul(v);                               // [b, s, d]
        var x = h + attn.matmul(_wo);
        return torch.tanh(x).matmul(_out);                                                           // [b, s, v]
    }
}
