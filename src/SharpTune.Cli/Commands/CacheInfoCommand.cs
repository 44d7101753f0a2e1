// `sharptune cache-info <dir>`: what a teacher top-k cache holds (tokens, k, bytes/token, entries kept per position and
// folded into the tail, teacher, hashes, shards, completeness); --verify re-hashes every shard; --json prints the same
// as one JSON object.
using System.ComponentModel;
using System.Globalization;
using System.Text.Json;
using SharpTune.Distillation;
using Spectre.Console;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Describes a teacher cache folder.</summary>
internal sealed class CacheInfoCommand(CliServices services) : Command<CacheInfoCommand.Settings>
{
    /// <summary>Options of <c>cache-info</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<dir>")]
        [Description("Teacher cache folder (written by the teacher_logits recipe)")]
        public string Dir { get; init; } = "";

        [CommandOption("--verify")]
        [Description("Re-hash every shard against the manifest's SHA-256")]
        public bool Verify { get; init; }

        [CommandOption("--json")]
        [Description("Print one JSON object instead of a table")]
        public bool Json { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        using var cache = TeacherCache.Open(settings.Dir, allowIncomplete: true);
        var m = cache.Manifest;
        if (settings.Verify) cache.Verify();
        var tokens = m.Tokens;
        var bytesPerToken = tokens == 0 ? 0 : (double)m.Bytes / tokens;
        var info = new Dictionary<string, object?>
        {
            ["dir"] = Path.GetFullPath(settings.Dir),
            ["complete"] = m.Complete,
            ["samples"] = $"{m.Shards.Sum(s => s.Samples)} of {m.Samples}",
            ["tokens"] = tokens,
            ["k"] = m.K,
            ["kept_entries_mean"] = Math.Round(m.MeanEntries, 2),
            ["kept_entries_min"] = m.MinEntries,
            ["folded_entries"] = m.FoldedEntries,
            ["vocab"] = m.Vocab,
            ["bytes"] = m.Bytes,
            ["bytes_per_token"] = Math.Round(bytesPerToken, 2),
            ["shards"] = m.Shards.Count,
            ["temperature"] = m.Temperature,
            ["log_prob_step"] = m.LogProbStep,
            ["relative_error_bound"] = m.Encoding.RelativeErrorBound,
            ["max_log_ratio"] = m.MaxLogRatio,               // null: no entry folded for its ratio to the top-1
            ["max_bytes_per_token"] = m.MaxBytesPerToken,   // null: no budget, every top-k entry kept
            ["format_version"] = m.Version,
            ["teacher"] = m.TeacherId,
            ["data_hash"] = m.DataHash,
            ["tokenizer_hash"] = m.TokenizerHash,
            ["teacher_hash"] = m.TeacherHash,
        };
        if (settings.Verify) info["verified"] = true;
        if (settings.Json)
        {
            services.WriteOut(JsonSerializer.Serialize(info, new JsonSerializerOptions { WriteIndented = true }) + Environment.NewLine);
            return 0;
        }
        var table = new Table().Border(TableBorder.Simple).AddColumn("FIELD").AddColumn("VALUE");
        foreach (var (key, value) in info)
            table.AddRow(Markup.Escape(key), Markup.Escape(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "null"));
        services.Out.Write(table);
        return 0;
    }
}
