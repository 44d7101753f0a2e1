// One entry point that recognises a tokenizer from its files, plus the config components with torchtune's names
// (torchtune/models/llama3/_model_builders.py llama3_tokenizer, qwen2/_model_builders.py qwen2_tokenizer,
// llama2/_model_builders.py llama2_tokenizer).
using System.Text.Json;
using SharpTune.Config;

namespace SharpTune.Tokenizers;

/// <summary>The tokenizer families SharpTune reads.</summary>
public enum TokenizerFamily
{
    /// <summary>Llama 3 / 3.1 / 3.2 byte-level BPE.</summary>
    Llama3,

    /// <summary>Qwen2 / Qwen2.5 / Qwen3 byte-level BPE.</summary>
    Qwen2,

    /// <summary>SentencePiece (Llama 2, TinyLlama, llama2.c).</summary>
    SentencePiece,
}

/// <summary>Loads any supported tokenizer from a file or a model folder.</summary>
public static class TokenizerLoader
{
    /// <summary>
    /// Detects the family and loads. <paramref name="path"/> may be a model folder (tokenizer.json, vocab.json +
    /// merges.txt, tokenizer.model or original/tokenizer.model), a tokenizer.json, a vocab.json (merges.txt beside it),
    /// a SentencePiece model or a tiktoken file.
    /// </summary>
    public static IChatTokenizer Load(string path, int? maxSeqLen = null, TruncationType truncation = TruncationType.Right)
    {
        var (family, file, merges) = Detect(path);
        return family switch
        {
            TokenizerFamily.Llama3 when file.EndsWith(".json", StringComparison.OrdinalIgnoreCase) =>
                Llama3Tokenizer.FromTokenizerJson(file, maxSeqLen, truncation),
            TokenizerFamily.Llama3 => Llama3Tokenizer.FromTiktoken(file, maxSeqLen, truncation),
            TokenizerFamily.Qwen2 when merges is not null => Qwen2Tokenizer.FromVocabMerges(file, merges, maxSeqLen, truncation),
            TokenizerFamily.Qwen2 => Qwen2Tokenizer.FromTokenizerJson(file, maxSeqLen, truncation),
            _ => Llama2Tokenizer.FromModel(file, maxSeqLen, truncation),
        };
    }

    /// <summary>Which family <paramref name="path"/> holds and the file(s) to read.</summary>
    public static (TokenizerFamily Family, string File, string? Merges) Detect(string path)
    {
        if (Directory.Exists(path))
        {
            string[] candidates = ["tokenizer.json", "vocab.json", "tokenizer.model", Path.Combine("original", "tokenizer.model")];
            foreach (var c in candidates)
            {
                var f = Path.Combine(path, c);
                if (File.Exists(f)) return Detect(f);
            }
            throw new FileNotFoundException(
                $"{path}: no tokenizer found (looked for {string.Join(", ", candidates)})");
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer path not found: {path}", path);

        var name = Path.GetFileName(path);
        if (name.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            var merges = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "merges.txt");
            if (!name.Equals("tokenizer.json", StringComparison.OrdinalIgnoreCase) && File.Exists(merges))
                return (TokenizerFamily.Qwen2, path, merges);
            return (FamilyOfTokenizerJson(path), path, null);
        }
        return HfTokenizerFiles.LooksLikeTiktoken(path)
            ? (TokenizerFamily.Llama3, path, null)
            : (TokenizerFamily.SentencePiece, path, null);
    }

    private static TokenizerFamily FamilyOfTokenizerJson(string path)
    {
        // Decided by the control tokens the file defines; reading only added_tokens keeps this cheap.
        using var doc = HfTokenizerFiles.ParseJson(path);
        var names = new HashSet<string>(StringComparer.Ordinal);
        if (doc.RootElement.TryGetProperty("added_tokens", out var at) && at.ValueKind == JsonValueKind.Array)
            foreach (var e in at.EnumerateArray())
                if (e.TryGetProperty("content", out var c) && c.GetString() is { } s) names.Add(s);
        if (names.Contains("<|begin_of_text|>") && names.Contains("<|start_header_id|>")) return TokenizerFamily.Llama3;
        if (names.Contains("<|im_start|>") && names.Contains("<|endoftext|>")) return TokenizerFamily.Qwen2;
        throw new NotSupportedException(
            $"{path}: unrecognised tokenizer.json (no Llama 3 <|begin_of_text|>/<|start_header_id|> and no Qwen2 <|im_start|>/<|endoftext|>); for SentencePiece models pass the tokenizer.model");
    }

    /// <summary>torchtune <c>llama3_tokenizer</c>: Meta's original/tokenizer.model or a tokenizer.json.</summary>
    [Component("sharptune.models.llama3.llama3_tokenizer")]
    public static IChatTokenizer Llama3(string path, int? maxSeqLen = null, string truncationType = "right", string? promptTemplate = null)
    {
        RejectTemplate(promptTemplate, "llama3_tokenizer");
        var (family, file, _) = Detect(path);
        if (family != TokenizerFamily.Llama3)
            throw new InvalidDataException($"{path}: llama3_tokenizer expects a Llama 3 tokenizer, found a {family} one");
        return Load(file, maxSeqLen, Truncation.Parse(truncationType));
    }

    /// <summary>torchtune <c>qwen2_tokenizer</c>: vocab.json + merges_file, or a tokenizer.json.</summary>
    [Component("sharptune.models.qwen2.qwen2_tokenizer")]
    [Component("sharptune.models.qwen2_5.qwen2_5_tokenizer")]
    public static IChatTokenizer Qwen2(string path, string? mergesFile = null, int? maxSeqLen = null, string truncationType = "right",
        string? promptTemplate = null)
    {
        RejectTemplate(promptTemplate, "qwen2_tokenizer");
        var truncation = Truncation.Parse(truncationType);
        if (mergesFile is not null) return Qwen2Tokenizer.FromVocabMerges(path, mergesFile, maxSeqLen, truncation);
        var (family, file, merges) = Detect(path);
        if (family != TokenizerFamily.Qwen2)
            throw new InvalidDataException($"{path}: qwen2_tokenizer expects a Qwen2 tokenizer, found a {family} one");
        return merges is not null ? Qwen2Tokenizer.FromVocabMerges(file, merges, maxSeqLen, truncation)
            : Qwen2Tokenizer.FromTokenizerJson(file, maxSeqLen, truncation);
    }

    /// <summary>torchtune <c>llama2_tokenizer</c>: a SentencePiece tokenizer.model.</summary>
    [Component("sharptune.models.llama2.llama2_tokenizer")]
    public static IChatTokenizer Llama2(string path, int? maxSeqLen = null, string? promptTemplate = null, string truncationType = "right")
    {
        var (family, file, _) = Detect(path);
        if (family != TokenizerFamily.SentencePiece)
            throw new InvalidDataException($"{path}: llama2_tokenizer expects a SentencePiece tokenizer.model, found a {family} one");
        return Llama2Tokenizer.FromModel(file, maxSeqLen, Truncation.Parse(truncationType), promptTemplate);
    }

    // The Llama 3 and ChatML formats are built in; other torchtune prompt templates are not implemented.
    private static void RejectTemplate(string? promptTemplate, string component)
    {
        if (!string.IsNullOrEmpty(promptTemplate))
            throw new NotSupportedException(
                $"{component}: prompt_template '{promptTemplate}' is not supported; the model's own chat format is always applied (leave prompt_template null)");
    }
}
