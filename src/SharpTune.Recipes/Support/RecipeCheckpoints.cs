// Checkpoint I/O the training recipes share: loading base weights from an HF folder into a (LoRA or full) model,
// optionally creating that folder with seeded random weights first (tiny configs, from-scratch runs), saving a
// step_N/epoch_N checkpoint (merged HF weights, plus the PEFT adapter for LoRA models) followed by recipe_state, and
// loading the weights a resumed run continues from.
// Order on save (the commit protocol of docs/reliability.md): the checkpoint folder (atomic), then recipe_state
// (committed by one rename) naming that folder, then pruning to keep_last_n_checkpoints (never the named folder),
// then removal of hidden leftovers; a kill at any point leaves one newest state whose checkpoint folder exists, and
// RecoverOutput at the next start puts it in place and removes what the kill left.
// References: torchtune training/checkpointing/_checkpointer.py (save_checkpoint: model, adapter, recipe_state);
// torchtune recipes/lora_finetune_single_device.py (_setup_model, save_checkpoint).
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Models;
using SharpTune.Modules;
using SharpTune.Modules.Peft;
using TorchSharp;
using OptimizerHelper = TorchSharp.Modules.OptimizerHelper;
using static TorchSharp.torch;

namespace SharpTune.Recipes.Support;

/// <summary>Checkpoint load/save steps of the training recipes.</summary>
public static class RecipeCheckpoints
{
    /// <summary>The <see cref="RecipeState.Extra"/> key naming the checkpoint folder a recipe state belongs to.</summary>
    public const string CheckpointKey = "checkpoint";

    /// <summary>True when the model carries LoRA/DoRA adapters.</summary>
    public static bool IsLora(TransformerDecoder model) => Adapters.LoraLayers(model).Count > 0;

    /// <summary>
    /// When <paramref name="createIfMissing"/> and the folder has no config.json, redraws <paramref name="model"/>'s
    /// base weights HF-style (<see cref="RandomInit.HfStyle"/>: matrices N(0, 0.02), biases 0, drawn from the run's
    /// seed without advancing libtorch's global generator) and writes them there as an HF checkpoint. Returns true when it did.
    /// </summary>
    public static bool CreateRandomBase(TransformerDecoder model, string checkpointDir, bool createIfMissing, double std = RandomInit.HfStd)
    {
        if (!createIfMissing || File.Exists(Path.Combine(checkpointDir, "config.json"))) return false;
        using var scope = NewDisposeScope();
        RandomInit.HfStyle(model, random.initial_seed(), std);
        // Adapters are still zero-effect (lora_B = 0) right after building, so the base weights are the model's.
        var baseOnly = IsLora(model) ? BaseStateDict(model) : Adapters.MergedStateDict(model);
        HfCheckpointer.SaveFolder(checkpointDir, baseOnly, ConfigJson(model), sourceFolder: null);
        return true;
    }

    /// <summary>
    /// Loads the base weights of the checkpointer's source folder into <paramref name="model"/> strictly, converting
    /// dtypes (a bf16 Hub checkpoint into an fp32 model). For a LoRA model the adapter tensors are excluded from the
    /// check (a base checkpoint has none) and DoRA magnitudes are initialised from the loaded weights.
    /// </summary>
    public static LoadReport LoadBase(TransformerDecoder model, HfCheckpointer checkpointer)
    {
        LoadReport report;
        if (IsLora(model))
        {
            report = checkpointer.CheckpointFiles is null
                ? HfCheckpointer.LoadInto(BaseStateDict(model), checkpointer.CheckpointDir, strict: true, convertDtype: true)
                : checkpointer.LoadInto(new BaseOnly(model), strict: true, convertDtype: true);
            Adapters.InitializeDoraMagnitudes(model);
        }
        else report = checkpointer.LoadInto(model, strict: true, convertDtype: true);
        return report;
    }

    /// <summary>The model's state dict without adapter tensors (what a base HF checkpoint holds).</summary>
    public static Dictionary<string, Tensor> BaseStateDict(TransformerDecoder model) =>
        model.state_dict().Where(kv => !Adapters.IsAdapterKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);

    /// <summary>config.json for a model that has no source folder (random init).</summary>
    public static JsonObject ConfigJson(TransformerDecoder model) =>
        (JsonObject)JsonNode.Parse(HfModelConfig.FromDecoderArgs(model.Args, model.Args.QkvBias ? "qwen2" : "llama").ToJson())!;

    /// <summary>
    /// Saves <c>{tag}/</c> under the checkpointer's output folder: merged HF weights (unless
    /// <paramref name="adapterOnly"/>) and, for a LoRA model, the PEFT adapter; then <c>recipe_state/</c> with
    /// <paramref name="state"/> naming that folder; then prunes old checkpoints. Returns the folder.
    /// </summary>
    public static string Save(TransformerDecoder model, HfCheckpointer checkpointer, CheckpointTag tag, RecipeState state,
        OptimizerHelper optimizer, bool adapterOnly)
    {
        using var scope = NewDisposeScope();
        var lora = IsLora(model);
        var adapter = lora ? AdapterExport(model, checkpointer.CheckpointDir) : null;
        var config = HfCheckpointer.ReadConfig(checkpointer.CheckpointDir);
        string folder;
        if (adapterOnly && adapter is not null)
        {
            folder = Path.Combine(checkpointer.OutputDir, tag.FolderName);
            AtomicFile.WriteFolder(folder, dir =>
            {
                PeftAdapter.Save(dir, adapter.Weights, adapter.Config);
                AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
            });
        }
        else
        {
            var weights = lora ? Adapters.MergedStateDict(model) : model.state_dict();
            folder = HfCheckpointer.Save(checkpointer.OutputDir, tag, weights, config, checkpointer.CheckpointDir, adapter, checkpointer.MaxShardBytes);
        }
        var extra = new Dictionary<string, string>(state.Extra) { [CheckpointKey] = tag.FolderName };
        RecipeStateStore.Save(checkpointer.OutputDir, state with { Extra = extra }, optimizer);
        if (checkpointer.KeepLastNCheckpoints is { } n) HfCheckpointer.Prune(checkpointer.OutputDir, n, keep: [tag.FolderName]);
        CheckpointCommit.Recover(checkpointer.OutputDir); // hidden leftovers of this run's failed operations, if any
        return folder;
    }

    /// <summary>
    /// Start of a run (rank 0, before any resume): puts the newest recipe state a killed run committed in place and
    /// deletes the hidden folders it left (<see cref="CheckpointCommit.Recover"/>), then finishes the pruning a kill
    /// may have cut short (keep_last_n_checkpoints, never the folder that state names). Reports what it did.
    /// </summary>
    public static void RecoverOutput(HfCheckpointer checkpointer, IRecipeReporter reporter)
    {
        var dir = checkpointer.OutputDir;
        var recovery = CheckpointCommit.Recover(dir);
        if (recovery.StateMoved)
            reporter.Info($"recovered the newest recipe state of an interrupted save into {Path.Combine(dir, RecipeStateStore.FolderName)}");
        if (recovery.Removed.Count > 0)
            reporter.Info($"removed {recovery.Removed.Count} hidden folder(s) left by an interrupted run in {dir}: {string.Join(", ", recovery.Removed)}");
        if (checkpointer.KeepLastNCheckpoints is not { } n || NamedCheckpoint(dir) is not { } named) return;
        var pruned = HfCheckpointer.Prune(dir, n, keep: [named]);
        if (pruned.Count > 0)
            reporter.Info($"pruned {string.Join(", ", pruned.Select(Path.GetFileName))} (keep_last_n_checkpoints {n}), which an interrupted run had not yet deleted");
    }

    // The checkpoint folder the committed recipe state names; null without a readable one (a fresh run beside an
    // unreadable state must not fail here: a resume reports that state's error itself).
    private static string? NamedCheckpoint(string outputDir)
    {
        try
        {
            return RecipeStateStore.Peek(outputDir)?.Extra.GetValueOrDefault(CheckpointKey);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or System.Text.Json.JsonException)
        {
            return null;
        }
    }

    /// <summary>
    /// Loads the weights a resumed run continues from: the adapter of <paramref name="folder"/> for a LoRA model (the
    /// base was loaded from the source checkpoint), else its full weights.
    /// </summary>
    public static void LoadResumeWeights(TransformerDecoder model, string folder)
    {
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"resume: the checkpoint folder '{folder}' named by recipe_state does not exist");
        if (!IsLora(model))
        {
            HfCheckpointer.LoadInto(model, folder, strict: true, convertDtype: false);
            return;
        }
        var (_, weights) = PeftAdapter.Load(folder);
        try
        {
            var destination = model.state_dict();
            var expected = Adapters.AdapterStateDict(model).Keys.ToHashSet(StringComparer.Ordinal);
            var missing = expected.Where(k => !weights.ContainsKey(k)).ToList();
            var unexpected = weights.Keys.Where(k => !expected.Contains(k)).ToList();
            if (missing.Count > 0 || unexpected.Count > 0)
                throw new CheckpointFormatException(folder,
                    $"adapter does not match the model: missing [{string.Join(", ", missing.Take(5))}], unexpected [{string.Join(", ", unexpected.Take(5))}]");
            using var guard = no_grad();
            foreach (var (key, value) in weights)
            {
                var dst = destination[key];
                if (!dst.shape.SequenceEqual(value.shape))
                    throw new CheckpointFormatException(folder, $"'{key}': adapter has [{string.Join(", ", value.shape)}], the model expects [{string.Join(", ", dst.shape)}]");
                dst.copy_(value);
            }
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    private static PeftAdapterExport AdapterExport(TransformerDecoder model, string baseModel)
    {
        var layers = Adapters.LoraLayers(model);
        var first = layers[0].Layer;
        var weights = Adapters.AdapterStateDict(model);
        var config = new PeftAdapterConfig
        {
            R = first.Rank,
            LoraAlpha = first.Alpha,
            TargetModules = PeftAdapter.TargetModulesOf(weights.Keys),
            UseDora = first.UseDora,
            BaseModelNameOrPath = baseModel,
        };
        return new PeftAdapterExport(config, weights);
    }

    // A module view whose state_dict() omits adapter tensors, for HfCheckpointer.LoadInto's checkpoint_files check.
    private sealed class BaseOnly(TransformerDecoder model) : nn.Module("BaseOnly")
    {
        public override Dictionary<string, Tensor> state_dict(Dictionary<string, Tensor>? destination = null, string? prefix = null) =>
            BaseStateDict(model);
    }
}
