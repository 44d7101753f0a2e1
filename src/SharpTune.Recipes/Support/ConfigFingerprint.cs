// The resolved config as a flat, ordered list of `dotted.key = value` leaves: what a training run records in its
// recipe state (so a resume can say which keys changed, old -> new) and what the ranks of an MPI job compare before
// they start (a job whose ranks run different configs waits in a collective for ever).
// On resume, keys that change the data order or the model are refused: the saved data-loader position counts batches
// of the saved batch size in the saved shuffle order of the saved dataset, and the saved weights and optimizer moments
// belong to the saved model (torchtune's recipes reload the position and trust the config; we check).
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using SharpTune.Checkpointing;
using SharpTune.Config;
using SharpTune.Distributed;

namespace SharpTune.Recipes.Support;

/// <summary>One key whose value differs between two fingerprints (null: absent).</summary>
/// <param name="Key">The dotted key (<c>model.lora_rank</c>).</param>
/// <param name="Old">The value before.</param>
/// <param name="New">The value after.</param>
public sealed record ConfigChange(string Key, string? Old, string? New)
{
    /// <summary><c>key: old -> new</c>.</summary>
    public override string ToString() => $"{Key}: {Old ?? "(absent)"} -> {New ?? "(absent)"}";
}

/// <summary>A resolved config flattened to its leaves, comparable across runs and ranks.</summary>
public sealed class ConfigFingerprint
{
    /// <summary>The <c>RecipeState.Extra</c> key the fingerprint is saved under.</summary>
    public const string StateKey = "config";

    // Top-level keys (and dotted prefixes) whose change reinterprets the saved data position or the saved weights.
    private static readonly string[] DataOrModelKeys =
    [
        "model", "tokenizer", "dataset", "validation_split", "batch_size", "seed", "shuffle", "gradient_accumulation_steps",
        "checkpointer.checkpoint_dir", "checkpointer.checkpoint_files", "checkpointer.model_type",
    ];

    // Keys a resume changes by definition.
    private static readonly string[] Ignored = ["resume_from_checkpoint"];

    private ConfigFingerprint(SortedDictionary<string, string> values) => Values = values;

    /// <summary>Every leaf: dotted key (list items as <c>key[i]</c>) to its value as written (<c>null</c> for null).</summary>
    public IReadOnlyDictionary<string, string> Values { get; }

    /// <summary>The leaves of <paramref name="config"/>'s resolved tree.</summary>
    public static ConfigFingerprint Of(SharpTuneConfig config)
    {
        var values = new SortedDictionary<string, string>(StringComparer.Ordinal);
        Flatten(config.Root, "", values);
        return new ConfigFingerprint(values);
    }

    /// <summary>Reads what <see cref="ToJson"/> wrote.</summary>
    /// <exception cref="InvalidDataException">Not a JSON object of strings.</exception>
    public static ConfigFingerprint FromJson(string json, string source)
    {
        try
        {
            var values = JsonSerializer.Deserialize<SortedDictionary<string, string>>(json)
                ?? throw new InvalidDataException($"{source}: the config fingerprint is null");
            return new ConfigFingerprint(new SortedDictionary<string, string>(values, StringComparer.Ordinal));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the config fingerprint is not a JSON object of strings: {e.Message}", e);
        }
    }

    /// <summary>Compact JSON (keys in ordinal order, so equal configs give equal text).</summary>
    public string ToJson() => JsonSerializer.Serialize(Values);

    /// <summary>Hex SHA-256 of <see cref="ToJson"/>.</summary>
    public string Hash => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(ToJson())));

    /// <summary>The keys whose values differ from this (older) fingerprint to <paramref name="newer"/>, in key order.</summary>
    public IReadOnlyList<ConfigChange> ChangesTo(ConfigFingerprint newer)
    {
        var keys = new SortedSet<string>(Values.Keys, StringComparer.Ordinal);
        keys.UnionWith(newer.Values.Keys);
        var changes = new List<ConfigChange>();
        foreach (var key in keys)
        {
            var old = Values.GetValueOrDefault(key);
            var now = newer.Values.GetValueOrDefault(key);
            if (!string.Equals(old, now, StringComparison.Ordinal)) changes.Add(new ConfigChange(key, old, now));
        }
        return changes;
    }

    /// <summary>True when changing <paramref name="key"/> reinterprets a saved run's data position or weights.</summary>
    public static bool ChangesDataOrModel(string key) => DataOrModelKeys.Any(k => Covers(k, key));

    /// <summary>
    /// Checks a resume: refuses changes from <paramref name="saved"/> to <paramref name="current"/> that alter the data
    /// order or the model (all listed, old -> new), and returns the other changes (for a warning).
    /// </summary>
    /// <exception cref="ConfigException">A key that changes the data order or the model differs.</exception>
    public static IReadOnlyList<ConfigChange> CheckResume(ConfigFingerprint saved, ConfigFingerprint current, string stateDir)
    {
        var changes = saved.ChangesTo(current).Where(c => !Ignored.Any(k => Covers(k, c.Key))).ToList();
        var refused = changes.Where(c => ChangesDataOrModel(c.Key)).ToList();
        if (refused.Count > 0)
            throw new ConfigException(null, "resume_from_checkpoint",
                $"cannot resume the run saved in {stateDir} with a config that changes the data order or the model " +
                $"({string.Join("; ", refused)}): the saved data position, weights and optimizer state belong to the saved " +
                "values. Restore them, or start a new run in another output_dir" +
                (changes.Count > refused.Count ? $" (also changed, which a resume allows: {string.Join("; ", changes.Except(refused))})" : ""));
        return changes;
    }

    /// <summary>
    /// The resume check of a training recipe. With <paramref name="state"/> null it reads the fingerprint from the saved
    /// state's manifest (best effort, before the optimizer and weights are loaded, so a changed model
    /// is refused by this message rather than by a shape error); with the loaded state it is authoritative and warns
    /// through <paramref name="reporter"/> about the allowed changes, or that a state saved without a fingerprint
    /// cannot be checked.
    /// </summary>
    /// <exception cref="ConfigException">A key that changes the data order or the model differs.</exception>
    public static void CheckResume(string outputDir, RecipeState? state, ConfigFingerprint current, IRecipeReporter? reporter)
    {
        var stateDir = Path.Combine(outputDir, RecipeStateStore.FolderName);
        string? json;
        if (state is null) json = PeekSavedJson(outputDir);
        else json = state.Extra.GetValueOrDefault(StateKey);
        if (json is null)
        {
            if (state is not null)
                reporter?.Warning($"{stateDir} records no config (saved by an older SharpTune): changes to the config since cannot be checked");
            return;
        }
        var changes = CheckResume(FromJson(json, stateDir), current, stateDir);
        if (state is not null && changes.Count > 0)
            reporter?.Warning($"resuming with a changed config (allowed: it changes neither the data order nor the model): {string.Join("; ", changes)}");
    }

    // The saved state the store would resume from (its own rule: a committed-but-unrenamed state counts).
    private static string? PeekSavedJson(string outputDir)
    {
        try
        {
            return RecipeStateStore.Peek(outputDir)?.Extra.GetValueOrDefault(StateKey);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or JsonException or UnauthorizedAccessException)
        {
            return null; // the authoritative check runs on the loaded state
        }
    }

    /// <summary>
    /// Under MPI, compares every rank's fingerprint with rank 0's (collective: every rank must call it). When any
    /// differs, rank 0 throws a <see cref="ConfigException"/> listing each differing rank's keys (rank 0 -> rank r) and
    /// the other ranks throw <see cref="ReportedByMainRankException"/>, so the job ends with one message.
    /// </summary>
    public static void EnsureSameOnAllRanks(DistributedContext context, ConfigFingerprint mine)
    {
        if (!context.UsesMpi || context.WorldSize == 1) return;
        var bytes = Encoding.UTF8.GetBytes(mine.ToJson());
        var differences = new List<string>();
        for (var rank = 1; rank < context.WorldSize; rank++)
        {
            var theirs = context.BroadcastBytes(context.Rank == rank ? bytes : [], root: rank);
            if (!context.IsMain) continue;
            var changes = mine.ChangesTo(FromJson(Encoding.UTF8.GetString(theirs), $"rank {rank}"));
            if (changes.Count > 0) differences.Add($"rank {rank}: {string.Join("; ", changes)}");
        }
        if (context.AllReduceSum(context.IsMain ? differences.Count : 0L) == 0) return;
        if (!context.IsMain) throw new ReportedByMainRankException("this rank's config differs from rank 0's");
        throw new ConfigException(null, "",
            $"the {context.WorldSize} ranks of this job were started with different configs (rank 0 -> other rank): " +
            $"{string.Join(" | ", differences)}. Every rank must run the same config file with the same overrides");
    }

    private static bool Covers(string prefix, string key) =>
        key == prefix || key.StartsWith(prefix + ".", StringComparison.Ordinal) || key.StartsWith(prefix + "[", StringComparison.Ordinal);

    private static void Flatten(ConfigNode node, string path, SortedDictionary<string, string> values)
    {
        switch (node.Kind)
        {
            case ConfigNodeKind.Map:
                if (node.Count == 0) values[path] = "{}";
                foreach (var (key, child) in node.Entries) Flatten(child, path.Length == 0 ? key : $"{path}.{key}", values);
                break;
            case ConfigNodeKind.List:
                if (node.Count == 0) values[path] = "[]";
                for (var i = 0; i < node.Items.Count; i++) Flatten(node.Items[i], $"{path}[{i}]", values);
                break;
            case ConfigNodeKind.Null:
                values[path] = "null";
                break;
            default:
                values[path] = node.Text ?? "";
                break;
        }
    }
}
