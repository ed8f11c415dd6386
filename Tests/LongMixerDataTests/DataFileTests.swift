import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore
import LongMixerTestSupport

/// Fixtures the tests build themselves: PNG files with every row filter, IDX and CIFAR-10 batches,
/// FASTA text, an LRA-style Pathfinder folder.
enum DataFixtures {
    /// A PNG of `rows` (already in the colour type's byte layout), each row stored with filter
    /// `filters[y % filters.count]`, through our own filter encoder.
    static func png(width: Int, height: Int, colorType: UInt8, bitDepth: UInt8 = 8, rows: [[UInt8]], filters: [UInt8] = [0],
                    palette: [UInt8]? = nil, idatSplit: Int = 1) -> Data {
        let channels = [0: 1, 2: 3, 3: 1, 4: 2, 6: 4][Int(colorType)]!
        let bpp = max(1, channels * Int(bitDepth) / 8)
        var raw: [UInt8] = []
        for (y, row) in rows.enumerated() {
            let f = filters[y % filters.count]
            raw.append(f)
            let prior = y > 0 ? rows[y - 1] : [UInt8](repeating: 0, count: row.count)
            for i in 0..<row.count {
                let a = i >= bpp ? Int(row[i - bpp]) : 0, b = Int(prior[i]), c = i >= bpp ? Int(prior[i - bpp]) : 0
                // An unknown filter byte (a refusal test) encodes as filter 0.
                let predicted = PNGDecoder.prediction(filter: f, left: a, up: b, upLeft: c) ?? 0
                raw.append(UInt8(truncatingIfNeeded: Int(row[i]) - predicted))
            }
        }
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        func be(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
        func chunk(_ type: String, _ body: [UInt8]) {
            out += be(body.count)
            let typed = Array(type.utf8) + body
            out += typed
            out += be(Int(typed.withUnsafeBytes { Decompression.crc32($0) }))
        }
        chunk("IHDR", be(width) + be(height) + [bitDepth, colorType, 0, 0, 0])
        chunk("tEXt", Array("Comment\0fixture".utf8))
        if let palette { chunk("PLTE", palette) }
        let z = Compressor.zlib(raw)
        let piece = (z.count + idatSplit - 1) / idatSplit
        for k in stride(from: 0, to: z.count, by: piece) { chunk("IDAT", Array(z[k..<min(k + piece, z.count)])) }
        chunk("IEND", [])
        return Data(out)
    }

    /// An IDX file of unsigned bytes.
    static func idx(_ dimensions: [Int], _ values: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0, 0, 0x08, UInt8(dimensions.count)]
        for d in dimensions { out += [UInt8(d >> 24 & 0xFF), UInt8(d >> 16 & 0xFF), UInt8(d >> 8 & 0xFF), UInt8(d & 0xFF)] }
        return out + values
    }

    /// A CIFAR-10 batch record: label, then red, green and blue planes.
    static func cifarRecord(label: UInt8, red: UInt8, green: UInt8, blue: UInt8) -> [UInt8] {
        [label] + [UInt8](repeating: red, count: 1024) + [UInt8](repeating: green, count: 1024) + [UInt8](repeating: blue, count: 1024)
    }

    static let fasta = """
        >chr1 first record
        ACGTacgtNN
        RYkm
        ; a comment line
        >chr2
        GGGG\r
        cccc

        >empty
        >chr3 last
        T
        """

    /// `rows` as NumPy's `np.save` writes a 2-D '<U' array.
    static func numpyStrings(_ rows: [[String]]) -> Data {
        let width = rows.flatMap { $0 }.map { $0.unicodeScalars.count }.max()!
        var header = "{'descr': '<U\(width)', 'fortran_order': False, 'shape': (\(rows.count), \(rows[0].count)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        out += Array(header.utf8)
        for row in rows {
            for field in row {
                var scalars = field.unicodeScalars.map(\.value)
                scalars += [UInt32](repeating: 0, count: width - scalars.count)
                for v in scalars { out += [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)] }
            }
        }
        return Data(out)
    }

    static func scratch() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-data-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

@Suite("Data files: compression, stores, PNG, IDX, CIFAR-10, FASTA, the LRA Pathfinder layout")
struct DataFileTests {
    @Test("gzip (several members), xz and zlib round trips; truncation is one error")
    func compression() throws {
        let a = [UInt8]((0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) }), b = [UInt8]("second member".utf8)
        let gz = Data(Compressor.gzip(a) + Compressor.gzip(b))
        #expect([UInt8](try Decompression.gunzip(gz, name: "x")) == a + b)
        #expect([UInt8](try Decompression.decompressIfNeeded(gz, name: "x")) == a + b)
        let xz = Data(Compressor.xz(a))
        #expect(CompressionFormat.detect(xz) == .xz)
        #expect([UInt8](try Decompression.decompressIfNeeded(xz, name: "x")) == a)
        #expect([UInt8](try Decompression.decompressIfNeeded(Data(a), name: "x")) == a)
        #expect([UInt8](try Decompression.inflateZlib(Data(Compressor.zlib(a)), expectedSize: a.count, name: "x")) == a)
        #expect(throws: UserError.self) { try Decompression.gunzip(gz.prefix(gz.count - 9), name: "x") }
        #expect(throws: UserError.self) { try Decompression.unxz(xz.prefix(xz.count / 2), name: "x") }
        #expect(throws: UserError.self) { try Decompression.gunzip(gz + Data([1, 2, 3]), name: "x") }
        #expect(throws: UserError.self) { try Decompression.gunzip(gz, name: "x", limit: 100) }
        #expect(throws: UserError.self) { try Decompression.inflateZlib(Data(Compressor.zlib(a)), expectedSize: a.count - 1, name: "x") }
        #expect(throws: UserError.self) { try Decompression.inflateZlib(Data(Compressor.zlib(a)), expectedSize: a.count + 1, name: "x") }
        #expect(catching { _ = try Decompression.gunzip(gz.prefix(20), name: "f.gz") }.hasPrefix("f.gz: "))
    }

    @Test("labelled stores: fixed and variable records round-trip; damage is detected")
    func stores() throws {
        let dir = try DataFixtures.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fixed = dir.appendingPathComponent("f.lmstore")
        let w = try LabelledStoreWriter(url: fixed, width: 3, height: 2, classNames: ["a", "b"], description: "fixture")
        try w.append(label: 1, [1, 2, 3, 4, 5, 6])
        try w.append(label: 0, [7, 8, 9, 10, 11, 12])
        try w.finish()
        let s = try LabelledStore(contentsOf: fixed)
        #expect(s.count == 2 && s.labels == [1, 0] && s.record(1) == [7, 8, 9, 10, 11, 12])
        #expect(s.description == "fixture" && s.classNames == ["a", "b"] && s.header.width == 3 && s.header.height == 2)
        let (header, metadata) = try LabelledStore.inspect(fixed)
        #expect(header.count == 2 && metadata.description == "fixture")

        let variable = dir.appendingPathComponent("v.lmstore")
        let v = try LabelledStoreWriter(url: variable, classNames: ["x", "y", "z"], description: "sequences")
        try v.append(label: 2, [UInt8]("ACGT".utf8))
        try v.append(label: 0, [])
        try v.append(label: 1, [UInt8]("NNA".utf8))
        try v.finish()
        let t = try LabelledStore(contentsOf: variable)
        #expect(t.count == 3 && t.record(0) == [UInt8]("ACGT".utf8) && t.record(1).isEmpty && t.record(2) == [UInt8]("NNA".utf8))
        #expect(t.header.kind == .variableSize && t.classCounts == [1, 1, 1])

        var bytes = [UInt8](try Data(contentsOf: fixed))
        bytes[LabelledStoreHeader.size + 2] ^= 1
        #expect(throws: UserError.self) { try LabelledStore(data: Data(bytes), name: "flipped") }
        #expect(throws: UserError.self) { try LabelledStore(data: try Data(contentsOf: fixed).dropLast(), name: "short") }
        #expect(throws: UserError.self) { try LabelledStore(data: Data(), name: "empty") }
    }

    @Test("PNG: every row filter, colour type and bit depth to 8-bit gray; PIL's luma")
    func png() throws {
        let gray: [[UInt8]] = (0..<5).map { y in (0..<7).map { UInt8(truncatingIfNeeded: y * 40 + $0 * 13) } }
        for split in [1, 3] {
            let d = DataFixtures.png(width: 7, height: 5, colorType: 0, rows: gray, filters: [0, 1, 2, 3, 4], idatSplit: split)
            #expect(try PNGDecoder.decodeGray(d, name: "g").pixels == gray.flatMap { $0 })
        }
        #expect(try PNGDecoder.decodeGray(PNGDecoder.encodeGray(GrayImage(width: 7, height: 5, pixels: gray.flatMap { $0 })), name: "e").pixels
                == gray.flatMap { $0 })
        // RGB and RGBA through the luma of PIL's convert("L").
        let colours: [(UInt8, UInt8, UInt8)] = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (10, 20, 30), (128, 64, 200)]
        let rgb: [[UInt8]] = [colours.flatMap { [$0.0, $0.1, $0.2] }]
        let decoded = try PNGDecoder.decodeGray(DataFixtures.png(width: 6, height: 1, colorType: 2, rows: rgb, filters: [4]), name: "rgb")
        #expect(decoded.pixels == [76, 150, 29, 255, 18, 99])
        #expect(decoded.pixels == colours.map { luma($0.0, $0.1, $0.2) })
        let rgba: [[UInt8]] = [colours.flatMap { [$0.0, $0.1, $0.2, UInt8(77)] }]
        #expect(try PNGDecoder.decodeGray(DataFixtures.png(width: 6, height: 1, colorType: 6, rows: rgba, filters: [1]), name: "rgba").pixels
                == decoded.pixels)
        // Gray + alpha, 16-bit gray (high byte), palette, 1-bit gray.
        #expect(try PNGDecoder.decodeGray(DataFixtures.png(width: 2, height: 1, colorType: 4, rows: [[9, 1, 200, 2]]), name: "la").pixels == [9, 200])
        #expect(try PNGDecoder.decodeGray(DataFixtures.png(width: 2, height: 1, colorType: 0, bitDepth: 16, rows: [[0x12, 0x34, 0xAB, 0xCD]], filters: [1]),
                                          name: "g16").pixels == [0x12, 0xAB])
        #expect(try PNGDecoder.decodeGray(DataFixtures.png(width: 3, height: 1, colorType: 3, rows: [[2, 0, 1]], palette: [0, 0, 0, 255, 255, 255, 255, 0, 0]),
                                          name: "p").pixels == [76, 0, 255])
        #expect(try PNGDecoder.decodeGray(DataFixtures.png(width: 10, height: 1, colorType: 0, bitDepth: 1, rows: [[0b1010_0000, 0b0100_0000]]),
                                          name: "g1").pixels == [255, 0, 255, 0, 0, 0, 0, 0, 0, 255])
        // Refusals.
        let good = DataFixtures.png(width: 7, height: 5, colorType: 0, rows: gray)
        var badCRC = [UInt8](good); badCRC[20] ^= 0xFF
        #expect(throws: UserError.self) { try PNGDecoder.decodeGray(Data(badCRC), name: "crc") }
        #expect(throws: UserError.self) { try PNGDecoder.decodeGray(good.prefix(good.count - 12), name: "no IEND") }
        #expect(throws: UserError.self) { try PNGDecoder.decodeGray(Data("not a png".utf8), name: "text") }
        #expect(throws: UserError.self) {
            try PNGDecoder.decodeGray(DataFixtures.png(width: 3, height: 1, colorType: 3, rows: [[5, 0, 1]], palette: [0, 0, 0]), name: "palette index")
        }
        #expect(throws: UserError.self) { try PNGDecoder.decodeGray(DataFixtures.png(width: 7, height: 5, colorType: 0, rows: gray, filters: [9]), name: "filter") }
        #expect(throws: UserError.self) { try PNGDecoder.decodeGray(DataFixtures.png(width: 8, height: 5, colorType: 0, rows: gray), name: "size") }
    }

    @Test("IDX: images and labels, gzip or plain; padding 28×28 to 32×32")
    func idx() throws {
        let pixels = (0..<(3 * 28 * 28)).map { UInt8(truncatingIfNeeded: $0) }
        let imagesFile = Data(Compressor.gzip(DataFixtures.idx([3, 28, 28], pixels)))
        let labelsFile = Data(DataFixtures.idx([3], [9, 0, 4]))
        let images = try IDXReader.images(imagesFile, name: "i.gz", labels: labelsFile, name: "l", classes: 10)
        #expect(images.count == 3 && images.width == 28 && images.labels == [9, 0, 4] && images.pixels == pixels)
        let padded = images.padded(to: 32)
        #expect(padded.width == 32 && padded.pixels.count == 3 * 1024)
        #expect(padded.pixels[1024 + 2 * 32 + 2] == pixels[784])   // image 1, pixel (0, 0) moves to (2, 2)
        #expect(padded.pixels[1024 + 0 * 32 + 5] == 0 && padded.pixels[1024 + 31 * 32 + 31] == 0)
        #expect(throws: UserError.self) { try IDXReader.images(imagesFile, name: "i", labels: Data(DataFixtures.idx([2], [1, 2])), name: "l", classes: 10) }
        #expect(throws: UserError.self) { try IDXReader.images(imagesFile, name: "i", labels: Data(DataFixtures.idx([3], [1, 2, 10])), name: "l", classes: 10) }
        #expect(throws: UserError.self) { try IDXReader.read(Data(DataFixtures.idx([3, 28, 28], pixels).dropLast()), name: "short") }
        #expect(throws: UserError.self) { try IDXReader.read(Data([0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]), name: "floats") }
    }

    @Test("CIFAR-10 binary batches: labels and PIL grayscale")
    func cifar() throws {
        let batch = Data(DataFixtures.cifarRecord(label: 3, red: 255, green: 0, blue: 0) + DataFixtures.cifarRecord(label: 9, red: 10, green: 20, blue: 30))
        let images = try CIFAR10Reader.batch(batch, name: "b")
        #expect(images.labels == [3, 9] && images.width == 32)
        #expect(images.pixels[0] == 76 && images.pixels[1023] == 76 && images.pixels[1024] == 18)
        #expect(throws: UserError.self) { try CIFAR10Reader.batch(batch.dropLast(), name: "short") }
        #expect(throws: UserError.self) { try CIFAR10Reader.batch(Data(DataFixtures.cifarRecord(label: 10, red: 0, green: 0, blue: 0)), name: "label") }
        let dir = try DataFixtures.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        for k in 1...5 { try Data(DataFixtures.cifarRecord(label: UInt8(k), red: 1, green: 1, blue: 1)).write(to: dir.appendingPathComponent("data_batch_\(k).bin")) }
        #expect(throws: UserError.self) { try CIFAR10Reader.read(folder: dir) }   // no test batch yet
        try batch.write(to: dir.appendingPathComponent("test_batch.bin"))
        let (train, test) = try CIFAR10Reader.read(folder: dir)
        #expect(train.labels == [1, 2, 3, 4, 5] && test.labels == [3, 9])
    }

    @Test("FASTA: records, headers, case, N and ambiguity codes; gzip and xz; errors name the line")
    func fasta() throws {
        let plain = Data(DataFixtures.fasta.utf8)
        for data in [plain, Data(Compressor.gzip([UInt8](plain))), Data(Compressor.xz([UInt8](plain)))] {
            let records = try FastaReader.read(data, name: "f")
            #expect(records.map(\.header) == ["chr1 first record", "chr2", "empty", "chr3 last"])
            #expect(records.map { String(decoding: $0.bases, as: UTF8.self) } == ["ACGTACGTNNNNNN", "GGGGCCCC", "", "T"])
        }
        #expect(throws: UserError.self) { try FastaReader.read(Data("ACGT\n>x\nA\n".utf8), name: "no header") }
        #expect(throws: UserError.self) { try FastaReader.read(Data(), name: "empty") }
        #expect(throws: UserError.self) { try FastaReader.read(Data("\n\n".utf8), name: "blank") }
        do {
            _ = try FastaReader.read(Data(">a\nAC-GT\n".utf8), name: "gap.fa")
            Issue.record("a gap was accepted")
        } catch let e as UserError {
            #expect(e.description == "gap.fa: line 2, column 3: '-' is not a nucleotide code")
        }
    }

    @Test("LRA Pathfinder folder: text and NumPy metadata, PNGs, 80/10/10 in file order")
    func release() throws {
        let dir = try DataFixtures.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let root = dir.appendingPathComponent("curv_contour_length_14")
        let fm = FileManager.default
        try fm.createDirectory(at: root.appendingPathComponent("metadata"), withIntermediateDirectories: true)
        var expected: [(pixels: [UInt8], label: Int)] = []
        // Two batches: "0.npy" as text, "1.npy" as a NumPy '<U' array; the file order is numeric (0, 1, 10).
        for batch in [0, 1, 10] {
            let folder = root.appendingPathComponent("imgs/\(batch)")
            try fm.createDirectory(at: folder, withIntermediateDirectories: true)
            var rows: [[String]] = []
            for i in 0..<4 {
                let pixels = (0..<16).map { UInt8(truncatingIfNeeded: batch * 50 + i * 16 + $0) }
                try PNGDecoder.encodeGray(GrayImage(width: 4, height: 4, pixels: pixels)).write(to: folder.appendingPathComponent("sample_\(i).png"))
                let label = (batch + i) % 2
                rows.append(["imgs/\(batch)", "sample_\(i).png", "\(i)", "\(label)", "1.0", "14", "4"])
                expected.append((pixels, label))
            }
            let url = root.appendingPathComponent("metadata/\(batch).npy")
            if batch == 1 {
                try DataFixtures.numpyStrings(rows).write(to: url)
            } else {
                try Data(rows.map { $0.joined(separator: " ") + "\n" }.joined().utf8).write(to: url)
            }
        }
        let entries = try PathfinderRelease.entries(root: root)
        #expect(entries.count == 12 && entries[4].path == "imgs/1/sample_0.png" && entries[11].path == "imgs/10/sample_3.png")
        let out = dir.appendingPathComponent("out")
        try fm.createDirectory(at: out, withIntermediateDirectories: true)
        let counts = try PathfinderRelease.convert(root: root, size: 4, destination: out, description: "fixture") { _ in }
        #expect(counts == [9, 1, 2])
        var index = 0
        for split in DataSplit.allCases {
            let store = try LabelledStore(contentsOf: out.appendingPathComponent(SplitStores.fileName(split)))
            for i in 0..<store.count {
                #expect(store.record(i) == expected[index].pixels && Int(store.labels[i]) == expected[index].label)
                index += 1
            }
        }
        // A wrong size, a bad label, a path outside the folder, a missing image: one error each.
        #expect(throws: UserError.self) { try PathfinderRelease.convert(root: root, size: 32, destination: out, description: "") { _ in } }
        #expect(throws: UserError.self) { try PathfinderRelease.parseMetadata(Data("a b 0 2\n".utf8), name: "m") }
        #expect(throws: UserError.self) { try PathfinderRelease.parseMetadata(Data("../.. etc 0 1\n".utf8), name: "m") }
        #expect(throws: UserError.self) { try PathfinderRelease.parseMetadata(Data("a b 0\n".utf8), name: "m") }
        try fm.removeItem(at: root.appendingPathComponent("imgs/10/sample_2.png"))
        #expect(throws: UserError.self) { try PathfinderRelease.convert(root: root, size: 4, destination: out, description: "") { _ in } }
    }
}

/// The error line `body` throws ("" if it does not throw).
func catching(_ body: () throws -> Void) -> String {
    do { try body(); return "" } catch { return "\(error)" }
}
