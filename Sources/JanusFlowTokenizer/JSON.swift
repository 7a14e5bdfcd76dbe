/// A JSON value as read from a tokenizer file.
///
/// The tokenizer reads its files with this small parser instead of `JSONSerialization` for three reasons: it keeps
/// every string exactly (Foundation on Linux drops a raw U+FEFF at the start of a string value), it keeps object
/// members in file order without going through `String`-keyed dictionaries (whose keys compare by canonical
/// equivalence, so two distinct tokens such as U+2126 OHM SIGN and U+03A9 would collide), and it reports the line
/// and column of a syntax error.
enum JSONValue {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(key: String, value: JSONValue)])

    /// The first member named `key` of an object (nil for other values).
    subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        // Compare UTF-8 bytes, not canonical equivalence.
        return members.first { $0.key.utf8.elementsEqual(key.utf8) }?.value
    }

    var isNull: Bool { if case .null = self { return true } else { return false } }
    var string: String? { if case .string(let s) = self { return s } else { return nil } }
    var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    var int: Int? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9e15: return Int(d)
        default: return nil
        }
    }
    var double: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
    var array: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    var members: [(key: String, value: JSONValue)]? { if case .object(let m) = self { return m } else { return nil } }

    /// A short name of the value's type, for error messages.
    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// A JSON syntax error with its position (1-based line and column, counted in bytes).
struct JSONSyntaxError: Error, CustomStringConvertible {
    let line: Int
    let column: Int
    let reason: String
    var description: String { "line \(line), column \(column): \(reason)" }
}

/// A strict RFC 8259 parser over UTF-8 bytes (a leading byte-order mark is skipped).
struct JSONParser {
    static let maxDepth = 512

    static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        try bytes.withUnsafeBufferPointer { buffer in
            var parser = JSONParser(buffer)
            if buffer.count >= 3 && buffer[0] == 0xEF && buffer[1] == 0xBB && buffer[2] == 0xBF { parser.pos = 3 }
            parser.skipWhitespace()
            let value = try parser.parseValue(depth: 0)
            parser.skipWhitespace()
            if parser.pos != buffer.count { throw parser.error("unexpected text after the top-level value") }
            return value
        }
    }

    private let b: UnsafeBufferPointer<UInt8>
    private var pos = 0

    private init(_ buffer: UnsafeBufferPointer<UInt8>) { b = buffer }

    private func error(_ reason: String, at offset: Int? = nil) -> JSONSyntaxError {
        let end = Swift.min(offset ?? pos, b.count)
        var line = 1, lineStart = 0
        for i in 0..<end where b[i] == 0x0A {
            line += 1
            lineStart = i + 1
        }
        return JSONSyntaxError(line: line, column: end - lineStart + 1, reason: reason)
    }

    private func describeCurrent() -> String {
        guard pos < b.count else { return "end of file" }
        let c = b[pos]
        if c >= 0x20 && c < 0x7F { return "'\(Character(Unicode.Scalar(c)))'" }
        return "byte 0x" + String(c, radix: 16, uppercase: true)
    }

    private mutating func skipWhitespace() {
        while pos < b.count {
            switch b[pos] {
            case 0x20, 0x0A, 0x0D, 0x09: pos += 1
            default: return
            }
        }
    }

    private mutating func expectLiteral(_ literal: StaticString, _ value: JSONValue) throws -> JSONValue {
        let start = pos
        let count = literal.utf8CodeUnitCount
        let matches = literal.withUTF8Buffer { lit in
            pos + count <= b.count && (0..<count).allSatisfy { b[pos + $0] == lit[$0] }
        }
        guard matches else { throw error("invalid literal (expected \(literal))", at: start) }
        pos += count
        return value
    }

    private mutating func parseValue(depth: Int) throws -> JSONValue {
        guard pos < b.count else { throw error("unexpected end of file (expected a value)") }
        switch b[pos] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): return try expectLiteral("true", .bool(true))
        case UInt8(ascii: "f"): return try expectLiteral("false", .bool(false))
        case UInt8(ascii: "n"): return try expectLiteral("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected \(describeCurrent()) (expected a value)")
        }
    }

    private mutating func parseObject(depth: Int) throws -> JSONValue {
        guard depth <= JSONParser.maxDepth else { throw error("nesting deeper than \(JSONParser.maxDepth) levels") }
        pos += 1
        var members: [(key: String, value: JSONValue)] = []
        skipWhitespace()
        if pos < b.count && b[pos] == UInt8(ascii: "}") {
            pos += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard pos < b.count, b[pos] == UInt8(ascii: "\"") else { throw error("unexpected \(describeCurrent()) (expected a member name in quotes)") }
            let key = try parseString()
            skipWhitespace()
            guard pos < b.count, b[pos] == UInt8(ascii: ":") else { throw error("unexpected \(describeCurrent()) (expected ':')") }
            pos += 1
            skipWhitespace()
            members.append((key, try parseValue(depth: depth)))
            skipWhitespace()
            guard pos < b.count else { throw error("unexpected end of file (expected ',' or '}')") }
            if b[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if b[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
            throw error("unexpected \(describeCurrent()) (expected ',' or '}')")
        }
    }

    private mutating func parseArray(depth: Int) throws -> JSONValue {
        guard depth <= JSONParser.maxDepth else { throw error("nesting deeper than \(JSONParser.maxDepth) levels") }
        pos += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if pos < b.count && b[pos] == UInt8(ascii: "]") {
            pos += 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            items.append(try parseValue(depth: depth))
            skipWhitespace()
            guard pos < b.count else { throw error("unexpected end of file (expected ',' or ']')") }
            if b[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if b[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            throw error("unexpected \(describeCurrent()) (expected ',' or ']')")
        }
    }

    private mutating func parseNumber() throws -> JSONValue {
        let start = pos
        if b[pos] == UInt8(ascii: "-") { pos += 1 }
        func digits() -> Int {
            let s = pos
            while pos < b.count && b[pos] >= UInt8(ascii: "0") && b[pos] <= UInt8(ascii: "9") { pos += 1 }
            return pos - s
        }
        let intStart = pos
        let intDigits = digits()
        guard intDigits > 0 else { throw error("invalid number", at: start) }
        if intDigits > 1 && b[intStart] == UInt8(ascii: "0") { throw error("invalid number (leading zero)", at: start) }
        var isInteger = true
        if pos < b.count && b[pos] == UInt8(ascii: ".") {
            pos += 1
            isInteger = false
            guard digits() > 0 else { throw error("invalid number (no digits after '.')", at: start) }
        }
        if pos < b.count && (b[pos] == UInt8(ascii: "e") || b[pos] == UInt8(ascii: "E")) {
            pos += 1
            isInteger = false
            if pos < b.count && (b[pos] == UInt8(ascii: "+") || b[pos] == UInt8(ascii: "-")) { pos += 1 }
            guard digits() > 0 else { throw error("invalid number (no digits in the exponent)", at: start) }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: b[start..<pos]), as: UTF8.self)
        if isInteger, let i = Int(text) { return .int(i) }
        guard let d = Double(text) else { throw error("invalid number", at: start) }
        return .double(d)
    }

    private mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= b.count else { throw error("unterminated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = b[pos]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw error("invalid hexadecimal digit in \\u escape")
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    /// A string value; invalid UTF-8 and unpaired surrogate escapes become U+FFFD.
    private mutating func parseString() throws -> String {
        let start = pos
        pos += 1
        let contentStart = pos
        // Fast path: no escapes.
        while pos < b.count {
            let c = b[pos]
            if c == UInt8(ascii: "\"") {
                let s = String(decoding: UnsafeBufferPointer(rebasing: b[contentStart..<pos]), as: UTF8.self)
                pos += 1
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw error("control character 0x\(String(c, radix: 16, uppercase: true)) inside a string") }
            pos += 1
        }
        guard pos < b.count else { throw error("unterminated string", at: start) }
        var bytes = Array(UnsafeBufferPointer(rebasing: b[contentStart..<pos]))
        while pos < b.count {
            let c = b[pos]
            if c == UInt8(ascii: "\"") {
                pos += 1
                return String(decoding: bytes, as: UTF8.self)
            }
            if c < 0x20 { throw error("control character 0x\(String(c, radix: 16, uppercase: true)) inside a string") }
            if c != UInt8(ascii: "\\") {
                bytes.append(c)
                pos += 1
                continue
            }
            pos += 1
            guard pos < b.count else { break }
            let e = b[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): bytes.append(0x22)
            case UInt8(ascii: "\\"): bytes.append(0x5C)
            case UInt8(ascii: "/"): bytes.append(0x2F)
            case UInt8(ascii: "b"): bytes.append(0x08)
            case UInt8(ascii: "f"): bytes.append(0x0C)
            case UInt8(ascii: "n"): bytes.append(0x0A)
            case UInt8(ascii: "r"): bytes.append(0x0D)
            case UInt8(ascii: "t"): bytes.append(0x09)
            case UInt8(ascii: "u"):
                var v = try hex4()
                if (0xD800...0xDBFF).contains(v) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    if pos + 6 <= b.count && b[pos] == UInt8(ascii: "\\") && b[pos + 1] == UInt8(ascii: "u") {
                        let save = pos
                        pos += 2
                        let low = try hex4()
                        if (0xDC00...0xDFFF).contains(low) {
                            v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            pos = save
                            v = 0xFFFD
                        }
                    } else {
                        v = 0xFFFD
                    }
                } else if (0xDC00...0xDFFF).contains(v) {
                    v = 0xFFFD
                }
                bytes.append(contentsOf: UTF8.encode(Unicode.Scalar(v)!)!)
            default:
                throw error("invalid escape '\\\(Character(Unicode.Scalar(e)))'", at: pos - 2)
            }
        }
        throw error("unterminated string", at: start)
    }
}
