// `sharptune tokenize --tokenizer <path> [--text T | --file F] [--chat]`: prints the token ids of a text as JSON, the
// way the model will see them (BOS as the family adds it; with --chat, the text as a user message of the chat format),
// so users can debug prompts and templates. --pieces also prints each id's decoded text.
using System.ComponentModel;
using System.Text;
using System.Text.Json;
using SharpTune.Tokenizers;
using Spectre.Console;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Prints token ids.</summary>
internal sealed class TokenizeCommand(CliServices services) : Command<TokenizeCommand.Settings>
{
    // Special-token strings such as <|eot_id|> stay readable instead of \u003C escapes.
    private static readonly JsonSerializerOptions s_json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Arguments of <c>tokenize</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--tokenizer <PATH>")]
        [Description("tokenizer file (tokenizer.json, tokenizer.model, vocab.json) or a model folder")]
        public string? Tokenizer { get; init; }

        [CommandOption("--text <TEXT>")]
        [Description("the text to encode")]
        public string? Text { get; init; }

        [CommandOption("--file <FILE>")]
        [Description("a UTF-8 file whose whole content is encoded")]
        public string? File { get; init; }

        [CommandOption("--chat")]
        [Description("encode the text as a user message of the tokenizer's chat format")]
        public bool Chat { get; init; }

        [CommandOption("--no-bos")]
        [Description("plain text: do not add BOS")]
        public bool NoBos { get; init; }

        [CommandOption("--eos")]
        [Description("plain text: add EOS")]
        public bool Eos { get; init; }

        [CommandOption("--pieces")]
        [Description("print {id, text} objects instead of bare ids")]
        public bool Pieces { get; init; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrEmpty(Tokenizer)) return ValidationResult.Error("tokenize needs --tokenizer <path>");
            if ((Text is null) == (File is null)) return ValidationResult.Error("give exactly one of --text and --file");
            if (Chat && (NoBos || Eos)) return ValidationResult.Error("--no-bos/--eos apply to plain text, not --chat");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var tokenizer = TokenizerLoader.Load(settings.Tokenizer!);
        string text;
        if (settings.File is { } file)
        {
            if (!System.IO.File.Exists(file)) throw new FileNotFoundException($"text file not found: {file}", file);
            text = System.IO.File.ReadAllText(file, Encoding.UTF8);
        }
        else text = settings.Text!;
        IReadOnlyList<int> ids = settings.Chat
            ? tokenizer.TokenizeMessages([new Message("user", text)], addEos: true).Tokens
            : tokenizer.Encode(text, addBos: !settings.NoBos, addEos: settings.Eos);
        var json = settings.Pieces
            ? JsonSerializer.Serialize(Pieces(tokenizer, ids).Select(p => new { id = p.Id, text = p.Text }), s_json)
            : JsonSerializer.Serialize(ids, s_json);
        services.WriteOut(json + "\n");
        return 0;
    }

    // Each id's share of the decoded text: decode(ids[..i+1]) minus decode(ids[..i]), so word-boundary spaces that
    // decoding a lone SentencePiece id drops are kept. Quadratic, which is fine at debugging sizes.
    private static IEnumerable<(int Id, string Text)> Pieces(ITokenizer tokenizer, IReadOnlyList<int> ids)
    {
        var previous = "";
        for (var i = 0; i < ids.Count; i++)
        {
            var text = tokenizer.Decode(ids.Take(i + 1), skipSpecialTokens: false);
            yield return (ids[i], text.StartsWith(previous, StringComparison.Ordinal) ? text[previous.Length..] : tokenizer.Decode([ids[i]], false));
            previous = text;
        }
    }
}
