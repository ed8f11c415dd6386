import Foundation
import LongMixerCore

// LRA Retrieval: do two documents match? Two byte-level documents of N positions each side by side
// (`.pair` layout), one logit (binary).
//
// The LRA data (ACL Anthology Network citation pairs, `new_aan_pairs.{train,eval,test}.tsv`: no
// header; label, id1, id2, text1, text2 per line, tab-separated, the texts often written as Python
// bytes literals `b'…'`) cannot be obtained from a package registry; a folder holding them is read
// when present. Otherwise the task is a real two-document stand-in built from the IMDB reviews of
// the text task: within each of its splits, every review is paired once with another review of the
// same split — of the same sentiment (label 1) or of the other (label 0), alternately, partners drawn
// by a seed — so the classes are balanced and no review crosses splits. It is not AAN: it asks
// whether two reviews share their sentiment, not whether two papers are linked.
//
// Tokenisation as the text task, per document: `[CLS] bytes[:N − 2] [SEP]` padded to N = 4000
// (PermuteFormer's retrieval loader), PAD 0, CLS 1, SEP 2, byte b ↦ b + 3.

public enum AAN {
    public static let files = ["new_aan_pairs.train.tsv", "new_aan_pairs.eval.tsv", "new_aan_pairs.test.tsv"]

    /// The bytes of a text field: a Python bytes literal (`b'…'` or `b"…"`) decoded, anything else as is.
    static func decodeField(_ f: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        guard f.count >= 3, f[0] == 0x62, f[1] == 0x27 || f[1] == 0x22, f[f.count - 1] == f[1] else { return Array(f) }
        var out: [UInt8] = []
        out.reserveCapacity(f.count)
        var i = 2
        let end = f.count - 1
        func hex(_ c: UInt8) -> UInt8? {
            switch c { case 0x30...0x39: return c - 0x30; case 0x61...0x66: return c - 0x57; case 0x41...0x46: return c - 0x37; default: return nil }
        }
        while i < end {
            let c = f[i]
            guard c == 0x5C, i + 1 < end else { out.append(c); i += 1; continue }
            let e = f[i + 1]
            i += 2
            switch e {
            case 0x6E: out.append(0x0A)                                   // \n
            case 0x72: out.append(0x0D)                                   // \r
            case 0x74: out.append(0x09)                                   // \t
            case 0x61: out.append(0x07)
            case 0x62: out.append(0x08)
            case 0x66: out.append(0x0C)
            case 0x76: out.append(0x0B)
            case 0x5C, 0x27, 0x22: out.append(e)                          // \\ \' \"
            case 0x78:                                                    // \xHH
                if i + 1 < end, let h = hex(f[i]), let l = hex(f[i + 1]) { out.append(h << 4 | l); i += 2 } else { out += [0x5C, e] }
            case 0x30...0x37:                                             // \ooo
                var v = Int(e - 0x30), digits = 1
                while digits < 3 && i < end && (0x30...0x37).contains(f[i]) { v = v * 8 + Int(f[i] - 0x30); i += 1; digits += 1 }
                out.append(UInt8(truncatingIfNeeded: v))
            default: out += [0x5C, e]                                     // kept, as Python does
            }
        }
        return out
    }

    /// Reads one AAN file: each document once (by id) into `documents`, the pairs as members and
    /// labels; at most `limit` pairs.
    static func read(_ data: Data, path: String, limit: Int?, documents: inout TokenSequences, ids: inout [String: Int32])
        throws -> (members: [Int32], labels: [Int32]) {
        var members: [Int32] = [], labels: [Int32] = [], failure: UserError?
        func fail(_ line: Int, _ why: String) -> UserError {
            UserError(what: "AAN pairs", value: "\(path):\(line)", why: why,
                      remedy: "use the LRA release's files (label, id1, id2, text1, text2 per line, tab-separated)")
        }
        TextLines(data).forEach { number, line in
            if line.isEmpty { return true }
            var fields: [UnsafeBufferPointer<UInt8>] = []
            var start = 0
            for i in 0..<line.count where line[i] == 0x09 {
                fields.append(UnsafeBufferPointer(rebasing: line[start..<i]))
                start = i + 1
            }
            fields.append(UnsafeBufferPointer(rebasing: line[start...]))
            guard fields.count == 5 else { failure = fail(number, "\(fields.count) tab-separated fields, expected 5"); return false }
            let label: Int32
            switch String(decoding: fields[0], as: UTF8.self) {
            case "0", "0.0": label = 0
            case "1", "1.0": label = 1
            case "label" where number == 1: return true                   // a header some copies carry
            case let other: failure = fail(number, "unknown label `\(printable(other, limit: 20))` (expected 0 or 1)"); return false
            }
            for k in 1...2 {
                let id = String(decoding: fields[k], as: UTF8.self)
                if let d = ids[id] { members.append(d); continue }
                let text = decodeField(fields[k + 2])
                text.withUnsafeBufferPointer { documents.append(bytes: ByteText.stripped($0), offset: ByteText.offset) }
                let d = Int32(documents.count - 1)
                ids[id] = d
                members.append(d)
            }
            labels.append(label)
            return limit.map { labels.count < $0 } ?? true
        }
        if let failure { throw failure }
        guard !labels.isEmpty else { throw fail(1, "the file holds no pairs") }
        return (members, labels)
    }

    /// The folder holding the three files, if any.
    static func folder(in dataDirectory: URL) -> URL? {
        PreparedFiles.folder(holding: files, among: ["retrieval", "aan", "tsv_data", "lra_release/tsv_data", "lra_release/lra_release/tsv_data"]
            .map { dataDirectory.appendingPathComponent($0) } + [dataDirectory])
    }
}

/// LRA Retrieval as a task (AAN when its files are there, else the IMDB stand-in).
public struct RetrievalTask: PreparableTask {
    /// Where the stand-in's reviews come from.
    public var text: TextTask

    public init(text: TextTask = TextTask()) { self.text = text }

    public var name: String { "retrieval" }
    public var summary: String {
        "LRA Retrieval: do two byte-level documents match? (N 4000 each, side by side; binary); AAN files when present, else same-sentiment pairs of IMDB reviews"
    }
    public var input: TaskInput { .tokens(vocabulary: ByteText.vocabularySize, paddingIndex: Int(ByteText.padding)) }
    public var objective: TaskObjective { .binary }
    public var layout: InputLayout { .pair }
    public var isCausal: Bool { false }
    public var dataOptions: Set<TaskDataOption> { [.dataDirectory, .trainSize, .validationSize, .testSize] }
    public var minimumLength: Int { 3 }
    public var defaultLength: Int? { 4000 }
    public var dataFolder: String { "retrieval" }
    static let pairsFile = "pairs.json"

    struct Pairs: Codable {
        var source: String
        /// Digest of the text splits the pairs were drawn from (a re-prepared text task invalidates them).
        var splitDigest: String
        var seed: UInt64
        /// [review, review, label] triples per split.
        var train: [[Int]], validation: [[Int]], test: [[Int]]
    }

    public func dataState(in dataDirectory: URL) -> PreparedDataState {
        if let aan = AAN.folder(in: dataDirectory) {
            return PreparedDataState(isReady: true, description: "\(aan.path): AAN pairs (\(AAN.files.map { "\($0) \(PreparedFiles.megabytes(PreparedFiles.size(aan.appendingPathComponent($0)) ?? 0))" }.joined(separator: ", ")))")
        }
        let file = dataDirectory.appendingPathComponent(dataFolder).appendingPathComponent(Self.pairsFile)
        guard let data = try? Data(contentsOf: file), let p = try? JSONDecoder().decode(Pairs.self, from: data) else {
            return PreparedDataState(isReady: false, description: "no \(AAN.files[0]) etc. (AAN) and no \(file.path) (the IMDB stand-in)")
        }
        let textState = text.dataState(in: dataDirectory)
        guard textState.isReady else {
            return PreparedDataState(isReady: false, description: "\(file.path) pairs the text task's reviews, which are missing: \(textState.description)")
        }
        return PreparedDataState(isReady: true, description: "\(file.path): IMDB stand-in, \(p.train.count.grouped) / \(p.validation.count.grouped) / \(p.test.count.grouped) pairs (seed \(p.seed)) of \(textState.description)")
    }

    /// A digest of the three splits' review numbers.
    static func digest(_ train: [Int], _ validation: [Int], _ test: [Int]) -> String {
        var bytes: [UInt8] = []
        for (k, split) in [train, validation, test].enumerated() {
            bytes.append(UInt8(k))
            for i in split { withUnsafeBytes(of: UInt32(truncatingIfNeeded: i).littleEndian) { bytes += $0 } }
        }
        return SHA256.hexDigest(bytes)
    }

    /// Every review of `reviews` paired once with another of the same list: alternately of the same
    /// label (1) and of the other (0), in a seeded order with seeded partners.
    static func pairs(_ reviews: [Int], labels: [Int32], seed: UInt64) -> [[Int]] {
        var byLabel: [Int32: [Int]] = [:]
        for r in reviews { byLabel[labels[r], default: []].append(r) }
        var rng = RandomGenerator(seed: seed)
        var out: [[Int]] = []
        let order = EpochOrder.permutation(count: reviews.count, seed: seed, epoch: 0)
        for (k, position) in order.enumerated() {
            let r = reviews[position], own = labels[r]
            let same = k % 2 == 0
            let pool = same ? byLabel[own]! : byLabel.first { $0.key != own }?.value ?? []
            guard pool.count > (same ? 1 : 0) else { continue }
            var partner = pool[rng.nextInt(below: pool.count)]
            while partner == r { partner = pool[rng.nextInt(below: pool.count)] }
            out.append([r, partner, same ? 1 : 0])
        }
        return out
    }

    public func prepare(into dataDirectory: URL, seed: UInt64, log: (String) -> Void) throws {
        if !text.dataState(in: dataDirectory).isReady {
            log("retrieval: the IMDB stand-in pairs the text task's reviews; preparing those first")
            try text.prepare(into: dataDirectory, seed: seed, log: log)
        }
        let s = try IMDB.splits(in: dataDirectory, heldOut: text.heldOut)
        let p = Pairs(source: s.origin, splitDigest: Self.digest(s.train, s.validation, s.test), seed: seed,
                      train: Self.pairs(s.train, labels: s.texts.labels, seed: mixSeed(seed ^ 1)),
                      validation: Self.pairs(s.validation, labels: s.texts.labels, seed: mixSeed(seed ^ 2)),
                      test: Self.pairs(s.test, labels: s.texts.labels, seed: mixSeed(seed ^ 3)))
        try PreparedFiles.writeAtomically(dataDirectory.appendingPathComponent(dataFolder)) { staging in
            try PreparedFiles.write(try JSONEncoder().encode(p), to: staging.appendingPathComponent(Self.pairsFile))
        }
        log("retrieval: \(p.train.count.grouped) / \(p.validation.count.grouped) / \(p.test.count.grouped) review pairs (half of the same sentiment, seed \(seed))")
    }

    public func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData {
        let directory = try readyDataDirectory(options)
        let format = ByteText.format(length: options.length)
        let limits = [options.trainLimit, options.validationLimit, options.testLimit]
        var splits: [LabelledSequences] = [], origin: String
        if let aan = AAN.folder(in: directory) {
            var documents = TokenSequences(), ids: [String: Int32] = [:], parts: [(members: [Int32], labels: [Int32])] = []
            for (file, limit) in zip(AAN.files, limits) {
                let url = aan.appendingPathComponent(file)
                parts.append(try AAN.read(PreparedFiles.read(url, what: "AAN pairs"), path: url.path, limit: limit, documents: &documents, ids: &ids))
            }
            splits = parts.map { LabelledSequences(documents: documents, format: format, documentsPerSample: 2, members: $0.members, labels: $0.labels) }
            origin = "AAN \(aan.path) (\(documents.count.grouped) documents)"
        } else {
            let s = try IMDB.splits(in: directory, heldOut: text.heldOut)
            let file = directory.appendingPathComponent(dataFolder).appendingPathComponent(Self.pairsFile)
            let remedy = "remove \(file.deletingLastPathComponent().path) and run `longmixer data prepare retrieval` again"
            guard let p = try? JSONDecoder().decode(Pairs.self, from: try PreparedFiles.read(file, what: "retrieval data")) else {
                throw UserError(what: "retrieval data", value: file.path, why: "is not a pair list written by `data prepare retrieval`", remedy: remedy)
            }
            guard p.splitDigest == Self.digest(s.train, s.validation, s.test) else {
                throw UserError(what: "retrieval data", value: file.path, why: "was drawn from other text splits than the current ones (the text data were prepared again)", remedy: remedy)
            }
            for (triples, limit) in zip([p.train, p.validation, p.test], limits) {
                let kept = triples.prefix(limit ?? triples.count)
                guard kept.allSatisfy({ $0.count == 3 && $0[0] >= 0 && $0[0] < s.texts.labels.count && $0[1] >= 0 && $0[1] < s.texts.labels.count && ($0[2] == 0 || $0[2] == 1) }) else {
                    throw UserError(what: "retrieval data", value: file.path, why: "holds a pair outside the reviews", remedy: remedy)
                }
                splits.append(LabelledSequences(documents: s.texts.documents, format: format, documentsPerSample: 2,
                                                members: kept.flatMap { [Int32($0[0]), Int32($0[1])] }, labels: kept.map { Int32($0[2]) }))
            }
            origin = "IMDB stand-in (not AAN: pairs of reviews, label 1 when they share their sentiment) from \(s.origin)"
        }
        let summary = "retrieval \(origin); N = \(options.length) per document: train \(splits[0].describe("pairs")); validation \(splits[1].describe("pairs")); test \(splits[2].describe("pairs"))"
        return TaskData(train: splits[0], validation: splits[1], test: splits[2], summary: summary, trainingOrder: .shuffled(seed: options.seed))
    }
}
