// `convert dtype`: an HF folder's float weights cast (bfloat16 keeps 8 significant bits: |error| <= 2^-8 |w|), config.json's
// torch_dtype updated, other files copied, integer tensors kept, the source folder refused as the target.
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Checkpointing;

public sealed class DtypeConverterTests
{
    [Fact]
    public void Convert_Float32ToBfloat16_CastsWithinBf16RoundingAndCopiesTheRest()
    {
        using var dir = new TempDir();
        var src = dir.File("src");
        Directory.CreateDirectory(src);
        using var w = torch.randn(16, 8, generator: new torch.Generator(3));
        using var ids = torch.arange(5, dtype: ScalarType.Int64);
        SafetensorsWriter.Save(Path.Combine(src, SafetensorsWriter.SingleFileName), new Dictionary<string, Tensor> { ["a.weight"] = w, ["b.ids"] = ids });
        File.WriteAllText(Path.Combine(src, "config.json"), """{"model_type": "llama", "torch_dtype": "float32"}""");
        File.WriteAllText(Path.Combine(src, "tokenizer.model"), "tok");

        var result = DtypeConverter.Convert(src, dir.File("out"), "bfloat16");

        Assert.Equal((1, 1), (result.Converted, result.Kept));
        using var back = SafetensorsCheckpoint.Open(dir.File("out"));
        using var a = back.Load("a.weight");
        Assert.Equal(ScalarType.BFloat16, a.dtype);
        using var af = a.to_type(ScalarType.Float32);
        var original = w.data<float>().ToArray();
        var cast = af.data<float>().ToArray();
        for (var i = 0; i < original.Length; i++)
            Assert.True(Math.Abs(cast[i] - original[i]) <= Math.Abs(original[i]) / 256, $"element {i}: {original[i]} -> {cast[i]}");
        using var b = back.Load("b.ids");
        Assert.Equal(ScalarType.Int64, b.dtype);
        Assert.Equal("bfloat16", JsonNode.Parse(File.ReadAllText(Path.Combine(dir.File("out"), "config.json")))!["torch_dtype"]!.GetValue<string>());
        Assert.Equal("tok", File.ReadAllText(Path.Combine(dir.File("out"), "tokenizer.model")));
    }

    [Fact]
    public void Convert_IntoItsOwnFolderOrUnknownDtype_Refused()
    {
        using var dir = new TempDir();
        Assert.Contains("another folder", Assert.Throws<ArgumentException>(() => DtypeConverter.Convert(dir.Path, dir.Path + "/", "bfloat16")).Message, StringComparison.Ordinal);
        Assert.Contains("bf16", Assert.Throws<ArgumentException>(() => DtypeConverter.Convert(dir.Path, dir.File("o"), "bf16")).Message, StringComparison.Ordinal);
    }
}
