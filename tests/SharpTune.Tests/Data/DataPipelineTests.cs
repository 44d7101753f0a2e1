using System.Text;
using Parquet.Serialization;
using SharpTune.Data;
using SharpTune.Tests.Tokenizers;
using SharpTune.Tokenizers;
using static SharpTune.Tests.Tokenizers.TokenizerFiles;

namespace SharpTune.Tests.Data;

public sealed class DataPipelineTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("sharptune-data-");

    public void Dispose() => _dir.Delete(recursive: true);

    private string Write(string name, string text) => Write(name, Encoding.UTF8.GetBytes(text));

    private string Write(string name, byte[] bytes)
    {
        var path = Path.Combine(_dir.FullName, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Fact]
    public void ReadRows_BadRows_ReportedWithFileAndLine()
    {
        var good = "{\"instruction\":\"Say hi\",\"input\":\"\",\"output\":\"hi\"}\n";
        byte[] invalidUtf8 = [.. "{\"instruction\":\"x\",\"input\":\"\",\"output\":\"bad "u8, 0xC3, 0x28, .. "\"}\n"u8];
        var bytes = Encoding.UTF8.GetBytes(good + "{\"instruction\":\"x\",\"input\":\"\"}\n" + "{\"instruction\":\"x\",\"input\":\"\",\"output\":42}\n" +
            "{\"instruction\":\"x\",\"input\":\"\",\"output\":\"  \"}\n" + "{\"instruction\":\"x\",\"input\":\"\",\"output\":\"\\ud800\"}\n")
            .Concat(invalidUtf8).Concat(Encoding.UTF8.GetBytes(good)).ToArray();
        var path = Write("rows.jsonl", bytes);
        var rows = DataSources.ReadRows([path]).ToList();

        var e = Assert.Throws<BadRowException>(() => new SftDataset(new FakeChatTokenizer(), rows, new AlpacaToMessages()));
        Assert.Equal((path, 2L), (e.File, e.Row));
        Assert.Contains("missing column 'output'", e.Message);

        var ds = new SftDataset(new FakeChatTokenizer(), rows, new AlpacaToMessages(), skipBadRows: true);
        Assert.Equal(2, ds.Count);
        Assert.Equal([2L, 3, 4, 5, 6], ds.BadRows.Select(b => b.Row));
        Assert.Contains("expected a string", ds.BadRows[1].Reason);
        Assert.Contains("empty", ds.BadRows[2].Reason);
        Assert.Contains("invalid Unicode", ds.BadRows[3].Reason);
        Assert.Contains("UTF-8", ds.BadRows[4].Reason);
    }

    [Fact]
    public async Task ReadRows_CsvAndParquet_SameRowsAsJson()
    {
        var json = Write("a.json", "[{\"instruction\":\"Add, \\\"quoted\\\"\",\"input\":\"1\\n2\",\"output\":\"3\"},{\"instruction\":\"B\",\"input\":\"\",\"output\":\"b\"}]");
        var csv = Write("a.csv", "instruction,input,output\r\n\"Add, \"\"quoted\"\"\",\"1\n2\",3\r\nB,,b\r\n");
        var parquet = Path.Combine(_dir.FullName, "a.parquet");
        await ParquetSerializer.SerializeAsync(new[] { new Row { instruction = "Add, \"quoted\"", input = "1\n2", output = "3" }, new Row { instruction = "B", input = "", output = "b" } }, parquet);
        var t = new AlpacaToMessages();
        var expected = DataSources.ReadRows([json]).Select(r => t.ToMessages(r)).ToList();
        foreach (var file in new[] { csv, parquet })
        {
            var actual = DataSources.ReadRows([file]).Select(r => t.ToMessages(r)).ToList();
            Assert.Equal(expected.Count, actual.Count);
            for (var i = 0; i < expected.Count; i++) Assert.Equal(expected[i], actual[i]);
        }
        Assert.Equal(4L, DataSources.ReadRows([csv]).Last().Row); // CSV rows report the line they start on
    }

    [Fact]
    public async Task ChatDataset_ShareGptParquetWithNestedTurns_ReadsConversation()
    {
        var path = Path.Combine(_dir.FullName, "chat.parquet");
        await ParquetSerializer.SerializeAsync(new[]
        {
            new ChatRow { conversations = [new Turn { from = "human", value = "Hi" }, new Turn { from = "gpt", value = "Hello" }] },
        }, path);
        var ds = (SftDataset)DatasetBuilders.ChatDataset(new FakeChatTokenizer(), path, "sharegpt");
        Assert.Equal([new Message("user", "Hi", true), new Message("assistant", "Hello")], ds.Messages(0));
    }

    public sealed class ChatRow
    {
        public List<Turn> conversations { get; set; } = [];
    }

    public sealed class Turn
    {
        public string? from { get; set; }
        public string? value { get; set; }
    }

    public sealed class Row
    {
        public string? instruction { get; set; }
        public string? input { get; set; }
        public string? output { get; set; }
    }

    [Fact]
    public void ResolveFiles_HubIdWithoutResolver_ClearError()
    {
        var e = Assert.Throws<InvalidOperationException>(() => DataSources.ResolveFiles("yahma/alpaca-cleaned", resolver: null));
        Assert.Contains("yahma/alpaca-cleaned", e.Message);
        Assert.Contains("resolver", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void ResolveFiles_HubIdWithResolver_ReadsResolvedFolderSplit()
    {
        Directory.CreateDirectory(Path.Combine(_dir.FullName, "data"));
        Write("data/train-00000.jsonl", "{\"text\":\"a\"}\n");
        Write("data/test-00000.jsonl", "{\"text\":\"b\"}\n");
        var files = DataSources.ResolveFiles("org/name", split: "train", resolver: new FixedResolver(_dir.FullName));
        Assert.Equal([Path.Combine(_dir.FullName, "data", "train-00000.jsonl")], files);
    }

    [Fact]
    public async Task UseResolver_ScopedToItsCallContext_ConcurrentHostsSeeTheirOwnAndDisposeRestores()
    {
        // Given two folders, each a hub dataset's local copy
        string Folder(string name, string text)
        {
            Directory.CreateDirectory(Path.Combine(_dir.FullName, name));
            Write($"{name}/train-00000.jsonl", $"{{\"text\":\"{text}\"}}\n");
            return Path.Combine(_dir.FullName, name);
        }
        var (a, b) = (Folder("a", "from a"), Folder("b", "from b"));

        // When two concurrent flows each scope their own resolver and resolve the same id
        async Task<string> Resolve(string folder)
        {
            using (DataSources.UseResolver(new FixedResolver(folder)))
            {
                await Task.Yield(); // resumes on another thread: the scope flows with the call context
                return DataSources.ResolveFiles("org/name", split: "train").Single();
            }
        }
        var results = await Task.WhenAll(Resolve(a), Resolve(b));

        // Then each saw its own, and outside the scopes no resolver is set
        Assert.Equal([Path.Combine(a, "train-00000.jsonl"), Path.Combine(b, "train-00000.jsonl")], results);
        Assert.Null(DataSources.CurrentResolver);
        Assert.Throws<InvalidOperationException>(() => DataSources.ResolveFiles("org/name"));
    }

    private sealed class FixedResolver(string folder) : IDatasetSourceResolver
    {
        public string Resolve(string datasetId, string? split) => folder;
    }

    [Theory]
    [InlineData("train", 0, 10)]
    [InlineData("train[:30%]", 0, 3)]
    [InlineData("train[2:5]", 2, 5)]
    [InlineData("train[-2:]", 8, 10)]
    public void Load_SplitSlice_SelectsRows(string split, int from, int to)
    {
        var path = Write("t.jsonl", string.Concat(Enumerable.Range(0, 10).Select(i => $"{{\"text\":\"{i}\"}}\n")));
        var rows = DatasetBuilders.Load(path, null, split);
        Assert.Equal(Enumerable.Range(from, to - from).Select(i => i.ToString()), rows.Select(r => r.Values.GetProperty("text").GetString()));
    }

    [SharedDataFact(Qwen3Json)]
    public void ChatDataset_ShareGptAndOpenAi_SameTokensAndMasks()
    {
        var sharegpt = Write("s.json", "[{\"conversations\":[{\"from\":\"system\",\"value\":\"Be kind.\"},{\"from\":\"human\",\"value\":\"Hi\"},{\"from\":\"gpt\",\"value\":\"Hello!\"},{\"from\":\"human\",\"value\":\"Bye\"},{\"from\":\"gpt\",\"value\":\"Bye!\"}]}]");
        var openai = Write("o.jsonl", "{\"messages\":[{\"role\":\"system\",\"content\":\"Be kind.\"},{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Hello!\"}]},{\"role\":\"user\",\"content\":\"Bye\"},{\"role\":\"assistant\",\"content\":\"Bye!\"}]}\n");
        var a = DatasetBuilders.ChatDataset(TokenizerFiles.Qwen, sharegpt, "sharegpt")[0];
        var b = DatasetBuilders.ChatDataset(TokenizerFiles.Qwen, openai, "openai")[0];
        Assert.Equal(a, b with { Tokens = a.Tokens, Labels = a.Labels });
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.Equal(a.Labels, b.Labels);
        var trained = TokenizerFiles.Qwen.Decode(a.Labels.Where(l => l >= 0), skipSpecialTokens: false);
        // Only assistant turns, header included, are trained on (train_on_input false), as torchtune masks whole messages.
        Assert.Equal("<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\nBye!<|im_end|>", trained);
    }

    [Fact]
    public void InstructDataset_ColumnMapAndSystemPrompt_BuildsConversation()
    {
        var path = Write("i.jsonl", "{\"question\":\"Q?\",\"answer\":\"A.\"}\n");
        var tok = new FakeChatTokenizer();
        var ds = (SftDataset)DatasetBuilders.InstructDataset(tok, path, new Dictionary<string, string> { ["input"] = "question", ["output"] = "answer" }, newSystemPrompt: "S");
        Assert.Equal([new Message("system", "S", true), new Message("user", "Q?", true), new Message("assistant", "A.")], ds.Messages(0));
    }

    [Fact]
    public void TextCompletion_Labels_AreNextTokens()
    {
        var path = Write("t.jsonl", "{\"text\":\"abc\"}\n");
        var s = DatasetBuilders.TextCompletionDataset(new FakeChatTokenizer(), path)[0];
        Assert.Equal([FakeChatTokenizer.Bos, 'a', 'b', 'c', FakeChatTokenizer.Eos], s.Tokens);
        Assert.Equal(['a', 'b', 'c', FakeChatTokenizer.Eos, Sample.IgnoreIndex], s.Labels);
    }

    [Fact]
    public void PadSft_ThreeSamples_ShapesAndPadding()
    {
        Sample S(int n) => new(Enumerable.Range(1, n).ToArray(), Enumerable.Range(2, n).ToArray());
        using var batch = Collate.PadSft([S(5), S(7), S(3)], padId: 99);
        Assert.Equal([3L, 7], batch.Tokens.shape);
        Assert.Equal(TorchSharp.torch.int64, batch.Tokens.dtype);
        var tokens = batch.Tokens.data<long>().ToArray();
        var labels = batch.Labels.data<long>().ToArray();
        Assert.Equal([1L, 2, 3, 99, 99, 99, 99], tokens[14..21]);
        Assert.Equal([2L, 3, 4, -100, -100, -100, -100], labels[14..21]);
        using var rounded = Collate.PadSft([S(5), S(7), S(3)], padId: 99, padToMultipleOf: 8);
        Assert.Equal([3L, 8], rounded.Labels.shape);
    }

    [Fact]
    public void PackedDataset_SplitAcrossPack_CutsAtBoundaryAndPadsLast()
    {
        var ds = new ListDataset([Seq(1, 5), Seq(10, 4), Seq(20, 6)]);
        var packed = new PackedDataset(ds, 8, padId: 0, splitAcrossPack: true);
        Assert.Equal(2, packed.Count);
        Assert.Equal([1, 2, 3, 4, 5, 10, 11, 12], packed[0].Tokens);
        Assert.Equal([0, 1, 2, 3, 4, 0, 1, 2], packed[0].InputPos!);
        Assert.Equal([5, 3], packed[0].SeqLens!);
        Assert.Equal([13, 20, 21, 22, 23, 24, 25, 0], packed[1].Tokens);
        Assert.Equal([1, 6, 1], packed[1].SeqLens!);
        var noSplit = new PackedDataset(ds, 8, padId: 0);
        Assert.Equal(3, noSplit.Count);
        Assert.Equal([5, 3], noSplit[0].SeqLens!);
        Assert.Throws<InvalidDataException>(() => new PackedDataset(new ListDataset([Seq(1, 9)]), 8, 0));
    }

    [Fact]
    public void BlockCausalMask_TwoSamples_ClosedForm()
    {
        var m = Collate.BlockCausalMask([2, 3], 5);
        bool[] expected =
        [
            true, false, false, false, false,
            true, true, false, false, false,
            false, false, true, false, false,
            false, false, true, true, false,
            false, false, true, true, true,
        ];
        Assert.Equal(expected, m);
    }

    [Fact]
    public void EpochSampler_SameSeedAndEpoch_SameOrder_OtherEpochDiffers()
    {
        var a = new EpochSampler(1000, seed: 7);
        Assert.Equal(a.Order(3), new EpochSampler(1000, seed: 7).Order(3));
        Assert.NotEqual(a.Order(3), a.Order(4));
        Assert.NotEqual(a.Order(3), new EpochSampler(1000, seed: 8).Order(3));
        Assert.Equal(Enumerable.Range(0, 1000), a.Order(3).Order());
        Assert.Equal(Enumerable.Range(0, 10), new EpochSampler(10, 1, shuffle: false).Order(5));
    }

    [Fact]
    public void DataLoader_ResumeMidEpoch_YieldsTheRemainingBatches()
    {
        var ds = new ListDataset(Enumerable.Range(0, 23).Select(i => Seq(i * 10, 1 + i % 4)).ToList());
        var loader = new DataLoader(ds, batchSize: 4, seed: 3, padId: 0);
        Assert.Equal(5, loader.BatchesPerEpoch); // drop_last
        var all = loader.Batches(epoch: 2).Select(b => { using (b) return b.Tokens.data<long>().ToArray(); }).ToList();
        var resumed = loader.Batches(epoch: 2, startBatch: 3).Select(b => { using (b) return b.Tokens.data<long>().ToArray(); }).ToList();
        Assert.Equal(all.Skip(3), resumed);
    }

    [Fact]
    public void ConcatDataset_Indexing_WalksPartsInOrder()
    {
        var c = new ConcatDataset([new ListDataset([Seq(1, 1), Seq(2, 1)]), new ListDataset([]), new ListDataset([Seq(3, 1)])]);
        Assert.Equal(3, c.Count);
        Assert.Equal([1, 2, 3], Enumerable.Range(0, 3).Select(i => c[i].Tokens[0]));
        Assert.Throws<ArgumentOutOfRangeException>(() => c[3]);
    }

    private static Sample Seq(int start, int n)
    {
        var t = Enumerable.Range(start, n).ToArray();
        return new Sample(t, Sample.ShiftedLabels(t, null));
    }

    private sealed class ListDataset(IReadOnlyList<Sample> samples) : ISampleDataset
    {
        public int Count => samples.Count;
        public Sample this[int index] => samples[index];
    }
}

/// <summary>A character-level tokenizer with a trivial chat format, for data tests that need no real vocabulary.</summary>
internal sealed class FakeChatTokenizer : IChatTokenizer
{
    public const int Bos = 1000, Eos = 1001;
    public int VocabSize => 1002;
    public int BosId => Bos;
    public int EosId => Eos;
    public int PadId => 0;
    public IReadOnlyList<int> StopTokens => [Eos];
    public int? MaxSeqLen => null;
    public bool IsSpecial(int id) => id >= Bos;
    public IReadOnlyList<int> Encode(string text, bool addBos = true, bool addEos = true) =>
        [.. addBos ? [Bos] : Array.Empty<int>(), .. text.Select(c => (int)c), .. addEos ? [Eos] : Array.Empty<int>()];
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true) => new(ids.Where(i => i < Bos).Select(i => (char)i).ToArray());
    public TokenizedMessages TokenizeMessages(IReadOnlyList<Message> messages, bool addEos = true)
    {
        var tokens = new List<int> { Bos };
        var mask = new List<bool> { true };
        foreach (var m in messages) { tokens.AddRange(m.Content.Select(c => (int)c)); mask.AddRange(m.Content.Select(_ => m.Masked)); }
        if (addEos) { tokens.Add(Eos); mask.Add(true); }
        return new TokenizedMessages([.. tokens], [.. mask]);
    }
}
