// `sharptune tokenize`: prints the token ids a tokenizer produces for text, a file, or a chat, as JSON.
using System.ComponentModel;
using SharpTune.Tokenizers;
using Spectre.Console;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Prints token ids (JSON) for debugging prompts and chat formats.</summary>
public sealed class TokenizeCommand : Command<TokenizeCommand.Settings>
{
    /// <summary>Options of <c>sharptune tokenize</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        /// <summary>Tokenizer file or model folder.</summary>
        [CommandOption("--tokenizer <PATH>")]
        [Description("Tokenizer file (tokenizer.json, tokenizer.model, vocab.json) or model folder")]
        public string Tokenizer { get; init; } = "";

        /// <summary>Text to tokenize.</summary>
        [CommandOption("--text <TEXT>")]
        [Description("Text to tokenize")]
        public string? Text { get; init; }

        /// <summary>File whose content is tokenized.</summary>
        [CommandOption("--file <FILE>")]
        [Description("UTF-8 file whose content is tokenized")]
        public string? File { get; init; }

        /// <summary>Apply the model's chat format.</summary>
        [CommandOption("--chat")]
        [Description("Apply the model's chat format; the text is a JSON array of {role, content} or one user message")]
        public bool Chat { get; init; }

        /// <summary>Leave out BOS (plain text only).</summary>
        [CommandOption("--no-bos")]
        [Description("Do not prepend BOS (plain text)")]
        public bool NoBos { get; init; }

        /// <summary>Append EOS.</summary>
        [CommandOption("--eos")]
        [Description("Append EOS")]
        public bool Eos { get; init; }

        /// <inheritdoc/>
        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Tokenizer)) return ValidationResult.Error("--tokenizer is required");
            if ((Text is null) == (File is null)) return ValidationResult.Error("give exactly one of --text or --file");
            if (File is not null && !System.IO.File.Exists(File)) return ValidationResult.Error($"file not found: {File}");
            return ValidationResult.Success();
        }
    }

    /// <inheritdoc/>
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        try
        {
            Console.Out.WriteLine(Run(settings));
            return 0;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or NotSupportedException or FormatException or ArgumentException)
        {
            AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {e.Message}");
            return 1;
        }
    }

    /// <summary>The JSON the command prints.</summary>
    public static string Run(Settings settings)
    {
        var tokenizer = TokenizerLoader.Load(settings.Tokenizer);
        var text = settings.Text ?? System.IO.File.ReadAllText(settings.File!);
        return TokenizeReport.ToJson(tokenizer, text, settings.Chat, addBos: !settings.NoBos, addEos: settings.Eos);
    }
}
