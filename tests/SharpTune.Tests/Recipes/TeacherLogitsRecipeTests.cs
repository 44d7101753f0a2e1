// Recipe `teacher_logits` end to end through `sharptune run`: the cache it writes holds, for every sample, the
// teacher's own top-k log-softmax (recomputed here from the same checkpoint), its manifest carries the dataset's hash,
// and a rerun after an interruption resumes instead of starting over.
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Data;
using SharpTune.Data.Synthetic;
using SharpTune.Distillation;
using SharpTune.Models.Llama2;
using SharpTune.Native;
using SharpTune.Tests.Cli;
using TorchSharp;

namespace SharpTune.Tests.Recipes;

public sealed class TeacherLogitsRecipeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-tlogits-").FullName;

    public TeacherLogitsRecipeTests() => TorchRuntime.EnsureLoaded();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private (string Config, string Data, string Teacher) Setup()
    {
        torch.manual_seed(3);
        using var teacher = Llama2Models.Tiny();
        var teacherDir = HfCheckpointer.Save(Path.Combine(_dir, "teacher"), CheckpointTag.Epoch(0), teacher.state_dict(), new JsonObject(), null);
        var data = Path.Combine(_dir, "data.jsonl");
        // Upper case, digits and spaces only: the char tokenizer's ids for them fit the tiny teacher's 64-id vocabulary.
        File.WriteAllLines(data, Enumerable.Range(0, 5).Select(i => $"{{\"text\": \"HELLO {i} WORLD {new string('X', i)} 42\"}}"));
        var config = Path.Combine(_dir, "teacher_logits.yaml");
        File.WriteAllText(config, $"""
            # recipe: teacher_logits
            output_dir: {Path.Combine(_dir, "cache")}
            tokenizer:
              _component_: sharptune.data.synthetic.char_tokenizer
            dataset:
              _component_: sharptune.datasets.text_completion_dataset
              source: json
              data_files: {data}
            teacher_model:
              _component_: sharptune.models.llama2.tiny
            teacher_checkpointer:
              _component_: sharptune.checkpointing.full_model_hf_checkpointer
              checkpoint_dir: {teacherDir}
              output_dir: {Path.Combine(_dir, "unused")}
            k: 8
            temperature: 2.0
            samples_per_shard: 2
            batch_size: 3             # right-padded batches of samples of different lengths
            threads: 1
            """);
        return (config, data, teacherDir);
    }

    [Fact]
    public void Run_TinyTeacher_CacheHoldsTeachersTopKPerSampleAndDataHash()
    {
        var (config, data, teacherDir) = Setup();
        var r = CliHarness.Run("run", "teacher_logits", "--config", config);
        Assert.True(r.ExitCode == 0, r.Err + r.Out);

        var tokenizer = new CharTokenizer();
        var dataset = DatasetBuilders.TextCompletionDataset(tokenizer, "json", dataFiles: data);
        using var cache = TeacherCache.Open(Path.Combine(_dir, "cache"), expectedDataHash: ContentHash.OfDataset(dataset), expectedVocab: 64);
        Assert.Equal(5, cache.Samples);
        Assert.Equal(2.0, cache.Manifest.Temperature);
        using var teacher = Llama2Models.Tiny();
        HfCheckpointer.LoadInto(teacher, teacherDir);
        teacher.eval();
        using var noGrad = torch.no_grad();
        for (var i = 0; i < dataset.Count; i++)
        {
            var tokens = dataset[i].Tokens;
            Assert.Equal(tokens.Length, cache.SampleTokens(i));
            var logits = teacher.Forward(torch.tensor(tokens.Select(t => (long)t).ToArray()).unsqueeze(0))[0];   // [s, v]
            var (lp, idx) = (logits / 2.0).log_softmax(-1).topk(8);                                           // [s, 8]
            var ids = new long[tokens.Length * 8];
            var lps = new float[ids.Length];
            cache.ReadSample(i, ids, lps, new float[tokens.Length]);
            // Each position holds the teacher's top-8 ids (entries within one quantisation step may swap ranks), each
            // log-prob within half a step (the default 1/32 nat) plus float32 rounding
            var expectedIds = idx.data<long>().ToArray();
            var expected = lp.data<float>().ToArray();
            for (var t = 0; t < tokens.Length; t++)
            {
                var want = Enumerable.Range(t * 8, 8).ToDictionary(j => expectedIds[j], j => expected[j]);
                Assert.Equal(want.Keys.Order(), ids.Skip(t * 8).Take(8).Order());
                for (var j = t * 8; j < t * 8 + 8; j++)
                    Assert.True(Math.Abs(want[ids[j]] - lps[j]) <= TopKFormat.DefaultLogProbStep / 2 + 2e-5, $"sample {i} entry {j}: {lps[j]} vs {want[ids[j]]}");
            }
        }
        Assert.Contains("bytes/token", r.Out);
        Assert.Contains("entries kept per position: mean 8.00, min 8 of k 8; 0 folded into the tail", r.Out);
    }

    [Fact]
    public void Run_AfterInterruption_ResumesFromLastCompleteShard()
    {
        var (config, _, _) = Setup();
        Assert.Equal(0, CliHarness.Run("run", "teacher_logits", "--config", config).ExitCode);
        var cacheDir = Path.Combine(_dir, "cache");
        var full = TeacherCacheManifest.Read(cacheDir);
        // Simulate a kill after the first shard: drop the later shards from the manifest and the disk.
        foreach (var s in full.Shards.Skip(1)) File.Delete(Path.Combine(cacheDir, s.File));
        (full with { Shards = [full.Shards[0]], Complete = false }).Write(cacheDir);

        var r = CliHarness.Run("run", "teacher_logits", "--config", config);
        Assert.True(r.ExitCode == 0, r.Err + r.Out);
        Assert.Contains("resuming: 2 of 5 samples", r.Out);
        Assert.Equal(full.Shards.Select(s => s.Sha256), TeacherCacheManifest.Read(cacheDir).Shards.Select(s => s.Sha256));
    }
}
