import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerCore

/// The fused Paramixer factor (f-MLP + sparse product + residual, no graph) against its plain reference.
@Suite("Fused sparse factor with its weight MLP")
struct ParamixerInferenceKernelTests {
    func randomArray(_ count: Int, _ g: inout RandomGenerator, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in scale * g.nextNormal() }
    }

    /// (batch, N, D, H, offsets): hidden and link widths with and without padding to 8, D tails.
    @Test("equals the reference: padded and unpadded hidden and link widths, D tails, duplicate offsets, batches, 1 and 2 threads",
          arguments: [(1, 16, 4, 32, [0, 1, 2, 4, 8]), (2, 37, 5, 7, [0, 1, 1, 36]),
                      (3, 64, 40, 33, [0, 1, 2, 4, 8, 16, 32, 63, 5, 6, 7, 9, 10, 11, 12, 13, 14]),
                      (2, 300, 32, 32, [0, 4, 8, 12, 16, 296, 292, 288, 284])])
    func matchesReference(_ shape: (Int, Int, Int, Int, [Int])) {
        let (batch, n, d, h, offsets) = shape
        let l = offsets.count
        var g = RandomGenerator(seed: UInt64(n * 31 + d))
        let di = d + 3                                       // data rows need not have D columns
        let values = randomArray(batch * n * d, &g), residual = randomArray(batch * n * d, &g)
        let data = randomArray(batch * n * di, &g)
        let w1 = randomArray(h * di, &g, scale: 0.3), b1 = randomArray(h, &g, scale: 0.3)
        let w2 = randomArray(l * h, &g, scale: 0.3), b2 = randomArray(l, &g, scale: 0.3)
        var reference = [Float](repeating: 0, count: batch * n * d)
        sparseFactorMLPForwardReference(out: &reference, values: values, residual: residual, data: data, dataDimensions: di,
                                        w1: w1, b1: b1, w2: w2, b2: b2, hidden: h, offsets: offsets, links: l,
                                        batch: batch, length: n, dimensions: d)
        let mlp = SparseFactorMLPWeights(w1: w1, b1: b1, w2: w2, b2: b2, inputs: di, hidden: h, links: l)
        withEachThreadCount { t in
            var out = [Float](repeating: .nan, count: batch * n * d)
            sparseFactorMLPForward(out: &out, values: values, residual: residual, data: data, dataDimensions: di, mlp: mlp,
                                   offsets: offsets, batch: batch, length: n, dimensions: d)
            let shape = [batch, n, d]
            expectClose(Tensor(shape: shape, scalars: out), Tensor(shape: shape, scalars: reference), floor: 1,
                        "B \(batch) N \(n) D \(d) H \(h) L \(l), \(t) threads")
            // In place over the residual (the block's every-factor residual is the values' own storage,
            // but the output goes to a fresh tensor; aliasing the residual alone is allowed).
            var inPlace = residual
            inPlace.withUnsafeMutableBufferPointer { p in
                sparseFactorMLPForward(out: p.baseAddress!, values: values, residual: p.baseAddress!, data: data, dataDimensions: di,
                                       mlp: mlp, offsets: offsets, batch: batch, length: n, dimensions: d)
            }
            #expect(inPlace == out, "in place over the residual, \(t) threads")
        }
    }
}

/// The per-token path: link weights computed once per table row and looked up by token.
@Suite("Sparse factor with per-token link weights")
struct SparseFactorTableTests {
    /// (batch, N, D, H, V, offsets): table rows not a multiple of the 6-row tile, D with and without 8-lane tails,
    /// links that wrap inside a group.
    @Test("equals the fused kernel on data rows gathered from the table, bit for bit, 1 and 2 threads",
          arguments: [(2, 64, 32, 32, 7, [0, 1, 2, 4, 8, 16, 32]), (3, 37, 40, 20, 13, [0, 3, 36, 1]),
                      (1, 50, 5, 9, 1, [0, 1, 2, 49])])
    func matchesFusedKernel(_ shape: (Int, Int, Int, Int, Int, [Int])) {
        let (batch, n, d, h, v, offsets) = shape
        let l = offsets.count
        var g = RandomGenerator(seed: UInt64(n * 7 + v))
        func random(_ count: Int, scale: Float = 1) -> [Float] { (0..<count).map { _ in scale * g.nextNormal() } }
        let rows = random(v * d), values = random(batch * n * d), residual = random(batch * n * d)
        let w1 = random(h * d, scale: 0.3), b1 = random(h, scale: 0.3), w2 = random(l * h, scale: 0.3), b2 = random(l, scale: 0.3)
        let tokens = (0..<(batch * n)).map { _ in Int32(g.nextInt(below: v)) }
        let data = tokens.flatMap { rows[Int($0) * d..<(Int($0) + 1) * d] }
        let mlp = SparseFactorMLPWeights(w1: w1, b1: b1, w2: w2, b2: b2, inputs: d, hidden: h, links: l)
        let tableRows = (v + 5) / 6 * 6
        var table = [Float](repeating: .nan, count: tableRows * mlp.paddedLinks)
        sparseFactorLinkTable(&table, rows: rows, count: v, dataDimensions: d, mlp: mlp)
        withEachThreadCount { t in
            var expected = [Float](repeating: .nan, count: batch * n * d), out = expected
            sparseFactorMLPForward(out: &expected, values: values, residual: residual, data: data, dataDimensions: d, mlp: mlp,
                                   offsets: offsets, batch: batch, length: n, dimensions: d)
            sparseFactorTableForward(out: &out, values: values, residual: residual, tokens: tokens, table: table,
                                     tableStride: mlp.paddedLinks, offsets: offsets, links: l, batch: batch, length: n, dimensions: d)
            #expect(out == expected, "B \(batch) N \(n) D \(d) H \(h) V \(v) L \(l), \(t) threads")
        }
    }
}

/// Data rows that are token rows plus position rows: the first layer split over the two tables.
@Suite("Sparse factor with the first layer split over token and position rows")
struct SparseFactorSplitTests {
    @Test("equals the reference on data = token row + position row, 1 and 2 threads",
          arguments: [(2, 64, 32, 32, 7, [0, 1, 2, 4, 8, 16, 32]), (3, 37, 40, 20, 13, [0, 3, 36, 1]), (1, 50, 5, 9, 1, [0, 1, 2, 49])])
    func matchesReference(_ shape: (Int, Int, Int, Int, Int, [Int])) {
        let (batch, n, d, h, v, offsets) = shape
        let l = offsets.count
        var g = RandomGenerator(seed: UInt64(n * 11 + v))
        func random(_ count: Int, scale: Float = 1) -> [Float] { (0..<count).map { _ in scale * g.nextNormal() } }
        let tokenRows = random(v * d), positionRows = random(n * d), values = random(batch * n * d), residual = random(batch * n * d)
        let w1 = random(h * d, scale: 0.3), b1 = random(h, scale: 0.3), w2 = random(l * h, scale: 0.3), b2 = random(l, scale: 0.3)
        let tokens = (0..<(batch * n)).map { _ in Int32(g.nextInt(below: v)) }
        let data = (0..<(batch * n * d)).map { e in
            let r = e / d, c = e % d
            return tokenRows[Int(tokens[r]) * d + c] + positionRows[(r % n) * d + c]
        }
        var reference = [Float](repeating: 0, count: batch * n * d)
        sparseFactorMLPForwardReference(out: &reference, values: values, residual: residual, data: data, dataDimensions: d,
                                        w1: w1, b1: b1, w2: w2, b2: b2, hidden: h, offsets: offsets, links: l,
                                        batch: batch, length: n, dimensions: d)
        let mlp = SparseFactorMLPWeights(w1: w1, b1: b1, w2: w2, b2: b2, inputs: d, hidden: h, links: l)
        var tokenPre = [Float](repeating: .nan, count: (v + 5) / 6 * 6 * mlp.paddedHidden)
        var positionPre = [Float](repeating: .nan, count: (n + 5) / 6 * 6 * mlp.paddedHidden)
        withEachThreadCount { t in
            sparseFactorPreActivations(&tokenPre, rows: tokenRows, count: v, dataDimensions: d, bias: false, mlp: mlp)
            sparseFactorPreActivations(&positionPre, rows: positionRows, count: n, dataDimensions: d, bias: true, mlp: mlp)
            var out = [Float](repeating: .nan, count: batch * n * d)
            sparseFactorSplitForward(out: &out, values: values, residual: residual, tokens: tokens, tokenPre: tokenPre,
                                     positionPre: positionPre, mlp: mlp, offsets: offsets, batch: batch, length: n, dimensions: d)
            let shape = [batch, n, d]
            expectClose(Tensor(shape: shape, scalars: out), Tensor(shape: shape, scalars: reference), floor: 1,
                        "B \(batch) N \(n) D \(d) H \(h) V \(v) L \(l), \(t) threads")
        }
    }
}
