// HF-style random initialisation (transformers' Llama/Qwen2 _init_weights): matrices N(0, 0.02), biases 0, norms 1,
// adapters untouched; `sharptune init` writes such a folder from a config.json and it loads back strictly.
// Statistical bounds: for n iid draws of N(0, s^2) the sample mean has standard deviation s/sqrt(n) and the sample
// standard deviation a relative one of 1/sqrt(2n); the tests allow 6 of those.
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Models;
using SharpTune.Modules;
using SharpTune.Modules.Peft;
using SharpTune.Native;
using SharpTune.Tests.Checkpointing;
using SharpTune.Tests.Cli;
using static TorchSharp.torch;

namespace SharpTune.Tests.Models;

public sealed class RandomInitTests
{
    private const string TinyQwen2 = """
        {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 1000, "hidden_size": 64,
         "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 256, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true,
         "initializer_range": 0.02, "torch_dtype": "bfloat16", "use_sliding_window": false, "hidden_act": "silu"}
        """;

    [Fact]
    public void HfStyle_LoraQwen2_MatricesNormal002BiasesZeroNormsOneAdaptersKept()
    {
        // Given a tiny Qwen2 (q/k/v biases, tied embeddings) with LoRA on q and v
        TorchRuntime.EnsureLoaded();
        var config = HfModelConfig.ParseJson(TinyQwen2);
        using var model = HfModels.FromConfig(config, new LoraOptions { AttnModules = ["q_proj", "v_proj"], Rank = 4 });
        var adaptersBefore = model.named_parameters().Where(p => Adapters.IsAdapterKey(p.name))
            .ToDictionary(p => p.name, p => p.parameter.detach().clone());

        // When it is initialised HF-style
        manual_seed(7);
        var globalBefore = rand(4);
        manual_seed(7);
        RandomInit.HfStyle(model, seed: 7);

        // Then every base matrix is N(0, 0.02), biases are 0, norms 1, and adapters are unchanged
        var checkedMatrices = 0;
        foreach (var (name, p) in model.named_parameters())
        {
            if (Adapters.IsAdapterKey(name)) Assert.True(p.equal(adaptersBefore[name]).all().item<bool>(), $"{name} changed");
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) Assert.Equal(0.0, p.abs().max().item<float>());
            else if (p.dim() == 1) Assert.True(p.eq(1).all().item<bool>(), $"{name} is not all ones");
            else
            {
                AssertNormal(name, p, RandomInit.HfStd);
                checkedMatrices++;
            }
        }
        Assert.Equal(1 + 2 * 7, checkedMatrices); // embedding (tied head is the same tensor) + 7 projections per layer
        // and libtorch's global generator did not move (a resumed run, which finds the weights, draws the same later)
        Assert.True(rand(4).equal(globalBefore).all().item<bool>(), "HfStyle advanced the global generator");
        Assert.True(model.OutputWeight.equal(model.named_parameters().First(p => p.name == "model.embed_tokens.weight").parameter).all().item<bool>(), "the tie was broken");
    }

    [Fact]
    public void InitVerb_ConfigJson_WritesFolderThatLoadsStrictlyWithHfStatistics()
    {
        // Given a config.json
        TorchRuntime.EnsureLoaded();
        using var tmp = new TempDir();
        var configPath = tmp.File("config.json");
        File.WriteAllText(configPath, TinyQwen2);
        var dir = tmp.File("model");

        // When `sharptune init` writes an fp32 folder from it
        var r = CliHarness.Run("init", configPath, dir, "--seed", "3", "--dtype", "fp32");
        Assert.True(r.ExitCode == 0, r.Err + r.Out);

        // Then the folder holds the config (dtype updated, other keys kept) and tied weights without lm_head
        Assert.Contains($"Wrote {Path.GetFullPath(dir)}:", r.Out);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
        Assert.Equal("float32", json["torch_dtype"]!.GetValue<string>());
        Assert.Equal("Qwen2ForCausalLM", json["architectures"]![0]!.GetValue<string>());
        using (var checkpoint = HfCheckpointer.Load(dir))
            Assert.DoesNotContain("lm_head.weight", checkpoint.StateDict.Keys);
        // and it loads strictly into the architecture, with HF-style statistics
        using var model = HfModels.FromConfig(HfModelConfig.Parse(Path.Combine(dir, "config.json")));
        HfCheckpointer.LoadInto(model, dir, strict: true);
        var state = model.state_dict();
        AssertNormal("model.embed_tokens.weight", state["model.embed_tokens.weight"], 0.02);
        AssertNormal("model.layers.1.mlp.down_proj.weight", state["model.layers.1.mlp.down_proj.weight"], 0.02);
        Assert.Equal(0.0, state["model.layers.0.self_attn.k_proj.bias"].abs().max().item<float>());
        // A fresh model: the first loss is close to ln(v) (logits have std 0.02 * sqrt(d) * rms(h) = 0.16, which adds
        // about 0.16^2 / 2 = 0.013 in expectation); N(0, 1) tied embeddings gave logits of std 8 and losses near 30.
        using var scope = NewDisposeScope();
        manual_seed(0);
        var tokens = randint(0, 1000, [2, 64]); // [b, s]
        using var noGrad = no_grad();
        var logits = model.Forward(tokens); // [b, s, v]
        var loss = nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, 1000), tokens[.., 1..].reshape(-1)).item<float>();
        Assert.InRange(loss, Math.Log(1000) - 0.1, Math.Log(1000) + 0.1);

        // and a second init into the same folder is refused without touching it
        var again = CliHarness.Run("init", configPath, dir);
        Assert.NotEqual(0, again.ExitCode);
        Assert.Contains("already holds a config.json", again.Err + again.Out);
    }

    private static void AssertNormal(string name, Tensor t, double std)
    {
        var n = t.numel();
        var f = t.to(ScalarType.Float64);
        var mean = f.mean().item<double>();
        var sd = f.std().item<double>();
        Assert.True(Math.Abs(mean) < 6 * std / Math.Sqrt(n), $"{name}: mean {mean:G4} over {n} draws");
        Assert.True(Math.Abs(sd / std - 1) < 6 / Math.Sqrt(2.0 * n), $"{name}: std {sd:G4}, expected {std} ({n} draws)");
    }
}
