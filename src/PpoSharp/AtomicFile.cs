namespace PpoSharp;

/// <summary>
/// Files written so that a crash leaves the old file or the new one, never half of one: a temporary file is written,
/// flushed to disk and renamed; if writing fails, the temporary file is removed.
/// </summary>
public static class AtomicFile
{
    /// <summary>Writes <paramref name="path"/> through <paramref name="write"/>, which is given the temporary file's path.</summary>
    public static void Write(string path, Action<string> write)
    {
        var tmp = path + ".tmp";
        try
        {
            write(tmp);
            FaultPoint.Reach("file-written", tmp);
            using (var f = new FileStream(tmp, FileMode.Open, FileAccess.Read)) f.Flush(flushToDisk: true);
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    /// <summary>Writes <paramref name="path"/> through a stream.</summary>
    public static void WriteStream(string path, Action<FileStream> write) => Write(path, tmp =>
    {
        using var f = new FileStream(tmp, FileMode.Create, FileAccess.Write);
        write(f);
    });

    public static void WriteText(string path, string text) => Write(path, tmp => File.WriteAllText(tmp, text));

    /// <summary>
    /// Replaces the folder <paramref name="dir"/> by one that <paramref name="fill"/> writes: into <c>DIR.tmp</c>, then
    /// DIR -> <c>DIR.old</c>, <c>DIR.tmp</c> -> DIR, and <c>DIR.old</c> removed. At any crash one complete folder
    /// remains, which <see cref="RecoverFolder"/> puts back in place.
    /// </summary>
    public static void ReplaceFolder(string dir, Action<string> fill)
    {
        string tmp = dir + ".tmp", old = dir + ".old";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        fill(tmp);
        FaultPoint.Reach("folder-filled", tmp);
        if (Directory.Exists(old)) Directory.Delete(old, recursive: true);
        if (Directory.Exists(dir)) Directory.Move(dir, old);
        FaultPoint.Reach("folder-moved-aside", dir);
        Directory.Move(tmp, dir);
        FaultPoint.Reach("folder-swapped", dir);
        if (Directory.Exists(old)) Directory.Delete(old, recursive: true);
    }

    /// <summary>
    /// After a crash in <see cref="ReplaceFolder"/>: when <paramref name="dir"/> lacks <paramref name="marker"/> (the
    /// file written last), the complete one of <c>DIR.tmp</c> (new) or <c>DIR.old</c> (previous) becomes DIR; once DIR is
    /// complete, the other leftovers are removed.
    /// </summary>
    public static void RecoverFolder(string dir, string marker)
    {
        if (!File.Exists(Path.Combine(dir, marker)))
            foreach (var candidate in new[] { dir + ".tmp", dir + ".old" })
            {
                if (!File.Exists(Path.Combine(candidate, marker))) continue;
                if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
                Directory.Move(candidate, dir);
                break;
            }
        if (!File.Exists(Path.Combine(dir, marker))) return;
        foreach (var leftover in new[] { dir + ".tmp", dir + ".old" })                     // what the crash left beside it
            if (Directory.Exists(leftover)) Directory.Delete(leftover, recursive: true);
    }
}
