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
