// Converts an HF model folder's floating-point weights to another dtype (float32, bfloat16, float16): the safetensors
// tensors are cast one at a time, config.json gets the new torch_dtype, and every other file (tokenizer, generation
// config) is copied as is. Integer and bool tensors are kept. The output folder is written atomically. Used to ship
// small checkpoints (the demo's teacher is stored in bfloat16, half its float32 size) and to load bf16 Hub weights as
// float32 ahead of time.
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Checkpointing;

/// <summary>What <see cref="DtypeConverter.Convert"/> wrote.</summary>
/// <param name="OutputDir">The folder written.</param>
/// <param name="Converted">Tensors cast.</param>
/// <param name="Kept">Tensors already in the dtype, or not floating point.</param>
/// <param name="Bytes">Size of the weights written.</param>
public sealed record DtypeConversion(string OutputDir, int Converted, int Kept, long Bytes);

/// <summary>Casts an HF folder's weights.</summary>
public static class DtypeConverter
{
    /// <summary>The dtype names accepted (HF's torch_dtype spelling) and their tensor types.</summary>
    public static readonly IReadOnlyDictionary<string, ScalarType> Names = new Dictionary<string, ScalarType>
    {
        ["float32"] = ScalarType.Float32,
        ["bfloat16"] = ScalarType.BFloat16,
        ["float16"] = ScalarType.Float16,
    };

    /// <summary>Writes <paramref name="outputDir"/>: <paramref name="inputDir"/> with its float weights cast to <paramref name="dtype"/>.</summary>
    /// <exception cref="ArgumentException">Unknown dtype name, or the output folder is the input folder.</exception>
    public static DtypeConversion Convert(string inputDir, string outputDir, string dtype)
    {
        if (!Names.TryGetValue(dtype, out var target))
            throw new ArgumentException($"unknown dtype '{dtype}' (expected {string.Join(", ", Names.Keys)})", nameof(dtype));
        if (!Directory.Exists(inputDir)) throw new DirectoryNotFoundException($"model folder not found: {inputDir}");
        if (Path.GetFullPath(inputDir).TrimEnd('/') == Path.GetFullPath(outputDir).TrimEnd('/'))
            throw new ArgumentException($"write the converted model to another folder than its source ({inputDir})", nameof(outputDir));
        var configPath = Path.Combine(inputDir, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{inputDir} has no config.json: not an HF model folder", configPath);
        using var source = SafetensorsCheckpoint.Open(inputDir);
        var weightFiles = source.Files.Select(f => Path.GetFileName(f.Path)).ToHashSet(StringComparer.Ordinal);
        weightFiles.Add(SafetensorsWriter.IndexFileName);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var (converted, kept) = (0, 0);
        try
        {
            foreach (var key in source.Keys)
            {
                var t = source.Load(key);
                if (t.dtype != target && SafetensorsDType.IsFloat(t.dtype))
                {
                    using (t) tensors[key] = t.to_type(target);
                    converted++;
                }
                else
                {
                    tensors[key] = t;
                    kept++;
                }
            }
            var config = JsonNode.Parse(File.ReadAllText(configPath))?.AsObject()
                ?? throw new InvalidDataException($"{configPath}: not a JSON object");
            config["torch_dtype"] = dtype;
            AtomicFile.WriteFolder(outputDir, dir =>
            {
                foreach (var file in Directory.EnumerateFiles(inputDir))
                {
                    var name = Path.GetFileName(file);
                    if (weightFiles.Contains(name) || name == "config.json") continue;
                    File.WriteAllBytes(Path.Combine(dir, name), File.ReadAllBytes(file)); // not File.Copy: keep no read-only bit
                }
                File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
                SafetensorsWriter.SaveSharded(dir, tensors);
            });
            return new DtypeConversion(Path.GetFullPath(outputDir), converted, kept, tensors.Values.Sum(SafetensorsWriter.ByteLength));
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }
}
