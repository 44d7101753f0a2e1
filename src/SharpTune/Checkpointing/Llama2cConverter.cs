// Converts a llama2.c checkpoint (legacy .bin) and its SentencePiece tokenizer.model into a Hugging Face Llama folder:
// config.json, model.safetensors (weights in HF key names and HF's rotate-half q/k layout), tokenizer.model and
// generation_config.json. The folder is assembled under a temporary name and renamed into place, so a failed or
// interrupted conversion leaves no partial folder.
// llama2.c trains on documents that each start with BOS and have no EOS, and its run.c stops sampling when BOS is
// produced; generation_config.json therefore lists both EOS and BOS as end tokens (as transformers' eos_token_id list).
// References: karpathy/llama2.c export.py (legacy_export) and run.c (generate: `if (next == 1) break;`),
// transformers convert_llama_weights_to_hf.py, transformers GenerationConfig (generation_config.json).
using System.Text.Json;
using System.Text.Json.Nodes;
using SharpTune.Models.Llama2c;
using SharpTune.Tokenizers;

namespace SharpTune.Checkpointing;

/// <summary>What a conversion wrote.</summary>
/// <param name="OutputDir">The HF folder.</param>
/// <param name="Parameters">Number of weights written.</param>
/// <param name="Files">File names in the folder.</param>
public sealed record Llama2cConversion(string OutputDir, long Parameters, IReadOnlyList<string> Files);

/// <summary>llama2.c checkpoint to Hugging Face Llama folder.</summary>
public static class Llama2cConverter
{
    /// <summary>
    /// Reads <paramref name="modelBin"/> and <paramref name="tokenizerModel"/> and writes an HF Llama folder at
    /// <paramref name="outputDir"/> atomically (an existing folder is replaced only once the new one is complete).
    /// </summary>
    /// <exception cref="InvalidDataException">The tokenizer's vocabulary does not match the model's.</exception>
    public static Llama2cConversion Convert(string modelBin, string tokenizerModel, string outputDir)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputDir);
        if (!File.Exists(tokenizerModel)) throw new FileNotFoundException($"tokenizer model not found: {tokenizerModel}", tokenizerModel);
        var tokenizer = TokenizerLoader.Llama2(tokenizerModel);
        var imported = Llama2cImporter.Read(modelBin);
        try
        {
            if (tokenizer.VocabSize != imported.Config.VocabSize)
                throw new InvalidDataException(
                    $"{tokenizerModel}: tokenizer has {tokenizer.VocabSize} tokens but {modelBin} has vocab_size {imported.Config.VocabSize}");
            var eos = new List<int> { tokenizer.EosId };
            if (tokenizer.BosId >= 0 && tokenizer.BosId != tokenizer.EosId) eos.Add(tokenizer.BosId);
            var config = imported.Config with { BosTokenId = tokenizer.BosId, EosTokenIds = [tokenizer.EosId], TorchDtype = "float32" };
            var generation = new JsonObject
            {
                ["bos_token_id"] = tokenizer.BosId,
                ["eos_token_id"] = new JsonArray(eos.Select(e => (JsonNode)e).ToArray()),
            };
            AtomicFile.WriteFolder(outputDir, dir =>
            {
                File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJson());
                File.WriteAllText(Path.Combine(dir, "generation_config.json"), generation.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                SafetensorsWriter.Save(Path.Combine(dir, SafetensorsWriter.SingleFileName), imported.StateDict);
                File.WriteAllBytes(Path.Combine(dir, "tokenizer.model"), File.ReadAllBytes(tokenizerModel)); // not File.Copy: keep no read-only bit
            });
            var files = Directory.EnumerateFiles(outputDir).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToArray();
            return new Llama2cConversion(Path.GetFullPath(outputDir), imported.StateDict.Values.Sum(t => t.numel()), files);
        }
        finally
        {
            foreach (var t in imported.StateDict.Values) t.Dispose();
        }
    }
}
