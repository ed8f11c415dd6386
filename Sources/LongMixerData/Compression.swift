import CLZMA
import CZlib
import Foundation
import LongMixerCore

// Decompression of the data files the tasks read: gzip (IDX images, FASTA genomes), xz (FASTA
// genomes) and the zlib streams inside PNG files, through Debian's zlib and liblzma. Every failure is
// one `UserError` naming the file; output is bounded, so a corrupt or hostile file cannot exhaust memory.

/// One error line about a data file (`what` is the file; exit code 2: the input is wrong).
func dataFileError(_ name: String, _ why: String, remedy: String? = nil) -> UserError {
    UserError(what: name, why: why, remedy: remedy)
}

public enum CompressionFormat: String, Sendable {
    case none, gzip, xz

    /// Recognises gzip (1F 8B) and xz (FD 37 7A 58 5A 00) by their magic bytes.
    public static func detect(_ bytes: some Collection<UInt8>) -> CompressionFormat {
        if bytes.starts(with: [0x1F, 0x8B]) { return .gzip }
        if bytes.starts(with: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { return .xz }
        return .none
    }
}

public enum Decompression {
    /// Largest output accepted by default (the biggest file read here, MNIST's pickle, is 220 MB
    /// uncompressed; Fashion-MNIST's training images are 47 MB, a genome is under 10 MB).
    public static let defaultLimit = 1 << 30

    /// `data` decompressed if it is gzip or xz (by its magic bytes), else unchanged. `name` names the
    /// file in errors.
    public static func decompressIfNeeded(_ data: Data, name: String, limit: Int = defaultLimit) throws -> Data {
        switch CompressionFormat.detect(data.prefix(6)) {
        case .none: return data
        case .gzip: return try gunzip(data, name: name, limit: limit)
        case .xz: return try unxz(data, name: name, limit: limit)
        }
    }

    /// All members of a gzip file (concatenated members are one stream, as `gzip -d` reads them).
    public static func gunzip(_ data: Data, name: String, limit: Int = defaultLimit) throws -> Data {
        guard !data.isEmpty else { throw dataFileError(name, "is empty (expected gzip data)") }
        // windowBits 15 + 16: gzip wrapper only.
        return try inflate(data, windowBits: 15 + 16, name: name, kind: "gzip", expectedSize: nil, limit: limit, members: true)
    }

    /// A zlib stream (RFC 1950) that must inflate to exactly `expectedSize` bytes (PNG image data).
    public static func inflateZlib(_ data: Data, expectedSize: Int, name: String) throws -> Data {
        try inflate(data, windowBits: 15, name: name, kind: "zlib", expectedSize: expectedSize, limit: expectedSize, members: false)
    }

    private static func inflate(_ data: Data, windowBits: Int32, name: String, kind: String, expectedSize: Int?, limit: Int,
                                members: Bool) throws -> Data {
        var stream = z_stream()
        guard inflateInit2_(&stream, windowBits, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw UserError(.runtime, what: name, why: "zlib could not be initialised")
        }
        defer { inflateEnd(&stream) }
        guard !data.isEmpty else { throw dataFileError(name, "holds no \(kind) data") }
        guard data.count <= Int(UInt32.max) else { throw dataFileError(name, "is larger than 4 GiB") }
        var output = Data()
        // Deflate expands at most about 1032:1, so a tiny stream never gets a huge buffer.
        let chunk = min(max(min(expectedSize ?? data.count * 4, data.count * 1032), 1 << 16), 1 << 24)
        var buffer = [UInt8](repeating: 0, count: chunk)
        return try data.withUnsafeBytes { (input: UnsafeRawBufferPointer) -> Data in
            let base = input.bindMemory(to: UInt8.self).baseAddress!
            stream.next_in = UnsafeMutablePointer(mutating: base)
            stream.avail_in = uInt(input.count)
            reading: while true {
                let status: Int32 = buffer.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(out.count)
                    return CZlib.inflate(&stream, Z_NO_FLUSH)
                }
                let produced = chunk - Int(stream.avail_out)
                if output.count + produced > limit {
                    throw dataFileError(name, expectedSize == nil ? "inflates to more than \(limit) bytes" : "holds more image data than its header declares")
                }
                output.append(contentsOf: buffer[0..<produced])
                switch status {
                case Z_OK:
                    continue
                case Z_STREAM_END:
                    let rest = Int(stream.avail_in)
                    // A PNG's zlib stream ends the image data (bytes after it are ignored, as libpng does).
                    if rest == 0 || !members { break reading }
                    // Another gzip member follows; anything else is trailing garbage, which gzip refuses too.
                    let next = input.count - rest
                    guard rest >= 2, input[next] == 0x1F, input[next + 1] == 0x8B else {
                        throw dataFileError(name, "has \(rest) bytes of trailing garbage after the \(kind) data")
                    }
                    guard inflateReset(&stream) == Z_OK else { throw dataFileError(name, "corrupt \(kind) data") }
                    continue
                case Z_BUF_ERROR:
                    // No progress possible: the input ended inside the stream.
                    throw dataFileError(name, "is truncated (the \(kind) stream ends early)")
                default:
                    let message = stream.msg.map { String(cString: $0) } ?? "status \(status)"
                    throw dataFileError(name, "corrupt \(kind) data (\(message))")
                }
            }
            if let expectedSize, output.count != expectedSize {
                throw dataFileError(name, "holds \(output.count) bytes of image data, expected \(expectedSize)")
            }
            return output
        }
    }

    /// All streams of an .xz file.
    public static func unxz(_ data: Data, name: String, limit: Int = defaultLimit) throws -> Data {
        guard !data.isEmpty else { throw dataFileError(name, "is empty (expected xz data)") }
        var stream = lzma_stream()
        // LZMA_CONCATENATED (0x08): read every stream of the file, as `xz -d` does. The memory limit
        // bounds what a hostile header can make the decoder allocate.
        guard lzma_stream_decoder(&stream, 1 << 28, 0x08) == LZMA_OK else {
            throw UserError(.runtime, what: name, why: "liblzma could not be initialised")
        }
        defer { lzma_end(&stream) }
        var output = Data()
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        return try data.withUnsafeBytes { (input: UnsafeRawBufferPointer) -> Data in
            stream.next_in = input.bindMemory(to: UInt8.self).baseAddress
            stream.avail_in = input.count
            while true {
                let status = buffer.withUnsafeMutableBufferPointer { out -> lzma_ret in
                    stream.next_out = out.baseAddress
                    stream.avail_out = out.count
                    return lzma_code(&stream, LZMA_FINISH)
                }
                let produced = chunk - stream.avail_out
                if output.count + produced > limit { throw dataFileError(name, "decompresses to more than \(limit) bytes") }
                output.append(contentsOf: buffer[0..<produced])
                switch status {
                case LZMA_STREAM_END: return output
                case LZMA_OK: continue
                case LZMA_BUF_ERROR: throw dataFileError(name, "is truncated (the xz stream ends early)")
                case LZMA_FORMAT_ERROR: throw dataFileError(name, "is not xz data")
                case LZMA_MEMLIMIT_ERROR, LZMA_MEM_ERROR: throw dataFileError(name, "needs more decoder memory than allowed (corrupt xz header?)")
                case LZMA_OPTIONS_ERROR: throw dataFileError(name, "uses unsupported xz options")
                default: throw dataFileError(name, "corrupt xz data (liblzma status \(status.rawValue))")
                }
            }
        }
    }

    /// CRC-32 (the gzip/PNG polynomial) of `bytes`, continuing from `crc`.
    public static func crc32(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return UInt32(truncatingIfNeeded: crc32_z(uLong(crc), base.assumingMemoryBound(to: Bytef.self), bytes.count))
    }

    public static func crc32(_ data: Data, continuing crc: UInt32 = 0) -> UInt32 {
        data.withUnsafeBytes { crc32($0, continuing: crc) }
    }
}

/// Compression of small buffers (test fixtures, exported PNGs).
public enum Compressor {
    /// A zlib stream (RFC 1950).
    public static func zlib(_ bytes: [UInt8]) -> [UInt8] { deflate(bytes, windowBits: 15) }

    /// A one-member gzip file.
    public static func gzip(_ bytes: [UInt8]) -> [UInt8] { deflate(bytes, windowBits: 15 + 16) }

    static func deflate(_ bytes: [UInt8], windowBits: Int32) -> [UInt8] {
        var stream = z_stream()
        let ok = deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, windowBits, 8, Z_DEFAULT_STRATEGY, zlibVersion(),
                               Int32(MemoryLayout<z_stream>.size))
        check(ok == Z_OK, "deflateInit2 failed (\(ok))")
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))) + 64)
        let status: Int32 = bytes.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
                stream.avail_in = uInt(input.count)
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(out.count)
                return CZlib.deflate(&stream, Z_FINISH)
            }
        }
        check(status == Z_STREAM_END, "deflate did not finish (\(status))")
        return Array(output[0..<Int(stream.total_out)])
    }

    /// An .xz file (preset 6, CRC-64 check).
    public static func xz(_ bytes: [UInt8]) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: lzma_stream_buffer_bound(bytes.count))
        var written = 0
        let status = bytes.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                lzma_easy_buffer_encode(6, LZMA_CHECK_CRC64, nil, input.baseAddress, input.count, out.baseAddress, &written, out.count)
            }
        }
        check(status == LZMA_OK, "lzma_easy_buffer_encode failed (\(status.rawValue))")
        return Array(output[0..<written])
    }
}
