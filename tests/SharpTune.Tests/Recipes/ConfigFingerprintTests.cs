// The config fingerprint a training run saves in its recipe state: which changes a resume refuses (data order, model)
// and which it allows with a warning, each listed old -> new.
using SharpTune.Config;
using SharpTune.Recipes.Support;

namespace SharpTune.Tests.Recipes;

public sealed class ConfigFingerprintTests
{
    private const string Yaml = """
        output_dir: runs/x
        seed: 1
        batch_size: 4
        shuffle: true
        model:
          embed_dim: 32
          lora_rank: 8
          lora_attn_modules: [q_proj, v_proj]
        optimizer:
          lr: 0.001
        epochs: 1
        resume_from_checkpoint: false
        """;

    private static ConfigFingerprint Of(params string[] overrides) => ConfigFingerprint.Of(SharpTuneConfig.FromYaml(Yaml, overrides: overrides));

    [Fact]
    public void ChangesTo_ListsLeavesOldToNew_AndSurvivesJson()
    {
        var saved = ConfigFingerprint.FromJson(Of().ToJson(), "test");

        var changes = saved.ChangesTo(Of("optimizer.lr=0.01", "model.lora_attn_modules=[q_proj]"));

        Assert.Equal(["model.lora_attn_modules[1]: v_proj -> (absent)", "optimizer.lr: 0.001 -> 0.01"], changes.Select(c => c.ToString()));
        Assert.Equal(Of().Hash, saved.Hash);
    }

    [Theory]
    [InlineData("batch_size=2", "batch_size: 4 -> 2")]
    [InlineData("seed=2", "seed: 1 -> 2")]
    [InlineData("shuffle=false", "shuffle: true -> false")]
    [InlineData("model.lora_rank=16", "model.lora_rank: 8 -> 16")]
    [InlineData("validation_split=0.1", "validation_split: (absent) -> 0.1")] // it decides which samples are trained on
    public void CheckResume_DataOrderOrModelChanged_RefusesListingOldAndNew(string change, string listed)
    {
        var e = Assert.Throws<ConfigException>(() => ConfigFingerprint.CheckResume(Of(), Of(change, "optimizer.lr=0.01"), "/runs/x/recipe_state"));

        Assert.Contains(listed, e.Message);
        Assert.Contains("/runs/x/recipe_state", e.Message);
        Assert.Contains("also changed, which a resume allows: optimizer.lr: 0.001 -> 0.01", e.Message);
    }

    [Fact]
    public void CheckResume_OnlyAllowedKeysChanged_ReturnsThemAndIgnoresTheResumeFlag()
    {
        var changes = ConfigFingerprint.CheckResume(Of(), Of("optimizer.lr=0.01", "epochs=3", "resume_from_checkpoint=true"), "state");

        Assert.Equal(["epochs: 1 -> 3", "optimizer.lr: 0.001 -> 0.01"], changes.Select(c => c.ToString()));
    }
}
