import Foundation
import LongMixerCore

// A PNG reader for the LRA Pathfinder release (8-bit grayscale PNGs) that also takes the other
// non-interlaced PNG kinds and converts them to 8-bit gray the way PIL's convert("L") does. Chunk CRCs
// are checked; image data are inflated with zlib. Everything else is refused with one error line.

/// An 8-bit grayscale image, row-major.
public struct GrayImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]
}

/// PIL's RGB → L: ITU-R 601-2 luma in 16-bit fixed point with rounding,
/// L = (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16 (≈ R·299/1000 + G·587/1000 + B·114/1000).
@inline(__always)
public func luma(_ r: UInt8, _ g: UInt8, _ b: UInt8) -> UInt8 {
    let red = Int(r) * 19595, green = Int(g) * 38470, blue = Int(b) * 7471
    return UInt8((red + green + blue + 0x8000) >> 16)
}

public enum PNGDecoder {
    /// Largest image accepted (side and pixel count), far above what the tasks read.
    static let maxSide = 1 << 14, maxPixels = 1 << 26

    public static func decodeGray(_ data: Data, name: String) throws -> GrayImage {
        let bytes = [UInt8](data)
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        guard bytes.count >= 8, Array(bytes[0..<8]) == signature else { throw dataFileError(name, "is not a PNG file (bad signature)") }
        func u32(_ at: Int) -> Int { Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3]) }
        var at = 8
        var width = 0, height = 0, depth = 0, color = -1
        var palette: [UInt8] = []
        var compressed = Data()
        var sawHeader = false, sawEnd = false
        while at < bytes.count {
            guard at + 12 <= bytes.count else { throw dataFileError(name, "is truncated (a chunk header is cut off)") }
            let length = u32(at)
            guard bytes[at + 4..<at + 8].allSatisfy({ ($0 | 0x20) >= 0x61 && ($0 | 0x20) <= 0x7A }) else {
                throw dataFileError(name, "has a malformed chunk at byte \(at) (its type is not four letters)")
            }
            let type = String(decoding: bytes[at + 4..<at + 8], as: UTF8.self)
            guard length <= bytes.count - at - 12 else { throw dataFileError(name, "is truncated (chunk \(type) is cut off)") }
            let body = at + 8..<at + 8 + length
            let crc = bytes[at + 4..<at + 8 + length].withUnsafeBytes { Decompression.crc32($0) }
            guard crc == UInt32(u32(at + 8 + length)) else { throw dataFileError(name, "is corrupt (CRC mismatch in chunk \(type))") }
            if !sawHeader && type != "IHDR" { throw dataFileError(name, "does not start with an IHDR chunk") }
            switch type {
            case "IHDR":
                guard !sawHeader, length == 13 else { throw dataFileError(name, "has a malformed IHDR chunk") }
                sawHeader = true
                width = u32(body.lowerBound); height = u32(body.lowerBound + 4)
                depth = Int(bytes[body.lowerBound + 8]); color = Int(bytes[body.lowerBound + 9])
                let method = bytes[body.lowerBound + 10], filter = bytes[body.lowerBound + 11], interlace = bytes[body.lowerBound + 12]
                guard (1...maxSide).contains(width), (1...maxSide).contains(height), width * height <= maxPixels else {
                    throw dataFileError(name, "has an unsupported size \(width)×\(height)")
                }
                let allowed: [Int: [Int]] = [0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]]
                guard allowed[color]?.contains(depth) == true else {
                    throw dataFileError(name, "has an invalid colour type \(color) / bit depth \(depth)")
                }
                guard method == 0, filter == 0 else { throw dataFileError(name, "uses an unknown compression or filter method") }
                guard interlace == 0 else { throw dataFileError(name, "is interlaced (Adam7), which this reader does not support") }
            case "PLTE":
                guard length % 3 == 0, length > 0, length <= 768 else { throw dataFileError(name, "has a malformed palette") }
                palette = Array(bytes[body])
            case "IDAT":
                compressed.append(contentsOf: bytes[body])
            case "IEND":
                sawEnd = true
            default:
                // Ancillary chunks (lower-case first letter) are skipped; unknown critical ones refused.
                guard let first = type.utf8.first, first & 0x20 != 0 else { throw dataFileError(name, "has an unknown critical chunk \(type)") }
            }
            at = body.upperBound + 4
            if sawEnd { break }
        }
        guard sawHeader else { throw dataFileError(name, "has no IHDR chunk") }
        guard sawEnd else { throw dataFileError(name, "is truncated (no IEND chunk)") }
        guard !compressed.isEmpty else { throw dataFileError(name, "has no image data") }
        if color == 3 && palette.isEmpty { throw dataFileError(name, "is a palette image without a palette") }

        let channels = [0: 1, 2: 3, 3: 1, 4: 2, 6: 4][color]!
        let bitsPerPixel = channels * depth
        let rowBytes = (width * bitsPerPixel + 7) / 8
        let stride = max(1, bitsPerPixel / 8)       // bytes between corresponding bytes of neighbours
        let raw = try Decompression.inflateZlib(compressed, expectedSize: height * (rowBytes + 1), name: name)
        var rows = [UInt8](repeating: 0, count: height * rowBytes)
        try raw.withUnsafeBytes { (src: UnsafeRawBufferPointer) in
            for y in 0..<height {
                let filter = src[y * (rowBytes + 1)]
                let line = y * (rowBytes + 1) + 1
                for i in 0..<rowBytes {
                    let x = Int(src[line + i])
                    let a = i >= stride ? Int(rows[y * rowBytes + i - stride]) : 0
                    let b = y > 0 ? Int(rows[(y - 1) * rowBytes + i]) : 0
                    let c = (i >= stride && y > 0) ? Int(rows[(y - 1) * rowBytes + i - stride]) : 0
                    guard let predicted = prediction(filter: filter, left: a, up: b, upLeft: c) else {
                        throw dataFileError(name, "has an unknown row filter \(filter) in row \(y)")
                    }
                    rows[y * rowBytes + i] = UInt8(truncatingIfNeeded: x + predicted)
                }
            }
        }
        // To 8-bit gray.
        var pixels = [UInt8](repeating: 0, count: width * height)
        for y in 0..<height {
            let row = y * rowBytes
            for x in 0..<width {
                func sample(_ channel: Int) -> UInt8 {
                    // 16-bit samples keep their high byte; low depths are scaled to 0…255.
                    if depth == 16 { return rows[row + (x * channels + channel) * 2] }
                    if depth == 8 { return rows[row + x * channels + channel] }
                    let bit = x * depth
                    let v = Int(rows[row + bit / 8]) >> (8 - depth - bit % 8) & ((1 << depth) - 1)
                    return color == 3 ? UInt8(v) : UInt8(v * 255 / ((1 << depth) - 1))
                }
                switch color {
                case 0, 4: pixels[y * width + x] = sample(0)
                case 2, 6: pixels[y * width + x] = luma(sample(0), sample(1), sample(2))
                default:
                    let index = Int(sample(0))
                    guard index * 3 + 2 < palette.count else { throw dataFileError(name, "uses palette entry \(index) beyond its \(palette.count / 3) entries") }
                    pixels[y * width + x] = luma(palette[index * 3], palette[index * 3 + 1], palette[index * 3 + 2])
                }
            }
        }
        return GrayImage(width: width, height: height, pixels: pixels)
    }

    /// What a row filter (0 none, 1 sub, 2 up, 3 average, 4 Paeth) predicts a byte from its left,
    /// upper and upper-left neighbours (nil: no such filter).
    @inline(__always)
    static func prediction(filter: UInt8, left a: Int, up b: Int, upLeft c: Int) -> Int? {
        switch filter {
        case 0: return 0
        case 1: return a
        case 2: return b
        case 3: return (a + b) / 2
        case 4:
            let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
            return pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
        default: return nil
        }
    }

    /// An 8-bit grayscale PNG (filter 0, one IDAT): for tests and for exporting samples to look at.
    public static func encodeGray(_ image: GrayImage) -> Data {
        var raw = [UInt8]()
        for y in 0..<image.height {
            raw.append(0)
            raw.append(contentsOf: image.pixels[y * image.width..<(y + 1) * image.width])
        }
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        func chunk(_ type: String, _ body: [UInt8]) {
            func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
            out += be(UInt32(body.count))
            let typed = Array(type.utf8) + body
            out += typed
            out += be(typed.withUnsafeBytes { Decompression.crc32($0) })
        }
        func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
        chunk("IHDR", be32(image.width) + be32(image.height) + [8, 0, 0, 0, 0])
        chunk("IDAT", Compressor.zlib(raw))
        chunk("IEND", [])
        return Data(out)
    }
}
