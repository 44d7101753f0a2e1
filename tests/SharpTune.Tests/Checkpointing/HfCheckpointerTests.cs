// HF checkpoint folders: save layout, bit-exact round trips, strict loading into a module, tied heads, pruning and
// atomic replacement.
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Checkpointing;

public sealed class HfCheckpointerTests
{
    public HfCheckpointerTests() => TorchRuntime.EnsureLoaded();

    private static byte[] Raw(Tensor t)
    {
        using var c = t.contiguous();
        return c.bytes.ToArray();
    }

    private static JsonObject Config() => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"),
        ["model_type"] = "llama",
        ["hidden_size"] = 4,
        ["vocab_size"] = 10,
        ["torch_dtype"] = "bfloat16",
    };

    /// <summary>A source HF folder with config and tokenizer files (contents are arbitrary bytes).</summary>
    private static string MakeSource(TempDir dir)
    {
        var src = Path.Combine(dir.Path, "source");
        Directory.CreateDirectory(Path.Combine(src, "original"));
        File.WriteAllText(Path.Combine(src, "config.json"), Config().ToJsonString());
        File.WriteAllText(Path.Combine(src, "tokenizer.json"), "{\"tok\": 1}");
        File.WriteAllText(Path.Combine(src, "tokenizer_config.json"), "{}");
        File.WriteAllText(Path.Combine(src, "generation_config.json"), "{\"do_sample\": true}");
        File.WriteAllBytes(Path.Combine(src, "original", "tokenizer.model"), [1, 2, 3]);
        File.WriteAllText(Path.Combine(src, "unrelated.txt"), "not copied");
        return src;
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Save_ThenLoad_BitExactWithHfLayout(ScalarType dtype)
    {
        using var dir = new TempDir();
        var source = MakeSource(dir);
        using var model = new TinyHfModel(dtype: dtype, seed: 3);
        var sd = model.state_dict();
        var ckpt = new HfCheckpointer(source, Path.Combine(dir.Path, "out"));

        var folder = ckpt.Save(CheckpointTag.Epoch(0), sd);

        Assert.Equal(Path.Combine(dir.Path, "out", "epoch_0"), folder);
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(folder, f)).Order(StringComparer.Ordinal);
        Assert.Equal(new[] { "config.json", "generation_config.json", "model.safetensors", "original/tokenizer.model", "tokenizer.json", "tokenizer_config.json" }, files);
        Assert.Equal(File.ReadAllBytes(Path.Combine(source, "original", "tokenizer.model")), File.ReadAllBytes(Path.Combine(folder, "original", "tokenizer.model")));
        using var loaded = HfCheckpointer.Load(folder);
        Assert.Equal(dtype == ScalarType.Float32 ? "float32" : "bfloat16", loaded.Config["torch_dtype"]!.GetValue<string>());
        Assert.Equal("llama", loaded.Config["model_type"]!.GetValue<string>());
        Assert.Equal(sd.Keys.Order(StringComparer.Ordinal), loaded.StateDict.Keys.Order(StringComparer.Ordinal));
        foreach (var (k, v) in sd) Assert.Equal(Raw(v), Raw(loaded.StateDict[k]));
    }

    [Fact]
    public void Save_TinyShardLimit_ShardsWithIndexAndLoadsBack()
    {
        using var dir = new TempDir();
        using var model = new TinyHfModel(seed: 5);
        var sd = model.state_dict();

        var folder = HfCheckpointer.Save(dir.Path, CheckpointTag.Step(40), sd, Config(), sourceFolder: null, maxShardBytes: 100);

        Assert.EndsWith("step_40", folder);
        Assert.True(File.Exists(Path.Combine(folder, "model.safetensors.index.json")));
        Assert.True(Directory.EnumerateFiles(folder, "model-*-of-*.safetensors").Count() >= 3);
        using var fresh = new TinyHfModel(seed: 99);
        HfCheckpointer.LoadInto(fresh, folder);
        var back = fresh.state_dict();
        foreach (var (k, v) in sd) Assert.Equal(Raw(v), Raw(back[k]));
    }

    [Fact]
    public void LoadInto_MatchingModule_WritesIntoTheModelsParameters()
    {
        using var dir = new TempDir();
        using var trained = new TinyHfModel(seed: 1);
        var folder = HfCheckpointer.Save(dir.Path, CheckpointTag.Epoch(1), trained.state_dict(), Config(), null);
        using var model = new TinyHfModel(seed: 2);
        var param = model.named_parameters().First(p => p.name == "model.layers.0.self_attn.q_proj.weight").parameter;

        var report = HfCheckpointer.LoadInto(model, folder);

        Assert.Empty(report.MissingKeys);
        Assert.Empty(report.UnexpectedKeys);
        Assert.Equal(Raw(trained.state_dict()["model.layers.0.self_attn.q_proj.weight"]), Raw(param));
        Assert.True(param.requires_grad);
    }

    [Fact]
    public void LoadInto_ManyProblems_OneErrorListsEveryProblemAndLoadsNothing()
    {
        using var dir = new TempDir();
        var folder = Path.Combine(dir.Path, "bad");
        Directory.CreateDirectory(folder);
        using var qw = torch.zeros(5, 4);                       // model expects [4, 4]
        using var qb = torch.zeros(new long[] { 4 }, ScalarType.BFloat16); // model expects Float32
        using var extra = torch.zeros(2);
        using var emb = torch.zeros(10, 4);
        SafetensorsWriter.SaveSharded(folder, new Dictionary<string, Tensor>
        {
            ["model.layers.0.self_attn.q_proj.weight"] = qw,
            ["model.layers.0.self_attn.q_proj.bias"] = qb,
            ["model.layers.0.self_attn.k_proj.weight"] = extra,
            ["model.embed_tokens.weight"] = emb,
        });
        using var model = new TinyHfModel(seed: 4);
        var before = Raw(model.state_dict()["model.embed_tokens.weight"]);

        var e = Assert.Throws<CheckpointFormatException>(() => HfCheckpointer.LoadInto(model, folder));

        Assert.Equal(folder, e.FilePath);
        Assert.Contains("(5 problems)", e.Message);
        Assert.Contains("missing from checkpoint: 'lm_head.weight' (model expects [10, 4] Float32)", e.Message);
        Assert.Contains("missing from checkpoint: 'model.norm.weight'", e.Message);
        Assert.Contains("shape mismatch: 'model.layers.0.self_attn.q_proj.weight': checkpoint [5, 4] in model.safetensors, model [4, 4]", e.Message);
        Assert.Contains("dtype mismatch: 'model.layers.0.self_attn.q_proj.bias': checkpoint BF16 in model.safetensors, model Float32", e.Message);
        Assert.Contains("unexpected in checkpoint: 'model.layers.0.self_attn.k_proj.weight' in model.safetensors", e.Message);
        Assert.Equal(before, Raw(model.state_dict()["model.embed_tokens.weight"]));
    }

    [Fact]
    public void LoadInto_NotStrict_ReportsMissingAndUnexpected()
    {
        using var dir = new TempDir();
        using var w = torch.ones(10, 4);
        using var extra = torch.ones(1);
        SafetensorsWriter.SaveSharded(dir.Path, new Dictionary<string, Tensor> { ["model.embed_tokens.weight"] = w, ["rotary.inv_freq"] = extra });
        using var model = new TinyHfModel();

        var report = HfCheckpointer.LoadInto(model, dir.Path, strict: false);

        Assert.Contains("model.norm.weight", report.MissingKeys);
        Assert.Equal(new[] { "rotary.inv_freq" }, report.UnexpectedKeys);
        using var sum = model.state_dict()["model.embed_tokens.weight"].sum();
        Assert.Equal(40f, sum.item<float>());
    }

    [Fact]
    public void LoadInto_ConvertDtype_CastsBf16IntoFloat32Model()
    {
        using var dir = new TempDir();
        using var src = new TinyHfModel(dtype: ScalarType.BFloat16, seed: 8);
        var folder = HfCheckpointer.Save(dir.Path, CheckpointTag.Epoch(0), src.state_dict(), Config(), null);
        using var model = new TinyHfModel(seed: 9);

        HfCheckpointer.LoadInto(model, folder, convertDtype: true);

        using var expected = src.state_dict()["model.embed_tokens.weight"].to(ScalarType.Float32);
        Assert.Equal(Raw(expected), Raw(model.state_dict()["model.embed_tokens.weight"]));
    }

    [Fact]
    public void Save_TiedHead_WritesEmbeddingOnceAndLoadsBackTied()
    {
        using var dir = new TempDir();
        using var model = new TinyHfModel(tied: true, seed: 6);

        var folder = HfCheckpointer.Save(dir.Path, CheckpointTag.Epoch(0), model.state_dict(), Config(), null);

        using (var file = SafetensorsFile.Open(Path.Combine(folder, "model.safetensors")))
            Assert.DoesNotContain("lm_head.weight", file.Keys);
        using var fresh = new TinyHfModel(tied: true, seed: 7);
        var report = HfCheckpointer.LoadInto(fresh, folder);
        Assert.Empty(report.MissingKeys);
        Assert.Equal(Raw(model.state_dict()["model.embed_tokens.weight"]), Raw(fresh.state_dict()["lm_head.weight"]));
    }

    [Fact]
    public void Save_StateDictWithLoraKeys_Throws()
    {
        using var dir = new TempDir();
        using var a = torch.zeros(2, 4);
        var e = Assert.Throws<ArgumentException>(() => HfCheckpointer.Save(dir.Path, CheckpointTag.Epoch(0),
            new Dictionary<string, Tensor> { ["model.layers.0.self_attn.q_proj.lora_A.weight"] = a }, Config(), null));
        Assert.Contains("merge them", e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
    }

    [Fact]
    public void Save_KeepLastTwo_PrunesOlderOfEachKindOnly()
    {
        using var dir = new TempDir();
        var source = MakeSource(dir);
        var output = Path.Combine(dir.Path, "out");
        Directory.CreateDirectory(Path.Combine(output, "logs"));
        using var w = torch.ones(2);
        var sd = new Dictionary<string, Tensor> { ["model.norm.weight"] = w };
        var ckpt = new HfCheckpointer(source, output, keepLastNCheckpoints: 2);

        ckpt.Save(CheckpointTag.Step(100), sd);
        foreach (var epoch in new[] { 0, 1, 2, 10 }) ckpt.Save(CheckpointTag.Epoch(epoch), sd);

        var left = Directory.EnumerateDirectories(output).Select(Path.GetFileName).Order(StringComparer.Ordinal);
        Assert.Equal(new[] { "epoch_10", "epoch_2", "logs", "step_100" }, left);
    }

    [Fact]
    public void Prune_KeptFolderOlderThanNewest_IsNeverDeletedAndNoTrashLeft()
    {
        // Given the folder a committed state names (step_8) and two newer ones a killed run left (step_10, step_12)
        using var dir = new TempDir();
        foreach (var step in new[] { 8, 10, 12 })
            File.WriteAllText(Path.Combine(Directory.CreateDirectory(Path.Combine(dir.Path, $"step_{step}")).FullName, "model.safetensors"), "x");

        // When pruning to one
        var deleted = HfCheckpointer.Prune(dir.Path, 1, keep: ["step_8"]);

        // Then the named folder and the newest stay, and nothing hidden is left
        Assert.Equal(new[] { Path.Combine(dir.Path, "step_10") }, deleted);
        Assert.Equal(new[] { "step_12", "step_8" }, Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Save_FailsAfterWeightsWritten_OldCheckpointIntactAndNoTempLeft()
    {
        using var dir = new TempDir();
        using var old = torch.ones(3);
        var folder = HfCheckpointer.Save(dir.Path, CheckpointTag.Epoch(1), new Dictionary<string, Tensor> { ["model.norm.weight"] = old }, Config(), null);
        var oldBytes = File.ReadAllBytes(Path.Combine(folder, "model.safetensors"));
        using var fresh = torch.zeros(3);
        using var loraA = torch.zeros(8, 3); // rank 8, but the config says 4: the adapter write fails after the weights
        using var loraB = torch.zeros(3, 8);
        var adapter = new PeftAdapterExport(new PeftAdapterConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj"] },
            new Dictionary<string, Tensor> { ["model.layers.0.self_attn.q_proj.lora_A.weight"] = loraA, ["model.layers.0.self_attn.q_proj.lora_B.weight"] = loraB });

        Assert.Throws<CheckpointFormatException>(() => HfCheckpointer.Save(dir.Path, CheckpointTag.Epoch(1),
            new Dictionary<string, Tensor> { ["model.norm.weight"] = fresh }, Config(), null, adapter));

        Assert.Equal(oldBytes, File.ReadAllBytes(Path.Combine(folder, "model.safetensors")));
        Assert.Equal(new[] { "epoch_1" }, Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void Save_SameTagAgain_ReplacesWholeFolder()
    {
        using var dir = new TempDir();
        using var a = torch.ones(3);
        HfCheckpointer.Save(dir.Path, CheckpointTag.Epoch(0), new Dictionary<string, Tensor> { ["a"] = a }, Config(), null, maxShardBytes: 4);
        using var b = torch.zeros(3);

        var folder = HfCheckpointer.Save(dir.Path, CheckpointTag.Epoch(0), new Dictionary<string, Tensor> { ["b"] = b }, Config(), null);

        Assert.Equal(new[] { "config.json", "model.safetensors" }, Directory.EnumerateFiles(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(new[] { "epoch_0" }, Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void AtomicWrite_ActionThrows_OriginalFileIntactNoTempFile()
    {
        using var dir = new TempDir();
        var path = dir.File("model.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);

        Assert.Throws<IOException>(() => AtomicFile.Write(path, fs =>
        {
            fs.Write(new byte[1000]);
            throw new IOException("disk full");
        }));

        Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(path));
        Assert.Equal(new[] { "model.safetensors" }, Directory.EnumerateFiles(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void Load_MissingConfig_ThrowsNamingFolder()
    {
        using var dir = new TempDir();
        using var a = torch.ones(1);
        SafetensorsWriter.SaveSharded(dir.Path, new Dictionary<string, Tensor> { ["a"] = a });
        var e = Assert.Throws<CheckpointFormatException>(() => HfCheckpointer.Load(dir.Path).Dispose());
        Assert.Equal(dir.Path, e.FilePath);
        Assert.Contains("config.json not found", e.Message);
    }

    [Fact]
    public void LoadInto_CheckpointFilesDisagreeWithFolder_ThrowsListingBoth()
    {
        using var dir = new TempDir();
        using var model = new TinyHfModel(seed: 1);
        var folder = HfCheckpointer.Save(dir.Path, CheckpointTag.Epoch(0), model.state_dict(), Config(), null, maxShardBytes: 100);
        var shards = Directory.EnumerateFiles(folder, "model-*.safetensors").Select(Path.GetFileName).ToList();
        var good = HfCheckpointer.FullModelHfCheckpointer(folder, dir.File("out"), checkpointFiles: shards!, modelType: "LLAMA3_2");
        var bad = new HfCheckpointer(folder, dir.File("out"), checkpointFiles: ["model.safetensors"]);

        good.LoadInto(model);
        var e = Assert.Throws<CheckpointFormatException>(() => bad.LoadInto(model));

        Assert.Contains("checkpoint_files [model.safetensors] do not match the folder's weight files [model-00001-of-", e.Message);
    }

    [Fact]
    public void FullModelHfCheckpointer_UnknownModelTypeOrRecipeCheckpoint_Throws()
    {
        Assert.Throws<ArgumentException>(() => HfCheckpointer.FullModelHfCheckpointer("in", "out", modelType: "GPT2"));
        Assert.Throws<NotSupportedException>(() => HfCheckpointer.FullModelHfCheckpointer("in", "out", recipeCheckpoint: "recipe_state.pt"));
    }

    [Fact]
    public void LoadInto_StrictWithSavedRotaryInvFreq_IgnoresItButReportsIt()
    {
        using var dir = new TempDir();
        using var model = new TinyHfModel(seed: 1);
        var sd = new Dictionary<string, Tensor>(model.state_dict());
        using var invFreq = torch.ones(2);
        sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = invFreq;
        SafetensorsWriter.SaveSharded(dir.Path, sd);

        var report = HfCheckpointer.LoadInto(model, dir.Path);

        Assert.Equal(new[] { "model.layers.0.self_attn.rotary_emb.inv_freq" }, report.UnexpectedKeys);
    }
}
