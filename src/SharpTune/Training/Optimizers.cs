// Optimizer factories for recipes and configs: AdamW (decoupled weight decay) and SGD over a deduplicated
// parameter list. TorchSharp keys optimizer state by the parameter's native handle, so a tied weight listed twice by
// Module.parameters() (embedding shared with the output projection) would be updated twice per step; we drop the
// repeats first. AdamW is TorchSharp's with its step written out again (ScalarFreeAdamW, below) so that it leaves no
// native Scalar to the garbage collector.
// References: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (arXiv:1711.05101);
// torch.optim.AdamW / torch.optim.SGD documentation; torchtune recipes (`optimizer: _component_: torch.optim.AdamW`).
using SharpTune.Config;
using SharpTune.Modules;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Training;

/// <summary>Builds optimizers over trainable parameters; every factory is a config component.</summary>
public static class Optimizers
{
    /// <summary>
    /// AdamW: <c>p ← p·(1 − lr·wd)</c>, then the Adam update with bias-corrected moments
    /// (<c>m̂ = m/(1−β₁ᵗ)</c>, <c>v̂ = v/(1−β₂ᵗ)</c>, <c>p ← p − lr·m̂/(√v̂ + eps)</c>).
    /// </summary>
    /// <param name="parameters">Parameters to train (supplied by the recipe, not the config); deduplicated here.</param>
    /// <param name="lr">Learning rate (the schedule multiplies it).</param>
    /// <param name="betas">Two coefficients [β₁, β₂] for the running moments; default [0.9, 0.999].</param>
    /// <param name="eps">Added to the denominator for stability.</param>
    /// <param name="weightDecay">Decoupled weight decay; torch's default is 0.01.</param>
    /// <param name="amsgrad">Use the AMSGrad variant.</param>
    [Component("sharptune.optim.AdamW")]
    [Component("torch.optim.AdamW")]
    public static OptimizerHelper AdamW(
        IEnumerable<Parameter> parameters, double lr = 1e-3, double[]? betas = null, double eps = 1e-8,
        double weightDecay = 0.01, bool amsgrad = false)
    {
        var (beta1, beta2) = ParseBetas(betas);
        if (!(lr >= 0)) throw new ArgumentOutOfRangeException(nameof(lr), lr, "optimizer.lr must be >= 0");
        if (!(eps >= 0)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "optimizer.eps must be >= 0");
        if (!(weightDecay >= 0))
            throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "optimizer.weight_decay must be >= 0");
        var list = NonEmpty(parameters);
        return new ScalarFreeAdamW(list, lr, beta1, beta2, eps, weightDecay, amsgrad);
    }

    /// <summary>
    /// SGD with optional momentum (PyTorch's formulation: <c>b ← μ·b + (1 − dampening)·g</c>, <c>p ← p − lr·b</c>)
    /// and L2 weight decay added to the gradient.
    /// </summary>
    /// <param name="parameters">Parameters to train (supplied by the recipe); deduplicated here.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="momentum">Momentum factor (0 disables).</param>
    /// <param name="dampening">Dampening for momentum.</param>
    /// <param name="weightDecay">L2 penalty added to the gradient.</param>
    /// <param name="nesterov">Nesterov momentum (needs momentum &gt; 0 and dampening 0).</param>
    [Component("sharptune.optim.SGD")]
    [Component("torch.optim.SGD")]
    public static OptimizerHelper Sgd(
        IEnumerable<Parameter> parameters, double lr = 1e-3, double momentum = 0, double dampening = 0,
        double weightDecay = 0, bool nesterov = false)
    {
        if (!(lr >= 0)) throw new ArgumentOutOfRangeException(nameof(lr), lr, "optimizer.lr must be >= 0");
        if (!(momentum >= 0)) throw new ArgumentOutOfRangeException(nameof(momentum), momentum, "optimizer.momentum must be >= 0");
        if (nesterov && (momentum <= 0 || dampening != 0))
            throw new ArgumentException($"optimizer.nesterov needs momentum > 0 and dampening 0 (got momentum {momentum}, dampening {dampening})", nameof(nesterov));
        var list = NonEmpty(parameters);
        return optim.SGD(list, lr, momentum, dampening, weightDecay, nesterov);
    }

    /// <summary>Sets the learning rate of every parameter group (what a schedule does each step).</summary>
    public static void SetLearningRate(optim.Optimizer optimizer, double lr)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;
    }

    /// <summary>The learning rate of the first parameter group.</summary>
    public static double LearningRate(optim.Optimizer optimizer)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        return optimizer.ParamGroups.First().LearningRate;
    }

    private static (double Beta1, double Beta2) ParseBetas(double[]? betas)
    {
        if (betas is null) return (0.9, 0.999);
        if (betas.Length != 2)
            throw new ArgumentException($"optimizer.betas must have 2 values [beta1, beta2], got {betas.Length}", nameof(betas));
        foreach (var b in betas)
            if (!(b >= 0 && b < 1))
                throw new ArgumentOutOfRangeException(nameof(betas), b, "optimizer.betas values must be in [0, 1)");
        return (betas[0], betas[1]);
    }

    private static IReadOnlyList<Parameter> NonEmpty(IEnumerable<Parameter> parameters)
    {
        var list = ModuleParameters.Deduplicate(parameters);
        if (list.Count == 0)
            throw new ArgumentException("the optimizer got no parameters to train (is every parameter frozen?)", nameof(parameters));
        return list;
    }
}

/// <summary>
/// TorchSharp's AdamW (same state, options and state-dict format, the same operations in the same order, so the same
/// bits) with a step that disposes the native Scalars it uses. TorchSharp's own step converts each double coefficient
/// implicitly, about eight Scalars per parameter and step, each a small native allocation that only the .NET
/// finalizer frees; between collections they sit inside the large blocks libtorch frees every step and fragment
/// glibc's heap (Training/NativeHeap.cs).
/// </summary>
internal sealed class ScalarFreeAdamW(IEnumerable<Parameter> parameters, double lr, double beta1, double beta2, double eps, double weightDecay, bool amsgrad)
    : TorchSharp.Modules.AdamW(parameters, lr, beta1, beta2, eps, weightDecay, amsgrad)
{
    /// <inheritdoc/>
    public override Tensor step(Func<Tensor>? closure = null) => _step<ParamGroup>(group =>
    {
        var options = (Options)group.Options;
        double beta1 = options.beta1!.Value, beta2 = options.beta2!.Value, lr = options.LearningRate!.Value;
        using var decay = (1 - lr * options.weight_decay!.Value).ToScalar();
        using var b1 = beta1.ToScalar();
        using var oneMinusB1 = (1 - beta1).ToScalar();
        using var b2 = beta2.ToScalar();
        using var oneMinusB2 = (1 - beta2).ToScalar();
        using var eps = options.eps!.Value.ToScalar();
        foreach (var param in group.Parameters)
        {
            var state = (State)_state[param.Handle];
            using var raw = param.grad;
            if (raw is null) continue;
            using var negated = options.maximize!.Value ? raw.neg() : null;
            var grad = negated ?? raw;
            state.step += 1;
            param.mul_(decay);
            var biasCorrection1 = 1 - Math.Pow(beta1, state.step);
            var biasCorrection2 = 1 - Math.Pow(beta2, state.step);
            state.exp_avg.mul_(b1).add_(grad, alpha: oneMinusB1);
            state.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value: oneMinusB2);
            using var root = Math.Sqrt(biasCorrection2).ToScalar();
            using var stepSize = (-(lr / biasCorrection1)).ToScalar();
            Tensor second = state.exp_avg_sq;
            if (options.amsgrad!.Value)
            {
                var previous = state.max_exp_avg_sq;
                state.max_exp_avg_sq = maximum(previous, state.exp_avg_sq).DetachFromDisposeScope();
                previous.Dispose();
                second = state.max_exp_avg_sq;
            }
            using var sqrt = second.sqrt();
            using var denom = sqrt.div_(root).add_(eps, Native.Scalars.One); // add_(Scalar) alone makes an alpha Scalar
            param.addcdiv_(state.exp_avg, denom, value: stepSize);
        }
    }, closure);
}
