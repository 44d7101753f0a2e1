// Start-of-run recovery of a training output folder, the last step of the checkpoint commit protocol:
//   1. the checkpoint folder step_N/ or epoch_N/ is built as .step_N.tmp-{guid}/ and renamed into place;
//   2. recipe_state is committed by renaming its complete temporary folder to .recipe_state.next/, then moved into
//      place (RecipeStateStore.Save);
//   3. pruning renames each old checkpoint folder to .step_N.trash-{guid}/ and deletes it, never the folder the
//      committed state names (HfCheckpointer.Prune).
// A kill leaves only hidden names besides complete folders. Recover puts the newest state in place and deletes every
// hidden folder of this protocol; the recipes call it at start and after each save. docs/reliability.md has the
// argument that every kill point resumes, and tests/.../Recipes/CheckpointKillPointTests.cs checks every point.
using System.Text.RegularExpressions;

namespace SharpTune.Checkpointing;

/// <summary>Recovery of a training output folder after a killed run.</summary>
public static partial class CheckpointCommit
{
    /// <summary>What <see cref="Recover"/> did.</summary>
    /// <param name="StateMoved">True when a pending or adopted recipe state was renamed to <c>recipe_state/</c>.</param>
    /// <param name="Removed">Names of the hidden leftover folders deleted.</param>
    public sealed record Recovery(bool StateMoved, IReadOnlyList<string> Removed)
    {
        /// <summary>True when nothing was left over.</summary>
        public bool Clean => !StateMoved && Removed.Count == 0;
    }

    /// <summary>
    /// Makes the newest complete recipe state in <paramref name="outputDir"/> its <c>recipe_state/</c>
    /// (<see cref="RecipeStateStore.Recover"/>), then deletes the hidden temporary, superseded and trash folders of
    /// <c>recipe_state</c> and of the <c>step_N</c>/<c>epoch_N</c> checkpoint folders that a killed run left. Visible
    /// folders are never touched. Safe to kill at any point and to run again.
    /// </summary>
    public static Recovery Recover(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return new Recovery(false, []);
        var moved = RecipeStateStore.Recover(outputDir);
        var removed = new List<string>();
        foreach (var folder in Directory.GetDirectories(outputDir).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(folder);
            if (!Leftover().IsMatch(name)) continue;
            CommitFs.DeleteDirectory(folder);
            removed.Add(name);
        }
        return new Recovery(moved, removed);
    }

    // .recipe_state.{tmp,old,trash}-{guid} and .step_N/.epoch_N.{tmp,old,trash}-{guid}: names only this protocol (and
    // the versions before it, which used .old-) creates. .recipe_state.next is not here: Recover promotes it first.
    [GeneratedRegex(@"^\.(recipe_state|(epoch|step)_\d+)\.(tmp|old|trash)-[0-9a-f]+$", RegexOptions.CultureInvariant)]
    private static partial Regex Leftover();
}
