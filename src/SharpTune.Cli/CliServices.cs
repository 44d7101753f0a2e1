// What every command needs, injected through Spectre's registrar: the output and error consoles, the recipe and
// component registries, the shipped configs, and environment lookup (so tests need not touch process state).
// Also renders failures as one line (`error: ...`) instead of stack traces.
using System.Reflection;
using SharpTune.Config;
using SharpTune.Hub;
using SharpTune.Recipes;
using Spectre.Console;
using Spectre.Console.Cli;

namespace SharpTune.Cli;

/// <summary>Shared services of the CLI.</summary>
internal sealed class CliServices(IAnsiConsole output, IAnsiConsole error, RecipeRegistry recipes, ConfigCatalog configs,
    Func<string, string?> environment)
{
    /// <summary>Where results go (stdout).</summary>
    public IAnsiConsole Out { get; } = output;

    /// <summary>Where problems and warnings go (stderr).</summary>
    public IAnsiConsole Err { get; } = error;

    /// <summary>Recipes and components.</summary>
    public RecipeRegistry Recipes { get; } = recipes;

    /// <summary>Shipped configs.</summary>
    public ConfigCatalog Configs { get; } = configs;

    /// <summary>Environment variable lookup.</summary>
    public Func<string, string?> Environment { get; } = environment;

    /// <summary>The real consoles, registries and environment.</summary>
    public static CliServices CreateDefault() => new(
        CreateConsole(Console.Out, Console.IsOutputRedirected),
        CreateConsole(Console.Error, Console.IsErrorRedirected),
        RecipeRegistry.CreateDefault(),
        ConfigCatalog.CreateDefault(),
        System.Environment.GetEnvironmentVariable);

    /// <summary>Width given to a redirected console: wide enough that no table is ever wrapped or cut.</summary>
    internal const int RedirectedWidth = 1 << 16;

    /// <summary>
    /// A console on <paramref name="writer"/>. On a terminal Spectre sizes tables to its width. A redirected stream
    /// (a pipe, a file, a test) has no width, and Spectre would then assume 80 columns and wrap or cut table cells
    /// mid-word; piped output is read by programs and people with wide windows, so it gets plain text (no colours,
    /// no live widgets) and a width no table reaches (tables are only as wide as their content).
    /// </summary>
    internal static IAnsiConsole CreateConsole(TextWriter writer, bool redirected)
    {
        if (!redirected) return AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(writer) });
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(writer),
        });
        console.Profile.Width = RedirectedWidth;
        return console;
    }

    /// <summary>
    /// The resolver that turns dataset hub ids in configs (<c>source: yahma/alpaca-cleaned</c>) into cached local
    /// folders: <c>$SHARPTUNE_CACHE/datasets/...</c>, downloaded from <c>$HF_ENDPOINT</c> with <c>$HF_TOKEN</c>.
    /// </summary>
    public HubDatasetResolver CreateDatasetResolver() => new(
        HubDatasetResolver.DefaultCacheRoot(Environment),
        () => new HubClient(Environment(HubClient.EndpointVariable)),
        Environment("HF_TOKEN") is { Length: > 0 } token ? token : null);

    /// <summary>Registers these services and the error handling on a command app.</summary>
    public void Configure(IConfigurator config)
    {
        config.SetApplicationName("sharptune");
        config.ConfigureConsole(Out);
        config.Settings.Registrar.RegisterInstance(this);
        config.SetExceptionHandler((e, _) => Fail(e));
    }

    /// <summary>Writes raw text (no markup, no wrapping) to stdout.</summary>
    public void WriteOut(string text) => Out.Profile.Out.Writer.Write(text);

    /// <summary>Writes a raw line to stderr.</summary>
    public void WriteErrLine(string text) => Err.Profile.Out.Writer.WriteLine(text);

    private int Fail(Exception e)
    {
        while (e is TargetInvocationException or AggregateException && e.InnerException is not null) e = e.InnerException!;
        switch (e)
        {
            case CommandAppException:
                WriteErrLine($"error: {OneLine(e.Message)} (see `sharptune --help`)");
                return 2;
            case ConfigException c when c.Problems.Count > 1:
                foreach (var p in c.Problems) WriteErrLine(p.ToString());
                WriteErrLine($"error: {c.Problems.Count} config problems");
                return 1;
            case OperationCanceledException:
                WriteErrLine("error: cancelled");
                return 130;
            case ConfigException or HubException or ArgumentException or IOException or UnauthorizedAccessException or InvalidDataException
                or NotSupportedException:
                WriteErrLine($"error: {OneLine(e.Message)}");
                return 1;
            default:
                WriteErrLine($"error: {e.GetType().Name}: {OneLine(e.Message)}");
                if (Environment("SHARPTUNE_DEBUG") is "1" or "true") WriteErrLine(e.ToString());
                else WriteErrLine("(an unexpected failure: set SHARPTUNE_DEBUG=1 for the stack trace and please report it)");
                return 1;
        }
    }

    private static string OneLine(string message) => message.ReplaceLineEndings(" ").Trim();
}
