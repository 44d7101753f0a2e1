// Activation checkpointing: run a layer's forward without keeping its intermediate activations, and recompute them
// during backward. Memory for a stack of L layers drops from O(L x per-layer activations) to O(L x layer inputs +
// one layer's activations), for about one extra forward per layer.
// TorchSharp 0.107 has no torch.utils.checkpoint, but it has custom autograd functions
// (torch.autograd.SingleTensorFunction<T>): forward runs the layer under no_grad and saves only the input; backward
// restores the RNG state the forward saw (so dropout draws the same mask), re-runs the layer with grad enabled and
// calls torch.autograd.grad on it for the input and the layer's parameters -- the reentrant variant of
// torch.utils.checkpoint (use_reentrant=True).
// References: Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"; torch/utils/checkpoint.py
// (CheckpointFunction, preserve_rng_state); torchtune training/_activation_checkpointing.py. TransformerDecoder applies
// it per layer when CheckpointActivations is set.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>Runs layers with activation checkpointing.</summary>
public static class ActivationCheckpointing
{
    [ThreadStatic] private static long _recomputations;

    /// <summary>
    /// Layer recomputations the backward passes run on this thread have made (CPU autograd runs backward on the thread
    /// that calls it): evidence that checkpointing took effect, for tests and diagnostics.
    /// </summary>
    public static long RecomputationsOnThisThread => _recomputations;

    /// <summary>
    /// Applies <paramref name="forward"/> to <paramref name="input"/> without storing its activations; backward
    /// recomputes them. Gradients flow to <paramref name="input"/> (when it requires grad) and to every tensor in
    /// <paramref name="parameters"/> that requires grad — list every trainable tensor the function reads.
    /// Other tensors the function captures (masks, RoPE tables) must not require grad.
    /// </summary>
    /// <param name="forward">The layer's computation; must be deterministic apart from the CPU RNG.</param>
    /// <param name="input">Layer input.</param>
    /// <param name="parameters">Trainable tensors read by <paramref name="forward"/>.</param>
    /// <param name="preserveRngState">Replay the RNG in the recomputation (needed when the layer uses dropout).</param>
    public static Tensor Run(Func<Tensor, Tensor> forward, Tensor input, IEnumerable<Parameter> parameters, bool preserveRngState = true)
    {
        ArgumentNullException.ThrowIfNull(forward);
        ArgumentNullException.ThrowIfNull(input);
        var trainable = ModuleParameters.Deduplicate(parameters).Where(p => p.requires_grad).ToList();
        if (!is_grad_enabled() || (!input.requires_grad && trainable.Count == 0)) return forward(input);
        var vars = new object[3 + trainable.Count];
        vars[0] = forward;
        vars[1] = preserveRngState;
        vars[2] = input;
        for (var i = 0; i < trainable.Count; i++) vars[3 + i] = trainable[i];
        return CheckpointFunction.apply(vars);
    }

    /// <summary>Checkpointed call of <paramref name="layer"/> (gradients for its trainable parameters).</summary>
    public static Tensor Run(nn.Module<Tensor, Tensor> layer, Tensor input, bool preserveRngState = true)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return Run(layer.call, input, layer.parameters(), preserveRngState);
    }

    private sealed class CheckpointFunction : autograd.SingleTensorFunction<CheckpointFunction>
    {
        public override string Name => "SharpTuneActivationCheckpoint";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var forward = (Func<Tensor, Tensor>)vars[0];
            var preserve = (bool)vars[1];
            var input = (Tensor)vars[2];
            ctx.save_data("forward", forward);
            ctx.save_data("count", vars.Length);
            ctx.save_data("input_requires_grad", input.requires_grad);
            if (preserve)
            {
                using var rng = get_rng_state();
                ctx.save_data("rng", rng.bytes.ToArray()); // bytes, not a tensor: ctx data may not hold tensors
            }
            var parameters = vars.Skip(3).Cast<Tensor>().ToList();
            ctx.save_data("parameters", parameters);
            ctx.save_for_backward([input]);
            // The layer's intermediates must die here, not at the end of the caller's step scope, or nothing is saved.
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            return forward(input).MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var forward = (Func<Tensor, Tensor>)ctx.get_data("forward");
            var count = (int)ctx.get_data("count");
            var inputRequiresGrad = (bool)ctx.get_data("input_requires_grad");
            var parameters = (List<Tensor>)ctx.get_data("parameters");
            var input = ctx.get_saved_variables()[0];
            _recomputations++;
            Tensor? rngNow = null;
            if (ctx.get_data("rng") is byte[] saved)
            {
                rngNow = get_rng_state();
                using var state = tensor(saved, dtype: ScalarType.Byte);
                set_rng_state(state);
            }
            try
            {
                using var scope = NewDisposeScope();
                using var grad = enable_grad();
                var detached = input.detach().requires_grad_(inputRequiresGrad);
                var output = forward(detached);
                var wrt = new List<Tensor>();
                if (inputRequiresGrad) wrt.Add(detached);
                wrt.AddRange(parameters);
                var grads = autograd.grad([output], wrt, [gradOutput], allow_unused: true);
                foreach (var g in grads) g?.MoveToOuterDisposeScope();
                var result = new List<Tensor>(count) { null!, null!, inputRequiresGrad ? grads[0] : null! };
                result.AddRange(grads.Skip(inputRequiresGrad ? 1 : 0));
                return result;
            }
            finally
            {
                if (rngNow is not null)
                {
                    set_rng_state(rngNow);
                    rngNow.Dispose();
                }
            }
        }
    }
}
