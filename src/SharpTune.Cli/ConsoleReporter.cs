// Renders a recipe's reports on the console: info lines to stdout (debugging details only with --verbose), warnings
// to stderr, metrics as one line per logged step. On an interactive terminal a training run also gets a Spectre.Console live progress bar (epoch,
// step/total, loss, tokens/s, elapsed and ETA) fed by Progress() and the latest Metrics(); when output is redirected
// (CI logs, tests) it falls back to plain lines.
using System.Globalization;
using SharpTune.Recipes;
using Spectre.Console;

namespace SharpTune.Cli;

/// <summary>An <see cref="IRecipeReporter"/> that prints plain lines, or drives a live progress bar when attached.</summary>
internal sealed class ConsoleReporter(CliServices services, bool verbose = false) : IRecipeReporter
{
    private ProgressContext? _live;
    private ProgressTask? _task;
    private double _loss = double.NaN;
    private double _tokensPerSecond = double.NaN;

    /// <summary>Whether <see cref="RunWithProgress"/> draws a live progress bar (stdout is an interactive terminal).</summary>
    public bool IsLive => services.Out.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;

    /// <summary>Runs <paramref name="work"/> with a live progress bar when stdout is an interactive terminal.</summary>
    public void RunWithProgress(Action work)
    {
        if (!IsLive)
        {
            work();
            return;
        }
        services.Out.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                _live = ctx;
                try { work(); }
                finally { _live = null; }
            });
    }

    public void Info(string message)
    {
        if (_live is not null) services.Out.WriteLine(message);
        else services.WriteOut(message + "\n");
    }

    /// <summary>Written as it comes; outside a live progress display only (generation shows none).</summary>
    public bool Stream(string fragment)
    {
        if (_live is not null) return false;
        services.WriteOut(fragment);
        return true;
    }

    public void Warning(string message) => services.WriteErrLine("warning: " + message);

    /// <summary>Printed as an info line with <c>--verbose</c>, dropped otherwise.</summary>
    public void Verbose(string message)
    {
        if (verbose) Info(message);
    }

    public void Metrics(long step, IReadOnlyDictionary<string, double> values)
    {
        if (values.TryGetValue("loss", out var loss)) _loss = loss;
        if (values.TryGetValue("tokens_per_second", out var tps)) _tokensPerSecond = tps;
        var line = $"step {step} | " + string.Join(" | ", values.Select(kv => $"{kv.Key}: {kv.Value.ToString("G5", CultureInfo.InvariantCulture)}"));
        if (_live is not null) services.Out.WriteLine(line);
        else services.WriteOut(line + "\n");
    }

    public void Progress(string stage, long completed, long total)
    {
        if (_live is null)
        {
            if (total > 0 && completed == total) services.WriteOut($"{stage}: {completed}/{total} done\n");
            return;
        }
        _task ??= _live.AddTask(stage, autoStart: true, maxValue: Math.Max(1, total));
        _task.MaxValue = Math.Max(1, total);
        _task.Value = completed;
        var loss = double.IsNaN(_loss) ? "-" : _loss.ToString("F4", CultureInfo.InvariantCulture);
        var tps = double.IsNaN(_tokensPerSecond) ? "-" : _tokensPerSecond.ToString("F0", CultureInfo.InvariantCulture);
        _task.Description = Markup.Escape($"{stage} | step {completed}/{total} | loss {loss} | {tps} tok/s");
    }
}
