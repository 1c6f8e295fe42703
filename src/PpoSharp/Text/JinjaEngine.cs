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
    /// <summary>Limits on one render, so that a hostile template (<c>range(10**9)</c>) cannot hang or exhaust the process.</summary>
    public static readonly TimeSpan MaxTime = TimeSpan.FromSeconds(10);
    public const long MaxMemoryBytes = 256L << 20;
    /// <summary>Longest rendered text: 4 M characters, more than any context window holds in tokens.</summary>
    public const int MaxOutputChars = 4 << 20;
    private static readonly Lazy<JinjaEngine> Instance = new(() => new JinjaEngine());

    private readonly Engine _engine;
    private readonly Dictionary<string, JsValue> _templates = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    private JinjaEngine()
    {
        _engine = new Engine(o => o.LimitRecursion(MaxRecursion).TimeoutInterval(MaxTime).LimitMemory(MaxMemoryBytes));
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
    /// <see cref="PpoSharpException"/> "chat template: message", followed by " (<paramref name="source"/>)" when given; so
    /// do a render past <see cref="MaxTime"/>, <see cref="MaxMemoryBytes"/> or <see cref="MaxOutputChars"/>.
    /// </summary>
    public string Render(string template, string contextJson, string? source = null)
    {
        string text;
        lock (_gate)
        {
            try
            {
                text = _engine.Invoke("ppoRender", Parsed(template), contextJson).AsString();
            }
            catch (Exception e) when (e is JintException or TimeoutException)
            {
                throw Error(e, source);
            }
        }
        if (text.Length > MaxOutputChars)
            throw new PpoSharpException($"chat template: the rendered text is {text.Length} characters, more than the {MaxOutputChars} any context holds{Where(source)}");
        return text;
    }

    private static string Where(string? source) => source is null ? "" : $" ({source})";

    private JsValue Parsed(string template)
    {
        if (!_templates.TryGetValue(template, out var parsed))
            _templates[template] = parsed = _engine.Invoke("ppoParse", template);
        return parsed;
    }

    private static PpoSharpException Error(Exception e, string? source)
    {
        var message = e switch
        {
            Jint.Runtime.RecursionDepthOverflowException => $"recursion deeper than {MaxRecursion} calls",
            TimeoutException => $"rendering ran past the {MaxTime.TotalSeconds:0} s limit",
            Jint.Runtime.MemoryLimitExceededException => $"rendering used more than the {MaxMemoryBytes >> 20} MiB memory limit",
            _ => string.Join(' ', e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)),
        };
        return new PpoSharpException($"chat template: {message}{Where(source)}", e);
    }

    private static string ReadScript()
    {
        using var stream = typeof(JinjaEngine).Assembly.GetManifestResourceStream(ScriptResource)
            ?? throw new InvalidOperationException($"embedded resource {ScriptResource} is missing (the build embeds it from npm)");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
