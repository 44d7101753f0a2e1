// PEFT adapter interop: key names and adapter_config.json fields as PEFT writes them (peft utils/save_and_load.py,
// tuners/lora/config.py), checked both on our output and on a file assembled by hand the way PEFT lays it out.
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Checkpointing;

public sealed class PeftAdapterTests
{
    public PeftAdapterTests() => TorchRuntime.EnsureLoaded();

    private static byte[] Raw(Tensor t)
    {
        using var c = t.contiguous();
        return c.bytes.ToArray();
    }

    private static Dictionary<string, Tensor> LoraWeights(int r, bool dora)
    {
        var g = new Generator(11);
        var w = new Dictionary<string, Tensor>();
        foreach (var (module, inDim, outDim) in new[] { ("self_attn.q_proj", 8L, 8L), ("self_attn.v_proj", 8L, 4L), ("mlp.down_proj", 16L, 8L) })
        {
            var key = $"model.layers.0.{module}";
            w[$"{key}.lora_A.weight"] = torch.randn(new long[] { r, inDim }, generator: g);
            w[$"{key}.lora_B.weight"] = torch.randn(new long[] { outDim, r }, generator: g);
            if (dora) w[$"{key}.magnitude"] = torch.rand(new long[] { outDim }, generator: g);
        }
        return w;
    }

    [Theory]
    [InlineData("model.layers.3.self_attn.q_proj.lora_A.weight", "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight")]
    [InlineData("model.layers.3.mlp.gate_proj.lora_B.weight", "base_model.model.model.layers.3.mlp.gate_proj.lora_B.weight")]
    [InlineData("lm_head.lora_A.weight", "base_model.model.lm_head.lora_A.weight")]
    [InlineData("model.layers.0.self_attn.o_proj.magnitude", "base_model.model.model.layers.0.self_attn.o_proj.lora_magnitude_vector")]
    [InlineData("model.layers.0.self_attn.o_proj.lora_magnitude_vector.weight", "base_model.model.model.layers.0.self_attn.o_proj.lora_magnitude_vector")]
    public void ToPeftKey_ModelKey_PeftName(string modelKey, string peftKey) => Assert.Equal(peftKey, PeftAdapter.ToPeftKey(modelKey));

    [Fact]
    public void ToPeftKey_BaseWeight_Throws() =>
        Assert.Throws<ArgumentException>(() => PeftAdapter.ToPeftKey("model.layers.0.self_attn.q_proj.weight"));

    [Fact]
    public void Save_LoraAdapter_PeftKeysAndConfigFields()
    {
        using var dir = new TempDir();
        var weights = LoraWeights(r: 2, dora: false);
        var config = new PeftAdapterConfig
        {
            R = 2, LoraAlpha = 4, LoraDropout = 0.05, TargetModules = PeftAdapter.TargetModulesOf(weights.Keys),
            BaseModelNameOrPath = "meta-llama/Llama-3.2-1B-Instruct",
        };

        PeftAdapter.Save(dir.Path, weights, config);

        using (var file = SafetensorsFile.Open(dir.File("adapter_model.safetensors")))
        {
            Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", file.Keys);
            Assert.Contains("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight", file.Keys);
            Assert.Equal(6, file.Keys.Count);
        }
        var json = JsonNode.Parse(File.ReadAllText(dir.File("adapter_config.json")))!.AsObject();
        Assert.Equal(2, json["r"]!.GetValue<int>());
        Assert.Equal(4.0, json["lora_alpha"]!.GetValue<double>());
        Assert.Equal(0.05, json["lora_dropout"]!.GetValue<double>());
        Assert.Equal("LORA", json["peft_type"]!.GetValue<string>());
        Assert.Equal("CAUSAL_LM", json["task_type"]!.GetValue<string>());
        Assert.Equal("none", json["bias"]!.GetValue<string>());
        Assert.False(json["use_dora"]!.GetValue<bool>());
        Assert.Equal("meta-llama/Llama-3.2-1B-Instruct", json["base_model_name_or_path"]!.GetValue<string>());
        Assert.Equal(new[] { "down_proj", "q_proj", "v_proj" }, json["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
    }

    [Fact]
    public void SaveThenLoad_DoraAdapter_BitExactUnderModelKeys()
    {
        using var dir = new TempDir();
        var weights = LoraWeights(r: 4, dora: true);
        var config = new PeftAdapterConfig { R = 4, LoraAlpha = 8, UseDora = true, TargetModules = ["q_proj", "v_proj", "down_proj"] };

        PeftAdapter.Save(dir.Path, weights, config);
        var (back, loaded) = PeftAdapter.Load(dir.Path);

        using (var file = SafetensorsFile.Open(dir.File("adapter_model.safetensors")))
            Assert.Contains("base_model.model.model.layers.0.mlp.down_proj.lora_magnitude_vector", file.Keys);
        Assert.True(back.UseDora);
        Assert.Equal(4, back.R);
        Assert.Equal(9, loaded.Count);
        foreach (var (k, v) in weights)
        {
            var key = k.EndsWith(".magnitude") ? k[..^".magnitude".Length] + ".lora_magnitude_vector" : k;
            Assert.Equal(Raw(v), Raw(loaded[key]));
        }
    }

    [Fact]
    public void Save_RankDisagreesWithConfig_ThrowsNamingModule()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<CheckpointFormatException>(() =>
            PeftAdapter.Save(dir.Path, LoraWeights(r: 2, dora: false), new PeftAdapterConfig { R = 8, LoraAlpha = 16, TargetModules = ["q_proj", "v_proj", "down_proj"] }));
        Assert.Contains("'model.layers.0.self_attn.q_proj': lora_A [2, 8] / lora_B [8, 2] do not have rank r=8", e.Message);
        Assert.Empty(Directory.EnumerateFiles(dir.Path));
    }

    [Fact]
    public void Save_ModuleNotInTargetModules_Throws()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<CheckpointFormatException>(() =>
            PeftAdapter.Save(dir.Path, LoraWeights(r: 2, dora: false), new PeftAdapterConfig { R = 2, LoraAlpha = 4, TargetModules = ["q_proj", "v_proj"] }));
        Assert.Contains("module 'down_proj' is not in target_modules", e.Message);
    }

    [Fact]
    public void Load_FolderLaidOutByPeft_ReadsModelKeys()
    {
        // As peft's save_pretrained writes it: extra LoraConfig fields, unsorted target_modules, int lora_alpha,
        // and a safetensors file whose header is not in our writer's order.
        using var dir = new TempDir();
        File.WriteAllText(dir.File("adapter_config.json"), """
            {"alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "Qwen/Qwen2-0.5B", "bias": "none",
             "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true, "layers_pattern": null,
             "layers_to_transform": null, "loftq_config": {}, "lora_alpha": 16, "lora_dropout": 0.1,
             "megatron_config": null, "megatron_core": "megatron.core", "modules_to_save": null, "peft_type": "LORA",
             "r": 1, "rank_pattern": {}, "revision": null, "target_modules": ["v_proj", "q_proj"],
             "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false}
            """);
        const string header =
            "{\"base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]}," +
            "\"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[8,16]}," +
            "\"__metadata__\":{\"format\":\"pt\"}}";
        byte[] data = [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40]; // 1, 2, 3, 4
        File.WriteAllBytes(dir.File("adapter_model.safetensors"), SafetensorsSpecTests.Assemble(header, data));

        var (config, weights) = PeftAdapter.Load(dir.Path);

        Assert.Equal(1, config.R);
        Assert.Equal(16, config.LoraAlpha);
        Assert.Equal(0.1, config.LoraDropout);
        Assert.Equal("Qwen/Qwen2-0.5B", config.BaseModelNameOrPath);
        Assert.Equal(new[] { "v_proj", "q_proj" }, config.TargetModules);
        Assert.Equal(new[] { 1f, 2f }, weights["model.layers.0.self_attn.v_proj.lora_B.weight"].data<float>().ToArray());
        Assert.Equal(new[] { 3f, 4f }, weights["model.layers.0.self_attn.v_proj.lora_A.weight"].data<float>().ToArray());
    }

    [Theory]
    [InlineData("\"peft_type\": \"PREFIX_TUNING\", \"r\": 1, \"lora_alpha\": 1", "peft_type 'PREFIX_TUNING' is not supported")]
    [InlineData("\"peft_type\": \"LORA\", \"r\": 1, \"lora_alpha\": 1, \"use_rslora\": true", "use_rslora")]
    [InlineData("\"peft_type\": \"LORA\", \"r\": 1, \"lora_alpha\": 1, \"bias\": \"all\"", "bias 'all'")]
    [InlineData("\"peft_type\": \"LORA\", \"r\": 1, \"lora_alpha\": 1, \"rank_pattern\": {\"q_proj\": 4}", "rank_pattern")]
    [InlineData("\"peft_type\": \"LORA\", \"lora_alpha\": 1", "'r' must be a positive integer")]
    public void FromJson_UnsupportedSetting_ThrowsNamingIt(string body, string expected)
    {
        var e = Assert.Throws<CheckpointFormatException>(() =>
            PeftAdapterConfig.FromJson(JsonNode.Parse("{" + body + "}")!.AsObject(), "adapter_config.json"));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void HfSave_WithAdapter_WritesBothNextToWeights()
    {
        using var dir = new TempDir();
        using var norm = torch.ones(4);
        var weights = LoraWeights(r: 2, dora: false);
        var adapter = new PeftAdapterExport(new PeftAdapterConfig { R = 2, LoraAlpha = 4, TargetModules = PeftAdapter.TargetModulesOf(weights.Keys) }, weights);

        var folder = HfCheckpointer.Save(dir.Path, CheckpointTag.Epoch(0), new Dictionary<string, Tensor> { ["model.norm.weight"] = norm },
            new JsonObject { ["model_type"] = "llama" }, null, adapter);

        Assert.True(File.Exists(Path.Combine(folder, "adapter_model.safetensors")));
        Assert.True(File.Exists(Path.Combine(folder, "adapter_config.json")));
        Assert.Equal(6, PeftAdapter.Load(folder).Weights.Count);
    }
}
