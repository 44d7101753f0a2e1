// Turns config nodes into .NET values: scalars into numbers, bools, strings and enums; lists into arrays and lists;
// maps into dictionaries or constructor-bound records; `_component_` maps into the result of their factory, with
// snake_case keys bound to camelCase parameters. The same walk runs in two modes: Check (collects every problem and
// builds nothing, for `validate`) and Build (instantiates, stopping at the first problem).
// Reference: torchtune/config/_instantiate.py, torchtune/config/_validate.py (binds kwargs to signatures).
using System.Collections;
using System.Globalization;
using System.Reflection;

namespace SharpTune.Config;

/// <summary>Binds config nodes to parameter types and instantiates components.</summary>
public sealed class ConfigBinder(ComponentRegistry registry)
{
    /// <summary>The registry used for <c>_component_</c> names.</summary>
    public ComponentRegistry Registry { get; } = registry;

    /// <summary>
    /// Converts <paramref name="node"/> to <paramref name="target"/>, instantiating components.
    /// For a component node, <paramref name="positional"/> fills the factory's first parameters and
    /// <paramref name="named"/> fills parameters by name (the recipe's extra arguments, e.g. model parameters).
    /// </summary>
    /// <exception cref="ConfigException">The node does not fit the type (names key, location, expected vs actual).</exception>
    public object? Build(ConfigNode node, Type target, string path,
        IReadOnlyList<object?>? positional = null, IReadOnlyDictionary<string, object?>? named = null, bool allowNull = false) =>
        Bind(node, target, path, new Pass(Build: true, []), allowNull, positional, named);

    /// <summary>Checks that <paramref name="node"/> fits <paramref name="target"/> without building anything.</summary>
    public void Check(ConfigNode node, Type target, string path, List<ConfigProblem> problems, bool allowNull = false) =>
        Bind(node, target, path, new Pass(Build: false, problems), allowNull, null, null);

    /// <summary>
    /// True for types a YAML value alone can provide (numbers, strings, bools, enums, lists and maps of them).
    /// A required parameter of any other type may be supplied by the recipe, so <c>validate</c> does not call it missing.
    /// </summary>
    public static bool IsConfigType(Type t)
    {
        t = Nullable.GetUnderlyingType(t) ?? t;
        if (t.IsPrimitive || t.IsEnum || t == typeof(string) || t == typeof(decimal) || t == typeof(ConfigNode)) return true;
        if (ElementType(t) is { } e) return IsConfigType(e);
        if (DictionaryValueType(t) is { } v) return IsConfigType(v);
        return false;
    }

    private sealed record Pass(bool Build, List<ConfigProblem> Problems);

    private static object? Report(Pass pass, ConfigNode node, string path, string message)
    {
        var problem = new ConfigProblem(node.Location, path, message);
        if (pass.Build) throw new ConfigException([problem]);
        pass.Problems.Add(problem);
        return null;
    }

    private object? Bind(ConfigNode node, Type target, string path, Pass pass, bool allowNull,
        IReadOnlyList<object?>? positional, IReadOnlyDictionary<string, object?>? named)
    {
        if (target == typeof(ConfigNode)) return node;
        if (node.IsUnresolved)
        {
            // Resolution failed and was reported where it was found; do not report the same value twice.
            return pass.Build ? Report(pass, node, path, $"unresolved interpolation {node.Describe()}") : null;
        }
        if (node.IsComponent) return BindComponent(node, target, path, pass, positional, named);
        var underlying = Nullable.GetUnderlyingType(target);
        if (node.Kind == ConfigNodeKind.Null)
        {
            if (underlying is not null || target == typeof(object) || (allowNull && !target.IsValueType)) return null;
            return Report(pass, node, path, $"expected {TypeName(target)}, got null");
        }
        var t = underlying ?? target;
        if (t == typeof(object)) return BindNatural(node, path, pass);
        if (ElementType(t) is { } elementType)
        {
            if (node.Kind != ConfigNodeKind.List) return Report(pass, node, path, $"expected a list of {TypeName(elementType)}, got {node.Describe()}");
            var items = new List<object?>();
            for (var i = 0; i < node.Items.Count; i++)
                items.Add(Bind(node.Items[i], elementType, $"{path}[{i}]", pass, false, null, null));
            if (!pass.Build) return null;
            if (t.IsArray)
            {
                var array = Array.CreateInstance(elementType, items.Count);
                for (var i = 0; i < items.Count; i++) array.SetValue(items[i], i);
                return array;
            }
            var list = (IList)Activator.CreateInstance(typeof(List<>).MakeGenericType(elementType))!;
            foreach (var item in items) list.Add(item);
            return list;
        }
        if (DictionaryValueType(t) is { } valueType)
        {
            if (node.Kind != ConfigNodeKind.Map) return Report(pass, node, path, $"expected a map of {TypeName(valueType)}, got {node.Describe()}");
            var dict = pass.Build ? (IDictionary)Activator.CreateInstance(typeof(Dictionary<,>).MakeGenericType(typeof(string), valueType))! : null;
            foreach (var (k, v) in node.Entries)
            {
                var value = Bind(v, valueType, Join(path, k), pass, false, null, null);
                dict?.Add(k, value);
            }
            return dict;
        }
        if (node.Kind == ConfigNodeKind.Scalar)
        {
            if (TryScalar(node.Text!, t, out var value, out var expected)) return value;
            if (ElementType(t) is null && t.GetConstructor([typeof(string)]) is { } fromString)
            {
                // Types built from text (a device name "cpu", a Uri): checked only when built.
                if (!pass.Build) return null;
                try { return fromString.Invoke([node.Text]); }
                catch (TargetInvocationException e) when (e.InnerException is not null)
                {
                    return Report(pass, node, path, $"{node.Describe()} is not a valid {TypeName(t)}: {e.InnerException.Message}");
                }
            }
            return Report(pass, node, path, $"expected {expected}, got {node.Describe()}");
        }
        if (node.Kind == ConfigNodeKind.Map && t.IsClass && !t.IsAbstract && t != typeof(string)
            && t.GetConstructors().OrderByDescending(c => c.GetParameters().Length).FirstOrDefault() is { } ctor)
            return BindCall(ctor, node, path, pass, t.Name, null, null);
        return Report(pass, node, path, $"expected {TypeName(target)}, got {node.Describe()}");
    }

    private object? BindNatural(ConfigNode node, string path, Pass pass)
    {
        switch (node.Kind)
        {
            case ConfigNodeKind.Scalar:
                var text = node.Text!;
                if (node.IsQuoted) return text;
                if (TryScalar(text, typeof(bool), out var b, out _)) return b;
                if (TryScalar(text, typeof(long), out var l, out _)) return l;
                if (TryScalar(text, typeof(double), out var d, out _)) return d;
                return text;
            case ConfigNodeKind.List:
                var items = new List<object?>();
                for (var i = 0; i < node.Items.Count; i++) items.Add(Bind(node.Items[i], typeof(object), $"{path}[{i}]", pass, true, null, null));
                return items;
            default:
                var map = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var (k, v) in node.Entries) map[k] = Bind(v, typeof(object), Join(path, k), pass, true, null, null);
                return map;
        }
    }

    private object? BindComponent(ConfigNode node, Type target, string path, Pass pass,
        IReadOnlyList<object?>? positional, IReadOnlyDictionary<string, object?>? named)
    {
        node.TryGet(ConfigNode.ComponentKey, out var nameNode);
        var name = node.ComponentName;
        if (name is null) return Report(pass, nameNode, Join(path, ConfigNode.ComponentKey), $"expected a component name, got {nameNode.Describe()}");
        if (!Registry.TryGet(name, out var factory))
            return Report(pass, nameNode, Join(path, ConfigNode.ComponentKey), $"unknown component '{name}'{Names.Suggest(name, Registry.Names)}");
        var wanted = Nullable.GetUnderlyingType(target) ?? target;
        if (wanted != typeof(object) && !wanted.IsAssignableFrom(factory.ReturnType))
            Report(pass, nameNode, Join(path, ConfigNode.ComponentKey), $"component '{name}' builds {TypeName(factory.ReturnType)}, but this key needs {TypeName(target)}");
        return BindCall(factory, node, path, pass, $"component '{name}'", positional, named);
    }

    // Binds a map's keys to a method's or constructor's parameters and, in Build mode, calls it.
    private object? BindCall(MethodBase method, ConfigNode node, string path, Pass pass, string what,
        IReadOnlyList<object?>? positional, IReadOnlyDictionary<string, object?>? named)
    {
        var parameters = method.GetParameters();
        var args = new object?[parameters.Length];
        var supplied = new bool[parameters.Length];
        var keys = parameters.Select(p => Names.ToSnakeCase(p.Name!)).ToArray();
        if (positional is not null)
        {
            if (positional.Count > parameters.Length)
                throw new ArgumentException($"{what} takes {parameters.Length} parameters, the recipe passed {positional.Count} positional arguments");
            for (var i = 0; i < positional.Count; i++) { args[i] = positional[i]; supplied[i] = true; }
        }
        if (named is not null)
            foreach (var (argName, value) in named)
            {
                var i = Array.FindIndex(parameters, p => p.Name == argName || keys[Array.IndexOf(parameters, p)] == argName);
                if (i < 0) throw new ArgumentException($"{what} has no parameter '{argName}' (parameters: {string.Join(", ", keys)})");
                args[i] = value;
                supplied[i] = true;
            }
        foreach (var (key, child) in node.Entries)
        {
            if (key == ConfigNode.ComponentKey) continue;
            var i = Array.FindIndex(keys, k => k == key);
            if (i < 0) i = Array.FindIndex(parameters, p => p.Name == key);
            if (i < 0)
            {
                Report(pass, child, Join(path, key), $"unknown key '{key}' for {what}{Names.Suggest(key, keys)}; it takes: {string.Join(", ", keys)}");
                continue;
            }
            if (supplied[i])
            {
                Report(pass, child, Join(path, key), $"'{key}' is supplied by the recipe and must not be set in the config");
                continue;
            }
            args[i] = Bind(child, parameters[i].ParameterType, Join(path, key), pass, AllowsNull(parameters[i]), null, null);
            supplied[i] = true;
        }
        for (var i = 0; i < parameters.Length; i++)
        {
            if (supplied[i]) continue;
            var p = parameters[i];
            if (p.IsOptional) { args[i] = p.HasDefaultValue ? p.DefaultValue : DefaultOf(p.ParameterType); continue; }
            if (pass.Build || IsConfigType(p.ParameterType))
                Report(pass, node, Join(path, keys[i]), $"missing required key '{keys[i]}' ({TypeName(p.ParameterType)}) for {what}" +
                    (pass.Build && !IsConfigType(p.ParameterType) ? " (not in the config and not supplied by the recipe)" : ""));
        }
        if (!pass.Build) return null;
        try
        {
            return method is ConstructorInfo ctor ? ctor.Invoke(args) : method.Invoke(null, args);
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            if (e.InnerException is ConfigException) throw e.InnerException;
            throw new ConfigException([new ConfigProblem(node.Location, path, $"{what} failed: {e.InnerException.Message}")], e.InnerException);
        }
    }

    private static bool AllowsNull(ParameterInfo p) =>
        !p.ParameterType.IsValueType && new NullabilityInfoContext().Create(p).WriteState == NullabilityState.Nullable; // the context is not thread-safe

    private static object? DefaultOf(Type t) => t.IsValueType ? Activator.CreateInstance(t) : null;

    private static string Join(string path, string key) => path.Length == 0 ? key : $"{path}.{key}";

    /// <summary>Converts scalar text to a primitive, string or enum type.</summary>
    internal static bool TryScalar(string text, Type t, out object? value, out string expected)
    {
        value = null;
        expected = TypeName(t);
        var inv = CultureInfo.InvariantCulture;
        var digits = text.Replace("_", "", StringComparison.Ordinal);
        if (t == typeof(string)) { value = text; return true; }
        if (t == typeof(bool))
        {
            expected = "true or false";
            if (text is "true" or "True" or "TRUE") { value = true; return true; }
            if (text is "false" or "False" or "FALSE") { value = false; return true; }
            return false;
        }
        if (t.IsEnum)
        {
            var norm = Normalize(text);
            foreach (var n in Enum.GetNames(t))
                if (Normalize(n) == norm || Normalize(Names.ToSnakeCase(n)) == norm) { value = Enum.Parse(t, n); return true; }
            expected = $"one of {string.Join(", ", Enum.GetNames(t).Select(n => n.ToLowerInvariant()))}";
            return false;
        }
        if (t == typeof(int)) { var ok = int.TryParse(digits, NumberStyles.Integer, inv, out var v); value = v; return ok; }
        if (t == typeof(long)) { var ok = long.TryParse(digits, NumberStyles.Integer, inv, out var v); value = v; return ok; }
        if (t == typeof(short)) { var ok = short.TryParse(digits, NumberStyles.Integer, inv, out var v); value = v; return ok; }
        if (t == typeof(byte)) { var ok = byte.TryParse(digits, NumberStyles.Integer, inv, out var v); value = v; return ok; }
        if (t == typeof(uint)) { var ok = uint.TryParse(digits, NumberStyles.Integer, inv, out var v); value = v; return ok; }
        if (t == typeof(ulong)) { var ok = ulong.TryParse(digits, NumberStyles.Integer, inv, out var v); value = v; return ok; }
        if (t == typeof(double) || t == typeof(float) || t == typeof(decimal))
        {
            double d;
            switch (digits.ToLowerInvariant())
            {
                case ".inf" or "+.inf" or "inf" or "+inf": d = double.PositiveInfinity; break;
                case "-.inf" or "-inf": d = double.NegativeInfinity; break;
                case ".nan" or "nan": d = double.NaN; break;
                default:
                    if (!double.TryParse(digits, NumberStyles.Float, inv, out d)) return false;
                    break;
            }
            if (t == typeof(double)) value = d;
            else if (t == typeof(float)) value = (float)d;
            else
            {
                if (!decimal.TryParse(digits, NumberStyles.Float, inv, out var m)) return false;
                value = m;
            }
            return true;
        }
        return false;
    }

    private static string Normalize(string s) => s.Replace("_", "", StringComparison.Ordinal).Replace("-", "", StringComparison.Ordinal).ToLowerInvariant();

    /// <summary>The element type of arrays and list-like interfaces/classes, else null.</summary>
    internal static Type? ElementType(Type t)
    {
        if (t == typeof(string)) return null;
        if (t.IsArray) return t.GetElementType();
        if (!t.IsGenericType) return null;
        var def = t.GetGenericTypeDefinition();
        if (def == typeof(List<>) || def == typeof(IList<>) || def == typeof(IReadOnlyList<>) || def == typeof(IEnumerable<>)
            || def == typeof(ICollection<>) || def == typeof(IReadOnlyCollection<>))
            return t.GetGenericArguments()[0];
        return null;
    }

    private static Type? DictionaryValueType(Type t)
    {
        if (!t.IsGenericType) return null;
        var def = t.GetGenericTypeDefinition();
        var args = t.GetGenericArguments();
        if ((def == typeof(Dictionary<,>) || def == typeof(IDictionary<,>) || def == typeof(IReadOnlyDictionary<,>)) && args[0] == typeof(string))
            return args[1];
        return null;
    }

    /// <summary>A short C#-style name for messages: <c>int</c>, <c>List&lt;string&gt;</c>, <c>Dtype (enum)</c>.</summary>
    public static string TypeName(Type t)
    {
        if (Nullable.GetUnderlyingType(t) is { } u) return TypeName(u) + " or null";
        if (t == typeof(int)) return "int";
        if (t == typeof(long)) return "long";
        if (t == typeof(float)) return "float";
        if (t == typeof(double)) return "double";
        if (t == typeof(bool)) return "bool";
        if (t == typeof(string)) return "string";
        if (t == typeof(object)) return "any value";
        if (t.IsArray) return TypeName(t.GetElementType()!) + "[]";
        if (t.IsGenericType)
            return $"{t.Name[..t.Name.IndexOf('`')]}<{string.Join(", ", t.GetGenericArguments().Select(TypeName))}>";
        return t.Name;
    }
}
