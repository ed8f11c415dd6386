import Foundation
import LongMixerCore

// LRA ListOps (Tay et al. 2021; generator `lra_benchmarks/data/listops.py` of the LRA repository,
// after Nangia & Bowman 2018), regenerated natively from a seed.
//
// A tree is drawn top-down from depth 1: below the maximum depth (10) a node is a digit 0–9 with
// probability 0.75, else an operator (MIN, MAX, MED, SM, drawn after its arguments) over 2–10
// arguments drawn recursively; at the maximum depth it is always a digit. Its length is its token
// count without parentheses (an operator node: its operator, its arguments and `]`). Trees with
// 500 < length < 2000 are kept, duplicates dropped, and the first 96,000 / 2,000 / 2,000 unique
// trees form train / validation / test. Labels: MIN, MAX, MED = the median truncated to an integer
// (the mean of the two middle values when the count is even), SM = the sum mod 10.
//
// Files are the release's: `basic_{train,val,test}.tsv`, a `Source\tTarget` header, the tree in the
// generator's left-nested bracket form, e.g. `( ( ( [MAX 2 ) 9 ) ] )\t9`, CRLF line ends.
//
// Tokens (the corrected LRA pipeline, as the PermuteFormer and S4 loaders): parentheses dropped,
// `]` read as `X`, whitespace-separated. Ids: PAD 0 (CLS 1 and SEP 2 reserved, unused), then the 15
// tokens in sorted order from 3: `0`…`9` = 3…12, `X` = 13, `[MAX` 14, `[MED` 15, `[MIN` 16,
// `[SM` 17 (vocabulary 18). No CLS/SEP: the PermuteFormer reference pools the first token (the
// root operator) and Paramixer flattens. Every tree fits N = 1999 (the default), so nothing is cut.
//
// The random stream is ours (xoshiro256**), not Python's, so the trees differ from the release's
// while following the same distribution; the same seed gives byte-identical files.

/// ListOps tokens as codes 0…14 (model id = code + `ListOps.idOffset`).
public enum ListOps {
    /// Token texts by code, in sorted order.
    public static let tokenNames = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "X", "[MAX", "[MED", "[MIN", "[SM"]
    /// Code of `]` (read as `X`).
    public static let close: UInt8 = 10
    public static let maxCode: UInt8 = 11, medianCode: UInt8 = 12, minCode: UInt8 = 13, sumModCode: UInt8 = 14
    /// Model id of code c is c + idOffset (PAD 0, CLS 1, SEP 2 come first).
    public static let idOffset: UInt16 = 3
    public static let vocabularySize = 18
    public static let paddingIndex = 0
    public static let splitFiles = ["basic_train.tsv", "basic_val.tsv", "basic_test.tsv"]

    public struct Parameters: Equatable, Sendable {
        public var maxDepth = 10
        public var maxArguments = 10
        /// Kept lengths are strictly between these.
        public var minLength = 500
        public var maxLength = 2000
        /// A node above the maximum depth is a digit with this probability.
        public var leafProbability = 0.75
        public init() {}
        public static let reference = Parameters()
    }

    /// One tree: its codes (prefix order, `]` closing each operator) and its value.
    public struct Sample: Equatable, Hashable, Sendable {
        public var codes: [UInt8]
        public var label: UInt8
    }

    // MARK: Evaluation

    /// The operator applied to its arguments (digits 0–9).
    static func apply(_ op: UInt8, _ args: UnsafeBufferPointer<UInt8>) -> UInt8 {
        switch op {
        case maxCode: return args.max()!
        case minCode: return args.min()!
        case sumModCode: return UInt8(args.reduce(0) { $0 + Int($1) } % 10)
        default:
            // The median by counting (the arguments are digits): the k-th smallest for odd counts,
            // the truncated mean of the two middle ones for even counts.
            return withUnsafeTemporaryAllocation(of: Int.self, capacity: 10) { counts in
                counts.initialize(repeating: 0)
                for a in args { counts[Int(a)] += 1 }
                func kth(_ k: Int) -> Int {
                    var seen = 0
                    for d in 0..<10 { seen += counts[d]; if seen > k { return d } }
                    return 9
                }
                let n = args.count
                return UInt8(n % 2 == 1 ? kth(n / 2) : (kth(n / 2 - 1) + kth(n / 2)) / 2)
            }
        }
    }

    /// Stacks for evaluating trees of up to `capacity` codes, reused across the lines of a file.
    final class Scratch {
        private(set) var capacity = 0
        private(set) var codes = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        private(set) var values = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        private(set) var ops = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        private(set) var starts = UnsafeMutablePointer<Int>.allocate(capacity: 1)

        func reserve(_ n: Int) {
            guard n > capacity else { return }
            codes.deallocate(); values.deallocate(); ops.deallocate(); starts.deallocate()
            capacity = max(n, 2 * capacity)
            codes = .allocate(capacity: capacity); values = .allocate(capacity: capacity)
            ops = .allocate(capacity: capacity); starts = .allocate(capacity: capacity)
        }

        deinit { codes.deallocate(); values.deallocate(); ops.deallocate(); starts.deallocate() }
    }

    /// The value of a tree's codes, or nil when they are not one well-formed tree (an operator
    /// without arguments or `]`, a stray `]`, or more than one root).
    public static func evaluate(_ codes: [UInt8]) -> UInt8? {
        let scratch = Scratch()
        scratch.reserve(codes.count)
        return codes.withUnsafeBufferPointer { evaluate($0, scratch) }
    }

    /// `evaluate(_:)` on `scratch`'s stacks (which hold at least `codes.count` entries).
    static func evaluate(_ codes: UnsafeBufferPointer<UInt8>, _ scratch: Scratch) -> UInt8? {
        let values = scratch.values, ops = scratch.ops, starts = scratch.starts
        var nv = 0, nf = 0
        for c in codes {
            switch c {
            case 0...9:
                if nf == 0 && nv > 0 { return nil }
                values[nv] = c; nv += 1
            case close:
                guard nf > 0, nv > starts[nf - 1] else { return nil }
                nf -= 1
                let start = starts[nf]
                values[start] = apply(ops[nf], UnsafeBufferPointer(start: values + start, count: nv - start))
                nv = start + 1
            case maxCode...sumModCode:
                if nf == 0 && nv > 0 { return nil }
                ops[nf] = c; starts[nf] = nv; nf += 1
            default: return nil
            }
        }
        return nf == 0 && nv == 1 ? values[0] : nil
    }

    // MARK: Generation

    /// Appends one tree drawn at `depth` to `codes` and its value to `values`; false once `codes`
    /// reaches `limit` (the tree is abandoned: it could no longer be kept).
    static func grow(depth: Int, _ p: Parameters, _ rng: inout RandomGenerator, _ codes: inout [UInt8], _ values: inout [UInt8], limit: Int) -> Bool {
        if depth >= p.maxDepth || rng.nextUniformDouble() < p.leafProbability {
            let digit = UInt8(rng.nextInt(below: 10))
            codes.append(digit)
            values.append(digit)
            return codes.count < limit
        }
        let arguments = 2 + rng.nextInt(below: p.maxArguments - 1)
        let slot = codes.count, start = values.count
        codes.append(0)                                     // the operator, drawn after its arguments
        for _ in 0..<arguments {
            guard grow(depth: depth + 1, p, &rng, &codes, &values, limit: limit) else { return false }
        }
        let op = maxCode + UInt8(rng.nextInt(below: 4))
        codes[slot] = op
        codes.append(close)
        let v = values.withUnsafeBufferPointer { apply(op, UnsafeBufferPointer(rebasing: $0[start...])) }
        values.removeSubrange(start...)
        values.append(v)
        return codes.count < limit
    }

    /// Trees drawn from `rng` until `count` pass the length filter (duplicates included), and the
    /// number of trees drawn.
    static func block(count: Int, _ p: Parameters, _ rng: inout RandomGenerator) -> (samples: [Sample], drawn: Int) {
        var out: [Sample] = [], drawn = 0
        var codes: [UInt8] = [], values: [UInt8] = []
        codes.reserveCapacity(p.maxLength)
        while out.count < count {
            codes.removeAll(keepingCapacity: true)
            values.removeAll(keepingCapacity: true)
            drawn += 1
            if grow(depth: 1, p, &rng, &codes, &values, limit: p.maxLength), codes.count > p.minLength {
                out.append(Sample(codes: codes, label: values[0]))
            }
        }
        return (out, drawn)
    }

    /// Trees per generator block: blocks are drawn in parallel, each from its own stream seeded by
    /// (seed, block index), and taken in block order, so the result does not depend on the thread count.
    static let blockSize = 256

    /// `sizes` unique trees for train / validation / test, and the number of trees drawn.
    public static func generate(seed: UInt64, sizes: SplitSizes = SplitSizes(train: 96_000, validation: 2_000, test: 2_000),
                                parameters p: Parameters = .reference) -> (train: [Sample], validation: [Sample], test: [Sample], drawn: Int) {
        check(p.maxDepth >= 1 && p.maxArguments >= 2 && p.minLength + 1 < p.maxLength, "ListOps.generate: parameters \(p)")
        let needed = sizes.train + sizes.validation + sizes.test
        var unique: [Sample] = [], seen = Set<[UInt8]>(), drawn = 0, nextBlock = 0
        unique.reserveCapacity(needed)
        seen.reserveCapacity(needed)
        let wave = max(2, Parallel.threadCount) * 2
        while unique.count < needed {
            var results = [(samples: [Sample], drawn: Int)](repeating: ([], 0), count: wave)
            let first = nextBlock
            results.withUnsafeMutableBufferPointer { r in
                let out = r.baseAddress!
                parallelFor(wave) { blocks in
                    for b in blocks {
                        var rng = RandomGenerator(seed: mixSeed(mixSeed(seed ^ 0x6C69_7374_6F70_7300) ^ UInt64(first + b)))
                        out[b] = block(count: blockSize, p, &rng)
                    }
                }
            }
            nextBlock += wave
            for r in results {
                for s in r.samples where unique.count < needed && seen.insert(s.codes).inserted { unique.append(s) }
                drawn += r.drawn
                if unique.count == needed { break }
            }
        }
        let v = sizes.train, t = sizes.train + sizes.validation
        return (Array(unique[0..<v]), Array(unique[v..<t]), Array(unique[t...]), drawn)
    }

    // MARK: Text form

    /// Token texts by code as bytes.
    static let tokenBytes: [[UInt8]] = tokenNames.map { Array($0.utf8) }

    /// Appends the release's left-nested bracket form of the tree at `codes[position...]` to `out`;
    /// returns the position after it. `arity[i]`: the argument count of the operator at i.
    static func appendSource(_ codes: [UInt8], _ arity: [Int], at position: Int, to out: inout [UInt8]) -> Int {
        let c = codes[position]
        if c <= 9 { out.append(0x30 + c); return position + 1 }
        let k = arity[position]
        for _ in 0...k { out.append(0x28); out.append(0x20) }                 // "( " × (k + 1)
        out.append(contentsOf: tokenBytes[Int(c)])
        var p = position + 1
        for _ in 0..<k {
            out.append(0x20)
            p = appendSource(codes, arity, at: p, to: &out)
            out.append(0x20); out.append(0x29)                                // " )"
        }
        out.append(0x20); out.append(0x5D); out.append(0x20); out.append(0x29) // " ] )"
        return p + 1                                                           // past the close
    }

    /// Appends the tree's source text, e.g. `( ( ( [MAX 2 ) 9 ) ] )`, to `out`.
    public static func appendSource(_ codes: [UInt8], to out: inout [UInt8]) {
        // Argument counts: each complete argument (a digit, or an operator's close) counts for the
        // operator then open.
        var arity = [Int](repeating: 0, count: codes.count), open: [Int] = []
        for (i, c) in codes.enumerated() {
            if c >= maxCode { open.append(i); continue }
            if c == close { _ = open.popLast() }
            if let parent = open.last { arity[parent] += 1 }
        }
        _ = appendSource(codes, arity, at: 0, to: &out)
    }

    /// The tree's source text.
    public static func source(_ codes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        appendSource(codes, to: &out)
        return out
    }

    static let header = Array("Source\tTarget\r\n".utf8)

    /// Appends one TSV line (tree, tab, value, CRLF).
    static func appendLine(_ s: Sample, to out: inout [UInt8]) {
        appendSource(s.codes, to: &out)
        out.append(0x09); out.append(0x30 + s.label); out.append(0x0D); out.append(0x0A)
    }

    /// A split as the release's TSV (header, CRLF lines).
    public static func tsv(_ samples: [Sample]) -> Data {
        var out = header
        for s in samples { appendLine(s, to: &out) }
        return Data(out)
    }

    /// Writes a split as the release's TSV; returns its size in bytes.
    static func writeTSV(_ samples: [Sample], to url: URL) throws -> Int {
        try PreparedFiles.writeChunked(url) { out, flush in
            out += header
            for s in samples {
                appendLine(s, to: &out)
                try flush(&out)
            }
        }
    }

    // MARK: Reading

    /// The codes of one source text into `out` (room for `text.count` codes): whitespace-separated
    /// tokens, parentheses dropped, `]` (or `X`) → close. Returns the count; throws the offending token.
    static func tokenize(_ text: UnsafeBufferPointer<UInt8>, into out: UnsafeMutablePointer<UInt8>) throws -> Int {
        var i = 0, n = 0
        let count = text.count
        while i < count {
            let first = text[i]
            if first == 0x20 || first == 0x09 { i += 1; continue }
            var end = i + 1
            while end < count && text[end] != 0x20 && text[end] != 0x09 { end += 1 }
            if end == i + 1 {
                switch first {
                case 0x28, 0x29: i = end; continue                                    // ( )
                case 0x30...0x39: out[n] = first - 0x30; n += 1; i = end; continue
                case 0x5D, 0x58: out[n] = close; n += 1; i = end; continue             // ] X
                default: break
                }
            }
            guard first == 0x5B, let code = operatorCode(text, i, end - i) else {
                throw TokenError(token: String(decoding: UnsafeBufferPointer(rebasing: text[i..<min(end, i + 40)]), as: UTF8.self))
            }
            out[n] = code; n += 1
            i = end
        }
        return n
    }

    /// The code of the operator token `[MAX`, `[MED`, `[MIN` or `[SM` at text[start ..< start + n].
    @inline(__always) static func operatorCode(_ t: UnsafeBufferPointer<UInt8>, _ start: Int, _ n: Int) -> UInt8? {
        if n == 3 { return t[start + 1] == 0x53 && t[start + 2] == 0x4D ? sumModCode : nil }          // SM
        guard n == 4, t[start + 1] == 0x4D else { return nil }                                          // M..
        switch (t[start + 2], t[start + 3]) {
        case (0x41, 0x58): return maxCode                                                               // AX
        case (0x45, 0x44): return medianCode                                                            // ED
        case (0x49, 0x4E): return minCode                                                               // IN
        default: return nil
        }
    }

    struct TokenError: Error { let token: String }

    /// Reads a release TSV into token ids (code + 3) and labels: at most `limit` samples. Every line
    /// must hold one well-formed tree and its value 0–9; anything else is an error naming the line.
    public static func read(_ data: Data, path: String, limit: Int? = nil) throws -> (documents: TokenSequences, labels: [Int32]) {
        var documents = TokenSequences(), labels: [Int32] = []
        // About 6.4 bytes of text per token in the release's form.
        documents.reserveCapacity(sequences: min(limit ?? 100_000, 100_000), ids: min(data.count / 6, (limit ?? Int.max / 2000) * 2000))
        func fail(_ line: Int, _ why: String) -> UserError {
            UserError(what: "listops data", value: "\(path):\(line)", why: why,
                      remedy: "use a file of the release's layout (`Source<TAB>Target` header, one tree and its value per line), or remove the folder and run `longmixer data prepare listops`")
        }
        var failure: UserError?, sawHeader = false
        let scratch = Scratch()
        TextLines(data).forEach { number, line in
            if !sawHeader {
                sawHeader = true
                if !line.elementsEqual("Source\tTarget".utf8) {
                    failure = fail(number, "the first line is not the header `Source<TAB>Target`")
                    return false
                }
                return true
            }
            if line.isEmpty { return true }
            // The value is the last field (a few bytes from the end of a line of thousands).
            guard let tab = line.lastIndex(of: 0x09) else { failure = fail(number, "no tab between the tree and its value"); return false }
            let target = UnsafeBufferPointer(rebasing: line[(tab + 1)...])
            guard target.count == 1, (0x30...0x39).contains(target[0]) else {
                failure = fail(number, "the value `\(printable(String(decoding: target, as: UTF8.self), limit: 20))` is not a digit 0–9")
                return false
            }
            let source = UnsafeBufferPointer(rebasing: line[..<tab])
            scratch.reserve(source.count)
            let count: Int
            do { count = try tokenize(source, into: scratch.codes) } catch let e as TokenError {
                failure = fail(number, "unknown token `\(printable(e.token))`")
                return false
            } catch { failure = fail(number, "\(error)"); return false }
            let codes = UnsafeBufferPointer(start: scratch.codes, count: count)
            guard let value = evaluate(codes, scratch) else { failure = fail(number, "the tokens are not one well-formed tree"); return false }
            let label = target[0] - 0x30
            guard value == label else { failure = fail(number, "the tree's value is \(value) but its label is \(label)"); return false }
            documents.append(bytes: codes, offset: idOffset)
            labels.append(Int32(label))
            return limit.map { labels.count < $0 } ?? true
        }
        if let failure { throw failure }
        guard sawHeader else { throw fail(0, "the file is empty") }
        guard !labels.isEmpty else { throw fail(1, "the file holds no samples") }
        return (documents, labels)
    }
}

/// LRA ListOps as a task: `longmixer data prepare listops` generates the release's files from a
/// seed; a folder holding the release's own files (`listops-1000`) is read the same way.
public struct ListOpsTask: PreparableTask {
    public init() {}
    public var name: String { "listops" }
    public var summary: String {
        "LRA ListOps: the value 0–9 of a nested MIN/MAX/MED/SM expression of 501–1999 tokens (parentheses dropped, `]` → X; 10 classes)"
    }
    public var input: TaskInput { .tokens(vocabulary: ListOps.vocabularySize, paddingIndex: ListOps.paddingIndex) }
    public var objective: TaskObjective { .classification(classes: 10) }
    public var isCausal: Bool { false }
    public var dataOptions: Set<TaskDataOption> { [.dataDirectory, .trainSize, .validationSize, .testSize] }
    public var minimumLength: Int { 1 }
    /// The longest tree the generator keeps.
    public var defaultLength: Int? { ListOps.Parameters.reference.maxLength - 1 }
    public var dataFolder: String { "listops" }

    public static let referenceSizes = SplitSizes(train: 96_000, validation: 2_000, test: 2_000)
    public var defaultSplitSizes: SplitSizes? { Self.referenceSizes }
    static let manifest = "prepared.json"

    /// The folder holding the three files: `<dir>/listops` (what `data prepare` writes), the
    /// release's `<dir>/listops-1000` or `<dir>/lra_release/listops-1000`, or `<dir>` itself.
    func folder(in dataDirectory: URL) -> URL? {
        PreparedFiles.folder(holding: ListOps.splitFiles, among: [
            dataDirectory.appendingPathComponent(dataFolder), dataDirectory.appendingPathComponent("listops-1000"),
            dataDirectory.appendingPathComponent("lra_release/listops-1000"), dataDirectory,
        ])
    }

    public func dataState(in dataDirectory: URL) -> PreparedDataState {
        guard let folder = folder(in: dataDirectory) else {
            return PreparedDataState(isReady: false, description: "no \(ListOps.splitFiles.joined(separator: ", ")) in \(dataDirectory.appendingPathComponent(dataFolder).path) (or a release folder listops-1000)")
        }
        let sizes = ListOps.splitFiles.map { "\($0) \(PreparedFiles.megabytes(PreparedFiles.size(folder.appendingPathComponent($0)) ?? 0))" }
        var origin = "release layout"
        if let data = try? Data(contentsOf: folder.appendingPathComponent(Self.manifest)),
           let m = try? JSONDecoder().decode(Manifest.self, from: data) {
            origin = "generated with seed \(m.seed): \(m.train.grouped) / \(m.validation.grouped) / \(m.test.grouped) trees"
        }
        return PreparedDataState(isReady: true, description: "\(folder.path): \(sizes.joined(separator: ", ")) (\(origin))")
    }

    struct Manifest: Codable {
        var generator: String
        var seed: UInt64
        var train: Int, validation: Int, test: Int
        var drawn: Int
    }

    public func prepare(into dataDirectory: URL, seed: UInt64, log: (String) -> Void) throws {
        try prepare(into: dataDirectory, seed: seed, sizes: nil, log: log)
    }

    public func prepare(into dataDirectory: URL, seed: UInt64, sizes: SplitSizes?, log: (String) -> Void) throws {
        let sizes = sizes ?? Self.referenceSizes
        for (flag, n) in [("--train-size", sizes.train), ("--val-size", sizes.validation), ("--test-size", sizes.test)] where !(1...1_000_000).contains(n) {
            throw UserError(what: flag, value: String(n), why: "must be in 1...1000000 for listops")
        }
        let clock = ContinuousClock(), start = clock.now
        log("listops: generating \((sizes.train + sizes.validation + sizes.test).grouped) unique trees of 501–1999 tokens (seed \(seed), \(Parallel.threadCount) threads)")
        let g = ListOps.generate(seed: seed, sizes: sizes)
        let generated = clock.now - start
        log("listops: \(g.drawn.grouped) trees drawn, \((g.train.count + g.validation.count + g.test.count).grouped) kept in \(seconds(generated))")
        var bytes = 0
        try PreparedFiles.writeAtomically(dataDirectory.appendingPathComponent(dataFolder)) { staging in
            for (file, samples) in zip(ListOps.splitFiles, [g.train, g.validation, g.test]) {
                bytes += try ListOps.writeTSV(samples, to: staging.appendingPathComponent(file))
            }
            let manifest = Manifest(generator: "LRA listops.py algorithm, xoshiro256** stream", seed: seed, train: sizes.train,
                                    validation: sizes.validation, test: sizes.test, drawn: g.drawn)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try PreparedFiles.write(try encoder.encode(manifest), to: staging.appendingPathComponent(Self.manifest))
        }
        log("listops: wrote \(PreparedFiles.megabytes(bytes)) in \(seconds(clock.now - start)) in total")
    }

    public func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData {
        let directory = try readyDataDirectory(options)
        let folder = folder(in: directory)!
        var splits: [LabelledSequences] = []
        let format = SequenceFormat(length: options.length, padding: Int32(ListOps.paddingIndex))
        for (file, limit) in zip(ListOps.splitFiles, [options.trainLimit, options.validationLimit, options.testLimit]) {
            let url = folder.appendingPathComponent(file)
            let r = try ListOps.read(PreparedFiles.read(url, what: "listops data"), path: url.path, limit: limit)
            splits.append(LabelledSequences(documents: r.documents, labels: r.labels, format: format))
        }
        let summary = "listops \(folder.path), N = \(options.length): train \(splits[0].describe("trees")); validation \(splits[1].describe("trees")); test \(splits[2].describe("trees"))"
        return TaskData(train: splits[0], validation: splits[1], test: splits[2], summary: summary, trainingOrder: .shuffled(seed: options.seed))
    }
}

/// "1.23 s".
func seconds(_ d: Duration) -> String {
    let c = d.components
    return String(format: "%.2f s", Double(c.seconds) + Double(c.attoseconds) * 1e-18)
}
