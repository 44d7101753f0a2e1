// Writer for .safetensors files and sharded Hugging Face weight folders.
// Format: https://github.com/huggingface/safetensors (README "Format"). Header: {"__metadata__":{"format":"pt"}, ...}
// with keys in ordinal order, data laid out in the same order with no gaps, the JSON padded with spaces so the data
// section starts 8-byte aligned (as the reference serializer does).
// Sharding follows transformers' save_pretrained: model-00001-of-0000N.safetensors plus model.safetensors.index.json
// {"metadata": {"total_size": bytes}, "weight_map": {key: file}}; "5GB" there means 5 * 10^9 bytes.
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Checkpointing;

/// <summary>Writes safetensors files, single or sharded, atomically.</summary>
public static class SafetensorsWriter
{
    /// <summary>Default largest shard size: 5 GB (5 * 10^9 bytes), the transformers default.</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    /// <summary>File name of a single-file model.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>File name of the shard index.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/> (temp file + rename). Tensors on other devices or
    /// non-contiguous are copied to contiguous CPU memory one at a time. Tensors that share memory are rejected, as the
    /// reference implementation does: drop the alias (e.g. a tied <c>lm_head.weight</c>) first.
    /// <paramref name="metadata"/> defaults to <c>{"format": "pt"}</c>; an empty map writes no <c>__metadata__</c>.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var keys = tensors.Keys.Order(StringComparer.Ordinal).ToArray();
        Validate(path, tensors, keys);
        var (header, offsets) = BuildHeader(tensors, keys, metadata);
        AtomicFile.Write(path, fs =>
        {
            var dataStart = (long)header.Length;
            fs.Write(header);
            var total = offsets.Length == 0 ? 0 : offsets[^1].End;
            fs.SetLength(dataStart + total);
            fs.Flush();
            for (var i = 0; i < keys.Length; i++)
            {
                var t = tensors[keys[i]];
                var cpu = t.device_type == DeviceType.CPU && t.is_contiguous() ? null : t.detach().cpu().contiguous();
                try
                {
                    TensorStorage.WriteFrom(fs.SafeFileHandle, dataStart + offsets[i].Begin, cpu ?? t);
                }
                finally
                {
                    cpu?.Dispose();
                }
            }
        });
    }

    /// <summary>
    /// Writes a Hugging Face weight folder: <c>model.safetensors</c> when everything fits in
    /// <paramref name="maxShardBytes"/>, otherwise <c>model-0000i-of-0000N.safetensors</c> shards (keys in ordinal
    /// order, a new shard when the next tensor would overflow; a tensor larger than the limit gets a shard of its own)
    /// plus <c>model.safetensors.index.json</c>. Each file is written atomically and the index last; files of an
    /// earlier save into the same folder are deleted only afterwards, so at every instant the folder loads as either
    /// the old or the new weights. Returns the weight file names written.
    /// </summary>
    public static IReadOnlyList<string> SaveSharded(string folder, IReadOnlyDictionary<string, Tensor> tensors,
        long maxShardBytes = DefaultMaxShardBytes)
    {
        if (maxShardBytes <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), maxShardBytes, "must be positive");
        Directory.CreateDirectory(folder);
        var keys = tensors.Keys.Order(StringComparer.Ordinal).ToArray();
        Validate(folder, tensors, keys);
        var shards = PlanShards(tensors, keys, maxShardBytes);
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        var written = new List<string>();
        if (shards.Count <= 1)
        {
            Save(Path.Combine(folder, SingleFileName), tensors, metadata);
            written.Add(SingleFileName);
            AtomicFile.TryDelete(Path.Combine(folder, IndexFileName));
        }
        else
        {
            var weightMap = new JsonObject();
            for (var i = 0; i < shards.Count; i++)
            {
                var name = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                var part = shards[i].ToDictionary(k => k, k => tensors[k], StringComparer.Ordinal);
                Save(Path.Combine(folder, name), part, metadata);
                written.Add(name);
                foreach (var k in shards[i]) weightMap[k] = name;
            }
            var totalSize = keys.Sum(k => ByteLength(tensors[k]));
            var index = new JsonObject
            {
                ["metadata"] = new JsonObject { ["total_size"] = totalSize },
                ["weight_map"] = weightMap,
            };
            AtomicFile.WriteAllText(Path.Combine(folder, IndexFileName),
                index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        }
        foreach (var stale in Directory.EnumerateFiles(folder, "model*.safetensors"))
            if (!written.Contains(Path.GetFileName(stale)) && IsWeightFileName(Path.GetFileName(stale)))
                AtomicFile.TryDelete(stale);
        return written;
    }

    /// <summary>Bytes of tensor data <paramref name="t"/> occupies in a file.</summary>
    public static long ByteLength(Tensor t) => t.numel() * SafetensorsDType.SizeOf(t.dtype);

    internal static bool IsWeightFileName(string name) =>
        name == SingleFileName ||
        System.Text.RegularExpressions.Regex.IsMatch(name, @"^model-\d{5}-of-\d{5}\.safetensors$");

    internal static (byte[] Header, (long Begin, long End)[] Offsets) BuildHeader(
        IReadOnlyDictionary<string, Tensor> tensors, string[] keys, IReadOnlyDictionary<string, string>? metadata)
    {
        var offsets = new (long Begin, long End)[keys.Length];
        var json = new JsonObject();
        metadata ??= new Dictionary<string, string> { ["format"] = "pt" };
        if (metadata.Count > 0)
        {
            // An empty map omits the key, as the reference serializer does for metadata=None.
            var meta = new JsonObject();
            foreach (var (k, v) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal)) meta[k] = v;
            json["__metadata__"] = meta;
        }
        long position = 0;
        for (var i = 0; i < keys.Length; i++)
        {
            var t = tensors[keys[i]];
            var length = ByteLength(t);
            offsets[i] = (position, position + length);
            json[keys[i]] = new JsonObject
            {
                ["dtype"] = SafetensorsDType.NameOf(t.dtype),
                ["shape"] = new JsonArray(t.shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(position, position + length),
            };
            position += length;
        }
        var text = Encoding.UTF8.GetBytes(json.ToJsonString());
        var padded = (text.Length + 7) / 8 * 8;
        var header = new byte[8 + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)padded);
        text.CopyTo(header, 8);
        header.AsSpan(8 + text.Length).Fill((byte)' ');
        return (header, offsets);
    }

    private static List<string[]> PlanShards(IReadOnlyDictionary<string, Tensor> tensors, string[] keys, long maxShardBytes)
    {
        var shards = new List<string[]>();
        var current = new List<string>();
        long size = 0;
        foreach (var k in keys)
        {
            var n = ByteLength(tensors[k]);
            if (current.Count > 0 && size + n > maxShardBytes)
            {
                shards.Add(current.ToArray());
                current.Clear();
                size = 0;
            }
            current.Add(k);
            size += n;
        }
        if (current.Count > 0 || shards.Count == 0) shards.Add(current.ToArray());
        return shards;
    }

    private static void Validate(string path, IReadOnlyDictionary<string, Tensor> tensors, string[] keys)
    {
        var byAddress = new Dictionary<nint, string>();
        foreach (var k in keys)
        {
            if (string.IsNullOrEmpty(k) || k == "__metadata__")
                throw new ArgumentException($"{path}: '{k}' is not a valid tensor name", nameof(tensors));
            var t = tensors[k];
            _ = SafetensorsDType.NameOf(t.dtype);
            if (t.device_type != DeviceType.CPU || !t.is_contiguous() || t.numel() == 0) continue;
            var address = TensorStorage.AddressOf(t);
            if (byAddress.TryGetValue(address, out var other))
                throw new ArgumentException(
                    $"{path}: tensors '{other}' and '{k}' share memory; safetensors stores each tensor once, so drop the alias (a tied lm_head.weight) before saving",
                    nameof(tensors));
            byAddress[address] = k;
        }
    }
}
