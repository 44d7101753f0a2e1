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
        var (text, code) = Describe(e);
        WriteErrLine(text);
        return code;
    }

    /// <summary>What the CLI prints for a failure (one line for user errors; also used by every rank under mpirun).</summary>
    public string DescribeError(Exception e) => Describe(e).Text;

    private (string Text, int Code) Describe(Exception e)
    {
        while (e is TargetInvocationException or AggregateException && e.InnerException is not null) e = e.InnerException!;
        switch (e)
        {
            case CommandAppException:
                return ($"error: {OneLine(e.Message)} (see `sharptune --help`)", 2);
            case ConfigException c when c.Problems.Count > 1:
                return (string.Join(System.Environment.NewLine, c.Problems.Select(p => p.ToString()).Append($"error: {c.Problems.Count} config problems")), 1);
            case OperationCanceledException:
                return ("error: cancelled", 130);
            case ConfigException or HubException or ArgumentException or IOException or UnauthorizedAccessException or InvalidDataException
                or NotSupportedException:
                return ($"error: {OneLine(e.Message)}", 1);
            default:
                var debug = Environment("SHARPTUNE_DEBUG") is "1" or "true";
                return ($"error: {e.GetType().Name}: {OneLine(e.Message)}{System.Environment.NewLine}" +
                        (debug ? e.ToString() : "(an unexpected failure: set SHARPTUNE_DEBUG=1 for the stack trace and please report it)"), 1);
        }
    }

    private static string OneLine(string message) => message.ReplaceLineEndings(" ").Trim();
}
