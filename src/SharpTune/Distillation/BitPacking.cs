// Bit-level writer and reader used by the teacher cache: fixed-width fields and Golomb-Rice codes for small
// non-negative integers (the gaps between sorted token ids, the quantised log-prob offsets).
// Bits are written least-significant first into little-endian bytes. Reference: Golomb 1966, Rice 1979.
namespace SharpTune.Distillation;

/// <summary>Appends bit fields to a growing byte buffer.</summary>
internal sealed class BitWriter
{
    private byte[] _buffer = new byte[1024];
    private long _bitLength;

    /// <summary>Bits written so far.</summary>
    public long BitLength => _bitLength;

    /// <summary>Appends the low <paramref name="bits"/> (0..57) bits of <paramref name="value"/>.</summary>
    public void Write(ulong value, int bits)
    {
        if (bits == 0) return;
        EnsureCapacity(_bitLength + bits);
        for (var written = 0; written < bits;)
        {
            var byteIndex = (int)(_bitLength >> 3);
            var bitOffset = (int)(_bitLength & 7);
            var take = Math.Min(8 - bitOffset, bits - written);
            var chunk = (byte)(((value >> written) & ((1UL << take) - 1)) << bitOffset);
            _buffer[byteIndex] |= chunk;
            written += take;
            _bitLength += take;
        }
    }

    /// <summary>Appends a Rice code of <paramref name="value"/> with parameter <paramref name="r"/>: the quotient
    /// <c>value >> r</c> in unary (ones ended by a zero), then the low <paramref name="r"/> bits.</summary>
    public void WriteRice(uint value, int r)
    {
        for (var quotient = value >> r; quotient > 0;)
        {
            var ones = (int)Math.Min(quotient, 32u);
            Write((1UL << ones) - 1, ones);
            quotient -= (uint)ones;
        }
        Write(0, 1);
        Write(value & ((1u << r) - 1), r);
    }

    /// <summary>Pads to a whole byte and returns the bytes.</summary>
    public byte[] ToArray() => _buffer.AsSpan(0, (int)((_bitLength + 7) >> 3)).ToArray();

    /// <summary>Forgets everything written.</summary>
    public void Clear()
    {
        Array.Clear(_buffer, 0, (int)Math.Min(_buffer.Length, (_bitLength + 7) >> 3));
        _bitLength = 0;
    }

    /// <summary>Cost in bits of <see cref="WriteRice"/>.</summary>
    public static long RiceBits(uint value, int r) => (value >> r) + 1 + r;

    private void EnsureCapacity(long bits)
    {
        var bytes = (bits + 7) >> 3;
        if (bytes <= _buffer.Length) return;
        Array.Resize(ref _buffer, (int)Math.Max(bytes, _buffer.Length * 2L));
    }
}

/// <summary>Reads bit fields written by <see cref="BitWriter"/>; reading past the end throws.</summary>
internal ref struct BitReader
{
    private readonly ReadOnlySpan<byte> _data;
    private long _position;

    public BitReader(ReadOnlySpan<byte> data)
    {
        _data = data;
        _position = 0;
    }

    /// <summary>Bits consumed.</summary>
    public readonly long Position => _position;

    /// <summary>Reads <paramref name="bits"/> (0..57) bits.</summary>
    public ulong Read(int bits)
    {
        if (_position + bits > (long)_data.Length * 8)
            throw new InvalidDataException($"record ends after {_data.Length} bytes while {bits} more bits were expected");
        ulong value = 0;
        for (var read = 0; read < bits;)
        {
            var byteIndex = (int)(_position >> 3);
            var bitOffset = (int)(_position & 7);
            var take = Math.Min(8 - bitOffset, bits - read);
            var chunk = (ulong)((_data[byteIndex] >> bitOffset) & ((1 << take) - 1));
            value |= chunk << read;
            read += take;
            _position += take;
        }
        return value;
    }

    /// <summary>Reads a Rice code with parameter <paramref name="r"/>.</summary>
    public uint ReadRice(int r)
    {
        uint quotient = 0;
        while (Read(1) == 1)
        {
            if (++quotient > 1u << 24) throw new InvalidDataException("corrupt Rice code (unary run too long)");
        }
        return (quotient << r) | (uint)Read(r);
    }
}
