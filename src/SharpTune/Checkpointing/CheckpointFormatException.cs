// The one exception type checkpoint code throws for bad files: it always names the file (or folder) at fault so a
// user can find the broken shard among dozens.
namespace SharpTune.Checkpointing;

/// <summary>
/// A checkpoint file or folder is malformed, inconsistent, or does not match the model it is loaded into.
/// <see cref="Exception.Message"/> names the file and the offending key, with expected and actual values.
/// </summary>
public sealed class CheckpointFormatException : IOException
{
    /// <summary>Creates the exception for <paramref name="path"/>; the message is prefixed with the path.</summary>
    public CheckpointFormatException(string path, string message, Exception? inner = null)
        : base($"{path}: {message}", inner)
    {
        FilePath = path;
    }

    /// <summary>The file or folder the problem was found in.</summary>
    public string FilePath { get; }
}
