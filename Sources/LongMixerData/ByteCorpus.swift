import Foundation
import LongMixerCore

// Byte-level text corpora for language modelling.
//
// A corpus is one byte buffer: a single file, or every `.txt` file under a directory (recursively,
// sorted by relative path, joined with a newline where a file does not end in one). Token ids use
// the byte language model's vocabulary (`CausalLanguageModel` / `ByteVocabulary` in LongMixerModels):
// PAD 0, BOS 1, EOS 2, byte b ↦ b + 3 (V = 259). Windows never contain PAD, so every target counts.
//
// Splits are contiguous byte ranges in corpus order (default 90 / 5 / 5 % train / validation /
// test), so no text of the evaluation splits is ever seen in training; a WikiText folder
// (`wiki.{train,valid,test}.raw`) brings its own three splits instead. A window of length N is
// N + 1 consecutive bytes: input bytes [o, o + N), targets [o + 1, o + N + 1).
//
// - Training windows (`ByteWindows.Sampling.random`): window i starts at a uniform offset drawn from
//   a hash of (seed, i), so any batch can be produced in any order and a run does not depend on
//   batch size or thread count. `count` windows make one "epoch" (default ⌊bytes / N⌋: each byte is
//   seen about once); a trainer that cycles through the epoch again sees the same windows.
// - Evaluation windows (`.sequential`): the non-overlapping windows starting at 0, N, 2N, … of the
//   split (each byte after the first is predicted exactly once; the last ⌊(bytes − 1) mod N⌋ bytes are
//   dropped); optionally an evenly spaced subset of them.

/// Errors of byte corpora, one line each naming the offending path or value.
public enum ByteCorpusError: Error, CustomStringConvertible, Equatable {
    case missing(String)
    case unreadable(String, String)
    case empty(String)
    case noTextFiles(String)
    case invalidFractions(String)
    case windowTooLong(split: String, length: Int, bytes: Int)
    case invalidWindowCount(Int)

    public var description: String {
        switch self {
        case .missing(let path): return "corpus '\(path)' does not exist"
        case .unreadable(let path, let reason): return "cannot read corpus file '\(path)': \(reason)"
        case .empty(let path): return "corpus '\(path)' is empty (0 bytes)"
        case .noTextFiles(let path): return "corpus directory '\(path)' holds no .txt files"
        case .invalidFractions(let message): return "corpus split fractions: \(message)"
        case .windowTooLong(let split, let n, let bytes):
            return "a window of length \(n) needs \(n + 1) bytes, but the \(split) split holds only \(bytes); use a shorter --length or a larger corpus"
        case .invalidWindowCount(let n): return "the number of windows must be ≥ 1, got \(n)"
        }
    }
}

/// A byte buffer with the files it came from.
public final class ByteCorpus: @unchecked Sendable {
    /// Offset from a byte to its token id (PAD 0, BOS 1, EOS 2 come first).
    public static let tokenOffset = 3
    /// Vocabulary of the token ids (256 bytes + 3 specials).
    public static let vocabularySize = 259
    public static let paddingIndex = 0

    /// The whole corpus. Never mutated after initialisation.
    public let bytes: [UInt8]
    /// The files read, in order (relative to a directory, or the single file's path).
    public let files: [String]
    /// Where the corpus was loaded from.
    public let source: String
    /// Splits the corpus comes with (WikiText's three files), used instead of fractions.
    public let fixedSplits: (train: Range<Int>, validation: Range<Int>, test: Range<Int>)?

    /// WikiText's release files in split order: the raw character-level ones, else the tokenised ones.
    public static let wikiTextFiles = [["wiki.train.raw", "wiki.valid.raw", "wiki.test.raw"],
                                       ["wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"]]

    public init(bytes: [UInt8], files: [String] = [], source: String = "<memory>",
                fixedSplits: (train: Range<Int>, validation: Range<Int>, test: Range<Int>)? = nil) throws {
        guard !bytes.isEmpty else { throw ByteCorpusError.empty(source) }
        if let f = fixedSplits {
            check(f.train.lowerBound == 0 && f.train.upperBound == f.validation.lowerBound && f.validation.upperBound == f.test.lowerBound
                  && f.test.upperBound == bytes.count, "ByteCorpus: fixed splits \(f) do not tile \(bytes.count) bytes")
        }
        self.bytes = bytes
        self.files = files
        self.source = source
        self.fixedSplits = fixedSplits
    }

    /// A WikiText folder (`wiki.{train,valid,test}.raw`, or `.tokens`): its three files are the splits.
    public convenience init(wikiTextFolder path: String, files names: [String]) throws {
        var all: [UInt8] = [], bounds: [Int] = [0]
        for name in names {
            let file = (path as NSString).appendingPathComponent(name)
            let b = try Self.read(file)
            guard !b.isEmpty else { throw ByteCorpusError.empty(file) }
            all += b
            bounds.append(all.count)
        }
        try self.init(bytes: all, files: names, source: path,
                      fixedSplits: (bounds[0]..<bounds[1], bounds[1]..<bounds[2], bounds[2]..<bounds[3]))
    }

    /// Whether `splitRanges` follows the corpus's own files (WikiText) rather than fractions.
    public var hasFixedSplits: Bool { fixedSplits != nil }

    /// Loads a single file, or every `.txt` file under a directory.
    public convenience init(path: String) throws {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else { throw ByteCorpusError.missing(path) }
        if !isDirectory.boolValue {
            // A device or pipe (/dev/zero) would be read forever or refused with a misleading reason.
            let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            let type = (try? fm.attributesOfItem(atPath: resolved)[.type]) as? FileAttributeType
            guard type == .typeRegular else { throw ByteCorpusError.unreadable(path, "not a regular file or a folder") }
            let bytes = try Self.read(path)
            guard !bytes.isEmpty else { throw ByteCorpusError.empty(path) }
            try self.init(bytes: bytes, files: [path], source: path)
            return
        }
        if let names = Self.wikiTextFiles.first(where: { set in set.allSatisfy { fm.fileExists(atPath: (path as NSString).appendingPathComponent($0)) } }) {
            try self.init(wikiTextFolder: path, files: names)
            return
        }
        guard let enumerator = fm.enumerator(atPath: path) else { throw ByteCorpusError.unreadable(path, "cannot list the directory") }
        var names: [String] = []
        while let name = enumerator.nextObject() as? String {
            let last = (name as NSString).lastPathComponent
            guard !last.hasPrefix("."), name.lowercased().hasSuffix(".txt") else { continue }
            var sub: ObjCBool = false
            if fm.fileExists(atPath: (path as NSString).appendingPathComponent(name), isDirectory: &sub), !sub.boolValue { names.append(name) }
        }
        names.sort()
        guard !names.isEmpty else { throw ByteCorpusError.noTextFiles(path) }
        var all: [UInt8] = []
        for name in names {
            let b = try Self.read((path as NSString).appendingPathComponent(name))
            if b.isEmpty { continue }
            if let last = all.last, last != 0x0A { all.append(0x0A) }
            all += b
        }
        guard !all.isEmpty else { throw ByteCorpusError.empty(path) }
        try self.init(bytes: all, files: names, source: path)
    }

    static func read(_ path: String) throws -> [UInt8] {
        do { return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)) } catch {
            let ns = error as NSError
            let reason = (ns.userInfo[NSUnderlyingErrorKey] as? NSError).map { String(cString: strerror(Int32($0.code))) } ?? ns.localizedDescription
            throw ByteCorpusError.unreadable(path, reason)
        }
    }

    public var count: Int { bytes.count }

    /// The token id of a byte.
    @inline(__always) public static func token(_ byte: UInt8) -> Int32 { Int32(byte) + Int32(tokenOffset) }

    /// Token ids of `text`'s UTF-8 bytes (no BOS).
    public static func tokens(_ text: String) -> [Int] { text.utf8.map { Int($0) + tokenOffset } }

    /// Contiguous byte ranges of the three splits: train = [0, ⌊f_train·n⌋), validation the next
    /// ⌊f_validation·n⌋ bytes, test the rest.
    public func splitRanges(fractions: SplitFractions = .standard) -> (train: Range<Int>, validation: Range<Int>, test: Range<Int>) {
        if let fixedSplits { return fixedSplits }
        let n = bytes.count
        let trainEnd = Int((Double(n) * fractions.train).rounded(.down))
        let validationEnd = trainEnd + Int((Double(n) * fractions.validation).rounded(.down))
        return (0..<trainEnd, trainEnd..<validationEnd, validationEnd..<n)
    }

    /// Training windows (seeded random offsets) and evaluation windows (fixed, non-overlapping) of length N.
    /// `trainWindows` sets the windows per epoch (default ⌊train bytes / N⌋); `validationWindows` /
    /// `testWindows` cap the evaluation windows to an evenly spaced subset (default: all).
    public func windows(length: Int, seed: UInt64, fractions: SplitFractions = .standard, trainWindows: Int? = nil,
                        validationWindows: Int? = nil, testWindows: Int? = nil)
        throws -> (train: ByteWindows, validation: ByteWindows, test: ByteWindows) {
        try fractions.validate()
        let r = splitRanges(fractions: fractions)
        let trainCount = trainWindows ?? max(1, r.train.count / max(length, 1))
        return (try ByteWindows(corpus: self, range: r.train, length: length, split: .train, sampling: .random(seed: seed, count: trainCount)),
                try ByteWindows(corpus: self, range: r.validation, length: length, split: .validation, sampling: .sequential(limit: validationWindows)),
                try ByteWindows(corpus: self, range: r.test, length: length, split: .test, sampling: .sequential(limit: testWindows)))
    }
}

/// Fractions of the corpus in each split (they must sum to 1; validation and test get ≥ 0).
public struct SplitFractions: Codable, Equatable, Sendable {
    public var train: Double
    public var validation: Double
    public var test: Double { max(0, 1 - train - validation) }

    public static let standard = SplitFractions(train: 0.9, validation: 0.05)

    public init(train: Double, validation: Double) {
        self.train = train
        self.validation = validation
    }

    public func validate() throws {
        guard train > 0, validation > 0, train + validation < 1, train.isFinite, validation.isFinite else {
            throw ByteCorpusError.invalidFractions("train \(train) and validation \(validation) must be > 0 and leave a test split (sum < 1)")
        }
    }

    enum CodingKeys: String, CodingKey { case train, validation, test }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(train, forKey: .train)
        try c.encode(validation, forKey: .validation)
        try c.encode(test, forKey: .test)
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(train: try c.decode(Double.self, forKey: .train), validation: try c.decode(Double.self, forKey: .validation))
    }
}

/// Windows of N + 1 consecutive bytes of one split, as batches of `.tokens` inputs [B, N] and
/// `.tokens` targets [B, N] (the input shifted by one).
public struct ByteWindows: BatchSource, @unchecked Sendable {
    public enum Sampling: Equatable, Sendable {
        /// `count` windows at offsets drawn uniformly from the split by a hash of (seed, index).
        case random(seed: UInt64, count: Int)
        /// The non-overlapping windows at 0, N, 2N, …; with a limit, an evenly spaced subset of that many.
        case sequential(limit: Int?)
    }

    public let corpus: ByteCorpus
    /// The split's byte range in the corpus.
    public let range: Range<Int>
    public let length: Int
    public let split: DataSplit
    public let sampling: Sampling
    public let count: Int
    /// Windows are copied from immutable data, on any thread.
    public var preparesBatchesInBackground: Bool { true }
    /// Sequential sampling: the number of non-overlapping windows in the split.
    let available: Int

    public init(corpus: ByteCorpus, range: Range<Int>, length: Int, split: DataSplit, sampling: Sampling) throws {
        check(range.lowerBound >= 0 && range.upperBound <= corpus.count, "ByteWindows: range \(range) is outside the corpus of \(corpus.count) bytes")
        guard length >= 1, range.count >= length + 1 else {
            throw ByteCorpusError.windowTooLong(split: split.rawValue, length: length, bytes: range.count)
        }
        self.corpus = corpus
        self.range = range
        self.length = length
        self.split = split
        self.sampling = sampling
        available = (range.count - 1) / length
        switch sampling {
        case .random(_, let n):
            guard n >= 1 else { throw ByteCorpusError.invalidWindowCount(n) }
            count = n
        case .sequential(let limit):
            if let limit, limit < 1 { throw ByteCorpusError.invalidWindowCount(limit) }
            count = min(limit ?? available, available)
        }
    }

    /// Bytes covered by the targets of all windows (= counted tokens of one pass).
    public var targetCount: Int { count * length }

    /// Start of window `index` in the corpus.
    public func offset(_ index: Int) -> Int {
        check(index >= 0 && index < count, "ByteWindows: window \(index) is outside 0..<\(count)")
        switch sampling {
        case .random(let seed, _):
            let starts = UInt64(range.count - length)           // offsets o with o + N + 1 ≤ upper bound
            return range.lowerBound + Int(Self.mix(seed ^ Self.mix(UInt64(index) &+ split.hashTag)) % starts)
        case .sequential:
            let k = count == available ? index : index * available / count
            return range.lowerBound + k * length
        }
    }

    /// splitmix64's finaliser: a bijective 64-bit mix.
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public func batch(indices: Range<Int>) -> Batch {
        check(indices.lowerBound >= 0 && indices.upperBound <= count && !indices.isEmpty,
              "ByteWindows.batch: indices \(indices) outside 0..<\(count)")
        return batch(samples: Array(indices))
    }

    public func batch(samples indices: [Int]) -> Batch {
        check(!indices.isEmpty && indices.allSatisfy { $0 >= 0 && $0 < count }, "ByteWindows.batch: samples outside 0..<\(count)")
        let b = indices.count, n = length
        var input = [Int32](repeating: 0, count: b * n), targets = [Int32](repeating: 0, count: b * n)
        corpus.bytes.withUnsafeBufferPointer { bytes in
            for (row, index) in indices.enumerated() {
                let o = offset(index)
                for t in 0..<n {
                    input[row * n + t] = ByteCorpus.token(bytes[o + t])
                    targets[row * n + t] = ByteCorpus.token(bytes[o + t + 1])
                }
            }
        }
        return Batch(input: .tokens(IntTensor(shape: [b, n], scalars: input)), targets: .tokens(IntTensor(shape: [b, n], scalars: targets)))
    }
}

extension DataSplit {
    /// Tag mixed into the window hash (so equal seeds give different streams per split).
    var hashTag: UInt64 { tag }
}
