// Reader for Karpathy's llama2.c legacy checkpoint (export version 0, as written by export.py legacy_export and read
// by run.c read_checkpoint): 7 int32 header, then float32 weights. Produces HF-named tensors; q/k rows are permuted
// from Meta's interleaved rotary layout to HF's rotate-half layout as transformers' convert_llama_weights_to_hf
// permute() does (view(n, d/n/2, 2, in).transpose(1, 2)).
using SharpTune.Modules;
using static TorchSharp.torch;

namespace SharpTune.Models.Llama2c;

/// <summary>A llama2.c model as an HF config plus an HF-named state dict.</summary>
/// <param name="Config">model_type llama, rope_theta 10000, rms_norm_eps 1e-5 (run.c's constants).</param>
/// <param name="StateDict">float32 tensors keyed by HF names.</param>
public sealed record Llama2cModel(HfModelConfig Config, Dictionary<string, Tensor> StateDict);

/// <summary>Imports llama2.c <c>.bin</c> checkpoints.</summary>
public static class Llama2cImporter
{
    /// <summary>Reads <paramref name="binPath"/>; errors name the file and the expected vs actual size.</summary>
    public static Llama2cModel Read(string binPath)
    {
        if (!File.Exists(binPath)) throw new FileNotFoundException($"llama2.c checkpoint not found: {binPath}", binPath);
        var bytes = File.ReadAllBytes(binPath);
        if (bytes.Length < 28) throw new InvalidDataException($"{binPath}: {bytes.Length} bytes is shorter than the 28-byte llama2.c header");
        var header = new int[7];
        Buffer.BlockCopy(bytes, 0, header, 0, 28);
        var (dim, hidden, layers, heads, kvHeads, vocabSigned, seqLen) = (header[0], header[1], header[2], header[3], header[4], header[5], header[6]);
        if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || vocabSigned == 0 || seqLen <= 0
            || dim % heads != 0 || heads % kvHeads != 0 || (dim / heads) % 2 != 0)
            throw new InvalidDataException($"{binPath}: implausible llama2.c header dim={dim} hidden_dim={hidden} n_layers={layers} n_heads={heads} n_kv_heads={kvHeads} vocab_size={vocabSigned} seq_len={seqLen} (is this a version-0 legacy export?)");
        var shared = vocabSigned > 0; // negative vocab_size marks an untied classifier
        long vocab = Math.Abs(vocabSigned);
        long headDim = dim / heads, kvDim = (long)kvHeads * headDim;
        long expectedFloats = vocab * dim + layers * (2L * dim + (long)dim * dim * 2 + 2 * kvDim * dim + 3L * dim * hidden) + dim
            + seqLen * headDim + (shared ? 0 : vocab * dim);
        var expectedBytes = 28 + expectedFloats * 4;
        if (bytes.Length != expectedBytes)
            throw new InvalidDataException($"{binPath}: expected {expectedBytes} bytes for the header's shapes, file has {bytes.Length}");

        var offset = 28L;
        Tensor Take(params long[] shape)
        {
            var n = shape.Aggregate(1L, (a, b) => a * b);
            var data = new float[n];
            Buffer.BlockCopy(bytes, (int)offset, data, 0, (int)(n * 4));
            offset += n * 4;
            return tensor(data).reshape(shape);
        }
        var embed = Take(vocab, dim);
        var rmsAtt = Take(layers, dim);
        var wq = Take(layers, dim, dim);
        var wk = Take(layers, kvDim, dim);
        var wv = Take(layers, kvDim, dim);
        var wo = Take(layers, dim, dim);
        var rmsFfn = Take(layers, dim);
        var w1 = Take(layers, hidden, dim);
        var w2 = Take(layers, dim, hidden);
        var w3 = Take(layers, hidden, dim);
        var rmsFinal = Take(dim);
        offset += seqLen * headDim / 2 * 4 * 2; // freq_cis_real, freq_cis_imag: HF recomputes RoPE
        var sd = new Dictionary<string, Tensor> { ["model.embed_tokens.weight"] = embed, ["model.norm.weight"] = rmsFinal };
        if (!shared) sd["lm_head.weight"] = Take(vocab, dim);
        for (var i = 0; i < layers; i++)
        {
            var p = $"model.layers.{i}.";
            sd[p + "input_layernorm.weight"] = rmsAtt[i].clone();
            sd[p + "self_attn.q_proj.weight"] = PermuteToRotateHalf(wq[i], heads);
            sd[p + "self_attn.k_proj.weight"] = PermuteToRotateHalf(wk[i], kvHeads);
            sd[p + "self_attn.v_proj.weight"] = wv[i].clone();
            sd[p + "self_attn.o_proj.weight"] = wo[i].clone();
            sd[p + "post_attention_layernorm.weight"] = rmsFfn[i].clone();
            sd[p + "mlp.gate_proj.weight"] = w1[i].clone();
            sd[p + "mlp.down_proj.weight"] = w2[i].clone();
            sd[p + "mlp.up_proj.weight"] = w3[i].clone();
        }
        foreach (var t in new[] { rmsAtt, wq, wk, wv, wo, rmsFfn, w1, w2, w3 }) t.Dispose();

        var config = HfModelConfig.FromDecoderArgs(new DecoderArgs
        {
            VocabSize = (int)vocab, NumLayers = layers, NumHeads = heads, NumKvHeads = kvHeads, EmbedDim = dim,
            IntermediateDim = hidden, MaxSeqLen = seqLen, NormEps = 1e-5, RopeBase = 10_000, TieEmbeddings = shared,
        }, "llama", bosTokenId: 1, eosTokenIds: [2], torchDtype: "float32");
        return new Llama2cModel(config, sd);
    }

    /// <summary>
    /// Reorders the rows of a q/k weight [n*h_d, in] from interleaved pairs (2i, 2i+1) per head to rotate-half halves
    /// (i, i + h_d/2), as transformers' convert_llama_weights_to_hf permute does.
    /// </summary>
    public static Tensor PermuteToRotateHalf(Tensor w, long numHeads)
    {
        var rows = w.shape[0];
        var cols = w.shape[1];
        return w.view(numHeads, rows / numHeads / 2, 2, cols) // [n, h_d/2, 2, in]
            .transpose(1, 2) // -> [n, 2, h_d/2, in]
            .reshape(rows, cols) // -> [n*h_d, in]
            .contiguous();
    }
}
