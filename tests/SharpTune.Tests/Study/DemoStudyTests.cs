// The demos. The Shakespeare demo: the shipped study (studies/demo) with every arm cut to two steps and the held-out
// text cut to a few passages, run end to end through the real recipes, evaluate recipe and report; its summary.json
// is checked against a direct computation from the arms' per-passage scores. The synthetic demo: its data files,
// and a cut-down version of its study (teacher from scratch + one KD arm, a few steps each, evaluated on 24
// multiple-choice items).
using System.Text;
using System.Text.Json;
using SharpTune.Eval;
using SharpTune.Data.Synthetic;
using SharpTune.Recipes;
using SharpTune.Recipes.Study;

namespace SharpTune.Tests.Study;

public sealed class DemoStudyTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "sharptune-demo-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    [Fact]
    public void Write_DemoTask_WritesSplitsAndMultipleChoiceFileFromTheGenerator()
    {
        var data = DemoTask.Write(_dir, seed: 0, trainCount: 50, testCount: 20, choiceCount: 10);

        Assert.Equal(new DemoData(50, 20, 10), data);
        var train = File.ReadAllLines(Path.Combine(_dir, "train.jsonl"));
        var expected = SyntheticInstructions.Generate(0, 50, "train");
        Assert.Equal(50, train.Length);
        using (var first = JsonDocument.Parse(train[0]))
            Assert.Equal(expected[0].Output, first.RootElement.GetProperty("output").GetString());
        var trainWords = expected.Select(r => r.Input).ToHashSet();
        var items = File.ReadAllLines(Path.Combine(_dir, "mc_eval.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(10, items.Count);
        foreach (var item in items)
        {
            var query = item.GetProperty("query").GetString()!;
            Assert.StartsWith("### Instruction:\n", query, StringComparison.Ordinal);
            Assert.EndsWith("\n### Response:\n", query, StringComparison.Ordinal);
            var word = query.Split('\n')[3];
            Assert.DoesNotContain(word, trainWords); // held-out words only
            var gold = item.GetProperty("gold").GetInt32();
            Assert.InRange(gold, 0, item.GetProperty("choices").GetArrayLength() - 1);
        }
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void Run_CutDownDemoStudy_TrainsEvaluatesAndWritesReport()
    {
        DemoTask.Write(Path.Combine(_dir, "data"), choiceCount: 24);
        var studyPath = Path.Combine(_dir, "study.yaml");
        File.WriteAllText(studyPath, """
            # study: the demo cut down to two arms and a few steps
            name: demo_cut
            output_dir: unused
            baseline: teacher
            eval:
              recipe: evaluate
              config: demo/synthetic/eval
              overrides: ["checkpoint_dir={checkpoint}", "model_name={arm}", "data_files.multiple_choice={study_dir}/data/mc_eval.jsonl"]
            arms:
              teacher:
                recipe: full_finetune_single_device
                config: demo/synthetic/teacher
                overrides: [epochs=1, max_steps_per_epoch=4, threads=1]
                checkpoint: "{arm_dir}/epoch_0"
              kd:
                recipe: knowledge_distillation_single_device
                config: demo/synthetic/kd
                overrides: ["teacher_checkpointer.checkpoint_dir={checkpoint:teacher}", "checkpointer.checkpoint_dir={arm_dir}/init", random_init_checkpoint=true, epochs=1, max_steps_per_epoch=4, threads=1]
                checkpoint: "{arm_dir}/epoch_0"
            """);
        var catalog = ConfigCatalog.CreateDefault();
        var plan = StudyPlan.Create(StudySpec.Load(studyPath), catalog.Resolve, _dir);

        var outcome = new StudyRunner(RecipeRegistry.CreateDefault(), new NullReporter()).Run(plan, CancellationToken.None);

        Assert.Equal(["teacher", "kd"], outcome.Ran);
        var table = StudyReport.Table(plan);
        Assert.Equal(["teacher", "kd"], table.Rows.Select(r => r.Arm));
        Assert.Contains(("multiple_choice", "acc"), table.Columns);
        var acc = table.Columns.ToList().IndexOf(("multiple_choice", "acc"));
        Assert.InRange(table.Rows[1].Values[acc]!.Value, 0, 1);
        Assert.Equal(table.Rows[1].Values[acc]!.Value - table.Rows[0].Values[acc]!.Value, table.Rows[1].Deltas[acc]!.Value, 12);
        var md = File.ReadAllText(Path.Combine(outcome.ReportDir, "report.md"));
        Assert.Contains("sharptune run knowledge_distillation_single_device --config demo/synthetic/kd", md, StringComparison.Ordinal);
        StudyRunnerTests.AssertNonBlankPng(Path.Combine(outcome.ReportDir, "class_loss.png"));
        StudyRunnerTests.AssertNonBlankPng(Path.Combine(outcome.ReportDir, "kd_loss.png"));
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void Run_ShippedDemoStudyTwoSteps_SummaryAgreesWithDirectComputation()
    {
        var catalog = ConfigCatalog.CreateDefault();
        var data = Path.Combine(_dir, "data");
        Assert.True(DemoAssets.Copy(Path.Combine(catalog.Directory, "demo", "assets"), data) >= 5);
        Assert.Equal(0, DemoAssets.Copy(Path.Combine(catalog.Directory, "demo", "assets"), data)); // nothing changed: nothing copied
        // A few held-out passages keep the evaluation to seconds (the teacher scores them too).
        var heldout = File.ReadAllText(Path.Combine(data, "heldout.txt"));
        File.WriteAllText(Path.Combine(data, "heldout.txt"), string.Concat(Perplexity.Passages(heldout, 512).Take(6)));
        var plan = StudyPlan.Create(StudySpec.Load(catalog.Resolve("studies/demo"), ["vars.steps=2"]), catalog.Resolve, _dir);

        var outcome = new StudyRunner(RecipeRegistry.CreateDefault(), new NullReporter()).Run(plan, CancellationToken.None);

        Assert.Equal(plan.Arms.Select(a => a.Name), outcome.Ran);
        Assert.Contains("kd_fkl.kd_ratio-1.0", outcome.Ran);
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outcome.ReportDir, StudySummary.FileName)));
        var root = json.RootElement;
        Assert.Equal("student_ce", root.GetProperty("baseline").GetString());
        var arms = root.GetProperty("arms");
        Assert.Equal(plan.Arms.Select(a => a.Name).Order(), arms.EnumerateObject().Select(p => p.Name).Order());
        var baseScores = PassageScore.Read(Path.Combine(_dir, "arms", "student_ce", "eval", PassageScore.FileName));
        Assert.Equal(6, baseScores.Count);
        var draws = Bootstrap.Draws(baseScores.Count);
        foreach (var arm in arms.EnumerateObject())
        {
            var scores = PassageScore.Read(Path.Combine(_dir, "arms", arm.Name, "eval", PassageScore.FileName));
            // Direct computation: perplexity from the summed passage figures, the paired change on each of the same
            // draws, then the 2.5% / 97.5% order statistics by the linear rule.
            var ppl = Math.Exp(-scores.Sum(s => s.LogLikelihood) / scores.Sum(s => s.Tokens));
            var basePpl = Math.Exp(-baseScores.Sum(s => s.LogLikelihood) / baseScores.Sum(s => s.Tokens));
            var ratios = draws.Select(d => Math.Exp(-d.Sum(i => scores[i].LogLikelihood) / d.Sum(i => scores[i].Tokens))
                / Math.Exp(-d.Sum(i => baseScores[i].LogLikelihood) / d.Sum(i => baseScores[i].Tokens)) - 1).Order().ToArray();
            double At(double q) { var h = (ratios.Length - 1) * q; var lo = (int)h; return ratios[lo] + (h - lo) * (ratios[Math.Min(lo + 1, ratios.Length - 1)] - ratios[lo]); }
            var a = arm.Value;
            Assert.Equal(ppl, a.GetProperty("perplexity").GetDouble(), 1e-9 * ppl);
            Assert.Equal(2, a.GetProperty("ci95").GetArrayLength());
            Assert.True(a.GetProperty("ci95")[0].GetDouble() <= ppl + 1e-9 && ppl - 1e-9 <= a.GetProperty("ci95")[1].GetDouble());
            Assert.Equal(ppl / basePpl - 1, a.GetProperty("rel_to_baseline").GetDouble(), 1e-9);
            var rel = a.GetProperty("rel_ci95");
            Assert.Equal(arm.Name == "student_ce" ? 0 : At(0.025), rel[0].GetDouble(), 1e-9);
            Assert.Equal(arm.Name == "student_ce" ? 0 : At(0.975), rel[1].GetDouble(), 1e-9);
        }
        var md = File.ReadAllLines(Path.Combine(outcome.ReportDir, "report.md"));
        Assert.Equal($"**{root.GetProperty("headline").GetString()}**", md[0]);
        Assert.Contains("against plain fine-tuning of the same student", md[0], StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(_dir, "arms", "kd_jsd", "eval", Evaluate.SampleFileName)));
        StudyRunnerTests.AssertNonBlankPng(Path.Combine(outcome.ReportDir, "val_loss.png"));
    }

    private sealed class NullReporter : IRecipeReporter
    {
        public void Info(string message) { }
        public void Warning(string message) { }
        public void Metrics(long step, IReadOnlyDictionary<string, double> values) { }
        public void Progress(string stage, long completed, long total) { }
    }
}
