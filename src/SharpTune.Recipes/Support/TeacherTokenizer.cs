// The teacher must speak the student's token space. A teacher checkpoint folder normally carries its tokenizer files
// (a Hub download, `convert llama2c`, and every checkpoint SharpTune saves copy them); when it does, they are loaded and
// compared id by id with the run's `tokenizer` (TokenizerComparison), and a different tokenizer is refused: KD compares
// the two distributions id by id, so a teacher of another vocabulary teaches a wrong distribution without any error.
// Distilling across tokenizers (cross-tokenizer distillation: a `teacher_tokenizer` and kd_loss UldLoss or GoldLoss,
// docs/cross_tokenizer.md) checks the folder against `teacher_tokenizer` instead. A folder without tokenizer files (a model trained with the built-in character tokenizer) cannot be
// checked; the recipe then says so instead of claiming the tokenizers agree.
using SharpTune.Config;
using SharpTune.Tokenizers;

namespace SharpTune.Recipes.Support;

/// <summary>Compares the tokenizer files of a teacher checkpoint folder with the run's tokenizer.</summary>
public static class TeacherTokenizer
{
    /// <summary>
    /// Loads the tokenizer in <paramref name="teacherDir"/> (when the folder has one) and checks it is
    /// <paramref name="runTokenizer"/>, the config's <paramref name="tokenizerKey"/>. Returns the teacher tokenizer's
    /// file, or null when the folder has no tokenizer files (not checked).
    /// </summary>
    /// <exception cref="ConfigException">The tokenizers differ; names both and says what differs.</exception>
    public static string? Check(SharpTuneConfig config, ITokenizer runTokenizer, string teacherDir, string teacherKey, string tokenizerKey = "tokenizer")
    {
        TokenizerFamily family;
        string file;
        try { (family, file, _) = TokenizerLoader.Detect(teacherDir); }
        catch (FileNotFoundException) { return null; }
        var teacherTokenizer = TokenizerLoader.Load(file);
        var difference = TokenizerComparison.Difference(teacherTokenizer, runTokenizer, "teacher", "student");
        if (difference is null) return file;
        var location = config.Find(teacherKey)?.Location ?? new SourceLocation(config.SourcePath ?? "<config>", 0, 0);
        if (tokenizerKey != "tokenizer")
            throw new ConfigException(location, teacherKey,
                $"the teacher's tokenizer files ({family}, {file}) are not its {tokenizerKey} ({Describe(config, tokenizerKey)}): {difference}. " +
                $"Set {tokenizerKey} to the tokenizer the teacher was trained with");
        throw new ConfigException(location, teacherKey,
            $"the teacher's tokenizer ({family}, {file}) is not the student's ({Describe(config)}): {difference}. " +
            "Distillation compares the two models' distributions id by id, so both must use the same tokenizer (a teacher " +
            "whose vocabulary is only padded beyond it is fine); to distil between different tokenizers " +
            "(cross-tokenizer distillation) set teacher_tokenizer to the teacher's tokenizer and kd_loss to " +
            "sharptune.modules.loss.UldLoss or sharptune.modules.loss.GoldLoss (docs/cross_tokenizer.md)");
    }

    /// <summary>The config's <paramref name="key"/> tokenizer component as the config names it (component and file).</summary>
    public static string Describe(SharpTuneConfig config, string key = "tokenizer")
    {
        var node = config.Find(key);
        if (node is null) return $"no {key}";
        var name = node.ComponentName ?? node.Describe();
        return node.TryGet("path", out var path) && path.Text is { } p ? $"{key} {name}, {p}" : $"{key} {name}";
    }
}
