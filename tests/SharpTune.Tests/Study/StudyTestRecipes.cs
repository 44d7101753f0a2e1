// Test-only recipes for the study runner: a "training" recipe that logs a decreasing class/KD loss and writes a
// checkpoint holding a score (its own `quality`, plus its teacher's score times `kd_ratio` when a teacher is
// given), and an "eval" recipe that reads that score and writes results.json like the evaluate recipe. The
// numbers are chosen by the tests, so the report's values and deltas have known expected results.
using System.Collections.Concurrent;
using System.Globalization;
using SharpTune.Config;
using SharpTune.Eval;
using SharpTune.Recipes;
using SharpTune.Training;

namespace SharpTune.Tests.Study;

[Recipe("study_test_train", Description = "test: logs losses, writes a checkpoint with a score")]
[RecipeKey("output_dir", typeof(string), Required = true)]
[RecipeKey("quality", typeof(double), Required = true)]
[RecipeKey("steps", typeof(int))]
[RecipeKey("kd_ratio", typeof(double?))]
[RecipeKey("teacher_dir", typeof(string))]
[RecipeKey("fail", typeof(bool))]
public sealed class StudyTestTrain(SharpTuneConfig config, IRecipeReporter reporter) : IRecipe
{
    /// <summary>Output folders of every run that reached Train, across tests (keyed by folder, so parallel-safe).</summary>
    public static readonly ConcurrentBag<string> Runs = [];

    private readonly string _outputDir = config.Get<string>("output_dir");
    private readonly double _quality = config.Get<double>("quality");
    private readonly int _steps = config.Get("steps", 20);
    private readonly double? _kdRatio = config.Get<double?>("kd_ratio", null);
    private readonly string? _teacherDir = config.Get<string?>("teacher_dir", null);
    private readonly bool _fail = config.Get("fail", false);

    public void Setup(CancellationToken cancellationToken)
    {
        if (_teacherDir is not null && !File.Exists(Path.Combine(_teacherDir, "score.txt")))
            throw new InvalidOperationException($"teacher checkpoint {_teacherDir} is missing: the study ran this arm before its teacher");
    }

    public void Train(CancellationToken cancellationToken)
    {
        Runs.Add(_outputDir);
        if (_fail) throw new InvalidOperationException("simulated crash in the middle of an arm");
        using (var log = new JsonlMetricLogger(Path.Combine(_outputDir, "logs", "metrics.jsonl")))
            for (var step = 1; step <= _steps; step++)
            {
                var ce = 2.0 / step + 0.5;
                var metrics = new StepMetrics { Loss = ce, ClassLoss = _kdRatio is null ? null : ce, KdLoss = _kdRatio is null ? null : 1.0 / step, Lr = 1e-3 };
                log.Log(step, metrics.ToDictionary());
                reporter.Metrics(step, metrics.ToDictionary());
                reporter.Progress("epoch 1/1", step, _steps); // as the training recipes report their steps
                if (step % 10 == 0) log.Log(step, new Dictionary<string, double> { ["val_loss"] = ce + 0.1 + _quality, ["val_ppl"] = Math.Exp(ce + 0.1 + _quality) });
            }
        var score = _quality;
        if (_teacherDir is not null && _kdRatio is { } r) score += r * ReadScore(_teacherDir);
        Directory.CreateDirectory(Path.Combine(_outputDir, "epoch_0"));
        File.WriteAllText(Path.Combine(_outputDir, "epoch_0", "score.txt"), score.ToString("R", CultureInfo.InvariantCulture));
    }

    public void Cleanup()
    {
    }

    public static double ReadScore(string dir) => double.Parse(File.ReadAllText(Path.Combine(dir, "score.txt")), CultureInfo.InvariantCulture);
}

[Recipe("study_test_eval", Description = "test: reads a checkpoint's score, writes results.json")]
[RecipeKey("output_dir", typeof(string), Required = true)]
[RecipeKey("checkpoint_dir", typeof(string), Required = true)]
[RecipeKey("model_name", typeof(string))]
public sealed class StudyTestEval(SharpTuneConfig config, IRecipeReporter reporter) : IRecipe
{
    private readonly string _outputDir = config.Get<string>("output_dir");
    private readonly string _checkpoint = config.Get<string>("checkpoint_dir");
    private readonly string _name = config.Get("model_name", "model");

    public void Setup(CancellationToken cancellationToken)
    {
    }

    public void Train(CancellationToken cancellationToken)
    {
        var score = StudyTestTrain.ReadScore(_checkpoint);
        var report = new EvalReport { Model = _name, Results = [new EvalResult("synthetic", "acc", score, 0.01, 100), new EvalResult("synthetic", "acc_norm", score / 2, null, 100)] };
        report.Save(Path.Combine(_outputDir, "results.json"));
        reporter.Info($"{_name}: acc {score}");
    }

    public void Cleanup()
    {
    }
}
