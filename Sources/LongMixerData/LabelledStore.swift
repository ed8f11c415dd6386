import Foundation
import LongMixerCore

// One split of a prepared task in one file: labelled records of bytes (8-bit images, DNA tokens)
// behind a small header and a CRC-32, instead of hundreds of thousands of small files. Written by
// `longmixer data prepare`, read (mapped, verified) when training starts.
//
// Layout, little-endian:
//
//     0   magic "LMSTORE1"            8 bytes
//     8   version (1)                 u32
//     12  kind (0 fixed-size, 1 variable-size records)  u32
//     16  width, height               u32, u32   (fixed-size: every record is width·height bytes; variable: 0, 0)
//     24  classes                     u32        (1…256; labels are u8)
//     28  reserved (0)                u32
//     32  count                       u64
//     40  payload bytes               u64
//     48  metadata bytes              u64
//     56  CRC-32 of everything after the header  u32
//     60  CRC-32 of bytes 0..<60      u32
//     64  payload | labels (count × u8) | [variable: offsets ((count + 1) × u64)] | metadata (UTF-8 JSON)
//
// The metadata JSON holds a one-line description of the data's origin and the class names.

public struct LabelledStoreHeader: Equatable, Sendable {
    public enum Kind: UInt32, Sendable { case fixedSize = 0, variableSize = 1 }
    public var kind: Kind
    public var width: Int
    public var height: Int
    public var classes: Int
    public var count: Int
    public var payloadBytes: Int
    public var metadataBytes: Int
    var dataCRC: UInt32

    static let magic = Array("LMSTORE1".utf8)
    static let version: UInt32 = 1
    public static let size = 64
    /// Caps that keep every size computation far from overflow.
    static let maxCount = 1 << 36, maxBytes = 1 << 46, maxMetadata = 1 << 24, maxSide = 1 << 16

    public var recordBytes: Int? { kind == .fixedSize ? width * height : nil }

    /// The file size this header implies.
    public var fileSize: Int {
        Self.size + payloadBytes + count + (kind == .variableSize ? 8 * (count + 1) : 0) + metadataBytes
    }

    func encoded() -> [UInt8] {
        var b: [UInt8] = Self.magic
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        func u64(_ v: Int) { withUnsafeBytes(of: UInt64(v).littleEndian) { b.append(contentsOf: $0) } }
        u32(Self.version); u32(kind.rawValue); u32(UInt32(width)); u32(UInt32(height)); u32(UInt32(classes)); u32(0)
        u64(count); u64(payloadBytes); u64(metadataBytes); u32(dataCRC)
        let crc = b.withUnsafeBytes { Decompression.crc32($0) }
        u32(crc)
        return b
    }

    /// Parses and range-checks a header (`name` names the file in errors).
    static func decode(_ bytes: UnsafeRawBufferPointer, name: String) throws -> LabelledStoreHeader {
        guard bytes.count >= size else { throw dataFileError(name, "is truncated (\(bytes.count) bytes, shorter than the \(size)-byte header)") }
        guard Array(bytes[0..<8]) == magic else { throw dataFileError(name, "is not a LongMixer data store (bad magic)") }
        func u32(_ at: Int) -> UInt32 { UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
        func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        guard Decompression.crc32(UnsafeRawBufferPointer(rebasing: bytes[0..<60])) == u32(60) else {
            throw dataFileError(name, "has a corrupt header (checksum mismatch)")
        }
        guard u32(8) == version else { throw dataFileError(name, "has store version \(u32(8)); this build reads version \(version)") }
        guard let kind = Kind(rawValue: u32(12)) else { throw dataFileError(name, "has an unknown record kind \(u32(12))") }
        let width = Int(u32(16)), height = Int(u32(20)), classes = Int(u32(24))
        guard (1...256).contains(classes) else { throw dataFileError(name, "declares \(classes) classes (1…256 allowed)") }
        guard u64(32) <= UInt64(maxCount), u64(40) <= UInt64(maxBytes), u64(48) <= UInt64(maxMetadata) else {
            throw dataFileError(name, "declares impossible sizes")
        }
        let header = LabelledStoreHeader(kind: kind, width: width, height: height, classes: classes, count: Int(u64(32)),
                                         payloadBytes: Int(u64(40)), metadataBytes: Int(u64(48)), dataCRC: u32(56))
        switch kind {
        case .fixedSize:
            guard (1...maxSide).contains(width) && (1...maxSide).contains(height) else {
                throw dataFileError(name, "declares a \(width)×\(height) record")
            }
            let (bytes, overflow) = header.count.multipliedReportingOverflow(by: width * height)
            guard !overflow && header.payloadBytes == bytes else {
                throw dataFileError(name, "holds \(header.payloadBytes) bytes of records, expected \(header.count) × \(width)×\(height)")
            }
        case .variableSize:
            guard width == 0 && height == 0 else { throw dataFileError(name, "declares a grid for variable-size records") }
        }
        return header
    }
}

/// What the metadata JSON holds.
struct LabelledStoreMetadata: Codable, Equatable {
    var description: String
    var classes: [String]
}

/// A split read from its store file: records and labels, checked against the checksum.
public struct LabelledStore: @unchecked Sendable {
    public let header: LabelledStoreHeader
    /// Where the data came from (one line).
    public let description: String
    public let classNames: [String]
    public let labels: [UInt8]
    /// Record i is payload[offsets[i] ..< offsets[i + 1]].
    public let offsets: [Int]
    /// The whole file (mapped); records are read in place.
    let data: Data

    public var count: Int { header.count }

    /// The header and metadata of the store at `url`, and a check that the file has the size the
    /// header implies (no checksum pass: what `data list` shows). Throws for a missing, short or
    /// malformed file.
    static func inspect(_ url: URL) throws -> (LabelledStoreHeader, LabelledStoreMetadata) {
        let name = url.path
        guard let handle = FileHandle(forReadingAtPath: url.path) else { throw dataFileError(name, "is missing or unreadable") }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: LabelledStoreHeader.size)) ?? Data()
        let header = try head.withUnsafeBytes { try LabelledStoreHeader.decode($0, name: name) }
        let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? -1
        guard size == header.fileSize else {
            throw dataFileError(name, size < header.fileSize ? "is truncated (\(size) of \(header.fileSize) bytes)" : "has \(size - header.fileSize) unexpected trailing bytes")
        }
        let tail = (try? handle.seek(toOffset: UInt64(size - header.metadataBytes))).flatMap { _ in try? handle.read(upToCount: header.metadataBytes) } ?? Data()
        guard let metadata = try? JSONDecoder().decode(LabelledStoreMetadata.self, from: tail) else {
            throw dataFileError(name, "has unreadable metadata")
        }
        return (header, metadata)
    }

    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw dataFileError(url.path, "cannot be read (\(error.localizedDescription))")
        }
        try self.init(data: data, name: url.path)
    }

    /// Parses and verifies a whole store image (`name` names it in errors).
    public init(data: Data, name: String) throws {
        let data = data.startIndex == 0 ? data : Data(data)   // slices below index from 0
        let header = try data.withUnsafeBytes { try LabelledStoreHeader.decode($0, name: name) }
        guard data.count == header.fileSize else {
            throw dataFileError(name, data.count < header.fileSize ? "is truncated (\(data.count) of \(header.fileSize) bytes)"
                                  : "has \(data.count - header.fileSize) unexpected trailing bytes")
        }
        let body = data.withUnsafeBytes { Decompression.crc32(UnsafeRawBufferPointer(rebasing: $0[LabelledStoreHeader.size...])) }
        guard body == header.dataCRC else { throw dataFileError(name, "is corrupt (checksum mismatch)") }
        let labelsStart = LabelledStoreHeader.size + header.payloadBytes
        let labels = [UInt8](data[labelsStart..<labelsStart + header.count])
        if let bad = labels.first(where: { Int($0) >= header.classes }) {
            throw dataFileError(name, "has label \(bad) outside its \(header.classes) classes")
        }
        var offsets: [Int]
        var metadataStart = labelsStart + header.count
        switch header.kind {
        case .fixedSize:
            let r = header.width * header.height
            offsets = (0...header.count).map { $0 * r }
        case .variableSize:
            offsets = data.withUnsafeBytes { raw in
                (0...header.count).map { Int(truncatingIfNeeded: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: metadataStart + 8 * $0, as: UInt64.self))) }
            }
            guard offsets.first == 0, offsets.last == header.payloadBytes, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 <= $1 }) else {
                throw dataFileError(name, "has inconsistent record offsets")
            }
            metadataStart += 8 * (header.count + 1)
        }
        let metadata: LabelledStoreMetadata
        do { metadata = try JSONDecoder().decode(LabelledStoreMetadata.self, from: data[metadataStart..<metadataStart + header.metadataBytes]) } catch {
            throw dataFileError(name, "has unreadable metadata")
        }
        guard metadata.classes.count == header.classes else {
            throw dataFileError(name, "names \(metadata.classes.count) classes but declares \(header.classes)")
        }
        self.header = header
        self.description = metadata.description
        self.classNames = metadata.classes
        self.labels = labels
        self.offsets = offsets
        self.data = data
    }

    /// Bytes of record `index`, valid inside `body`.
    public func withRecord<R>(_ index: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        check(index >= 0 && index < count, "record \(index) is outside the \(count) records")
        return try data.withUnsafeBytes { raw in
            let start = LabelledStoreHeader.size + offsets[index]
            return try body(UnsafeBufferPointer(rebasing: raw.bindMemory(to: UInt8.self)[start..<LabelledStoreHeader.size + offsets[index + 1]]))
        }
    }

    public func record(_ index: Int) -> [UInt8] { withRecord(index) { Array($0) } }

    public func recordLength(_ index: Int) -> Int { offsets[index + 1] - offsets[index] }

    /// Samples per class.
    public var classCounts: [Int] {
        var c = [Int](repeating: 0, count: header.classes)
        for l in labels { c[Int(l)] += 1 }
        return c
    }
}

/// Writes a store file record by record (`finish()` completes it; until then the file is not valid).
public final class LabelledStoreWriter {
    let url: URL
    let handle: FileHandle
    var header: LabelledStoreHeader
    let metadata: Data
    var labels: [UInt8] = []
    var offsets: [Int] = [0]
    var pending = Data()
    var crc: UInt32 = 0
    var finished = false

    /// Fixed-size records of `width`·`height` bytes (width 0: variable-size records).
    public init(url: URL, width: Int = 0, height: Int = 0, classNames: [String], description: String) throws {
        check((1...256).contains(classNames.count), "a store holds 1…256 classes, got \(classNames.count)")
        self.url = url
        let kind: LabelledStoreHeader.Kind = width > 0 ? .fixedSize : .variableSize
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]   // the same data give the same bytes
        metadata = try encoder.encode(LabelledStoreMetadata(description: description, classes: classNames))
        header = LabelledStoreHeader(kind: kind, width: width, height: height, classes: classNames.count, count: 0, payloadBytes: 0,
                                     metadataBytes: metadata.count, dataCRC: 0)
        guard FileManager.default.createFile(atPath: url.path, contents: Data(count: LabelledStoreHeader.size)),
              let handle = FileHandle(forWritingAtPath: url.path) else {
            throw UserError(.runtime, what: url.path, why: "cannot be created", remedy: "check the folder's permissions and free space")
        }
        self.handle = handle
        try handle.seekToEnd()
    }

    deinit { try? handle.close() }

    /// Appends one record; fixed-size stores need exactly width·height bytes.
    public func append(label: Int, _ bytes: UnsafeBufferPointer<UInt8>) throws {
        check(!finished, "append after finish")
        check(label >= 0 && label < header.classes, "label \(label) outside \(header.classes) classes")
        if let r = header.recordBytes { check(bytes.count == r, "record of \(bytes.count) bytes, the store's are \(r)") }
        labels.append(UInt8(label))
        offsets.append(offsets.last! + bytes.count)
        pending.append(bytes)
        if pending.count >= 1 << 22 { try flush() }
    }

    public func append(label: Int, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBufferPointer { try append(label: label, $0) }
    }

    private func write(_ data: Data) throws {
        crc = Decompression.crc32(data, continuing: crc)
        do { try handle.write(contentsOf: data) } catch {
            throw UserError(.runtime, what: url.path, why: "cannot be written (\(error.localizedDescription))", remedy: "check the free space")
        }
    }

    private func flush() throws {
        try write(pending)
        pending.removeAll(keepingCapacity: true)
    }

    /// Writes labels, offsets, metadata and the header; the file is complete afterwards.
    public func finish() throws {
        check(!finished, "finish twice")
        try flush()
        try write(Data(labels))
        if header.kind == .variableSize {
            var table = Data(capacity: 8 * offsets.count)
            for o in offsets { withUnsafeBytes(of: UInt64(o).littleEndian) { table.append(contentsOf: $0) } }
            try write(table)
        }
        try write(metadata)
        header.count = labels.count
        header.payloadBytes = offsets.last!
        header.dataCRC = crc
        do {
            try handle.seek(toOffset: 0)
            try handle.write(contentsOf: Data(header.encoded()))
            try handle.synchronize()
            try handle.close()
        } catch {
            throw UserError(.runtime, what: url.path, why: "cannot be written (\(error.localizedDescription))", remedy: "check the free space")
        }
        finished = true
    }
}

/// A prepared task's three splits as store files (`train.lmstore`, `validation.lmstore`, `test.lmstore`)
/// in its folder.
public enum SplitStores {
    public static func fileName(_ split: DataSplit) -> String { "\(split.rawValue).lmstore" }

    /// Whether the three files are in `folder`, with one line about them (`noun`: what a record is).
    public static func state(_ folder: URL, noun: String) -> PreparedDataState {
        var parts: [String] = []
        var bytes = 0
        var descriptions: [String] = []
        for split in DataSplit.allCases {
            let url = folder.appendingPathComponent(fileName(split))
            guard FileManager.default.fileExists(atPath: url.path) else {
                return PreparedDataState(isReady: false, description: "\(folder.path) has no \(fileName(split))")
            }
            do {
                let (header, metadata) = try LabelledStore.inspect(url)
                parts.append("\(header.count.grouped) \(split.rawValue)")
                bytes += header.fileSize
                descriptions.append(metadata.description)
            } catch {
                return PreparedDataState(isReady: false, description: "\(error)")
            }
        }
        // One origin line, or one per split where they differ (genomes).
        let origin = Set(descriptions).count == 1 ? descriptions[0]
            : zip(DataSplit.allCases, descriptions).map { "\($0.rawValue): \($1)" }.joined(separator: "; ")
        return PreparedDataState(isReady: true, description: "\(folder.path): \(parts.joined(separator: ", ")) \(noun), "
                                 + "\(PreparedFiles.megabytes(bytes)) (\(origin))")
    }

    /// The three stores in `folder`, read and verified.
    public static func load(_ folder: URL) throws -> [LabelledStore] {
        try DataSplit.allCases.map { try LabelledStore(contentsOf: folder.appendingPathComponent(fileName($0))) }
    }

    /// The first `limit` records (all when nil) of a store as token sequences: each byte + `offset`.
    public static func sequences(_ store: LabelledStore, limit: Int?, offset: UInt16, format: SequenceFormat) -> LabelledSequences {
        let n = min(limit ?? store.count, store.count)
        var documents = TokenSequences()
        documents.reserveCapacity(sequences: n, ids: store.offsets[n])
        for i in 0..<n { store.withRecord(i) { documents.append(bytes: $0, offset: offset) } }
        return LabelledSequences(documents: documents, labels: store.labels[0..<n].map { Int32($0) }, format: format)
    }
}
