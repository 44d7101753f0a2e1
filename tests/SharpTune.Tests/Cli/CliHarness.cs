// Runs the sharptune command app in-process with captured stdout/stderr, a chosen configs folder and a fake
// environment, so CLI tests exercise the real verbs without starting processes.
using SharpTune.Cli;
using SharpTune.Recipes;
using Spectre.Console;

namespace SharpTune.Tests.Cli;

public sealed record CliResult(int ExitCode, string Out, string Err);

public static class CliHarness
{
    private static readonly RecipeRegistry Recipes = RecipeRegistry.CreateDefault();

    public static CliResult Run(string[] args, string? configsDir = null, IReadOnlyDictionary<string, string>? env = null)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var services = new CliServices(Console(stdout), Console(stderr), Recipes,
            configsDir is null ? ConfigCatalog.CreateDefault() : new ConfigCatalog(configsDir),
            name => env is not null && env.TryGetValue(name, out var v) ? v : null);
        var code = Program.Build(services).Run(args);
        return new CliResult(code, stdout.ToString(), stderr.ToString());
    }

    public static CliResult Run(params string[] args) => Run(args, null, null);

    // The consoles the program gives a redirected stdout/stderr (as output is when piped), so tests see what a pipe sees.
    private static IAnsiConsole Console(StringWriter writer) => CliServices.CreateConsole(writer, redirected: true);
}
