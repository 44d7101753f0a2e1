// Expands a study's arms over their grids and orders them so that every arm runs after the arms it uses.
// Placeholders in overrides and checkpoints tie arms together:
//   {study_dir}           the study folder           {arm}              this arm's name
//   {arm_dir}             this arm's folder          {checkpoint}       this arm's checkpoint (eval overrides)
//   {arm_dir:NAME}        arm NAME's folder          {checkpoint:NAME}  arm NAME's checkpoint
//   {var:NAME}            the study's vars.NAME (e.g. the steps every arm trains, one number to change)
// A reference to another arm is a dependency (teacher fine-tune before the KD arms that use it); a cycle or an
// unknown name is an error that names the arm. Curly braces are used (not ${...}) so that they never collide with
// the config interpolation the recipes resolve afterwards.
using System.Text.RegularExpressions;
using SharpTune.Config;

namespace SharpTune.Recipes.Study;

/// <summary>A concrete arm: one recipe run (or none) and its evaluation, with every placeholder resolved.</summary>
/// <param name="Name">Arm name (grid arms: <c>kd.teacher-finetuned.kd_ratio-0.25</c>).</param>
/// <param name="Recipe">Recipe name; null for an evaluation-only arm.</param>
/// <param name="Config">Config argument as written in the study (shipped name or path).</param>
/// <param name="ConfigPath">The config file; null when no recipe.</param>
/// <param name="Overrides">Resolved overrides, <c>output_dir=&lt;arm dir&gt;</c> first.</param>
/// <param name="ArmDir">The arm's folder.</param>
/// <param name="Checkpoint">The model folder to evaluate; null when the arm is not evaluated and names none.</param>
/// <param name="Evaluate">Whether it is evaluated.</param>
/// <param name="EvalOverrides">Resolved evaluation overrides (study's, then the arm's).</param>
/// <param name="DependsOn">Arms that must finish first.</param>
/// <param name="GridValues">The grid choice per axis that made this arm (empty without grid).</param>
public sealed record PlannedArm(string Name, string? Recipe, string? Config, string? ConfigPath, IReadOnlyList<string> Overrides,
    string ArmDir, string? Checkpoint, bool Evaluate, IReadOnlyList<string> EvalOverrides, IReadOnlyList<string> DependsOn,
    IReadOnlyList<(string Axis, string Label)> GridValues)
{
    /// <summary>The arm's label (the study file's, grid values appended), or null.</summary>
    public string? Label { get; init; }

    /// <summary>A reference arm (teacher, upper bound): never the headline's answer.</summary>
    public bool Reference { get; init; }

    /// <summary>The <c>sharptune run</c> command line of the training run; null without recipe.</summary>
    public string? Command => Recipe is null ? null : StudyPlan.CommandLine(Recipe, Config!, Overrides);
}

/// <summary>The arms of a study in run order.</summary>
/// <param name="Study">The study.</param>
/// <param name="StudyDir">Absolute study folder.</param>
/// <param name="Arms">Arms in dependency order (file order where free).</param>
/// <param name="Baseline">The baseline arm's name (the study's, else the first evaluated arm), or null.</param>
public sealed partial record StudyPlan(StudySpec Study, string StudyDir, IReadOnlyList<PlannedArm> Arms, string? Baseline)
{
    /// <summary>The evaluation config file; null when the study has no eval.</summary>
    public string? EvalConfigPath { get; init; }

    /// <summary>The folder of the study file, which config paths in it are relative to.</summary>
    public string StudyFolder { get; init; } = ".";

    /// <summary>
    /// The arm's training command as it can be pasted in the working folder: a config given relative to the study file
    /// is written relative to the working folder instead (<see cref="PlannedArm.Command"/> keeps the study's spelling,
    /// which the done markers hash, so moving between folders does not rerun arms). Null without recipe.
    /// </summary>
    public string? RunCommand(PlannedArm arm) => arm.Recipe is null ? null : CommandLine(arm.Recipe, Runnable(arm.Config!), arm.Overrides);

    /// <summary>As <see cref="RunCommand"/> for the arm's evaluation; null when not evaluated.</summary>
    public string? EvalRunCommand(PlannedArm arm) =>
        arm.Evaluate && Study.Eval is { } e ? CommandLine(e.Recipe, Runnable(e.Config), arm.EvalOverrides) : null;

    // The resolution order of ResolveConfig: a file beside the study wins, and is then named from the working folder.
    private string Runnable(string config)
    {
        var local = Path.Combine(StudyFolder, config);
        return !Path.IsPathRooted(config) && File.Exists(local) ? Path.GetRelativePath(Environment.CurrentDirectory, Path.GetFullPath(local)) : config;
    }

    [GeneratedRegex(@"\{(study_dir|arm|arm_dir|checkpoint|var)(?::([A-Za-z0-9_.\-]+))?\}")]
    private static partial Regex PlaceholderRegex();

    [GeneratedRegex(@"^[A-Za-z0-9_.\-]+$")]
    private static partial Regex ArmNameRegex();

    /// <summary>True for names safe as folder names (letters, digits, _ - .).</summary>
    public static bool IsValidArmName(string name) => ArmNameRegex().IsMatch(name) && name is not "." and not "..";

    /// <summary>
    /// Expands grids, resolves placeholders and config files, and orders arms by dependency.
    /// </summary>
    /// <param name="study">The parsed study.</param>
    /// <param name="resolveConfig">Maps a config argument to its file (shipped name or path; throws when neither).</param>
    /// <param name="studyDir">Overrides the study's output_dir (absolute or relative to the working folder).</param>
    /// <exception cref="ConfigException">Unknown references, cycles, duplicate names, unknown baseline.</exception>
    public static StudyPlan Create(StudySpec study, Func<string, string> resolveConfig, string? studyDir = null)
    {
        var dir = Path.GetFullPath(studyDir ?? study.OutputDir);
        var problems = new List<ConfigProblem>();
        var studyFolder = Path.GetDirectoryName(study.SourcePath) ?? ".";

        // 1. Grid expansion: the cartesian product of each arm's axes, in axis order.
        var expanded = new List<(ArmSpec Spec, string Name, List<string> Overrides, List<(string, string)> Values)>();
        foreach (var arm in study.Arms)
        {
            var combos = new List<(string Name, List<string> Overrides, List<(string, string)> Values)> { (arm.Name, [.. arm.Overrides], []) };
            foreach (var axis in arm.Grid)
                combos = [.. combos.SelectMany(c => axis.Choices.Select(choice => (
                    $"{c.Name}.{Sanitize(axis.Name)}-{Sanitize(choice.Label)}",
                    c.Overrides.Concat(choice.Overrides).ToList(),
                    c.Values.Append((axis.Name, choice.Label)).ToList())))];
            expanded.AddRange(combos.Select(c => (arm, c.Name, c.Overrides, c.Values)));
        }
        foreach (var dup in expanded.GroupBy(e => e.Name).Where(g => g.Count() > 1))
            problems.Add(new ConfigProblem(dup.First().Spec.Location, $"arms.{dup.Key}", $"two arms are both named '{dup.Key}' after grid expansion"));
        var byName = expanded.GroupBy(e => e.Name).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        string ArmDir(string name) => Path.Combine(dir, "arms", name);

        // 2. Checkpoints first (they may refer to arm folders, not to other checkpoints), then the overrides.
        var checkpoints = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var e in expanded)
            checkpoints[e.Name] = e.Spec.Checkpoint is null ? null
                : Substitute(e.Spec.Checkpoint, e.Name, null, allowArmRefs: false, e.Spec, problems, out _);

        string Substitute(string text, string arm, string? ownCheckpoint, bool allowArmRefs, ArmSpec spec, List<ConfigProblem> sink, out List<string> refs)
        {
            var found = new List<string>();
            var result = PlaceholderRegex().Replace(text, m =>
            {
                var kind = m.Groups[1].Value;
                var other = m.Groups[2].Success ? m.Groups[2].Value : null;
                if (kind == "var")
                {
                    if (other is not null && study.Vars.TryGetValue(other, out var value)) return value;
                    sink.Add(new ConfigProblem(spec.Location, $"arms.{spec.Name}", $"'{m.Value}' names no entry of the study's vars{(other is null ? "" : Names.Suggest(other, study.Vars.Keys))} (defined: {(study.Vars.Count == 0 ? "none" : string.Join(", ", study.Vars.Keys))})"));
                    return m.Value;
                }
                if (other is null)
                {
                    switch (kind)
                    {
                        case "study_dir": return dir;
                        case "arm": return arm;
                        case "arm_dir": return ArmDir(arm);
                        case "checkpoint" when ownCheckpoint is not null: return ownCheckpoint;
                        default:
                            sink.Add(new ConfigProblem(spec.Location, $"arms.{spec.Name}", $"'{m.Value}' is only defined in eval overrides of an arm with a checkpoint"));
                            return m.Value;
                    }
                }
                if (kind is not ("arm_dir" or "checkpoint") || !allowArmRefs)
                {
                    sink.Add(new ConfigProblem(spec.Location, $"arms.{spec.Name}", $"'{m.Value}' cannot be used here (references to other arms belong in overrides)"));
                    return m.Value;
                }
                if (!byName.ContainsKey(other))
                {
                    sink.Add(new ConfigProblem(spec.Location, $"arms.{spec.Name}", $"'{m.Value}' names no arm{Names.Suggest(other, byName.Keys)}"));
                    return m.Value;
                }
                if (other == arm)
                {
                    sink.Add(new ConfigProblem(spec.Location, $"arms.{spec.Name}", $"'{m.Value}' refers to the arm itself; use {{{kind}}}"));
                    return m.Value;
                }
                found.Add(other);
                if (kind == "arm_dir") return ArmDir(other);
                if (checkpoints[other] is { } cp) return cp;
                sink.Add(new ConfigProblem(spec.Location, $"arms.{spec.Name}", $"'{m.Value}': arm '{other}' declares no checkpoint"));
                return m.Value;
            });
            refs = found;
            return result;
        }

        var arms = new List<PlannedArm>();
        foreach (var e in expanded)
        {
            var deps = new List<string>();
            var overrides = new List<string>();
            string? configPath = null;
            if (e.Spec.Recipe is not null)
            {
                overrides.Add($"output_dir={ArmDir(e.Name)}");
                foreach (var o in e.Overrides)
                {
                    overrides.Add(Substitute(o, e.Name, null, allowArmRefs: true, e.Spec, problems, out var refs));
                    deps.AddRange(refs);
                }
                configPath = ResolveConfig(e.Spec.Config!, studyFolder, resolveConfig, e.Spec, problems);
            }
            var evalOverrides = new List<string>();
            if (e.Spec.Evaluate)
            {
                evalOverrides.Add($"output_dir={Path.Combine(ArmDir(e.Name), "eval")}");
                foreach (var o in (study.Eval?.Overrides ?? []).Concat(e.Spec.EvalOverrides))
                {
                    evalOverrides.Add(Substitute(o, e.Name, checkpoints[e.Name], allowArmRefs: true, e.Spec, problems, out var refs));
                    deps.AddRange(refs);
                }
            }
            arms.Add(new PlannedArm(e.Name, e.Spec.Recipe, e.Spec.Config, configPath, overrides, ArmDir(e.Name), checkpoints[e.Name],
                e.Spec.Evaluate, evalOverrides, [.. deps.Distinct()], e.Values)
            {
                Label = e.Spec.Label is null ? null : e.Values.Count == 0 ? e.Spec.Label : $"{e.Spec.Label}, {string.Join(", ", e.Values.Select(v => $"{v.Item1} {v.Item2}"))}",
                Reference = e.Spec.Reference,
            });
        }

        var evaluated = arms.Where(a => a.Evaluate).Select(a => a.Name).ToList();
        var baseline = study.Baseline ?? evaluated.FirstOrDefault();
        if (study.Baseline is not null && !evaluated.Contains(study.Baseline))
            problems.Add(new ConfigProblem(null, "baseline", $"baseline '{study.Baseline}' is not an evaluated arm{Names.Suggest(study.Baseline, evaluated)}"));
        if (evaluated.Count > 0 && study.Eval is null)
            problems.Add(new ConfigProblem(null, "eval", "arms are evaluated but the study has no 'eval' section (set evaluate: false on arms to only train)"));
        string? evalConfigPath = null;
        if (study.Eval is not null && evaluated.Count > 0)
            evalConfigPath = ResolveConfig(study.Eval.Config, studyFolder, resolveConfig, null, problems);

        var ordered = Order(arms, problems);
        if (problems.Count > 0) throw new ConfigException(problems);
        return new StudyPlan(study, dir, ordered, baseline) { EvalConfigPath = evalConfigPath, StudyFolder = studyFolder };
    }

    /// <summary>The evaluation command line of <paramref name="arm"/>; null when not evaluated.</summary>
    public string? EvalCommand(PlannedArm arm) =>
        arm.Evaluate && Study.Eval is { } e ? CommandLine(e.Recipe, e.Config, arm.EvalOverrides) : null;

    /// <summary>A copy-pasteable <c>sharptune run</c> line (arguments single-quoted where the shell needs it).</summary>
    public static string CommandLine(string recipe, string config, IEnumerable<string> overrides) =>
        string.Join(' ', new[] { "sharptune", "run", recipe, "--config", config }.Concat(overrides).Select(ShellQuote));

    private static string ShellQuote(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "_-./=:,@%+".Contains(c)) ? s : "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    // Kahn's algorithm, taking the earliest declared ready arm each time so the order is the file order where free.
    private static List<PlannedArm> Order(List<PlannedArm> arms, List<ConfigProblem> problems)
    {
        var remaining = arms.ToList();
        var done = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<PlannedArm>();
        while (remaining.Count > 0)
        {
            var next = remaining.FirstOrDefault(a => a.DependsOn.All(done.Contains));
            if (next is null)
            {
                problems.Add(new ConfigProblem(null, "arms", $"arms depend on each other in a cycle: {string.Join(", ", remaining.Select(a => $"{a.Name} -> [{string.Join(", ", a.DependsOn)}]"))}"));
                return result;
            }
            remaining.Remove(next);
            done.Add(next.Name);
            result.Add(next);
        }
        return result;
    }

    private static string? ResolveConfig(string config, string studyFolder, Func<string, string> resolve, ArmSpec? spec, List<ConfigProblem> problems)
    {
        var local = Path.Combine(studyFolder, config);
        if (!Path.IsPathRooted(config) && File.Exists(local)) return Path.GetFullPath(local);
        try { return resolve(config); }
        catch (FileNotFoundException e)
        {
            problems.Add(new ConfigProblem(spec?.Location, spec is null ? "eval.config" : $"arms.{spec.Name}.config", e.Message));
            return null;
        }
    }

    private static string Sanitize(string s) => new([.. s.Select(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.' ? c : '_')]);
}
