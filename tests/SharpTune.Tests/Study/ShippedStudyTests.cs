// Every shipped study (configs/studies) parses, plans (references, order, baseline) and validates every arm's
// training and eval config with the arm's overrides against the real recipe registry, as `validate` and `ablate` do.
using SharpTune.Recipes;
using SharpTune.Recipes.Study;

namespace SharpTune.Tests.Study;

public sealed class ShippedStudyTests
{
    public static TheoryData<string> Studies()
    {
        var data = new TheoryData<string>();
        foreach (var c in ConfigCatalog.CreateDefault().All().Where(c => StudySpec.IsStudyFile(c.Path))) data.Add(c.Name);
        return data;
    }

    [Fact]
    public void Catalog_BuildOutput_ShipsTheSeedStudiesAndTheDemo()
    {
        var names = ConfigCatalog.CreateDefault().All().Where(c => StudySpec.IsStudyFile(c.Path)).Select(c => c.Name).ToList();
        Assert.Contains("studies/llama3_2_8B_to_1B_ablation", names);
        Assert.Contains("studies/qwen2_1.5B_to_0.5B_ablation", names);
        Assert.Contains("studies/demo", names);
    }

    [Theory]
    [MemberData(nameof(Studies))]
    public void ShippedStudy_PlansAndEveryArmValidates(string name)
    {
        var catalog = ConfigCatalog.CreateDefault();
        var plan = StudyPlan.Create(StudySpec.Load(catalog.Find(name)!.Path), catalog.Resolve, Path.Combine(Path.GetTempPath(), "unused-study-dir"));

        var problems = new StudyRunner(RecipeRegistry.CreateDefault(), new SilentReporter()).Validate(plan);

        Assert.True(problems.Count == 0, string.Join("\n", problems));
        Assert.NotNull(plan.Baseline);
        Assert.All(plan.Arms, a => Assert.All(a.DependsOn, d => Assert.True(plan.Arms.ToList().FindIndex(x => x.Name == d) < plan.Arms.ToList().IndexOf(a))));
    }

    [Fact]
    public void LlamaStudy_Plan_HasTheSeedsArms()
    {
        var catalog = ConfigCatalog.CreateDefault();
        var plan = StudyPlan.Create(StudySpec.Load(catalog.Find("studies/llama3_2_8B_to_1B_ablation")!.Path), catalog.Resolve, Path.Combine(Path.GetTempPath(), "unused-study-dir"));
        var names = plan.Arms.Select(a => a.Name).ToList();

        // Ablations 1 and 2 (teacher x student), 3 (kd_ratio, lr sweeps), and the base / fine-tuned references.
        Assert.Equal(2 + 2 + 4 + 3 + 3, names.Count);
        Assert.Contains("kd.teacher-base.student-finetuned", names);
        Assert.Contains("kd_ratio.kd_ratio-1.0", names);
        Assert.Contains("lr.optimizer.lr-1e-5", names);
        Assert.True(names.IndexOf("teacher_ft") < names.IndexOf("kd.teacher-finetuned.student-base"));
        Assert.True(names.IndexOf("student_ft") < names.IndexOf("kd.teacher-base.student-finetuned"));
    }

    [Fact]
    public void DemoStudy_Vars_LabelsAndReference_ReachThePlan()
    {
        var catalog = ConfigCatalog.CreateDefault();
        var plan = StudyPlan.Create(StudySpec.Load(catalog.Resolve("studies/demo"), ["vars.steps=7"]), catalog.Resolve, Path.Combine(Path.GetTempPath(), "unused-study-dir"));

        var kd = plan.Arms.Single(a => a.Name == "kd_fkl.kd_ratio-0.5");
        Assert.Contains("max_steps=7", kd.Overrides);
        Assert.EndsWith("step_7", kd.Checkpoint, StringComparison.Ordinal);
        Assert.Equal("distillation (forward KL), kd_ratio 0.5", kd.Label);
        Assert.True(plan.Arms.Single(a => a.Name == "teacher").Reference);
        Assert.False(kd.Reference);
        Assert.Equal("token_perplexity", plan.Study.Metric);
    }

    [Fact]
    public void Study_UnknownVarOrMetric_NamedInTheError()
    {
        var path = Path.Combine(Path.GetTempPath(), $"study-{Guid.NewGuid():N}.yaml");
        try
        {
            File.WriteAllText(path, "# study: t\noutput_dir: out\nmetric: perplexity\nvars: {steps: 3}\narms:\n  a: {checkpoint: \"/m/{var:step}\"}\n");
            var e = Assert.Throws<SharpTune.Config.ConfigException>(() => StudySpec.Load(path));
            Assert.Contains("token_perplexity", e.Message, StringComparison.Ordinal);
            File.WriteAllText(path, "# study: t\noutput_dir: out\nvars: {steps: 3}\narms:\n  a: {checkpoint: \"/m/{var:step}\"}\n");
            var e2 = Assert.Throws<SharpTune.Config.ConfigException>(() => StudyPlan.Create(StudySpec.Load(path), p => p, Path.GetTempPath()));
            Assert.Contains("{var:step}", e2.Message, StringComparison.Ordinal);
            Assert.Contains("steps", e2.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private sealed class SilentReporter : IRecipeReporter
    {
        public void Info(string message) { }
        public void Warning(string message) { }
        public void Metrics(long step, IReadOnlyDictionary<string, double> values) { }
        public void Progress(string stage, long completed, long total) { }
    }
}
