// What a recipe declares about the top-level keys it reads, so `validate` can flag unknown keys (with a suggestion),
// missing required keys and values of the wrong type before a run starts.
namespace SharpTune.Config;

/// <summary>A top-level config key a recipe reads.</summary>
/// <param name="Name">The snake_case key (<c>batch_size</c>).</param>
/// <param name="Type">
/// The .NET type the value must bind to: <c>int</c>, <c>string</c>, an enum, a list, or the type a component node
/// must build (e.g. an optimizer); <c>object</c> accepts any value (its components are still checked).
/// </param>
/// <param name="Required">True when the key must be present and not null.</param>
/// <param name="Description">One line for documentation and <c>ls</c>.</param>
/// <param name="Minimum">For a whole-number key: the smallest value accepted (null: any).</param>
public sealed record ConfigKeySpec(string Name, Type Type, bool Required, string? Description = null, long? Minimum = null);
