using System.Reflection;
using Xunit.Abstractions;
using Xunit.Sdk;

[assembly: TestFramework("PpoSharp.Tests.TempFoldersFramework", "PpoSharp.Tests")]

namespace PpoSharp.Tests;

/// <summary>
/// Test temporary folders that clean up after themselves. A test run owns <c>/tmp/ppo-sharp-tests/run-PID/</c>
/// (held by a lock file while it runs); each test's <see cref="TestSupport.TempDir"/> folders go into one folder named
/// after the test. A test that passes (or is skipped) has its folder deleted when its class finishes (so that a class's
/// lazily built data, made during its first test, serves the class's later tests); a test that fails keeps its folder
/// for inspection. <see cref="TestSupport.SharedTempDir"/> folders (data shared by several classes) and, when every test
/// passed, the whole run folder are deleted when the run ends. At the start, run folders of runs that have ended
/// (their lock is free) are deleted, and so are folders of the older layout not touched for a day.
/// </summary>
internal static class TempFolders
{
    public static readonly string Root = Path.Combine(Path.GetTempPath(), "ppo-sharp-tests");
    private const string LockFile = ".lock";

    private static readonly object Gate = new();
    private static string? _run;
    private static FileStream? _lock;
    private static int _tests;
    private static string? _current;                   // the running test's folder name
    private static readonly List<string> Passed = [];  // folders to delete when the class finishes
    private static bool _anyFailed;

    /// <summary>The run's folder, created (and stale runs cleared) on first use.</summary>
    private static string Run
    {
        get
        {
            lock (Gate)
            {
                if (_run is not null) return _run;
                Directory.CreateDirectory(Root);
                ClearStale();
                _run = Path.Combine(Root, $"run-{Environment.ProcessId}");
                if (Directory.Exists(_run)) Directory.Delete(_run, recursive: true);    // a dead run with our (reused) PID
                Directory.CreateDirectory(_run);
                _lock = new FileStream(Path.Combine(_run, LockFile), FileMode.Create, FileAccess.ReadWrite, FileShare.None);
                return _run;
            }
        }
    }

    /// <summary>A new empty folder inside the running test's folder (or the shared one outside a test).</summary>
    public static string New()
    {
        string owner;
        lock (Gate) owner = _current ?? "shared";
        var dir = Path.Combine(Run, owner, Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>A new empty folder that lives until the run ends (data built once and used by several test classes).</summary>
    public static string Shared()
    {
        var dir = Path.Combine(Run, "shared", Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    internal static void TestStarting(string displayName)
    {
        lock (Gate) _current = $"{++_tests:D4}-{Sanitize(displayName)}";
    }

    internal static void TestEnded(bool failed)
    {
        lock (Gate)
        {
            if (_current is null) return;
            if (failed) _anyFailed = true;
            else Passed.Add(_current);
            _current = null;
        }
    }

    internal static void ClassFinished()
    {
        string[] done;
        lock (Gate) { done = [.. Passed]; Passed.Clear(); }
        if (_run is null) return;
        foreach (var name in done) Delete(Path.Combine(_run, name));
    }

    internal static void RunFinished()
    {
        ClassFinished();
        lock (Gate)
        {
            if (_run is null) return;
            Delete(Path.Combine(_run, "shared"));
            _lock?.Dispose();
            if (!_anyFailed) Delete(_run);
            else Console.Error.WriteLine($"ppo-sharp tests: the folders of failed tests are kept in {_run}");
        }
    }

    private static void ClearStale()
    {
        foreach (var dir in Directory.GetDirectories(Root))
        {
            bool isRun = Path.GetFileName(dir).StartsWith("run-", StringComparison.Ordinal);
            if (isRun ? !IsLocked(dir) : Directory.GetLastWriteTimeUtc(dir) < DateTime.UtcNow.AddDays(-1)) Delete(dir);
        }
    }

    /// <summary>Whether a run folder's lock is held (the run is still going); .NET takes an flock for FileShare.None.</summary>
    private static bool IsLocked(string runDir)
    {
        try
        {
            using var probe = new FileStream(Path.Combine(runDir, LockFile), FileMode.Open, FileAccess.ReadWrite, FileShare.None);
            return false;
        }
        catch (FileNotFoundException) { return false; }
        catch (IOException) { return true; }
    }

    private static void Delete(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Console.Error.WriteLine($"ppo-sharp tests: could not delete {dir}: {e.Message}"); }
    }

    private static string Sanitize(string name)
    {
        var s = new string(name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' ? c : '_').ToArray());
        s = s.StartsWith("PpoSharp.Tests.", StringComparison.Ordinal) ? s["PpoSharp.Tests.".Length..] : s;
        return s.Length > 100 ? s[..100] : s;
    }
}

/// <summary>xunit's framework with an execution sink that tells <see cref="TempFolders"/> when each test starts and how it ended.</summary>
public sealed class TempFoldersFramework(IMessageSink diagnostics) : XunitTestFramework(diagnostics)
{
    protected override ITestFrameworkExecutor CreateExecutor(AssemblyName assemblyName) =>
        new Executor(assemblyName, SourceInformationProvider, DiagnosticMessageSink);

    private sealed class Executor(AssemblyName name, ISourceInformationProvider source, IMessageSink diagnostics)
        : XunitTestFrameworkExecutor(name, source, diagnostics)
    {
        protected override void RunTestCases(IEnumerable<IXunitTestCase> testCases, IMessageSink executionMessageSink, ITestFrameworkExecutionOptions executionOptions)
        {
            // Messages delivered on the test's own thread, in order: a test's TempDir calls fall between its start and end.
            executionOptions.SetValue("xunit.execution.SynchronousMessageReporting", true);
            base.RunTestCases(testCases, new Sink(executionMessageSink), executionOptions);
        }
    }

    private sealed class Sink(IMessageSink inner) : LongLivedMarshalByRefObject, IMessageSink
    {
        public bool OnMessage(IMessageSinkMessage message)
        {
            switch (message)
            {
                case ITestStarting s: TempFolders.TestStarting(s.Test.DisplayName); break;
                case ITestFailed: TempFolders.TestEnded(failed: true); break;
                case ITestPassed or ITestSkipped: TempFolders.TestEnded(failed: false); break;
                case ITestClassFinished: TempFolders.ClassFinished(); break;
                case ITestAssemblyFinished: TempFolders.RunFinished(); break;
            }
            return inner.OnMessage(message);
        }
    }
}
