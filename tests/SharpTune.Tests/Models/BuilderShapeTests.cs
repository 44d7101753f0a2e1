using SharpTune.Models;
using SharpTune.Models.Llama3;
using SharpTune.Models.Qwen2;
using SharpTune.Modules;
using SharpTune.Modules.Peft;
using SharpTune.Native;
using static TorchSharp.torch;

namespace SharpTune.Tests.Models;

/// <summary>Full-size builders on libtorch's meta device (shapes only, no memory) against published parameter counts.</summary>
public sealed class BuilderShapeTests
{
    private static readonly Device Meta = new(TorchSharp.DeviceType.META);

    public BuilderShapeTests() => TorchRuntime.EnsureLoaded();

    [Fact]
    public void Llama3_1_8B_OnMeta_Has8030261248Parameters()
    {
        using var m = Llama3Models.Llama3_1_8B(Meta);
        Assert.True(m.OutputWeight.is_meta);
        Assert.Equal(8_030_261_248L, ModuleParameters.Count(m));
        Assert.Contains("lm_head.weight", m.state_dict().Keys);
    }

    [Fact]
    public void Llama3_2_1B_OnMeta_Has1235814400Parameters()
    {
        using var m = Llama3Models.Llama3_2_1B(Meta);
        Assert.Equal(1_235_814_400L, ModuleParameters.Count(m));
        Assert.DoesNotContain("lm_head.weight", m.state_dict().Keys);
    }

    [Fact]
    public void LoraLlama3_2_1B_SeedKdConfig_Has42467328TrainableParameters()
    {
        // torchtune's llama3_2/8B_to_1B_KD_lora_single_device: q_proj, v_proj, output_proj + MLP, rank 64, alpha 128
        using var m = Llama3Models.LoraLlama3_2_1B(["q_proj", "v_proj", "output_proj"], applyLoraToMlp: true,
            applyLoraToOutput: false, loraRank: 64, loraAlpha: 128, device: Meta);
        Assert.Equal(42_467_328L, ModuleParameters.CountTrainable(m));
        Assert.Equal(1_235_814_400L + 42_467_328L, ModuleParameters.Count(m));
    }

    [Fact]
    public void LoraQwen2_0_5B_SeedKdConfig_Has16809984TrainableParameters()
    {
        // torchtune's qwen2/1.5_to_0.5B_KD_lora_single_device: rank 32, alpha 64, same modules
        using var m = Qwen2Models.LoraQwen2_0_5B(["q_proj", "v_proj", "output_proj"], applyLoraToMlp: true,
            loraRank: 32, loraAlpha: 64, device: Meta);
        Assert.Equal(16_809_984L, ModuleParameters.CountTrainable(m));
    }

    [Fact]
    public void Qwen2_1_5B_OnMeta_HasQkvBiasAndPublishedSize()
    {
        using var m = Qwen2Models.Qwen2_1_5B(Meta);
        var keys = m.state_dict().Keys.ToHashSet();
        Assert.Contains("model.layers.27.self_attn.k_proj.bias", keys);
        Assert.DoesNotContain("model.layers.0.self_attn.o_proj.bias", keys);
        // Qwen2-1.5B: 1,543,714,304 parameters (tied embeddings), the count of the published safetensors.
        Assert.Equal(1_543_714_304L, ModuleParameters.Count(m));
    }

    [Theory]
    [InlineData("llama3_1_70b", 70_553_706_496L)]
    [InlineData("llama3_2_3b", 3_212_749_824L)]
    [InlineData("qwen2_0_5b", 494_032_768L)]
    [InlineData("qwen2_7b", 7_615_616_512L)]
    [InlineData("qwen2_5_3b", 3_085_938_688L)]
    [InlineData("qwen2_5_7b", 7_615_616_512L)]
    [InlineData("qwen2_5_14b", 14_770_033_664L)]
    public void Builder_OnMeta_MatchesPublishedParameterCount(string name, long expected)
    {
        // Counts as transformers reports them for the published checkpoints (model cards: 70.6B, 3.21B, 0.49B, 7.61B, 3.09B, 14.7B)
        using var m = name switch
        {
            "llama3_1_70b" => Llama3Models.Llama3_1_70B(Meta),
            "llama3_2_3b" => Llama3Models.Llama3_2_3B(Meta),
            "qwen2_0_5b" => Qwen2Models.Qwen2_0_5B(Meta),
            "qwen2_7b" => Qwen2Models.Qwen2_7B(Meta),
            "qwen2_5_3b" => Qwen2Models.Qwen2_5_3B(Meta),
            "qwen2_5_7b" => Qwen2Models.Qwen2_5_7B(Meta),
            "qwen2_5_14b" => Qwen2Models.Qwen2_5_14B(Meta),
            _ => throw new ArgumentException(name),
        };
        Assert.Equal(expected, ModuleParameters.Count(m));
    }

    [Fact]
    public void Llama3Args_MatchPublishedConfigJson()
    {
        // Values from meta-llama/Llama-3.2-1B config.json
        var cfg = HfModelConfig.ParseJson("""
            {"architectures":["LlamaForCausalLM"],"attention_bias":false,"attention_dropout":0.0,"bos_token_id":128000,
             "eos_token_id":128001,"head_dim":64,"hidden_act":"silu","hidden_size":2048,"initializer_range":0.02,
             "intermediate_size":8192,"max_position_embeddings":131072,"mlp_bias":false,"model_type":"llama",
             "num_attention_heads":32,"num_hidden_layers":16,"num_key_value_heads":8,"pretraining_tp":1,"rms_norm_eps":1e-05,
             "rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},
             "rope_theta":500000.0,"tie_word_embeddings":true,"torch_dtype":"bfloat16","transformers_version":"4.45.0.dev0","use_cache":true,"vocab_size":128256}
            """, "Llama-3.2-1B/config.json");
        Assert.Equal(Llama3Models.Llama3_2_1BArgs() with { HeadDim = 64 }, cfg.ToDecoderArgs());
    }
}
