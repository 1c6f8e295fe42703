namespace PpoSharp.Serving;

/// <summary>
/// The one folder the weight endpoints may read: a requested path must lie under it with no <c>..</c> component, and
/// neither the path nor any entry of the folder it names may be a symbolic link that leads outside it.
/// </summary>
public sealed class WeightsFolder(string root)
{
    private readonly string _root = RealPath(Path.GetFullPath(root));

    /// <summary>The checked absolute path of <paramref name="requested"/> (absolute, or relative to the weights folder); a 400 naming <paramref name="param"/> otherwise.</summary>
    public string Check(string? requested, string param)
    {
        if (string.IsNullOrWhiteSpace(requested)) throw ServeException.Bad($"'{param}' is required: a folder under the server's --weights-dir", param);
        if (requested.Split('/', '\\').Contains("..")) throw ServeException.Bad($"'{param}' {requested}: '..' is not allowed", param);
        var full = Path.GetFullPath(Path.IsPathRooted(requested) ? requested : Path.Combine(_root, requested));
        if (!Inside(full)) throw ServeException.Bad($"'{param}' {requested}: outside the server's --weights-dir", param);
        if (!Directory.Exists(full)) throw ServeException.Bad($"'{param}' {requested}: no such folder under --weights-dir", param);
        var real = RealPath(full);
        if (!Inside(real)) throw ServeException.Bad($"'{param}' {requested}: a symbolic link leads outside the server's --weights-dir", param);
        foreach (var entry in new DirectoryInfo(real).EnumerateFileSystemInfos())
            if (entry.LinkTarget is not null && !Inside(RealPath(entry.FullName)))
                throw ServeException.Bad($"'{param}' {requested}: {entry.Name} is a symbolic link outside the server's --weights-dir", param);
        return real;
    }

    private bool Inside(string path) => path.StartsWith(_root + Path.DirectorySeparatorChar, StringComparison.Ordinal) || path == _root;

    /// <summary>The path with every symbolic link on the way resolved (the folder or file must exist).</summary>
    private static string RealPath(string path)
    {
        var parts = path.Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        var current = Path.DirectorySeparatorChar.ToString();
        foreach (var part in parts)
        {
            current = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(current) ? new DirectoryInfo(current) : new FileInfo(current);
            if (info.LinkTarget is not null && info.ResolveLinkTarget(returnFinalTarget: true) is { } target) current = Path.GetFullPath(target.FullName);
        }
        return current;
    }
}
