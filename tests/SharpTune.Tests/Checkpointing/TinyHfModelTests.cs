// Guards the test fixture itself: the tiny model must expose exactly the HF keys the checkpointer tests rely on.
using SharpTune.Native;

namespace SharpTune.Tests.Checkpointing;

public sealed class TinyHfModelTests
{
    [Fact]
    public void StateDict_TinyModel_HasHfKeys()
    {
        TorchRuntime.EnsureLoaded();
        using var m = new TinyHfModel();
        Assert.Equal(
            new[] { "lm_head.weight", "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight" },
            m.state_dict().Keys.Order(StringComparer.Ordinal));
    }
}
