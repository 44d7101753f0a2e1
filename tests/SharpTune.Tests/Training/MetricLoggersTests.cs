using System.Buffers.Binary;
using System.Text;
using SharpTune.Training;
using TorchSharp;

namespace SharpTune.Tests.Training;

public sealed class MetricLoggersTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "sharptune-ml-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    [Fact]
    public void JsonlLogger_TwoSteps_OneObjectPerLineReadBack()
    {
        var path = Path.Combine(_dir, "log.jsonl");
        using (var log = new JsonlMetricLogger(path))
        {
            log.Log(1, new StepMetrics { Loss = 2.5, ClassLoss = 2.0, KdLoss = 3.0, Lr = 3e-4, GradNorm = 1.25, TokensPerSecond = 900, PeakMemoryGib = 1.5 }.ToDictionary());
            log.Log(2, new Dictionary<string, double> { ["loss"] = double.NaN });
        }
        var lines = File.ReadAllLines(path);
        Assert.Equal(2, lines.Length);
        Assert.StartsWith("{\"step\":1,", lines[0]);
        Assert.Contains("\"kd_loss\":3", lines[0]);
        Assert.Equal("{\"step\":2,\"loss\":null}", lines[1]);
        var rows = JsonlMetricLogger.Read(path);
        Assert.Equal(0.0003, rows[0]["lr"]);
        Assert.Equal(1.5, rows[0]["peak_memory"]);
        Assert.True(double.IsNaN(rows[1]["loss"]));
    }

    [Fact]
    public void JsonlLogger_Reopened_Appends()
    {
        var path = Path.Combine(_dir, "log.jsonl");
        using (var log = new JsonlMetricLogger(path)) log.Log(1, new Dictionary<string, double> { ["loss"] = 1 });
        using (var log = new JsonlMetricLogger(path)) log.Log(2, new Dictionary<string, double> { ["loss"] = 0.5 });
        Assert.Equal(new[] { 1.0, 2.0 }, JsonlMetricLogger.Read(path).Select(r => r["step"]));
    }

    [Fact]
    public void Read_BrokenLine_NamesFileAndLine()
    {
        var path = Path.Combine(_dir, "bad.jsonl");
        Directory.CreateDirectory(_dir);
        File.WriteAllText(path, "{\"step\":1}\n{\"loss\":\n");
        var e = Assert.Throws<InvalidDataException>(() => JsonlMetricLogger.Read(path));
        Assert.Contains("line 2", e.Message);
    }

    [Fact]
    public void Crc32C_Rfc3720Vectors_Match()
    {
        Assert.Equal(0xE3069283u, Crc32C("123456789"u8));
        Assert.Equal(0x8A9136AAu, Crc32C(new byte[32]));
        Assert.Equal(0x62A8AB43u, Crc32C(Enumerable.Repeat((byte)0xFF, 32).ToArray()));
    }

    [Fact]
    public void TensorBoardLogger_Scalars_ReadBackWithValidFraming()
    {
        var before = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;
        string dir;
        using (var tb = new TensorBoardMetricLogger(Path.Combine(_dir, "tb")))
        {
            dir = tb.LogDir;
            tb.Log(5, new Dictionary<string, double> { ["loss"] = 1.75, ["lr"] = 0.001 });
            tb.Log(10, new Dictionary<string, double> { ["loss"] = 1.5 });
        }
        var after = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;
        var file = Directory.GetFiles(dir, "events.out.tfevents.*").Single();
        var events = ReadEvents(file);
        Assert.Equal("brain.Event:2", events[0].FileVersion);
        var scalars = events.Where(e => e.Summary is not null)
            .Select(e => (e.Step, e.Summary.Value[0].Tag, e.Summary.Value[0].SimpleValue)).ToList();
        Assert.Equal(new[] { (5L, "loss", 1.75f), (5L, "lr", 0.001f), (10L, "loss", 1.5f) }, scalars);
        // Every record, the first (file_version) included, is stamped in Unix seconds (a double, millisecond
        // resolution) between the moments before and after writing, as TensorBoard expects.
        Assert.All(events, e => Assert.InRange(e.WallTime, before - 0.001, after + 0.001));
        // TensorFlow's file name carries the creation time in Unix seconds too.
        var stamp = long.Parse(Path.GetFileName(file).Split('.')[3], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(stamp, (long)Math.Floor(before), (long)Math.Ceiling(after));
    }

    [Fact]
    public void TensorBoardLogger_StepBeyondInt32_WrittenAsInt64()
    {
        // Event.step is an int64 in TensorBoard's protobuf; a step past 2^31 is kept, not wrapped.
        string file;
        using (var tb = new TensorBoardMetricLogger(Path.Combine(_dir, "tb2")))
        {
            tb.Log(1L << 32, new Dictionary<string, double> { ["loss"] = 1 });
            file = tb.FilePath;
        }
        Assert.Equal(1L << 32, ReadEvents(file)[^1].Step);
        using var again = new TensorBoardMetricLogger(Path.Combine(_dir, "tb3"));
        Assert.Throws<ArgumentOutOfRangeException>(() => again.Log(-1, new Dictionary<string, double> { ["loss"] = 1 }));
    }

    [Fact]
    public void ProcessMemory_StatusText_ParsesKiloBytes()
    {
        const string text = "Name:\tdotnet\nVmPeak:\t 999 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n";
        var m = ProcessMemory.Parse(text);
        Assert.Equal(100L * 1024 * 1024, m.RssBytes);
        Assert.Equal(200L * 1024 * 1024, m.PeakRssBytes);
        Assert.Throws<InvalidDataException>(() => ProcessMemory.Parse("Name:\tx\n"));
    }

    [Fact]
    public void ProcessMemory_ThisProcess_PeakAtLeastCurrent()
    {
        var m = ProcessMemory.Read();
        Assert.True(m.RssBytes > 10L * 1024 * 1024, $"RSS {m.RssBytes}");
        Assert.True(m.PeakRssBytes >= m.RssBytes);
    }

    /// <summary>An independent TFRecord reader: checks both masked CRCs of every record.</summary>
    private static List<Tensorboard.Event> ReadEvents(string file)
    {
        var bytes = File.ReadAllBytes(file);
        var events = new List<Tensorboard.Event>();
        var pos = 0;
        while (pos < bytes.Length)
        {
            var len = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(pos));
            Assert.Equal(Masked(bytes.AsSpan(pos, 8)), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(pos + 8)));
            var payload = bytes.AsSpan(pos + 12, len);
            Assert.Equal(Masked(payload), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(pos + 12 + len)));
            events.Add(Tensorboard.Event.Parser.ParseFrom(payload.ToArray()));
            pos += 12 + len + 4;
        }
        return events;
    }

    // CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit, checked against RFC 3720 B.4 above.
    private static uint Crc32C(ReadOnlySpan<byte> data)
    {
        var crc = 0xFFFFFFFFu;
        foreach (var b in data)
        {
            crc ^= b;
            for (var k = 0; k < 8; k++) crc = (crc & 1) != 0 ? 0x82F63B78u ^ (crc >> 1) : crc >> 1;
        }
        return ~crc;
    }

    private static uint Masked(ReadOnlySpan<byte> data)
    {
        var crc = Crc32C(data);
        return unchecked(((crc >> 15) | (crc << 17)) + 0xa282ead8u);
    }
}
