// The one-call API (Pretrained, Tune) on real data: stories260K converted by `sharptune convert llama2c` must give
// llama2.c's documented greedy sample through Pretrained.Generate, streamed text must add up to the same text,
// log-likelihoods must match the model's own log-softmax summed by hand, and Tune must run a recipe from YAML text
// with events and refuse a bad config before running anything.
using SharpTune.Config;
using SharpTune.Eval;
using SharpTune.Recipes;
using SharpTune.Tests.Recipes;
using TorchSharp;

namespace SharpTune.Tests.Facade;

public sealed class PretrainedTests(Stories260KFolder model) : IClassFixture<Stories260KFolder>
{
    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok, Stories260KFolder.Expected)]
    public void Generate_Stories260KGreedyFromBos_IsTheAuthorsDocumentedSample()
    {
        // Given the converted folder loaded in one call
        using var lm = Pretrained.Load(model.Path);

        // When generating greedily from BOS over the model's 256 positions, streaming the text
        var streamed = new List<string>();
        var text = lm.Generate("", new GenerationOptions { MaxNewTokens = 256 }, streamed.Add);

        // Then it is llama2.c's sample, and the streamed pieces add up to it
        Assert.Equal(File.ReadAllText(SharedData.PathOf(Stories260KFolder.Expected)).TrimEnd('\n'), text);
        Assert.True(streamed.Count > 10, $"only {streamed.Count} pieces were streamed");
        Assert.Equal(text, string.Concat(streamed));
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void LogLikelihood_Continuation_EqualsSumOfModelLogSoftmaxOverItsTokens()
    {
        using var lm = Pretrained.Load(model.Path);
        const string context = "Once upon a time, there was a";
        const string continuation = " little girl";

        var ll = lm.LogLikelihood(context, continuation);

        // Reference: one forward over context + continuation ids, log-softmax, pick each continuation id.
        var ctx = lm.Tokenizer.Encode(context, addBos: false, addEos: false);
        var whole = lm.Tokenizer.Encode(context + continuation, addBos: false, addEos: false);
        Assert.Equal(ctx, whole.Take(ctx.Count)); // the split is a token boundary, so both tokenisations agree
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var logits = lm.Model.forward(torch.tensor(whole.Select(t => (long)t).ToArray()).unsqueeze(0)); // [1, s, v]
        var logp = torch.nn.functional.log_softmax(logits.to_type(torch.ScalarType.Float64), -1);
        double expected = 0;
        for (var i = ctx.Count; i < whole.Count; i++) expected += logp[0, i - 1, whole[i]].item<double>();
        // float32 forward: each log-prob carries ~1e-6 relative error of a value of magnitude < 20, over 2-3 tokens.
        Assert.InRange(ll, expected - 1e-4, expected + 1e-4);
        Assert.True(ll < 0);
        Assert.True(lm.LogLikelihood(context, " little girl") > lm.LogLikelihood(context, " purple tractor"));
    }

    [Fact]
    public void Load_MissingFolder_NamesIt()
    {
        var e = Assert.Throws<DirectoryNotFoundException>(() => Pretrained.Load("/nonexistent/model-folder"));
        Assert.Contains("/nonexistent/model-folder", e.Message);
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void Load_CudaWithCpuNatives_SaysWhichPackageGivesCuda()
    {
        if (torch.cuda.is_available()) return; // a CUDA build on a GPU machine loads there
        var e = Assert.Throws<NotSupportedException>(() => Pretrained.Load(model.Path, new PretrainedOptions { Device = "cuda" }));
        Assert.Contains("SharpTune.Cuda instead of SharpTune", e.Message);
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void RunYaml_GenerateRecipe_ReportsTextThroughCallback()
    {
        var events = new List<RecipeEvent>();
        Tune.RunYaml("generate", $"checkpoint_dir: {model.Path}\nprompt: Once upon a time\nmax_new_tokens: 8\nthreads: 1", onEvent: events.Add);
        var info = events.Where(e => e.Kind == "info").Select(e => e.Message!).ToList();
        Assert.StartsWith("Once upon a time", info[0]);
        Assert.Contains(info, m => m.StartsWith("8 tokens in", StringComparison.Ordinal));
    }

    [Fact]
    public void RunYaml_UnknownKey_ThrowsConfigExceptionBeforeRunning()
    {
        var e = Assert.Throws<ConfigException>(() => Tune.RunYaml("generate", "checkpoint_dir: /nowhere\nmax_new_tokenz: 8"));
        Assert.Contains("max_new_tokenz", e.Message);
    }
}
