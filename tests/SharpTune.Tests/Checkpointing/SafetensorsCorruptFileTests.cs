// Every malformed file must be a CheckpointFormatException that names the file, never a crash or a partial load.
using SharpTune.Checkpointing;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Checkpointing;

public sealed class SafetensorsCorruptFileTests
{
    public SafetensorsCorruptFileTests() => TorchRuntime.EnsureLoaded();

    private static CheckpointFormatException OpenBroken(TempDir dir, byte[] bytes)
    {
        var path = dir.File("broken.safetensors");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Equal(path, e.FilePath);
        Assert.StartsWith(path, e.Message);
        return e;
    }

    private static byte[] File1(string header, int dataBytes, ulong? length = null) =>
        SafetensorsSpecTests.Assemble(header, new byte[dataBytes], length);

    [Fact]
    public void Open_FileShorterThanLengthField_Throws()
    {
        using var dir = new TempDir();
        Assert.Contains("too short", OpenBroken(dir, [1, 2, 3]).Message);
    }

    [Fact]
    public void Open_HeaderLengthBeyondFile_Throws()
    {
        using var dir = new TempDir();
        var e = OpenBroken(dir, File1("{}", 0, length: 1_000_000));
        Assert.Contains("header length 1000000 exceeds the file", e.Message);
    }

    [Fact]
    public void Open_HugeHeaderLength_ThrowsWithoutAllocating()
    {
        using var dir = new TempDir();
        Assert.Contains("exceeds the file", OpenBroken(dir, File1("{}", 0, length: ulong.MaxValue)).Message);
    }

    [Theory]
    [InlineData("{\"a\": {\"dtype\": \"F32\"")]
    [InlineData("not json")]
    [InlineData("")]
    public void Open_BadJson_Throws(string header)
    {
        using var dir = new TempDir();
        Assert.Contains("not valid JSON", OpenBroken(dir, File1(header, 0)).Message);
    }

    [Fact]
    public void Open_HeaderNotAnObject_Throws()
    {
        using var dir = new TempDir();
        Assert.Contains("must be a JSON object", OpenBroken(dir, File1("[1, 2]", 0)).Message);
    }

    [Theory]
    [InlineData("F8_E4M3")]
    [InlineData("Q4_0")]
    [InlineData("f32")]
    public void Open_UnknownDtype_Throws(string dtype)
    {
        using var dir = new TempDir();
        var e = OpenBroken(dir, File1($"{{\"w\":{{\"dtype\":\"{dtype}\",\"shape\":[1],\"data_offsets\":[0,4]}}}}", 4));
        Assert.Contains($"unknown or unsupported dtype '{dtype}'", e.Message);
        Assert.Contains("'w'", e.Message);
    }

    [Fact]
    public void Open_OffsetsOutsideData_Throws()
    {
        using var dir = new TempDir();
        // Claims 16 bytes, but only 8 follow the header: a truncated download.
        var e = OpenBroken(dir, File1("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8));
        Assert.Contains("outside the data section of 8 bytes", e.Message);
    }

    [Fact]
    public void Open_SizeDisagreesWithShape_Throws()
    {
        using var dir = new TempDir();
        var e = OpenBroken(dir, File1("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}", 8));
        Assert.Contains("needs 12 bytes but data_offsets [0, 8] span 8", e.Message);
    }

    [Fact]
    public void Open_OverlappingRanges_Throws()
    {
        using var dir = new TempDir();
        var e = OpenBroken(dir, File1(
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12));
        Assert.Contains("'a' [0, 8] and 'b' [4, 12] overlap", e.Message);
    }

    [Fact]
    public void Open_EndBeforeBegin_Throws()
    {
        using var dir = new TempDir();
        Assert.Contains("end before begin",
            OpenBroken(dir, File1("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4)).Message);
    }

    [Theory]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "non-negative")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", "must have 2 entries")]
    [InlineData("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "missing string field 'dtype'")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "missing array field 'shape'")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "twice")]
    [InlineData("{\"__metadata__\":{\"format\":1}}", "must be a string")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", "overflows")]
    public void Open_MalformedEntry_Throws(string header, string expected)
    {
        using var dir = new TempDir();
        Assert.Contains(expected, OpenBroken(dir, File1(header, 4)).Message);
    }

    private const string OneF32 = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";

    [Theory]
    [InlineData(-1)]
    [InlineData(-2)]
    [InlineData(-4)]
    [InlineData(1)]
    [InlineData(3)]
    public void Open_HeaderLengthFieldOffIntoPadding_Throws(int delta)
    {
        // The JSON still parses when the length cuts into the space padding, but every tensor would be read shifted.
        using var dir = new TempDir();
        var header = OneF32 + "    ";
        var e = OpenBroken(dir, SafetensorsSpecTests.Assemble(header, new byte[8], (ulong)(header.Length + delta)));
        if (delta < 0) Assert.Contains($"holds {8 - delta} bytes but the tensors cover 8: {-delta} trailing bytes", e.Message);
    }

    [Fact]
    public void Open_BytesAppended_Throws()
    {
        using var dir = new TempDir();
        var e = OpenBroken(dir, File1(OneF32, 8 + 16));
        Assert.Contains("16 trailing bytes belong to no tensor", e.Message);
    }

    [Fact]
    public void Open_HoleBetweenTensors_Throws()
    {
        using var dir = new TempDir();
        var e = OpenBroken(dir, File1(
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12));
        Assert.Contains("bytes [4, 8) belong to no tensor (a hole before 'b' [8, 12])", e.Message);
    }

    [Fact]
    public void Open_FirstTensorNotAtZero_Throws()
    {
        using var dir = new TempDir();
        Assert.Contains("bytes [0, 4) belong to no tensor",
            OpenBroken(dir, File1("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8)).Message);
    }

    [Fact]
    public void Open_ZeroSizeTensorInsideAnother_Throws()
    {
        // The reference requires every range, empty ones included, to start where the previous one ended.
        using var dir = new TempDir();
        var e = OpenBroken(dir, File1(
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8));
        Assert.Contains("'a' [0, 8] and 'e' [4, 4] overlap", e.Message);
    }

    [Fact]
    public void Open_HeaderListsTensorsOutOfOffsetOrder_LoadsEachFromItsRange()
    {
        // JSON key order carries no meaning; the ranges, sorted, must tile the data.
        using var dir = new TempDir();
        var path = dir.File("ok.safetensors");
        File.WriteAllBytes(path, SafetensorsSpecTests.Assemble(
            "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]}," +
            "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", [1, 2, 3, 4]));
        using var file = SafetensorsFile.Open(path);
        using var a = file.Load("a");
        using var b = file.Load("b");
        Assert.Equal(new byte[] { 1, 2 }, a.data<byte>().ToArray());
        Assert.Equal(new byte[] { 3, 4 }, b.data<byte>().ToArray());
    }

    [Fact]
    public void Open_InvalidUtf8InHeader_ThrowsNamingOffset()
    {
        // 0xC3 0x28 is an invalid two-byte sequence, inside a tensor name.
        using var dir = new TempDir();
        var bytes = File1("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
        bytes[10] = 0xC3;
        bytes[11] = 0x28;
        bytes[12] = (byte)'"';
        var e = OpenBroken(dir, bytes);
        Assert.Contains("header is not valid UTF-8: invalid byte 0xC3 at file offset 10", e.Message);
    }

    [Theory]
    [InlineData("\n", "found byte 0x0A")]
    [InlineData("\t ", "found byte 0x09")]
    [InlineData("\0", "not valid JSON")]
    public void Open_PaddingNotSpaces_Throws(string padding, string expected)
    {
        using var dir = new TempDir();
        Assert.Contains(expected, OpenBroken(dir, File1(OneF32 + padding, 8)).Message);
    }

    [Fact]
    public void Open_LeadingWhitespace_Throws()
    {
        using var dir = new TempDir();
        Assert.Contains("must start with '{'", OpenBroken(dir, File1(" " + OneF32, 8)).Message);
    }

    [Theory]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1}}", "unknown field 'extra'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "field 'dtype' appears twice")]
    [InlineData("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "key 'a' twice")]
    [InlineData("{\"__metadata__\":[],\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "must be an object of strings")]
    public void Open_AmbiguousEntry_Throws(string header, string expected)
    {
        using var dir = new TempDir();
        Assert.Contains(expected, OpenBroken(dir, File1(header, 8)).Message);
    }

    [Fact]
    public void Open_NullMetadata_ReadsAsEmpty()
    {
        using var dir = new TempDir();
        var path = dir.File("ok.safetensors");
        File.WriteAllBytes(path, File1("{\"__metadata__\":null," + OneF32[1..], 8));
        using var file = SafetensorsFile.Open(path);
        Assert.Empty(file.Metadata);
        Assert.Equal(["w"], file.Keys);
    }

    [Fact]
    public void LoadInto_F32RelabelledI32_ThrowsNamingFileAndTensor()
    {
        // Relabelling F32 data as I32 keeps every size consistent: only the model's dtype shows the file is wrong,
        // and converting would feed the bit patterns, read as integers, to training.
        using var dir = new TempDir();
        using var src = new TinyHfModel(seed: 4);
        var path = dir.File(SafetensorsWriter.SingleFileName);
        SafetensorsWriter.Save(path, src.state_dict());
        var text = System.Text.Encoding.Latin1.GetString(File.ReadAllBytes(path));
        var relabelled = text.Replace("\"model.norm.weight\":{\"dtype\":\"F32\"", "\"model.norm.weight\":{\"dtype\":\"I32\"", StringComparison.Ordinal);
        Assert.NotEqual(text, relabelled);
        File.WriteAllBytes(path, System.Text.Encoding.Latin1.GetBytes(relabelled));
        using var model = new TinyHfModel(seed: 5);

        var e = Assert.Throws<CheckpointFormatException>(() => HfCheckpointer.LoadInto(model, dir.Path, convertDtype: true));
        Assert.Contains($"'model.norm.weight': checkpoint I32 in {SafetensorsWriter.SingleFileName}, model Float32", e.Message);
        Assert.Contains("only float dtypes convert", e.Message);
    }

    [Theory]
    [InlineData(ScalarType.Bool, "BOOL")]
    [InlineData(ScalarType.Byte, "U8")]
    [InlineData(ScalarType.Int64, "I64")]
    public void LoadInto_IntegerTensorWhereFloatExpected_Throws(ScalarType stored, string name)
    {
        using var dir = new TempDir();
        using var src = new TinyHfModel(seed: 4);
        using var wrong = ones(4, stored);
        var tensors = new Dictionary<string, Tensor>(src.state_dict()) { ["model.norm.weight"] = wrong };
        SafetensorsWriter.Save(dir.File(SafetensorsWriter.SingleFileName), tensors);
        using var model = new TinyHfModel(seed: 5);

        var e = Assert.Throws<CheckpointFormatException>(() => HfCheckpointer.LoadInto(model, dir.Path, convertDtype: true));
        Assert.Contains($"'model.norm.weight': checkpoint {name} in {SafetensorsWriter.SingleFileName}, model Float32", e.Message);
    }

    [Fact]
    public void Load_FileTruncatedAfterOpen_ThrowsNotPartial()
    {
        using var dir = new TempDir();
        var path = dir.File("t.safetensors");
        using var w = ones(1000);
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["w"] = w });
        using var file = SafetensorsFile.Open(path);
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite)) fs.SetLength(fs.Length - 100);

        var e = Assert.Throws<CheckpointFormatException>(() => file.Load("w"));
        Assert.Contains("unexpected end of file", e.Message);
    }

    private static void WriteShards(TempDir dir)
    {
        using var a = ones(2);
        using var b = zeros(2);
        SafetensorsWriter.SaveSharded(dir.Path, new Dictionary<string, Tensor> { ["a"] = a, ["b"] = b }, maxShardBytes: 8);
    }

    [Fact]
    public void OpenFolder_IndexNamesMissingShard_Throws()
    {
        using var dir = new TempDir();
        WriteShards(dir);
        File.Delete(dir.File("model-00002-of-00002.safetensors"));

        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsCheckpoint.Open(dir.Path).Dispose());
        Assert.Equal(dir.File(SafetensorsWriter.IndexFileName), e.FilePath);
        Assert.Contains("'model-00002-of-00002.safetensors', which does not exist", e.Message);
    }

    [Fact]
    public void OpenFolder_IndexKeyAbsentFromShard_ThrowsListingAll()
    {
        using var dir = new TempDir();
        WriteShards(dir);
        var index = dir.File(SafetensorsWriter.IndexFileName);
        File.WriteAllText(index, File.ReadAllText(index)
            .Replace("\"b\": \"model-00002-of-00002.safetensors\"", "\"b\": \"model-00001-of-00002.safetensors\", \"c\": \"model-00002-of-00002.safetensors\""));

        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsCheckpoint.Open(dir.Path).Dispose());
        Assert.Contains("2 index entries do not match", e.Message);
        Assert.Contains("'b' is mapped to 'model-00001-of-00002.safetensors', which does not contain it", e.Message);
        Assert.Contains("'c' is mapped to 'model-00002-of-00002.safetensors'", e.Message);
    }

    [Fact]
    public void OpenFolder_CorruptShard_ThrowsNamingShard()
    {
        using var dir = new TempDir();
        WriteShards(dir);
        var shard = dir.File("model-00002-of-00002.safetensors");
        var bytes = File.ReadAllBytes(shard);
        bytes[0] = 0xFF; // header length now far beyond the file
        File.WriteAllBytes(shard, bytes);

        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsCheckpoint.Open(dir.Path).Dispose());
        Assert.Equal(shard, e.FilePath);
    }

    [Fact]
    public void OpenFolder_BadIndexJson_Throws()
    {
        using var dir = new TempDir();
        WriteShards(dir);
        File.WriteAllText(dir.File(SafetensorsWriter.IndexFileName), "{\"weight_map\": ");
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsCheckpoint.Open(dir.Path).Dispose());
        Assert.Contains("not valid JSON", e.Message);
    }

    [Fact]
    public void OpenFolder_NoWeights_ThrowsNamingFolder()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("model-00001-of-00002.safetensors"), "x");
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsCheckpoint.Open(dir.Path).Dispose());
        Assert.Equal(dir.Path, e.FilePath);
        Assert.Contains("model-00001-of-00002.safetensors", e.Message);
    }
}
