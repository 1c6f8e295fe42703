using Jint;
using Jint.Native;

namespace PpoSharp.Text;

/// <summary>
/// Hugging Face's own Jinja implementation for JavaScript (<c>@huggingface/jinja</c>, the engine of transformers.js'
/// <c>apply_chat_template</c>; MIT licence, embedded at build time from npm) run by the Jint interpreter. One engine per
/// process, created on first use; parsed templates are cached per template string. Jint engines are not thread-safe,
/// so every call holds a lock.
/// </summary>
internal sealed class JinjaEngine
{
    private const string ScriptResource = "PpoSharp.Text.huggingface-jinja.cjs";
    private const int MaxRecursion = 400;
    private static readonly Lazy<JinjaEngine> Instance = new(() => new JinjaEngine());

    private readonly Engine _engine;
    private readonly Dictionary<string, JsValue> _templates = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    private JinjaEngine()
    {
        _engine = new Engine(o => o.LimitRecursion(MaxRecursion));
        _engine.Execute("var module = { exports: {} }; var exports = module.exports;");
        _engine.Execute(ReadScript(), "huggingface-jinja.cjs");
        _engine.Execute("""
            function ppoParse(source) { return new module.exports.Template(source); }
            function ppoRender(template, contextJson) { return template.render(JSON.parse(contextJson)); }
            """);
    }

    public static JinjaEngine Shared => Instance.Value;

    /// <summary>
    /// Renders <paramref name="template"/> with the variables of the JSON object <paramref name="contextJson"/> (parsed
    /// inside the engine, so values are JavaScript-native). Template errors, <c>raise_exception</c> included, become a
    /// <see cref="PpoSharpException"/> "chat template: message".
    /// </summary>
    public string Render(string template, string contextJson)
    {
        lock (_gate)
        {
            try
            {
                return _engine.Invoke("ppoRender", Parsed(template), contextJson).AsString();
            }
            catch (JintException e)
            {
                throw Error(e);
            }
        }
    }

    private JsValue Parsed(string template)
    {
        if (!_templates.TryGetValue(template, out var parsed))
            _templates[template] = parsed = _engine.Invoke("ppoParse", template);
        return parsed;
    }

    private static PpoSharpException Error(JintException e)
    {
        var message = e is Jint.Runtime.RecursionDepthOverflowException
            ? $"recursion deeper than {MaxRecursion} calls"
            : string.Join(' ', e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return new PpoSharpException($"chat template: {message}", e);
    }

    private static string ReadScript()
    {
        using var stream = typeof(JinjaEngine).Assembly.GetManifestResourceStream(ScriptResource)
            ?? throw new InvalidOperationException($"embedded resource {ScriptResource} is missing (the build embeds it from npm)");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
