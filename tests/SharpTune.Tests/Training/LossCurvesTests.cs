using SharpTune.Recipes.Plotting;
using SharpTune.Training;
using SkiaSharp;

namespace SharpTune.Tests.Training;

public sealed class LossCurvesTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "sharptune-lc-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    private string WriteLog(bool withKd)
    {
        var path = Path.Combine(_dir, "log.jsonl");
        var rng = new Random(0);
        using var log = new JsonlMetricLogger(path);
        for (var step = 1; step <= 200; step++)
        {
            var ce = 3.0 * Math.Exp(-step / 60.0) + 0.5 + 0.2 * rng.NextDouble();
            var kd = 2.0 * Math.Exp(-step / 40.0) + 0.3 + 0.2 * rng.NextDouble();
            log.Log(step, new StepMetrics
            {
                Loss = withKd ? 0.5 * ce + 0.5 * kd : ce, ClassLoss = withKd ? ce : null, KdLoss = withKd ? kd : null, Lr = 1e-3,
            }.ToDictionary());
        }
        return path;
    }

    [Fact]
    public void Plot_KdLog_WritesPngOfRequestedSizeWithCurves()
    {
        var png = Path.Combine(_dir, "loss_curves.png");
        var drawn = LossCurves.Plot(WriteLog(withKd: true), png, width: 800, height: 500);

        Assert.Equal(new[] { "loss", "class_loss", "kd_loss" }, drawn);
        using var bitmap = SKBitmap.Decode(png);
        Assert.NotNull(bitmap);
        Assert.Equal((800, 500), (bitmap.Width, bitmap.Height));
        // Not blank: many distinct colours and a good share of non-background pixels.
        var colours = new HashSet<uint>();
        var nonWhite = 0;
        for (var y = 0; y < bitmap.Height; y += 2)
            for (var x = 0; x < bitmap.Width; x += 2)
            {
                var c = bitmap.GetPixel(x, y);
                colours.Add((uint)c);
                if (c.Red < 200 || c.Green < 200 || c.Blue < 200) nonWhite++;
            }
        Assert.True(colours.Count > 20, $"only {colours.Count} colours");
        Assert.True(nonWhite > 2000, $"only {nonWhite} sampled non-white pixels");
        Assert.Empty(Directory.GetFiles(_dir, ".*"));
    }

    [Fact]
    public void Plot_FineTuneLog_DrawsTotalLossOnly() =>
        Assert.Equal(new[] { "loss" }, LossCurves.Plot(WriteLog(withKd: false), Path.Combine(_dir, "ft.png")));

    [Fact]
    public void Plot_NoLossValues_ThrowsNamingLog()
    {
        Directory.CreateDirectory(_dir);
        var path = Path.Combine(_dir, "empty.jsonl");
        File.WriteAllText(path, "{\"step\":1,\"lr\":0.1}\n");
        var e = Assert.Throws<InvalidDataException>(() => LossCurves.Plot(path, Path.Combine(_dir, "x.png")));
        Assert.Contains("empty.jsonl", e.Message);
    }

    [Fact]
    public void Smooth_ConstantInput_StaysConstantFromFirstPoint()
    {
        // Bias correction: an EMA of a constant equals the constant from the first point on.
        Assert.All(LossCurves.Smooth(new[] { 4.0, 4.0, 4.0 }, 0.9), v => Assert.Equal(4.0, v, 12));
        // Two points, weight 0.5: s1 = 0.5*2/(0.5) = 2; s2 = (0.5*1 + 0.5*4)/(0.75) = 10/3.
        var s = LossCurves.Smooth(new[] { 2.0, 4.0 }, 0.5);
        Assert.Equal(2.0, s[0], 12);
        Assert.Equal(10.0 / 3.0, s[1], 12);
    }
}
