// Small types of the Hugging Face Hub client: repo kinds, progress, results, errors, and the checks on file names
// and glob patterns. Glob semantics follow Python's fnmatch as huggingface_hub's allow/ignore patterns use it
// (`*` also matches `/`; a pattern ending in `/` matches everything below that folder).
// Reference: huggingface_hub/utils/_paths.py (filter_repo_objects).
using System.Text;
using System.Text.RegularExpressions;

namespace SharpTune.Hub;

/// <summary>The kind of Hub repository.</summary>
public enum HubRepoType
{
    /// <summary>A model repo (<c>/api/models/...</c>, <c>/{repo}/resolve/...</c>).</summary>
    Model,
    /// <summary>A dataset repo (<c>/api/datasets/...</c>, <c>/datasets/{repo}/resolve/...</c>).</summary>
    Dataset,
}

/// <summary>Progress of one file's download.</summary>
/// <param name="File">Repo-relative file name.</param>
/// <param name="BytesDone">Bytes on disk so far (including resumed bytes).</param>
/// <param name="TotalBytes">Expected size, when the Hub said.</param>
/// <param name="Finished">True once the file is verified and in place.</param>
public sealed record HubFileProgress(string File, long BytesDone, long? TotalBytes, bool Finished);

/// <summary>What a download did.</summary>
/// <param name="OutputDir">The folder the files are in.</param>
/// <param name="Downloaded">Files fetched now.</param>
/// <param name="UpToDate">Files already present with the right size and hash.</param>
/// <param name="Ignored">Files left out by the ignore patterns.</param>
/// <param name="Commit">The commit the Hub resolved the revision to (X-Repo-Commit), when it said.</param>
public sealed record HubDownloadResult(string OutputDir, IReadOnlyList<string> Downloaded, IReadOnlyList<string> UpToDate,
    IReadOnlyList<string> Ignored, string? Commit);

/// <summary>A Hub request failed; the message is one line and never contains the token.</summary>
public sealed class HubException(string message, int? statusCode = null, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>The HTTP status, when there was one.</summary>
    public int? StatusCode { get; } = statusCode;
}

/// <summary>Checks on repo ids, file names and patterns.</summary>
public static class HubNames
{
    private static readonly Regex RepoId = new(@"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$", RegexOptions.Compiled);

    /// <summary>Throws unless <paramref name="repoId"/> looks like <c>owner/name</c> (or <c>name</c>).</summary>
    public static void CheckRepoId(string repoId)
    {
        if (!RepoId.IsMatch(repoId) || repoId.Contains("..", StringComparison.Ordinal) || repoId.Contains("--", StringComparison.Ordinal))
            throw new ArgumentException($"'{repoId}' is not a Hugging Face repo id (expected owner/name, e.g. meta-llama/Llama-3.2-1B)");
    }

    /// <summary>
    /// Throws unless a repo file name is a safe relative path: no <c>..</c> segment, not absolute, no backslash,
    /// no empty segment, no drive letter. A hostile listing must not write outside the output folder.
    /// </summary>
    public static void CheckFileName(string name)
    {
        var bad = name.Length == 0 || name.StartsWith('/') || name.Contains('\\') || name.Contains(':') || name.Contains('\0')
            || name.Split('/').Any(s => s is "" or "." or "..");
        if (bad) throw new HubException($"refusing repo file name '{name}': it is not a plain relative path (absolute, '..', or odd characters)");
    }

    /// <summary>True when <paramref name="file"/> matches a glob (fnmatch: <c>*</c>, <c>?</c>, <c>[...]</c>; <c>*</c> crosses <c>/</c>).</summary>
    public static bool Matches(string file, string pattern)
    {
        if (pattern.EndsWith('/')) pattern += "*";
        return Regex.IsMatch(file, GlobToRegex(pattern), RegexOptions.CultureInvariant);
    }

    private static string GlobToRegex(string glob)
    {
        var sb = new StringBuilder("^");
        for (var i = 0; i < glob.Length; i++)
        {
            var c = glob[i];
            switch (c)
            {
                case '*': sb.Append(".*"); break;
                case '?': sb.Append('.'); break;
                case '[':
                    var close = glob.IndexOf(']', i + 1);
                    if (close < 0) { sb.Append(@"\["); break; }
                    var body = glob[(i + 1)..close];
                    sb.Append('[').Append(body.StartsWith('!') ? "^" + Regex.Escape(body[1..]) : Regex.Escape(body)).Append(']');
                    i = close;
                    break;
                default: sb.Append(Regex.Escape(c.ToString())); break;
            }
        }
        return sb.Append('$').ToString();
    }
}
