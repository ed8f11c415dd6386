import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore

@Suite("SyntheticData")
struct SyntheticDataTests {
    func dataset(_ task: SyntheticTask, length: Int = 64, split: DataSplit = .train, count: Int = 500, seed: UInt64 = 7) throws -> SyntheticDataset {
        try SyntheticDataset(task: task, length: length, split: split, count: count, seed: seed)
    }

    @Test("Adding: values in (−1, 1], exactly two markers at p1 < p2, target 0.5 + (x1 + x2)/4")
    func addingSamples() throws {
        let d = try dataset(.adding, length: 50)
        var sawNegative = false, sawPositive = false
        for i in 0..<d.count {
            let s = d.sample(at: i)
            #expect(s.values.count == 50 && s.markers.count == 50 && s.tokens.isEmpty)
            #expect(s.values.allSatisfy { $0 > -1 && $0 <= 1 })
            #expect(s.markers.allSatisfy { $0 == 0 || $0 == 1 })
            let marked = s.markers.indices.filter { s.markers[$0] == 1 }
            #expect(marked.count == 2)
            #expect(marked == [s.positions.0, s.positions.1])
            #expect(s.positions.0 < s.positions.1)
            let expected = 0.5 + (s.values[s.positions.0] + s.values[s.positions.1]) / 4
            #expect(s.target == expected)
            #expect(s.target >= 0 && s.target <= 1)
            sawNegative = sawNegative || s.values.contains { $0 < -0.9 }
            sawPositive = sawPositive || s.values.contains { $0 > 0.9 }
        }
        #expect(sawNegative && sawPositive)
    }

    @Test("Adding: batch tensors match the samples ([B, N, 2] features, [B, 1] values)")
    func addingBatch() throws {
        let d = try dataset(.adding, length: 33)
        let batch = d.batch(indices: 10..<17)
        guard case .features(let x) = batch.input, case .values(let y) = batch.targets else {
            Issue.record("wrong batch kinds"); return
        }
        #expect(x.shape == [7, 33, 2] && y.shape == [7, 1])
        for r in 0..<7 {
            let s = d.sample(at: 10 + r)
            for i in 0..<33 {
                #expect(x[flat: (r * 33 + i) * 2] == s.values[i])
                #expect(x[flat: (r * 33 + i) * 2 + 1] == s.markers[i])
            }
            #expect(y[flat: r] == s.target)
        }
        #expect(d.batch(at: 1, size: 7).size == 7)
        #expect(d.batchCount(size: 7) == (500 + 6) / 7)
        #expect(d.batch(at: d.batchCount(size: 7) - 1, size: 7).size == 500 % 7)
    }

    @Test("Temporal Order: noise tokens 0…3, X/Y at p1 < p2 only, label 2·[first = Y] + [second = Y]")
    func orderSamples() throws {
        let d = try dataset(.order, length: 40)
        for i in 0..<d.count {
            let s = d.sample(at: i)
            #expect(s.tokens.count == 40 && s.values.isEmpty)
            let (p1, p2) = s.positions
            #expect(p1 < p2)
            for (j, t) in s.tokens.enumerated() {
                if j == p1 || j == p2 { #expect(t == TemporalOrderSymbols.x || t == TemporalOrderSymbols.y) }
                else { #expect(TemporalOrderSymbols.noise.contains(t)) }
            }
            let first = s.tokens[p1] == TemporalOrderSymbols.y ? 1 : 0
            let second = s.tokens[p2] == TemporalOrderSymbols.y ? 1 : 0
            #expect(s.label == 2 * first + second)
        }
        let batch = d.batch(indices: 3..<9)
        guard case .tokens(let t) = batch.input, case .classes(let c) = batch.targets else { Issue.record("wrong batch kinds"); return }
        #expect(t.shape == [6, 40] && c.shape == [6])
        for r in 0..<6 {
            let s = d.sample(at: 3 + r)
            #expect(Array(t.scalars[(r * 40)..<((r + 1) * 40)]) == s.tokens)
            #expect(Int(c.scalars[r]) == s.label)
        }
    }

    @Test("Temporal Order classes and noise symbols are roughly uniform; marked positions cover the sequence")
    func balance() throws {
        let n = 4000
        let d = try dataset(.order, length: 16, count: n, seed: 3)
        var classCounts = [0, 0, 0, 0], noiseCounts = [0, 0, 0, 0], firstHalf = 0, secondHalf = 0, sameHalf = 0
        for i in 0..<n {
            let s = d.sample(at: i)
            classCounts[s.label] += 1
            for (j, t) in s.tokens.enumerated() where j != s.positions.0 && j != s.positions.1 { noiseCounts[Int(t)] += 1 }
            for p in [s.positions.0, s.positions.1] { if p < 8 { firstHalf += 1 } else { secondHalf += 1 } }
            if (s.positions.0 < 8) == (s.positions.1 < 8) { sameHalf += 1 }
        }
        // Binomial(4000, 1/4): sd ≈ 27; allow ±5 sd.
        for c in classCounts { #expect(abs(c - n / 4) < 140, "class counts \(classCounts)") }
        let noiseTotal = noiseCounts.reduce(0, +)
        for c in noiseCounts { #expect(abs(Double(c) / Double(noiseTotal) - 0.25) < 0.01, "noise counts \(noiseCounts)") }
        #expect(abs(firstHalf - secondHalf) < 400)
        // Positions are drawn from the whole sequence (reference), so both in one half happens ≈ 7/15 of the time.
        #expect(abs(Double(sameHalf) / Double(n) - 7.0 / 15.0) < 0.05)
    }

    @Test("deterministic: same (seed, split, index) gives the same sample, in any batch layout")
    func determinism() throws {
        for task in SyntheticTask.allCases {
            let a = try dataset(task), b = try dataset(task)
            for i in [0, 1, 17, 499] { #expect(a.sample(at: i) == b.sample(at: i)) }
            let whole = a.batch(indices: 0..<20)
            let part = b.batch(indices: 5..<6)
            switch (whole.input, part.input) {
            case (.features(let w), .features(let p)):
                #expect(Array(w.scalars[(5 * 64 * 2)..<(6 * 64 * 2)]) == p.scalars)
            case (.tokens(let w), .tokens(let p)):
                #expect(Array(w.scalars[(5 * 64)..<(6 * 64)]) == p.scalars)
            default: Issue.record("batch kinds differ")
            }
        }
    }

    @Test("splits and seeds give different data")
    func splitsDiffer() throws {
        for task in SyntheticTask.allCases {
            let train = try dataset(task, split: .train), val = try dataset(task, split: .validation)
            let test = try dataset(task, split: .test), other = try dataset(task, seed: 8)
            var sameTrainVal = 0, sameTrainTest = 0, sameSeed = 0
            for i in 0..<100 {
                let t = train.sample(at: i)
                if t == val.sample(at: i) { sameTrainVal += 1 }
                if t == test.sample(at: i) { sameTrainTest += 1 }
                if t == other.sample(at: i) { sameSeed += 1 }
            }
            #expect(sameTrainVal == 0 && sameTrainTest == 0 && sameSeed == 0)
            #expect(Set((0..<1000).map { train.sampleSeed($0) }).isDisjoint(with: (0..<1000).map { val.sampleSeed($0) }))
        }
        let s = try SyntheticDataset.splits(task: .adding, length: 8, seed: 1)
        #expect(s.train.count == 100_000 && s.validation.count == 1_000 && s.test.count == 1_000)
        #expect(s.train.split == .train && s.validation.split == .validation && s.test.split == .test)
    }

    @Test("N = 2 works (both positions marked); N < 2 and empty splits are errors")
    func edgeLengths() throws {
        let adding = try dataset(.adding, length: 2, count: 50)
        for i in 0..<50 {
            let s = adding.sample(at: i)
            #expect(s.positions == (0, 1))
            #expect(s.markers == [1, 1])
            #expect(s.target == 0.5 + (s.values[0] + s.values[1]) / 4)
        }
        let order = try dataset(.order, length: 2, count: 200)
        var labels = Set<Int>()
        for i in 0..<200 {
            let s = order.sample(at: i)
            #expect(s.tokens.allSatisfy { $0 == 4 || $0 == 5 })
            labels.insert(s.label)
        }
        #expect(labels == [0, 1, 2, 3])
        for n in [1, 0, -3] {
            #expect(throws: DataError.lengthTooShort(task: "Adding", length: n)) { try SyntheticDataset(task: .adding, length: n, split: .train, count: 1, seed: 0) }
        }
        #expect(throws: DataError.self) { try SyntheticDataset(task: .order, length: 1, split: .train, count: 1, seed: 0) }
        #expect(throws: DataError.invalidSplitSize(split: "validation", size: 0)) {
            try SyntheticDataset.splits(task: .order, length: 4, sizes: SplitSizes(train: 5, validation: 0, test: 5), seed: 0)
        }
        #expect("\(DataError.lengthTooShort(task: "Adding", length: 1))".contains("N ≥ 2"))
    }

    @Test("task names parse; unknown names list the valid ones")
    func taskNames() throws {
        #expect(try SyntheticTask(parsing: "adding") == .adding)
        #expect(try SyntheticTask(parsing: "Order") == .order)
        #expect(try SyntheticTask(parsing: "temporal-order") == .order)
        #expect(throws: DataError.unknownTask("copy")) { try SyntheticTask(parsing: "copy") }
        #expect("\(DataError.unknownTask("copy"))" == "unknown task 'copy'; valid tasks: adding, order")
        #expect(SyntheticTask.adding.objective == .regression(outputs: 1, tolerance: 0.04))
        #expect(SyntheticTask.order.objective == .classification(classes: 4))
    }

    @Test("a long sequence is generated on demand without materialising the split")
    func longSequences() throws {
        let d = try SyntheticDataset(task: .order, length: 32_768, split: .train, count: 100_000, seed: 1)
        let b = d.batch(at: 2499, size: 40)
        #expect(b.size == 40 && b.input.length == 32_768)
    }
}
