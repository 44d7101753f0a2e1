// Runs a study plan arm by arm through the recipe registry, exactly as `sharptune run` would (validate the config
// with its overrides, then Setup -> Train -> Cleanup), then evaluates the arm with the study's eval recipe. Each
// finished arm gets <arm_dir>/done.json, written atomically last, holding a fingerprint of its commands and config
// files: a rerun skips arms whose marker matches, so an interrupted study resumes where it stopped; an arm without
// a marker (interrupted mid-way) or with a stale one (its commands changed) is cleared and run again.
// Progress: the running arm, arms done / total and an ETA that prices each remaining arm by the finished arms of the
// same recipe and config (grid arms share a cost; a teacher run first must not set the price of its cheap students),
// else by the mean. An interrupted study (Ctrl-C, a failed arm) still writes the report of the arms that finished.
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using SharpTune.Checkpointing;
using SharpTune.Config;

namespace SharpTune.Recipes.Study;

/// <summary>What <c>done.json</c> records about a finished arm.</summary>
/// <param name="Arm">Arm name.</param>
/// <param name="Fingerprint">Hash of the commands and config files that produced it.</param>
/// <param name="Command">Training command line (null for an evaluation-only arm).</param>
/// <param name="EvalCommand">Evaluation command line (null when not evaluated).</param>
/// <param name="TrainSeconds">Wall time of the training run.</param>
/// <param name="EvalSeconds">Wall time of the evaluation.</param>
/// <param name="FinishedUtc">When the arm finished.</param>
public sealed record ArmMarker(string Arm, string Fingerprint, string? Command, string? EvalCommand, double TrainSeconds,
    double EvalSeconds, DateTimeOffset FinishedUtc)
{
    /// <summary>The marker's file name inside the arm folder.</summary>
    public const string FileName = "done.json";

    private static readonly JsonSerializerOptions Options = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>Reads a marker; null when absent or unreadable (a torn write is treated as "not done").</summary>
    public static ArmMarker? TryRead(string armDir)
    {
        var path = Path.Combine(armDir, FileName);
        if (!File.Exists(path)) return null;
        try { return JsonSerializer.Deserialize<ArmMarker>(File.ReadAllText(path), Options); }
        catch (JsonException) { return null; }
    }

    /// <summary>Writes the marker atomically.</summary>
    public void Write(string armDir) => AtomicFile.WriteAllText(Path.Combine(armDir, FileName), JsonSerializer.Serialize(this, Options));
}

/// <summary>The outcome of a study run.</summary>
/// <param name="Ran">Arms run in this invocation.</param>
/// <param name="Skipped">Arms skipped because their marker matched.</param>
/// <param name="Seconds">Wall time of this invocation.</param>
/// <param name="ReportDir">The report folder.</param>
public sealed record StudyOutcome(IReadOnlyList<string> Ran, IReadOnlyList<string> Skipped, double Seconds, string ReportDir);

/// <summary>Runs a study through a recipe registry.</summary>
/// <param name="registry">The recipes.</param>
/// <param name="reporter">Where progress goes. The recipes' own step lines and info lines reach it only as
/// <see cref="IRecipeReporter.Verbose"/> (they are in each arm's metrics.jsonl and log): the study shows one progress
/// line, tagged with the arm.</param>
/// <param name="progressLines">Also write a plain line every ~10% of an arm's training (for piped output, where no
/// live progress bar is drawn).</param>
public sealed class StudyRunner(RecipeRegistry registry, IRecipeReporter reporter, bool progressLines = false)
{
    /// <summary>
    /// Checks every arm's training config and evaluation config (with their overrides) against the registry, as
    /// <c>sharptune validate</c> does; returns every problem, each prefixed with the arm.
    /// </summary>
    public IReadOnlyList<string> Validate(StudyPlan plan)
    {
        var problems = new List<string>();
        foreach (var arm in plan.Arms)
        {
            if (arm.Recipe is not null)
                Check(arm.Name, arm.Recipe, arm.ConfigPath!, arm.Overrides, problems);
            if (arm.Evaluate && plan.Study.Eval is { } eval)
                Check($"{arm.Name} (eval)", eval.Recipe, plan.EvalConfigPath!, arm.EvalOverrides, problems);
        }
        return problems;
    }

    /// <summary>Runs every arm not yet done, in plan order, then writes the report.</summary>
    /// <exception cref="ConfigException">A config does not validate (nothing is run).</exception>
    public StudyOutcome Run(StudyPlan plan, CancellationToken cancellationToken)
    {
        var problems = Validate(plan);
        if (problems.Count > 0)
            throw new ConfigException(problems.Select(p => new ConfigProblem(null, "study", p)).ToList());
        Directory.CreateDirectory(plan.StudyDir);
        var clock = Stopwatch.StartNew();
        var ran = new List<string>();
        var skipped = new List<string>();
        var durations = new List<(PlannedArm Arm, double Seconds)>();
        try
        {
            for (var i = 0; i < plan.Arms.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var arm = plan.Arms[i];
                var fingerprint = Fingerprint(plan, arm);
                var marker = ArmMarker.TryRead(arm.ArmDir);
                if (marker is not null && marker.Fingerprint == fingerprint)
                {
                    skipped.Add(arm.Name);
                    durations.Add((arm, marker.TrainSeconds + marker.EvalSeconds));
                    reporter.Info($"[{i + 1}/{plan.Arms.Count}] {arm.Name}: done earlier ({Path.Combine(arm.ArmDir, ArmMarker.FileName)}), skipped");
                    reporter.Progress("study", i + 1, plan.Arms.Count);
                    continue;
                }
                if (marker is not null)
                    reporter.Warning($"{arm.Name}: its commands or configs changed since it ran; running it again");
                if (Directory.Exists(arm.ArmDir)) Directory.Delete(arm.ArmDir, recursive: true); // a partial or stale arm
                Directory.CreateDirectory(arm.ArmDir);

                var eta = durations.Count == 0 ? "unknown until the first arm finishes"
                    : FormatSeconds(plan.Arms.Skip(i).Sum(a => Estimate(a, durations)));
                reporter.Info($"[{i + 1}/{plan.Arms.Count}] {arm.Name}: running (study elapsed {FormatSeconds(clock.Elapsed.TotalSeconds)}, ETA {eta})");
                var later = plan.Arms.Skip(i + 1).ToList();
                var tag = $"[{i + 1}/{plan.Arms.Count}] {arm.Name}";
                var prefixed = new ArmReporter(reporter, tag, projected =>
                    projected + later.Sum(a => Estimate(a, [.. durations, (arm, projected)])), progressLines);
                double trainSeconds = 0, evalSeconds = 0;
                if (arm.Recipe is not null)
                {
                    reporter.Info($"  $ {plan.RunCommand(arm)}");
                    trainSeconds = RunRecipe(arm.Recipe, arm.ConfigPath!, arm.Overrides, Path.Combine(arm.ArmDir, "resolved_config.yaml"), prefixed, cancellationToken);
                }
                if (arm.Evaluate && plan.Study.Eval is { } eval)
                {
                    reporter.Info($"  $ {plan.EvalRunCommand(arm)}");
                    evalSeconds = RunRecipe(eval.Recipe, plan.EvalConfigPath!, arm.EvalOverrides, Path.Combine(arm.ArmDir, "eval_resolved_config.yaml"),
                        new ArmReporter(reporter, tag), cancellationToken); // its steps are not the arm's training steps: no ETA from them
                    var results = StudyReport.ResultsPath(arm);
                    if (!File.Exists(results))
                        throw new InvalidDataException($"arm '{arm.Name}': the eval recipe '{eval.Recipe}' wrote no {results}; the study reads results.json from the eval output_dir");
                }
                new ArmMarker(arm.Name, fingerprint, arm.Command, plan.EvalCommand(arm), trainSeconds, evalSeconds, DateTimeOffset.UtcNow).Write(arm.ArmDir);
                durations.Add((arm, trainSeconds + evalSeconds));
                ran.Add(arm.Name);
                reporter.Info($"[{i + 1}/{plan.Arms.Count}] {arm.Name}: done in {FormatSeconds(trainSeconds + evalSeconds)} (train {trainSeconds:F1} s, eval {evalSeconds:F1} s)");
                reporter.Progress("study", i + 1, plan.Arms.Count);
            }
        }
        catch (Exception) when (ran.Count + skipped.Count > 0)
        {
            // Interrupted or failed: the arms that finished still get their report (it is rebuilt from disk later).
            try
            {
                var partial = StudyReport.Write(plan);
                reporter.Warning($"study stopped after {ran.Count + skipped.Count} of {plan.Arms.Count} arms; report of the finished arms: {Path.Combine(partial, "report.md")} (rerun ablate to continue)");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
            {
                reporter.Warning($"study stopped; the report of the finished arms could not be written: {e.Message}");
            }
            throw;
        }
        var reportDir = StudyReport.Write(plan);
        reporter.Info($"report: {Path.Combine(reportDir, "report.md")} and report.html ({ran.Count} arms run, {skipped.Count} skipped, {clock.Elapsed.TotalSeconds:F1} s)");
        return new StudyOutcome(ran, skipped, clock.Elapsed.TotalSeconds, reportDir);
    }

    private double RunRecipe(string recipeName, string configPath, IReadOnlyList<string> overrides, string resolvedPath, IRecipeReporter armReporter, CancellationToken cancellationToken)
    {
        var recipe = registry.Get(recipeName);
        var result = registry.Validate(recipe, configPath, overrides);
        if (!result.IsValid) throw new ConfigException(result.Problems);
        AtomicFile.WriteAllText(resolvedPath, result.Config!.ToYaml());
        var watch = Stopwatch.StartNew();
        RecipeRegistry.Run(recipe, result.Config!, armReporter, cancellationToken);
        return watch.Elapsed.TotalSeconds;
    }

    private void Check(string label, string recipeName, string configPath, IReadOnlyList<string> overrides, List<string> problems)
    {
        if (!registry.TryGet(recipeName, out var recipe))
        {
            problems.Add($"{label}: unknown recipe '{recipeName}'{Names.Suggest(recipeName, registry.All.Select(r => r.Name))}");
            return;
        }
        var result = registry.Validate(recipe, configPath, overrides);
        problems.AddRange(result.Problems.Select(p => $"{label}: {p}"));
    }

    /// <summary>
    /// Hash of what determines an arm's result: its commands, the text of the config files they read, and the
    /// fingerprints of the arms it uses (a rerun teacher makes its KD arms stale too).
    /// </summary>
    public static string Fingerprint(StudyPlan plan, PlannedArm arm)
    {
        var sb = new StringBuilder();
        foreach (var dep in arm.DependsOn)
            sb.AppendLine(Fingerprint(plan, plan.Arms.First(a => a.Name == dep)));
        sb.AppendLine(arm.Command ?? "-").AppendLine(plan.EvalCommand(arm) ?? "-").AppendLine(arm.Checkpoint ?? "-");
        if (arm.ConfigPath is not null) sb.AppendLine(File.ReadAllText(arm.ConfigPath));
        if (arm.Evaluate && plan.EvalConfigPath is not null) sb.AppendLine(File.ReadAllText(plan.EvalConfigPath));
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
    }

    /// <summary>
    /// The expected seconds of <paramref name="arm"/>: the mean of finished arms of the same recipe, config and evaluation
    /// (the same work, e.g. the arms of one grid), else the mean of all finished arms.
    /// </summary>
    public static double Estimate(PlannedArm arm, IReadOnlyList<(PlannedArm Arm, double Seconds)> finished)
    {
        if (finished.Count == 0) return double.NaN;
        var same = finished.Where(f => f.Arm.Recipe == arm.Recipe && f.Arm.ConfigPath == arm.ConfigPath && f.Arm.Evaluate == arm.Evaluate).ToList();
        return (same.Count > 0 ? same : finished).Average(f => f.Seconds);
    }

    private static string FormatSeconds(double s) =>
        s < 60 ? string.Create(CultureInfo.InvariantCulture, $"{s:F0} s") : TimeSpan.FromSeconds(Math.Round(s)).ToString(s < 3600 ? @"m\m\ ss\s" : @"h\h\ mm\m", CultureInfo.InvariantCulture);

    // Passes a recipe's reports on as one study-level progress line: the arm (i/n), its stage and step bar, its latest
    // loss, and the study's ETA from this arm's own step rate: the arm's projected time (elapsed / steps done x steps)
    // stands in for its duration, for itself and for the later arms of its recipe and config, so a slow first arm (a
    // teacher) does not inflate the students' estimate once one student is under way. studyTotal maps the arm's
    // projected seconds to the projected seconds of the rest of the study from this arm's start. The recipe's info
    // and per-step lines become verbose lines (shown with --verbose); warnings pass through. With lines set, a plain
    // line is also written each time the arm passes another tenth of its steps.
    private sealed class ArmReporter(IRecipeReporter inner, string arm, Func<double, double>? studyTotal = null, bool lines = false) : IRecipeReporter
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private double _loss = double.NaN;
        private long _lastTenth = -1;

        public void Info(string message) => inner.Verbose($"  {arm}: {message}");

        public void Warning(string message) => inner.Warning($"{arm}: {message}");

        public void Metrics(long step, IReadOnlyDictionary<string, double> values)
        {
            if (values.TryGetValue("loss", out var loss)) _loss = loss;
            inner.Verbose(string.Create(CultureInfo.InvariantCulture, $"  {arm}: step {step} | ") +
                string.Join(" | ", values.Select(kv => string.Create(CultureInfo.InvariantCulture, $"{kv.Key}: {kv.Value:G5}"))));
        }

        public void Progress(string stage, long completed, long total)
        {
            var label = $"{arm}: {stage}";
            if (!double.IsNaN(_loss)) label += string.Create(CultureInfo.InvariantCulture, $" | loss {_loss:F4}");
            if (studyTotal is not null && completed > 0 && total > 0)
            {
                var elapsed = _clock.Elapsed.TotalSeconds;
                var projected = elapsed / completed * total;
                var remaining = studyTotal(projected) - elapsed;
                if (double.IsFinite(remaining)) label += $" | study ETA {FormatSeconds(Math.Max(0, remaining))}";
            }
            inner.Progress(label, completed, total);
            if (lines && studyTotal is not null && total > 0 && completed * 10 / total is var tenth && tenth > _lastTenth && tenth is > 0 and < 10)
            {
                _lastTenth = tenth;
                inner.Info($"{label} | step {completed}/{total} ({tenth * 10}%)");
            }
        }

        public void Verbose(string message) => inner.Verbose($"  {arm}: {message}");
    }
}
