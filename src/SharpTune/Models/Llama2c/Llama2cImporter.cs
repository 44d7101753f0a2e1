// Reader for Karpathy's llama2.c legacy checkpoint (export version 0, as written by export.py legacy_export and read
// by run.c read_checkpoint): 7 int32 header, then float32 weights. Produces HF-named tensors; q/k rows are permuted
// from Meta's interleaved rotary layout to HF's rotate-half layout as transformers' convert_llama_weights_to_hf
// permute() does (view(n, d/n/2, 2, in).transpose(1, 2)).
using System.Runtime.InteropServices;
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
        var fileLength = new FileInfo(binPath).Length;
        if (fileLength < 28) throw new InvalidDataException($"{binPath}: {fileLength} bytes is shorter than the 28-byte llama2.c header");
        using var fs = new FileStream(binPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        var header = new int[7];
        fs.ReadExactly(MemoryMarshal.AsBytes(header.AsSpan()));
        var (dim, hidden, layers, heads, kvHeads, vocabSigned, seqLen) = (header[0], header[1], header[2], header[3], header[4], header[5], header[6]);
        if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || vocabSigned == 0 || seqLen <= 0
            || dim % heads != 0 || heads % kvHeads != 0 || (dim / heads) % 2 != 0)
            throw new InvalidDataException($"{binPath}: implausible llama2.c header dim={dim} hidden_dim={hidden} n_layers={layers} n_heads={heads} n_kv_heads={kvHeads} vocab_size={vocabSigned} seq_len={seqLen} (is this a version-0 legacy export?)");
        var shared = vocabSigned > 0; // negative vocab_size marks an untied classifier
        long vocab = Math.Abs((long)vocabSigned);
        long headDim = dim / heads, kvDim = kvHeads * headDim;
        var expectedFloats = vocab * dim + layers * (2L * dim + 2L * dim * dim + 2 * kvDim * dim + 3L * dim * hidden) + dim
            + seqLen * headDim + (shared ? 0 : vocab * dim);
        var expectedBytes = 28 + expectedFloats * 4;
        if (fileLength != expectedBytes)
            throw new InvalidDataException($"{binPath}: expected {expectedBytes} bytes for the header's shapes, file has {fileLength}");

        // Read tensor by tensor (per layer), so memory stays at one copy of the model.
        Tensor Take(long rows, long cols = 1)
        {
            var data = new float[rows * cols];
            fs.ReadExactly(MemoryMarshal.AsBytes(data.AsSpan()));
            var t = tensor(data);
            return cols == 1 ? t : t.reshape(rows, cols);
        }
        var sd = new Dictionary<string, Tensor> { ["model.embed_tokens.weight"] = Take(vocab, dim) };
        string Key(int i, string name) => $"model.layers.{i}.{name}";
        void PerLayer(string name, long rows, long cols, Func<Tensor, Tensor>? transform = null)
        {
            for (var i = 0; i < layers; i++)
            {
                var t = Take(rows, cols);
                sd[Key(i, name)] = transform is null ? t : transform(t);
            }
        }
        PerLayer("input_layernorm.weight", dim, 1);
        PerLayer("self_attn.q_proj.weight", dim, dim, w => PermuteToRotateHalf(w, heads));
        PerLayer("self_attn.k_proj.weight", kvDim, dim, w => PermuteToRotateHalf(w, kvHeads));
        PerLayer("self_attn.v_proj.weight", kvDim, dim);
        PerLayer("self_attn.o_proj.weight", dim, dim);
        PerLayer("post_attention_layernorm.weight", dim, 1);
        PerLayer("mlp.gate_proj.weight", hidden, dim);
        PerLayer("mlp.down_proj.weight", dim, hidden);
        PerLayer("mlp.up_proj.weight", hidden, dim);
        sd["model.norm.weight"] = Take(dim);
        fs.Seek(seqLen * headDim / 2 * 4 * 2, SeekOrigin.Current); // freq_cis_real, freq_cis_imag: RoPE is recomputed
        if (!shared) sd["lm_head.weight"] = Take(vocab, dim);

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
