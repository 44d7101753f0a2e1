// Name helpers for config binding: snake_case keys from camelCase parameters, and "did you mean" suggestions by
// Levenshtein edit distance (https://en.wikipedia.org/wiki/Levenshtein_distance).
using System.Text;

namespace SharpTune.Config;

/// <summary>Key naming and suggestions.</summary>
public static class Names
{
    /// <summary><c>loraRank</c> -> <c>lora_rank</c>; <c>useKVCache</c> -> <c>use_kv_cache</c>.</summary>
    public static string ToSnakeCase(string name)
    {
        var sb = new StringBuilder(name.Length + 4);
        for (var i = 0; i < name.Length; i++)
        {
            var c = name[i];
            if (char.IsUpper(c))
            {
                var prevLowerOrDigit = i > 0 && (char.IsLower(name[i - 1]) || char.IsDigit(name[i - 1]));
                var acronymEnd = i > 0 && char.IsUpper(name[i - 1]) && i + 1 < name.Length && char.IsLower(name[i + 1]);
                if ((prevLowerOrDigit || acronymEnd) && sb.Length > 0 && sb[^1] != '_') sb.Append('_');
                sb.Append(char.ToLowerInvariant(c));
            }
            else sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary>The Levenshtein distance between two strings.</summary>
    public static int Levenshtein(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++) prev[j] = j;
        for (var i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var cost = a[i - 1] == b[j - 1] ? 0 : 1;
                cur[j] = Math.Min(Math.Min(prev[j] + 1, cur[j - 1] + 1), prev[j - 1] + cost);
            }
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }

    /// <summary>
    /// The closest candidate to <paramref name="name"/> when it is close enough to be a likely typo (distance at
    /// most a third of the longer name, minimum 2), else null.
    /// </summary>
    public static string? DidYouMean(string name, IEnumerable<string> candidates)
    {
        string? best = null;
        var bestDistance = int.MaxValue;
        foreach (var c in candidates)
        {
            var d = Levenshtein(name.ToLowerInvariant(), c.ToLowerInvariant());
            if (d < bestDistance) { best = c; bestDistance = d; }
        }
        if (best is null) return null;
        var limit = Math.Max(2, Math.Max(name.Length, best.Length) / 3);
        return bestDistance <= limit ? best : null;
    }

    /// <summary>" (did you mean 'x'?)" or "".</summary>
    public static string Suggest(string name, IEnumerable<string> candidates) =>
        DidYouMean(name, candidates) is { } s ? $" (did you mean '{s}'?)" : "";
}
