// Problems found in a config, each with its source location, and the exception that carries them.
namespace SharpTune.Config;

/// <summary>One problem in a config: where it is, which key, what is wrong.</summary>
/// <param name="Location">Where the offending value (or its parent) was written; null when unknown.</param>
/// <param name="Path">The dotted key path (<c>optimizer.lr</c>), or empty for the whole file.</param>
/// <param name="Message">What is wrong, with the expected and actual values.</param>
public sealed record ConfigProblem(SourceLocation? Location, string Path, string Message)
{
    /// <summary><c>file:line:col: key: message</c>.</summary>
    public override string ToString()
    {
        var where = Location is { } l ? $"{l}: " : "";
        var key = Path.Length > 0 ? $"{Path}: " : "";
        return $"{where}{key}{Message}";
    }
}

/// <summary>A config could not be loaded, resolved, validated or bound.</summary>
public sealed class ConfigException : Exception
{
    /// <summary>Creates the exception for one or more problems.</summary>
    public ConfigException(IReadOnlyList<ConfigProblem> problems, Exception? inner = null)
        : base(problems.Count == 1 ? problems[0].ToString() : $"{problems.Count} config problems:\n  " + string.Join("\n  ", problems), inner)
    {
        Problems = problems;
    }

    /// <summary>Creates the exception for a single problem.</summary>
    public ConfigException(SourceLocation? location, string path, string message)
        : this([new ConfigProblem(location, path, message)])
    {
    }

    /// <summary>Every problem found (at least one).</summary>
    public IReadOnlyList<ConfigProblem> Problems { get; }
}
