// The study file: which runs make up an ablation (teacher fine-tune, student fine-tune, KD arms ...), each a recipe,
// a config and key=value overrides exactly as `sharptune run` takes them, plus a grid that multiplies an arm over
// override values, the evaluation every arm gets, and the arm the others are compared with.
// Reference: torchtune's KD tutorial ablations (fine-tuned vs base teacher/student, kd_ratio and lr sweeps),
// /docs/ablation.md for the format.
using SharpTune.Config;

namespace SharpTune.Recipes.Study;

/// <summary>One axis of an arm's grid.</summary>
/// <param name="Name">The axis name (a config key such as <c>kd_ratio</c>, or a label such as <c>teacher</c>).</param>
/// <param name="Choices">Each choice: its label in arm names and the overrides it adds.</param>
public sealed record GridAxis(string Name, IReadOnlyList<(string Label, IReadOnlyList<string> Overrides)> Choices);

/// <summary>An arm as written in the study file (before grid expansion).</summary>
/// <param name="Name">The arm's name.</param>
/// <param name="Recipe">The recipe it runs; null for an arm that only evaluates an existing checkpoint.</param>
/// <param name="Config">Shipped config name or YAML path (relative paths: to the study file); null without recipe.</param>
/// <param name="Overrides">key=value overrides; may hold placeholders (see <see cref="StudyPlan"/>).</param>
/// <param name="Checkpoint">The model folder the arm produces or names (evaluated, and referable by other arms).</param>
/// <param name="Evaluate">Whether the arm is evaluated.</param>
/// <param name="EvalOverrides">Extra overrides for this arm's evaluation.</param>
/// <param name="Grid">Axes multiplied out into one arm per combination (empty: one arm).</param>
/// <param name="Location">Where the arm is declared.</param>
public sealed record ArmSpec(string Name, string? Recipe, string? Config, IReadOnlyList<string> Overrides, string? Checkpoint,
    bool Evaluate, IReadOnlyList<string> EvalOverrides, IReadOnlyList<GridAxis> Grid, SourceLocation Location)
{
    /// <summary>What the arm is, in words, for the report's first line ("distillation, forward KL"); grid values are appended.</summary>
    public string? Label { get; init; }

    /// <summary>A reference arm (a teacher, an upper bound): in the tables, never the headline's answer.</summary>
    public bool Reference { get; init; }
}

/// <summary>The evaluation every evaluated arm gets.</summary>
/// <param name="Recipe">The evaluation recipe (default <c>evaluate</c>).</param>
/// <param name="Config">Its config (shipped name or path).</param>
/// <param name="Overrides">Overrides; <c>{checkpoint}</c> is the arm's checkpoint.</param>
public sealed record EvalSpec(string Recipe, string Config, IReadOnlyList<string> Overrides);

/// <summary>A parsed study file.</summary>
/// <param name="Name">The study's name.</param>
/// <param name="SourcePath">The study file.</param>
/// <param name="OutputDir">The study folder (arms/, report/).</param>
/// <param name="Baseline">The arm every other arm is compared with.</param>
/// <param name="Eval">The evaluation; null when the study only trains.</param>
/// <param name="Arms">Arms in file order.</param>
public sealed record StudySpec(string Name, string SourcePath, string OutputDir, string? Baseline, EvalSpec? Eval, IReadOnlyList<ArmSpec> Arms)
{
    /// <summary>
    /// The metric of the summary and the report's first line, from the arms' per-passage perplexity scores
    /// (<c>token_perplexity</c> or <c>bits_per_byte</c>) or per-prompt teacher NLL of sampled completions
    /// (<c>teacher_nll</c>); null: <c>token_perplexity</c> when the scores exist.
    /// </summary>
    public string? Metric { get; init; }

    /// <summary>The study's <c>vars</c>: values substituted for <c>{var:NAME}</c> in arms' overrides and checkpoints.</summary>
    public IReadOnlyDictionary<string, string> Vars { get; init; } = new Dictionary<string, string>();

    /// <summary>The header line that marks a YAML file as a study (<c># study</c>), used by <c>validate</c>.</summary>
    public const string HeaderMarker = "study:";

    private static readonly string[] TopKeys = ["name", "output_dir", "baseline", "metric", "vars", "eval", "arms"];

    /// <summary>The values of the study key <c>metric</c>.</summary>
    public static readonly string[] Metrics = ["token_perplexity", "bits_per_byte", "teacher_nll"];
    private static readonly string[] ArmKeys = ["recipe", "config", "overrides", "checkpoint", "evaluate", "eval_overrides", "grid", "label", "reference"];
    private static readonly string[] EvalKeys = ["recipe", "config", "overrides"];

    /// <summary>True when <paramref name="path"/> is a YAML file whose leading comments hold a <c># study:</c> line.</summary>
    public static bool IsStudyFile(string path)
    {
        foreach (var line in File.ReadLines(path))
        {
            var t = line.Trim();
            if (t.Length == 0) continue;
            if (!t.StartsWith('#')) return false;
            if (t.TrimStart('#').Trim().StartsWith(HeaderMarker, StringComparison.Ordinal)) return true;
        }
        return false;
    }

    /// <summary>Loads and checks a study file; <paramref name="overrides"/> (key=value) apply to the study file itself.</summary>
    /// <exception cref="ConfigException">Every problem found (unknown keys, wrong shapes, missing values).</exception>
    public static StudySpec Load(string path, IEnumerable<string>? overrides = null)
    {
        var root = ConfigLoader.LoadFile(path);
        var problems = new List<ConfigProblem>();
        Config.Overrides.Apply(root, overrides ?? [], problems);
        if (problems.Count > 0) throw new ConfigException(problems);
        return Parse(root, Path.GetFullPath(path));
    }

    /// <summary>Checks a parsed tree (see <see cref="Load"/>).</summary>
    public static StudySpec Parse(ConfigNode root, string sourcePath)
    {
        var problems = new List<ConfigProblem>();
        void Problem(ConfigNode at, string key, string message) => problems.Add(new ConfigProblem(at.Location, key, message));

        if (root.Kind != ConfigNodeKind.Map)
            throw new ConfigException(root.Location, "", $"a study file is a map with keys {string.Join(", ", TopKeys)}; got {root.Describe()}");
        CheckKeys(root, "", TopKeys, Problem);
        var name = Scalar(root, "name", "", Problem) ?? Path.GetFileNameWithoutExtension(sourcePath);
        var outputDir = Scalar(root, "output_dir", "", Problem);
        if (outputDir is null) Problem(root, "output_dir", "missing required key 'output_dir' (the study folder)");
        var baseline = Scalar(root, "baseline", "", Problem);
        var metric = Scalar(root, "metric", "", Problem);
        if (metric is not null && !Metrics.Contains(metric))
            Problem(root.TryGet("metric", out var m) ? m : root, "metric", $"expected one of {string.Join(", ", Metrics)}, got '{metric}'{Names.Suggest(metric, Metrics)}");

        EvalSpec? eval = null;
        if (root.TryGet("eval", out var evalNode) && evalNode.Kind != ConfigNodeKind.Null)
        {
            if (evalNode.Kind != ConfigNodeKind.Map) Problem(evalNode, "eval", $"expected a map with {string.Join(", ", EvalKeys)}, got {evalNode.Describe()}");
            else
            {
                CheckKeys(evalNode, "eval.", EvalKeys, Problem);
                var config = Scalar(evalNode, "config", "eval.", Problem);
                if (config is null) Problem(evalNode, "eval.config", "missing required key 'eval.config' (the evaluation config)");
                eval = new EvalSpec(Scalar(evalNode, "recipe", "eval.", Problem) ?? "evaluate", config ?? "",
                    StringList(evalNode, "overrides", "eval.", Problem));
            }
        }

        var arms = new List<ArmSpec>();
        if (!root.TryGet("arms", out var armsNode) || armsNode.Kind != ConfigNodeKind.Map || armsNode.Count == 0)
            Problem(armsNode ?? root, "arms", "expected 'arms': a map of arm name -> {recipe, config, overrides, checkpoint, grid ...}");
        else
        {
            foreach (var (armName, node) in armsNode.Entries)
            {
                var prefix = $"arms.{armName}.";
                if (!StudyPlan.IsValidArmName(armName)) Problem(node, $"arms.{armName}", "arm names use letters, digits, '_', '-' and '.' only");
                if (node.Kind != ConfigNodeKind.Map) { Problem(node, $"arms.{armName}", $"expected a map, got {node.Describe()}"); continue; }
                CheckKeys(node, prefix, ArmKeys, Problem);
                var recipe = Scalar(node, "recipe", prefix, Problem);
                var config = Scalar(node, "config", prefix, Problem);
                var checkpoint = Scalar(node, "checkpoint", prefix, Problem);
                if (recipe is null != (config is null))
                    Problem(node, $"arms.{armName}", "give both 'recipe' and 'config' (a trained arm) or neither (an arm that evaluates 'checkpoint')");
                if (recipe is null && checkpoint is null)
                    Problem(node, $"arms.{armName}", "an arm without a recipe must name the model folder it evaluates in 'checkpoint'");
                var evaluate = Flag(node, "evaluate", prefix, true, Problem);
                var reference = Flag(node, "reference", prefix, false, Problem);
                if (evaluate && checkpoint is null)
                    Problem(node, prefix + "checkpoint", "an evaluated arm must say which folder holds its trained model ('checkpoint', e.g. \"{arm_dir}/epoch_0\")");
                arms.Add(new ArmSpec(armName, recipe, config, StringList(node, "overrides", prefix, Problem), checkpoint, evaluate,
                    StringList(node, "eval_overrides", prefix, Problem), Grid(node, prefix, Problem), node.Location)
                { Label = Scalar(node, "label", prefix, Problem), Reference = reference });
            }
        }
        var vars = new Dictionary<string, string>(StringComparer.Ordinal);
        if (root.TryGet("vars", out var varsNode) && varsNode.Kind != ConfigNodeKind.Null)
        {
            if (varsNode.Kind != ConfigNodeKind.Map) Problem(varsNode, "vars", $"expected a map of name -> value, got {varsNode.Describe()}");
            else
                foreach (var (key, value) in varsNode.Entries)
                {
                    if (value.Kind == ConfigNodeKind.Scalar) vars[key] = value.Text!;
                    else Problem(value, $"vars.{key}", $"expected a single value, got {value.Describe()}");
                }
        }
        if (problems.Count > 0) throw new ConfigException(problems);
        return new StudySpec(name, sourcePath, outputDir!, baseline, eval, arms) { Metric = metric, Vars = vars };
    }

    private static bool Flag(ConfigNode map, string key, string prefix, bool fallback, Action<ConfigNode, string, string> problem)
    {
        if (!map.TryGet(key, out var node) || node.Kind == ConfigNodeKind.Null) return fallback;
        if (node.Kind == ConfigNodeKind.Scalar && bool.TryParse(node.Text, out var b)) return b;
        problem(node, prefix + key, $"expected true or false, got {node.Describe()}");
        return fallback;
    }

    private static List<GridAxis> Grid(ConfigNode arm, string prefix, Action<ConfigNode, string, string> problem)
    {
        var axes = new List<GridAxis>();
        if (!arm.TryGet("grid", out var grid) || grid.Kind == ConfigNodeKind.Null) return axes;
        if (grid.Kind != ConfigNodeKind.Map) { problem(grid, prefix + "grid", $"expected a map of axis -> values, got {grid.Describe()}"); return axes; }
        foreach (var (axis, values) in grid.Entries)
        {
            var key = $"{prefix}grid.{axis}";
            var choices = new List<(string, IReadOnlyList<string>)>();
            if (values.Kind == ConfigNodeKind.List)
            {
                // `kd_ratio: [0.25, 0.5]`: the axis is a config key; each value becomes `kd_ratio=<value>`.
                foreach (var v in values.Items)
                {
                    if (v.Kind != ConfigNodeKind.Scalar) { problem(v, key, $"list values must be scalars (use a map of label -> overrides for more), got {v.Describe()}"); continue; }
                    choices.Add((v.Text!, [$"{axis}={v.Text}"]));
                }
            }
            else if (values.Kind == ConfigNodeKind.Map)
            {
                // `teacher: {finetuned: [teacher_checkpointer.checkpoint_dir=...], base: []}`: labelled override sets.
                foreach (var (label, set) in values.Entries)
                {
                    if (!StudyPlan.IsValidArmName(label)) problem(set, $"{key}.{label}", "choice labels use letters, digits, '_', '-' and '.' only");
                    choices.Add((label, StringList(values, label, key + ".", problem)));
                }
            }
            else problem(values, key, $"expected a list of values or a map of label -> overrides, got {values.Describe()}");
            if (choices.Count == 0) problem(values, key, "a grid axis needs at least one value");
            else axes.Add(new GridAxis(axis, choices));
        }
        return axes;
    }

    private static void CheckKeys(ConfigNode map, string prefix, string[] allowed, Action<ConfigNode, string, string> problem)
    {
        foreach (var (key, node) in map.Entries)
            if (!allowed.Contains(key))
                problem(node, prefix + key, $"unknown key '{prefix}{key}'{Names.Suggest(key, allowed)}; allowed: {string.Join(", ", allowed)}");
    }

    private static string? Scalar(ConfigNode map, string key, string prefix, Action<ConfigNode, string, string> problem)
    {
        if (!map.TryGet(key, out var node) || node.Kind == ConfigNodeKind.Null) return null;
        if (node.Kind == ConfigNodeKind.Scalar) return node.Text;
        problem(node, prefix + key, $"expected a string, got {node.Describe()}");
        return null;
    }

    private static List<string> StringList(ConfigNode map, string key, string prefix, Action<ConfigNode, string, string> problem)
    {
        var result = new List<string>();
        if (!map.TryGet(key, out var node) || node.Kind == ConfigNodeKind.Null) return result;
        if (node.Kind != ConfigNodeKind.List) { problem(node, prefix + key, $"expected a list of key=value strings, got {node.Describe()}"); return result; }
        foreach (var item in node.Items)
        {
            // key=value, or ~key (remove the key, as on the command line)
            if (item.Kind == ConfigNodeKind.Scalar && (item.Text!.Contains('=', StringComparison.Ordinal) || item.Text.StartsWith('~'))) result.Add(item.Text);
            else problem(item, prefix + key, $"expected a key=value (or ~key) string, got {item.Describe()}");
        }
        return result;
    }
}
