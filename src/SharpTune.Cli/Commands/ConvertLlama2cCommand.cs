// `sharptune convert llama2c <model.bin> <tokenizer.model> <out_dir>`: turns a llama2.c checkpoint into a Hugging Face
// Llama folder (config.json, model.safetensors, tokenizer.model, generation_config.json), written atomically, that
// `run generate` / `run evaluate` and transformers can load. Reference: karpathy/llama2.c export.py (legacy format).
using System.ComponentModel;
using SharpTune.Checkpointing;
using SharpTune.Native;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Converts a llama2.c checkpoint to an HF folder.</summary>
internal sealed class ConvertLlama2cCommand(CliServices services) : Command<ConvertLlama2cCommand.Settings>
{
    /// <summary>Arguments of <c>convert llama2c</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<model.bin>")]
        [Description("llama2.c legacy checkpoint (7 int32 header, then float32 weights)")]
        public string Model { get; init; } = "";

        [CommandArgument(1, "<tokenizer.model>")]
        [Description("the SentencePiece model the checkpoint was trained with")]
        public string Tokenizer { get; init; } = "";

        [CommandArgument(2, "<out_dir>")]
        [Description("HF folder to write (replaced only once complete)")]
        public string OutputDir { get; init; } = "";
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (!File.Exists(settings.Model)) throw new FileNotFoundException($"llama2.c checkpoint not found: {settings.Model}", settings.Model);
        TorchRuntime.EnsureLoaded();
        var result = Llama2cConverter.Convert(settings.Model, settings.Tokenizer, settings.OutputDir);
        services.WriteOut($"Wrote {result.OutputDir}: {result.Parameters:N0} parameters; {string.Join(", ", result.Files)}\n");
        return 0;
    }
}
