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

    static func writeAtomically(_ data: Data, to url: URL) throws {
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

extension SafeTensors {
    /// Metadata key of the checksum `Module.saveWeights` records. The format has none of its own, so a
    /// flipped bit in a weight would otherwise load as a different, equally valid-looking model.
    public static let checksumKey = "longmixer.checksum"

    /// FNV-1a (64 bits) over every tensor in name order: its name, kind, shape and data, as 16 hex
    /// digits. Names and shapes are included so swapped or renamed entries change it too.
    public static func checksum(_ tensors: [String: NamedTensor]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ bytes: UnsafeRawBufferPointer) {
            for b in bytes { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
        }
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
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
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

// MARK: - Module state dictionaries

extension Module {
    /// Parameters and buffers by dotted name (`namedParameters()` + `namedBuffers()`).
    public func stateDictionary() -> [String: NamedTensor] {
        var out: [String: NamedTensor] = [:]
        for (name, p) in namedParameters() { out[name] = .float(p.value) }
        for (name, b) in namedBuffers() { out[name] = .float(b.value) }
        return out
    }

    /// Saves `stateDictionary()` to `url` as safetensors (atomically).
    /// The metadata also records `SafeTensors.checksum` of the tensors, which loading verifies.
    public func saveWeights(to url: URL, metadata: [String: String] = [:]) throws {
        let state = stateDictionary()
        var metadata = metadata
        metadata[SafeTensors.checksumKey] = SafeTensors.checksum(state)
        try SafeTensors.save(state, to: url, metadata: metadata)
    }

    /// Loads parameters and buffers from the safetensors file at `url` (after verifying the checksum
    /// `saveWeights` recorded, if any). Strict: every name must be
    /// present as a float tensor with the right shape and there must be no extra names, else one
    /// error lists the missing, unexpected and mismatched names; nothing is modified unless
    /// everything matches.
    public func loadWeights(from url: URL) throws {
        let (tensors, metadata) = try SafeTensors.loadWithMetadata(from: url)
        try loadStateDictionary(tensors, metadata: metadata, file: url)
    }

    /// The checksum check, then `loadStateDictionary`, with errors prefixed by the file they came from.
    func loadStateDictionary(_ tensors: [String: NamedTensor], metadata: [String: String], file url: URL) throws {
        do {
            try SafeTensors.verifyChecksum(tensors, metadata: metadata)
            try loadStateDictionary(tensors)
        } catch let e as SafeTensorsError {
            throw SafeTensorsError("\(url.path): \(e.description)")
        } catch let e as UserError {
            throw UserError(e.kind, what: "\(url.path): \(e.what)", value: e.value, why: e.why, remedy: e.remedy)
        }
    }

    /// `loadWeights`, after comparing the model configuration recorded in the file's metadata (if the
    /// writer recorded one, under `StoredConfiguration.metadataKey`) with `configuration`, the one the
    /// model was built from: a mismatch is one usage error naming the field (see `StoredConfiguration`).
    /// `source` names where `configuration` came from, for the message.
    public func loadWeights(from url: URL, configuration: some Encodable, source: String, ignoring: Set<String> = []) throws {
        let (tensors, metadata) = try SafeTensors.loadWithMetadata(from: url)
        if let stored = metadata[StoredConfiguration.metadataKey] {
            try StoredConfiguration.check(stored: stored, used: configuration, source: source, ignoring: ignoring)
        }
        try loadStateDictionary(tensors, metadata: metadata, file: url)
    }

    /// `loadWeights` from tensors already in memory (same strict checks, same all-or-nothing rule).
    public func loadStateDictionary(_ tensors: [String: NamedTensor]) throws {
        var targets: [(String, [Int], (Tensor) -> Void)] = []
        for (name, p) in namedParameters() { targets.append((name, p.value.shape, { p.value = $0 })) }
        for (name, b) in namedBuffers() { targets.append((name, b.value.shape, { b.value = $0 })) }

        let expected = Set(targets.map(\.0))
        var missing: [String] = []
        var mismatched: [String] = []
        for (name, shape, _) in targets {
            guard let t = tensors[name] else { missing.append(name); continue }
            guard let f = t.floatTensor else {
                mismatched.append("\(name) (expected a float tensor of shape \(shape), file has an int tensor of shape \(t.shape))")
                continue
            }
            if f.shape != shape {
                mismatched.append("\(name) (expected shape \(shape), file has \(f.shape))")
            }
        }
        let unexpected = tensors.keys.filter { !expected.contains($0) }.sorted()
        if !missing.isEmpty || !unexpected.isEmpty || !mismatched.isEmpty {
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing: \(missing.sorted().joined(separator: ", "))") }
            if !unexpected.isEmpty { parts.append("unexpected: \(unexpected.joined(separator: ", "))") }
            if !mismatched.isEmpty { parts.append("mismatched: \(mismatched.sorted().joined(separator: "; "))") }
            throw SafeTensorsError("loadWeights into \(type(of: self)): \(parts.joined(separator: " · ")); nothing was loaded")
        }
        try validateValues(tensors, names: targets.map(\.0))
        for (name, _, assign) in targets { assign(tensors[name]!.floatTensor!) }
    }

    /// Every tensor finite, then each module's own meaning checks (`validateLoadedState`: permutations,
    /// rates), so a well-formed file with corrupt values is one error naming the tensor instead of a
    /// trap on first use or silent garbage.
    func validateValues(_ tensors: [String: NamedTensor], names: [String]) throws {
        for name in names {
            let t = tensors[name]!.floatTensor!
            let p = t.pointer
            for i in 0..<t.count where !p[i].isFinite {
                throw UserError(what: "tensor \"\(name)\"", value: "\(p[i]) at \(Self.position(i, shape: t.shape))",
                                why: "is not a finite number", remedy: Self.corruptRemedy)
            }
        }
        func visit(_ module: Module, prefix: String) throws {
            var local: [String: Tensor] = [:]
            for (name, _) in module.localParameters() { local[name] = tensors[prefix + name]?.floatTensor }
            for (name, _) in module.localBuffers() { local[name] = tensors[prefix + name]?.floatTensor }
            do { try module.validateLoadedState(local) } catch let v as LoadedStateViolation {
                throw UserError(what: "tensor \"\(prefix)\(v.tensor)\"", value: v.value, why: v.why, remedy: Self.corruptRemedy)
            }
            for (name, child) in module.namedChildren() { try visit(child, prefix: prefix + name + ".") }
        }
        try visit(self, prefix: "")
    }

    static let corruptRemedy = "the file is damaged or was not written for this model; use the run's own model.safetensors or retrain"

    /// `[i, j, …]` of flat index `flat` in a row-major tensor of `shape`.
    static func position(_ flat: Int, shape: [Int]) -> String {
        var rest = flat
        var index = [Int](repeating: 0, count: shape.count)
        for axis in shape.indices.reversed() where shape[axis] > 0 {
            index[axis] = rest % shape[axis]
            rest /= shape[axis]
        }
        return "[" + index.map(String.init).joined(separator: ", ") + "]"
    }
}

// MARK: - A strict JSON parser for the header

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
