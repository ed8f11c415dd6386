import Foundation
import LongMixerCore

// The batching layer of the real-data tasks: labelled token sequences held compactly in memory
// (one flat id buffer + offsets), laid out into fixed-length rows on demand (optional CLS/SEP,
// truncation, PAD to the end; two documents side by side for the `.pair` layout), and the seeded
// per-epoch order in which the trainer visits a shuffled training split.
//
// Rows are written when a batch is asked for, so memory holds the variable-length documents once
// (splits and pairs share them) and never N ids per sample.

// MARK: - Visiting samples in any order

extension BatchSource {
    /// Default for sources that only produce contiguous ranges: a contiguous ascending run is one
    /// `batch(indices:)`; anything else is assembled from single-sample batches.
    public func batch(samples: [Int]) -> Batch {
        check(!samples.isEmpty, "batch(samples:): no samples")
        if let first = samples.first, samples.count == samples.last! - first + 1,
           zip(samples, samples.dropFirst()).allSatisfy({ $0 + 1 == $1 }) {
            return batch(indices: first..<(first + samples.count))
        }
        return Batch(concatenating: samples.map { batch(indices: $0..<($0 + 1)) })
    }
}

extension Batch {
    /// The rows of `parts` one after the other (all of the same input and target kind and row shape).
    public init(concatenating parts: [Batch]) {
        check(!parts.isEmpty, "Batch(concatenating:): no batches")
        if parts.count == 1 { self = parts[0]; return }
        func joined(_ tensors: [IntTensor]) -> IntTensor {
            let rows = tensors.reduce(0) { $0 + $1.shape[0] }
            return IntTensor(shape: [rows] + tensors[0].shape.dropFirst(), scalars: tensors.flatMap(\.scalars))
        }
        func joined(_ tensors: [Tensor]) -> Tensor {
            let rows = tensors.reduce(0) { $0 + $1.shape[0] }
            return Tensor(shape: [rows] + tensors[0].shape.dropFirst(), scalars: tensors.flatMap(\.scalars))
        }
        let input: SequenceInput
        switch parts[0].input {
        case .tokens:
            input = .tokens(joined(parts.map { if case .tokens(let t) = $0.input { return t }; fatalError("Batch(concatenating:): mixed input kinds") }))
        case .features:
            input = .features(joined(parts.map { if case .features(let t) = $0.input { return t }; fatalError("Batch(concatenating:): mixed input kinds") }))
        }
        let targets: Targets
        switch parts[0].targets {
        case .classes:
            targets = .classes(joined(parts.map { if case .classes(let t) = $0.targets { return t }; fatalError("Batch(concatenating:): mixed target kinds") }))
        case .tokens:
            targets = .tokens(joined(parts.map { if case .tokens(let t) = $0.targets { return t }; fatalError("Batch(concatenating:): mixed target kinds") }))
        case .values:
            targets = .values(joined(parts.map { if case .values(let t) = $0.targets { return t }; fatalError("Batch(concatenating:): mixed target kinds") }))
        }
        self.init(input: input, targets: targets)
    }
}

/// The order in which the trainer visits the training split.
public enum TrainingOrder: Equatable, Sendable {
    /// Batch k of every epoch is samples k·B ..< (k+1)·B: for i.i.d. generated samples.
    case sequential
    /// Every epoch visits the samples in its own seeded permutation (a pure function of the seed and
    /// the epoch, so a resumed run recomputes it): for real data, stored in an order that is not random.
    case shuffled(seed: UInt64)
}

/// The seeded permutations of one split, one per epoch; keeps the current epoch's.
public struct EpochOrder {
    public let count: Int
    public let seed: UInt64
    private var cached: (epoch: Int, order: [Int])?

    public init(count: Int, seed: UInt64) {
        check(count >= 1, "EpochOrder: count must be ≥ 1, got \(count)")
        self.count = count
        self.seed = seed
    }

    /// The permutation of 0..<count for `epoch` (Fisher–Yates from a generator seeded by (seed, epoch)).
    public static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var order = Array(0..<count)
        var generator = RandomGenerator(seed: mixSeed(mixSeed(seed ^ 0x6F72_6465_7200_0000) ^ UInt64(epoch)))
        if count > 1 {
            for i in stride(from: count - 1, to: 0, by: -1) { order.swapAt(i, generator.nextInt(below: i + 1)) }
        }
        return order
    }

    /// The samples at positions `range` of `epoch`'s permutation.
    public mutating func samples(epoch: Int, positions range: Range<Int>) -> [Int] {
        if cached?.epoch != epoch { cached = (epoch, Self.permutation(count: count, seed: seed, epoch: epoch)) }
        return Array(cached!.order[range])
    }
}

/// splitmix64's finaliser (a bijective 64-bit mix), for deriving independent seeds.
@inline(__always) func mixSeed(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

// MARK: - Token storage

/// Variable-length token sequences in one flat buffer of ids (< 65,536) with offsets.
public struct TokenSequences: Sendable, Equatable {
    public private(set) var ids: [UInt16] = []
    /// Sequence i is ids[offsets[i] ..< offsets[i + 1]].
    public private(set) var offsets: [Int] = [0]

    public init() {}

    public var count: Int { offsets.count - 1 }
    public func length(of index: Int) -> Int { offsets[index + 1] - offsets[index] }
    public subscript(index: Int) -> ArraySlice<UInt16> { ids[offsets[index]..<offsets[index + 1]] }

    public mutating func append(_ tokens: some Sequence<UInt16>) {
        ids.append(contentsOf: tokens)
        offsets.append(ids.count)
    }

    /// Appends bytes (or small codes) as the ids byte + `offset`, at most `limit` of them from the start.
    public mutating func append(bytes: UnsafeBufferPointer<UInt8>, offset: UInt16, limit: Int = .max) {
        let n = min(bytes.count, limit), start = ids.count
        ids.append(contentsOf: repeatElement(0, count: n))
        ids.withUnsafeMutableBufferPointer { out in
            for i in 0..<n { out[start + i] = UInt16(bytes[i]) &+ offset }
        }
        offsets.append(ids.count)
    }

    public mutating func append(bytes: [UInt8], offset: UInt16, limit: Int = .max) {
        bytes.withUnsafeBufferPointer { append(bytes: $0, offset: offset, limit: limit) }
    }

    public mutating func append(contentsOf other: TokenSequences) {
        let base = ids.count
        ids += other.ids
        offsets += other.offsets.dropFirst().map { $0 + base }
    }

    public mutating func reserveCapacity(sequences: Int, ids total: Int) {
        offsets.reserveCapacity(sequences + 1)
        ids.reserveCapacity(total)
    }
}

/// How a document becomes a row of N positions.
public struct SequenceFormat: Equatable, Sendable {
    /// Which content tokens a document longer than its room keeps.
    public enum Truncation: String, Equatable, Sendable {
        /// The first ones (drop the end): the LRA references.
        case keepFirst
        /// The last ones (drop the beginning).
        case keepLast
    }

    /// Positions per document, N.
    public var length: Int
    public var padding: Int32
    /// Id written before the content (nil: none).
    public var cls: Int32?
    /// Id written right after the (truncated) content (nil: none).
    public var sep: Int32?
    public var truncation: Truncation

    public init(length: Int, padding: Int32 = 0, cls: Int32? = nil, sep: Int32? = nil, truncation: Truncation = .keepFirst) {
        self.length = length
        self.padding = padding
        self.cls = cls
        self.sep = sep
        self.truncation = truncation
    }

    /// Content tokens that fit in a row.
    public var room: Int { length - (cls == nil ? 0 : 1) - (sep == nil ? 0 : 1) }

    /// Writes one document into `row` (N ids): [CLS] content [SEP] PAD…
    @inline(__always) func write(_ content: UnsafeBufferPointer<UInt16>, into row: UnsafeMutablePointer<Int32>) {
        var p = 0
        if let cls { row[p] = cls; p += 1 }
        let kept = min(content.count, room)
        let start = truncation == .keepFirst ? 0 : content.count - kept
        for i in 0..<kept { row[p + i] = Int32(content[start + i]) }
        p += kept
        if let sep { row[p] = sep; p += 1 }
        for i in p..<length { row[i] = padding }
    }
}

// MARK: - A labelled split

/// Labelled samples of one split, each one document (`.sequence`) or two (`.pair`, side by side in a
/// row of 2N), drawn from a shared `TokenSequences`. Batches: `.tokens` [B, N or 2N], `.classes` [B].
public struct LabelledSequences: BatchSource, Sendable {
    public let documents: TokenSequences
    public let format: SequenceFormat
    /// 1 (a sequence) or 2 (a document pair).
    public let documentsPerSample: Int
    /// Sample i's documents: members[i·documentsPerSample ..< (i+1)·documentsPerSample].
    public let members: [Int32]
    public let labels: [Int32]

    public init(documents: TokenSequences, format: SequenceFormat, documentsPerSample: Int = 1, members: [Int32], labels: [Int32]) {
        check(documentsPerSample == 1 || documentsPerSample == 2, "LabelledSequences: 1 or 2 documents per sample, got \(documentsPerSample)")
        check(members.count == labels.count * documentsPerSample, "LabelledSequences: \(members.count) members for \(labels.count) samples")
        check(members.allSatisfy { $0 >= 0 && Int($0) < documents.count }, "LabelledSequences: a member is outside the \(documents.count) documents")
        check(format.length >= 1 && format.room >= 0, "LabelledSequences: no room for content in rows of \(format.length)")
        self.documents = documents
        self.format = format
        self.documentsPerSample = documentsPerSample
        self.members = members
        self.labels = labels
    }

    /// Every document once, as its own sample, in order.
    public init(documents: TokenSequences, labels: [Int32], format: SequenceFormat) {
        self.init(documents: documents, format: format, members: (0..<documents.count).map { Int32($0) }, labels: labels)
    }

    public var count: Int { labels.count }
    /// Rows are copied from immutable documents, on any thread.
    public var preparesBatchesInBackground: Bool { true }
    /// Positions of a row: N, or 2N for pairs.
    public var length: Int { format.length * documentsPerSample }

    /// The samples `samples`, in that order, as a new split over the same documents.
    public func subset(_ samples: some Sequence<Int>) -> LabelledSequences {
        var m: [Int32] = [], l: [Int32] = []
        for s in samples {
            l.append(labels[s])
            m.append(contentsOf: members[(s * documentsPerSample)..<((s + 1) * documentsPerSample)])
        }
        return LabelledSequences(documents: documents, format: format, documentsPerSample: documentsPerSample, members: m, labels: l)
    }

    /// The first `limit` samples (all when nil or larger).
    public func prefix(_ limit: Int?) -> LabelledSequences {
        guard let limit, limit < count else { return self }
        return subset(0..<limit)
    }

    /// Samples with a document longer than the row's room (their content is cut).
    public var truncatedCount: Int {
        (0..<count).reduce(0) { n, s in
            n + ((0..<documentsPerSample).contains { documents.length(of: Int(members[s * documentsPerSample + $0])) > format.room } ? 1 : 0)
        }
    }

    /// Number of samples per label value.
    public var labelCounts: [Int32: Int] { labels.reduce(into: [:]) { $0[$1, default: 0] += 1 } }

    public func batch(indices: Range<Int>) -> Batch { batch(samples: Array(indices)) }

    public func batch(samples: [Int]) -> Batch {
        check(!samples.isEmpty && samples.allSatisfy { $0 >= 0 && $0 < count },
              "LabelledSequences.batch: samples outside 0..<\(count)")
        let b = samples.count, n = format.length, row = length, k = documentsPerSample
        var ids = [Int32](repeating: 0, count: b * row)
        var targets = [Int32](repeating: 0, count: b)
        documents.ids.withUnsafeBufferPointer { all in
            ids.withUnsafeMutableBufferPointer { out in
                for (r, s) in samples.enumerated() {
                    targets[r] = labels[s]
                    for part in 0..<k {
                        let d = Int(members[s * k + part])
                        let start = documents.offsets[d], end = documents.offsets[d + 1]
                        format.write(UnsafeBufferPointer(rebasing: all[start..<end]), into: out.baseAddress! + r * row + part * n)
                    }
                }
            }
        }
        return Batch(input: .tokens(IntTensor(shape: [b, row], scalars: ids)), targets: .classes(IntTensor(shape: [b], scalars: targets)))
    }

    /// "20,000 samples (10,000 per label), 1,234 truncated to 3,998 tokens": the split's line for a summary.
    public func describe(_ noun: String = "samples") -> String {
        let counts = labelCounts
        let perLabel = counts.count <= 4 ? "labels " + counts.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.grouped)" }.joined(separator: ", ")
            : "\(counts.count) labels"
        let cut = truncatedCount
        return "\(count.grouped) \(noun) (\(perLabel))" + (cut > 0 ? ", \(cut.grouped) truncated to \(format.room.grouped) tokens" : "")
    }
}

extension Int {
    /// 12,345 (grouped digits, independent of the locale).
    var grouped: String {
        let digits = String(magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (self < 0 ? "-" : "") + out
    }
}

// MARK: - Splitting

/// A deterministic stratified split: within each label, the samples are permuted by `seed` and
/// dealt to validation, test and train in proportion, so every split keeps the label mix.
/// Returns sample indices, each split in a seeded random order (so a prefix of a split is a random
/// subset, not one label's block).
public func stratifiedSplit(labels: [Int32], validation: Int, test: Int, seed: UInt64) -> (train: [Int], validation: [Int], test: [Int]) {
    check(validation >= 0 && test >= 0 && validation + test <= labels.count, "stratifiedSplit: \(validation) + \(test) of \(labels.count) samples")
    var byLabel: [Int32: [Int]] = [:]
    for (i, l) in labels.enumerated() { byLabel[l, default: []].append(i) }
    var train: [Int] = [], val: [Int] = [], tst: [Int] = []
    let classes = byLabel.keys.sorted()
    // Largest-remainder apportionment of the evaluation counts to labels (sums exactly).
    func apportion(_ total: Int) -> [Int32: Int] {
        let n = labels.count
        var shares = classes.map { c -> (Int32, Int, Int) in
            let exact = total * byLabel[c]!.count
            return (c, exact / max(n, 1), exact % max(n, 1))
        }
        var left = total - shares.reduce(0) { $0 + $1.1 }
        for i in shares.indices.sorted(by: { shares[$0].2 > shares[$1].2 || (shares[$0].2 == shares[$1].2 && $0 < $1) }) where left > 0 {
            shares[i].1 += 1
            left -= 1
        }
        return Dictionary(uniqueKeysWithValues: shares.map { ($0.0, $0.1) })
    }
    let valShare = apportion(validation), testShare = apportion(test)
    for c in classes {
        let members = byLabel[c]!
        let order = EpochOrder.permutation(count: members.count, seed: mixSeed(seed ^ UInt64(UInt32(bitPattern: c))), epoch: 0)
        let v = valShare[c]!, t = min(testShare[c]!, members.count - v)
        val += order[0..<v].map { members[$0] }
        tst += order[v..<(v + t)].map { members[$0] }
        train += order[(v + t)...].map { members[$0] }
    }
    func shuffled(_ xs: [Int], _ tag: UInt64) -> [Int] {
        EpochOrder.permutation(count: xs.count, seed: mixSeed(seed ^ tag), epoch: 0).map { xs[$0] }
    }
    return (shuffled(train.sorted(), 1), shuffled(val.sorted(), 2), shuffled(tst.sorted(), 3))
}
