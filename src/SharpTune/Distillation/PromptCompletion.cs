// Prompt-completion view of an instruct/chat sample for on-policy distillation (TRL GKDTrainer's prompt-completion
// data): the prompt is everything before the first trained token (the template, the instruction and its input, the
// chat turns up to the answer), the completion is the rest. A sample whose first token is already trained (a
// dataset with train_on_input: true, plain text) has no prompt to continue and is refused.
using SharpTune.Data;

namespace SharpTune.Distillation;

/// <summary>A sample split into the prompt a model continues and the dataset's completion.</summary>
/// <param name="Prompt">Tokens fed to the sampler (ends with the token whose label is the first trained one).</param>
/// <param name="Original">The dataset sample, unchanged (used as is when the batch keeps the dataset's completion).</param>
public sealed record PromptCompletion(int[] Prompt, Sample Original)
{
    /// <summary>Splits <paramref name="sample"/> (index <paramref name="index"/> of its dataset, for messages).</summary>
    public static PromptCompletion Split(Sample sample, int index)
    {
        if (sample.SeqLens is not null || sample.InputPos is not null)
            throw new ArgumentException($"sample {index} is packed: on-policy distillation needs one prompt per sample (set packed: false)");
        var first = Array.FindIndex(sample.Labels, l => l != Sample.IgnoreIndex);
        if (first < 0) throw new ArgumentException($"sample {index} has no trained tokens: nothing marks where its completion starts");
        if (first == 0)
            throw new ArgumentException($"sample {index} trains on its first token, so prompt and completion cannot be told apart " +
                                        "(set the dataset's train_on_input: false; plain-text datasets have no prompt)");
        return new PromptCompletion(sample.Tokens[..(first + 1)], sample);
    }

    /// <summary>The training sample of <paramref name="prompt"/> followed by a sampled <paramref name="completion"/>:
    /// every completion token (a final stop token included) is a label, no prompt token is.</summary>
    public static Sample Join(IReadOnlyList<int> prompt, IReadOnlyList<int> completion)
    {
        var tokens = prompt.Concat(completion).ToArray();
        var mask = new bool[tokens.Length];
        for (var i = 0; i < prompt.Count; i++) mask[i] = true;
        return new Sample(tokens, Sample.ShiftedLabels(tokens, mask));
    }
}
