import Foundation
import LongMixerCore

// Species of a DNA window, from complete bacterial genomes that ship in Debian's example packages:
// ragout-examples (Helicobacter pylori, Staphylococcus aureus, Vibrio cholerae strains) and
// kleborate-examples (Klebsiella pneumoniae strains). Whole genomes are assigned to the splits (several
// strains train, one validates, one tests per species), so no window of a test genome is ever seen in
// training. E. coli, also in ragout-examples, is left out: its two strains cannot cover three splits.
//
// `data prepare genome` keeps each FASTA record (chromosome or plasmid) as one record of the split's
// store. A sample is a window of N − 1 bases after a CLS token, drawn by a seeded sampler: a species
// uniformly, then a record with probability proportional to its number of window positions, then the
// position uniformly; sample i of a split is a pure function of (seed, split, i). Tokens: PAD 0, CLS 1,
// SEP 2 (unused), A 3, C 4, G 5, T 6, N 7 (N and the other ambiguity codes).

public enum GenomeTokens {
    public static let padding = 0, cls = 1
    public static let vocabularySize = 8

    /// Token of each normalised base (A C G T N), 0 for any other byte.
    static let table: [UInt16] = {
        var t = [UInt16](repeating: 0, count: 256)
        for (i, c) in "ACGTN".utf8.enumerated() { t[Int(c)] = UInt16(3 + i) }
        return t
    }()
}

/// Windows of a split's genomes, drawn on demand.
public struct GenomeWindows: BatchSource, Sendable {
    public let store: LabelledStore
    public let count: Int
    /// Windows are copied from immutable data, on any thread.
    public var preparesBatchesInBackground: Bool { true }
    public let length: Int
    let seed: UInt64
    let split: DataSplit
    let format: SequenceFormat
    /// Per class: its records long enough for a window, with cumulative window-position counts.
    let records: [[(record: Int, cumulative: Int)]]
    let classes: [Int]

    var window: Int { length - 1 }

    init(store: LabelledStore, count: Int, length: Int, seed: UInt64, split: DataSplit) {
        self.store = store
        self.count = count
        self.length = length
        self.seed = seed
        self.split = split
        format = SequenceFormat(length: length, padding: Int32(GenomeTokens.padding), cls: Int32(GenomeTokens.cls))
        var perClass = [[(record: Int, cumulative: Int)]](repeating: [], count: store.header.classes)
        for i in 0..<store.count where store.recordLength(i) >= length - 1 {
            let c = Int(store.labels[i])
            perClass[c].append((i, (perClass[c].last?.cumulative ?? 0) + store.recordLength(i) - (length - 1) + 1))
        }
        records = perClass
        classes = perClass.indices.filter { !perClass[$0].isEmpty }
    }

    /// Record, start and label of sample `index`.
    public func window(_ index: Int) -> (record: Int, start: Int, label: Int) {
        var g = RandomGenerator(seed: mixSeed(mixSeed(mixSeed(seed ^ 0x47454E4F4D45) ^ split.tag) ^ UInt64(index)))
        let c = classes[g.nextInt(below: classes.count)]
        let positions = records[c].last!.cumulative
        let u = g.nextInt(below: positions)
        let k = records[c].firstIndex { $0.cumulative > u }!
        let before = k == 0 ? 0 : records[c][k - 1].cumulative
        return (records[c][k].record, u - before, c)
    }

    public func batch(indices: Range<Int>) -> Batch { batch(samples: Array(indices)) }

    public func batch(samples: [Int]) -> Batch {
        check(!samples.isEmpty && samples.allSatisfy { $0 >= 0 && $0 < count }, "GenomeWindows.batch: samples outside 0..<\(count)")
        let n = length, w = window
        var ids = [Int32](repeating: 0, count: samples.count * n)
        var labels = [Int32](repeating: 0, count: samples.count)
        var tokens = [UInt16](repeating: 0, count: w)
        ids.withUnsafeMutableBufferPointer { out in
            for (r, s) in samples.enumerated() {
                let (record, start, label) = window(s)
                labels[r] = Int32(label)
                store.withRecord(record) { bases in
                    for i in 0..<w { tokens[i] = GenomeTokens.table[Int(bases[start + i])] }
                }
                tokens.withUnsafeBufferPointer { format.write($0, into: out.baseAddress! + r * n) }
            }
        }
        return Batch(input: .tokens(IntTensor(shape: [samples.count, n], scalars: ids)), targets: .classes(IntTensor(shape: [samples.count], scalars: labels)))
    }
}

public struct GenomeTask: PreparableTask {
    public init() {}
    public var name: String { "genome" }
    public var summary: String {
        "species of a DNA window (4 bacterial species, genomes split by strain; N − 1 bases after CLS, N = 16,385 by default)"
    }
    public var input: TaskInput { .tokens(vocabulary: GenomeTokens.vocabularySize, paddingIndex: GenomeTokens.padding) }
    public var objective: TaskObjective { .classification(classes: Self.species.count) }
    public var isCausal: Bool { false }
    public var dataOptions: Set<TaskDataOption> { [.dataDirectory, .trainSize, .validationSize, .testSize] }
    public var minimumLength: Int { 2 }
    /// CLS + 16,384 bases.
    public var defaultLength: Int? { 16_385 }
    public var dataFolder: String { "genome" }

    public static let species = ["Helicobacter pylori", "Staphylococcus aureus", "Vibrio cholerae", "Klebsiella pneumoniae"]

    static let ragout = DebianPackage(name: "ragout-examples", version: "2.3-4",
                                      sha256: "cbe6d0dd8b0e36ef2c93c9b9655955f42019dcd9e9b77388ee58ee54d50bd140")
    static let kleborate = DebianPackage(name: "kleborate-examples", version: "2.3.1-2",
                                         sha256: "6039a0ee139e0b5f8a288f2bba298326419dc856c166e53e27da319c2d9ce29f")

    /// Every genome: species index, package, path inside it, split.
    static let genomes: [(species: Int, package: DebianPackage, path: String, split: DataSplit)] = {
        let r = "usr/share/doc/ragout/examples", k = "usr/share/doc/kleborate/examples/data"
        return [
            (0, ragout, "\(r)/H.Pylori/references/ELS37.fasta.gz", .train),
            (0, ragout, "\(r)/H.Pylori/references/G27.fasta.gz", .train),
            (0, ragout, "\(r)/H.Pylori/references/Gambia94_24.fasta.gz", .train),
            (0, ragout, "\(r)/H.Pylori/references/Puno120.fasta.gz", .validation),
            (0, ragout, "\(r)/H.Pylori/references/SJM180.fasta.gz", .test),
            (1, ragout, "\(r)/S.Aureus/references/COL.fasta.gz", .train),
            (1, ragout, "\(r)/S.Aureus/references/JKD6008.fasta.gz", .train),
            (1, ragout, "\(r)/S.Aureus/references/N315.fasta.gz", .train),
            (1, ragout, "\(r)/S.Aureus/references/RF122.fasta.gz", .validation),
            (1, ragout, "\(r)/S.Aureus/references/USA300_FPR3757.fasta.gz", .test),
            (2, ragout, "\(r)/V.Cholerae/references/H1.fasta.gz", .train),
            (2, ragout, "\(r)/V.Cholerae/references/O1_Inaba.fasta.gz", .train),
            (2, ragout, "\(r)/V.Cholerae/references/O395.fasta.gz", .validation),
            (2, ragout, "\(r)/V.Cholerae/references/O1_biovar.fasta.gz", .test),
            (3, kleborate, "\(k)/Klebs_HS11286.fna.xz", .train),
            (3, kleborate, "\(k)/Klebs_Kp1084.fna.xz", .train),
            (3, kleborate, "\(k)/MGH78578.fna.xz", .validation),
            (3, kleborate, "\(k)/NTUH-K2044.fna.xz", .test),
        ]
    }()

    public func dataState(in dataDirectory: URL) -> PreparedDataState {
        SplitStores.state(dataDirectory.appendingPathComponent(dataFolder), noun: "sequences")
    }

    public func prepare(into dataDirectory: URL, seed: UInt64, log: (String) -> Void) throws {
        let clock = ContinuousClock(), start = clock.now
        let cache = dataDirectory.appendingPathComponent(".cache")
        let fm = FileManager.default
        let unpacked = cache.appendingPathComponent("unpack-\(UUID().uuidString)")
        defer { try? fm.removeItem(at: unpacked) }
        for package in [Self.ragout, Self.kleborate] {
            try package.extract(try package.fetch(cache: cache, log: log), into: unpacked)
        }
        try Self.write(genomes: Self.genomes.map { ($0.species, unpacked.appendingPathComponent($0.path), $0.split) },
                       into: dataDirectory.appendingPathComponent(dataFolder), log: log)
        log("genome: done in \(seconds(clock.now - start))")
    }

    /// Reads the FASTA files and writes one store per split: every record with its species' label.
    static func write(genomes: [(species: Int, file: URL, split: DataSplit)], into folder: URL, log: (String) -> Void) throws {
        try PreparedFiles.writeAtomically(folder) { staging in
            for split in DataSplit.allCases {
                let members = genomes.filter { $0.split == split }
                let names = members.map { "\(species[$0.species]) \($0.file.lastPathComponent.split(separator: ".").first ?? "")" }
                let writer = try LabelledStoreWriter(url: staging.appendingPathComponent(SplitStores.fileName(split)), classNames: species,
                                                     description: "genomes " + names.joined(separator: ", "))
                var bases = 0
                for g in members {
                    let records = try FastaReader.read(try PreparedFiles.read(g.file, what: "genome file"), name: g.file.path)
                    for r in records where !r.bases.isEmpty { try writer.append(label: g.species, r.bases) }
                    let n = records.reduce(0) { $0 + $1.bases.count }
                    bases += n
                    log("genome: \(split.rawValue): \(g.file.lastPathComponent) (\(species[g.species])), \(records.count) record\(records.count == 1 ? "" : "s"), \(n.grouped) bases")
                }
                try writer.finish()
                log("genome: \(split.rawValue): \(members.count) genomes, \(bases.grouped) bases")
            }
        }
    }

    public func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData {
        let directory = try readyDataDirectory(options)
        let folder = directory.appendingPathComponent(dataFolder)
        let stores = try SplitStores.load(folder)
        let window = options.length - 1
        var sources: [GenomeWindows] = []
        for (split, store) in zip(DataSplit.allCases, stores) {
            guard store.header.kind == .variableSize, store.header.classes == Self.species.count else {
                throw dataFileError(folder.appendingPathComponent(SplitStores.fileName(split)).path, "does not hold this task's genomes",
                                    remedy: "remove \(folder.path) and run `longmixer data prepare genome`")
            }
            let longest = (0..<store.count).map { store.recordLength($0) }.max() ?? 0
            guard window >= 1, window <= longest else {
                throw UserError(what: "--length", value: String(options.length),
                                why: "windows of \(window) bases do not fit the \(split.rawValue) genomes (longest sequence \(longest.grouped) bases)",
                                remedy: "use a --length of at most \(longest + 1)")
            }
            // One epoch: about as many windows as the split's bases (training: at least the samples the
            // run consumes, so a run by steps sees fresh windows).
            let bases = store.offsets.last!
            let perEpoch = max(1, bases / window)
            let limit = [options.trainLimit, options.validationLimit, options.testLimit][DataSplit.allCases.firstIndex(of: split)!]
            let count = limit ?? (split == .train ? max(perEpoch, trainSamples ?? 0) : perEpoch)
            sources.append(GenomeWindows(store: store, count: count, length: options.length, seed: options.seed, split: split))
        }
        let missing = sources.enumerated().flatMap { s, source in
            (0..<Self.species.count).filter { source.records[$0].isEmpty }.map { "\(Self.species[$0]) (\(DataSplit.allCases[s].rawValue))" }
        }
        let summary = "genome: windows of \(window.grouped) bases after CLS, N = \(options.length); train \(sources[0].count.grouped), "
            + "validation \(sources[1].count.grouped), test \(sources[2].count.grouped) windows, species drawn uniformly; "
            + "train \(stores[0].description); validation \(stores[1].description); test \(stores[2].description)"
            + (missing.isEmpty ? "" : "; no sequence long enough for \(missing.joined(separator: ", "))")
        return TaskData(train: sources[0], validation: sources[1], test: sources[2], summary: summary)
    }
}
