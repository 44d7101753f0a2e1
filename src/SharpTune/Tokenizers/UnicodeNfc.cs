// Unicode NFC normalization that works when the host runs with InvariantGlobalization (where string.Normalize is a
// no-op). Qwen2's tokenizer.json applies NFC before BPE (HF tokenizers normalizer {"type":"NFC"}).
// Falls back to ICU's unorm2 C API (libicuuc), which is what .NET itself uses when globalization is enabled.
using System.Runtime.InteropServices;
using System.Text;

namespace SharpTune.Tokenizers;

/// <summary>NFC normalization independent of the globalization mode.</summary>
public static class UnicodeNfc
{
    private static readonly Lazy<Func<string, string>> s_impl = new(CreateImpl);

    /// <summary>Returns the NFC form of <paramref name="text"/>.</summary>
    public static string Normalize(string text)
    {
        // Every code point below U+0300 has NFC_Quick_Check=Yes, so such text is already NFC.
        var needs = false;
        foreach (var c in text)
            if (c >= '\u0300') { needs = true; break; }
        return needs ? s_impl.Value(text) : text;
    }

    private static Func<string, string> CreateImpl()
    {
        // When the runtime has ICU loaded, string.Normalize composes; probe it with e + combining acute.
        if ("e\u0301".Normalize(NormalizationForm.FormC).Length == 1)
            return s => s.Normalize(NormalizationForm.FormC);
        return IcuNormalizer.TryCreate() ?? throw new PlatformNotSupportedException(
            "NFC normalization (needed by Qwen2 tokenizers) requires ICU: install libicu, or run without InvariantGlobalization");
    }

    private sealed class IcuNormalizer
    {
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        private delegate IntPtr GetInstance(ref int errorCode);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        private delegate int NormalizeFn(IntPtr norm, IntPtr src, int length, IntPtr dest, int capacity, ref int errorCode);

        private readonly IntPtr _nfc;
        private readonly NormalizeFn _normalize;

        private IcuNormalizer(IntPtr nfc, NormalizeFn normalize) { _nfc = nfc; _normalize = normalize; }

        public static Func<string, string>? TryCreate()
        {
            foreach (var (lib, version) in Candidates())
            {
                if (!NativeLibrary.TryLoad(lib, out var handle)) continue;
                foreach (var suffix in version is null ? new[] { "" } : new[] { $"_{version}", "" })
                {
                    if (!NativeLibrary.TryGetExport(handle, "unorm2_getNFCInstance" + suffix, out var getPtr) ||
                        !NativeLibrary.TryGetExport(handle, "unorm2_normalize" + suffix, out var normPtr)) continue;
                    var err = 0;
                    var nfc = Marshal.GetDelegateForFunctionPointer<GetInstance>(getPtr)(ref err);
                    if (err > 0 || nfc == IntPtr.Zero) continue;
                    var icu = new IcuNormalizer(nfc, Marshal.GetDelegateForFunctionPointer<NormalizeFn>(normPtr));
                    return icu.Run;
                }
            }
            return null;
        }

        private static IEnumerable<(string Lib, int? Version)> Candidates()
        {
            for (var v = 90; v >= 50; v--) yield return ($"libicuuc.so.{v}", v);
            yield return ("libicuuc.so", null);
        }

        private string Run(string s)
        {
            // NFC never grows text by more than a factor of 3 (Unicode stability policy).
            var dest = new char[s.Length * 3 + 16];
            var err = 0;
            var src = s.ToCharArray();
            var srcHandle = GCHandle.Alloc(src, GCHandleType.Pinned);
            var destHandle = GCHandle.Alloc(dest, GCHandleType.Pinned);
            int n;
            try
            {
                n = _normalize(_nfc, srcHandle.AddrOfPinnedObject(), src.Length, destHandle.AddrOfPinnedObject(), dest.Length, ref err);
            }
            finally
            {
                srcHandle.Free();
                destHandle.Free();
            }
            if (err > 0) throw new InvalidOperationException($"ICU unorm2_normalize failed with error {err}");
            return new string(dest, 0, n);
        }
    }
}
