// The `sharptune` command. One class per verb lives in Commands/; register new verbs below, one line each.
using SharpTune.Cli.Commands;
using Spectre.Console.Cli;

namespace SharpTune.Cli;

internal static class Program
{
    private static int Main(string[] args)
    {
        // Before anything can touch TorchSharp: libgomp reads OMP_WAIT_POLICY once, when libtorch loads.
        SharpTune.Native.TorchRuntime.PrepareEnvironment();
        // First Ctrl-C asks the running verb to stop cleanly (recipes still run Cleanup); a second one kills.
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            if (cancel.IsCancellationRequested) return;
            e.Cancel = true;
            cancel.Cancel();
        };
        CliServices services;
        try { services = CliServices.CreateDefault(); }
        catch (InvalidOperationException e)
        {
            // A recipe or component declared against the contract (see docs/configs.md): say which, in one place.
            Console.Error.WriteLine($"error: the recipe/component registry is invalid:{Environment.NewLine}{e.Message}");
            return 1;
        }
        // Dataset configs may name a Hub dataset id; the library resolves it through this (cached) downloader while
        // the command runs.
        using var resolver = SharpTune.Data.DataSources.UseResolver(services.CreateDatasetResolver());
        return Build(services).Run(args, cancel.Token);
    }

    /// <summary>The command app wired to <paramref name="services"/> (tests pass captured consoles).</summary>
    internal static CommandApp Build(CliServices services)
    {
        var app = new CommandApp();
        app.Configure(config =>
        {
            services.Configure(config);
            config.SetApplicationVersion(BuildInfo.Text());
            config.AddCommand<LsCommand>("ls").WithDescription("List recipes and their shipped configs");
            config.AddCommand<CpCommand>("cp").WithDescription("Copy a shipped config (or a recipe's source) to edit it");
            config.AddCommand<CatCommand>("cat").WithDescription("Print a shipped config");
            config.AddCommand<ValidateCommand>("validate").WithDescription("Check a config (with overrides) and report every problem");
            config.AddCommand<RunCommand>("run").WithDescription("Validate a config, then run a recipe with it");
            config.AddCommand<AblateCommand>("ablate").WithDescription("Run an ablation study: arms through the recipes, resume, report");
            config.AddCommand<DemoCommand>("demo").WithDescription("Run the built-in demo study (synthetic task, teacher from scratch, KD) in minutes");
            config.AddCommand<DownloadCommand>("download").WithDescription("Download a model or dataset repo from the Hugging Face Hub");
            config.AddCommand<EvalCompareCommand>("eval").WithDescription("Show a saved results.json, or compare several side by side (--compare)");
            config.AddCommand<CacheInfoCommand>("cache-info").WithDescription("Describe a teacher top-k cache folder (tokens, k, bytes/token, teacher, hashes)");
            config.AddCommand<InitCommand>("init").WithDescription("Write an HF model folder with random weights (N(0, 0.02)) at the shape a config.json describes");
            config.AddCommand<TokenizeCommand>("tokenize").WithDescription("Print token ids, pieces and (with --chat, a JSON message array) the loss mask as JSON");
            config.AddCommand<DecodeCommand>("decode").WithDescription("Print the text of token ids (the inverse of tokenize)");
            config.AddBranch("convert", convert =>
            {
                convert.SetDescription("Convert checkpoints from other formats into Hugging Face folders");
                convert.AddCommand<ConvertLlama2cCommand>("llama2c").WithDescription("llama2.c model.bin + tokenizer.model -> HF Llama folder");
                convert.AddCommand<ConvertDtypeCommand>("dtype").WithDescription("HF folder -> the same folder with its float weights in another dtype (--dtype bfloat16)");
            });
        });
        return app;
    }
}
