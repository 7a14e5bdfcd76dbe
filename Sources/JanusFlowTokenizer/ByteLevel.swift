/// GPT-2's byte alphabet: every byte is written as one printable Unicode scalar so that byte-level tokens are
/// ordinary strings (`!`...`~`, `¡`...`¬` and `®`...`ÿ` stand for themselves; the other 68 bytes map to U+0100
/// onwards in byte order, so space is `Ġ` U+0120, LF `Ċ` U+010A, CR `č` U+010D, TAB `ĉ` U+0109).
public enum ByteLevel {
    /// The scalar standing for each byte.
    public static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = Unicode.Scalar(UInt8(b))
            } else {
                table[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The byte a scalar stands for, or nil for scalars outside the alphabet (all are below U+0144).
    @inline(__always)
    public static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let v = scalar.value
        return v < 0x144 ? scalarToByte[Int(v)] : nil
    }

    private static let scalarToByte: [UInt8?] = {
        var table = [UInt8?](repeating: nil, count: 0x144)
        for (b, s) in byteToScalar.enumerated() { table[Int(s.value)] = UInt8(b) }
        return table
    }()

    /// `text`'s UTF-8 bytes written in the byte alphabet (what the BPE model sees).
    public static func encode(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for b in text.utf8 { out.append(byteToScalar[Int(b)]) }
        return String(out)
    }

    /// The bytes a token stands for, as the `tokenizers` ByteLevel decoder computes them: when every scalar of the
    /// token is in the alphabet, the bytes they stand for; otherwise (e.g. a special token such as
    /// `<｜end▁of▁sentence｜>`) the token's own UTF-8 bytes.
    public static func bytes(ofToken token: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(token.unicodeScalars.count)
        for s in token.unicodeScalars {
            guard let b = byte(for: s) else { return Array(token.utf8) }
            out.append(b)
        }
        return out
    }
}
