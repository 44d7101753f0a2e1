// Loads a Hugging Face model folder (e.g. stories260K converted by `sharptune convert llama2c`) and streams a story.
//   dotnet run --project samples/Generate -- <model folder> [prompt] [max new tokens]
using SharpTune;
using SharpTune.Eval;

if (args.Length < 1)
{
    Console.Error.WriteLine("usage: Generate <HF model folder> [prompt] [max new tokens]");
    return 2;
}
using var lm = Pretrained.Load(args[0]);
var prompt = args.Length > 1 ? args[1] : "";
var maxNew = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 256;
Console.Write(prompt);
lm.Generate(prompt, new GenerationOptions { MaxNewTokens = maxNew }, onText: Console.Write); // greedy, streamed
Console.WriteLine();
Console.WriteLine($"log p(\" girl\" | \"Once upon a time, there was a little\") = {lm.LogLikelihood("Once upon a time, there was a little", " girl"):F3}");
return 0;
