// Held-out validation in the training recipes: the score is the mean cross-entropy over every target token of the
// split (checked against libtorch's cross_entropy on each sample alone, unpadded), validation_split holds out the
// tail, run_val_every_n_steps logs val_loss/val_ppl at exactly those steps and the last, the summary names last and
// best, max_steps stops the run in the middle of an epoch with a step_N checkpoint, and `validate` refuses data files
// of a type no reader takes before anything runs.
using SharpTune.Data;
using SharpTune.Models.Llama2;
using SharpTune.Recipes.Support;
using SharpTune.Tests.Cli;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class HeldOutValidationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-heldout-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private sealed class ListDataset(IReadOnlyList<Sample> samples) : ISampleDataset
    {
        public int Count => samples.Count;
        public Sample this[int index] => samples[index];
    }

    [Fact]
    public void Score_PaddedBatches_EqualsPerSampleCrossEntropy()
    {
        // Given a tiny model and samples of different lengths, some labels masked
        torch.manual_seed(7);
        using var model = Llama2Models.Tiny();
        var rng = new Random(3);
        var samples = new List<Sample>();
        foreach (var n in new[] { 5, 11, 2, 9, 7 })
        {
            var tokens = Enumerable.Range(0, n).Select(_ => rng.Next(3, 64)).ToArray();
            var mask = Enumerable.Range(0, n).Select(i => i == 1).ToArray(); // token 1 not trained on
            samples.Add(new Sample(tokens, Sample.ShiftedLabels(tokens, mask)));
        }
        // When scored in padded batches of 2
        var score = new HeldOut(new ListDataset(samples), everyNSteps: 1, batchSize: 2).Score(model, step: 3, padId: 0, CPU);
        // Then it equals libtorch's summed cross_entropy over each sample alone divided by the target count
        double sum = 0;
        long count = 0;
        using (no_grad())
            foreach (var s in samples)
            {
                using var logits = model.Forward(tensor(s.Tokens.Select(t => (long)t).ToArray(), [1, s.Tokens.Length]))[0]; // [s, v]
                using var labels = tensor(s.Labels.Select(t => (long)t).ToArray());
                using var ce = nn.functional.cross_entropy(logits, labels, ignore_index: Sample.IgnoreIndex, reduction: nn.Reduction.Sum);
                sum += ce.item<float>();
                count += s.Labels.Count(l => l != Sample.IgnoreIndex);
            }
        Assert.Equal(count, score.Tokens);
        // float32 sums of ~30 terms of magnitude ~ln 64 ≈ 4.2, differently batched: |error| ≲ 30 x 4.2 x 1e-6 relative
        Assert.Equal(sum / count, score.Loss, 1e-4);
        Assert.Equal(Math.Exp(score.Loss), score.Perplexity, 12);
        Assert.True(model.training); // restored
    }

    [Fact]
    public void Run_ValidationSplitEveryFiveSteps_LogsHeldOutAtThoseStepsAndTheLast()
    {
        var text = Path.Combine(_dir, "corpus.txt");
        File.WriteAllText(text, string.Concat(Enumerable.Range(0, 400).Select(i => $"THE {i % 7} QUICK FOX {i % 5} JUMPS. ")));
        var output = Path.Combine(_dir, "teacher");
        var reporter = RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            $"output_dir={output}", $"checkpointer.checkpoint_dir={output}/init",
            "dataset={_component_: sharptune.datasets.text_completion_dataset, source: " + text + ", max_seq_len: 32}",
            "validation_split=0.1", "run_val_every_n_steps=5", "max_steps=12", "lr_scheduler=null");
        var held = RecipeRunner.Log(output).Where(r => r.ContainsKey("val_loss")).ToList();
        Assert.Equal([5.0, 10.0, 12.0], held.Select(r => r["step"]));
        Assert.All(held, r => Assert.Equal(Math.Exp(r["val_loss"]), r["val_ppl"], 9));
        Assert.Equal(12, RecipeRunner.Log(output).Count(r => r.ContainsKey("loss")));           // max_steps: 12 steps in all
        Assert.True(Directory.Exists(Path.Combine(output, "step_12")), "max_steps inside the epoch saves step_N");
        Assert.False(Directory.Exists(Path.Combine(output, "epoch_0")));
        Assert.Contains(reporter.Infos, i => i.StartsWith("dataset: 1 document, ", StringComparison.Ordinal) && i.Contains("none truncated", StringComparison.Ordinal));
        Assert.Contains(reporter.Infos, i => i.StartsWith("validation_split 0.1: the last ", StringComparison.Ordinal));
        var best = held.MinBy(r => r["val_loss"])!;
        Assert.Contains(reporter.Infos, i => i.StartsWith($"held-out loss {held[^1]["val_loss"]:F4}", StringComparison.Ordinal) &&
                                             (best == held[^1] ? i.EndsWith("(the best)", StringComparison.Ordinal) : i.Contains($"at step {best["step"]}", StringComparison.Ordinal)));
        Assert.True(File.Exists(Path.Combine(output, "loss_curves.png")));
        Assert.Contains(reporter.Infos, i => i.Contains("loss_curves.png (loss, val_loss;", StringComparison.Ordinal));
    }

    [Fact]
    public void Run_ValidationDatasetOfItsOwn_ScoredOnThatFileAndNotWithASplit()
    {
        var held = Path.Combine(_dir, "held.txt");
        File.WriteAllText(held, string.Concat(Enumerable.Repeat("A HELD OUT LINE OF TEXT. ", 40)));
        var output = Path.Combine(_dir, "own");
        string[] common = [$"output_dir={output}", $"checkpointer.checkpoint_dir={output}/init", "max_steps=4", "run_val_every_n_steps=2",
            "validation_dataset={_component_: sharptune.datasets.text_completion_dataset, source: " + held + ", max_seq_len: 32}"];
        var reporter = RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device", common);
        var scores = RecipeRunner.Log(output).Where(r => r.ContainsKey("val_loss")).ToList();
        Assert.Equal([2.0, 4.0], scores.Select(r => r["step"]));
        // 40 x 25 characters + BOS + EOS, cut into windows of 32: every transition of that file is a target once
        Assert.All(scores, r => Assert.Equal(40 * 25 + 1, r["val_tokens"]));
        Assert.Contains(reporter.Infos, i => i.StartsWith("validation_dataset: 1 document, 1,002 tokens", StringComparison.Ordinal));

        var both = Assert.Throws<SharpTune.Config.ConfigException>(() => RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            [.. common, $"output_dir={_dir}/both", $"checkpointer.checkpoint_dir={_dir}/both/init", "validation_split=0.1"]));
        Assert.Contains("set validation_dataset or validation_split, not both", both.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Run_EveryNStepsWithoutHeldOutData_RefusedNamingTheKeys()
    {
        var e = Assert.Throws<SharpTune.Config.ConfigException>(() => RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            $"output_dir={_dir}/t", $"checkpointer.checkpoint_dir={_dir}/t/init", "run_val_every_n_steps=5"));
        Assert.Contains("set validation_split (e.g. 0.1) or validation_dataset", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_DataFileOfUnreadableType_RefusedBeforeRunning()
    {
        var docx = Path.Combine(_dir, "corpus.docx");
        File.WriteAllText(docx, "x");
        var txt = Path.Combine(_dir, "corpus.txt");
        File.WriteAllText(txt, "x");
        var bad = CliHarness.Run("validate", "tiny/teacher_full_single_device",
            "dataset={_component_: sharptune.datasets.text_completion_dataset, source: text, data_files: " + docx + "}");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("dataset.data_files", bad.Err, StringComparison.Ordinal);
        Assert.Contains("unsupported data file type '.docx'", bad.Err, StringComparison.Ordinal);
        var good = CliHarness.Run("validate", "tiny/teacher_full_single_device",
            "dataset={_component_: sharptune.datasets.text_completion_dataset, source: text, data_files: " + txt + "}");
        Assert.True(good.ExitCode == 0, good.Err);
    }
}
