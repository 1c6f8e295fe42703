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
}
