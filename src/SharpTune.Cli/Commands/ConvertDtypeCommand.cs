// `sharptune convert dtype <in_dir> <out_dir> --dtype bfloat16`: an HF model folder with its float weights cast to
// another dtype (config.json's torch_dtype updated, tokenizer and other files copied), written atomically.
using System.ComponentModel;
using SharpTune.Checkpointing;
using SharpTune.Native;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Casts an HF folder's weights to another dtype.</summary>
internal sealed class ConvertDtypeCommand(CliServices services) : Command<ConvertDtypeCommand.Settings>
{
    /// <summary>Arguments of <c>convert dtype</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<in_dir>")]
        [Description("HF model folder (config.json + safetensors)")]
        public string InputDir { get; init; } = "";

        [CommandArgument(1, "<out_dir>")]
        [Description("folder to write (replaced only once complete)")]
        public string OutputDir { get; init; } = "";

        [CommandOption("--dtype <DTYPE>")]
        [Description("float32, bfloat16 or float16 (default bfloat16)")]
        public string Dtype { get; init; } = "bfloat16";
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        TorchRuntime.EnsureLoaded();
        var result = DtypeConverter.Convert(settings.InputDir, settings.OutputDir, settings.Dtype);
        services.WriteOut($"Wrote {result.OutputDir}: {result.Converted} tensors cast to {settings.Dtype}, {result.Kept} kept, {result.Bytes:N0} bytes of weights\n");
        return 0;
    }
}
