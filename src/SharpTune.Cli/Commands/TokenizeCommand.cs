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
            ? tokenizer.TokenizeMessages([new Message("user", text)], addEos: false).Tokens
            : tokenizer.Encode(text, addBos: !settings.NoBos, addEos: settings.Eos);
        var json = settings.Pieces
            ? JsonSerializer.Serialize(ids.Select(id => new { id, text = tokenizer.Decode([id], skipSpecialTokens: false) }))
            : JsonSerializer.Serialize(ids);
        services.WriteOut(json + "\n");
        return 0;
    }
}
