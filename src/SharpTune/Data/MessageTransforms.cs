// Row -> messages transforms with torchtune's semantics: AlpacaToMessages (torchtune/datasets/_alpaca.py),
// InputOutputToMessages, ShareGPTToMessages and OpenAIToMessages (torchtune/data/_messages.py).
using System.Text.Json;
using SharpTune.Tokenizers;

namespace SharpTune.Data;

/// <summary>Turns one dataset row into a conversation; throws <see cref="BadRowException"/> for unusable rows.</summary>
public interface IMessageTransform
{
    /// <summary>The conversation of <paramref name="row"/>.</summary>
    IReadOnlyList<Message> ToMessages(DataRow row);
}

/// <summary>The Stanford Alpaca prompt, exactly as torchtune and the Alpaca repository write it.</summary>
public static class AlpacaPrompt
{
    /// <summary>Prompt used when the row has a non-empty input.</summary>
    public const string WithInput =
        "Below is an instruction that describes a task, paired with an input that provides further context. " +
        "Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";

    /// <summary>Prompt used when the input is empty or absent.</summary>
    public const string NoInput =
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\n{instruction}\n\n### Response:\n";

    /// <summary>The user prompt for an instruction and optional input.</summary>
    public static string Format(string instruction, string? input) => string.IsNullOrEmpty(input)
        ? NoInput.Replace("{instruction}", instruction, StringComparison.Ordinal)
        : WithInput.Replace("{instruction}", instruction, StringComparison.Ordinal).Replace("{input}", input, StringComparison.Ordinal);
}

/// <summary>Alpaca rows (instruction, input, output) as a templated user turn and an assistant turn.</summary>
public sealed class AlpacaToMessages(bool trainOnInput = true, IReadOnlyDictionary<string, string>? columnMap = null) : IMessageTransform
{
    private readonly string _instruction = Rows.Column(columnMap, "instruction");
    private readonly string _input = Rows.Column(columnMap, "input");
    private readonly string _output = Rows.Column(columnMap, "output");

    /// <inheritdoc/>
    public IReadOnlyList<Message> ToMessages(DataRow row)
    {
        var instruction = Rows.Required(row, _instruction);
        var input = Rows.Optional(row, _input);
        var output = Rows.Required(row, _output);
        return
        [
            new Message("user", AlpacaPrompt.Format(instruction, input), Masked: !trainOnInput),
            new Message("assistant", output, Masked: false),
        ];
    }
}

/// <summary>Rows with an input column (user turn) and an output column (assistant turn).</summary>
public sealed class InputOutputToMessages(bool trainOnInput = false, IReadOnlyDictionary<string, string>? columnMap = null,
    string? newSystemPrompt = null) : IMessageTransform
{
    private readonly string _input = Rows.Column(columnMap, "input");
    private readonly string _output = Rows.Column(columnMap, "output");

    /// <inheritdoc/>
    public IReadOnlyList<Message> ToMessages(DataRow row)
    {
        var messages = new List<Message>(3);
        if (newSystemPrompt is not null) messages.Add(new Message("system", newSystemPrompt, Masked: true));
        messages.Add(new Message("user", Rows.Required(row, _input), Masked: !trainOnInput));
        messages.Add(new Message("assistant", Rows.Required(row, _output), Masked: false));
        return messages;
    }
}

/// <summary>ShareGPT rows: a list of {"from": system|human|gpt, "value": text}.</summary>
public sealed class ShareGptToMessages(bool trainOnInput = false, IReadOnlyDictionary<string, string>? columnMap = null,
    string? newSystemPrompt = null) : IMessageTransform
{
    private readonly string _conversations = Rows.Column(columnMap, "conversations");

    /// <inheritdoc/>
    public IReadOnlyList<Message> ToMessages(DataRow row)
    {
        var messages = new List<Message>();
        if (newSystemPrompt is not null) messages.Add(new Message("system", newSystemPrompt, Masked: true));
        var k = 0;
        foreach (var turn in Rows.List(row, _conversations))
        {
            k++;
            var from = Rows.Field(row, turn, "from", $"{_conversations}[{k - 1}]");
            var value = Rows.Field(row, turn, "value", $"{_conversations}[{k - 1}]");
            var role = from switch
            {
                "system" => "system",
                "human" or "user" => "user",
                "gpt" or "assistant" => "assistant",
                "tool" or "ipython" => "ipython",
                _ => throw new BadRowException(row.File, row.Row, $"{_conversations}[{k - 1}].from is '{from}', expected system, human or gpt"),
            };
            if (role == "system" && newSystemPrompt is not null) continue;
            messages.Add(new Message(role, value, Masked: role == "system" || (role != "assistant" && !trainOnInput)));
        }
        return Rows.CheckConversation(row, messages);
    }
}

/// <summary>OpenAI chat rows: a list of {"role": ..., "content": text or [{"type":"text","text":...}]}.</summary>
public sealed class OpenAiToMessages(bool trainOnInput = false, IReadOnlyDictionary<string, string>? columnMap = null,
    string? newSystemPrompt = null) : IMessageTransform
{
    private readonly string _messages = Rows.Column(columnMap, "messages");

    /// <inheritdoc/>
    public IReadOnlyList<Message> ToMessages(DataRow row)
    {
        var messages = new List<Message>();
        if (newSystemPrompt is not null) messages.Add(new Message("system", newSystemPrompt, Masked: true));
        var k = 0;
        foreach (var turn in Rows.List(row, _messages))
        {
            var where = $"{_messages}[{k++}]";
            var role = Rows.Field(row, turn, "role", where);
            if (role == "tool") role = "ipython";
            if (!Message.Roles.Contains(role))
                throw new BadRowException(row.File, row.Row, $"{where}.role is '{role}', expected one of {string.Join(", ", Message.Roles)}");
            if (role == "system" && newSystemPrompt is not null) continue;
            string content;
            if (turn.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.Array)
            {
                var parts = new List<string>();
                foreach (var part in c.EnumerateArray())
                    if (part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var t) && t.GetString() == "text")
                        parts.Add(Rows.Field(row, part, "text", where + ".content"));
                    else
                        throw new BadRowException(row.File, row.Row, $"{where}.content has a non-text part; only text is supported");
                content = string.Concat(parts);
            }
            else content = Rows.Field(row, turn, "content", where);
            messages.Add(new Message(role, content, Masked: role == "system" || (role != "assistant" && !trainOnInput)));
        }
        return Rows.CheckConversation(row, messages);
    }
}

/// <summary>Typed, located access to row values.</summary>
internal static class Rows
{
    public static string Column(IReadOnlyDictionary<string, string>? map, string key) =>
        map is not null && map.TryGetValue(key, out var v) ? v : key;

    public static void CheckParsed(DataRow row)
    {
        if (row.Values.ValueKind == JsonValueKind.Object && row.Values.TryGetProperty(DataSources.InvalidKey, out var reason))
            throw new BadRowException(row.File, row.Row, reason.GetString()!);
        if (row.Values.ValueKind != JsonValueKind.Object)
            throw new BadRowException(row.File, row.Row, $"expected an object, got {row.Values.ValueKind}");
    }

    public static string? Optional(DataRow row, string column)
    {
        CheckParsed(row);
        if (!row.Values.TryGetProperty(column, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return Text(row, v, column);
    }

    public static string Required(DataRow row, string column)
    {
        CheckParsed(row);
        if (!row.Values.TryGetProperty(column, out var v) || v.ValueKind == JsonValueKind.Null)
            throw new BadRowException(row.File, row.Row, $"missing column '{column}' (has: {string.Join(", ", row.Values.EnumerateObject().Select(p => p.Name))})");
        var s = Text(row, v, column);
        if (s.Trim().Length == 0) throw new BadRowException(row.File, row.Row, $"column '{column}' is empty");
        return s;
    }

    public static IEnumerable<JsonElement> List(DataRow row, string column)
    {
        CheckParsed(row);
        if (!row.Values.TryGetProperty(column, out var v))
            throw new BadRowException(row.File, row.Row, $"missing column '{column}'");
        if (v.ValueKind == JsonValueKind.String)
        {
            // CSV cells and some Parquet exports store the list as JSON text.
            try { v = JsonDocument.Parse(v.GetString()!).RootElement.Clone(); }
            catch (JsonException) { throw new BadRowException(row.File, row.Row, $"column '{column}' is a string that is not a JSON list"); }
        }
        if (v.ValueKind != JsonValueKind.Array)
            throw new BadRowException(row.File, row.Row, $"column '{column}' has type {v.ValueKind}, expected a list of turns");
        return v.EnumerateArray().ToList();
    }

    public static string Field(DataRow row, JsonElement obj, string name, string where)
    {
        if (obj.ValueKind != JsonValueKind.Object)
            throw new BadRowException(row.File, row.Row, $"{where} has type {obj.ValueKind}, expected an object");
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
            throw new BadRowException(row.File, row.Row, $"{where} has no '{name}'");
        return Text(row, v, $"{where}.{name}");
    }

    public static IReadOnlyList<Message> CheckConversation(DataRow row, List<Message> messages)
    {
        if (!messages.Any(m => m.Role == "assistant"))
            throw new BadRowException(row.File, row.Row, "conversation has no assistant turn");
        var last = messages.Last(m => m.Role == "assistant");
        if (last.Content.Trim().Length == 0) throw new BadRowException(row.File, row.Row, "last assistant turn is empty");
        return messages;
    }

    private static string Text(DataRow row, JsonElement v, string column)
    {
        if (v.ValueKind != JsonValueKind.String)
            throw new BadRowException(row.File, row.Row, $"column '{column}' has type {v.ValueKind}, expected a string");
        string s;
        try { s = v.GetString()!; }
        catch (InvalidOperationException) { throw new BadRowException(row.File, row.Row, $"column '{column}' is invalid Unicode (an unpaired surrogate escape or invalid UTF-8)"); }
        for (var i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { i++; continue; }
            if (char.IsSurrogate(s[i]))
                throw new BadRowException(row.File, row.Row, $"column '{column}' has an unpaired surrogate U+{(int)s[i]:X4} (invalid Unicode)");
        }
        return s;
    }
}
