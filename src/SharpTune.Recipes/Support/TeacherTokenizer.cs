// The teacher must speak the student's token space. A teacher checkpoint folder normally carries its tokenizer files
// (a Hub download, `convert llama2c`, and every checkpoint SharpTune saves copy them); when it does, they are loaded and
// compared id by id with the run's `tokenizer` (TokenizerComparison), and a different tokenizer is refused: KD compares
// the two distributions id by id, so a teacher of another vocabulary teaches a wrong distribution without any error.
// Distilling across tokenizers needs an alignment of the two vocabularies (cross-tokenizer distillation, e.g. the
// Universal Logit Distillation loss, Boizard et al. 2024, https://arxiv.org/abs/2402.12030), which SharpTune does not
// implement yet. A folder without tokenizer files (a model trained with the built-in character tokenizer) cannot be
// checked; the recipe then says so instead of claiming the tokenizers agree.
using SharpTune.Config;
using SharpTune.Tokenizers;

namespace SharpTune.Recipes.Support;

/// <summary>Compares the tokenizer files of a teacher checkpoint folder with the run's tokenizer.</summary>
public static class TeacherTokenizer
{
    /// <summary>
    /// Loads the tokenizer in <paramref name="teacherDir"/> (when the folder has one) and checks it is the run's
    /// tokenizer. Returns the teacher tokenizer's file, or null when the folder has no tokenizer files (not checked).
    /// </summary>
    /// <exception cref="ConfigException">The tokenizers differ; names both and says what differs.</exception>
    public static string? Check(SharpTuneConfig config, ITokenizer runTokenizer, string teacherDir, string teacherKey)
    {
        TokenizerFamily family;
        string file;
        try { (family, file, _) = TokenizerLoader.Detect(teacherDir); }
        catch (FileNotFoundException) { return null; }
        var teacherTokenizer = TokenizerLoader.Load(file);
        var difference = TokenizerComparison.Difference(teacherTokenizer, runTokenizer, "teacher", "student");
        if (difference is null) return file;
        var location = config.Find(teacherKey)?.Location ?? new SourceLocation(config.SourcePath ?? "<config>", 0, 0);
        throw new ConfigException(location, teacherKey,
            $"the teacher's tokenizer ({family}, {file}) is not the student's ({Describe(config)}): {difference}. " +
            "Distillation compares the two models' distributions id by id, so both must use the same tokenizer (a teacher " +
            "whose vocabulary is only padded beyond it is fine); distilling between different tokenizers " +
            "(cross-tokenizer distillation) is not supported yet by the recipes (the library has the ULD/GOLD losses and span " +
            "alignment for it: docs/cross_tokenizer.md)");
    }

    /// <summary>The run's <c>tokenizer</c> component as the config names it (component and file).</summary>
    public static string Describe(SharpTuneConfig config)
    {
        var node = config.Find("tokenizer");
        if (node is null) return "no tokenizer";
        var name = node.ComponentName ?? node.Describe();
        return node.TryGet("path", out var path) && path.Text is { } p ? $"tokenizer {name}, {p}" : $"tokenizer {name}";
    }
}
