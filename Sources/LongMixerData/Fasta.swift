import Foundation
import LongMixerCore

// FASTA files (plain, gzip or xz): one record per '>' header line, its sequence on the lines that
// follow. Bases are normalised to upper-case A, C, G, T; N and the other IUPAC ambiguity codes
// (R Y K M S W B D H V) become N; lower case (soft-masked repeats) is upper-cased. Anything else in a
// sequence line (gaps, digits, binary) is refused with the line number.

public struct FastaRecord: Equatable, Sendable {
    /// The header line without its '>'.
    public var header: String
    /// Normalised bases (ASCII A, C, G, T, N).
    public var bases: [UInt8]

    public init(header: String, bases: [UInt8]) {
        self.header = header
        self.bases = bases
    }
}

public enum FastaReader {
    /// What each byte of a sequence line becomes: a base, 1 (skipped: blanks, CR) or 0 (refused).
    static let table: [UInt8] = {
        var t = [UInt8](repeating: 0, count: 256)
        for c in "ACGTN".utf8 { t[Int(c)] = c; t[Int(c) | 0x20] = c }
        for c in "RYKMSWBDHV".utf8 { t[Int(c)] = UInt8(ascii: "N"); t[Int(c) | 0x20] = UInt8(ascii: "N") }
        for c in [UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r")] { t[Int(c)] = 1 }
        return t
    }()

    /// Largest decompressed file accepted (the genomes read here are under 10 MB).
    public static let sizeLimit = 1 << 30

    public static func read(_ data: Data, name: String) throws -> [FastaRecord] {
        let text = try Decompression.decompressIfNeeded(data, name: name, limit: sizeLimit)
        guard !text.isEmpty else { throw dataFileError(name, "is empty") }
        var records: [FastaRecord] = []
        var bases: [UInt8] = []
        var header: String?
        var lineNumber = 0
        try text.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let bytes = raw.bindMemory(to: UInt8.self)
            var start = 0
            while start < bytes.count {
                var end = start
                while end < bytes.count && bytes[end] != UInt8(ascii: "\n") { end += 1 }
                lineNumber += 1
                let line = UnsafeBufferPointer(rebasing: bytes[start..<end])
                start = end + 1
                guard let first = line.first else { continue }
                if first == UInt8(ascii: ">") {
                    if let h = header { records.append(FastaRecord(header: h, bases: bases)) }
                    bases.removeAll(keepingCapacity: true)
                    guard let h = String(validating: line.dropFirst(), as: UTF8.self) else {
                        throw dataFileError(name, "line \(lineNumber): the header is not valid UTF-8")
                    }
                    header = h.trimmingCharacters(in: .whitespacesAndNewlines)
                    continue
                }
                if first == UInt8(ascii: ";") { continue }   // comment line of the original FASTA format
                for (i, c) in line.enumerated() {
                    let v = table[Int(c)]
                    if v > 1 { bases.append(v); continue }
                    if v == 1 { continue }
                    let shown = c >= 0x21 && c < 0x7F ? "'\(Character(Unicode.Scalar(c)))'" : "byte 0x\(String(c, radix: 16))"
                    throw dataFileError(name, "line \(lineNumber), column \(i + 1): \(shown) is not a nucleotide code")
                }
                if header == nil && !bases.isEmpty {
                    throw dataFileError(name, "line \(lineNumber): sequence before the first '>' header (not FASTA?)")
                }
            }
        }
        if let h = header { records.append(FastaRecord(header: h, bases: bases)) }
        guard !records.isEmpty else { throw dataFileError(name, "holds no FASTA records") }
        return records
    }
}
