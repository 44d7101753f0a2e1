// MSBuild task: sets VER_FLG_WEAK on named version requirements (.gnu.version_r) of 64-bit little-endian ELF files.
// Reference: System V gABI / LSB "Symbol Versioning" (Elf64_Verneed, Elf64_Vernaux; VER_FLG_WEAK = 0x2).
// Why: see NativeLoading.targets. Writes go to a temp file that is renamed over the original (atomic).
using System;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public sealed class WeakenElfVersionNeeds : Task
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string Versions { get; set; } = "";

    public override bool Execute()
    {
        var wanted = Versions.Split(new[] { ';', ',' }, StringSplitOptions.RemoveEmptyEntries).Select(v => v.Trim());
        var wantedSet = new System.Collections.Generic.HashSet<string>(wanted);
        foreach (var item in Files)
        {
            var path = item.ItemSpec;
            try
            {
                var bytes = File.ReadAllBytes(path);
                var changed = Weaken(bytes, wantedSet, path);
                if (changed.Length == 0) continue;
                var tmp = path + ".weaken.tmp";
                File.WriteAllBytes(tmp, bytes);
                File.Replace(tmp, path, null); // rename over the original
                Log.LogMessage(MessageImportance.Normal, $"SharpTune: marked {string.Join(", ", changed)} weak in {path}");
            }
            catch (Exception e)
            {
                Log.LogError($"SharpTune: cannot patch ELF version needs in '{path}': {e.Message}");
                return false;
            }
        }
        return !Log.HasLoggedErrors;
    }

    /// <summary>Returns the version names it marked weak (empty when nothing needed to change).</summary>
    private static string[] Weaken(byte[] b, System.Collections.Generic.HashSet<string> wanted, string path)
    {
        if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (b[4] != 2 || b[5] != 1)
            throw new InvalidDataException($"expected ELFCLASS64 little-endian, got class {b[4]} data {b[5]}");
        ulong shoff = BitConverter.ToUInt64(b, 0x28);
        int shentsize = BitConverter.ToUInt16(b, 0x3A);
        int shnum = BitConverter.ToUInt16(b, 0x3C);
        var changed = new System.Collections.Generic.List<string>();
        for (int i = 0; i < shnum; i++)
        {
            long sh = checked((long)shoff + (long)i * shentsize);
            uint type = BitConverter.ToUInt32(b, (int)sh + 4);
            if (type != ShtGnuVerneed) continue;
            long offset = (long)BitConverter.ToUInt64(b, (int)sh + 0x18);
            uint link = BitConverter.ToUInt32(b, (int)sh + 0x28);
            uint count = BitConverter.ToUInt32(b, (int)sh + 0x2C);
            long strSh = checked((long)shoff + (long)link * shentsize);
            long strOff = (long)BitConverter.ToUInt64(b, (int)strSh + 0x18);
            long vn = offset;
            for (uint n = 0; n < count; n++)
            {
                int cnt = BitConverter.ToUInt16(b, (int)vn + 2);
                uint aux = BitConverter.ToUInt32(b, (int)vn + 8);
                uint next = BitConverter.ToUInt32(b, (int)vn + 12);
                long va = vn + aux;
                for (int a = 0; a < cnt; a++)
                {
                    ushort flags = BitConverter.ToUInt16(b, (int)va + 4);
                    uint name = BitConverter.ToUInt32(b, (int)va + 8);
                    uint vnext = BitConverter.ToUInt32(b, (int)va + 12);
                    var s = ReadCString(b, strOff + name);
                    if (wanted.Contains(s) && (flags & VerFlgWeak) == 0)
                    {
                        flags |= VerFlgWeak;
                        b[va + 4] = (byte)(flags & 0xff);
                        b[va + 5] = (byte)(flags >> 8);
                        changed.Add(s);
                    }
                    if (vnext == 0) break;
                    va += vnext;
                }
                if (next == 0) break;
                vn += next;
            }
        }
        return changed.ToArray();
    }

    private static string ReadCString(byte[] b, long start)
    {
        long end = start;
        while (end < b.Length && b[end] != 0) end++;
        return Encoding.ASCII.GetString(b, (int)start, (int)(end - start));
    }
}
