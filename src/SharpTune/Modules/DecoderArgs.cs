// The hyperparameters that fully describe a Llama-family decoder (Llama 2/3.x, Qwen2/2.5), mirroring the HF
// config.json fields the architecture reads.
namespace SharpTune.Modules;

/// <summary>Architecture of a Llama-family decoder.</summary>
public sealed record DecoderArgs
{
    /// <summary>Vocabulary size (rows of the embedding and output).</summary>
    public required int VocabSize { get; init; }

    /// <summary>Number of decoder layers.</summary>
    public required int NumLayers { get; init; }

    /// <summary>Query heads.</summary>
    public required int NumHeads { get; init; }

    /// <summary>Key/value heads (GQA groups).</summary>
    public required int NumKvHeads { get; init; }

    /// <summary>Model width d.</summary>
    public required int EmbedDim { get; init; }

    /// <summary>SwiGLU hidden width.</summary>
    public required int IntermediateDim { get; init; }

    /// <summary>Maximum sequence length (positions) the model supports.</summary>
    public required int MaxSeqLen { get; init; }

    /// <summary>Head dimension; defaults to EmbedDim / NumHeads.</summary>
    public int? HeadDim { get; init; }

    /// <summary>RMSNorm epsilon.</summary>
    public double NormEps { get; init; } = 1e-5;

    /// <summary>RoPE base (<c>rope_theta</c>).</summary>
    public double RopeBase { get; init; } = 10_000;

    /// <summary>Llama 3.1 RoPE scaling, or null.</summary>
    public Llama3RopeScaling? RopeScaling { get; init; }

    /// <summary>True when the output projection shares the token embedding.</summary>
    public bool TieEmbeddings { get; init; }

    /// <summary>True when q/k/v projections have a bias (Qwen2).</summary>
    public bool QkvBias { get; init; }

    /// <summary>The head dimension in effect.</summary>
    public int ResolvedHeadDim => HeadDim ?? EmbedDim / NumHeads;

    /// <summary>Throws a clear error when the numbers cannot describe a valid model.</summary>
    public void Validate()
    {
        void Positive(int v, string name) { if (v <= 0) throw new ArgumentException($"{name} must be positive, got {v}"); }
        Positive(VocabSize, nameof(VocabSize)); Positive(NumLayers, nameof(NumLayers)); Positive(NumHeads, nameof(NumHeads));
        Positive(NumKvHeads, nameof(NumKvHeads)); Positive(EmbedDim, nameof(EmbedDim)); Positive(IntermediateDim, nameof(IntermediateDim));
        Positive(MaxSeqLen, nameof(MaxSeqLen));
        if (NumHeads % NumKvHeads != 0) throw new ArgumentException($"NumHeads ({NumHeads}) must be a multiple of NumKvHeads ({NumKvHeads})");
        if (HeadDim is null && EmbedDim % NumHeads != 0) throw new ArgumentException($"EmbedDim ({EmbedDim}) must be divisible by NumHeads ({NumHeads}) when HeadDim is not given");
        if (ResolvedHeadDim % 2 != 0) throw new ArgumentException($"head dim must be even for RoPE, got {ResolvedHeadDim}");
        if (NormEps <= 0) throw new ArgumentException($"NormEps must be positive, got {NormEps}");
    }
}
