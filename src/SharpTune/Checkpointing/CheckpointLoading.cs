// A safetensors checkpoint as a source for the one strict loader (Modules/StateDictLoader): tensors are described from
// the file headers and read straight into the model's parameter memory when the dtype matches, so loading needs no
// second copy of the weights. Older HF Llama checkpoints' rotary inverse-frequency buffers may be present without a
// model counterpart (transformers ignores them on load; they are recomputed from config.json).
using SharpTune.Modules;
using static TorchSharp.torch;

namespace SharpTune.Checkpointing;

internal static class CheckpointLoading
{
    internal static LoadReport Load(IReadOnlyDictionary<string, Tensor> destination, SafetensorsCheckpoint source,
        bool strict, bool convertDtype) =>
        StateDictLoader.Load(destination, new Source(source), new LoadRules(strict, convertDtype, MayBeExtra: IsIgnorableExtra),
            (count, list) => new CheckpointFormatException(source.Folder, $"checkpoint does not match the model ({count}):{list}"));

    /// <summary>Checkpoint keys that may be present without a model counterpart: rotary inverse-frequency buffers.</summary>
    internal static bool IsIgnorableExtra(string key) => key.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

    private sealed class Source(SafetensorsCheckpoint checkpoint) : IStateDictSource
    {
        public string Name => "checkpoint";
        public IEnumerable<string> Keys => checkpoint.Keys;
        public bool Contains(string key) => checkpoint.Contains(key);

        public SourceTensor Describe(string key)
        {
            var info = checkpoint.GetInfo(key);
            return new SourceTensor(info.Shape, info.ScalarType, info.DType, $" in {Path.GetFileName(checkpoint.FileOf(key).Path)}");
        }

        public void CopyInto(string key, Tensor destination)
        {
            if (checkpoint.GetInfo(key).ScalarType == destination.dtype)
            {
                checkpoint.LoadInto(key, destination);
                return;
            }
            using var staged = checkpoint.Load(key);
            destination.copy_(staged);
        }
    }
}
