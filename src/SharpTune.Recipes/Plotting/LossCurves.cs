// Loss curves written at the end of a run: total, class (cross-entropy) and KD loss against the optimizer step, each
// drawn raw (faint) and smoothed (solid), and the held-out loss when the run validated, read from the run's JSONL metric log. Lives in Recipes because it needs
// ScottPlot; the library only writes the log.
// Smoothing is TensorBoard's: an exponential moving average with its start-up bias removed,
// s_t = a*s_{t-1} + (1-a)*x_t, shown as s_t / (1 - a^t) (Kingma & Ba's bias correction), skipping non-finite points.
// References: ScottPlot 5 cookbook (scatter plots, legends, SavePng); TensorBoard scalar dashboard smoothing.
using ScottPlot;
using SharpTune.Training;

namespace SharpTune.Recipes.Plotting;

/// <summary>Draws loss curves from a JSONL metric log.</summary>
public static class LossCurves
{
    /// <summary>Metrics drawn, in order, with their legend names.</summary>
    public static IReadOnlyList<(string Key, string Label)> Series { get; } =
        [
            ("loss", "total loss"), ("class_loss", "class loss (CE)"), ("kd_loss", "KD loss"), (HeldOutKey, "held-out loss (CE)"),
            ("reverse_kl_student_samples", "reverse KL on student samples"), ("teacher_nll_student_samples", "teacher NLL of student samples"),
        ];

    // The held-out loss is sparse (every run_val_every_n_steps) and already an average over the whole split: drawn as
    // it is, with markers, never smoothed.
    private const string HeldOutKey = "val_loss";

    /// <summary>
    /// Reads <paramref name="jsonlLog"/> and writes a PNG of every present loss series, raw and smoothed, to
    /// <paramref name="pngPath"/> (atomically). Returns the series drawn.
    /// </summary>
    /// <param name="jsonlLog">A metric log written by <see cref="JsonlMetricLogger"/>.</param>
    /// <param name="pngPath">Output file (.png).</param>
    /// <param name="smoothing">EMA weight in [0, 1); 0 draws no smoothed line.</param>
    /// <param name="width">Image width in pixels.</param>
    /// <param name="height">Image height in pixels.</param>
    public static IReadOnlyList<string> Plot(string jsonlLog, string pngPath, double smoothing = 0.9, int width = 1200, int height = 700)
    {
        if (!(smoothing >= 0 && smoothing < 1)) throw new ArgumentOutOfRangeException(nameof(smoothing), smoothing, "smoothing must be in [0, 1)");
        if (width < 100 || height < 100) throw new ArgumentOutOfRangeException(nameof(width), $"{width}x{height}", "the image must be at least 100x100");
        if (!File.Exists(jsonlLog)) throw new FileNotFoundException($"metric log '{jsonlLog}' not found", jsonlLog);
        var rows = JsonlMetricLogger.Read(jsonlLog);

        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var drawn = new List<string>();
        foreach (var (key, label) in Series)
        {
            var points = rows.Where(r => r.TryGetValue(key, out var v) && double.IsFinite(v)).Select(r => (X: r["step"], Y: r[key])).ToArray();
            if (points.Length == 0) continue;
            var color = palette.GetColor(drawn.Count);
            var xs = points.Select(p => p.X).ToArray();
            if (key == HeldOutKey)
            {
                var held = plot.Add.Scatter(xs, points.Select(p => p.Y).ToArray());
                held.Color = color;
                held.LineWidth = 2.5f;
                held.MarkerSize = 7;
                held.LegendText = label;
                drawn.Add(key);
                continue;
            }
            var raw = plot.Add.ScatterLine(xs, points.Select(p => p.Y).ToArray());
            raw.Color = color.WithAlpha(smoothing > 0 ? 0.3 : 1.0);
            raw.LineWidth = 1;
            raw.LegendText = smoothing > 0 ? $"{label} (raw)" : label;
            if (smoothing > 0)
            {
                var smooth = plot.Add.ScatterLine(xs, Smooth(points.Select(p => p.Y).ToArray(), smoothing));
                smooth.Color = color;
                smooth.LineWidth = 2.5f;
                smooth.LegendText = $"{label} (EMA {smoothing:0.##})";
            }
            drawn.Add(key);
        }
        if (drawn.Count == 0)
            throw new InvalidDataException($"'{jsonlLog}' holds no finite values for {string.Join(", ", Series.Select(s => s.Key))}");

        plot.Title(drawn.Contains(HeldOutKey) ? "Training and held-out loss" : "Training loss");
        plot.XLabel("optimizer step");
        plot.YLabel("loss (mean per token)");
        plot.ShowLegend(Alignment.UpperRight);

        var full = Path.GetFullPath(pngPath);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileNameWithoutExtension(full)}.{Guid.NewGuid():N}.png");
        try
        {
            plot.SavePng(temp, width, height);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
        return drawn;
    }

    /// <summary>Bias-corrected exponential moving average (TensorBoard's smoothing) of <paramref name="values"/>.</summary>
    public static double[] Smooth(IReadOnlyList<double> values, double weight)
    {
        var result = new double[values.Count];
        double last = 0, debias = 1;
        for (var i = 0; i < values.Count; i++)
        {
            last = last * weight + (1 - weight) * values[i];
            debias *= weight;
            result[i] = weight == 0 ? values[i] : last / (1 - debias);
        }
        return result;
    }
}
