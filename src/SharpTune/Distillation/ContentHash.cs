// SHA-256 content hashes that tie a teacher cache to what produced it: the tokenized dataset (every sample's tokens,
// in index order, after packing/truncation), the tokenizer files and the teacher weights as loaded. A KD run
// recomputes the dataset hash from its own DataLoader input and refuses a cache whose hash differs.
using System.Security.Cryptography;
using SharpTune.Data;
using SharpTune.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Distillation;

/// <summary>Hex SHA-256 hashes of datasets, files and weights.</summary>
public static class ContentHash
{
    /// <summary>Hash of the token ids of every sample of <paramref name="dataset"/> in index order (lengths included).</summary>
    public static string OfDataset(ISampleDataset dataset)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> word = stackalloc byte[4];
        Append(hash, word, dataset.Count);
        for (var i = 0; i < dataset.Count; i++)
        {
            var tokens = dataset[i].Tokens;
            Append(hash, word, tokens.Length);
            hash.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(tokens.AsSpan()));
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>
    /// Hash of a tokenizer as the ids it produces: vocabulary size, special ids and the encoding of a fixed probe text
    /// (what a teacher cache records, so a KD run can refuse a cache made with another tokenizer).
    /// </summary>
    public static string OfTokenizer(ITokenizer tokenizer)
    {
        const string probe = "The quick brown fox jumps over the lazy dog. 0123456789 !?;:'\"()[]{} -- END";
        var text = $"{tokenizer.VocabSize}|{tokenizer.BosId}|{tokenizer.EosId}|{tokenizer.PadId}|{string.Join(",", tokenizer.Encode(probe))}";
        return Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(text)));
    }

    /// <summary>Hash of a file, or of every file under a folder (relative names and contents, in ordinal order).</summary>
    /// <exception cref="FileNotFoundException">Neither a file nor a folder exists at <paramref name="path"/>.</exception>
    public static string OfPath(string path)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        IEnumerable<string> files;
        string root;
        if (File.Exists(path)) { files = [path]; root = Path.GetDirectoryName(Path.GetFullPath(path))!; }
        else if (Directory.Exists(path))
        {
            root = path;
            files = Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal);
        }
        else throw new FileNotFoundException($"cannot hash '{path}': no such file or folder", path);
        foreach (var file in files)
        {
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes(Path.GetRelativePath(root, file).Replace('\\', '/') + "\n"));
            using var stream = File.OpenRead(file);
            var buffer = new byte[1 << 20];
            int read;
            while ((read = stream.Read(buffer)) > 0) hash.AppendData(buffer, 0, read);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>Hash of a module's state dict: names (sorted), dtypes, shapes and bytes.</summary>
    public static string OfWeights(nn.Module module)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, tensor) in module.state_dict().OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes($"{name}|{tensor.dtype}|{string.Join(",", tensor.shape)}\n"));
            using var scope = torch.NewDisposeScope();
            var flat = tensor.detach().cpu().contiguous().reshape(-1); // [numel]
            const long slice = 1 << 22;
            for (long start = 0; start < flat.numel(); start += slice)
            {
                using var part = flat.narrow(0, start, Math.Min(slice, flat.numel() - start));
                hash.AppendData(part.bytes);
            }
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>Hash of several hashes (order matters).</summary>
    public static string Combine(params string[] parts) =>
        Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(string.Join("|", parts))));

    private static void Append(IncrementalHash hash, Span<byte> word, int value)
    {
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(word, value);
        hash.AppendData(word);
    }
}
