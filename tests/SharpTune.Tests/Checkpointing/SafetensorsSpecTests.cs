// Checks the reader and writer against the published safetensors format (huggingface/safetensors README, "Format"),
// using bytes assembled by hand here rather than produced by our writer:
//   8 bytes: N, little-endian u64 | N bytes: UTF-8 JSON header | data (little-endian, row-major),
//   header entries {"dtype", "shape", "data_offsets": [begin, end]} relative to the data section.
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using SharpTune.Checkpointing;
using SharpTune.Native;
using static TorchSharp.torch;

namespace SharpTune.Tests.Checkpointing;

public sealed class SafetensorsSpecTests
{
    public SafetensorsSpecTests() => TorchRuntime.EnsureLoaded();

    internal static byte[] Assemble(string headerJson, byte[] data, ulong? lengthOverride = null)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        var file = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, lengthOverride ?? (ulong)header.Length);
        header.CopyTo(file, 8);
        data.CopyTo(file, 8 + header.Length);
        return file;
    }

    [Fact]
    public void Open_HandBuiltSpecFile_ReturnsPublishedValues()
    {
        // F32 [1.0, -2.5] = 0x3F800000, 0xC0200000; BF16 [1.0, -2.0] = 0x3F80, 0xC000; F16 [1.0] = 0x3C00;
        // I64 [258, -1]; written little-endian. Header deliberately unsorted and without __metadata__.
        const string header =
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]}," +
            "\"h\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]}," +
            "\"f\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[12,14]}," +
            "\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[14,30]}}";
        byte[] data =
        [
            0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC0,
            0x80, 0x3F, 0x00, 0xC0,
            0x00, 0x3C,
            0x02, 0x01, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("ref.safetensors"), Assemble(header, data));

        using var file = SafetensorsFile.Open(dir.File("ref.safetensors"));
        using var w = file.Load("w");
        using var h = file.Load("h");
        using var f = file.Load("f");
        using var i = file.Load("i");

        Assert.Equal(new long[] { 2, 1 }, w.shape);
        Assert.Equal(new[] { 1.0f, -2.5f }, w.data<float>().ToArray());
        Assert.Equal(ScalarType.BFloat16, h.dtype);
        using (var h32 = h.to(ScalarType.Float32)) Assert.Equal(new[] { 1.0f, -2.0f }, h32.data<float>().ToArray());
        Assert.Empty(f.shape);
        using (var f32 = f.to(ScalarType.Float32)) Assert.Equal(1.0f, f32.item<float>());
        Assert.Equal(new long[] { 258, -1 }, i.data<long>().ToArray());
        Assert.Empty(file.Metadata);
    }

    [Fact]
    public void Save_Output_ParsesPerSpec()
    {
        using var dir = new TempDir();
        using var b = tensor(new[] { 1.0f, 2.0f });
        using var a = tensor(new long[] { 5 });
        var path = dir.File("out.safetensors");

        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["b"] = b, ["a"] = a });
        var bytes = File.ReadAllBytes(path);

        var n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, (8 + n) % 8); // data section starts 8-byte aligned
        var headerText = Encoding.UTF8.GetString(bytes, 8, (int)n);
        Assert.Matches("^\\{.*\\} *$", headerText); // JSON, then only space padding
        Assert.DoesNotContain('\0', headerText);
        using var doc = JsonDocument.Parse(headerText);
        var keys = doc.RootElement.EnumerateObject().Select(p => p.Name).ToArray();
        Assert.Equal(new[] { "__metadata__", "a", "b" }, keys);
        Assert.Equal("pt", doc.RootElement.GetProperty("__metadata__").GetProperty("format").GetString());
        var aEntry = doc.RootElement.GetProperty("a");
        Assert.Equal("I64", aEntry.GetProperty("dtype").GetString());
        Assert.Equal(new long[] { 1 }, aEntry.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()));
        Assert.Equal(new long[] { 0, 8 }, aEntry.GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()));
        Assert.Equal(new long[] { 8, 16 }, doc.RootElement.GetProperty("b").GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()));
        Assert.Equal(8 + n + 16, bytes.Length);
        byte[] expectedData = [5, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x40];
        Assert.Equal(expectedData, bytes[(int)(8 + n)..]);
    }

    [Fact]
    public void Save_HeaderNeedsPadding_PadsWithSpaces()
    {
        using var dir = new TempDir();
        // Try several key lengths so that at least one header is not already a multiple of 8.
        var paddedSeen = false;
        for (var len = 1; len <= 8; len++)
        {
            using var t = ones(1);
            var path = dir.File($"p{len}.safetensors");
            SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { [new string('k', len)] = t });
            var bytes = File.ReadAllBytes(path);
            var n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            Assert.Equal(0, n % 8);
            var text = Encoding.UTF8.GetString(bytes, 8, n);
            var trimmed = text.TrimEnd(' ');
            Assert.EndsWith("}", trimmed);
            paddedSeen |= trimmed.Length < text.Length;
        }
        Assert.True(paddedSeen);
    }

    // Golden bytes from the reference implementation's own tests (huggingface/safetensors,
    // Python bindings tests, test_serialization): save({"test": zeros((2, 2), int32)}) with no metadata.
    private static readonly byte[] ReferenceSerialization = SafetensorsSpecTests.Concat(
        [0x40, 0, 0, 0, 0, 0, 0, 0],
        Encoding.ASCII.GetBytes("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}    "),
        new byte[16]);

    internal static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    [Fact]
    public void Save_WithoutMetadata_MatchesReferenceSerializerBytes()
    {
        using var dir = new TempDir();
        using var zeros2 = zeros(new long[] { 2, 2 }, ScalarType.Int32);

        SafetensorsWriter.Save(dir.File("s.safetensors"), new Dictionary<string, Tensor> { ["test"] = zeros2 }, new Dictionary<string, string>());

        Assert.Equal(ReferenceSerialization, File.ReadAllBytes(dir.File("s.safetensors")));
    }

    [Fact]
    public void Open_ReferenceFiles_PaddedUnpaddedAndWithMetadata()
    {
        using var dir = new TempDir();
        // Older reference output with an unpadded 60-byte header, and the Go port's example with metadata last.
        var unpadded = Concat([0x3C, 0, 0, 0, 0, 0, 0, 0],
            Encoding.ASCII.GetBytes("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}"),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        var withMetadata = Concat([0x59, 0, 0, 0, 0, 0, 0, 0],
            Encoding.ASCII.GetBytes("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]},\"__metadata__\":{\"foo\":\"bar\"}}"),
            new byte[16]);
        File.WriteAllBytes(dir.File("a.safetensors"), ReferenceSerialization);
        File.WriteAllBytes(dir.File("b.safetensors"), unpadded);
        File.WriteAllBytes(dir.File("c.safetensors"), withMetadata);

        using var a = SafetensorsFile.Open(dir.File("a.safetensors"));
        using var b = SafetensorsFile.Open(dir.File("b.safetensors"));
        using var c = SafetensorsFile.Open(dir.File("c.safetensors"));
        using var ta = a.Load("test");
        using var tb = b.Load("test");

        Assert.Equal(new long[] { 2, 2 }, ta.shape);
        Assert.Equal(ScalarType.Int32, ta.dtype);
        Assert.Equal(new[] { 0, 0, 0, 0 }, ta.data<int>().ToArray());
        Assert.Equal(new[] { 0, 0, 0, 1 }, tb.data<int>().ToArray());
        Assert.Equal("bar", c.Metadata["foo"]);
        Assert.Equal(new[] { "test" }, c.Keys);
    }
}
