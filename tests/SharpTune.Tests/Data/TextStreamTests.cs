// Text as one contiguous token stream: the windows cover the stream exactly (every token once as input and every
// next-token transition once as a label at stride = window; overlapping windows only add context), documents are
// separated by EOS with BOS as asked, nothing is truncated and long documents are counted as split; .txt files and
// folders read as documents; a held-out split takes the stream's tail. Checked with a character tokenizer whose ids
// are the characters themselves, and on tiny-shakespeare with the stories260K SentencePiece tokenizer.
using SharpTune.Data;
using SharpTune.Distillation;
using SharpTune.Tests.Tokenizers;
using SharpTune.Tokenizers;

namespace SharpTune.Tests.Data;

public sealed class TextStreamTests : IDisposable
{
    private const string Shakespeare = "text/tinyshakespeare/input.txt";
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-text-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    // Given a stream and its windows, every input position and every label position must appear exactly as the
    // stream says: labels[i] of a window starting at p is stream[p + i + 1] or ignored.
    private static (int[] InputCount, int[] LabelCount) Coverage(TextStreamDataset ds)
    {
        var stream = ds.Stream.ToArray();
        var inputs = new int[stream.Length];
        var labels = new int[stream.Length];
        for (var w = 0; w < ds.Count; w++)
        {
            var s = ds[w];
            var start = w * ds.Stride;
            Assert.True(s.Tokens.Length <= ds.Window);
            Assert.Equal(s.Tokens.Length, s.Labels.Length);
            for (var i = 0; i < s.Tokens.Length; i++)
            {
                Assert.Equal(stream[start + i], s.Tokens[i]);
                inputs[start + i]++;
                if (s.Labels[i] == Sample.IgnoreIndex) continue;
                Assert.Equal(stream[start + i + 1], s.Labels[i]);
                labels[start + i]++;
            }
        }
        return (inputs, labels);
    }

    [Theory]
    [InlineData(8, 100)]
    [InlineData(8, 97)]   // last window partial
    [InlineData(16, 2)]
    public void Windows_StrideIsWindow_EveryTokenOnceAndEveryTransitionOnce(int window, int textLength)
    {
        var text = new string([.. Enumerable.Range(0, textLength).Select(i => (char)('a' + i % 26))]);
        var ds = new TextStreamDataset(new FakeChatTokenizer(), [text], window, addBos: false, addEos: false);
        var (inputs, labels) = Coverage(ds);
        Assert.All(inputs[..^1], c => Assert.Equal(1, c));
        Assert.InRange(inputs[^1], 0, 1); // the last token needs no input slot: it has no next token; it is a label
        Assert.All(labels[..^1], c => Assert.Equal(1, c)); // every transition p -> p+1
        Assert.Equal(0, labels[^1]);                        // the last token has no next token
        Assert.Equal((textLength - 1 + window - 1) / window, ds.Count);
        Assert.Equal(textLength - 1, ds.Targets);
    }

    [Theory]
    [InlineData(8, 4, 50)]
    [InlineData(8, 1, 20)]
    [InlineData(10, 3, 41)]
    public void Windows_StrideBelowWindow_OverlapIsContextOnly(int window, int stride, int textLength)
    {
        var text = new string([.. Enumerable.Range(0, textLength).Select(i => (char)('A' + i % 26))]);
        var ds = new TextStreamDataset(new FakeChatTokenizer(), [text], window, stride, addBos: false, addEos: false);
        var (inputs, labels) = Coverage(ds);
        Assert.All(inputs[..^1], c => Assert.True(c >= 1)); // no token skipped (the last one is the last label)
        Assert.All(labels[..^1], c => Assert.Equal(1, c));  // but each transition trained once
        Assert.Equal(0, labels[^1]);
        Assert.True(ds.Count > (textLength - 1 + window - 1) / window, "overlapping windows should be more than disjoint ones");
    }

    [Theory]
    [InlineData(8, 3, 8, 40)]  // windows tile the stream; the last one is full
    [InlineData(8, 3, 8, 37)]  // the last window holds a 3-token prompt and a 1-token completion
    [InlineData(8, 3, 8, 36)]  // the stream's tail is a bare prompt: no window for it
    [InlineData(10, 4, 5, 33)] // overlapping windows are independent pairs too
    public void PromptTokens_EachWindowIsPromptThenLabelledCompletion(int window, int prompt, int stride, int textLength)
    {
        // Given a stream of distinct-looking characters cut into prompt-completion windows
        var text = new string([.. Enumerable.Range(0, textLength).Select(i => (char)('a' + i % 26))]);
        var ds = new TextStreamDataset(new FakeChatTokenizer(), [text], window, stride, addBos: false, addEos: false, promptTokens: prompt);
        var stream = ds.Stream.ToArray();
        // Then window k is stream[k*stride, k*stride + window), kept while it has a token after its prompt
        var expectedCount = Enumerable.Range(0, textLength).Count(k => k * stride + prompt < textLength);
        Assert.Equal(expectedCount, ds.Count);
        for (var k = 0; k < ds.Count; k++)
        {
            var s = ds[k];
            var start = k * stride;
            Assert.Equal(stream[start..Math.Min(start + window, stream.Length)], s.Tokens);
            // labels: none on the prompt; the completion tokens predicted from the position before each; none beyond
            for (var i = 0; i < s.Labels.Length; i++)
                Assert.Equal(i >= prompt - 1 && i + 1 < s.Tokens.Length ? s.Tokens[i + 1] : Sample.IgnoreIndex, s.Labels[i]);
            // and the on-policy recipe's split finds exactly the prompt (ending with the token that predicts the first completion token)
            var pc = PromptCompletion.Split(s, k);
            Assert.Equal(s.Tokens[..prompt], pc.Prompt);
        }
        Assert.Contains($"each a {prompt}-token prompt and its completion", ds.Summary);
    }

    [Fact]
    public void PromptTokens_NoRoomOrNoWindow_Refused()
    {
        var tok = new FakeChatTokenizer();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new TextStreamDataset(tok, ["abcdef"], 4, promptTokens: 4));
        Assert.Contains("prompt_tokens must be in [1, window 4 - 1]", e.Message);
        var path = Write("p.txt", "abcdef");
        var noWindow = Assert.Throws<ArgumentException>(() => DatasetBuilders.TextCompletionDataset(tok, path, promptTokens: 2));
        Assert.Contains("prompt_tokens needs a window", noWindow.Message);
        var built = (TextStreamDataset)DatasetBuilders.TextCompletionDataset(tok, path, maxSeqLen: 4, addBos: false, promptTokens: 2);
        Assert.Equal(2, built.PromptTokens);
    }

    [Fact]
    public void Stream_TwoDocuments_BosAndEosSeparateThem()
    {
        var tok = new FakeChatTokenizer();
        var withBos = new TextStreamDataset(tok, ["ab", "cd"], window: 4, addBos: true, addEos: true);
        Assert.Equal([FakeChatTokenizer.Bos, 'a', 'b', FakeChatTokenizer.Eos, FakeChatTokenizer.Bos, 'c', 'd', FakeChatTokenizer.Eos], withBos.Stream.ToArray());
        var plain = new TextStreamDataset(tok, ["ab", "cd"], window: 4, addBos: false, addEos: true);
        Assert.Equal(['a', 'b', FakeChatTokenizer.Eos, 'c', 'd', FakeChatTokenizer.Eos], plain.Stream.ToArray());
        // a window crosses the document boundary: the EOS is the label after "b", and "c" the label after EOS
        Assert.Equal(['b', FakeChatTokenizer.Eos, 'c', 'd'], plain[0].Labels);
    }

    [Fact]
    public void Stream_DocumentLongerThanWindow_SplitCountedNeverTruncated()
    {
        var docs = new[] { new string('x', 30), "short", new string('y', 9) };
        var ds = new TextStreamDataset(new FakeChatTokenizer(), docs, window: 8, addBos: false, addEos: true);
        Assert.Equal(docs.Sum(d => d.Length + 1), ds.Stream.Length); // every character and separator is there
        Assert.Equal(2, ds.DocumentsSplit);                           // 31 and 10 tokens > 8; "short"+EOS is 6
        Assert.Contains("2 documents longer than a window split across windows, none truncated", ds.Summary);
    }

    [Fact]
    public void Stream_StrideAboveWindow_Refused()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new TextStreamDataset(new FakeChatTokenizer(), ["abc"], 4, stride: 5));
        Assert.Contains("would skip tokens", e.Message);
    }

    [Fact]
    public void TextCompletion_TxtFileAndFolder_OneDocumentPerFileBomDropped()
    {
        File.WriteAllBytes(Path.Combine(_dir, "a.txt"), [0xEF, 0xBB, 0xBF, (byte)'h', (byte)'i']);
        Write("sub/b.txt", "yo");
        var tok = new FakeChatTokenizer();
        var folder = (TextStreamDataset)DatasetBuilders.TextCompletionDataset(tok, _dir, maxSeqLen: 16, addBos: false);
        Assert.Equal(['h', 'i', FakeChatTokenizer.Eos, 'y', 'o', FakeChatTokenizer.Eos], folder.Stream.ToArray());
        Assert.Equal(2, folder.Documents);
        var one = (TextStreamDataset)DatasetBuilders.TextCompletionDataset(tok, "text", dataFiles: Path.Combine(_dir, "a.txt"), maxSeqLen: 16, addEos: false);
        Assert.Equal([FakeChatTokenizer.Bos, 'h', 'i'], one.Stream.ToArray()); // add_bos defaults to the tokenizer having one
    }

    [Fact]
    public void ResolveFiles_FolderWithDataAndNotes_TxtNotesAreNotData()
    {
        var data = Write("ds/train.jsonl", "{\"text\":\"a\"}\n");
        Write("ds/SOURCE.txt", "where this came from");
        Assert.Equal([data], DataSources.ResolveFiles(Path.Combine(_dir, "ds")));
        var onlyText = Write("txt/a.txt", "a");
        Assert.Equal([onlyText], DataSources.ResolveFiles(Path.Combine(_dir, "txt")));
    }

    [Fact]
    public void TextCompletion_JsonlRows_StreamedWhenAWindowIsKnown()
    {
        var path = Write("t.jsonl", "{\"text\":\"abc\"}\n{\"text\":\"de\"}\n");
        var ds = (TextStreamDataset)DatasetBuilders.TextCompletionDataset(new FakeChatTokenizer(), path, maxSeqLen: 4, addBos: false);
        Assert.Equal(['a', 'b', 'c', FakeChatTokenizer.Eos, 'd', 'e', FakeChatTokenizer.Eos], ds.Stream.ToArray());
        Assert.Equal(2, ds.Count);
    }

    [Fact]
    public void TextCompletion_InvalidUtf8Txt_BadRowNamesTheFile()
    {
        File.WriteAllBytes(Path.Combine(_dir, "bad.txt"), [(byte)'a', 0xFF, (byte)'b']);
        var e = Assert.Throws<BadRowException>(() => DatasetBuilders.TextCompletionDataset(new FakeChatTokenizer(), Path.Combine(_dir, "bad.txt"), maxSeqLen: 4));
        Assert.Contains("bad.txt row 1: invalid UTF-8", e.Message);
    }

    [Fact]
    public void ReadRows_UnsupportedExtension_NamesFileAndTypes()
    {
        var path = Write("notes.docx", "x");
        var e = Assert.Throws<NotSupportedException>(() => DataSources.ReadRows([path]).ToList());
        Assert.Contains("notes.docx: unsupported data file type '.docx'", e.Message);
        Assert.Contains(".txt", e.Message);
    }

    [Fact]
    public void HoldOut_TenPercent_TailHeldOutDisjointAndComplete()
    {
        var text = new string('q', 1000);
        var ds = new TextStreamDataset(new FakeChatTokenizer(), [text], window: 10, addBos: false, addEos: false);
        var (train, val) = SubsetDataset.HoldOut(ds, 0.1);
        Assert.Equal(ds.Count, train.Count + val.Count);
        Assert.Equal(10, val.Count); // ceil(100 * 0.1)
        Assert.Equal(ds[train.Count].Tokens, val[0].Tokens);
        Assert.Equal(ds[ds.Count - 1].Labels, val[val.Count - 1].Labels);
        Assert.Throws<ArgumentOutOfRangeException>(() => val[val.Count]);
        Assert.Throws<ArgumentException>(() => SubsetDataset.HoldOut(new TextStreamDataset(new FakeChatTokenizer(), ["ab"], 4), 0.5));
    }

    [SharedDataFact(Shakespeare, TokenizerFiles.Tok512Model)]
    public void TinyShakespeare_Tok512_WindowsCoverTheWholeFile()
    {
        // Given the 1.1 MB corpus as one .txt file and the 512-piece SentencePiece tokenizer
        var tok = Llama2Tokenizer.FromModel(SharedData.PathOf(TokenizerFiles.Tok512Model));
        var text = File.ReadAllText(SharedData.PathOf(Shakespeare));
        // When it is read as the text completion dataset with 256-token windows
        var ds = (TextStreamDataset)DatasetBuilders.TextCompletionDataset(tok, SharedData.PathOf(Shakespeare), maxSeqLen: 256, addBos: false);
        // Then the stream is the whole file's encoding plus one EOS, and the windows cover it exactly
        int[] expected = [.. tok.Encode(text, addBos: false, addEos: false), tok.EosId];
        Assert.Equal(expected, ds.Stream.ToArray());
        Assert.True(expected.Length > 500_000, $"{expected.Length} tokens: the whole corpus, not one row cut to a window");
        var (inputs, labels) = Coverage(ds);
        Assert.All(inputs[..^1], c => Assert.Equal(1, c));
        Assert.All(labels[..^1], c => Assert.Equal(1, c));
        Assert.Equal(expected.Length - 1, labels.Sum());
        Assert.Contains("1 document longer than a window split across windows, none truncated", ds.Summary);
    }

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void InstructRows_LongerThanMaxSeqLen_TruncationCountedWithTokensLost()
    {
        // Given rows whose conversations are longer than max_seq_len 16 once tokenized
        var path = Write("i.jsonl", string.Join("\n",
            "{\"input\":\"Once upon a time there was a little girl\",\"output\":\"She liked to play in the park with her dog every day\"}",
            "{\"input\":\"Hi\",\"output\":\"Yes\"}",
            "{\"input\":\"Tell me a long story about a cat and a dog\",\"output\":\"The cat and the dog were friends\"}"));
        var limited = Llama2Tokenizer.FromModel(SharedData.PathOf(TokenizerFiles.Tok512Model), maxSeqLen: 16);
        var ds = (SftDataset)DatasetBuilders.InstructDataset(limited, path);
        // Then what truncation cuts is measured against the untruncated tokenization
        var unlimited = Llama2Tokenizer.FromModel(SharedData.PathOf(TokenizerFiles.Tok512Model));
        var lengths = Enumerable.Range(0, ds.Count).Select(i => unlimited.TokenizeMessages(ds.Messages(i), addEos: true).Tokens.Length).ToArray();
        Assert.Equal(lengths.Count(n => n > 16), ds.Truncation.Rows);
        Assert.Equal(lengths.Sum(n => Math.Max(0, n - 16)), ds.Truncation.TokensLost);
        Assert.Equal(lengths.Sum(), ds.Truncation.TokensTotal);
        Assert.True(ds.Truncation.Rows >= 2, string.Join(", ", lengths));
        Assert.All(Enumerable.Range(0, ds.Count), i => Assert.True(ds[i].Tokens.Length <= 16));
        Assert.Contains($"{ds.Truncation.Rows} rows longer than max_seq_len 16 truncated, losing {ds.Truncation.TokensLost} tokens", ds.Summary);
        Assert.Contains(DatasetSummary.Lines(new PackedDataset(ds, 16, 0, splitAcrossPack: true)), l => l == ds.Summary);
    }
}
