import Foundation
import LongMixerCore

// Synthetic long-range tasks of the Paramixer paper (Yu et al., CVPR 2022), generated like the
// reference code `wiedersehne/Paramixer`, `Synthetic-data-tasks/synth_data_generation.py`
// (the Paramixer reference notes, §4.1–4.2):
//
// - Adding problem: N pairs (value, marker). Values x ~ U(−1, 1] (the reference's
//   `(-1 - 1) * torch.rand(N) + 1`); two distinct positions p1 < p2 drawn uniformly from the whole
//   sequence (`random.sample(range(N), 2)`, so both may fall in the same half — unlike Hochreiter's
//   one-per-half variant) carry marker 1, all others 0. Target 0.5 + (x[p1] + x[p2]) / 4 ∈ (0, 1].
//   Input `.features` [B, N, 2], targets `.values` [B, 1]; loss MSE; "accuracy" = fraction of
//   predictions with |error| < 0.04.
// - Temporal Order: tokens a, b, c, d = 0, 1, 2, 3 drawn uniformly; two distinct positions p1 < p2
//   drawn uniformly from the whole sequence are overwritten, each independently, with X = 4 or Y = 5.
//   Vocabulary 6. Class = 2·[s(p1) = Y] + [s(p2) = Y], i.e. XX → 0, XY → 1, YX → 2, YY → 3.
//   Input `.tokens` [B, N], targets `.classes` [B]; loss cross-entropy.
//
// Data are streamed: sample i of a split is generated on demand from its own generator seeded by
// a hash of (seed, split, i), so nothing is stored, any batch can be produced in any order, and
// the result does not depend on batch size or thread count. The splits use different hash tags,
// so their streams are independent (a seed collision needs two equal 64-bit hashes). The reference
// generates 100,000 / 1,000 / 1,000 sequences (train / validation / test); see `SplitSizes`.

/// A labelled collection of equal-length sequences that produces batches on demand.
public protocol BatchSource {
    /// Number of samples.
    var count: Int { get }
    /// Sequence length N of every sample.
    var length: Int { get }
    /// The samples `indices` (a sub-range of 0..<count) as one batch, in order.
    func batch(indices: Range<Int>) -> Batch
    /// The samples `samples` (each in 0..<count) as one batch, in that order (a shuffled epoch).
    func batch(samples: [Int]) -> Batch
    /// Whether the trainer may lay batches out on a background thread (`BatchPrefetcher`): they read
    /// only immutable data and call neither BLAS nor `parallelFor`. False unless a source says so.
    var preparesBatchesInBackground: Bool { get }
}

extension BatchSource {
    public var preparesBatchesInBackground: Bool { false }

    /// Number of batches of `size` covering every sample once (the last one may be smaller).
    public func batchCount(size: Int) -> Int {
        check(size >= 1, "batchCount: batch size must be ≥ 1, got \(size)")
        return (count + size - 1) / size
    }

    /// Batch number `index` of size `size` (samples index·size ..< min((index+1)·size, count)).
    public func batch(at index: Int, size: Int) -> Batch {
        check(size >= 1, "batch(at:size:): batch size must be ≥ 1, got \(size)")
        let start = index * size
        check(index >= 0 && start < count, "batch(at: \(index), size: \(size)) is outside the \(count) samples")
        return batch(indices: start..<min(start + size, count))
    }
}

/// Errors of the data layer, each one line naming the offending value.
public enum DataError: Error, CustomStringConvertible, Equatable {
    case unknownTask(String)
    case lengthTooShort(task: String, length: Int)
    case invalidSplitSize(split: String, size: Int)

    public var description: String {
        switch self {
        case .unknownTask(let name):
            return "unknown task '\(name)'; valid tasks: \(SyntheticTask.allCases.map(\.rawValue).joined(separator: ", "))"
        case .lengthTooShort(let task, let n):
            return "the \(task) task needs sequence length N ≥ 2 (two marked positions), got \(n)"
        case .invalidSplitSize(let split, let size):
            return "the \(split) split must hold at least 1 sample, got \(size)"
        }
    }
}

/// What a task asks the model to produce.
public enum TaskObjective: Equatable, Sendable, Codable {
    /// `outputs` real values per sequence, MSE loss; a prediction counts as correct when every
    /// output is within `tolerance` of its target.
    case regression(outputs: Int, tolerance: Float)
    /// One of `classes` classes per sequence, cross-entropy loss, argmax accuracy.
    case classification(classes: Int)
    /// Two classes from one logit per sequence [B, 1]: binary cross-entropy with logits, accuracy of
    /// logit > 0, and ROC-AUC of the probabilities σ(logit) over an evaluation split.
    case binary
    /// Next-token prediction over a vocabulary of `vocabulary` tokens: model outputs are logits
    /// [B, N, V], targets `.tokens` [B, N]; token-level cross-entropy with targets equal to
    /// `ignoreIndex` (PAD) skipped; losses and accuracies are averaged per counted token.
    case languageModel(vocabulary: Int, ignoreIndex: Int)

    /// Model outputs per sequence (C), or per position (V) for a language model.
    public var outputCount: Int {
        switch self {
        case .regression(let o, _): return o
        case .classification(let c): return c
        case .binary: return 1
        case .languageModel(let v, _): return v
        }
    }
}

/// The synthetic tasks.
public enum SyntheticTask: String, Codable, CaseIterable, Sendable {
    case adding
    /// Temporal Order.
    case order

    /// Parses a task name; "temporal-order" and "temporal_order" are accepted for `order`.
    public init(parsing name: String) throws {
        let lowered = name.lowercased()
        if lowered == "temporal-order" || lowered == "temporal_order" || lowered == "temporalorder" { self = .order; return }
        guard let task = SyntheticTask(rawValue: lowered) else { throw DataError.unknownTask(name) }
        self = task
    }

    /// Adding: tolerance 0.04 as the reference. Order: 4 classes.
    public var objective: TaskObjective {
        switch self {
        case .adding: return .regression(outputs: 1, tolerance: 0.04)
        case .order: return .classification(classes: 4)
        }
    }

    /// Token vocabulary (Order: a, b, c, d, X, Y), or nil for real-valued input.
    public var vocabularySize: Int? { self == .order ? 6 : nil }
    /// Real-valued features per position (Adding: value and marker), or nil for token input.
    public var inputFeatures: Int? { self == .adding ? 2 : nil }

    /// Human-readable name.
    public var displayName: String { self == .adding ? "Adding" : "Temporal Order" }
}

/// Token ids of the Temporal Order task.
public enum TemporalOrderSymbols {
    /// Noise symbols a, b, c, d.
    public static let noise: ClosedRange<Int32> = 0...3
    public static let x: Int32 = 4
    public static let y: Int32 = 5
    public static let vocabularySize = 6
}

/// Which split a sample belongs to.
public enum DataSplit: String, Codable, CaseIterable, Sendable {
    case train, validation, test

    /// Hash tag mixed into every sample seed of this split.
    var tag: UInt64 {
        switch self {
        case .train: return 0x7472_6169_6E00_0001
        case .validation: return 0x7661_6C69_6400_0002
        case .test: return 0x7465_7374_0000_0003
        }
    }
}

/// Number of samples per split. Default: the reference's 100,000 / 1,000 / 1,000.
public struct SplitSizes: Codable, Equatable, Sendable {
    public var train: Int
    public var validation: Int
    public var test: Int

    public init(train: Int = 100_000, validation: Int = 1_000, test: Int = 1_000) {
        self.train = train
        self.validation = validation
        self.test = test
    }

    public static let reference = SplitSizes()

    public func size(of split: DataSplit) -> Int {
        switch split {
        case .train: return train
        case .validation: return validation
        case .test: return test
        }
    }

    public func validate() throws {
        for split in DataSplit.allCases where size(of: split) < 1 {
            throw DataError.invalidSplitSize(split: split.rawValue, size: size(of: split))
        }
    }
}

/// One generated sequence (for inspection and tests; batches are written directly).
public struct SyntheticSample: Equatable, Sendable {
    /// The two marked positions, p1 < p2.
    public var positions: (Int, Int)
    /// Adding: the N values; Order: empty.
    public var values: [Float]
    /// Adding: the N markers (0 or 1); Order: empty.
    public var markers: [Float]
    /// Order: the N token ids; Adding: empty.
    public var tokens: [Int32]
    /// Adding: the regression target; Order: 0.
    public var target: Float
    /// Order: the class 0..<4; Adding: 0.
    public var label: Int

    public static func == (a: SyntheticSample, b: SyntheticSample) -> Bool {
        a.positions == b.positions && a.values == b.values && a.markers == b.markers && a.tokens == b.tokens
            && a.target == b.target && a.label == b.label
    }
}

/// A streamed split of a synthetic task: sample i is a pure function of (seed, split, i).
public struct SyntheticDataset: BatchSource, Sendable {
    public let task: SyntheticTask
    public let length: Int
    public let split: DataSplit
    public let count: Int
    public let seed: UInt64

    public init(task: SyntheticTask, length: Int, split: DataSplit, count: Int, seed: UInt64) throws {
        guard length >= 2 else { throw DataError.lengthTooShort(task: task.displayName, length: length) }
        guard count >= 1 else { throw DataError.invalidSplitSize(split: split.rawValue, size: count) }
        self.task = task
        self.length = length
        self.split = split
        self.count = count
        self.seed = seed
    }

    /// The three splits of one task with the given sizes and base seed.
    public static func splits(task: SyntheticTask, length: Int, sizes: SplitSizes = .reference, seed: UInt64) throws
        -> (train: SyntheticDataset, validation: SyntheticDataset, test: SyntheticDataset) {
        try sizes.validate()
        return (try SyntheticDataset(task: task, length: length, split: .train, count: sizes.train, seed: seed),
                try SyntheticDataset(task: task, length: length, split: .validation, count: sizes.validation, seed: seed),
                try SyntheticDataset(task: task, length: length, split: .test, count: sizes.test, seed: seed))
    }

    /// Seed of sample `index`: SplitMix64-style finalisers over (seed, split tag, index).
    public func sampleSeed(_ index: Int) -> UInt64 {
        func mix(_ z0: UInt64) -> UInt64 {
            var z = z0 &+ 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        return mix(mix(mix(seed) ^ split.tag) ^ UInt64(index))
    }

    /// Two distinct positions p1 < p2, uniform over all pairs (as `random.sample(range(N), 2)`, sorted).
    static func markedPositions(length n: Int, generator: inout RandomGenerator) -> (Int, Int) {
        let a = generator.nextInt(below: n)
        var b = generator.nextInt(below: n - 1)
        if b >= a { b += 1 }
        return (min(a, b), max(a, b))
    }

    /// Writes sample `index` into the given row buffers (exactly one of the two pointer sets is used).
    /// Adding: `features` has 2·N floats (value, marker pairs). Order: `tokens` has N ids.
    /// Returns the (target, label) pair.
    func generate(_ index: Int, features: UnsafeMutablePointer<Float>?, tokens: UnsafeMutablePointer<Int32>?)
        -> (positions: (Int, Int), target: Float, label: Int) {
        check(index >= 0 && index < count, "sample \(index) is outside the \(count) samples of the \(split.rawValue) split")
        var generator = RandomGenerator(seed: sampleSeed(index))
        let n = length
        switch task {
        case .adding:
            let f = features!
            for i in 0..<n {
                f[2 * i] = 1 - 2 * generator.nextUniform()          // (−1, 1]
                f[2 * i + 1] = 0
            }
            let (p1, p2) = Self.markedPositions(length: n, generator: &generator)
            f[2 * p1 + 1] = 1
            f[2 * p2 + 1] = 1
            return ((p1, p2), 0.5 + (f[2 * p1] + f[2 * p2]) / 4, 0)
        case .order:
            let t = tokens!
            for i in 0..<n { t[i] = Int32(generator.nextInt(below: 4)) }
            let (p1, p2) = Self.markedPositions(length: n, generator: &generator)
            let first = generator.nextInt(below: 2) == 0 ? TemporalOrderSymbols.x : TemporalOrderSymbols.y
            let second = generator.nextInt(below: 2) == 0 ? TemporalOrderSymbols.x : TemporalOrderSymbols.y
            t[p1] = first
            t[p2] = second
            let label = 2 * (first == TemporalOrderSymbols.y ? 1 : 0) + (second == TemporalOrderSymbols.y ? 1 : 0)
            return ((p1, p2), 0, label)
        }
    }

    /// Sample `index` as plain arrays.
    public func sample(at index: Int) -> SyntheticSample {
        let n = length
        switch task {
        case .adding:
            var f = [Float](repeating: 0, count: 2 * n)
            let r = f.withUnsafeMutableBufferPointer { generate(index, features: $0.baseAddress!, tokens: nil) }
            return SyntheticSample(positions: r.positions, values: stride(from: 0, to: 2 * n, by: 2).map { f[$0] },
                                   markers: stride(from: 1, to: 2 * n, by: 2).map { f[$0] }, tokens: [],
                                   target: r.target, label: 0)
        case .order:
            var t = [Int32](repeating: 0, count: n)
            let r = t.withUnsafeMutableBufferPointer { generate(index, features: nil, tokens: $0.baseAddress!) }
            return SyntheticSample(positions: r.positions, values: [], markers: [], tokens: t, target: 0, label: r.label)
        }
    }

    public func batch(indices: Range<Int>) -> Batch {
        check(!indices.isEmpty && indices.lowerBound >= 0 && indices.upperBound <= count,
                     "batch: indices \(indices) are outside the \(count) samples of the \(split.rawValue) split")
        return rows(indices.count) { indices.lowerBound + $0 }
    }

    public func batch(samples: [Int]) -> Batch {
        check(!samples.isEmpty && samples.allSatisfy { $0 >= 0 && $0 < count },
              "batch: samples outside the \(count) samples of the \(split.rawValue) split")
        return rows(samples.count) { samples[$0] }
    }

    /// A batch of `b` rows, row r holding sample `sample(r)`.
    private func rows(_ b: Int, sample: (Int) -> Int) -> Batch {
        let n = length
        // Samples are independent, so rows are generated in parallel; each row is a pure function
        // of its index, so the result does not depend on the thread count.
        let grain = max(1, 8192 / n)
        switch task {
        case .adding:
            var x = Tensor(uninitializedShape: [b, n, 2])
            var y = Tensor(uninitializedShape: [b, 1])
            x.withUnsafeMutablePointer { xp in
                y.withUnsafeMutablePointer { yp in
                    parallelFor(b, grain: grain) { rows in
                        for r in rows { yp[r] = generate(sample(r), features: xp + r * 2 * n, tokens: nil).target }
                    }
                }
            }
            return Batch(input: .features(x), targets: .values(y))
        case .order:
            var tokens = [Int32](repeating: 0, count: b * n)
            var labels = [Int32](repeating: 0, count: b)
            tokens.withUnsafeMutableBufferPointer { tp in
                labels.withUnsafeMutableBufferPointer { lp in
                    let t = tp.baseAddress!, l = lp.baseAddress!
                    parallelFor(b, grain: grain) { rows in
                        for r in rows { l[r] = Int32(generate(sample(r), features: nil, tokens: t + r * n).label) }
                    }
                }
            }
            return Batch(input: .tokens(IntTensor(shape: [b, n], scalars: tokens)),
                         targets: .classes(IntTensor(shape: [b], scalars: labels)))
        }
    }
}
