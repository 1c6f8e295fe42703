namespace PpoSharp.Training;

/// <summary>
/// No command writes into its own inputs: an output folder may not be an input (a model folder, a data or config file),
/// lie inside one, or hold one (<c>--force</c> and <c>--resume</c> delete and rewrite what a run folder holds). Paths are
/// compared as the file system sees them: full, with every symbolic link on the way resolved.
/// </summary>
public static class OutputGuard
{
    /// <summary>
    /// Throws a <see cref="PpoSharpException"/> naming both options when <paramref name="outDir"/> (given as
    /// <paramref name="outFlag"/>) is, lies inside or holds one of <paramref name="inputs"/> (option name, path; null paths
    /// are skipped). Runs before anything is written, with or without <c>--force</c>.
    /// </summary>
    public static void Check(string outFlag, string outDir, IEnumerable<(string Flag, string? Path)> inputs)
    {
        var output = Canonical(outDir);
        foreach (var (flag, path) in inputs)
        {
            if (string.IsNullOrEmpty(path)) continue;
            var input = Canonical(path);
            string? relation = Same(output, input) ? "is" : Inside(output, input) ? "is inside" : Inside(input, output) ? "holds" : null;
            if (relation is null) continue;
            var what = relation == "holds" ? $"holds the {flag} input {path}" : $"{relation} the {flag} {(File.Exists(input) ? "file" : "folder")} {path}";
            throw new PpoSharpException($"{outFlag} {outDir} {what}: a command never writes into its own inputs, with or without --force; choose another {outFlag}");
        }
    }

    private static StringComparison Comparison => OperatingSystem.IsLinux() ? StringComparison.Ordinal : StringComparison.OrdinalIgnoreCase;

    private static bool Same(string a, string b) => string.Equals(a, b, Comparison);

    /// <summary>Whether <paramref name="path"/> lies strictly below <paramref name="folder"/> (both canonical).</summary>
    private static bool Inside(string path, string folder) =>
        path.StartsWith(folder.EndsWith(Path.DirectorySeparatorChar) ? folder : folder + Path.DirectorySeparatorChar, Comparison) && !Same(path, folder);

    /// <summary>
    /// The full path with each symbolic link among its existing components replaced by its final target (as
    /// <c>realpath</c> gives it); the components that do not exist yet are appended as they are.
    /// </summary>
    public static string Canonical(string path, int depth = 0)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        if (depth > 32) return full;                                           // a link cycle: the file system refuses it anyway
        var root = Path.GetPathRoot(full) ?? "";
        var current = root;
        foreach (var part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            var next = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (info.Exists && info.LinkTarget is not null)
            {
                try { next = info.ResolveLinkTarget(returnFinalTarget: true) is { } target ? Canonical(target.FullName, depth + 1) : next; }
                catch (IOException) { }                                        // a broken or cyclic link: compare it as written
            }
            current = next;
        }
        return current;
    }
}
