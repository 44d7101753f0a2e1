using System.Diagnostics;
using SharpTune.Data;
using SharpTune.Tests.Tokenizers;
using SharpTune.Tokenizers;
using Xunit.Abstractions;
using static SharpTune.Tests.Tokenizers.TokenizerFiles;

namespace SharpTune.Tests.Data;

public sealed class AlpacaDatasetTests(ITestOutputHelper output)
{
    private static readonly Lazy<IReadOnlyList<DataRow>> s_rows = new(() =>
        DatasetBuilders.Load(SharedData.PathOf(Alpaca), dataFiles: null, split: "train"));

    [SharedDataFact(Alpaca)]
    public void Load_AllShards_ReadsThePublishedRowCountInOrder()
    {
        var rows = s_rows.Value;
        Assert.Equal(50_921, rows.Count); // SOURCE.txt: 50921 rows in 36 shards
        Assert.Equal("Give three tips for staying healthy.", rows[0].Values.GetProperty("instruction").GetString());
        Assert.EndsWith("alpaca_data_cleaned_0.json", rows[0].File);
        Assert.EndsWith("alpaca_data_cleaned_1.json", rows[1551].File); // shard 0 holds 1551 rows; shard 1 follows, not shard 10
        Assert.Equal(1, rows[1551].Row);
    }

    [SharedDataFact(Alpaca)]
    public void AlpacaToMessages_RealRows_ExactPromptStrings()
    {
        var rows = s_rows.Value;
        var transform = new AlpacaToMessages();
        var noInput = transform.ToMessages(rows[0]);
        Assert.Equal(
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
            "### Instruction:\nGive three tips for staying healthy.\n\n### Response:\n", noInput[0].Content);
        Assert.Equal(("user", false), (noInput[0].Role, noInput[0].Masked));
        Assert.Equal(rows[0].Values.GetProperty("output").GetString(), noInput[1].Content);

        var withInputRow = rows.First(r => r.Values.GetProperty("input").GetString()!.Length > 0);
        var withInput = transform.ToMessages(withInputRow)[0].Content;
        Assert.Equal(
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n" +
            $"### Instruction:\n{withInputRow.Values.GetProperty("instruction").GetString()}\n\n### Input:\n{withInputRow.Values.GetProperty("input").GetString()}\n\n### Response:\n",
            withInput);
    }

    [SharedDataFact(Alpaca, Llama3Json)]
    public void Labels_TrainOnInputFalse_OnlyResponseAndEotTrained()
    {
        var tok = TokenizerFiles.Llama3;
        var ds = new SftDataset(tok, s_rows.Value.Take(50), new AlpacaToMessages(trainOnInput: false));
        for (var i = 0; i < ds.Count; i++)
        {
            var s = ds[i];
            var response = tok.Encode(ds.Messages(i)[1].Content.Trim(), false, false);
            // Trained targets: the assistant message (its header, the response, <|eot_id|>), as torchtune masks whole
            // messages; labels are shifted, so label[j] is token[j+1].
            int[] expected = [Llama3Tokenizer.StartHeaderId, 78_191, Llama3Tokenizer.EndHeaderId, 271, .. response, Llama3Tokenizer.EotId];
            Assert.Equal(expected, s.Labels.Where(l => l != Sample.IgnoreIndex));
            for (var j = 0; j + 1 < s.Tokens.Length; j++)
                Assert.True(s.Labels[j] == Sample.IgnoreIndex || s.Labels[j] == s.Tokens[j + 1]);
            Assert.Equal(Sample.IgnoreIndex, s.Labels[^1]);
        }
    }

    [SharedDataFact(Alpaca, Llama3Json)]
    public void Labels_TrainOnInputTrue_EverythingButBosAndEosTargetsTrained()
    {
        var ds = new SftDataset(TokenizerFiles.Llama3, s_rows.Value.Take(50), new AlpacaToMessages(trainOnInput: true));
        for (var i = 0; i < ds.Count; i++)
        {
            var s = ds[i];
            Assert.Equal(Llama3Tokenizer.BeginOfTextId, s.Tokens[0]);
            Assert.Equal(Llama3Tokenizer.EndOfTextId, s.Tokens[^1]);
            // Targets are tokens[1..n-1] except the masked EOS; BOS is never a target.
            Assert.Equal(s.Tokens[1..^1], s.Labels[..^2]);
            Assert.Equal([Sample.IgnoreIndex, Sample.IgnoreIndex], s.Labels[^2..]);
        }
    }

    [SharedDataFact(Alpaca, Llama3Json)]
    public void Packed_AlpacaSamples_MaskNeverCrossesSamples()
    {
        var tok = TokenizerFiles.Llama3.WithMaxSeqLen(256);
        var ds = new SftDataset(tok, s_rows.Value.Take(120), new AlpacaToMessages());
        var packed = new PackedDataset(ds, 256, tok.PadId);
        var expectedTokens = Enumerable.Range(0, ds.Count).SelectMany(i => ds[i].Tokens).ToList();
        var packedTokens = new List<int>();
        using var batch = Collate.Packed(Enumerable.Range(0, packed.Count).Select(i => packed[i]).ToList());
        Assert.Equal([packed.Count, 256L, 256L], batch.Mask!.shape);
        var mask = batch.Mask.data<bool>().ToArray();
        var pos = batch.InputPos!.data<long>().ToArray();
        for (var p = 0; p < packed.Count; p++)
        {
            var pack = packed[p];
            // Sample of each position, found from the data itself: every sample starts with BOS; padding is its own block.
            var segment = new int[256];
            var seg = -1;
            for (var j = 0; j < 256; j++)
            {
                if (pack.Tokens[j] == Llama3Tokenizer.BeginOfTextId || (j > 0 && pack.Labels[j - 1] == Sample.IgnoreIndex && pack.Tokens[j] == tok.PadId && pack.Tokens[j - 1] != tok.PadId)) seg++;
                segment[j] = seg;
                if (pack.Tokens[j] == Llama3Tokenizer.BeginOfTextId) Assert.Equal(0, pos[p * 256 + j]);
            }
            for (var q = 0; q < 256; q++)
                for (var k = 0; k < 256; k++)
                    Assert.Equal(k <= q && segment[q] == segment[k], mask[(p * 256 + q) * 256 + k]);
            packedTokens.AddRange(pack.Tokens.Where((_, j) => j < 256 - (pack.SeqLens![^1] == pack.Tokens.Reverse().TakeWhile(t => t == tok.PadId).Count() ? pack.SeqLens[^1] : 0)));
        }
        Assert.Equal(expectedTokens, packedTokens);
    }

    [SharedDataFact(Alpaca, Llama3Json)]
    [Trait("Category", "Slow")]
    public void AlpacaCleanedDataset_WholeCopy_TokenizesInSeconds()
    {
        var tok = TokenizerFiles.Llama3;
        var sw = Stopwatch.StartNew();
        var ds = DatasetBuilders.AlpacaCleanedDataset(tok, source: SharedData.PathOf(Alpaca));
        var load = sw.Elapsed;
        long tokens = 0;
        for (var i = 0; i < ds.Count; i++) tokens += ds[i].Tokens.Length;
        sw.Stop();
        output.WriteLine($"alpaca_cleaned_dataset, Llama 3 tokenizer: {ds.Count} records loaded in {load.TotalSeconds:F2} s, all tokenized (chat format + labels) in {sw.Elapsed.TotalSeconds:F2} s total, {tokens} tokens ({tokens / (sw.Elapsed - load).TotalSeconds:F0} tokens/s)");
        Assert.Equal(50_921, ds.Count);
    }
}
