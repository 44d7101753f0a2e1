namespace SharpTune.Tests;

public sealed class SharedDataTests
{
    [SharedDataFact("models/stories260K/SOURCE.txt")]
    public void Has_WhenSharedDataPresent_FindsStories260K() =>
        Assert.True(File.Exists(SharedData.PathOf("models/stories260K/stories260K.bin")));

    [Fact]
    public void RepoRoot_Always_ContainsSolution() =>
        Assert.True(File.Exists(Path.Combine(SharedData.RepoRoot, "SharpTune.slnx")));
}
