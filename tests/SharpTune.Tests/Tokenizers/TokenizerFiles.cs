// Loads each real tokenizer once per test run (tokenizer.json files are ~10 MB).
using SharpTune.Tokenizers;

namespace SharpTune.Tests.Tokenizers;

internal static class TokenizerFiles
{
    public const string Llama3Json = "tokenizers/llama3/tokenizer.json";
    public const string Llama31Json = "tokenizers/llama3_1/tokenizer.json";
    public const string Qwen3Json = "tokenizers/qwen3/tokenizer.json";
    public const string Llama2Model = "tokenizers/llama2/tokenizer.model";
    public const string Llama2Bin = "tokenizers/llama2/tokenizer.bin";
    public const string Tok512Model = "models/stories260K/tok512.model";
    public const string Tok512Bin = "models/stories260K/tok512.bin";
    public const string Alpaca = "alpaca";

    private static readonly Lazy<Llama3Tokenizer> s_llama3 = new(() => Llama3Tokenizer.FromTokenizerJson(SharedData.PathOf(Llama3Json)));
    private static readonly Lazy<Qwen2Tokenizer> s_qwen = new(() => Qwen2Tokenizer.FromTokenizerJson(SharedData.PathOf(Qwen3Json)));
    private static readonly Lazy<Llama2Tokenizer> s_llama2 = new(() => Llama2Tokenizer.FromModel(SharedData.PathOf(Llama2Model)));
    private static readonly Lazy<Llama2Tokenizer> s_tok512 = new(() => Llama2Tokenizer.FromModel(SharedData.PathOf(Tok512Model)));

    public static Llama3Tokenizer Llama3 => s_llama3.Value;
    public static Qwen2Tokenizer Qwen => s_qwen.Value;
    public static Llama2Tokenizer Llama2 => s_llama2.Value;
    public static Llama2Tokenizer Tok512 => s_tok512.Value;
}
