// config.json sizes that cannot describe a model are errors naming the file, the key and the value (not DecoderArgs's
// "NumHeads must be positive", which names neither).
using SharpTune.Models;

namespace SharpTune.Tests.Models;

public sealed class HfModelConfigSizeTests
{
    private const string Valid = """
        {"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5,
         "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 512, "eos_token_id": 2}
        """;

    [Theory]
    [InlineData("\"num_attention_heads\": 8", "\"num_attention_heads\": 0", "'num_attention_heads' must be a positive integer, got 0")]
    [InlineData("\"hidden_size\": 64", "\"hidden_size\": -64", "'hidden_size' must be a positive integer, got -64")]
    [InlineData("\"vocab_size\": 512", "\"vocab_size\": 0", "'vocab_size' must be a positive integer, got 0")]
    [InlineData("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3", "'num_key_value_heads' must divide num_attention_heads (8), got 3")]
    [InlineData("\"hidden_size\": 64", "\"hidden_size\": 60", "'hidden_size' must be a multiple of num_attention_heads (8) when head_dim is absent, got 60")]
    public void ParseJson_ImpossibleSize_NamesFileKeyAndValue(string original, string replacement, string expected)
    {
        var json = Valid.Replace(original, replacement, StringComparison.Ordinal);
        Assert.NotEqual(Valid, json);

        var e = Assert.Throws<InvalidDataException>(() => HfModelConfig.ParseJson(json, "/models/x/config.json"));

        Assert.Equal($"/models/x/config.json: {expected}", e.Message);
    }

    [Fact]
    public void ParseJson_ValidSizes_Parse()
    {
        var c = HfModelConfig.ParseJson(Valid);
        Assert.Equal((8, 4, 64), (c.NumAttentionHeads, c.NumKeyValueHeads, c.HiddenSize));
    }
}
