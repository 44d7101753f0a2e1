// Read-only parser of an ELF64 .gnu.version_r section, used to check the build's native patch independently.
using System.Text;

namespace SharpTune.Tests.Native;

internal sealed record VersionNeed(string File, string Name, bool Weak);

internal static class ElfVersionNeeds
{
    public static List<VersionNeed> Read(string path)
    {
        var b = System.IO.File.ReadAllBytes(path);
        var shoff = (long)BitConverter.ToUInt64(b, 0x28);
        int shentsize = BitConverter.ToUInt16(b, 0x3A), shnum = BitConverter.ToUInt16(b, 0x3C);
        var result = new List<VersionNeed>();
        for (var i = 0; i < shnum; i++)
        {
            var sh = (int)(shoff + i * shentsize);
            if (BitConverter.ToUInt32(b, sh + 4) != 0x6ffffffe) continue; // SHT_GNU_verneed
            var off = (int)BitConverter.ToUInt64(b, sh + 0x18);
            var strSh = (int)(shoff + BitConverter.ToUInt32(b, sh + 0x28) * shentsize);
            var str = (int)BitConverter.ToUInt64(b, strSh + 0x18);
            var count = BitConverter.ToUInt32(b, sh + 0x2C);
            var vn = off;
            for (var n = 0; n < count; n++)
            {
                var file = CString(b, str + (int)BitConverter.ToUInt32(b, vn + 4));
                var va = vn + (int)BitConverter.ToUInt32(b, vn + 8);
                for (var a = 0; a < BitConverter.ToUInt16(b, vn + 2); a++)
                {
                    var flags = BitConverter.ToUInt16(b, va + 4);
                    result.Add(new VersionNeed(file, CString(b, str + (int)BitConverter.ToUInt32(b, va + 8)), (flags & 2) != 0));
                    va += (int)BitConverter.ToUInt32(b, va + 12);
                }
                vn += (int)BitConverter.ToUInt32(b, vn + 12);
            }
        }
        return result;
    }

    private static string CString(byte[] b, int start)
    {
        var end = Array.IndexOf(b, (byte)0, start);
        return Encoding.ASCII.GetString(b, start, end - start);
    }
}
