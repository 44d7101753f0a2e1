// The `generate` recipe through `sharptune run generate` on stories260K converted with `convert llama2c`: the golden
// greedy sample documented by the model's author, prompts, seeded sampling and the token limit.
using System.Text.RegularExpressions;
using SharpTune.Tests.Cli;

namespace SharpTune.Tests.Recipes;

public sealed partial class GenerateRecipeTests(Stories260KFolder model) : IClassFixture<Stories260KFolder>
{
    private CliResult Generate(params string[] overrides) =>
        CliHarness.Run(["run", "generate", "--config", "generation", "checkpoint_dir=" + model.Path, "threads=1", .. overrides]);

    // The text the recipe printed (everything before the speed line).
    private static string Text(CliResult r) => SpeedLine().Split(r.Out)[0].TrimEnd('\n');

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok, Stories260KFolder.Expected)]
    public void RunGenerate_Stories260KGreedyFromBos_PrintsAuthorsDocumentedSample()
    {
        // Given stories260K converted to an HF folder by `sharptune convert llama2c`
        // When generating greedily from BOS (empty prompt) over 256 positions, as `./run stories260K.bin -t 0.0`
        var r = Generate("prompt=", "temperature=0", "max_new_tokens=256");

        // Then the printed text is the sample in llama2.c's doc/stories260K.md, followed by the speed
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Equal(File.ReadAllText(SharedData.PathOf(Stories260KFolder.Expected)).TrimEnd('\n'), Text(r));
        var speed = SpeedLine().Match(r.Out);
        Assert.True(speed.Success, r.Out);
        Assert.True(double.Parse(speed.Groups["tps"].Value, System.Globalization.CultureInfo.InvariantCulture) > 0);
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void RunGenerate_Prompt_ContinuesThePromptText()
    {
        var r = Generate("prompt=Once upon a time, there was a dog", "max_new_tokens=12");
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.StartsWith("Once upon a time, there was a dog", Text(r));
        Assert.True(Text(r).Length > "Once upon a time, there was a dog".Length);
        Assert.Contains("12 tokens in", r.Out);
        Assert.Contains("prompt 11 tokens", r.Out); // BOS + the 10 pieces `sharptune tokenize` shows for this text
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void RunGenerate_SeededSampling_SameSeedRepeatsAndOtherSeedDiffers()
    {
        string Sample(int seed)
        {
            var r = Generate("prompt=Once upon a time", "temperature=1.0", "top_k=40", "top_p=0.95", $"seed={seed}", "max_new_tokens=40");
            Assert.True(r.ExitCode == 0, r.Err);
            return Text(r);
        }
        var a = Sample(1);
        Assert.Equal(a, Sample(1));
        Assert.NotEqual(a, Sample(2));
        // sampling at temperature 1 does not reproduce the greedy continuation
        var greedy = Generate("prompt=Once upon a time", "max_new_tokens=40");
        Assert.NotEqual(Text(greedy), a);
    }

    [Fact]
    public void RunGenerate_NegativeTemperature_ConfigErrorNamesKey()
    {
        var r = CliHarness.Run("run", "generate", "--config", "generation", "checkpoint_dir=/nonexistent", "temperature=-1");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("temperature must be >= 0", r.Err);
    }

    [Fact]
    public void RunGenerate_MissingFolder_OneLineError()
    {
        var r = CliHarness.Run("run", "generate", "--config", "generation", "checkpoint_dir=/nonexistent/model");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("checkpoint_dir not found: /nonexistent/model", r.Err);
    }

    [GeneratedRegex(@"\n?(?<n>\d+) tokens in [\d.]+ s: (?<tps>[\d.]+) tokens/s")]
    private static partial Regex SpeedLine();
}
