// The Shakespeare demo's inputs: the files shipped in configs/demo/assets (train.txt, heldout.txt, tokenizer.model,
// teacher/, with their SOURCE and licence files), copied into the study's data folder so that a run folder holds
// everything its configs name. A file is copied only when missing or different, each atomically.
using SharpTune.Checkpointing;

namespace SharpTune.Recipes.Study;

/// <summary>Copies the demo's shipped assets.</summary>
public static class DemoAssets
{
    /// <summary>Copies every file under <paramref name="assets"/> that is missing or different in <paramref name="data"/>; returns how many.</summary>
    /// <exception cref="DirectoryNotFoundException">The assets folder is missing.</exception>
    public static int Copy(string assets, string data)
    {
        if (!Directory.Exists(assets))
            throw new DirectoryNotFoundException($"the demo's assets are missing: {assets} (they ship with the configs; set SHARPTUNE_CONFIGS_DIR to the repository's configs folder)");
        var copied = 0;
        foreach (var file in Directory.EnumerateFiles(assets, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var target = Path.Combine(data, Path.GetRelativePath(assets, file));
            var bytes = File.ReadAllBytes(file);
            if (File.Exists(target) && File.ReadAllBytes(target).AsSpan().SequenceEqual(bytes)) continue;
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            AtomicFile.WriteAllBytes(target, bytes);
            copied++;
        }
        return copied;
    }
}
