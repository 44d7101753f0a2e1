// `sharptune tokenize --tokenizer <path> [--text T | --file F] [--chat]`: prints what the model is fed as JSON,
// {"ids":[...],"count":n,"pieces":[...]} (BOS as the family adds it), so users can debug prompts and templates. With
// --chat the text is a JSON array of {"role","content"} messages (or plain text, one user message) in the family's
// chat format, and the output adds "mask" (true = not trained on). The work is the library's TokenizeReport.
using System.ComponentModel;
using System.Text;
using System.Text.Json;
using SharpTune.Tokenizers;
using Spectre.Console;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Prints token ids, pieces and (for chats) the loss mask.</summary>
internal sealed class TokenizeCommand(CliServices services) : Command<TokenizeCommand.Settings>
{
    /// <summary>Arguments of <c>tokenize</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--tokenizer <PATH>")]
        [Description("tokenizer file (tokenizer.json, tokenizer.model, vocab.json) or a model folder")]
        public string? Tokenizer { get; init; }

        [CommandOption("--text <TEXT>")]
        [Description("the text to encode (with --chat: a JSON array of {\"role\",\"content\"} messages, or plain text as one user message)")]
        public string? Text { get; init; }

        [CommandOption("--file <FILE>")]
        [Description("a UTF-8 file whose whole content is encoded (as --text)")]
        public string? File { get; init; }

        [CommandOption("--chat")]
        [Description("encode the messages in the tokenizer's chat format and print the loss mask too")]
        public bool Chat { get; init; }

        [CommandOption("--no-bos")]
        [Description("plain text: do not add BOS")]
        public bool NoBos { get; init; }

        [CommandOption("--eos")]
        [Description("add EOS (with --chat: the end token even when the last message is not the assistant's)")]
        public bool Eos { get; init; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrEmpty(Tokenizer)) return ValidationResult.Error("tokenize needs --tokenizer <path>");
            if ((Text is null) == (File is null)) return ValidationResult.Error("give exactly one of --text and --file");
            if (Chat && NoBos) return ValidationResult.Error("--no-bos applies to plain text; the chat format decides BOS");
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
        string json;
        try { json = TokenizeReport.ToJson(tokenizer, text, settings.Chat, addBos: !settings.NoBos, addEos: settings.Eos); }
        catch (Exception e) when (settings.Chat && e is JsonException or FormatException or InvalidOperationException)
        {
            throw new ArgumentException($"--chat: expected a JSON array of {{\"role\": string, \"content\": string}} messages: {e.Message}", e);
        }
        services.WriteOut(json + "\n");
        return 0;
    }
}
