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
