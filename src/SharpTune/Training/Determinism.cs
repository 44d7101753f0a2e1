// Seeding and deterministic data order. One seed drives libtorch's CPU generator (weights, dropout) and the
// data-loader shuffle; the shuffle of epoch e is a pure function of (seed, e) -- like torch's DistributedSampler
// with set_epoch -- so a resumed run reproduces the order without storing a .NET Random's internal state.
// Bit-identical CPU runs also need a fixed thread count: libtorch's reductions split work by thread.
// References: torch.manual_seed, torch.utils.data.DistributedSampler (seed + epoch), torchtune training/seed.py.
using TorchSharp;

namespace SharpTune.Training;

/// <summary>Seeds every random source a recipe uses.</summary>
public static class Determinism
{
    /// <summary>
    /// Seeds libtorch's default generator (and CUDA's, when present). Returns the seed used: a fresh random one when
    /// <paramref name="seed"/> is null, so it can be logged and saved in the recipe state.
    /// </summary>
    public static long Seed(long? seed)
    {
        var value = seed ?? Random.Shared.NextInt64(0, int.MaxValue);
        if (value < 0) throw new ArgumentOutOfRangeException(nameof(seed), seed, "seed must be >= 0");
        torch.manual_seed(value);
        if (torch.cuda.is_available()) torch.cuda.manual_seed_all(value);
        return value;
    }

    /// <summary>
    /// The order of <paramref name="count"/> examples in <paramref name="epoch"/>: a Fisher-Yates shuffle seeded from
    /// (seed, epoch) with our own SplitMix64 generator, so the order does not depend on the .NET version.
    /// </summary>
    public static int[] ShuffledOrder(int count, long seed, int epoch)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "count must be >= 0");
        var order = new int[count];
        for (var i = 0; i < count; i++) order[i] = i;
        var state = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)epoch + 1);
        for (var i = count - 1; i > 0; i--)
        {
            var j = (int)(NextUInt64(ref state) % (ulong)(i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    // SplitMix64 (Steele, Lea, Flood 2014): small, fast, and fully specified by its constants.
    private static ulong NextUInt64(ref ulong state)
    {
        unchecked
        {
            var z = state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }
}
