// A minimal module whose state dict has Hugging Face keys, for checkpointer tests:
// model.embed_tokens.weight [v, d], model.layers.0.self_attn.q_proj.{weight,bias} [d, d]/[d], model.norm.weight [d],
// lm_head.weight [v, d] (optionally the same Parameter as the embedding, as tied models do).
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Tests.Checkpointing;

internal sealed class TinyHfModel : nn.Module
{
    public TinyHfModel(long vocab = 10, long dim = 4, bool tied = false, ScalarType dtype = ScalarType.Float32, long seed = 0) : base(nameof(TinyHfModel))
    {
        torch.manual_seed(seed);
        // No module is kept in a field or property: TorchSharp registers those by reflection under their own names.
        var embed = nn.Embedding(vocab, dim);
        register_module("model", new Inner(embed, dim));
        var head = nn.Linear(dim, vocab, hasBias: false);
        if (tied) head.weight = embed.weight!;
        register_module("lm_head", head);
        this.to(dtype);
    }

    private sealed class Inner : nn.Module
    {
        public Inner(Embedding embed, long dim) : base("inner")
        {
            register_module("embed_tokens", embed);
            var attn = new Attn(dim);
            var layer = new Wrap("self_attn", attn);
            var layers = nn.ModuleList(layer);
            register_module("layers", layers);
            register_module("norm", new Norm(dim));
        }
    }

    private sealed class Wrap : nn.Module
    {
        public Wrap(string name, nn.Module inner) : base("wrap") => register_module(name, inner);
    }

    private sealed class Attn : nn.Module
    {
        public Attn(long dim) : base("attn") => register_module("q_proj", nn.Linear(dim, dim));
    }

    private sealed class Norm : nn.Module
    {
        public Norm(long dim) : base("norm") => register_parameter("weight", new Parameter(torch.ones(dim)));
    }
}
