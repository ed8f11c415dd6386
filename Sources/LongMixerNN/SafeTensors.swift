import Foundation
import LongMixerCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// safetensors (https://github.com/huggingface/safetensors, format described in its README):
//
//     [8 bytes: header length n, little-endian u64][n bytes: JSON header][byte buffer]
//
// The header is a JSON object mapping each tensor name to {"dtype", "shape", "data_offsets"}
// (offsets [begin, end) relative to the byte buffer), plus an optional "__metadata__" object of
// string → string. Tensor data is little-endian, row-major, with no gaps: sorted by offset, the
// tensors cover the byte buffer exactly.
//
// Writing: F32 for float tensors, I32 (default) or I64 for int tensors; keys sorted by their UTF-8
// bytes, data in the same order, "__metadata__" first, header padded with spaces to a multiple of
// 8 bytes (as Python's writer does). Reading: F32, F16 (widened to F32, exactly), I32 and I64
// (narrowed to Int32 with a range check). Every malformed input is a `SafeTensorsError` naming the
// values involved; no input makes the reader trap or read outside the bytes it was given.
//
// Validation matches Python's reader (safetensors 0.8: header length ≤ 100 MB and within the file,
// UTF-8 JSON, integer shapes and offsets, size = elements × dtype size, sorted offsets tiling the
// buffer with no gap, overlap or trailing bytes) and is deliberately stricter in two places Python
// lets through: an entry must have exactly the fields dtype, shape and data_offsets (Python ignores
// extra fields), and duplicate keys anywhere in the header are an error (Python keeps the last).

#if _endian(big)
#error("SafeTensors assumes a little-endian host (safetensors data is little-endian)")
#endif

/// A named tensor as stored in a safetensors file: float data (F32, or F16 widened on read) or
/// integer data (I32, or I64 narrowed on read).
public enum NamedTensor {
    case float(Tensor)
    /// I64 data is read into Int32 with a range check (an error if a value does not fit).
    case int(IntTensor)

    public var shape: [Int] {
        switch self {
        case .float(let t): return t.shape
        case .int(let t): return t.shape
        }
    }

    public var floatTensor: Tensor? { if case .float(let t) = self { return t } else { return nil } }
    public var intTensor: IntTensor? { if case .int(let t) = self { return t } else { return nil } }

    /// "float" or "int", for messages.
    var kindName: String {
        switch self {
        case .float: return "float"
        case .int: return "int"
        }
    }
}

public struct SafeTensorsError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum SafeTensors {
    /// Largest accepted header (the limit Python's safetensors enforces).
    public static let maximumHeaderLength = 100_000_000

    /// How `encode` stores `.int` tensors.
    public enum IntegerFormat: Sendable {
        /// I32: the values as held.
        case i32
        /// I64: widened, the layout `torch.long` index tensors use.
        case i64
    }

    /// Element types this reader understands.
    enum DType: String {
        case f32 = "F32", f16 = "F16", i32 = "I32", i64 = "I64"
        var size: Int {
            switch self {
            case .f16: return 2
            case .f32, .i32: return 4
            case .i64: return 8
            }
        }
    }

    // MARK: Encoding

    /// The bytes of a safetensors file holding `tensors` (and `metadata` as "__metadata__").
    /// Float tensors are written as F32, int tensors as I32 (or I64 with `integerFormat: .i64`).
    public static func encode(_ tensors: [String: NamedTensor], metadata: [String: String] = [:],
                              integerFormat: IntegerFormat = .i32) throws -> Data {
        if tensors["__metadata__"] != nil {
            throw SafeTensorsError("safetensors: \"__metadata__\" is reserved and cannot name a tensor")
        }
        let names = tensors.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }

        var header = "{"
        var first = true
        if !metadata.isEmpty {
            header += "\"__metadata__\":{"
            let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            header += keys.map { "\(jsonQuoted($0)):\(jsonQuoted(metadata[$0]!))" }.joined(separator: ",")
            header += "}"
            first = false
        }
        var offset = 0
        for name in names {
            let tensor = tensors[name]!
            let dtype: DType
            let count: Int
            switch tensor {
            case .float(let t): dtype = .f32; count = t.count
            case .int(let t): dtype = integerFormat == .i32 ? .i32 : .i64; count = t.count
            }
            let bytes = count * dtype.size
            if !first { header += "," }
            first = false
            header += "\(jsonQuoted(name)):{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[\(tensor.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}"
            offset += bytes
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        if headerBytes.count > maximumHeaderLength {
            throw SafeTensorsError("safetensors: header of \(headerBytes.count) bytes exceeds the \(maximumHeaderLength)-byte limit")
        }

        var out = Data(capacity: 8 + headerBytes.count + offset)
        var n = UInt64(headerBytes.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(contentsOf: headerBytes)
        for name in names {
            switch tensors[name]! {
            case .float(let t):
                out.append(UnsafeBufferPointer(start: t.pointer, count: t.count))
            case .int(let t):
                switch integerFormat {
                case .i32:
                    t.scalars.withUnsafeBufferPointer { out.append($0) }
                case .i64:
                    let wide = t.scalars.map { Int64($0).littleEndian }
                    wide.withUnsafeBufferPointer { out.append($0) }
                }
            }
        }
        check(out.count == 8 + headerBytes.count + offset, "safetensors: wrote \(out.count) bytes, planned \(8 + headerBytes.count + offset)")
        return out
    }

    /// Writes `tensors` to `url` atomically: the bytes go to a temporary file in the same directory,
    /// which is flushed to disk and then renamed over `url`. A failure leaves `url` as it was.
    public static func save(_ tensors: [String: NamedTensor], to url: URL, metadata: [String: String] = [:],
                            integerFormat: IntegerFormat = .i32) throws {
        let data = try encode(tensors, metadata: metadata, integerFormat: integerFormat)
        try writeAtomically(data, to: url)
    }

    // MARK: Decoding

    /// The tensors and metadata in safetensors `data`, after validating the whole file.
    public static func decode(_ data: Data) throws -> (tensors: [String: NamedTensor], metadata: [String: String]) {
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in try decode(raw) }
    }

    /// The tensors in the safetensors file at `url`.
    public static func load(from url: URL) throws -> [String: NamedTensor] {
        try loadWithMetadata(from: url).tensors
    }

    /// The tensors and metadata in the safetensors file at `url`.
    public static func loadWithMetadata(from url: URL) throws -> (tensors: [String: NamedTensor], metadata: [String: String]) {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw SafeTensorsError("safetensors: cannot read \(url.path): \(error.localizedDescription)")
        }
        do {
            return try decode(data)
        } catch let e as SafeTensorsError {
            throw SafeTensorsError("\(url.path): \(e.description)")
        }
    }

    private struct Entry {
        let name: String
        let dtype: DType
        let shape: [Int]
        let begin: Int
        let end: Int
    }

    private static func decode(_ raw: UnsafeRawBufferPointer) throws -> (tensors: [String: NamedTensor], metadata: [String: String]) {
        let fileSize = raw.count
        guard fileSize >= 8 else {
            throw SafeTensorsError("safetensors: file is \(fileSize) bytes, too short for the 8-byte header length")
        }
        var lengthLE: UInt64 = 0
        withUnsafeMutableBytes(of: &lengthLE) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[0..<8])) }
        let declared = UInt64(littleEndian: lengthLE)
        guard declared >= 2 else {
            throw SafeTensorsError("safetensors: header length \(declared) is too small (a JSON object needs at least 2 bytes)")
        }
        guard declared <= UInt64(maximumHeaderLength) else {
            throw SafeTensorsError("safetensors: header length \(declared) exceeds the \(maximumHeaderLength)-byte limit")
        }
        let headerLength = Int(declared)
        guard headerLength <= fileSize - 8 else {
            throw SafeTensorsError("safetensors: header length \(headerLength) exceeds the \(fileSize - 8) bytes after the length field (file truncated?)")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: raw[8..<(8 + headerLength)])
        let bufferStart = 8 + headerLength
        let bufferSize = fileSize - bufferStart

        guard String(validating: headerBytes, as: UTF8.self) != nil else {
            throw SafeTensorsError("safetensors: header is not valid UTF-8")
        }
        let json: JSONValue
        do {
            var parser = JSONParser(bytes: headerBytes)
            json = try parser.parseDocument()
        } catch let e as JSONParser.Failure {
            throw SafeTensorsError("safetensors: header is not valid JSON: \(e.message) at byte \(e.offset) of the header")
        }
        guard case .object(let members) = json else {
            throw SafeTensorsError("safetensors: header must be a JSON object")
        }

        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in members {
            if name == "__metadata__" {
                if case .null = value { continue }   // Python's reader takes null as "no metadata"
                guard case .object(let pairs) = value else {
                    throw SafeTensorsError("safetensors: \"__metadata__\" must be an object of strings, got \(value.typeName)")
                }
                for (key, v) in pairs {
                    guard case .string(let s) = v else {
                        throw SafeTensorsError("safetensors: metadata value for \"\(key)\" must be a string, got \(v.typeName)")
                    }
                    metadata[key] = s
                }
                continue
            }
            entries.append(try parseEntry(name: name, value, bufferSize: bufferSize))
        }

        // Sorted by offsets, the tensors must tile the buffer: no overlap, no gap, no trailing bytes.
        let sorted = entries.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var position = 0
        var previous: String?
        for e in sorted {
            if e.begin < position {
                throw SafeTensorsError("safetensors: tensor \"\(e.name)\" bytes [\(e.begin), \(e.end)) overlap tensor \"\(previous!)\" which ends at \(position)")
            }
            if e.begin > position {
                throw SafeTensorsError("safetensors: gap in the byte buffer: bytes [\(position), \(e.begin)) before tensor \"\(e.name)\" belong to no tensor")
            }
            position = e.end
            previous = e.name
        }
        if position != bufferSize {
            throw SafeTensorsError("safetensors: the tensors cover \(position) bytes but the byte buffer after the header has \(bufferSize) (file truncated or trailing bytes)")
        }

        var tensors: [String: NamedTensor] = [:]
        tensors.reserveCapacity(entries.count)
        for e in entries {
            let bytes = UnsafeRawBufferPointer(rebasing: raw[(bufferStart + e.begin)..<(bufferStart + e.end)])
            tensors[e.name] = try convert(e, bytes)
        }
        return (tensors, metadata)
    }

    private static func parseEntry(name: String, _ value: JSONValue, bufferSize: Int) throws -> Entry {
        guard case .object(let fields) = value else {
            throw SafeTensorsError("safetensors: entry \"\(name)\" must be an object, got \(value.typeName)")
        }
        let allowed: Set<String> = ["dtype", "shape", "data_offsets"]
        let present = Set(fields.map(\.0))
        if let extra = fields.map(\.0).first(where: { !allowed.contains($0) }) {
            throw SafeTensorsError("safetensors: entry \"\(name)\" has unexpected field \"\(extra)\" (expected exactly dtype, shape, data_offsets)")
        }
        for required in ["dtype", "shape", "data_offsets"] where !present.contains(required) {
            throw SafeTensorsError("safetensors: entry \"\(name)\" is missing \"\(required)\"")
        }
        let field = Dictionary(fields, uniquingKeysWith: { a, _ in a })

        guard case .string(let dtypeName) = field["dtype"]! else {
            throw SafeTensorsError("safetensors: entry \"\(name)\": dtype must be a string, got \(field["dtype"]!.typeName)")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw SafeTensorsError("safetensors: tensor \"\(name)\" has unsupported dtype \"\(dtypeName)\" (supported: F32, F16, I32, I64)")
        }

        guard case .array(let shapeValues) = field["shape"]! else {
            throw SafeTensorsError("safetensors: entry \"\(name)\": shape must be an array, got \(field["shape"]!.typeName)")
        }
        var shape: [Int] = []
        for (i, v) in shapeValues.enumerated() {
            shape.append(try nonNegativeInteger(v, "tensor \"\(name)\": shape[\(i)]"))
        }

        guard case .array(let offsetValues) = field["data_offsets"]!, offsetValues.count == 2 else {
            throw SafeTensorsError("safetensors: entry \"\(name)\": data_offsets must be an array [begin, end], got \(field["data_offsets"]!.description)")
        }
        let begin = try nonNegativeInteger(offsetValues[0], "tensor \"\(name)\": data_offsets begin")
        let end = try nonNegativeInteger(offsetValues[1], "tensor \"\(name)\": data_offsets end")
        guard begin <= end else {
            throw SafeTensorsError("safetensors: tensor \"\(name)\" has data_offsets [\(begin), \(end)] with begin > end")
        }
        guard end <= bufferSize else {
            throw SafeTensorsError("safetensors: tensor \"\(name)\" data_offsets [\(begin), \(end)] lie outside the \(bufferSize)-byte buffer (file truncated?)")
        }

        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else {
                throw SafeTensorsError("safetensors: tensor \"\(name)\" shape \(shape) has too many elements")
            }
            count = product
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, bytes == end - begin else {
            throw SafeTensorsError("safetensors: tensor \"\(name)\" \(dtype.rawValue) shape \(shape) needs \(overflow ? "too many" : String(bytes)) bytes, but data_offsets [\(begin), \(end)] span \(end - begin)")
        }
        return Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
    }

    private static func nonNegativeInteger(_ v: JSONValue, _ what: String) throws -> Int {
        switch v {
        case .integer(let i) where i >= 0: return i
        case .integer(let i): throw SafeTensorsError("safetensors: \(what) is negative (\(i))")
        default: throw SafeTensorsError("safetensors: \(what) must be a non-negative integer, got \(v.description)")
        }
    }

    private static func convert(_ e: Entry, _ bytes: UnsafeRawBufferPointer) throws -> NamedTensor {
        let count = bytes.count / e.dtype.size
        switch e.dtype {
        case .f32:
            var t = Tensor(uninitializedShape: e.shape)
            if count > 0 {
                t.withUnsafeMutablePointer { UnsafeMutableRawPointer($0).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            }
            return .float(t)
        case .f16:
            var t = Tensor(uninitializedShape: e.shape)
            t.withUnsafeMutablePointer { out in
                for i in 0..<count {
                    let bits = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    out[i] = floatFromHalfBits(bits)
                }
            }
            return .float(t)
        case .i32:
            var scalars = [Int32](repeating: 0, count: count)
            if count > 0 {
                scalars.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
            }
            return .int(IntTensor(shape: e.shape, scalars: scalars))
        case .i64:
            var scalars = [Int32](repeating: 0, count: count)
            for i in 0..<count {
                let v = Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
                guard let narrow = Int32(exactly: v) else {
                    throw SafeTensorsError("safetensors: tensor \"\(e.name)\" (I64) value \(v) at flat index \(i) does not fit in Int32")
                }
                scalars[i] = narrow
            }
            return .int(IntTensor(shape: e.shape, scalars: scalars))
        }
    }

    /// IEEE 754 binary16 bits → Float, exactly (every half value is a float value; subnormals,
    /// ±0, ±∞ and NaN — with its payload — carry over).
    @inline(__always)
    public static func floatFromHalfBits(_ bits: UInt16) -> Float {
        // Float16 exists on Linux x86_64 and arm64 (not on Intel macOS, hence the guard).
        #if os(Linux) && (arch(x86_64) || arch(arm64))
        return Float(Float16(bitPattern: bits))
        #else
        return floatFromHalfBitsReference(bits)
        #endif
    }

    /// The same conversion by bit manipulation (tests check `floatFromHalfBits` against it for all
    /// 65 536 patterns).
    public static func floatFromHalfBitsReference(_ bits: UInt16) -> Float {
        let sign = UInt32(bits >> 15) << 31
        let exponent = Int((bits >> 10) & 0x1F)
        let mantissa = UInt32(bits & 0x3FF)
        if exponent == 0x1F {          // ∞ or NaN: all-ones exponent, mantissa shifted into place
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        if exponent == 0 {
            if mantissa == 0 { return Float(bitPattern: sign) }   // ±0
            // Subnormal: mantissa · 2^−24, exactly representable as a normal float.
            let magnitude = Float(mantissa) * Float(sign: .plus, exponent: -24, significand: 1)
            return sign != 0 ? -magnitude : magnitude
        }
        return Float(bitPattern: sign | (UInt32(exponent - 15 + 127) << 23) | (mantissa << 13))
    }

    // MARK: Atomic file write

    /// Writes `data` to a temporary file beside `url`, flushes it to disk, renames it over `url` and
    /// flushes the folder: a reader sees the old file or the new one, never a part (also after a crash).
    public static func writeAtomically(_ data: Data, to url: URL) throws {
        let path = url.path
        let directory = url.deletingLastPathComponent().path
        var template = Array("\(directory)/.\(url.lastPathComponent).tmp-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw SafeTensorsError("safetensors: cannot create a temporary file in \(directory): \(String(cString: strerror(errno)))")
        }
        let tempPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var committed = false
        defer { if !committed { unlink(tempPath) } }

        var failure: String?
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var written = 0
            while written < raw.count {
                let n = write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = "cannot write \(tempPath): \(String(cString: strerror(errno)))"
                    return
                }
                written += n
            }
        }
        if failure == nil && fsync(fd) != 0 { failure = "cannot flush \(tempPath): \(String(cString: strerror(errno)))" }
        // Readable like a file written with the default umask (mkstemp creates it 0600).
        if failure == nil {
            let mask = umask(0); umask(mask)
            fchmod(fd, 0o666 & ~mask)
        }
        if close(fd) != 0 && failure == nil { failure = "cannot close \(tempPath): \(String(cString: strerror(errno)))" }
        if let failure { throw SafeTensorsError("safetensors: \(failure)") }
        guard rename(tempPath, path) == 0 else {
            throw SafeTensorsError("safetensors: cannot move \(tempPath) to \(path): \(String(cString: strerror(errno)))")
        }
        committed = true
        // Make the rename itself durable (best effort: some file systems refuse fsync on directories).
        let dirFD = open(directory, O_RDONLY)
        if dirFD >= 0 { _ = fsync(dirFD); close(dirFD) }
    }
}

// MARK: - Content checksum

/// FNV-1a, 64 bits: the checksum of weights files and checkpoint records.
public struct FNV1a {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    public init() {}
    public mutating func mix(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes { value = (value ^ UInt64(b)) &* 0x100_0000_01b3 }
    }
    public mutating func mix(_ data: Data) { data.withUnsafeBytes { mix($0) } }
    /// 16 hex digits.
    public var hex: String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

extension SafeTensors {
    /// Metadata key of the checksum `Module.saveWeights` records. The format has none of its own, so a
    /// flipped bit in a weight would otherwise load as a different, equally valid-looking model.
    public static let checksumKey = "longmixer.checksum"

    /// FNV-1a (64 bits) over every tensor in name order: its name, kind, shape and data, as 16 hex
    /// digits. Names and shapes are included so swapped or renamed entries change it too.
    public static func checksum(_ tensors: [String: NamedTensor]) -> String {
        var hash = FNV1a()
        func mix(_ bytes: UnsafeRawBufferPointer) { hash.mix(bytes) }
        func mix(_ value: Int) { withUnsafeBytes(of: Int64(value).littleEndian) { mix($0) } }
        for name in tensors.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            var utf8 = Array(name.utf8)
            utf8.withUnsafeBytes { mix($0) }
            utf8 = [0]
            utf8.withUnsafeBytes { mix($0) }
            let tensor = tensors[name]!
            mix(tensor.floatTensor != nil ? 1 : 2)
            mix(tensor.shape.count)
            for d in tensor.shape { mix(d) }
            switch tensor {
            case .float(let t): mix(UnsafeRawBufferPointer(start: t.pointer, count: t.count * 4))
            case .int(let t): t.scalars.withUnsafeBytes { mix($0) }
            }
        }
        return hash.hex
    }

    /// `save` with `checksum(tensors)` recorded in the metadata (what loading verifies); returns it.
    @discardableResult
    public static func saveWithChecksum(_ tensors: [String: NamedTensor], to url: URL, metadata: [String: String] = [:]) throws -> String {
        let sum = checksum(tensors)
        var metadata = metadata
        metadata[checksumKey] = sum
        try save(tensors, to: url, metadata: metadata)
        return sum
    }

    /// Throws when `metadata` records a checksum that `tensors` do not match (files without one —
    /// other writers, older runs — pass).
    public static func verifyChecksum(_ tensors: [String: NamedTensor], metadata: [String: String]) throws {
        guard let stored = metadata[checksumKey] else { return }
        let actual = checksum(tensors)
        guard stored == actual else {
            throw UserError(what: "weights", value: "checksum \(actual), recorded \(stored)",
                            why: "the tensors are not the ones that were saved (the file was damaged or edited after it was written)",
                            remedy: "use an intact copy of the file, or retrain")
        }
    }
}
