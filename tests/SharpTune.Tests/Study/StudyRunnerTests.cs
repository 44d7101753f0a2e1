// The study runner end to end on test recipes whose results are known in advance: grid expansion, dependency
// order (the teacher is declared after the KD arms and must still run first), the report's table and deltas,
// commands, resolved configs and loss PNGs, and resuming after a crash without redoing finished arms.
using SharpTune.Config;
using SharpTune.Eval;
using SharpTune.Recipes;
using SharpTune.Recipes.Study;
using SkiaSharp;

namespace SharpTune.Tests.Study;

public sealed class StudyRunnerTests : IDisposable
{
    private static readonly RecipeRegistry Registry = RecipeRegistry.CreateDefault(typeof(StudyTestTrain).Assembly);
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "sharptune-study-" + Guid.NewGuid().ToString("N"));

    public StudyRunnerTests()
    {
        Directory.CreateDirectory(_dir);
        File.WriteAllText(Path.Combine(_dir, "train.yaml"), "# recipe: study_test_train\noutput_dir: out\nquality: 0.1\nsteps: 20\nkd_ratio: null\nteacher_dir: null\nfail: false\n");
        File.WriteAllText(Path.Combine(_dir, "eval.yaml"), "# recipe: study_test_eval\noutput_dir: out\ncheckpoint_dir: null\nmodel_name: null\n");
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    private string WriteStudy(string kdExtra = "")
    {
        var path = Path.Combine(_dir, "study.yaml");
        File.WriteAllText(path, $$"""
            # study: a test study
            name: test_study
            output_dir: {{Path.Combine(_dir, "study")}}
            baseline: student_base
            eval:
              recipe: study_test_eval
              config: eval.yaml
              overrides: ["checkpoint_dir={checkpoint}", "model_name={arm}"]
            arms:
              student_base:
                recipe: study_test_train
                config: train.yaml
                overrides: [quality=0.30]
                checkpoint: "{arm_dir}/epoch_0"
              kd:
                recipe: study_test_train
                config: train.yaml
                overrides: [quality=0.30, "teacher_dir={checkpoint:teacher}"{{kdExtra}}]
                checkpoint: "{arm_dir}/epoch_0"
                grid:
                  kd_ratio: [0.25, 0.5]
              teacher:
                recipe: study_test_train
                config: train.yaml
                overrides: [quality=0.8]
                checkpoint: "{arm_dir}/epoch_0"
                evaluate: false
            """);
        return path;
    }

    private static StudyPlan Plan(string path) =>
        StudyPlan.Create(StudySpec.Load(path), name => throw new FileNotFoundException($"no shipped config '{name}' in tests"));

    [Fact]
    public void Create_GridAndArmReference_ExpandsGridAndRunsTeacherBeforeKdArms()
    {
        var plan = Plan(WriteStudy());

        Assert.Equal(["student_base", "teacher", "kd.kd_ratio-0.25", "kd.kd_ratio-0.5"], plan.Arms.Select(a => a.Name));
        var kd = plan.Arms[2];
        Assert.Equal(["teacher"], kd.DependsOn);
        Assert.Contains("kd_ratio=0.25", kd.Overrides);
        Assert.Contains($"teacher_dir={Path.Combine(_dir, "study", "arms", "teacher", "epoch_0")}", kd.Overrides);
        Assert.Equal($"output_dir={Path.Combine(_dir, "study", "arms", "kd.kd_ratio-0.25")}", kd.Overrides[0]);
        Assert.Contains("model_name=kd.kd_ratio-0.25", kd.EvalOverrides);
        Assert.Equal([("kd_ratio", "0.5")], plan.Arms[3].GridValues);
        Assert.Equal("student_base", plan.Baseline);
    }

    [Fact]
    public void Create_LabelledGridAxes_MultipliesOut()
    {
        var path = Path.Combine(_dir, "grid.yaml");
        File.WriteAllText(path, """
            # study: grid
            output_dir: out
            arms:
              kd:
                recipe: study_test_train
                config: train.yaml
                evaluate: false
                grid:
                  teacher: {finetuned: [quality=0.9], base: [quality=0.1]}
                  optimizer.lr: [1e-3, 3e-4, 1e-4]
            """);

        var plan = Plan(path);

        Assert.Equal(6, plan.Arms.Count);
        Assert.Equal("kd.teacher-finetuned.optimizer.lr-1e-3", plan.Arms[0].Name);
        Assert.Equal("kd.teacher-base.optimizer.lr-1e-4", plan.Arms[5].Name);
        Assert.Contains("quality=0.1", plan.Arms[5].Overrides);
        Assert.Contains("optimizer.lr=1e-4", plan.Arms[5].Overrides);
    }

    [Fact]
    public void Create_CycleBetweenArms_ThrowsNamingTheArms()
    {
        var path = Path.Combine(_dir, "cycle.yaml");
        File.WriteAllText(path, """
            # study: cycle
            output_dir: out
            arms:
              a: {recipe: study_test_train, config: train.yaml, evaluate: false, checkpoint: "{arm_dir}", overrides: ["teacher_dir={checkpoint:b}"]}
              b: {recipe: study_test_train, config: train.yaml, evaluate: false, checkpoint: "{arm_dir}", overrides: ["teacher_dir={checkpoint:a}"]}
            """);

        var e = Assert.Throws<ConfigException>(() => Plan(path));

        Assert.Contains("cycle", e.Message, StringComparison.Ordinal);
        Assert.Contains("a -> [b]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Create_UnknownArmReference_ThrowsWithSuggestion()
    {
        var path = Path.Combine(_dir, "typo.yaml");
        File.WriteAllText(path, """
            # study: typo
            output_dir: out
            arms:
              teacher: {recipe: study_test_train, config: train.yaml, evaluate: false, checkpoint: "{arm_dir}"}
              kd: {recipe: study_test_train, config: train.yaml, evaluate: false, overrides: ["teacher_dir={checkpoint:teacher_ftt}"]}
            """);

        var e = Assert.Throws<ConfigException>(() => Plan(path));

        Assert.Contains("names no arm", e.Message, StringComparison.Ordinal);
        Assert.Contains("teacher", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_UnknownKeyAndMissingCheckpoint_ReportsEveryProblem()
    {
        var path = Path.Combine(_dir, "bad.yaml");
        File.WriteAllText(path, """
            # study: bad
            output_dir: out
            arms:
              a: {recipe: study_test_train, config: train.yaml, overides: [quality=1]}
            """);

        var e = Assert.Throws<ConfigException>(() => StudySpec.Load(path));

        Assert.Contains(e.Problems, p => p.Message.Contains("unknown key 'arms.a.overides'", StringComparison.Ordinal) && p.Message.Contains("overrides", StringComparison.Ordinal));
        Assert.Contains(e.Problems, p => p.Path == "arms.a.checkpoint");
    }

    [Fact]
    public void Validate_WrongOverrideKeyInArm_ReportsArmAndKey()
    {
        var plan = Plan(WriteStudy(", qualty=0.5"));

        var problems = new StudyRunner(Registry, new NullReporter()).Validate(plan);

        Assert.Equal(2, problems.Count); // both grid arms
        Assert.All(problems, p => Assert.Contains("qualty", p, StringComparison.Ordinal));
        Assert.StartsWith("kd.kd_ratio-0.25:", problems[0], StringComparison.Ordinal);
    }

    [Fact]
    public void Run_Study_WritesTableWithDeltasCommandsConfigsAndLossPngs()
    {
        var plan = Plan(WriteStudy());
        var reporter = new NullReporter();

        var outcome = new StudyRunner(Registry, reporter).Run(plan, CancellationToken.None);

        Assert.Equal(4, outcome.Ran.Count);
        // Every training arm's progress carries a study ETA from its own step rate, from its first step on (the first
        // arm included, before any arm has finished)
        foreach (var arm in plan.Arms.Where(a => a.Recipe is not null))
            Assert.Contains(reporter.Stages, st => st.Contains($"] {arm.Name}: ", StringComparison.Ordinal) && st.Contains("| study ETA ", StringComparison.Ordinal));
        var table = StudyReport.Table(plan);
        Assert.Equal([("synthetic", "acc"), ("synthetic", "acc_norm")], table.Columns);
        Assert.Equal(["student_base", "kd.kd_ratio-0.25", "kd.kd_ratio-0.5"], table.Rows.Select(r => r.Arm));
        // acc = quality + kd_ratio * teacher quality: 0.30, 0.30 + 0.25 * 0.8, 0.30 + 0.5 * 0.8.
        Assert.Equal(0.30, table.Rows[0].Values[0]!.Value, 12);
        Assert.Null(table.Rows[0].Deltas[0]);
        Assert.Equal(0.20, table.Rows[1].Deltas[0]!.Value, 12);
        Assert.Equal(0.40, table.Rows[2].Deltas[0]!.Value, 12);
        Assert.Equal(0.20, table.Rows[2].Deltas[1]!.Value, 12); // acc_norm = acc / 2

        var md = File.ReadAllText(Path.Combine(outcome.ReportDir, "report.md"));
        Assert.Contains("| student_base (baseline) | 0.3000 | 0.1500 |", md, StringComparison.Ordinal);
        Assert.Contains("| kd.kd_ratio-0.5 | 0.7000 (+0.4000) | 0.3500 (+0.2000) |", md, StringComparison.Ordinal);
        // configs beside the study file are named from the working folder, so the commands paste where ablate ran
        var train = Path.GetRelativePath(Environment.CurrentDirectory, Path.Combine(_dir, "train.yaml"));
        var eval = Path.GetRelativePath(Environment.CurrentDirectory, Path.Combine(_dir, "eval.yaml"));
        Assert.Contains($"sharptune run study_test_train --config {train} output_dir={Path.Combine(_dir, "study", "arms", "teacher")} quality=0.8", md, StringComparison.Ordinal);
        Assert.Contains($"sharptune run study_test_eval --config {eval}", md, StringComparison.Ordinal);
        // training loss beside the held-out loss: steps 1..20 log ce = 2/step + 0.5, val_loss = ce + 0.1 + quality at 10, 20
        Assert.Contains("| last training loss | last held-out loss | best held-out loss |", md, StringComparison.Ordinal);
        Assert.Contains("| teacher | 0.6000 | 1.5000 (ppl 4.482) at step 20 | 1.5000 (ppl 4.482) at step 20 |", md, StringComparison.Ordinal);
        AssertNonBlankPng(Path.Combine(outcome.ReportDir, "val_loss.png"));
        Assert.Contains("<img src=\"val_loss.png\"", File.ReadAllText(Path.Combine(outcome.ReportDir, "report.html")), StringComparison.Ordinal);
        Assert.Contains("kd_ratio: 0.25", md, StringComparison.Ordinal); // the resolved config of that arm
        var html = File.ReadAllText(Path.Combine(outcome.ReportDir, "report.html"));
        Assert.Contains("<td class=\"up\">0.7000 (+0.4000)</td>", html, StringComparison.Ordinal);
        Assert.Contains("<img src=\"kd_loss.png\"", html, StringComparison.Ordinal);
        AssertNonBlankPng(Path.Combine(outcome.ReportDir, "class_loss.png"));
        AssertNonBlankPng(Path.Combine(outcome.ReportDir, "kd_loss.png"));
    }

    [Fact]
    public void Run_CrashInKdArmThenRerun_SkipsFinishedArmsAndRunsOnlyTheRest()
    {
        var runner = new StudyRunner(Registry, new NullReporter());
        var crashing = Plan(WriteStudy(", fail=true"));
        Assert.Throws<InvalidOperationException>(() => runner.Run(crashing, CancellationToken.None));
        var armsDir = Path.Combine(_dir, "study", "arms");
        Assert.True(File.Exists(Path.Combine(armsDir, "student_base", "done.json")));
        Assert.True(File.Exists(Path.Combine(armsDir, "teacher", "done.json")));
        Assert.False(File.Exists(Path.Combine(armsDir, "kd.kd_ratio-0.25", "done.json")));
        // the arms that finished are reported although the study stopped
        var partial = File.ReadAllText(Path.Combine(_dir, "study", "report", "report.md"));
        Assert.Contains("| student_base (baseline) | 0.3000 | 0.1500 |", partial, StringComparison.Ordinal);

        var outcome = runner.Run(Plan(WriteStudy()), CancellationToken.None);

        Assert.Equal(["student_base", "teacher"], outcome.Skipped);
        Assert.Equal(["kd.kd_ratio-0.25", "kd.kd_ratio-0.5"], outcome.Ran);
        Assert.Single(StudyTestTrain.Runs, d => d == Path.Combine(armsDir, "teacher"));
        Assert.Equal(2, StudyTestTrain.Runs.Count(d => d == Path.Combine(armsDir, "kd.kd_ratio-0.25"))); // crashed once, then ran
        var again = runner.Run(Plan(WriteStudy()), CancellationToken.None);
        Assert.Empty(again.Ran);
    }

    [Fact]
    public void Run_TeacherChangedAfterStudy_RerunsTeacherAndTheArmsUsingIt()
    {
        var runner = new StudyRunner(Registry, new NullReporter());
        runner.Run(Plan(WriteStudy()), CancellationToken.None);
        File.WriteAllText(Path.Combine(_dir, "study.yaml"), File.ReadAllText(Path.Combine(_dir, "study.yaml")).Replace("quality=0.8", "quality=0.6", StringComparison.Ordinal));

        var plan = Plan(Path.Combine(_dir, "study.yaml"));
        var outcome = runner.Run(plan, CancellationToken.None);

        Assert.Equal(["student_base"], outcome.Skipped);
        Assert.Equal(["teacher", "kd.kd_ratio-0.25", "kd.kd_ratio-0.5"], outcome.Ran);
        Assert.Equal(0.30 + 0.5 * 0.6, StudyReport.Table(plan).Rows[2].Values[0]!.Value, 12);
    }

    [Fact]
    public void Run_CancelledAfterFirstArm_RerunStartsAtSecondArm()
    {
        using var cancel = new CancellationTokenSource();
        var runner = new StudyRunner(Registry, new CancelAfterFirstArm(cancel));
        Assert.ThrowsAny<OperationCanceledException>(() => runner.Run(Plan(WriteStudy()), cancel.Token));

        var outcome = new StudyRunner(Registry, new NullReporter()).Run(Plan(WriteStudy()), CancellationToken.None);

        Assert.Equal(["student_base"], outcome.Skipped);
        Assert.Equal(3, outcome.Ran.Count);
    }

    [Fact]
    public void Estimate_SlowFirstArm_PricesOtherConfigsByTheirOwnArms()
    {
        static PlannedArm Arm(string name, string config) =>
            new(name, "r", config, "/c/" + config, [], "/s/" + name, null, true, [], [], []);
        var teacher = Arm("teacher", "teacher.yaml");
        var kd1 = Arm("kd1", "kd.yaml");
        // only the slow teacher has run: every arm is priced at it (nothing better is known)
        Assert.Equal(600, StudyRunner.Estimate(Arm("kd2", "kd.yaml"), [(teacher, 600)]));
        // once a KD arm has run, the other KD arms cost what it cost, not the mean with the teacher (330)
        Assert.Equal(60, StudyRunner.Estimate(Arm("kd2", "kd.yaml"), [(teacher, 600), (kd1, 60)]));
        Assert.Equal(600, StudyRunner.Estimate(Arm("teacher2", "teacher.yaml"), [(teacher, 600), (kd1, 60)]));
        Assert.Equal(330, StudyRunner.Estimate(Arm("other", "other.yaml"), [(teacher, 600), (kd1, 60)]));
    }

    internal static void AssertNonBlankPng(string path)
    {
        Assert.True(File.Exists(path), path);
        using var bitmap = SKBitmap.Decode(path);
        Assert.NotNull(bitmap);
        var colors = new HashSet<uint>();
        for (var y = 0; y < bitmap.Height; y += 3)
            for (var x = 0; x < bitmap.Width; x += 3)
                colors.Add((uint)bitmap.GetPixel(x, y));
        Assert.True(colors.Count > 8, $"{path} has only {colors.Count} colours: blank");
    }

    private sealed class NullReporter : IRecipeReporter
    {
        public List<string> Stages { get; } = [];
        public void Info(string message) { }
        public void Warning(string message) { }
        public void Metrics(long step, IReadOnlyDictionary<string, double> values) { }
        public void Progress(string stage, long completed, long total) { lock (Stages) Stages.Add(stage); }
    }

    // Presses "Ctrl-C" once the study reports its first finished arm.
    private sealed class CancelAfterFirstArm(CancellationTokenSource cancel) : IRecipeReporter
    {
        public void Info(string message) { }
        public void Warning(string message) { }
        public void Metrics(long step, IReadOnlyDictionary<string, double> values) { }
        public void Progress(string stage, long completed, long total)
        {
            if (stage == "study" && completed == 1) cancel.Cancel();
        }
    }

    [Fact]
    public void Summary_TeacherNllMetric_TokenWeightedMeanPerArmPairedOnPrompts()
    {
        // Given a study scored on teacher NLL whose arms wrote one line per held-out prompt (completions of varying length)
        var plan = StudyPlan.Create(StudySpec.Load(WriteStudy(), ["metric=teacher_nll"]), name => throw new FileNotFoundException(name));
        var scored = plan.Arms.Where(a => a.Evaluate).ToList();
        var perArm = new Dictionary<string, CompletionScore[]>();
        for (var k = 0; k < scored.Count; k++)
        {
            var arm = scored[k];
            Directory.CreateDirectory(Path.Combine(arm.ArmDir, "eval"));
            perArm[arm.Name] = [.. Enumerable.Range(0, 40).Select(i => new CompletionScore(i * 3, 20 + i % 7, (2.0 + 0.1 * k) * (20 + i % 7) + (i % 5) * 0.3))];
            File.WriteAllText(Path.Combine(arm.ArmDir, "eval", CompletionScore.FileName), CompletionScore.ToJsonl(perArm[arm.Name]));
            new ArmMarker(arm.Name, "f", null, null, 0, 0, DateTimeOffset.UnixEpoch).Write(arm.ArmDir);
        }

        // When the summary is built
        var summary = StudySummary.Build(plan)!;

        // Then each arm's value is sum nll / sum tokens of its prompts, and the change is paired against the baseline
        Assert.Equal("teacher_nll", summary.Metric);
        Assert.Equal(40, summary.Passages);
        double Mean(string arm) => perArm[arm].Sum(s => s.Nll) / perArm[arm].Sum(s => s.Tokens);
        foreach (var a in summary.Arms)
        {
            Assert.Equal(Mean(a.Arm), a.Value.Value, 12);
            Assert.InRange(a.Value.Value, a.Value.Low, a.Value.High);
            if (a.Arm == "student_base") Assert.Null(a.Relative);
            else Assert.Equal(Mean(a.Arm) / Mean("student_base") - 1, a.Relative!.Value, 12);
        }
        Assert.Contains("\"teacher_nll\":", summary.ToJson().Replace(" ", ""));
        Assert.Contains("the teacher's NLL of sampled completions", summary.Headline());
        Assert.Equal("held-out prompts", summary.UnitWords);

        // And an arm scored on other prompts is refused, naming the file
        var other = scored[1];
        File.WriteAllText(Path.Combine(other.ArmDir, "eval", CompletionScore.FileName),
            CompletionScore.ToJsonl(perArm[other.Name].Select(s => s with { Prompt = s.Prompt + 1 })));
        var e = Assert.Throws<InvalidDataException>(() => StudySummary.Build(plan));
        Assert.Contains("other prompts than the baseline", e.Message);
        Assert.Contains(CompletionScore.FileName, e.Message);
    }
}
