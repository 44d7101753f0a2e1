// The demo: its data files, and a cut-down version of its study (teacher from scratch + one KD arm, a few steps
// each, evaluated on 24 multiple-choice items) run end to end through the real recipes, the real evaluate recipe
// and the real report, from the shipped demo configs.
using System.Text.Json;
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
              config: demo/eval
              overrides: ["checkpoint_dir={checkpoint}", "model_name={arm}", "data_files.multiple_choice={study_dir}/data/mc_eval.jsonl"]
            arms:
              teacher:
                recipe: full_finetune_single_device
                config: demo/teacher
                overrides: [epochs=1, max_steps_per_epoch=4, threads=1]
                checkpoint: "{arm_dir}/epoch_0"
              kd:
                recipe: knowledge_distillation_single_device
                config: demo/kd
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
        Assert.Contains("sharptune run knowledge_distillation_single_device --config demo/kd", md, StringComparison.Ordinal);
        StudyRunnerTests.AssertNonBlankPng(Path.Combine(outcome.ReportDir, "class_loss.png"));
        StudyRunnerTests.AssertNonBlankPng(Path.Combine(outcome.ReportDir, "kd_loss.png"));
    }

    private sealed class NullReporter : IRecipeReporter
    {
        public void Info(string message) { }
        public void Warning(string message) { }
        public void Metrics(long step, IReadOnlyDictionary<string, double> values) { }
        public void Progress(string stage, long completed, long total) { }
    }
}
