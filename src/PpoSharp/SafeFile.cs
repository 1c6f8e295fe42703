using System.ComponentModel;
using System.Runtime.InteropServices;

namespace PpoSharp;

/// <summary>
/// Opens the files of a model folder that came from elsewhere, refusing before any read what would hang or exhaust the
/// process: anything that is not a regular file (a FIFO blocks on open, <c>/dev/zero</c> never ends), a loop of symbolic
/// links, a file that cannot be read, and a file larger than the cap for its kind. Each refusal is one line naming the file.
/// </summary>
public static partial class SafeFile
{
    private const long MiB = 1L << 20;
    /// <summary>config.json, adapter_config.json, generation_config.json.</summary>
    public const long ConfigMax = 4 * MiB;
    /// <summary>tokenizer_config.json (it may carry chat templates and every added token).</summary>
    public const long TokenizerConfigMax = 16 * MiB;
    /// <summary>tokenizer.json (Gemma 3's, among the largest, is 33 MB).</summary>
    public const long TokenizerMax = 64 * MiB;
    /// <summary>chat_template.jinja (real ones are a few KB).</summary>
    public const long TemplateMax = 1 * MiB;
    /// <summary>model.safetensors.index.json.</summary>
    public const long IndexMax = 16 * MiB;

    /// <summary>Whether anything is at <paramref name="path"/>: a file, a directory, or a link (even a broken or looping one, which <see cref="Check"/> then names).</summary>
    public static bool Present(string path)
    {
        try { return Path.Exists(path) || new FileInfo(path).LinkTarget is not null; }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException) { return true; }    // something there that Check will name
    }

    /// <summary>
    /// Checks that <paramref name="path"/> is a regular file (symbolic links followed) of at most <paramref name="maxBytes"/>
    /// bytes, and returns its size; a missing file, a FIFO, a device, a socket, a directory, a link loop or an oversize file
    /// is a <see cref="PpoSharpException"/> "path: problem".
    /// </summary>
    public static long Check(string path, long maxBytes = long.MaxValue)
    {
        var (type, size) = Stat(path);
        if (type != FileKind.Regular) throw Fail(path, type == FileKind.Directory ? "is a directory, not a file" : $"is {Describe(type)}, not a regular file");
        if (size > maxBytes) throw Fail(path, $"is {Mb(size)}, more than the {Mb(maxBytes)} this file may hold");
        return size;
    }

    /// <summary>Opens a checked file (see <see cref="Check"/>) for reading; permission denied is one line.</summary>
    public static FileStream Open(string path, long maxBytes = long.MaxValue)
    {
        Check(path, maxBytes);
        try { return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16); }
        catch (UnauthorizedAccessException) { throw Fail(path, "cannot be read (permission denied)"); }
        catch (IOException e) { throw Fail(path, $"cannot be read ({e.Message})"); }
    }

    /// <summary>The bytes of a checked file, never more than <paramref name="maxBytes"/> even if it grows while read.</summary>
    public static byte[] ReadBytes(string path, long maxBytes)
    {
        using var f = Open(path, maxBytes);
        var buffer = new byte[f.Length];
        int n = f.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        return n == buffer.Length ? buffer : buffer[..n];
    }

    /// <summary>The UTF-8 text of a checked file (see <see cref="ReadBytes"/>).</summary>
    public static string ReadText(string path, long maxBytes)
    {
        using var reader = new StreamReader(new MemoryStream(ReadBytes(path, maxBytes)), System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        return reader.ReadToEnd();
    }

    /// <summary>
    /// Checks that <paramref name="dir"/> is a directory whose entries can be listed, so that a folder that cannot be read
    /// is reported as such and not as "config.json: missing".
    /// </summary>
    public static void CheckFolder(string dir)
    {
        var (type, _) = Stat(dir);
        if (type != FileKind.Directory) throw Fail(dir, $"is {Describe(type)}; a model is a directory (config.json, weights, tokenizer)");
        try { using var entries = Directory.EnumerateFileSystemEntries(dir).GetEnumerator(); entries.MoveNext(); }
        catch (UnauthorizedAccessException) { throw Fail(dir, "the folder cannot be read (permission denied)"); }
        catch (IOException e) { throw Fail(dir, $"the folder cannot be read ({e.Message})"); }
    }

    private enum FileKind { Regular, Directory, Fifo, CharDevice, BlockDevice, Socket, Other }

    private static string Describe(FileKind k) => k switch
    {
        FileKind.Regular => "a file",
        FileKind.Directory => "a directory",
        FileKind.Fifo => "a named pipe (FIFO)",
        FileKind.CharDevice => "a character device (such as /dev/zero)",
        FileKind.BlockDevice => "a block device",
        FileKind.Socket => "a socket",
        _ => "not a file or directory",
    };

    private static string Mb(long bytes) => bytes >= MiB ? $"{bytes / (double)MiB:0.#} MiB" : $"{bytes} bytes";

    private static PpoSharpException Fail(string path, string problem) => new($"{path}: {problem}");

    /// <summary>The type and size of what <paramref name="path"/> names, links followed: Linux's statx, else .NET's file info.</summary>
    private static (FileKind Type, long Size) Stat(string path)
    {
        if (OperatingSystem.IsLinux() && StatxWorks)
        {
            try { return Statx(path); }
            catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { StatxWorks = false; }
        }
        var info = new FileInfo(path);
        if (info.Attributes.HasFlag(FileAttributes.ReparsePoint)) ResolveLinks(path);
        if (Directory.Exists(path)) return (FileKind.Directory, 0);
        if (!info.Exists) throw Fail(path, "not found");
        return (FileKind.Regular, info.Length);
    }

    private static void ResolveLinks(string path)
    {
        try { File.ResolveLinkTarget(path, returnFinalTarget: true); }
        catch (IOException) { throw Fail(path, "is a loop of symbolic links"); }
    }

    private static bool StatxWorks = true;

    // struct statx (include/uapi/linux/stat.h; the same layout on every architecture): stx_mode is a u16 at offset 28,
    // stx_size a u64 at offset 40; the struct is 256 bytes.
    private const int AtFdCwd = -100, StatxType = 0x1, StatxSize = 0x200, ModeOffset = 28, SizeOffset = 40;
    private const int Enoent = 2, Eacces = 13, Enotdir = 20, Eloop = 40;

    private static unsafe (FileKind, long) Statx(string path)
    {
        byte* buffer = stackalloc byte[256];
        if (StatxCall(AtFdCwd, path, 0, StatxType | StatxSize, buffer) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw Fail(path, errno switch
            {
                Enoent or Enotdir => "not found",
                Eacces => "cannot be read (permission denied)",
                Eloop => "is a loop of symbolic links",
                _ => new Win32Exception(errno).Message,
            });
        }
        int mode = *(ushort*)(buffer + ModeOffset) & 0xF000;
        var kind = mode switch
        {
            0x8000 => FileKind.Regular, 0x4000 => FileKind.Directory, 0x1000 => FileKind.Fifo,
            0x2000 => FileKind.CharDevice, 0x6000 => FileKind.BlockDevice, 0xC000 => FileKind.Socket, _ => FileKind.Other,
        };
        return (kind, *(long*)(buffer + SizeOffset));
    }

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int StatxCall(int dirfd, string path, int flags, uint mask, byte* buffer);
}
