// `sharptune convert llama2c`: the folder it writes loads back (strictly) into a model that computes the same logits as
// the in-memory import, carries the tokenizer and generation config, and a failed conversion leaves no folder.
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Models;
using SharpTune.Models.Llama2c;
using SharpTune.Native;
using SharpTune.Tests.Checkpointing;
using static TorchSharp.torch;

namespace SharpTune.Tests.Cli;

public sealed class ConvertLlama2cCommandTests
{
    private const string Bin = "models/stories260K/stories260K.bin";
    private const string Tok = "models/stories260K/tok512.model";

    [SharedDataFact(Bin, Tok)]
    public void Convert_Stories260K_FolderLoadsToSameLogitsAsImport()
    {
        // Given stories260K converted by the CLI
        TorchRuntime.EnsureLoaded();
        using var tmp = new TempDir();
        var dir = tmp.File("hf");
        var r = CliHarness.Run("convert", "llama2c", SharedData.PathOf(Bin), SharedData.PathOf(Tok), dir);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("260,032 parameters", r.Out);

        // Then the folder has the HF files, a config transformers-style readers parse, and the tokenizer bytes
        Assert.Equal(new[] { "config.json", "generation_config.json", "model.safetensors", "tokenizer.model" },
            Directory.GetFiles(dir).Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToArray());
        var config = HfModelConfig.Parse(Path.Combine(dir, "config.json"));
        Assert.Equal((64, 5, 8, 4, 512, 1), (config.HiddenSize, config.NumHiddenLayers, config.NumAttentionHeads, config.NumKeyValueHeads, config.VocabSize, config.BosTokenId));
        Assert.Equal(File.ReadAllBytes(SharedData.PathOf(Tok)), File.ReadAllBytes(Path.Combine(dir, "tokenizer.model")));
        var generation = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "generation_config.json")))!;
        Assert.Equal([2, 1], generation["eos_token_id"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray());

        // and loading it strictly gives the same logits as the importer's in-memory weights
        using var fromFolder = HfModels.FromConfig(config);
        HfCheckpointer.LoadInto(fromFolder, dir, strict: true);
        var imported = Llama2cImporter.Read(SharedData.PathOf(Bin));
        using var direct = HfModels.FromConfig(imported.Config);
        direct.LoadStateDict(imported.StateDict);
        using var scope = NewDisposeScope();
        var tokens = tensor(new long[] { 1, 403, 407, 261, 378, 30, 62 }).unsqueeze(0); // [1, 7]
        using var noGrad = no_grad();
        Assert.True(fromFolder.Forward(tokens).equal(direct.Forward(tokens)).all().item<bool>());
    }

    [SharedDataFact(Bin, "tokenizers/llama2/tokenizer.model")]
    public void Convert_TokenizerOfAnotherVocabulary_FailsAndWritesNoFolder()
    {
        using var tmp = new TempDir();
        var dir = tmp.File("hf");
        var r = CliHarness.Run("convert", "llama2c", SharedData.PathOf(Bin), SharedData.PathOf("tokenizers/llama2/tokenizer.model"), dir);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("tokenizer has 32000 tokens but", r.Err);
        Assert.Contains("vocab_size 512", r.Err);
        Assert.False(Directory.Exists(dir));
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
    }

    [Fact]
    public void Convert_MissingModel_OneLineError()
    {
        using var tmp = new TempDir();
        var r = CliHarness.Run("convert", "llama2c", tmp.File("nope.bin"), tmp.File("tok.model"), tmp.File("out"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("llama2.c checkpoint not found", r.Err);
    }
}
