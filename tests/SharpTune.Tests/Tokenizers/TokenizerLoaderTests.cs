using SharpTune.Data;
using SharpTune.Tokenizers;
using static SharpTune.Tests.Tokenizers.TokenizerFiles;

namespace SharpTune.Tests.Tokenizers;

public sealed class TokenizerLoaderTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("sharptune-tok-");

    public void Dispose() => _dir.Delete(recursive: true);

    [SharedDataFact(Tok512Model)]
    public void Detect_Tok512Model_IsSentencePiece()
    {
        Assert.Equal(TokenizerFamily.SentencePiece, TokenizerLoader.Detect(SharedData.PathOf(Tok512Model)).Family);
        Assert.IsType<Llama2Tokenizer>(TokenizerLoader.Llama2(SharedData.PathOf(Tok512Model)));
    }

    [SharedDataFact(Qwen3Json)]
    public void Llama3Component_QwenFile_ClearError()
    {
        var e = Assert.Throws<InvalidDataException>(() => TokenizerLoader.Llama3(SharedData.PathOf(Qwen3Json)));
        Assert.Contains("Qwen2", e.Message);
    }

    [Fact]
    public void Load_UnknownTokenizerJson_NamesTheFile()
    {
        var path = Path.Combine(_dir.FullName, "tokenizer.json");
        File.WriteAllText(path, """{"added_tokens":[{"id":0,"content":"<pad>"}],"model":{"type":"BPE","vocab":{}}}""");
        var e = Assert.Throws<NotSupportedException>(() => TokenizerLoader.Load(_dir.FullName));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Load_EmptyFolder_ListsWhatItLookedFor()
    {
        var e = Assert.Throws<FileNotFoundException>(() => TokenizerLoader.Load(_dir.FullName));
        Assert.Contains("tokenizer.json", e.Message);
    }

    [Fact]
    public void FromTiktoken_BadLine_ReportsLineNumber()
    {
        var path = Path.Combine(_dir.FullName, "tokenizer.model");
        File.WriteAllText(path, "IQ== 0\nIg== 1\nnot-base64!! 2\n");
        var e = Assert.Throws<InvalidDataException>(() => Llama3Tokenizer.FromTiktoken(path));
        Assert.Contains($"{path}:3", e.Message);
    }

    [Fact]
    public void ReadRows_InvalidJsonFile_ReportsLine()
    {
        var path = Path.Combine(_dir.FullName, "broken.json");
        File.WriteAllText(path, "[\n{\"a\": 1},\n{\"a\": }\n]");
        var e = Assert.Throws<InvalidDataException>(() => DataSources.ReadRows([path]).ToList());
        Assert.Contains(path, e.Message);
        Assert.Contains("line 3", e.Message);
    }

    [Fact]
    public void Truncate_RightAndLeft_ForceLastElement()
    {
        int[] t = [1, 2, 3, 4, 5];
        Assert.Equal([1, 2, 9], Truncation.Truncate(t, 3, 9));
        Assert.Equal([3, 4, 9], Truncation.Truncate(t, 3, 9, TruncationType.Left));
        Assert.Equal([1, 2, 3], Truncation.Truncate(t, 3, null));
        Assert.Throws<ArgumentException>(() => Truncation.Parse("middle"));
    }
}
