using SharpTune.Models;
using SharpTune.Models.Llama2;
using SharpTune.Models.Llama2c;
using SharpTune.Modules;
using SharpTune.Native;
using static TorchSharp.torch;

namespace SharpTune.Tests.Models;

/// <summary>Writes a model in llama2.c's legacy layout (Meta's interleaved q/k rows) and imports it back.</summary>
public sealed class Llama2cRoundTripTests
{
    public Llama2cRoundTripTests() => TorchRuntime.EnsureLoaded();

    // Inverse of transformers' permute: rotate-half rows -> interleaved pairs, as Meta's checkpoints store them.
    private static Tensor ToInterleaved(Tensor w, long heads) =>
        w.view(heads, 2, w.shape[0] / heads / 2, w.shape[1]).transpose(1, 2).reshape(w.shape[0], w.shape[1]);

    private static void WriteLegacy(string path, TransformerDecoder m, bool tied)
    {
        var a = m.Args;
        var sd = m.state_dict();
        using var f = new BinaryWriter(File.Create(path));
        foreach (var h in new[] { a.EmbedDim, a.IntermediateDim, a.NumLayers, a.NumHeads, a.NumKvHeads, tied ? a.VocabSize : -a.VocabSize, a.MaxSeqLen })
            f.Write(h);
        void W(Tensor t) { foreach (var v in t.contiguous().data<float>()) f.Write(v); }
        void PerLayer(Func<int, Tensor> get) { for (var i = 0; i < a.NumLayers; i++) W(get(i)); }
        string L(int i, string k) => $"model.layers.{i}.{k}";
        W(sd["model.embed_tokens.weight"]);
        PerLayer(i => sd[L(i, "input_layernorm.weight")]);
        PerLayer(i => ToInterleaved(sd[L(i, "self_attn.q_proj.weight")], a.NumHeads));
        PerLayer(i => ToInterleaved(sd[L(i, "self_attn.k_proj.weight")], a.NumKvHeads));
        PerLayer(i => sd[L(i, "self_attn.v_proj.weight")]);
        PerLayer(i => sd[L(i, "self_attn.o_proj.weight")]);
        PerLayer(i => sd[L(i, "post_attention_layernorm.weight")]);
        PerLayer(i => sd[L(i, "mlp.gate_proj.weight")]);
        PerLayer(i => sd[L(i, "mlp.down_proj.weight")]);
        PerLayer(i => sd[L(i, "mlp.up_proj.weight")]);
        W(sd["model.norm.weight"]);
        W(full(a.MaxSeqLen * a.ResolvedHeadDim, float.NaN)); // freq_cis_real + imag: must be skipped, NaN proves it
        if (!tied) W(sd["lm_head.weight"]);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Read_LegacyExportOfAModel_ReproducesItsLogits(bool tied)
    {
        // Given a random GQA model written in llama2.c layout (negative vocab_size when untied)
        manual_seed(21);
        using var source = Llama2Models.Tiny(tieEmbeddings: tied);
        source.eval();
        using (no_grad()) foreach (var p in source.parameters()) p.add_(randn_like(p) * 0.1); // non-trivial norms
        var path = Path.GetTempFileName();
        try
        {
            WriteLegacy(path, source, tied);
            // When imported
            var imported = Llama2cImporter.Read(path);
            Assert.Equal(tied, imported.Config.TieWordEmbeddings);
            Assert.Equal(!tied, imported.StateDict.ContainsKey("lm_head.weight"));
            using var target = HfModels.FromConfig(imported.Config with { RmsNormEps = source.Args.NormEps });
            target.LoadStateDict(imported.StateDict, sourceName: path);
            target.eval();
            // Then the HF-layout model computes the same logits
            var tokens = randint(0, 64, [1, 9], dtype: ScalarType.Int64);
            using var _ = no_grad();
            Assert.True(target.Forward(tokens).allclose(source.Forward(tokens), rtol: 1e-4, atol: 1e-5));
        }
        finally { File.Delete(path); }
    }
}
