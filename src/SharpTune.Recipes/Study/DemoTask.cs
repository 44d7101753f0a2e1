// The demo study's data, written into the study folder so a user can read what the models learn and are scored on:
// data/train.jsonl and data/test.jsonl (Alpaca-shaped records of the synthetic instruction task; the two splits use
// disjoint words) and data/mc_eval.jsonl, the multiple-choice eval ({query, choices, gold}, the evaluate recipe's
// generic `multiple_choice` task) built from held-out words. The training runs regenerate the same train records
// in memory from the same seed (sharptune.datasets.synthetic_instruct_dataset), so the file and the run agree.
// The query is the training prompt (the compact template), so a choice is scored as the response to it; the
// harness scores the continuation " " + choice, a space the training data never puts there, which shifts every
// choice by the same first token but conditions the rest on a slightly unusual context.
using System.Text.Json;
using SharpTune.Checkpointing;
using SharpTune.Data.Synthetic;

namespace SharpTune.Recipes.Study;

/// <summary>What <see cref="DemoTask.Write"/> produced.</summary>
/// <param name="TrainCount">Training records.</param>
/// <param name="TestCount">Held-out records.</param>
/// <param name="ChoiceCount">Multiple-choice items.</param>
public sealed record DemoData(int TrainCount, int TestCount, int ChoiceCount);

/// <summary>Writes the demo's synthetic task files.</summary>
public static class DemoTask
{
    /// <summary>The seed of the task (the demo configs' <c>dataset.seed</c>).</summary>
    public const int Seed = 0;

    /// <summary>Training records (the demo configs' <c>dataset.num_samples</c>).</summary>
    public const int TrainCount = 2048;

    /// <summary>Held-out records written for inspection.</summary>
    public const int TestCount = 256;

    /// <summary>Multiple-choice items scored by the eval.</summary>
    public const int ChoiceCount = 200;

    /// <summary>The training prompt: the synthetic instruct dataset's compact template, so a query is what training saw.</summary>
    public const string PromptTemplate = SyntheticInstructDataset.CompactTemplate;

    /// <summary>The prompt of one record.</summary>
    public static string Prompt(string instruction, string input) =>
        PromptTemplate.Replace("{instruction}", instruction, StringComparison.Ordinal).Replace("{input}", input, StringComparison.Ordinal);

    /// <summary>Writes train.jsonl, test.jsonl and mc_eval.jsonl into <paramref name="folder"/> (each atomically).</summary>
    public static DemoData Write(string folder, int seed = Seed, int trainCount = TrainCount, int testCount = TestCount, int choiceCount = ChoiceCount)
    {
        Directory.CreateDirectory(folder);
        var train = SyntheticInstructions.Generate(seed, trainCount, "train");
        var test = SyntheticInstructions.Generate(seed, testCount, "test");
        var choices = SyntheticInstructions.MultipleChoice(seed, choiceCount);
        AtomicFile.WriteAllText(Path.Combine(folder, "train.jsonl"), Lines(train.Select(r => new { instruction = r.Instruction, input = r.Input, output = r.Output })));
        AtomicFile.WriteAllText(Path.Combine(folder, "test.jsonl"), Lines(test.Select(r => new { instruction = r.Instruction, input = r.Input, output = r.Output })));
        AtomicFile.WriteAllText(Path.Combine(folder, "mc_eval.jsonl"), Lines(choices.Select(c => new { query = Prompt(c.Instruction, c.Input), choices = c.Choices, gold = c.Gold })));
        return new DemoData(train.Count, test.Count, choices.Count);
    }

    private static string Lines<T>(IEnumerable<T> rows) => string.Concat(rows.Select(r => JsonSerializer.Serialize(r) + "\n"));
}
