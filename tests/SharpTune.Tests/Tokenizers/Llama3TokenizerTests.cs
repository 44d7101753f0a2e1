using SharpTune.Tokenizers;
using static SharpTune.Tests.Tokenizers.TokenizerFiles;

namespace SharpTune.Tests.Tokenizers;

public sealed class Llama3TokenizerTests
{
    [SharedDataFact(Llama3Json)]
    public void Encode_IssueSentence_GivesPublishedIds()
    {
        var ids = TokenizerFiles.Llama3.Encode("Hello world! Below is an instruction that describes a task.", addBos: false, addEos: false);
        Assert.Equal([9906, 1917, 0, 21883, 374, 459, 7754, 430, 16964, 264, 3465, 13], ids);
    }
}
