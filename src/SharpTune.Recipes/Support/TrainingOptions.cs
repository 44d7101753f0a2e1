// Small option records the training recipes bind from their configs.
namespace SharpTune.Recipes.Support;

/// <summary>The <c>metric_logger:</c> map: where metrics go besides the console.</summary>
/// <param name="Jsonl">Append one JSON object per log step to <c>log_dir/metrics.jsonl</c>.</param>
/// <param name="Tensorboard">Write TensorBoard event files under <c>log_dir/tensorboard</c>.</param>
/// <param name="LogDir">Folder for the logs (default <c>output_dir/logs</c>).</param>
public sealed record MetricLoggerOptions(bool Jsonl = true, bool Tensorboard = true, string? LogDir = null);
