// The README and docs as a new user reads them: every fenced YAML config example validates through the `validate`
// verb, the README's stories260K command sequence runs as written (each step reads what an earlier step wrote), and
// the file names the docs give for a run's logs are the ones a run writes. So the docs cannot drift from the code.
//
// A YAML block is a whole config unless one of its comment lines says `# excerpt of <config> [under <key.path>]`:
// then it is validated as that shipped config (or study) with the block layered on top as key=value overrides, as a
// user would type them. A block whose comment says `# not validated: <reason>` is skipped; that set is kept explicit
// (SkippedBlocks below), so a skip cannot happen silently.
using System.Text;
using System.Text.RegularExpressions;
using SharpTune.Tests.Recipes;
using SharpTune.Training;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace SharpTune.Tests.Cli;

[Collection(RecipeCollection.Name)]
public sealed partial class DocExamplesTests : IDisposable
{
    /// <summary>Blocks deliberately not validated, as "file:line"; each must carry a `# not validated:` comment.</summary>
    private static readonly string[] SkippedBlocks = [];

    private readonly string _tmp = Directory.CreateTempSubdirectory("sharptune-docs-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_tmp, recursive: true); } catch (IOException) { }
    }

    public sealed record Block(string File, int Line, string Text)
    {
        public override string ToString() => $"{File}:{Line}";
    }

    private static IEnumerable<string> DocFiles() =>
        [Path.Combine(SharedData.RepoRoot, "README.md"), .. Directory.GetFiles(Path.Combine(SharedData.RepoRoot, "docs"), "*.md").Order()];

    /// <summary>Fenced blocks of <paramref name="language"/> in the README and docs/*.md (indented fences too).</summary>
    internal static IEnumerable<Block> FencedBlocks(string language)
    {
        foreach (var file in DocFiles())
        {
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
            {
                var open = lines[i].TrimStart();
                if (open != "```" + language) continue;
                var indent = lines[i].Length - open.Length;
                var body = new StringBuilder();
                var j = i + 1;
                for (; j < lines.Length && lines[j].Trim() != "```"; j++)
                    body.Append(lines[j].Length >= indent ? lines[j][indent..] : lines[j].TrimStart()).Append('\n');
                yield return new Block(Path.GetRelativePath(SharedData.RepoRoot, file), i + 1, body.ToString());
                i = j;
            }
        }
    }

    public static TheoryData<string> YamlBlocks()
    {
        var data = new TheoryData<string>();
        foreach (var b in FencedBlocks("yaml")) data.Add(b.ToString());
        return data;
    }

    [Fact]
    public void FencedYaml_AreFoundAndSkipsAreExplicit()
    {
        var blocks = FencedBlocks("yaml").ToList();
        Assert.True(blocks.Count >= 3, $"found only {blocks.Count} yaml blocks: is the extractor broken?");
        var marked = blocks.Where(b => NotValidated().IsMatch(b.Text)).Select(b => b.ToString());
        Assert.Equal(SkippedBlocks.Order(), marked.Order());
    }

    [Theory]
    [MemberData(nameof(YamlBlocks))]
    public void FencedYaml_Validates(string where)
    {
        var block = FencedBlocks("yaml").Single(b => b.ToString() == where);
        if (SkippedBlocks.Contains(where)) return;
        CliResult r;
        if (Excerpt().Match(block.Text) is { Success: true } m)
        {
            var overrides = Overrides(block.Text, m.Groups["under"].Success ? m.Groups["under"].Value : "");
            Assert.NotEmpty(overrides);
            r = CliHarness.Run(["validate", m.Groups["config"].Value, .. overrides]);
        }
        else
        {
            var file = Path.Combine(_tmp, "example.yaml");
            File.WriteAllText(file, block.Text);
            r = CliHarness.Run("validate", file);
        }
        Assert.True(r.ExitCode == 0, $"{where}: {r.Err}");
    }

    /// <summary>The block as `a.b=value` overrides (maps recurse; lists and scalars are written as YAML flow text).</summary>
    internal static List<string> Overrides(string yaml, string under)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(yaml));
        var result = new List<string>();
        void Walk(YamlNode node, string prefix)
        {
            if (node is YamlMappingNode map)
                foreach (var (k, v) in map.Children) Walk(v, prefix.Length == 0 ? ((YamlScalarNode)k).Value! : $"{prefix}.{((YamlScalarNode)k).Value}");
            else result.Add($"{prefix}={Flow(node)}");
        }
        Walk(stream.Documents[0].RootNode, under);
        return result;
    }

    private static string Flow(YamlNode node) => node switch
    {
        YamlScalarNode s when s.Style is ScalarStyle.Plain or ScalarStyle.Any => s.Value ?? "null",
        YamlScalarNode s => "'" + s.Value!.Replace("'", "''") + "'",
        YamlSequenceNode seq => "[" + string.Join(", ", seq.Children.Select(Flow)) + "]",
        YamlMappingNode map => "{" + string.Join(", ", map.Children.Select(kv => $"{Flow(kv.Key)}: {Flow(kv.Value)}")) + "}",
        _ => throw new NotSupportedException(node.GetType().Name),
    };

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void Readme_Stories260KSequence_RunsAsWritten()
    {
        // The README's block as written, with the two downloaded files taken from the shared data and every output
        // (/tmp/stories260K, runs/...) moved into a temporary folder. Each later command reads what earlier ones wrote.
        var block = FencedBlocks("bash").Single(b => b.File == "README.md" && b.Text.Contains("convert llama2c", StringComparison.Ordinal));
        var commands = ShellCommands(block.Text).ToList();
        Assert.Contains(commands, c => c is [_, "eval", "--compare", ..]);
        foreach (var command in commands)
        {
            Assert.Equal("./sharptune", command[0]);
            var args = command.Skip(1).Select(Localize).ToArray();
            var r = CliHarness.Run(args);
            Assert.True(r.ExitCode == 0, $"`{string.Join(' ', command)}` failed:\n{r.Err}");
        }
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok, TinyShakespeare)]
    public void DataMd_OwnTextWalkThrough_RunsAsWrittenAndValidatesEveryNSteps()
    {
        // docs/data.md's "your own text" block as written (tiny-shakespeare as input.txt, outputs in a temporary folder):
        // a .txt file fine-tunes the teacher and trains a KD student, each with held-out loss every 20 steps.
        var block = FencedBlocks("bash").Single(b => b.File == Path.Combine("docs", "data.md") && b.Text.Contains("own_text/kd_single_device", StringComparison.Ordinal));
        var commands = ShellCommands(block.Text).ToList();
        Assert.Contains(commands, c => c is [_, "run", "knowledge_distillation_single_device", ..]);
        foreach (var command in commands)
        {
            Assert.Equal("./sharptune", command[0]);
            var r = CliHarness.Run(command.Skip(1).Select(Localize).ToArray());
            Assert.True(r.ExitCode == 0, $"`{string.Join(' ', command)}` failed:\n{r.Err}");
            if (command[1] == "decode") Assert.Equal("<s>To be, or not to be\n", r.Out);
        }
        foreach (var run in new[] { "teacher", "kd" })
        {
            var output = Path.Combine(_tmp, "runs", "own_text", run);
            var rows = JsonlMetricLogger.Read(Path.Combine(output, "logs", "metrics.jsonl"));
            Assert.Equal([20.0, 40.0], rows.Where(x => x.ContainsKey("val_loss")).Select(x => x["step"]));
            Assert.Equal(40, rows.Count(x => x.ContainsKey("loss")));
            Assert.True(File.Exists(Path.Combine(output, "loss_curves.png")), $"{run}: no loss_curves.png");
        }
        // the student learnt from the text: its held-out loss fell below the uniform guess over 512 tokens (ln 512 = 6.24)
        var kd = JsonlMetricLogger.Read(Path.Combine(_tmp, "runs", "own_text", "kd", "logs", "metrics.jsonl")).Last(x => x.ContainsKey("val_loss"));
        Assert.InRange(kd["val_loss"], 0, Math.Log(512) - 0.5);
    }

    private const string TinyShakespeare = "text/tinyshakespeare/input.txt";

    // README paths -> paths for this test run: downloads from the shared data, outputs under the temporary folder,
    // repository files by their full path. `key=value` overrides are mapped on their value.
    private string Localize(string arg)
    {
        var eq = arg.IndexOf('=', StringComparison.Ordinal);
        if (eq > 0 && !arg.StartsWith('-')) return arg[..(eq + 1)] + Localize(arg[(eq + 1)..]);
        if (arg == "stories260K.bin") return SharedData.PathOf(Stories260KFolder.Bin);
        if (arg == "tok512.model") return SharedData.PathOf(Stories260KFolder.Tok);
        if (arg == "input.txt") return SharedData.PathOf(TinyShakespeare);
        if (arg.StartsWith("/tmp/", StringComparison.Ordinal)) return Path.Combine(_tmp, arg["/tmp/".Length..]);
        if (arg.StartsWith("runs/", StringComparison.Ordinal)) return Path.Combine(_tmp, arg);
        return File.Exists(Path.Combine(SharedData.RepoRoot, arg)) ? Path.Combine(SharedData.RepoRoot, arg) : arg;
    }

    /// <summary>The commands of a bash block: `\` continuations joined, `# comments` dropped, words split as bash does for quotes.</summary>
    internal static IEnumerable<string[]> ShellCommands(string script)
    {
        foreach (var line in script.Replace("\\\n", " ", StringComparison.Ordinal).Split('\n'))
        {
            var words = new List<string>();
            var word = new StringBuilder();
            var inWord = false;
            char quote = '\0';
            foreach (var c in line)
            {
                if (quote != '\0')
                {
                    if (c == quote) quote = '\0';
                    else word.Append(c);
                }
                else if (c is '"' or '\'') { quote = c; inWord = true; }
                else if (c == '#' && !inWord) break;
                else if (char.IsWhiteSpace(c))
                {
                    if (inWord) words.Add(word.ToString());
                    word.Clear();
                    inWord = false;
                }
                else { word.Append(c); inWord = true; }
            }
            Assert.True(quote == '\0', $"unclosed quote in: {line}");
            if (inWord) words.Add(word.ToString());
            if (words.Count > 0) yield return [.. words];
        }
    }

    [Fact]
    public void Docs_RunLogFileNames_AreTheOnesARunWrites()
    {
        // Every `logs/<file>.jsonl` (or Path.Combine(..., "logs", "<file>.jsonl")) the docs name must be what a recipe
        // writes: train the tiny teacher for two steps and look.
        var output = Path.Combine(_tmp, "teacher");
        RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            $"output_dir={output}", $"checkpointer.checkpoint_dir={output}/init", "max_steps_per_epoch=2");
        var written = Directory.GetFiles(Path.Combine(output, "logs")).Select(Path.GetFileName).ToHashSet();
        var named = DocFiles().SelectMany(f => LogFileMention().Matches(File.ReadAllText(f)).Select(m => (File: f, Name: m.Groups["name"].Value))).ToList();
        Assert.NotEmpty(named);
        Assert.All(named, n => Assert.True(written.Contains(n.Name), $"{Path.GetFileName(n.File)} names logs/{n.Name}; a run writes {string.Join(", ", written)}"));
    }

    [Fact]
    public void RecipeCheckpointKey_ErrorAndDocs_PointAtResumeFromCheckpoint()
    {
        // Resuming is implemented (recipe_state/ + resume_from_checkpoint); what is not used is torchtune's file key.
        var e = Assert.Throws<NotSupportedException>(() =>
            SharpTune.Checkpointing.HfCheckpointer.FullModelHfCheckpointer("in", "out", recipeCheckpoint: "recipe_state.pt"));
        Assert.Contains("resume_from_checkpoint", e.Message);
        var docs = DocFiles().Select(f => (File: f, Text: File.ReadAllText(f))).ToList();
        Assert.DoesNotContain(docs, d => ResumeDenied().IsMatch(d.Text));
        var line = File.ReadAllLines(Path.Combine(SharedData.RepoRoot, "docs", "checkpoints.md")).Single(l => l.Contains("`recipe_checkpoint` must", StringComparison.Ordinal));
        Assert.DoesNotContain("not implemented", line, StringComparison.OrdinalIgnoreCase);
    }

    [GeneratedRegex(@"resum[^.]*\bnot (implemented|supported)", RegexOptions.IgnoreCase)]
    private static partial Regex ResumeDenied();

    [GeneratedRegex(@"logs(?:/|""\s*,\s*"")(?<name>[\w.-]+\.jsonl)")]
    private static partial Regex LogFileMention();

    [GeneratedRegex(@"^\s*#\s*\(?excerpt of (?<config>[\w./-]+)(?: under (?<under>[\w.]+))?", RegexOptions.Multiline)]
    private static partial Regex Excerpt();

    [GeneratedRegex(@"^\s*#\s*not validated:", RegexOptions.Multiline)]
    private static partial Regex NotValidated();
}
