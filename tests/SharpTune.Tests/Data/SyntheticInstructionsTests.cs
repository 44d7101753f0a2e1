using SharpTune.Data.Synthetic;

namespace SharpTune.Tests.Data;

public sealed class SyntheticInstructionsTests
{
    [Fact]
    public void Generate_SameSeed_SameRecords()
    {
        Assert.Equal(SyntheticInstructions.Generate(3, 50), SyntheticInstructions.Generate(3, 50));
        Assert.NotEqual(SyntheticInstructions.Generate(3, 50), SyntheticInstructions.Generate(4, 50));
    }

    [Fact]
    public void Generate_TrainAndTest_UseDisjointWords()
    {
        var train = SyntheticInstructions.Generate(1, 2000).Select(r => r.Input).ToHashSet();
        var test = SyntheticInstructions.Generate(1, 500, "test").Select(r => r.Input).ToHashSet();
        Assert.Empty(train.Intersect(test));
    }

    [Theory]
    [InlineData("Reverse the letters of the word.", "kato", "otak")]
    [InlineData("Sort the letters of the word alphabetically.", "miru", "imru")]
    [InlineData("Count the vowels in the word.", "kasetu", "3")]
    [InlineData("Write the first and the last letter.", "rinobo", "ro")]
    public void Operations_HandChecked_Answers(string instruction, string input, string expected)
    {
        var op = SyntheticInstructions.Operations.Single(o => o.Instruction == instruction);
        Assert.Equal(expected, op.Apply(input));
    }

    [Fact]
    public void MultipleChoice_Items_HaveDistinctChoicesAndCorrectGold()
    {
        var items = SyntheticInstructions.MultipleChoice(seed: 5, count: 100);
        Assert.Equal(100, items.Count);
        foreach (var item in items)
        {
            Assert.Equal(4, item.Choices.Distinct().Count());
            var op = SyntheticInstructions.Operations.Single(o => o.Instruction == item.Instruction);
            Assert.Equal(op.Apply(item.Input), item.Choices[item.Gold]);
        }
        // Gold positions are spread, not always first.
        Assert.True(items.Select(i => i.Gold).Distinct().Count() == 4);
    }

    [Fact]
    public void CharTokenizer_RoundTrip_AndSpecialIds()
    {
        var tok = new CharTokenizer();
        var ids = tok.Encode("Hello, world!\n42");
        Assert.Equal(tok.BosId, ids[0]);
        Assert.Equal(tok.EosId, ids[^1]);
        Assert.Equal("Hello, world!\n42", tok.Decode(ids));
        Assert.Throws<ArgumentException>(() => tok.Encode("é"));
    }
}
