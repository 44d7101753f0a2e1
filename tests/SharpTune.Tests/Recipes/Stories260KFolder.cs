// stories260K converted once per test class into an HF folder through the real `sharptune convert llama2c` verb, so
// recipe tests start from what a user would have on disk.
using SharpTune.Tests.Cli;

namespace SharpTune.Tests.Recipes;

public sealed class Stories260KFolder : IDisposable
{
    public const string Bin = "models/stories260K/stories260K.bin";
    public const string Tok = "models/stories260K/tok512.model";
    public const string Expected = "models/stories260K/EXPECTED_greedy.txt";

    private readonly Lazy<string> _folder;

    public Stories260KFolder()
    {
        Root = Directory.CreateTempSubdirectory("sharptune-st260-").FullName;
        _folder = new Lazy<string>(() =>
        {
            var dir = System.IO.Path.Combine(Root, "stories260K");
            var r = CliHarness.Run("convert", "llama2c", SharedData.PathOf(Bin), SharedData.PathOf(Tok), dir);
            if (r.ExitCode != 0) throw new InvalidOperationException($"convert failed: {r.Err}");
            return dir;
        });
    }

    /// <summary>A temporary folder for the class's outputs.</summary>
    public string Root { get; }

    /// <summary>The converted HF folder (converted on first use, when the shared data is present).</summary>
    public string Path => _folder.Value;

    public void Dispose()
    {
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
    }
}
