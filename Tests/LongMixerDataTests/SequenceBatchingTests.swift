import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore

private func rows(_ batch: Batch) -> (ids: [[Int32]], labels: [Int32])? {
    guard case .tokens(let x) = batch.input, case .classes(let y) = batch.targets else { return nil }
    let n = x.shape[1]
    return ((0..<x.shape[0]).map { Array(x.scalars[($0 * n)..<(($0 + 1) * n)]) }, y.scalars)
}

/// Three documents of lengths 2, 5 and 0.
private func documents() -> TokenSequences {
    var d = TokenSequences()
    d.append([10, 11])
    d.append([20, 21, 22, 23, 24])
    d.append([UInt16]())
    return d
}

@Suite struct SequenceBatchingTests {
    @Test func tokenSequencesStoreFlatWithOffsets() {
        var d = documents()
        d.append(bytes: [0, 255, 65], offset: 3)
        #expect(d.count == 4)
        #expect(d.offsets == [0, 2, 7, 7, 10])
        #expect(Array(d[1]) == [20, 21, 22, 23, 24])
        #expect(Array(d[3]) == [3, 258, 68])
        #expect(d.length(of: 2) == 0)
        d.append(bytes: Array("abcdef".utf8), offset: 3, limit: 2)
        #expect(Array(d[4]) == [100, 101])
    }

    @Test func rowsArePaddedWithClsAndSepAndTruncatedAsDeclared() throws {
        let format = SequenceFormat(length: 5, padding: 0, cls: 1, sep: 2)
        #expect(format.room == 3)
        let split = LabelledSequences(documents: documents(), labels: [0, 1, 1], format: format)
        let (ids, labels) = try #require(rows(split.batch(indices: 0..<3)))
        #expect(ids == [[1, 10, 11, 2, 0], [1, 20, 21, 22, 2], [1, 2, 0, 0, 0]])
        #expect(labels == [0, 1, 1])
        #expect(split.truncatedCount == 1)
        #expect(split.describe("reviews") == "3 reviews (labels 0: 1, 1: 2), 1 truncated to 3 tokens")

        let tail = LabelledSequences(documents: documents(), labels: [0, 1, 1], format: SequenceFormat(length: 4, truncation: .keepLast))
        #expect(try #require(rows(tail.batch(indices: 1..<2))).ids == [[21, 22, 23, 24]])
        let bare = LabelledSequences(documents: documents(), labels: [0, 1, 1], format: SequenceFormat(length: 3, padding: 7))
        #expect(try #require(rows(bare.batch(indices: 0..<1))).ids == [[10, 11, 7]])
    }

    @Test func pairsSitSideBySide() throws {
        let format = SequenceFormat(length: 4, cls: 1, sep: 2)
        let pairs = LabelledSequences(documents: documents(), format: format, documentsPerSample: 2, members: [0, 1, 2, 0], labels: [1, 0])
        #expect(pairs.length == 8 && pairs.count == 2)
        let (ids, labels) = try #require(rows(pairs.batch(samples: [1, 0])))
        #expect(ids == [[1, 2, 0, 0, 1, 10, 11, 2], [1, 10, 11, 2, 1, 20, 21, 2]])
        #expect(labels == [0, 1])
        #expect(pairs.truncatedCount == 1)
        let one = pairs.subset([1])
        #expect(one.members == [2, 0] && one.labels == [0])
        #expect(pairs.prefix(1).labels == [1] && pairs.prefix(nil).count == 2 && pairs.prefix(5).count == 2)
    }

    @Test func batchOfSamplesMatchesBatchOfIndicesForEverySource() throws {
        let synthetic = try SyntheticDataset(task: .order, length: 16, split: .train, count: 50, seed: 9)
        let adding = try SyntheticDataset(task: .adding, length: 16, split: .train, count: 50, seed: 9)
        let windows = try ByteCorpus(bytes: (0..<2000).map { UInt8($0 % 251) }).windows(length: 16, seed: 1).train
        let split = LabelledSequences(documents: documents(), labels: [0, 1, 1], format: SequenceFormat(length: 6, cls: 1, sep: 2))
        for source in [synthetic, adding, windows, split] as [any BatchSource] {
            let shuffled = [2, 0, 1]
            let whole = source.batch(samples: shuffled)
            let singles = Batch(concatenating: shuffled.map { source.batch(indices: $0..<($0 + 1)) })
            #expect(describe(whole) == describe(singles), "\(type(of: source))")
            #expect(describe(source.batch(samples: [0, 1, 2])) == describe(source.batch(indices: 0..<3)), "\(type(of: source))")
        }
    }

    /// Every scalar of a batch, for equality.
    private func describe(_ b: Batch) -> [Float] {
        var out: [Float] = []
        switch b.input { case .tokens(let t): out += t.scalars.map(Float.init); case .features(let f): out += f.scalars }
        switch b.targets {
        case .classes(let t), .tokens(let t): out += t.scalars.map(Float.init)
        case .values(let v): out += v.scalars
        }
        return out
    }

    @Test func epochPermutationsArePureFunctionsOfSeedAndEpoch() {
        let a = EpochOrder.permutation(count: 1000, seed: 7, epoch: 0)
        #expect(a.sorted() == Array(0..<1000))
        #expect(a == EpochOrder.permutation(count: 1000, seed: 7, epoch: 0))
        #expect(a != EpochOrder.permutation(count: 1000, seed: 7, epoch: 1))
        #expect(a != EpochOrder.permutation(count: 1000, seed: 8, epoch: 0))
        var order = EpochOrder(count: 1000, seed: 7)
        #expect(order.samples(epoch: 0, positions: 10..<20) == Array(a[10..<20]))
        #expect(order.samples(epoch: 1, positions: 0..<5) == Array(EpochOrder.permutation(count: 1000, seed: 7, epoch: 1)[0..<5]))
        #expect(EpochOrder.permutation(count: 1, seed: 1, epoch: 3) == [0])
    }

    @Test func stratifiedSplitKeepsTheLabelMixAndIsSeeded() {
        let labels: [Int32] = Array(repeating: 0, count: 600) + Array(repeating: 1, count: 400)
        let s = stratifiedSplit(labels: labels, validation: 100, test: 50, seed: 3)
        #expect(s.train.count == 850 && s.validation.count == 100 && s.test.count == 50)
        #expect(Set(s.train + s.validation + s.test).count == 1000)
        #expect(s.validation.filter { labels[$0] == 1 }.count == 40 && s.test.filter { labels[$0] == 1 }.count == 20)
        // A prefix of a split is a mix of labels, not one label's block.
        #expect(Set(s.train.prefix(20).map { labels[$0] }).count == 2)
        let again = stratifiedSplit(labels: labels, validation: 100, test: 50, seed: 3)
        #expect(again.train == s.train && again.validation == s.validation && again.test == s.test)
        #expect(stratifiedSplit(labels: labels, validation: 100, test: 50, seed: 4).validation != s.validation)
        // Odd counts are apportioned exactly.
        let odd = stratifiedSplit(labels: [0, 0, 0, 1, 1, 2, 2, 2, 2], validation: 3, test: 2, seed: 1)
        #expect(odd.validation.count == 3 && odd.test.count == 2 && odd.train.count == 4)
    }

    @Test func groupedCounts() {
        #expect(0.grouped == "0" && 999.grouped == "999" && 1000.grouped == "1,000" && 96_000.grouped == "96,000"
                && 1_234_567.grouped == "1,234,567")
    }
}
