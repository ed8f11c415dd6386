import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore
import LongMixerTestSupport

/// Every file reader of the image and genome tasks over thousands of damaged inputs: truncated,
/// bit-flipped, overwritten, spliced and random files, and damage inside compressed files (mutated,
/// then compressed again, so the reader's own parser sees it). Each must either read or throw one
/// `UserError`: no trap, no other error type.
@Suite("Reader fuzz: images, Pathfinder, genomes, stores")
struct ImageGenomeReaderFuzzTests {
    /// A named reader: parses the bytes and touches what it read.
    struct Reader {
        let name: String
        /// Valid inputs to mutate.
        let seeds: [[UInt8]]
        /// Wraps a mutated inner file before reading (e.g. gzip), or nil.
        let wrap: (([UInt8]) -> [UInt8])?
        let read: (Data) throws -> Void
    }

    static func readers() -> [Reader] {
        let images = DataFixtures.idx([3, 28, 28], (0..<(3 * 784)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let labels = DataFixtures.idx([3], [1, 9, 4])
        let cifar = DataFixtures.cifarRecord(label: 3, red: 200, green: 10, blue: 90) + DataFixtures.cifarRecord(label: 9, red: 1, green: 2, blue: 3)
        let gray: [[UInt8]] = (0..<6).map { y in (0..<9).map { UInt8(truncatingIfNeeded: y * 37 + $0 * 11) } }
        let pngs: [[UInt8]] = [
            [UInt8](DataFixtures.png(width: 9, height: 6, colorType: 0, rows: gray, filters: [0, 1, 2, 3, 4])),
            [UInt8](DataFixtures.png(width: 3, height: 6, colorType: 2, rows: gray, filters: [4, 3])),
            [UInt8](DataFixtures.png(width: 9, height: 1, colorType: 3, rows: [[0, 1, 2, 1, 0, 2, 2, 1, 0]], palette: [0, 0, 0, 9, 99, 199, 255, 255, 255])),
            [UInt8](DataFixtures.png(width: 18, height: 2, colorType: 0, bitDepth: 4, rows: [[UInt8](repeating: 0x5A, count: 9), [UInt8](repeating: 0xF0, count: 9)])),
        ]
        let metadata = [UInt8]("imgs/0 sample_0.png 0 1 1.0 14 4\nimgs/0 sample_1.png 1 0 1.0 14 4\r\n".utf8)
        let numpy = [UInt8](DataFixtures.numpyStrings([["imgs/0", "sample_0.png", "0", "1"], ["imgs/1", "sample_1.png", "1", "0"]]))
        let fasta = [UInt8](DataFixtures.fasta.utf8)
        func store(variable: Bool) -> [UInt8] {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-\(UUID().uuidString).lmstore")
            defer { try? FileManager.default.removeItem(at: url) }
            let w = try! LabelledStoreWriter(url: url, width: variable ? 0 : 4, height: variable ? 0 : 2, classNames: ["a", "b", "c"], description: "fuzz")
            for i in 0..<5 { try! w.append(label: i % 3, variable ? [UInt8](repeating: UInt8(i), count: i * 3) : [UInt8](repeating: UInt8(i), count: 8)) }
            try! w.finish()
            return [UInt8](try! Data(contentsOf: url))
        }
        let mnist = DataFixtures.mnistFixture()
        let pickle = DataFixtures.mnistPickle(pixels: mnist.pixels, labels: mnist.labels)
        func touch(_ s: LabelledStore) {
            var sum = 0
            for i in 0..<s.count { s.withRecord(i) { sum &+= $0.reduce(0) { $0 &+ Int($1) } } }
            _ = sum
        }
        return [
            Reader(name: "IDX images", seeds: [images], wrap: nil) { _ = try IDXReader.images($0, name: "i", labels: Data(labels), name: "l", classes: 10) },
            Reader(name: "IDX images (gzip)", seeds: [images], wrap: Compressor.gzip) {
                _ = try IDXReader.images($0, name: "i", labels: Data(labels), name: "l", classes: 10)
            },
            Reader(name: "IDX labels", seeds: [labels], wrap: nil) { _ = try IDXReader.images(Data(images), name: "i", labels: $0, name: "l", classes: 10) },
            Reader(name: "CIFAR-10 batch", seeds: [cifar], wrap: nil) { _ = try CIFAR10Reader.batch($0, name: "b") },
            Reader(name: "PNG", seeds: pngs, wrap: nil) { _ = try PNGDecoder.decodeGray($0, name: "p") },
            Reader(name: "Pathfinder metadata", seeds: [metadata, numpy], wrap: nil) { _ = try PathfinderRelease.parseMetadata($0, name: "m") },
            Reader(name: "FASTA", seeds: [fasta], wrap: nil) { _ = try FastaReader.read($0, name: "f") },
            Reader(name: "FASTA (gzip)", seeds: [fasta], wrap: Compressor.gzip) { _ = try FastaReader.read($0, name: "f") },
            Reader(name: "FASTA (xz)", seeds: [fasta], wrap: Compressor.xz) { _ = try FastaReader.read($0, name: "f") },
            Reader(name: "store", seeds: [store(variable: false), store(variable: true)], wrap: nil) { touch(try LabelledStore(data: $0, name: "s")) },
            Reader(name: "MNIST pickle", seeds: [pickle], wrap: nil) { _ = try MNISTPickle.read($0, name: "m") },
            Reader(name: "MNIST pickle (gzip)", seeds: [pickle], wrap: Compressor.gzip) { _ = try MNISTPickle.read($0, name: "m") },
        ]
    }

    /// One mutant of `seed`.
    static func mutate(_ seed: [UInt8], _ g: inout RandomGenerator) -> [UInt8] {
        var b = seed
        switch g.nextInt(below: 7) {
        case 0:  // truncation
            b = Array(b.prefix(g.nextInt(below: b.count + 1)))
        case 1:  // bit flips
            for _ in 0...g.nextInt(below: 8) where !b.isEmpty { b[g.nextInt(below: b.count)] ^= UInt8(1) << UInt8(g.nextInt(below: 8)) }
        case 2:  // bytes overwritten, often with extreme values
            for _ in 0...g.nextInt(below: 6) where !b.isEmpty {
                b[g.nextInt(below: b.count)] = [0, 0xFF, 0x7F, 0x80, UInt8(g.nextInt(below: 256))][g.nextInt(below: 5)]
            }
        case 3:  // random bytes inserted
            let at = g.nextInt(below: b.count + 1)
            b.insert(contentsOf: (0..<(1 + g.nextInt(below: 16))).map { _ in UInt8(g.nextInt(below: 256)) }, at: at)
        case 4:  // a span deleted or duplicated
            guard b.count > 2 else { break }
            let start = g.nextInt(below: b.count - 1), end = start + 1 + g.nextInt(below: min(64, b.count - start - 1) + 1) - 1
            if g.nextInt(below: 2) == 0 { b.removeSubrange(start..<end) } else { b.insert(contentsOf: b[start..<end], at: end) }
        case 5:  // random file
            b = (0..<g.nextInt(below: 200)).map { _ in UInt8(g.nextInt(below: 256)) }
        default: // a 32-bit field set to a huge or zero value
            guard b.count >= 4 else { break }
            let at = g.nextInt(below: b.count - 3)
            let v: [UInt8] = [[0xFF, 0xFF, 0xFF, 0xFF], [0, 0, 0, 0], [0x7F, 0xFF, 0xFF, 0xFF], [0, 1, 0, 0]][g.nextInt(below: 4)]
            b.replaceSubrange(at..<at + 4, with: v)
        }
        return b
    }

    @Test("truncated, bit-flipped and random inputs: each read or one UserError")
    func fuzz() {
        var g = RandomGenerator(seed: 2024)
        var total = 0, refused = 0
        let readers = Self.readers()
        for reader in readers {
            var other: [String] = []
            // The valid inputs read.
            for seed in reader.seeds {
                let input = reader.wrap.map { Data($0(seed)) } ?? Data(seed)
                do { try reader.read(input) } catch { Issue.record("\(reader.name): a valid input was refused: \(error)") }
            }
            for _ in 0..<600 {
                let seed = reader.seeds[g.nextInt(below: reader.seeds.count)]
                var input = Self.mutate(seed, &g)
                if let wrap = reader.wrap {
                    // Damage inside the compressed file, or to the compressed bytes themselves.
                    input = g.nextInt(below: 2) == 0 ? wrap(input) : Self.mutate(wrap(seed), &g)
                }
                total += 1
                do {
                    try reader.read(Data(input))
                } catch let e as UserError {
                    refused += 1
                    if e.description.isEmpty || e.description.contains("\n") { other.append("unclear message: \(e.description)") }
                } catch {
                    other.append("\(type(of: error)): \(error)")
                }
            }
            #expect(other.isEmpty, "\(reader.name): \(other.prefix(3))")
        }
        #expect(total == 600 * readers.count && refused > total / 2, "\(refused) of \(total) refused")
    }
}
