// Overlaid loss curves of a study: one line per arm (bias-corrected EMA of the logged values, TensorBoard's
// smoothing as in LossCurves), one PNG per metric (class loss, KD loss), as the seed tutorial compares its arms.
// Reference: ScottPlot 5 cookbook (scatter lines, legends, SavePng).
using ScottPlot;
using SharpTune.Recipes.Plotting;
using SharpTune.Training;

namespace SharpTune.Recipes.Study;

/// <summary>Draws one metric of several runs on one chart.</summary>
public static class StudyPlots
{
    /// <summary>
    /// Plots <paramref name="key"/> (or, for runs that lack it, <paramref name="fallbackKey"/>) of each labelled JSONL
    /// metric log and writes a PNG atomically. Returns the labels drawn; writes nothing and returns none when no run
    /// has a finite value.
    /// </summary>
    public static IReadOnlyList<string> Overlay(IReadOnlyList<(string Label, string JsonlLog)> runs, string key, string? fallbackKey,
        string title, string pngPath, double smoothing = 0.6, int width = 1100, int height = 650)
    {
        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var drawn = new List<string>();
        foreach (var (label, log) in runs)
        {
            var rows = JsonlMetricLogger.Read(log);
            var used = rows.Any(r => r.TryGetValue(key, out var v) && double.IsFinite(v)) ? key : fallbackKey;
            if (used is null) continue;
            var points = rows.Where(r => r.TryGetValue(used, out var v) && double.IsFinite(v) && r.ContainsKey("step")).Select(r => (X: r["step"], Y: r[used])).ToArray();
            if (points.Length == 0) continue;
            var line = plot.Add.ScatterLine(points.Select(p => p.X).ToArray(), LossCurves.Smooth(points.Select(p => p.Y).ToArray(), smoothing));
            line.Color = palette.GetColor(drawn.Count);
            line.LineWidth = 2;
            line.LegendText = used == key ? label : $"{label} ({used})";
            drawn.Add(label);
        }
        if (drawn.Count == 0) return drawn;
        plot.Title(title);
        plot.XLabel("optimizer step");
        plot.YLabel(smoothing > 0 ? $"loss per token (EMA {smoothing:0.##})" : "loss per token");
        plot.ShowLegend(Alignment.UpperRight);
        var full = Path.GetFullPath(pngPath);
        var folder = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(folder);
        var temp = Path.Combine(folder, $".{Path.GetFileNameWithoutExtension(full)}.{Guid.NewGuid():N}.png");
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
}
