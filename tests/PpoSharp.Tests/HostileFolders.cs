using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using PpoSharp.Models;
using PpoSharp.Models.Hf;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>
/// Tools to spoil copies of the tiny HF fixtures the way hostile folders do: JSON edits, safetensors header surgery
/// (the data section kept, so a header can lie about it), raw tensor bytes, file-system tricks, and adapters.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal static class HostileFolders
{
    public static void EditJson(string dir, string file, Action<JsonObject> edit)
    {
        var path = Path.Combine(dir, file);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    /// <summary>The header of a safetensors file as JSON, the offset of its data section and the data's length.</summary>
    public static (JsonObject Header, long DataStart) ReadHeader(string path)
    {
        using var f = File.OpenRead(path);
        var head = new byte[8];
        f.ReadExactly(head);
        var header = new byte[BinaryPrimitives.ReadUInt64LittleEndian(head)];
        f.ReadExactly(header);
        return (JsonNode.Parse(header)!.AsObject(), 8 + header.Length);
    }

    /// <summary>Rewrites a safetensors header (the data section kept as is); <paramref name="fileLength"/> extends the file sparsely.</summary>
    public static void EditHeader(string path, Action<JsonObject> edit, long? fileLength = null) =>
        WriteHeader(path, h => { edit(h); return Encoding.UTF8.GetBytes(h.ToJsonString()); }, fileLength);

    /// <summary>Replaces a safetensors header by raw bytes (which need not be JSON).</summary>
    public static void WriteHeader(string path, Func<JsonObject, byte[]> header, long? fileLength = null)
    {
        var (json, start) = ReadHeader(path);
        var data = File.ReadAllBytes(path)[(int)start..];
        var bytes = header(json);
        bytes = [.. bytes, .. Enumerable.Repeat((byte)' ', (8 - bytes.Length % 8) % 8)];
        using var f = File.Create(path);
        var length = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)bytes.Length);
        f.Write(length);
        f.Write(bytes);
        f.Write(data);
        if (fileLength is long n) f.SetLength(n);
    }

    /// <summary>Overwrites the first bytes of a stored tensor (e.g. a bf16 NaN, 0x7FC0).</summary>
    public static void PatchTensor(string path, string name, byte[] bytes)
    {
        var (header, start) = ReadHeader(path);
        long begin = header[name]!["data_offsets"]![0]!.GetValue<long>();
        using var f = new FileStream(path, FileMode.Open, FileAccess.Write);
        f.Position = start + begin;
        f.Write(bytes);
    }

    public static void MakeFifo(string path)
    {
        File.Delete(path);
        using var p = Process.Start("mkfifo", [path])!;
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException("mkfifo failed");
    }

    public static void Replace(string path, Action<string> make)
    {
        if (File.Exists(path)) File.Delete(path);
        make(path);
    }

    public static void SymlinkToSelf(string path) => Replace(path, p => File.CreateSymbolicLink(p, p));

    /// <summary>A LoRA adapter folder (rank 4) saved by PpoSharp on the model in <paramref name="baseDir"/>.</summary>
    public static string Adapter(string baseDir, string name)
    {
        var dir = Path.Combine(TestSupport.TempDir(), name);
        using var model = RunDirectory.LoadPolicyModel(baseDir);
        PeftAdapter.Save(dir, LoraModels.NewView(model, new LoraSettings(4, 8, 0, "")).Adapter!, baseDir);
        return dir;
    }

    /// <summary>SHA-256 of every file of a folder (names and contents), to show that loading wrote nothing into it.</summary>
    public static string Snapshot(string dir)
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var entry in Directory.EnumerateFileSystemEntries(dir).Order(StringComparer.Ordinal))
        {
            sha.AppendData(Encoding.UTF8.GetBytes(entry));
            try { sha.AppendData(SafeFile.ReadBytes(entry, 64 << 20)); }
            catch (PpoSharpException e) { sha.AppendData(Encoding.UTF8.GetBytes(e.Message)); }        // a FIFO, a loop, too large: its name only
        }
        return Convert.ToHexString(sha.GetHashAndReset());
    }
}
