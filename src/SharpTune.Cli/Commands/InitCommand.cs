// `sharptune init <config.json> <out_dir>`: writes a Hugging Face model folder at the shape a config.json describes,
// with random weights initialised as transformers initialises a fresh Llama/Qwen2 model (matrices N(0, 0.02),
// biases 0, norms 1; see Models/RandomInit.cs). For benchmarks and smoke runs at real shapes without downloading
// weights (bench/RealShapes), and as a from-scratch starting point. Written atomically.
using System.ComponentModel;
using System.Globalization;
using SharpTune.Models;
using SharpTune.Native;
using Spectre.Console.Cli;
using TorchSharp;

namespace SharpTune.Cli.Commands;

/// <summary>Writes a randomly initialised HF folder from a config.json.</summary>
internal sealed class InitCommand(CliServices services) : Command<InitCommand.Settings>
{
    /// <summary>Arguments of <c>init</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<config.json>")]
        [Description("an HF Llama or Qwen2 config.json (the architecture to build)")]
        public string Config { get; init; } = "";

        [CommandArgument(1, "<out_dir>")]
        [Description("HF folder to write (must not hold a config.json yet)")]
        public string OutputDir { get; init; } = "";

        [CommandOption("--seed <SEED>")]
        [Description("random seed (default 0)")]
        public long Seed { get; init; }

        [CommandOption("--dtype <DTYPE>")]
        [Description("bf16 (default, what Hub checkpoints store) or fp32")]
        public string Dtype { get; init; } = "bf16";

        [CommandOption("--std <STD>")]
        [Description("standard deviation of the matrices (default: the file's initializer_range, else 0.02)")]
        public double? Std { get; init; }

        public override Spectre.Console.ValidationResult Validate() =>
            Dtype is "bf16" or "bfloat16" or "fp32" or "float32" ? Std is null or > 0 ? Spectre.Console.ValidationResult.Success()
                : Spectre.Console.ValidationResult.Error($"--std must be positive, got {Std}")
            : Spectre.Console.ValidationResult.Error($"--dtype must be bf16 or fp32, got '{Dtype}'");
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        TorchRuntime.EnsureLoaded();
        var dtype = settings.Dtype is "fp32" or "float32" ? torch.ScalarType.Float32 : torch.ScalarType.BFloat16;
        var report = RandomInit.WriteHfFolder(settings.Config, settings.OutputDir, settings.Seed, dtype, settings.Std);
        services.WriteOut(string.Create(CultureInfo.InvariantCulture,
            $"Wrote {report.Folder}: {report.Parameters:N0} parameters, {(dtype == torch.ScalarType.BFloat16 ? "bf16" : "fp32")}, matrices N(0, {report.Std:G3}), seed {settings.Seed}\n"));
        return 0;
    }
}
