// The compare command end to end through Spectre's CommandApp, on saved reports in a temporary folder.
using SharpTune.Cli.Commands;
using SharpTune.Eval;
using Spectre.Console;
using Spectre.Console.Cli;

namespace SharpTune.Tests.Cli;

public sealed class EvalCompareCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-cmp-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Save(string run, double acc)
    {
        var path = Path.Combine(_dir, run, "results.json");
        new EvalReport { Results = [new EvalResult("hellaswag", "acc_norm", acc, 0.005, 10042)] }.Save(path);
        return path;
    }

    private static (int Code, string Text) Run(params string[] args)
    {
        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
        });
        var app = new CommandApp<EvalCompareCommand>();
        app.Configure(c => c.Settings.Console = console);
        var code = app.Run(args);
        return (code, writer.ToString());
    }

    [Fact]
    public void Run_TwoReports_TableWithDeltaAgainstBaseline()
    {
        var (code, text) = Run(Save("baseline", 0.6064), Save("kd", 0.6164));

        Assert.Equal(0, code);
        Assert.Contains("baseline (baseline)", text);
        Assert.Contains("0.6064", text);
        Assert.Contains("0.6164 (+0.0100)", text);
    }

    [Fact]
    public void Compare_PipedThroughCli_LongModelNamesNotWrappedOrCut()
    {
        var a = new string('a', 70);
        var b = new string('b', 70);
        var r = CliHarness.Run("eval", "--compare", Save(a, 0.6064), Save(b, 0.6164));
        Assert.True(r.ExitCode == 0, r.Err);
        var header = Assert.Single(r.Out.Split('\n'), l => l.Contains(a, StringComparison.Ordinal));
        Assert.Contains($"{a} (baseline)", header);
        Assert.Contains(b, header);
        Assert.Contains("0.6164 (+0.0100)", Assert.Single(r.Out.Split('\n'), l => l.Contains("hellaswag", StringComparison.Ordinal)));
    }

    [Fact]
    public void Run_BaselineOutOfRange_Fails()
    {
        var (code, text) = Run(Save("a", 0.5), "--baseline", "3");
        Assert.NotEqual(0, code);
        Assert.Contains("--baseline 3", text);
    }

    [Fact]
    public void Perplexity_Result_ShowsBitsPerByte()
    {
        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(writer), Ansi = AnsiSupport.No });
        // ll = -ln(2) * 16 over 8 bytes: exactly 2 bits per byte.
        console.Write(EvalRendering.Perplexity(new PerplexityResult(Tokens: 4, Words: 2, Bytes: 8, LogLikelihood: -16 * Math.Log(2))));
        Assert.Contains("2.0000", writer.ToString());
    }
}
