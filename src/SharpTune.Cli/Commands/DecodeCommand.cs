// `sharptune decode --tokenizer <path> (--ids "1 2 3" | --file F) [--skip-special]`: the inverse of `tokenize`, token
// ids to text, so ids from a log, a teacher cache or `tokenize` can be read back. Ids may be separated by spaces,
// commas or newlines, and a JSON array (or `tokenize`'s {"ids": [...]} output) is accepted as it is.
using System.ComponentModel;
using System.Globalization;
using System.Text.Json;
using SharpTune.Tokenizers;
using Spectre.Console;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Prints the text of token ids.</summary>
internal sealed class DecodeCommand(CliServices services) : Command<DecodeCommand.Settings>
{
    /// <summary>Arguments of <c>decode</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--tokenizer <PATH>")]
        [Description("tokenizer file (tokenizer.json, tokenizer.model, vocab.json) or a model folder")]
        public string? Tokenizer { get; init; }

        [CommandOption("--ids <IDS>")]
        [Description("the ids: \"1 2 3\", \"1,2,3\", a JSON array, or tokenize's JSON output")]
        public string? Ids { get; init; }

        [CommandOption("--file <FILE>")]
        [Description("a file holding the ids (as --ids)")]
        public string? File { get; init; }

        [CommandOption("--skip-special")]
        [Description("leave out special tokens (BOS, EOS, chat headers)")]
        public bool SkipSpecial { get; init; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrEmpty(Tokenizer)) return ValidationResult.Error("decode needs --tokenizer <path>");
            if ((Ids is null) == (File is null)) return ValidationResult.Error("give exactly one of --ids and --file");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var tokenizer = TokenizerLoader.Load(settings.Tokenizer!);
        string text;
        if (settings.File is { } file)
        {
            if (!System.IO.File.Exists(file)) throw new FileNotFoundException($"ids file not found: {file}", file);
            text = System.IO.File.ReadAllText(file);
        }
        else text = settings.Ids!;
        var ids = ParseIds(text, settings.File ?? "--ids");
        foreach (var id in ids)
            if (id < 0 || id >= tokenizer.VocabSize)
                throw new ArgumentException($"{settings.File ?? "--ids"}: id {id} is outside the tokenizer's vocabulary [0, {tokenizer.VocabSize})");
        services.WriteOut(tokenizer.Decode(ids, settings.SkipSpecial) + "\n");
        return 0;
    }

    /// <summary>Ids from whitespace/comma separated integers, a JSON array, or a JSON object with "ids".</summary>
    internal static int[] ParseIds(string text, string where)
    {
        var trimmed = text.Trim();
        if (trimmed.StartsWith('[') || trimmed.StartsWith('{'))
        {
            try
            {
                using var doc = JsonDocument.Parse(trimmed);
                var array = doc.RootElement.ValueKind == JsonValueKind.Object ? doc.RootElement.GetProperty("ids") : doc.RootElement;
                return [.. array.EnumerateArray().Select(e => e.GetInt32())];
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw new ArgumentException($"{where}: expected a JSON array of ids or an object with \"ids\": {e.Message}", e);
            }
        }
        var parts = trimmed.Split([' ', ',', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (var i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out ids[i]))
                throw new ArgumentException($"{where}: '{parts[i]}' (item {i + 1}) is not an integer token id");
        return ids;
    }
}
