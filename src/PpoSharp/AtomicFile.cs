namespace PpoSharp;

/// <summary>Files written so that a crash leaves the old file or the new one, never half of one: a temporary file, flushed to disk, then renamed.</summary>
public static class AtomicFile
{
    public static void Write(string path, Action<string> write)
    {
        var tmp = path + ".tmp";
        write(tmp);
        using (var f = new FileStream(tmp, FileMode.Open, FileAccess.Read)) f.Flush(flushToDisk: true);
        File.Move(tmp, path, overwrite: true);
    }

    public static void WriteText(string path, string text) => Write(path, tmp => File.WriteAllText(tmp, text));
}
