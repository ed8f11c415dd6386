import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore
import LongMixerTestSupport

/// The image and genome tasks from `data prepare` to batches, on data the tests make.
@Suite("Pathfinder, image and genome tasks")
struct PreparedTaskTests {
    static func rows(_ batch: Batch) -> (tokens: [[Int32]], labels: [Int32]) {
        guard case .tokens(let t) = batch.input, case .classes(let l) = batch.targets else { Issue.record("not a token batch"); return ([], []) }
        let n = t.shape[1]
        return ((0..<t.shape[0]).map { Array(t.scalars[$0 * n..<($0 + 1) * n]) }, l.scalars)
    }

    static func options(_ dir: URL, length: Int, seed: UInt64 = 1, limits: (Int?, Int?, Int?) = (nil, nil, nil)) -> TaskDataOptions {
        TaskDataOptions(length: length, seed: seed, trainLimit: limits.0, validationLimit: limits.1, testLimit: limits.2, dataDirectory: dir.path)
    }

    @Test("pathfinder: prepare, then [CLS] pixels+3 [SEP] rows of the generated images; the grid fixes N")
    func pathfinder() throws {
        let dir = try DataFixtures.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let task = PathfinderTask.pathfinder
        #expect(task.layout == .grid(width: 32, height: 32, prefix: 1, suffix: 1) && task.defaultLength == 1026)
        #expect(throws: UserError.self) { try task.makeData(Self.options(dir, length: 1026), trainSamples: nil) }   // not prepared
        try task.prepare(into: dir, seed: 9, sizes: SplitSizes(train: 20, validation: 6, test: 4)) { _ in }
        #expect(task.dataState(in: dir).isReady)
        let data = try task.makeData(Self.options(dir, length: 1026, limits: (10, nil, nil)), trainSamples: nil)
        #expect(data.train.count == 10 && data.validation.count == 6 && data.test.count == 4 && data.trainingOrder == .shuffled(seed: 1))
        let generator = PathfinderGenerator(.pathfinder32(.hard))
        let (tokens, labels) = Self.rows(data.validation.batch(indices: 0..<6))
        for i in 0..<6 {
            let sample = try generator.sample(index: i, split: .validation, seed: 9)
            #expect(tokens[i].count == 1026 && tokens[i].first == 1 && tokens[i].last == 2)
            #expect(Array(tokens[i][1...1024]) == sample.pixels.map { Int32($0) + 3 })
            #expect(Int(labels[i]) == sample.label)
        }
        #expect(data.summary?.contains("generated with seed 9") == true)
        #expect(throws: UserError.self) { try task.makeData(Self.options(dir, length: 1024), trainSamples: nil) }
        // Prepared data are never overwritten by a second prepare (the folder must be removed first).
        #expect(throws: UserError.self) { try task.prepare(into: dir, seed: 9, sizes: SplitSizes(train: 2, validation: 2, test: 2)) { _ in } }
        // A damaged split stops the run with one line.
        let url = dir.appendingPathComponent("pathfinder/test.lmstore")
        var bytes = [UInt8](try Data(contentsOf: url))
        bytes[bytes.count / 2] ^= 0x40
        try Data(bytes).write(to: url)
        #expect(throws: UserError.self) { try task.makeData(Self.options(dir, length: 1026), trainSamples: nil) }
    }

    @Test("pathfinder: the LRA release found in the data folder is converted instead of generating")
    func pathfinderRelease() throws {
        let dir = try DataFixtures.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let root = dir.appendingPathComponent("lra_release/pathfinder32/curv_contour_length_14")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("imgs/0"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: root.appendingPathComponent("metadata"), withIntermediateDirectories: true)
        var lines = ""
        for i in 0..<10 {
            let pixels = (0..<1024).map { UInt8(truncatingIfNeeded: $0 + i) }
            try PNGDecoder.encodeGray(GrayImage(width: 32, height: 32, pixels: pixels)).write(to: root.appendingPathComponent("imgs/0/sample_\(i).png"))
            lines += "imgs/0 sample_\(i).png \(i) \(i % 2) 1.0 14 4 2 0.5 1 1\n"
        }
        try Data(lines.utf8).write(to: root.appendingPathComponent("metadata/0.npy"))
        var log: [String] = []
        #expect(throws: UserError.self) { try PathfinderTask.pathfinder.prepare(into: dir, seed: 1, sizes: SplitSizes(train: 2, validation: 1, test: 1)) { _ in } }
        try PathfinderTask.pathfinder.prepare(into: dir, seed: 1) { log.append($0) }
        #expect(log.contains { $0.contains("converting the LRA release") })
        let data = try PathfinderTask.pathfinder.makeData(Self.options(dir, length: 1026), trainSamples: nil)
        #expect(data.train.count == 8 && data.validation.count == 1 && data.test.count == 1)
        let (tokens, labels) = Self.rows(data.test.batch(indices: 0..<1))
        #expect(tokens[0][1] == 9 + 3 && labels == [1])
    }

    @Test("image: CIFAR-10 batches in the data folder, split 90/10 + test, PIL gray")
    func imageFromCIFAR() throws {
        let dir = try DataFixtures.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cifar = dir.appendingPathComponent("cifar-10-batches-bin")
        try FileManager.default.createDirectory(at: cifar, withIntermediateDirectories: true)
        for k in 1...5 {
            let records = (0..<4).flatMap { i in DataFixtures.cifarRecord(label: UInt8((k + i) % 10), red: UInt8(k * 10 + i), green: 0, blue: 255) }
            try Data(records).write(to: cifar.appendingPathComponent("data_batch_\(k).bin"))
        }
        try Data(DataFixtures.cifarRecord(label: 7, red: 255, green: 255, blue: 255)).write(to: cifar.appendingPathComponent("test_batch.bin"))
        let task = ImageTask()
        try task.prepare(into: dir, seed: 1) { _ in }
        let data = try task.makeData(Self.options(dir, length: 1026), trainSamples: nil)
        #expect(data.train.count == 18 && data.validation.count == 2 && data.test.count == 1)
        #expect(data.summary?.contains("CIFAR-10") == true)
        let (tokens, labels) = Self.rows(data.test.batch(indices: 0..<1))
        #expect(labels == [7] && tokens[0][1] == 255 + 3 && tokens[0][1024] == 255 + 3)
        let (train, _) = Self.rows(data.train.batch(indices: 0..<1))
        #expect(train[0][1] == Int32(luma(10, 0, 255)) + 3)
    }

    /// Three species' "genomes" of a few hundred bases, written as FASTA (plain, gzip, xz) and prepared.
    static func genomeFixture(_ dir: URL) throws -> [[UInt8]] {
        var rng = RandomGenerator(seed: 11)
        var sequences: [[UInt8]] = []
        var genomes: [(species: Int, file: URL, split: DataSplit)] = []
        for (k, split) in [DataSplit.train, .train, .validation, .test].enumerated() {
            for species in 0..<4 {
                // Each species has its own base composition, so windows are recognisable.
                let bases = (0..<(300 + 50 * k)).map { _ in Array("ACGT".utf8)[(species + (rng.nextInt(below: 4) == 0 ? 1 : 0)) % 4] }
                sequences.append(bases)
                var text = ">g\(k)s\(species) fixture\n"
                for line in stride(from: 0, to: bases.count, by: 60) { text += String(decoding: bases[line..<min(line + 60, bases.count)], as: UTF8.self) + "\n" }
                text += ">plasmid\nacgtn\n"
                let file = dir.appendingPathComponent("g\(k)s\(species).fa" + ["", ".gz", ".xz"][(k + species) % 3])
                let raw = [UInt8](text.utf8)
                try Data([raw, Compressor.gzip(raw), Compressor.xz(raw)][(k + species) % 3]).write(to: file)
                genomes.append((species, file, split))
            }
        }
        try GenomeTask.write(genomes: genomes, into: dir.appendingPathComponent("genome")) { _ in }
        return sequences
    }

    @Test("genome: FASTA genomes split whole; seeded, species-balanced windows inside one sequence")
    func genome() throws {
        let dir = try DataFixtures.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let sequences = try Self.genomeFixture(dir)
        let task = GenomeTask()
        #expect(task.dataState(in: dir).isReady)
        let data = try task.makeData(Self.options(dir, length: 101, seed: 5, limits: (400, nil, nil)), trainSamples: nil)
        #expect(data.train.count == 400 && data.validation.count == max(1, 4 * 400 / 100))
        let (tokens, labels) = Self.rows(data.train.batch(indices: 0..<400))
        var perClass = [Int](repeating: 0, count: 4)
        let trainSequences = sequences[0..<8]
        for (row, label) in zip(tokens, labels) {
            perClass[Int(label)] += 1
            #expect(row.count == 101 && row[0] == 1 && row[1...].allSatisfy { (3...7).contains($0) })
            // The window lies inside one training genome of its species.
            let window = row[1...].map { UInt8(Array("ACGTN".utf8)[Int($0) - 3]) }
            let home = trainSequences.enumerated().filter { $0.offset % 4 == Int(label) }.map(\.element)
            #expect(home.contains { g in (0...(g.count - 100)).contains { Array(g[$0..<$0 + 100]) == window } })
        }
        #expect(perClass.allSatisfy { $0 > 60 }, "\(perClass)")
        // Same seed, same windows (in any batch order); another seed, other windows.
        let again = try task.makeData(Self.options(dir, length: 101, seed: 5, limits: (400, nil, nil)), trainSamples: nil)
        #expect(Self.rows(again.train.batch(samples: [7, 3])).tokens == [tokens[7], tokens[3]])
        let other = try task.makeData(Self.options(dir, length: 101, seed: 6, limits: (400, nil, nil)), trainSamples: nil)
        #expect(Self.rows(other.train.batch(indices: 0..<8)).tokens != Array(tokens[0..<8]))
        // Training by steps: at least the samples the run consumes.
        #expect(try task.makeData(Self.options(dir, length: 101), trainSamples: 5000).train.count == 5000)
        // Windows longer than every sequence: one error naming --length.
        #expect(throws: UserError.self) { try task.makeData(Self.options(dir, length: 2000), trainSamples: nil) }
    }
}
