import CZlib
import Foundation
import LongMixerCore

// Members of a zip archive read in process (Foundation has no zip API): enough for wheels, which
// store or deflate their files. The central directory is trusted only after bounds checks; a
// member's bytes are inflated (zlib, raw deflate) into exactly its declared size and checked
// against its CRC-32. ZIP64, encryption, multi-disk archives and other methods are refused.
// Every malformed input is a one-line `UserError` naming the archive.

public struct ZipArchive {
    public struct Entry: Equatable, Sendable {
        public var name: String
        /// 0 stored, 8 deflated.
        public var method: UInt16
        public var flags: UInt16
        public var crc32: UInt32
        public var compressedSize: Int
        public var size: Int
        public var localHeaderOffset: Int
    }

    /// Largest member this reader inflates (a corrupt size must not allocate without bound).
    public static let maximumMemberSize = 1 << 30

    let bytes: Data
    /// For messages.
    public let path: String
    public let entries: [Entry]

    public init(_ bytes: Data, path: String) throws {
        self.bytes = bytes
        self.path = path
        entries = try Self.centralDirectory(bytes, path: path)
    }

    public init(contentsOf url: URL) throws {
        try self.init(PreparedFiles.read(url, what: "zip archive"), path: url.path)
    }

    static func failure(_ path: String, _ why: String) -> UserError {
        UserError(what: "zip archive", value: path, why: why, remedy: "the file is damaged or not a zip archive; remove it and obtain it again")
    }

    @inline(__always) static func u16(_ b: UnsafeRawBufferPointer, _ at: Int) -> Int { Int(b[at]) | Int(b[at + 1]) << 8 }
    @inline(__always) static func u32(_ b: UnsafeRawBufferPointer, _ at: Int) -> Int { u16(b, at) | u16(b, at + 2) << 16 }

    static func centralDirectory(_ data: Data, path: String) throws -> [Entry] {
        try data.withUnsafeBytes { b -> [Entry] in
            let n = b.count
            guard n >= 22 else { throw failure(path, "\(n) bytes are too few for a zip archive") }
            // End of central directory: the last signature PK\5\6 within the final 64 KiB + 22 bytes.
            var eocd = -1
            var i = n - 22
            while i >= max(0, n - 22 - 65_535) {
                if b[i] == 0x50 && b[i + 1] == 0x4B && b[i + 2] == 0x05 && b[i + 3] == 0x06 { eocd = i; break }
                i -= 1
            }
            guard eocd >= 0 else { throw failure(path, "no end-of-central-directory record") }
            let disk = u16(b, eocd + 4), cdDisk = u16(b, eocd + 6), onDisk = u16(b, eocd + 8), total = u16(b, eocd + 10)
            let cdSize = u32(b, eocd + 12), cdOffset = u32(b, eocd + 16)
            if total == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF { throw failure(path, "ZIP64 archives are not supported") }
            guard disk == 0 && cdDisk == 0 && onDisk == total else { throw failure(path, "multi-disk archives are not supported") }
            guard cdOffset + cdSize <= eocd else { throw failure(path, "the central directory lies outside the archive") }
            var entries: [Entry] = []
            var p = cdOffset
            for k in 0..<total {
                guard p + 46 <= cdOffset + cdSize, u32(b, p) == 0x0201_4B50 else { throw failure(path, "central directory entry \(k + 1) is damaged") }
                let nameLength = u16(b, p + 28), extraLength = u16(b, p + 30), commentLength = u16(b, p + 32)
                let end = p + 46 + nameLength + extraLength + commentLength
                guard end <= cdOffset + cdSize else { throw failure(path, "central directory entry \(k + 1) runs past the directory") }
                let name = String(decoding: UnsafeRawBufferPointer(rebasing: b[(p + 46)..<(p + 46 + nameLength)]), as: UTF8.self)
                let e = Entry(name: name, method: UInt16(u16(b, p + 10)), flags: UInt16(u16(b, p + 8)), crc32: UInt32(u32(b, p + 16)),
                              compressedSize: u32(b, p + 20), size: u32(b, p + 24), localHeaderOffset: u32(b, p + 42))
                guard e.localHeaderOffset + 30 <= cdOffset else { throw failure(path, "member \(printable(name)) starts outside the archive") }
                entries.append(e)
                p = end
            }
            return entries
        }
    }

    /// The bytes of member `name`.
    public func extract(_ name: String) throws -> Data {
        guard let e = entries.first(where: { $0.name == name }) else {
            throw Self.failure(path, "has no member \(printable(name))")
        }
        return try extract(e)
    }

    public func extract(_ e: Entry) throws -> Data {
        let path = self.path
        guard e.flags & 1 == 0 else { throw Self.failure(path, "member \(printable(e.name)) is encrypted") }
        guard e.method == 0 || e.method == 8 else { throw Self.failure(path, "member \(printable(e.name)) uses compression method \(e.method) (only stored and deflated are read)") }
        guard e.size <= Self.maximumMemberSize else { throw Self.failure(path, "member \(printable(e.name)) declares \(e.size) bytes, over the \(Self.maximumMemberSize) this reader inflates") }
        // Deflate expands at most about 1032:1, so a larger declared size is damage (and must not be allocated).
        guard e.size <= e.compressedSize * 1032 + 64 else { throw Self.failure(path, "member \(printable(e.name)) declares \(e.size) bytes from \(e.compressedSize) compressed") }
        return try bytes.withUnsafeBytes { b -> Data in
            let h = e.localHeaderOffset
            guard h + 30 <= b.count, Self.u32(b, h) == 0x0403_4B50 else { throw Self.failure(path, "the local header of \(printable(e.name)) is damaged") }
            let start = h + 30 + Self.u16(b, h + 26) + Self.u16(b, h + 28)
            guard start <= b.count, e.compressedSize <= b.count - start else { throw Self.failure(path, "member \(printable(e.name)) runs past the end of the archive") }
            let input = UnsafeRawBufferPointer(rebasing: b[start..<(start + e.compressedSize)])
            var out = Data(count: e.size)
            if e.method == 0 {
                guard e.compressedSize == e.size else { throw Self.failure(path, "stored member \(printable(e.name)) has two different sizes") }
                out.withUnsafeMutableBytes { o in if e.size > 0 { o.copyMemory(from: input) } }
            } else {
                let produced = try out.withUnsafeMutableBytes { o in try Self.inflateRaw(input, into: o, member: e.name, path: path) }
                guard produced == e.size else { throw Self.failure(path, "member \(printable(e.name)) inflates to \(produced) bytes, not the declared \(e.size)") }
            }
            let crc = out.withUnsafeBytes { o in UInt32(CZlib.crc32(0, o.bindMemory(to: Bytef.self).baseAddress, uInt(o.count))) }
            guard crc == e.crc32 else { throw Self.failure(path, "member \(printable(e.name)) fails its CRC-32 check") }
            return out
        }
    }

    /// Inflates raw deflate data into `output`; returns the bytes produced (stops at the stream's
    /// end or when `output` is full).
    static func inflateRaw(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, member: String, path: String) throws -> Int {
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw UserError(.runtime, what: "zlib", why: "cannot start inflating")
        }
        defer { inflateEnd(&stream) }
        var empty: UInt8 = 0
        try withUnsafeMutablePointer(to: &empty) { fallback in
            stream.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress) ?? fallback
            stream.avail_in = uInt(input.count)
            stream.next_out = output.bindMemory(to: Bytef.self).baseAddress ?? fallback
            stream.avail_out = uInt(output.count)
            let status = inflate(&stream, Z_FINISH)
            switch status {
            case Z_STREAM_END: break
            case Z_BUF_ERROR where stream.avail_out == 0 && output.count > 0:
                throw failure(path, "member \(printable(member)) inflates to more than its declared \(output.count) bytes")
            default:
                throw failure(path, "member \(printable(member)) is not valid deflate data (\(status == Z_DATA_ERROR ? "corrupt stream" : "truncated stream"))")
            }
        }
        return output.count - Int(stream.avail_out)
    }

    // MARK: Writing (fixtures and round trips)

    /// A zip archive of `members` (deflated when `deflate`, else stored).
    static func make(_ members: [(name: String, data: [UInt8])], deflate: Bool = true) -> [UInt8] {
        var out: [UInt8] = [], central: [UInt8] = []
        func le16(_ v: Int, _ a: inout [UInt8]) { a += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
        func le32(_ v: Int, _ a: inout [UInt8]) { le16(v & 0xFFFF, &a); le16((v >> 16) & 0xFFFF, &a) }
        for m in members {
            let crc = m.data.withUnsafeBufferPointer { Int(CZlib.crc32(0, $0.baseAddress, uInt($0.count))) }
            let body = deflate ? deflateRaw(m.data) : m.data
            let name = Array(m.name.utf8), offset = out.count
            func header(_ a: inout [UInt8]) {
                le16(20, &a); le16(0, &a); le16(deflate ? 8 : 0, &a); le16(0, &a); le16(0x21, &a)
                le32(crc, &a); le32(body.count, &a); le32(m.data.count, &a); le16(name.count, &a); le16(0, &a)
            }
            le32(0x0403_4B50, &out); header(&out); out += name; out += body
            le32(0x0201_4B50, &central); le16(20, &central); header(&central)
            le16(0, &central); le16(0, &central); le16(0, &central); le32(0, &central); le32(offset, &central); central += name
        }
        let cdOffset = out.count
        out += central
        le32(0x0605_4B50, &out); le16(0, &out); le16(0, &out); le16(members.count, &out); le16(members.count, &out)
        le32(central.count, &out); le32(cdOffset, &out); le16(0, &out)
        return out
    }

    static func deflateRaw(_ data: [UInt8]) -> [UInt8] {
        var stream = z_stream()
        check(deflateInit2_(&stream, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK, "deflateInit2")
        defer { deflateEnd(&stream) }
        var out = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(data.count))) + 16)
        var input = data
        let produced = input.withUnsafeMutableBufferPointer { i in
            out.withUnsafeMutableBufferPointer { o -> Int in
                stream.next_in = i.baseAddress
                stream.avail_in = uInt(i.count)
                stream.next_out = o.baseAddress
                stream.avail_out = uInt(o.count)
                check(CZlib.deflate(&stream, Z_FINISH) == Z_STREAM_END, "deflate")
                return o.count - Int(stream.avail_out)
            }
        }
        return Array(out[0..<produced])
    }
}

// MARK: - CSV

/// RFC 4180 CSV: fields separated by commas, records by LF or CRLF; a field in double quotes may
/// hold commas, quotes (doubled) and line breaks.
enum CSV {
    /// Calls `body(recordNumber, fields)` for every record (1-based; a record spanning lines counts
    /// once); stops when it returns false. Throws a one-line error for an unterminated quoted field
    /// or a character after a closing quote.
    static func forEachRecord(_ data: Data, path: String, _ body: (Int, [[UInt8]]) throws -> Bool) throws {
        try data.withUnsafeBytes { raw in
            let b = raw.bindMemory(to: UInt8.self)
            var i = 0, record = 0, fields: [[UInt8]] = [], field: [UInt8] = []
            func fail(_ why: String) -> UserError {
                UserError(what: "CSV file", value: "\(path), record \(record)", why: why, remedy: "the file is damaged; obtain it again")
            }
            while i < b.count {
                record += 1
                fields.removeAll(keepingCapacity: true)
                while true {                                   // one field per turn
                    field.removeAll(keepingCapacity: true)
                    if i < b.count && b[i] == 0x22 {
                        i += 1
                        let opened = i
                        while true {
                            guard i < b.count else { throw fail("a quoted field opened at byte \(opened - 1) is never closed") }
                            if b[i] == 0x22 {
                                if i + 1 < b.count && b[i + 1] == 0x22 { field.append(0x22); i += 2; continue }
                                i += 1
                                break
                            }
                            field.append(b[i])
                            i += 1
                        }
                        guard i == b.count || b[i] == 0x2C || b[i] == 0x0A || (b[i] == 0x0D && i + 1 < b.count && b[i + 1] == 0x0A) else {
                            throw fail("a character follows a closing quote")
                        }
                    } else {
                        let start = i
                        while i < b.count && b[i] != 0x2C && b[i] != 0x0A { i += 1 }
                        var end = i
                        if i < b.count && b[i] == 0x0A && end > start && b[end - 1] == 0x0D { end -= 1 }
                        field.append(contentsOf: UnsafeBufferPointer(rebasing: b[start..<end]))
                    }
                    fields.append(field)
                    if i < b.count && b[i] == 0x2C { i += 1; continue }
                    if i < b.count && b[i] == 0x0D { i += 1 }
                    if i < b.count && b[i] == 0x0A { i += 1 }
                    break
                }
                if try !body(record, fields) { return }
            }
        }
    }
}
