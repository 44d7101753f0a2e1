// The built-in demo task as a training dataset: SyntheticInstructions records rendered with an Alpaca-style
// prompt and tokenized with any ITokenizer (the char-level demo tokenizer included, which has no chat format and
// so cannot go through SftDataset). Labels are pre-shifted like every ISampleDataset; with train_on_input false
// only the response (and EOS) is trained on, as torchtune's alpaca_dataset(train_on_input=False).
using SharpTune.Config;
using SharpTune.Tokenizers;

namespace SharpTune.Data.Synthetic;

/// <summary>Generated instruction samples (deterministic by seed) as a map-style dataset.</summary>
public sealed class SyntheticInstructDataset : ISampleDataset
{
    /// <summary>A shorter prompt than Alpaca's preamble, so char-level samples stay short.</summary>
    public const string CompactTemplate = "### Instruction:\n{instruction}\n### Input:\n{input}\n### Response:\n";

    private readonly ITokenizer _tokenizer;
    private readonly bool _trainOnInput;
    private readonly bool _compact;

    /// <summary>Generates <paramref name="numSamples"/> records of <paramref name="split"/> with <paramref name="seed"/>.</summary>
    public SyntheticInstructDataset(ITokenizer tokenizer, int numSamples, int seed, string split = "train",
        bool trainOnInput = false, string template = "compact")
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (numSamples < 1) throw new ArgumentOutOfRangeException(nameof(numSamples), numSamples, "num_samples must be at least 1");
        if (split is not ("train" or "test")) throw new ArgumentException($"split must be 'train' or 'test', got '{split}'", nameof(split));
        _compact = template switch
        {
            "compact" => true,
            "alpaca" => false,
            _ => throw new ArgumentException($"template must be 'compact' or 'alpaca', got '{template}'", nameof(template)),
        };
        _tokenizer = tokenizer;
        _trainOnInput = trainOnInput;
        Records = SyntheticInstructions.Generate(seed, numSamples, split);
    }

    /// <summary>Config component: <c>_component_: sharptune.datasets.synthetic_instruct_dataset</c>.</summary>
    [Component("sharptune.datasets.synthetic_instruct_dataset")]
    public static SyntheticInstructDataset Create(ITokenizer tokenizer, int numSamples = 512, int seed = 0,
        string split = "train", bool trainOnInput = false, string template = "compact") =>
        new(tokenizer, numSamples, seed, split, trainOnInput, template);

    /// <summary>The generated records.</summary>
    public IReadOnlyList<InstructionRecord> Records { get; }

    /// <inheritdoc/>
    public int Count => Records.Count;

    /// <inheritdoc/>
    public Sample this[int index]
    {
        get
        {
            var r = Records[index];
            var prompt = _compact
                ? CompactTemplate.Replace("{instruction}", r.Instruction, StringComparison.Ordinal).Replace("{input}", r.Input, StringComparison.Ordinal)
                : AlpacaPrompt.Format(r.Instruction, r.Input);
            var promptIds = _tokenizer.Encode(prompt, addBos: true, addEos: false);
            var answerIds = _tokenizer.Encode(r.Output, addBos: false, addEos: true);
            var tokens = promptIds.Concat(answerIds).ToArray();
            var mask = new bool[tokens.Length]; // true = not trained on
            if (!_trainOnInput) for (var i = 0; i < promptIds.Count; i++) mask[i] = true;
            return new Sample(tokens, Sample.ShiftedLabels(tokens, mask));
        }
    }
}
