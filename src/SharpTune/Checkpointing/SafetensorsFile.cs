// Reader for one .safetensors file: validates the whole header up front, then loads tensors lazily, one at a time,
// straight into tensor memory (never the whole file in a managed buffer).
// Format (https://github.com/huggingface/safetensors, README "Format"): 8-byte little-endian u64 N, then N bytes of
// UTF-8 JSON {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}, then the data
// section; offsets are relative to the start of the data section, tensors are little-endian and row-major.
// Validation follows the format's rules and the reference implementation's checks (safetensors/src/tensor.rs,
// read_metadata and Metadata::validate): header size limit; header valid UTF-8, starting with '{' and padded only
// with spaces (0x20); a JSON object; known dtype; byte range equal to numel * element size; and the byte ranges,
// sorted, tile the data section exactly - the first starts at 0, each starts where the previous ended, the last ends
// at the end of the file. The last rule is what catches a header length field that is off by a few bytes (the JSON
// still parses when the length cuts into the padding, but every tensor would be read shifted).
// 8-byte alignment of the data section is what our writer produces but is not required here: published files
// written by other tools (e.g. some transformers exports) have odd header lengths and are valid.
using System.Buffers;
using System.Buffers.Binary;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Checkpointing;

/// <summary>Where one tensor lives in a safetensors file.</summary>
/// <param name="Name">The tensor's key.</param>
/// <param name="DType">The dtype string as written in the header (e.g. <c>BF16</c>).</param>
/// <param name="ScalarType">The matching TorchSharp type.</param>
/// <param name="Shape">The shape, outermost dimension first.</param>
/// <param name="Begin">Start of the byte range, relative to the data section.</param>
/// <param name="End">End (exclusive) of the byte range, relative to the data section.</param>
public sealed record SafetensorsTensorInfo(string Name, string DType, ScalarType ScalarType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of bytes of tensor data.</summary>
    public long ByteLength => End - Begin;
}

/// <summary>An open safetensors file with a validated header. Dispose to close the file.</summary>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted (the reference implementation's limit, 100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, SafetensorsTensorInfo> _tensors;
    private readonly long _dataStart;

    private SafetensorsFile(string path, SafeFileHandle handle, Dictionary<string, SafetensorsTensorInfo> tensors,
        Dictionary<string, string> metadata, long dataStart)
    {
        Path = path;
        _handle = handle;
        _tensors = tensors;
        Metadata = metadata;
        _dataStart = dataStart;
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>The <c>__metadata__</c> string map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The tensor keys in the file, in ordinal order.</summary>
    public IReadOnlyList<string> Keys => _tensors.Keys.Order(StringComparer.Ordinal).ToArray();

    /// <summary>Header entries by key.</summary>
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors => _tensors;

    /// <summary>True when the file holds <paramref name="key"/>.</summary>
    public bool Contains(string key) => _tensors.ContainsKey(key);

    /// <summary>Opens <paramref name="path"/> and validates its header; throws <see cref="CheckpointFormatException"/>.</summary>
    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file not found: {path}", path);
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            var fileLength = RandomAccess.GetLength(handle);
            var (tensors, metadata, dataStart) = ReadHeader(handle, path, fileLength);
            return new SafetensorsFile(path, handle, tensors, metadata, dataStart);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The header entry of <paramref name="key"/>.</summary>
    public SafetensorsTensorInfo GetInfo(string key) =>
        _tensors.TryGetValue(key, out var info)
            ? info
            : throw new CheckpointFormatException(Path, $"no tensor named '{key}' (the file holds {_tensors.Count} tensors)");

    /// <summary>Loads <paramref name="key"/> into a new CPU tensor of the stored dtype and shape.</summary>
    public Tensor Load(string key)
    {
        var info = GetInfo(key);
        var t = torch.empty(info.Shape, info.ScalarType);
        try
        {
            TensorStorage.ReadInto(_handle, Path, _dataStart + info.Begin, t);
        }
        catch
        {
            t.Dispose();
            throw;
        }
        return t;
    }

    /// <summary>
    /// Reads <paramref name="key"/> straight into <paramref name="destination"/> (a contiguous CPU tensor of the same
    /// shape and dtype, e.g. a model parameter), with no intermediate copy.
    /// </summary>
    public void LoadInto(string key, Tensor destination)
    {
        var info = GetInfo(key);
        if (!destination.shape.SequenceEqual(info.Shape))
            throw new CheckpointFormatException(Path,
                $"tensor '{key}': shape in file [{string.Join(", ", info.Shape)}] != destination [{string.Join(", ", destination.shape)}]");
        if (destination.dtype != info.ScalarType)
            throw new CheckpointFormatException(Path, $"tensor '{key}': dtype in file {info.DType} != destination {destination.dtype}");
        if (destination.device_type == DeviceType.CPU && destination.is_contiguous())
        {
            TensorStorage.ReadInto(_handle, Path, _dataStart + info.Begin, destination);
            return;
        }
        using var staged = Load(key);
        using (torch.no_grad()) destination.copy_(staged);
    }

    /// <summary>Loads every tensor of the file.</summary>
    public Dictionary<string, Tensor> LoadAll()
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var key in Keys) result[key] = Load(key);
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    /// <inheritdoc/>
    public void Dispose() => _handle.Dispose();

    private static (Dictionary<string, SafetensorsTensorInfo>, Dictionary<string, string>, long) ReadHeader(
        SafeFileHandle handle, string path, long fileLength)
    {
        if (fileLength < 8)
            throw new CheckpointFormatException(path, $"file is {fileLength} bytes, too short for the 8-byte header length");
        Span<byte> lengthBytes = stackalloc byte[8];
        ReadExactly(handle, path, lengthBytes, 0);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)(fileLength - 8))
            throw new CheckpointFormatException(path,
                $"header length {headerLength} exceeds the file: only {fileLength - 8} bytes follow the length field");
        if (headerLength > MaxHeaderBytes)
            throw new CheckpointFormatException(path, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit");
        var header = new byte[headerLength];
        ReadExactly(handle, path, header, 8);
        var dataStart = 8 + (long)headerLength;
        var dataLength = fileLength - dataStart;

        var json = CheckUtf8(path, header);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, $"header is not valid JSON (is the header length field wrong?): {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, $"header must be a JSON object, found {doc.RootElement.ValueKind}");
            CheckPadding(path, json.Span);
            var tensors = new Dictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seenMetadata = false;
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (seenMetadata) throw new CheckpointFormatException(path, "header has '__metadata__' twice");
                    seenMetadata = true;
                    ParseMetadata(path, prop.Value, metadata);
                    continue;
                }
                if (tensors.ContainsKey(prop.Name))
                    throw new CheckpointFormatException(path, $"header lists tensor '{prop.Name}' twice");
                tensors[prop.Name] = ParseEntry(path, prop.Name, prop.Value, dataLength);
            }
            CheckTiling(path, tensors.Values, dataLength, headerLength);
            return (tensors, metadata, dataStart);
        }
    }

    /// <summary>Checks that the header is UTF-8 and returns it without its trailing space padding.</summary>
    private static ReadOnlyMemory<byte> CheckUtf8(string path, byte[] header)
    {
        // Decoding finds the first invalid sequence; JsonDocument accepts some invalid UTF-8 inside strings and fails
        // only later, when a name is read, with an exception that does not name the file.
        if (System.Text.Unicode.Utf8.IsValid(header)) return Trimmed(header); // the common case: no decode, no buffer
        var chars = ArrayPool<char>.Shared.Rent(Math.Max(1, header.Length));
        try
        {
            var status = System.Text.Unicode.Utf8.ToUtf16(header, chars, out var read, out _, replaceInvalidSequences: false);
            if (status != OperationStatus.Done)
                throw new CheckpointFormatException(path,
                    $"header is not valid UTF-8: invalid byte 0x{header[read]:X2} at file offset {8 + read}");
        }
        finally
        {
            ArrayPool<char>.Shared.Return(chars);
        }
        return Trimmed(header);
    }

    private static ReadOnlyMemory<byte> Trimmed(byte[] header)
    {
        var end = header.Length;
        while (end > 0 && header[end - 1] == (byte)' ') end--;
        return header.AsMemory(0, end);
    }

    /// <summary>
    /// JSON allows other whitespace around the object; the format does not: the header starts with '{' and only
    /// spaces follow the closing '}'.
    /// </summary>
    private static void CheckPadding(string path, ReadOnlySpan<byte> json)
    {
        if (json[0] != (byte)'{')
            throw new CheckpointFormatException(path, $"header must start with '{{', found {Describe(json[0])} at file offset 8");
        if (json[^1] != (byte)'}')
            throw new CheckpointFormatException(path,
                $"header must be padded with spaces (0x20) only, found {Describe(json[^1])} at file offset {8 + json.Length - 1}");
    }

    private static string Describe(byte b) =>
        b is >= 0x21 and < 0x7F ? $"'{(char)b}'" : $"byte 0x{b:X2}";

    private static void ParseMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind == JsonValueKind.Null) return; // the reference reads it as an Option
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, $"'__metadata__' must be an object of strings, found {value.ValueKind}");
        foreach (var m in value.EnumerateObject())
        {
            if (metadata.ContainsKey(m.Name)) throw new CheckpointFormatException(path, $"'__metadata__' has key '{m.Name}' twice");
            if (m.Value.ValueKind != JsonValueKind.String)
                throw new CheckpointFormatException(path, $"'__metadata__.{m.Name}' must be a string, found {m.Value.ValueKind}");
            metadata[m.Name] = m.Value.GetString()!;
        }
    }

    private static SafetensorsTensorInfo ParseEntry(string path, string name, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, $"tensor '{name}': entry must be an object, found {value.ValueKind}");
        var fields = new HashSet<string>(StringComparer.Ordinal);
        foreach (var field in value.EnumerateObject())
        {
            if (field.Name is not ("dtype" or "shape" or "data_offsets"))
                throw new CheckpointFormatException(path, $"tensor '{name}': unknown field '{field.Name}' (expected dtype, shape, data_offsets)");
            if (!fields.Add(field.Name)) throw new CheckpointFormatException(path, $"tensor '{name}': field '{field.Name}' appears twice");
        }
        if (!value.TryGetProperty("dtype", out var dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw new CheckpointFormatException(path, $"tensor '{name}': missing string field 'dtype'");
        var dtype = dtypeEl.GetString()!;
        if (!SafetensorsDType.TryParse(dtype, out var scalarType, out var elementSize))
            throw new CheckpointFormatException(path,
                $"tensor '{name}': unknown or unsupported dtype '{dtype}' (supported: {string.Join(", ", SafetensorsDType.Supported)})");
        var shape = ReadLongArray(path, name, value, "shape", expectedCount: null);
        var offsets = ReadLongArray(path, name, value, "data_offsets", expectedCount: 2);
        long begin = offsets[0], end = offsets[1];
        if (end < begin)
            throw new CheckpointFormatException(path, $"tensor '{name}': data_offsets [{begin}, {end}] end before begin");
        if (end > dataLength)
            throw new CheckpointFormatException(path,
                $"tensor '{name}': data_offsets [{begin}, {end}] lie outside the data section of {dataLength} bytes");
        long expected;
        try
        {
            expected = elementSize;
            foreach (var d in shape) expected = checked(expected * d);
        }
        catch (OverflowException)
        {
            throw new CheckpointFormatException(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] overflows");
        }
        if (end - begin != expected)
            throw new CheckpointFormatException(path,
                $"tensor '{name}': {dtype} shape [{string.Join(", ", shape)}] needs {expected} bytes but data_offsets [{begin}, {end}] span {end - begin}");
        return new SafetensorsTensorInfo(name, dtype, scalarType, shape, begin, end);
    }

    private static long[] ReadLongArray(string path, string name, JsonElement entry, string field, int? expectedCount)
    {
        if (!entry.TryGetProperty(field, out var el) || el.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, $"tensor '{name}': missing array field '{field}'");
        var values = new List<long>();
        foreach (var item in el.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out var v) || v < 0)
                throw new CheckpointFormatException(path, $"tensor '{name}': '{field}' must hold non-negative integers, found {item.GetRawText()}");
            values.Add(v);
        }
        if (expectedCount is { } n && values.Count != n)
            throw new CheckpointFormatException(path, $"tensor '{name}': '{field}' must have {n} entries, found {values.Count}");
        return values.ToArray();
    }

    /// <summary>
    /// The byte ranges, sorted, must tile the data section: no hole, no overlap, no byte after the last tensor
    /// (reference: Metadata::validate and the MetadataIncompleteBuffer check). Zero-byte tensors sit at a boundary.
    /// </summary>
    private static void CheckTiling(string path, IEnumerable<SafetensorsTensorInfo> entries, long dataLength, ulong headerLength)
    {
        SafetensorsTensorInfo? previous = null;
        long covered = 0;
        foreach (var e in entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ThenBy(e => e.Name, StringComparer.Ordinal))
        {
            if (e.Begin < covered)
                throw new CheckpointFormatException(path,
                    $"tensors '{previous!.Name}' [{previous.Begin}, {previous.End}] and '{e.Name}' [{e.Begin}, {e.End}] overlap");
            if (e.Begin > covered)
                throw new CheckpointFormatException(path,
                    $"data section bytes [{covered}, {e.Begin}) belong to no tensor (a hole before '{e.Name}' [{e.Begin}, {e.End}])");
            covered = e.End;
            previous = e;
        }
        if (covered != dataLength)
            throw new CheckpointFormatException(path,
                $"the data section after the {headerLength}-byte header holds {dataLength} bytes but the tensors cover {covered}: " +
                $"{dataLength - covered} trailing bytes belong to no tensor (wrong header length field, or bytes appended to the file)");
    }

    private static void ReadExactly(SafeFileHandle handle, string path, Span<byte> buffer, long offset)
    {
        var done = 0;
        while (done < buffer.Length)
        {
            var n = RandomAccess.Read(handle, buffer[done..], offset + done);
            if (n == 0) throw new CheckpointFormatException(path, $"unexpected end of file at byte {offset + done}");
            done += n;
        }
    }
}
