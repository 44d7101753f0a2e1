// Marks a public static factory method as a config component, torchtune-style (`_component_: <name>`).
// Each area declares its own components with this attribute; the CLI/recipes assemble the registry by scanning
// the assemblies they load, so Config never has to reference every area.
namespace SharpTune.Config;

/// <summary>
/// Declares a static factory method as the builder for a config node whose <c>_component_</c> equals
/// <see cref="Name"/> (e.g. <c>sharptune.models.llama3_2.lora_llama3_2_1b</c>). YAML keys are snake_case and bind to
/// the method's parameters by name (<c>lora_rank</c> binds <c>loraRank</c>).
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
public sealed class ComponentAttribute(string name) : Attribute
{
    /// <summary>The fully qualified component name used in configs.</summary>
    public string Name { get; } = name;
}
