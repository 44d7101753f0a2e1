using SharpTune.Models;
using SharpTune.Models.Qwen2;
using SharpTune.Native;

namespace SharpTune.Tests.Models;

public sealed class HfModelConfigTests
{
    // Qwen/Qwen2-0.5B config.json as published
    private const string Qwen2_0_5B = """
        {"architectures":["Qwen2ForCausalLM"],"attention_dropout":0.0,"bos_token_id":151643,"eos_token_id":151643,
         "hidden_act":"silu","hidden_size":896,"initializer_range":0.02,"intermediate_size":4864,"max_position_embeddings":131072,
         "max_window_layers":24,"model_type":"qwen2","num_attention_heads":14,"num_hidden_layers":24,"num_key_value_heads":2,
         "rms_norm_eps":1e-06,"rope_theta":1000000.0,"sliding_window":131072,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
         "transformers_version":"4.40.1","use_cache":true,"use_sliding_window":false,"vocab_size":151936}
        """;

    [Fact]
    public void ParseJson_PublishedQwen2Config_GivesBuilderArchitecture()
    {
        var cfg = HfModelConfig.ParseJson(Qwen2_0_5B);
        // torchtune's builder caps max_seq_len at 32768; everything else must equal the builder
        Assert.Equal(Qwen2Models.Qwen2_0_5BArgs() with { MaxSeqLen = 131_072 }, cfg.ToDecoderArgs());
        Assert.Equal([151643], cfg.EosTokenIds);
    }

    [Fact]
    public void ToJson_ThenParse_RoundTrips()
    {
        var cfg = HfModelConfig.FromDecoderArgs(SharpTune.Models.Llama3.Llama3Models.Llama3_1_8BArgs(), "llama", 128000, [128001, 128009], "bfloat16");
        var again = HfModelConfig.ParseJson(cfg.ToJson());
        Assert.Equal(cfg.ToDecoderArgs(), again.ToDecoderArgs());
        Assert.Equal(cfg.EosTokenIds, again.EosTokenIds);
        Assert.Equal("bfloat16", again.TorchDtype);
    }

    [Theory]
    [InlineData("\"use_sliding_window\":false", "\"use_sliding_window\":true", "'use_sliding_window'")]
    [InlineData("\"use_cache\":true", "\"use_cache\":true,\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}", "'rope_scaling.rope_type' is 'yarn'")]
    [InlineData("\"use_cache\":true", "\"use_cache\":true,\"quantization_config\":{}", "'quantization_config'")]
    [InlineData("\"model_type\":\"qwen2\"", "\"model_type\":\"mistral\"", "'model_type' is 'mistral'")]
    [InlineData("\"hidden_act\":\"silu\"", "\"hidden_act\":\"gelu\"", "'hidden_act' is 'gelu'")]
    [InlineData("\"hidden_size\":896,", "", "'hidden_size' is missing")]
    [InlineData("\"vocab_size\":151936}", "\"vocab_size\":151936", "invalid JSON")]
    [InlineData("\"eos_token_id\":151643", "\"eos_token_id\":[151643,\"x\"]", "'eos_token_id' must be an integer or a list")]
    [InlineData("\"use_cache\":true", "\"use_cache\":true,\"layer_types\":[\"full_attention\",\"sliding_attention\"]", "'layer_types'")]
    public void ParseJson_UnsupportedOrBadField_ErrorNamesFieldAndFile(string from, string to, string expected)
    {
        var json = Qwen2_0_5B.Replace(from, to);
        Assert.NotEqual(Qwen2_0_5B, json);
        var e = Assert.ThrowsAny<Exception>(() => HfModelConfig.ParseJson(json, "my/config.json"));
        Assert.True(e is NotSupportedException or InvalidDataException, e.GetType().Name);
        Assert.Contains("my/config.json", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void FromConfig_Qwen2Tiny_BuildsModelWithBiasAndTiedOutput()
    {
        TorchRuntime.EnsureLoaded();
        var cfg = HfModelConfig.ParseJson(Qwen2_0_5B) with { VocabSize = 50, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 1, NumAttentionHeads = 4, NumKeyValueHeads = 2 };
        using var m = HfModels.FromConfig(cfg);
        Assert.Contains("model.layers.0.self_attn.v_proj.bias", m.state_dict().Keys);
        Assert.Null(m.LmHead);
    }
}
