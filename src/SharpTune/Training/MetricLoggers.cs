// Metric sinks a recipe logs to every `log_every_n_steps`: a JSONL file (one JSON object per log step) and
// TensorBoard event files. Both flush after every record so a killed run keeps what it logged.
// The metric names follow torchtune's KD recipe (loss, class_loss, kd_loss, lr, grad_norm, tokens_per_second,
// peak_memory); any other name is accepted. tokens_per_second counts label tokens (the trained positions, as
// torchtune's num_tokens); processed_tokens_per_second counts every position the model ran on (prompt and padding
// included: what the compute scales with), and step_seconds is the wall time of the last optimizer step.
// TensorBoard: TFRecord event files of TorchSharp's Event protobufs, written here (TorchSharp's SummaryWriter stamps
// the file_version record in .NET ticks); the tests read them back with an independent TFRecord reader (length,
// masked CRC-32C, Event protobuf) and check steps, tags, values and the wall time of every record.
// References: torchtune training/metric_logging.py (DiskLogger, TensorBoardLogger); tensorflow record_writer.cc.
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace SharpTune.Training;

/// <summary>Receives scalar metrics for a training step.</summary>
public interface IMetricLogger : IDisposable
{
    /// <summary>Records <paramref name="metrics"/> for optimizer step <paramref name="step"/>.</summary>
    void Log(long step, IReadOnlyDictionary<string, double> metrics);
}

/// <summary>The standard metrics of one logged step (NaN or null for what a recipe does not compute).</summary>
public sealed record StepMetrics
{
    /// <summary>Total loss (mean per token).</summary>
    public double Loss { get; init; } = double.NaN;
    /// <summary>Cross-entropy part of a KD loss.</summary>
    public double? ClassLoss { get; init; }
    /// <summary>Distillation part of a KD loss.</summary>
    public double? KdLoss { get; init; }
    /// <summary>Learning rate applied in the step.</summary>
    public double Lr { get; init; } = double.NaN;
    /// <summary>Gradient 2-norm before clipping.</summary>
    public double? GradNorm { get; init; }
    /// <summary>Label (trained) tokens per second of the last step.</summary>
    public double? TokensPerSecond { get; init; }
    /// <summary>Processed token positions (prompt and padding included) per second of the last step.</summary>
    public double? ProcessedTokensPerSecond { get; init; }
    /// <summary>Wall seconds of the last optimizer step (all its micro-batches).</summary>
    public double? StepSeconds { get; init; }
    /// <summary>Peak process memory in GiB (peak RSS on CPU).</summary>
    public double? PeakMemoryGib { get; init; }

    /// <summary>The metrics under torchtune's names, leaving out the absent ones.</summary>
    public IReadOnlyDictionary<string, double> ToDictionary()
    {
        var d = new Dictionary<string, double> { ["loss"] = Loss, ["lr"] = Lr };
        if (ClassLoss is { } c) d["class_loss"] = c;
        if (KdLoss is { } k) d["kd_loss"] = k;
        if (GradNorm is { } g) d["grad_norm"] = g;
        if (TokensPerSecond is { } t) d["tokens_per_second"] = t;
        if (ProcessedTokensPerSecond is { } pt) d["processed_tokens_per_second"] = pt;
        if (StepSeconds is { } ss) d["step_seconds"] = ss;
        if (PeakMemoryGib is { } m) d["peak_memory"] = m;
        return d;
    }
}

/// <summary>The tokens and time of one optimizer step (global over ranks), for the throughput metrics.</summary>
/// <param name="LabelTokens">Trained positions (labels not ignored).</param>
/// <param name="ProcessedTokens">Every position the model ran on (b x s over the micro-batches).</param>
/// <param name="Seconds">Wall time of the step.</param>
public readonly record struct StepTiming(long LabelTokens, long ProcessedTokens, double Seconds)
{
    /// <summary>The metrics with these rates filled in.</summary>
    public StepMetrics Apply(StepMetrics metrics) => metrics with
    {
        TokensPerSecond = LabelTokens / Math.Max(1e-9, Seconds),
        ProcessedTokensPerSecond = ProcessedTokens / Math.Max(1e-9, Seconds),
        StepSeconds = Seconds,
    };
}

/// <summary>Appends one JSON object per log step to a <c>.jsonl</c> file: <c>{"step": 10, "loss": 2.31, ...}</c>.</summary>
/// <remarks>
/// Appending (not rewriting) is deliberate: a resumed run continues the same file. Each line is written whole and
/// flushed; non-finite values are written as null because JSON has no NaN.
/// </remarks>
public sealed class JsonlMetricLogger : IMetricLogger
{
    private readonly StreamWriter _writer;

    /// <param name="path">The log file; its folder is created. Existing content is kept and appended to.</param>
    public JsonlMetricLogger(string path)
    {
        FilePath = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(FilePath)!);
        _writer = new StreamWriter(new FileStream(FilePath, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false));
    }

    /// <summary>Full path of the log file.</summary>
    public string FilePath { get; }

    /// <inheritdoc />
    public void Log(long step, IReadOnlyDictionary<string, double> metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteNumber("step", step);
            foreach (var (name, value) in metrics)
            {
                if (name == "step") throw new ArgumentException("metric name 'step' is reserved", nameof(metrics));
                if (double.IsFinite(value)) json.WriteNumber(name, value);
                else json.WriteNull(name);
            }
            json.WriteEndObject();
        }
        _writer.Write(Encoding.UTF8.GetString(buffer.ToArray()));
        _writer.Write('\n');
        _writer.Flush();
    }

    /// <summary>Reads a JSONL metric log back: one dictionary per line (nulls become NaN), with "step" included.</summary>
    public static IReadOnlyList<IReadOnlyDictionary<string, double>> Read(string path)
    {
        var rows = new List<IReadOnlyDictionary<string, double>>();
        var lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                var row = new Dictionary<string, double>();
                foreach (var p in doc.RootElement.EnumerateObject())
                    row[p.Name] = p.Value.ValueKind == JsonValueKind.Number ? p.Value.GetDouble() : double.NaN;
                if (!row.ContainsKey("step")) throw new InvalidDataException("key 'step' is missing");
                rows.Add(row);
            }
            catch (Exception e) when (e is JsonException or InvalidDataException or InvalidOperationException)
            {
                throw new InvalidDataException($"'{path}' line {lineNo.ToString(CultureInfo.InvariantCulture)}: {e.Message}", e);
            }
        }
        return rows;
    }

    /// <inheritdoc />
    public void Dispose() => _writer.Dispose();
}

/// <summary>Writes each metric as a TensorBoard scalar (tag = metric name) to a TFRecord event file.</summary>
/// <remarks>
/// The records are TorchSharp's <c>Tensorboard.Event</c> protobufs with TensorFlow's framing (<c>record_writer.cc</c>):
/// uint64 length, masked CRC-32C of the length, the payload, masked CRC-32C of the payload. Every record, the first
/// (<c>file_version</c>) included, has its wall time in Unix seconds, as TensorBoard reads it; TorchSharp's own
/// SummaryWriter stamps the first record with .NET ticks (TensorBoard then dates the run 20 billion years ahead), which
/// is why it is not used. The file is opened, appended and closed per record, so nothing is lost on a kill.
/// </remarks>
public sealed class TensorBoardMetricLogger : IMetricLogger
{
    private static int s_uid;

    /// <param name="logDir">The run's TensorBoard folder (created); one new event file per logger.</param>
    public TensorBoardMetricLogger(string logDir)
    {
        LogDir = logDir;
        Directory.CreateDirectory(logDir);
        // TensorFlow's name: events.out.tfevents.<unix seconds>.<host>.<pid>.<uid>; TensorBoard reads any such file.
        FilePath = System.IO.Path.Combine(logDir, string.Create(CultureInfo.InvariantCulture,
            $"events.out.tfevents.{DateTimeOffset.UtcNow.ToUnixTimeSeconds()}.{Environment.MachineName}.{Environment.ProcessId}.{Interlocked.Increment(ref s_uid)}"));
        Append(new Tensorboard.Event { FileVersion = "brain.Event:2", WallTime = UnixSeconds() });
    }

    /// <summary>The folder holding the event file.</summary>
    public string LogDir { get; }

    /// <summary>The event file.</summary>
    public string FilePath { get; }

    /// <inheritdoc />
    public void Log(long step, IReadOnlyDictionary<string, double> metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        var wallTime = UnixSeconds();
        foreach (var (tag, value) in metrics)
        {
            var summary = new Tensorboard.Summary();
            summary.Value.Add(new Tensorboard.Summary.Types.Value { Tag = tag, SimpleValue = (float)value });
            Append(new Tensorboard.Event { Step = step, WallTime = wallTime, Summary = summary });
        }
    }

    /// <inheritdoc />
    public void Dispose() { }

    private static double UnixSeconds() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;

    private void Append(Tensorboard.Event record)
    {
        var payload = Google.Protobuf.MessageExtensions.ToByteArray(record);
        var frame = new byte[12 + payload.Length + 4];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(frame, (ulong)payload.Length);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(8), MaskedCrc32C(frame.AsSpan(0, 8)));
        payload.CopyTo(frame, 12);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(12 + payload.Length), MaskedCrc32C(payload));
        using var file = new FileStream(FilePath, FileMode.Append, FileAccess.Write, FileShare.Read);
        file.Write(frame);
    }

    // TFRecord's masked CRC-32C (Castagnoli): rotate right by 15 and add a constant (tensorflow/core/lib/hash/crc32c.h).
    // The CRC itself is TorchSharp's (the one its SummaryWriter frames records with).
    private static uint MaskedCrc32C(ReadOnlySpan<byte> data)
    {
        var crc = TorchSharp.Utils.CRC32C.process(data.ToArray());
        return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
    }
}

/// <summary>Sends every record to several loggers.</summary>
public sealed class CompositeMetricLogger(params IMetricLogger[] loggers) : IMetricLogger
{
    private readonly IMetricLogger[] _loggers = loggers;

    /// <inheritdoc />
    public void Log(long step, IReadOnlyDictionary<string, double> metrics)
    {
        foreach (var l in _loggers) l.Log(step, metrics);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var l in _loggers) l.Dispose();
    }
}
