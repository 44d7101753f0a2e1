// Renders a recipe's reports on the console: info lines to stdout, warnings to stderr, metrics as one line per step.
using System.Globalization;
using SharpTune.Recipes;

namespace SharpTune.Cli;

/// <summary>An <see cref="IRecipeReporter"/> that prints plain lines.</summary>
internal sealed class ConsoleReporter(CliServices services) : IRecipeReporter
{
    public void Info(string message) => services.WriteOut(message + "\n");

    public void Warning(string message) => services.WriteErrLine("warning: " + message);

    public void Metrics(long step, IReadOnlyDictionary<string, double> values) =>
        services.WriteOut($"step {step} | " + string.Join(" | ", values.Select(kv => $"{kv.Key}: {kv.Value.ToString("G5", CultureInfo.InvariantCulture)}")) + "\n");

    public void Progress(string stage, long completed, long total)
    {
        if (total > 0 && completed == total) services.WriteOut($"{stage}: {completed}/{total} done\n");
    }
}
