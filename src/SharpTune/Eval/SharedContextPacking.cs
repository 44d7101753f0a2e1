// Shared-context scoring: requests with the same context ids (hellaswag's four endings, the choices of any
// multiple-choice doc) become one sequence
//     [ctx_0 .. ctx_{c-1} | k1_0 .. k1_{n1-2} | k2_0 .. k2_{n2-2} | ...]
// under a tree mask: the context is causal, each continuation segment sees the whole context and itself causally,
// never another segment; position ids restart at c for each segment. The logits at the context's last position
// predict every continuation's first token; segment i's position j predicts k_i[j + 1]. Each continuation therefore
// sees exactly the tokens and positions it sees in the harness's separate row, and the context runs once.
// A request is packed only when the harness would not truncate it (c + n <= max_length + 1); packs are split so no
// row exceeds max_length tokens. Inspired by prefix-sharing/tree attention in speculative decoding (SpecInfer,
// Medusa) and the harness's own one-token-continuation cache (lm_eval/models/utils.py, Collator group_by="contexts").
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Eval;

/// <summary>Builds tree-masked rows for requests that share a context.</summary>
internal static class SharedContextPacking
{
    /// <summary>Groups requests by context and emits packed rows (one-member groups and truncated requests stay plain).</summary>
    public static IEnumerable<ScoringRow> Pack(IReadOnlyList<EncodedRequest> requests, int maxLength)
    {
        var groups = new Dictionary<string, List<int>>();
        var order = new List<string>();
        for (var i = 0; i < requests.Count; i++)
        {
            var r = requests[i];
            if (r.Context.Count + r.Continuation.Count > maxLength + 1)
            {
                yield return ScoringRow.Plain(i, r, maxLength); // truncated: must match the harness's own row
                continue;
            }
            var key = string.Join(',', r.Context);
            if (!groups.TryGetValue(key, out var list))
            {
                groups[key] = list = [];
                order.Add(key);
            }
            list.Add(i);
        }

        foreach (var key in order)
        {
            var members = groups[key];
            var contextLength = requests[members[0]].Context.Count;
            var current = new List<int>();
            var length = contextLength;
            foreach (var m in members)
            {
                var extra = requests[m].Continuation.Count - 1;
                if (current.Count > 0 && length + extra > maxLength)
                {
                    yield return Build(current, requests, maxLength);
                    current = [];
                    length = contextLength;
                }
                current.Add(m);
                length += extra;
            }
            if (current.Count > 0) yield return Build(current, requests, maxLength);
        }
    }

    private static ScoringRow Build(List<int> members, IReadOnlyList<EncodedRequest> requests, int maxLength)
    {
        if (members.Count == 1) return ScoringRow.Plain(members[0], requests[members[0]], maxLength);

        var context = requests[members[0]].Context;
        var c = context.Count;
        var tokens = new List<long>(context.Select(x => (long)x));
        var positions = new List<long>(Enumerable.Range(0, c).Select(x => (long)x));
        var segments = new List<(int Start, int Length)>();
        var targets = new List<ScoringTarget>();
        foreach (var m in members)
        {
            var cont = requests[m].Continuation;
            var start = tokens.Count;
            var segLength = cont.Count - 1;
            for (var j = 0; j < segLength; j++)
            {
                tokens.Add(cont[j]);
                positions.Add(c + j);
            }
            segments.Add((start, segLength));
            // k[0] is predicted by the context's last position, k[j] (j >= 1) by segment position j - 1.
            var predictedAt = new int[cont.Count];
            predictedAt[0] = c - 1;
            for (var j = 1; j < cont.Count; j++) predictedAt[j] = start + j - 1;
            targets.Add(new ScoringTarget(m, predictedAt, cont.Select(x => (long)x).ToArray()));
        }
        return new ScoringRow
        {
            Tokens = tokens.ToArray(),
            Positions = positions.ToArray(),
            ContextLength = c,
            Segments = segments,
            Targets = targets,
        };
    }

    /// <summary>The tree masks of packed rows, padded to <paramref name="s"/>: [b, s, s] bool, true = may attend.</summary>
    public static Tensor BuildMask(IReadOnlyList<ScoringRow> rows, int s)
    {
        var data = new bool[rows.Count * s * s];
        for (var b = 0; b < rows.Count; b++)
        {
            var row = rows[b];
            var baseIndex = b * s * s;
            var c = row.ContextLength;
            for (var q = 0; q < c; q++)
                for (var k = 0; k <= q; k++) data[baseIndex + q * s + k] = true; // causal context
            foreach (var (start, length) in row.Segments)
                for (var q = start; q < start + length; q++)
                {
                    var offset = baseIndex + q * s;
                    for (var k = 0; k < c; k++) data[offset + k] = true;        // the whole context
                    for (var k = start; k <= q; k++) data[offset + k] = true;   // itself, causally
                }
            // Padding rows attend to themselves only, so the softmax stays finite; their logits are never read.
            for (var q = row.Tokens.Length; q < s; q++) data[baseIndex + q * s + q] = true;
        }
        return torch.tensor(data, new long[] { rows.Count, s, s }); // [b, s, s]
    }

    /// <summary>Position ids of packed rows, padded with 0: [b, s] int64.</summary>
    public static Tensor BuildPositions(IReadOnlyList<ScoringRow> rows, int s)
    {
        var data = new long[rows.Count * s];
        for (var b = 0; b < rows.Count; b++)
            Array.Copy(rows[b].Positions!, 0, data, b * s, rows[b].Positions!.Length);
        return torch.tensor(data, new long[] { rows.Count, s }); // [b, s]
    }
}
