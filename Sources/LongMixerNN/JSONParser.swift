import Foundation

// The strict JSON parser and writer of safetensors headers (and of the checksum metadata).

/// A parsed JSON value. Objects keep their members in order (duplicates are rejected while parsing).
enum JSONValue {
    case object([(String, JSONValue)])
    case array([JSONValue])
    case string(String)
    /// An integer literal (no fraction, no exponent) that fits in Int.
    case integer(Int)
    /// Any other number, kept as written.
    case number(String)
    case bool(Bool)
    case null

    var typeName: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string: return "a string"
        case .integer, .number: return "a number"
        case .bool: return "a boolean"
        case .null: return "null"
        }
    }

    /// Short JSON-like rendering for messages.
    var description: String {
        switch self {
        case .object(let m): return "{" + m.prefix(4).map { "\"\($0.0)\": \($0.1.description)" }.joined(separator: ", ") + (m.count > 4 ? ", …}" : "}")
        case .array(let a): return "[" + a.prefix(8).map(\.description).joined(separator: ", ") + (a.count > 8 ? ", …]" : "]")
        case .string(let s): return "\"\(s.prefix(64))\""
        case .integer(let i): return String(i)
        case .number(let s): return s
        case .bool(let b): return String(b)
        case .null: return "null"
        }
    }
}

/// RFC 8259 JSON over raw bytes: bounds-checked at every step, nesting limited (so hostile input
/// cannot exhaust the stack), duplicate object keys rejected.
struct JSONParser {
    struct Failure: Error {
        let message: String
        let offset: Int
    }

    static let maximumDepth = 64
    let bytes: UnsafeRawBufferPointer
    var index = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    mutating func parseDocument() throws -> JSONValue {
        skipWhitespace()
        let value = try parseValue(depth: 0)
        skipWhitespace()
        guard index == bytes.count else { throw fail("unexpected trailing characters") }
        return value
    }

    private func fail(_ message: String) -> Failure { Failure(message: message, offset: index) }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while let c = current, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { index += 1 }
    }

    private mutating func expect(_ literal: String) throws {
        let start = index
        for c in literal.utf8 {
            guard current == c else { throw Failure(message: "expected \"\(literal)\"", offset: start) }
            index += 1
        }
    }

    private mutating func parseValue(depth: Int) throws -> JSONValue {
        guard depth <= JSONParser.maximumDepth else { throw fail("nesting deeper than \(JSONParser.maximumDepth) levels") }
        guard let c = current else { throw fail("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw fail("unexpected character '\(Character(Unicode.Scalar(c)))'")
        }
    }

    private mutating func parseObject(depth: Int) throws -> JSONValue {
        index += 1   // {
        var members: [(String, JSONValue)] = []
        var keys = Set<String>()
        skipWhitespace()
        if current == UInt8(ascii: "}") { index += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let keyOffset = index
            let key = try parseString()
            guard keys.insert(key).inserted else {
                throw Failure(message: "duplicate key \"\(key)\"", offset: keyOffset)
            }
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw fail("expected ':' after key \"\(key)\"") }
            index += 1
            skipWhitespace()
            members.append((key, try parseValue(depth: depth + 1)))
            skipWhitespace()
            guard let c = current else { throw fail("unterminated object") }
            index += 1
            if c == UInt8(ascii: "}") { return .object(members) }
            guard c == UInt8(ascii: ",") else { index -= 1; throw fail("expected ',' or '}' in object") }
        }
    }

    private mutating func parseArray(depth: Int) throws -> JSONValue {
        index += 1   // [
        var elements: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") { index += 1; return .array(elements) }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            guard let c = current else { throw fail("unterminated array") }
            index += 1
            if c == UInt8(ascii: "]") { return .array(elements) }
            guard c == UInt8(ascii: ",") else { index -= 1; throw fail("expected ',' or ']' in array") }
        }
    }

    private mutating func parseHex4() throws -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let c = current else { throw fail("unterminated \\u escape") }
            let digit: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw fail("invalid hex digit in \\u escape")
            }
            value = value * 16 + digit
            index += 1
        }
        return value
    }

    private mutating func parseString() throws -> String {
        index += 1   // opening quote
        var utf8: [UInt8] = []
        while true {
            guard let c = current else { throw fail("unterminated string") }
            index += 1
            switch c {
            case UInt8(ascii: "\""):
                // The header was validated as UTF-8 and escapes produce valid scalars.
                guard let s = String(validating: utf8, as: UTF8.self) else { throw fail("invalid UTF-8 in string") }
                return s
            case UInt8(ascii: "\\"):
                guard let e = current else { throw fail("unterminated escape") }
                index += 1
                switch e {
                case UInt8(ascii: "\""): utf8.append(0x22)
                case UInt8(ascii: "\\"): utf8.append(0x5C)
                case UInt8(ascii: "/"): utf8.append(0x2F)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try parseHex4()
                    if (0xD800...0xDBFF).contains(code) {
                        guard current == UInt8(ascii: "\\") else { throw fail("unpaired high surrogate in \\u escape") }
                        index += 1
                        guard current == UInt8(ascii: "u") else { throw fail("unpaired high surrogate in \\u escape") }
                        index += 1
                        let low = try parseHex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("invalid low surrogate in \\u escape") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(code) {
                        throw fail("unpaired low surrogate in \\u escape")
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw fail("invalid code point in \\u escape") }
                    utf8.append(contentsOf: Array(String(Character(scalar)).utf8))
                default:
                    index -= 1
                    throw fail("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
                }
            case 0x00..<0x20:
                index -= 1
                throw fail("unescaped control character in string")
            default:
                utf8.append(c)
            }
        }
    }

    private mutating func parseNumber() throws -> JSONValue {
        let start = index
        var isInteger = true
        if current == UInt8(ascii: "-") { index += 1 }
        guard let first = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { throw fail("expected a digit") }
        if first == UInt8(ascii: "0") {
            index += 1
        } else {
            while let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { index += 1 }
        }
        if current == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) else { throw fail("expected a digit after '.'") }
            while let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { index += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) else { throw fail("expected a digit in exponent") }
            while let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { index += 1 }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        if isInteger, let value = Int(text) { return .integer(value) }
        return .number(text)
    }
}

/// `s` as a JSON string literal: quotes, backslashes and control characters escaped, everything
/// else as raw UTF-8 (as serde_json writes it).
func jsonQuoted(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        case let c where c.value < 0x20:
            out += "\\u00" + (c.value < 0x10 ? "0" : "") + String(c.value, radix: 16)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
