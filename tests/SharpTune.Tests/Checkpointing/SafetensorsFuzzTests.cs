// Seeded mutation fuzzing of a checkpoint SharpTune wrote itself, loaded the way generate, training and the KD
// teacher load weights (strict, dtype conversion on). Every mutant must either load tensors bit-identical to the
// original (a change the format cannot see, e.g. in __metadata__) or fail with a CheckpointFormatException naming the
// file; any other exception type, a silently different tensor, or a hang is a failure.
// Mutations follow what was seen breaking in the field: the header length field off by a few bytes, bytes flipped in
// the header, dtype relabels, truncation and appended bytes.
using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using SharpTune.Checkpointing;
using SharpTune.Native;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SharpTune.Tests.Checkpointing;

public sealed class SafetensorsFuzzTests(ITestOutputHelper output)
{
    private const int Seed = 20_240_617;

    private static readonly string[] DTypes = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "U32", "F8_E4M3", "f32"];

    [Fact]
    public async Task Load_MutatedCheckpoints_LoadIdenticalOrFailClearly()
    {
        TorchRuntime.EnsureLoaded();
        // The whole run is bounded: a mutant that makes the reader spin is a failure, not a stuck CI job.
        var run = Task.Run(Fuzz);
        var first = await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(120)));
        Assert.True(first == run, "fuzzing did not finish within 120 s: a mutant hangs the reader");
        var (loaded, rejected, failures) = await run;
        output.WriteLine($"{loaded} mutants loaded identical, {rejected} rejected, {failures.Count} failures");
        // Silent wrong loads first: they are the worst outcome.
        Assert.True(failures.Count == 0, $"{failures.Count} of {loaded + rejected + failures.Count} mutants failed:\n" +
            string.Join("\n", failures.OrderBy(f => f.Contains("loaded without error", StringComparison.Ordinal) ? 0 : 1).Take(20)));
        Assert.True(rejected > 250, $"only {rejected} mutants rejected: the generator no longer corrupts what it should");
    }

    private static (int Loaded, int Rejected, List<string> Failures) Fuzz()
    {
        using var dir = new TempDir();
        using var source = new TinyHfModel(vocab: 10, dim: 4, seed: 7);
        var original = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (var (k, t) in source.state_dict()) original[k] = Raw(t);
        var path = dir.File(SafetensorsWriter.SingleFileName);
        // A metadata entry sized so the writer pads the header with at least 4 spaces: a length field lowered into
        // the padding is the case that used to load shifted tensors.
        var pristine = Array.Empty<byte>();
        for (var note = 0; note < 8 && Padding(pristine) < 4; note++)
        {
            SafetensorsWriter.Save(path, source.state_dict(), new Dictionary<string, string> { ["format"] = "pt", ["note"] = new string('x', note) });
            pristine = File.ReadAllBytes(path);
        }
        Assert.True(Padding(pristine) >= 4, "could not make the writer pad the header with 4 spaces");
        var failures = new List<string>();
        int loaded = 0, rejected = 0;
        var watch = Stopwatch.StartNew();
        foreach (var (name, bytes) in Mutants(pristine, new Random(Seed)))
        {
            File.WriteAllBytes(path, bytes);
            var started = watch.Elapsed;
            switch (TryLoad(dir.Path, path, original, out var problem))
            {
                case true: loaded++; break;
                case false: rejected++; break;
                default: failures.Add($"{name}: {problem}"); break;
            }
            if (watch.Elapsed - started > TimeSpan.FromSeconds(5)) failures.Add($"{name}: took {(watch.Elapsed - started).TotalSeconds:F1} s");
        }
        return (loaded, rejected, failures);
    }

    /// <summary>True: loaded bit-identical. False: a clear rejection. Null: anything else, described in <paramref name="problem"/>.</summary>
    private static bool? TryLoad(string folder, string file, Dictionary<string, byte[]> original, out string problem)
    {
        problem = "";
        try
        {
            using var model = new TinyHfModel(vocab: 10, dim: 4, seed: 99);
            HfCheckpointer.LoadInto(model, folder, strict: true, convertDtype: true);
            foreach (var (k, t) in model.state_dict())
                if (!Raw(t).AsSpan().SequenceEqual(original[k]))
                {
                    problem = $"loaded without error but '{k}' differs from the original";
                    return null;
                }
            return true;
        }
        catch (CheckpointFormatException e)
        {
            if (e.FilePath != folder && e.FilePath != file) problem = $"error names '{e.FilePath}', not the checkpoint: {e.Message}";
            else if (!e.Message.StartsWith(e.FilePath, StringComparison.Ordinal)) problem = $"message does not start with the path: {e.Message}";
            else return false;
            return null;
        }
        catch (Exception e)
        {
            problem = $"{e.GetType().Name}: {e.Message}";
            return null;
        }
    }

    private static IEnumerable<(string Name, byte[] Bytes)> Mutants(byte[] pristine, Random random)
    {
        var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(pristine);
        var headerEnd = 8 + headerLength;

        // The header length field off by a little: into the padding, into the JSON, into the data.
        for (var delta = -12; delta <= 12; delta++)
        {
            if (delta == 0) continue;
            var b = (byte[])pristine.Clone();
            BinaryPrimitives.WriteUInt64LittleEndian(b, (ulong)(headerLength + delta));
            yield return ($"length {delta:+0;-0}", b);
        }
        // Random bits of the length field.
        for (var i = 0; i < 16; i++)
        {
            var b = (byte[])pristine.Clone();
            b[random.Next(8)] ^= (byte)(1 << random.Next(8));
            yield return ($"length bit flip #{i}", b);
        }
        // One to three header bytes replaced by a random byte or with one bit flipped.
        for (var i = 0; i < 400; i++)
        {
            var b = (byte[])pristine.Clone();
            var flips = 1 + random.Next(3);
            var where = new List<int>();
            for (var f = 0; f < flips; f++)
            {
                var at = 8 + random.Next(headerLength);
                where.Add(at);
                b[at] = random.Next(2) == 0 ? (byte)random.Next(256) : (byte)(b[at] ^ (1 << random.Next(8)));
            }
            if (!b.AsSpan().SequenceEqual(pristine)) yield return ($"header flip at {string.Join(",", where)}", b);
        }
        // Each tensor relabelled to each other dtype, the length field and padding rewritten to stay consistent.
        var header = Encoding.UTF8.GetString(pristine, 8, headerLength).TrimEnd(' ');
        var data = pristine.AsSpan(headerEnd).ToArray();
        var at0 = 0;
        while ((at0 = header.IndexOf("\"dtype\":\"F32\"", at0, StringComparison.Ordinal)) >= 0)
        {
            foreach (var dtype in DTypes.Where(d => d != "F32"))
                yield return ($"relabel at {at0} to {dtype}",
                    SafetensorsSpecTests.Assemble(header[..at0] + $"\"dtype\":\"{dtype}\"" + header[(at0 + 13)..], data));
            at0 += 13;
        }
        // Truncated anywhere, including inside the length field and the header.
        for (var i = 0; i < 40; i++)
        {
            var length = i < 10 ? i : random.Next(pristine.Length);
            yield return ($"truncated to {length}", pristine[..length]);
        }
        // Bytes appended (a second file concatenated, a download resumed twice).
        for (var i = 0; i < 20; i++)
        {
            var extra = new byte[1 + random.Next(i < 10 ? 8 : 64)];
            if (i % 2 == 0) random.NextBytes(extra);
            yield return ($"{extra.Length} bytes appended", [.. pristine, .. extra]);
        }
    }

    private static int Padding(byte[] file)
    {
        if (file.Length < 8) return 0;
        var end = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(file);
        var spaces = 0;
        while (file[end - 1 - spaces] == (byte)' ') spaces++;
        return spaces;
    }

    private static byte[] Raw(Tensor t)
    {
        using var c = t.contiguous();
        return c.bytes.ToArray();
    }
}
