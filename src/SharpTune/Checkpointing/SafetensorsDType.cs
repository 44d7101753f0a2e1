// Mapping between safetensors dtype strings and TorchSharp scalar types.
// Reference: https://github.com/huggingface/safetensors (README "Format": dtype list; little-endian, C order).
using static TorchSharp.torch;

namespace SharpTune.Checkpointing;

/// <summary>The safetensors element types SharpTune reads and writes.</summary>
public static class SafetensorsDType
{
    private static readonly (string Name, ScalarType Type, int Size)[] Table =
    [
        ("F64", ScalarType.Float64, 8),
        ("F32", ScalarType.Float32, 4),
        ("F16", ScalarType.Float16, 2),
        ("BF16", ScalarType.BFloat16, 2),
        ("I64", ScalarType.Int64, 8),
        ("I32", ScalarType.Int32, 4),
        ("I16", ScalarType.Int16, 2),
        ("I8", ScalarType.Int8, 1),
        ("U8", ScalarType.Byte, 1),
        ("BOOL", ScalarType.Bool, 1),
    ];

    /// <summary>The dtype strings this reader accepts.</summary>
    public static IReadOnlyList<string> Supported { get; } = Table.Select(t => t.Name).ToArray();

    /// <summary>Looks up a safetensors dtype string (case-sensitive, as the format specifies).</summary>
    public static bool TryParse(string name, out ScalarType type, out int elementSize)
    {
        foreach (var t in Table)
            if (t.Name == name)
            {
                type = t.Type;
                elementSize = t.Size;
                return true;
            }
        type = default;
        elementSize = 0;
        return false;
    }

    /// <summary>The safetensors dtype string for <paramref name="type"/>.</summary>
    /// <exception cref="NotSupportedException">The scalar type has no safetensors equivalent here.</exception>
    public static string NameOf(ScalarType type)
    {
        foreach (var t in Table)
            if (t.Type == type) return t.Name;
        throw new NotSupportedException(
            $"tensor dtype {type} cannot be stored in safetensors by SharpTune (supported: {string.Join(", ", Supported)})");
    }

    /// <summary>
    /// True for the float types (F64, F32, F16, BF16): the only ones a load may convert between, because a cast among
    /// them changes precision, not meaning. Integer or bool data where a float is expected is a corrupt or wrong file.
    /// </summary>
    public static bool IsFloat(ScalarType type) =>
        type is ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16;

    /// <summary>Bytes per element of <paramref name="type"/>.</summary>
    public static int SizeOf(ScalarType type)
    {
        foreach (var t in Table)
            if (t.Type == type) return t.Size;
        throw new NotSupportedException($"tensor dtype {type} is not a safetensors dtype");
    }
}
