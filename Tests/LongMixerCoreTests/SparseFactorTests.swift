import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerCore

/// Central-difference gradient check helper for this suite.
/// loss(x) = Σ f(x) ⊙ R with a fixed random projection R, summed in Double; the numerical derivative
/// (loss(x + ε) − loss(x − ε)) / 2ε is compared with the analytic gradient elementwise:
/// |numeric − analytic| ≤ absolute + relative · |analytic|. With float32 values, ε = 1e-2 and
/// O(1) entries, rounding of the loss contributes ≈ 1e-5 / 2ε ≈ 5e-4, hence absolute = 2e-3,
/// relative = 1e-2 (the sparse-factor product is linear in each input, so there is no curvature term).
private func gradientCheck(inputs: [Variable], f: ([Variable]) -> Variable, epsilon: Float = 1e-2,
                           absolute: Float = 2e-3, relative: Float = 1e-2, seed: UInt64 = 7) throws -> Float {
    var generator = RandomGenerator(seed: seed)
    let probe = f(inputs)
    let projection = Tensor.normal(probe.shape, generator: &generator)
    func loss() -> Double {
        let y = withoutGradient { f(inputs) }
        var s: Double = 0
        for i in 0..<y.value.count { s += Double(y.value.pointer[i]) * Double(projection.pointer[i]) }
        return s
    }
    for x in inputs { x.zeroGradient() }
    let out = f(inputs)
    try out.backward(seed: projection)
    var worst: Float = 0, worstMessage = ""
    for (n, x) in inputs.enumerated() where x.requiresGradient {
        let analytic = try #require(x.grad, "input \(n) got no gradient")
        for i in 0..<x.value.count {
            let saved = x.value[flat: i]
            x.value[flat: i] = saved + epsilon
            let plus = loss()
            x.value[flat: i] = saved - epsilon
            let minus = loss()
            x.value[flat: i] = saved
            let numeric = Float((plus - minus) / Double(2 * epsilon))
            let a = analytic[flat: i]
            let error = abs(numeric - a)
            let ratio = error / (absolute + relative * abs(a))
            if ratio > worst { worst = ratio; worstMessage = "input \(n) element \(i): numeric \(numeric) vs analytic \(a)" }
        }
    }
    #expect(worst <= 1, "worst element: \(worstMessage)")
    return worst
}

private func randomTensor(_ shape: [Int], _ generator: inout RandomGenerator) -> Tensor {
    Tensor.normal(shape, generator: &generator)
}

/// Runs the optimised and reference kernels on the same data; returns (forward, dW, dV) relative errors.
private func compareKernels(batch: Int, length n: Int, offsets: [Int], dimensions d: Int, seed: UInt64) -> (Float, Float, Float) {
    var gen = RandomGenerator(seed: seed)
    let l = offsets.count
    let w = randomTensor([batch, n, l], &gen), v = randomTensor([batch, n, d], &gen), g = randomTensor([batch, n, d], &gen)
    // Backward overwrites: start both gradient buffers from non-zero contents, which must not show through.
    let dW0 = randomTensor([batch, n, l], &gen), dV0 = randomTensor([batch, n, d], &gen)
    var yFast = Tensor(zeros: [batch, n, d]), yRef = Tensor(zeros: [batch, n, d])
    var dWFast = dW0, dWRef = dW0, dVFast = dV0, dVRef = dV0
    dWFast.makeUnique(); dWRef.makeUnique(); dVFast.makeUnique(); dVRef.makeUnique()
    offsets.withUnsafeBufferPointer { off in
        let o = off.baseAddress!
        yFast.withUnsafeMutablePointer { sparseFactorForward(out: $0, weights: w.pointer, values: v.pointer, offsets: o, batch: batch, length: n, links: l, dimensions: d) }
        yRef.withUnsafeMutablePointer { sparseFactorForwardReference(out: $0, weights: w.pointer, values: v.pointer, offsets: o, batch: batch, length: n, links: l, dimensions: d) }
        dWFast.withUnsafeMutablePointer { dw in
            dVFast.withUnsafeMutablePointer { dv in
                sparseFactorBackward(dWeights: dw, dValues: dv, dOut: g.pointer, weights: w.pointer, values: v.pointer, offsets: o,
                                     batch: batch, length: n, links: l, dimensions: d)
            }
        }
        dWRef.withUnsafeMutablePointer { dw in
            dVRef.withUnsafeMutablePointer { dv in
                sparseFactorBackwardReference(dWeights: dw, dValues: dv, dOut: g.pointer, weights: w.pointer, values: v.pointer, offsets: o,
                                              batch: batch, length: n, links: l, dimensions: d)
            }
        }
    }
    return (relativeError(yFast, yRef, floor: 1), relativeError(dWFast, dWRef, floor: 1), relativeError(dVFast, dVRef, floor: 1))
}

// CHORD offsets {0, 1, 2, 4, …, 2^(M−1)}, M = ceil(log2 N), and CDIL offsets for factor m (mod N),
// written out here because LongMixerCore's tests cannot see LongMixerModels.
private func chord(_ n: Int) -> [Int] {
    var m = 0
    while (1 << m) < n { m += 1 }
    return [0] + (0..<m).map { 1 << $0 }
}
private func cdil(_ n: Int, factor m: Int) -> [Int] {
    let d = 1 << m
    return [0] + (1...4).map { ($0 * d) % n } + (1...4).map { ((-$0 * d) % n + n) % n }
}

@Suite("SparseFactor")
struct SparseFactorTests {
    @Test("optimised kernels equal the plain reference (D tails, N not a power of two, duplicates)",
          arguments: [(1, 2, 1), (2, 8, 8), (2, 13, 5), (1, 37, 13), (3, 16, 32), (2, 37, 37), (1, 33, 70), (2, 8, 40)])
    func kernelsMatchReference(batch: Int, n: Int, d: Int) {
        // L = 13 exercises the 8-, 4- and 1-slot paths of the dW kernel.
        for offsets in [chord(n), cdil(n, factor: 0), cdil(n, factor: 2), [0, 0, n - 1], (0..<13).map { ($0 * 5) % n }] {
            let (fwd, dw, dv) = compareKernels(batch: batch, length: n, offsets: offsets, dimensions: d, seed: UInt64(n * 100 + d))
            #expect(fwd < 1e-5, "forward N=\(n) D=\(d) offsets \(offsets): \(fwd)")
            #expect(dw < 1e-5, "dW N=\(n) D=\(d) offsets \(offsets): \(dw)")
            #expect(dv < 1e-5, "dV N=\(n) D=\(d) offsets \(offsets): \(dv)")
        }
    }

    @Test("the multi-threaded path (many rows per chunk) equals the reference")
    func parallelPathMatchesReference() {
        // 2·700 rows with L·D = 9·32 exceeds the per-chunk grain, so parallelFor splits the rows.
        let (fwd, dw, dv) = compareKernels(batch: 2, length: 700, offsets: cdil(700, factor: 5), dimensions: 32, seed: 11)
        #expect(fwd < 1e-5 && dw < 1e-5 && dv < 1e-5, "\(fwd) \(dw) \(dv)")
    }

    @Test("the op equals Σ_k w_k ⊙ roll(V, −off_k), written with plain indexing")
    func opMatchesRollDefinition() {
        var gen = RandomGenerator(seed: 3)
        let (b, n, d) = (2, 13, 6)
        let offsets = chord(n)
        let w = randomTensor([b, n, offsets.count], &gen), v = randomTensor([b, n, d], &gen)
        let y = sparseFactorProduct(weights: Variable(w), values: Variable(v), offsets: offsets).value
        var expected = Tensor(zeros: [b, n, d])
        for (k, off) in offsets.enumerated() {
            for bi in 0..<b { for i in 0..<n { for c in 0..<d {
                let rolled = v[flat: (bi * n + (i + off) % n) * d + c]          // roll(V, −off)[i] = V[i + off]
                expected[flat: (bi * n + i) * d + c] += w[flat: (bi * n + i) * offsets.count + k] * rolled
            } } }
        }
        #expect(relativeError(y, expected, floor: 1) < 1e-5)
    }

    @Test("with a residual: the sums start from it (values, gradients; residual apart from or the same as the values, D with a scalar tail)",
          arguments: [false, true])
    func residualIsAdded(sameAsValues: Bool) {
        var gen = RandomGenerator(seed: 21)
        let (b, n, d) = (2, 13, 43)
        let offsets = chord(n)
        let w = Variable(randomTensor([b, n, offsets.count], &gen), requiresGradient: true)
        let v = Variable(randomTensor([b, n, d], &gen), requiresGradient: true)
        let r = sameAsValues ? v : Variable(randomTensor([b, n, d], &gen), requiresGradient: true)
        let fused = sparseFactorProduct(weights: w, values: v, offsets: offsets, residual: r).value
        let composed = (sparseFactorProduct(weights: w, values: v, offsets: offsets) + r).value
        #expect(relativeError(fused, composed, floor: 1) < 1e-5)
        let inputs = sameAsValues ? [w, v] : [w, v, r]
        let result = checkGradients(inputs) { x in
            sparseFactorProduct(weights: x[0], values: x[1], offsets: offsets, residual: sameAsValues ? x[1] : x[2])
        }
        #expect(result.passed, "\(result)")
    }

    @Test("duplicate links are separate slots whose weights add (CDIL, N = 8, factor 2)")
    func duplicateLinksAreSummed() {
        var gen = RandomGenerator(seed: 5)
        let (b, n, d) = (2, 8, 4)
        let offsets = cdil(n, factor: 2)
        #expect(offsets == [0, 4, 0, 4, 0, 4, 0, 4, 0])
        let w = randomTensor([b, n, 9], &gen), v = randomTensor([b, n, d], &gen)
        let y = sparseFactorProduct(weights: Variable(w), values: Variable(v), offsets: offsets).value
        // Collapse to two slots {0, 4} with the duplicate weights summed.
        var collapsed = Tensor(zeros: [b, n, 2])
        for r in 0..<(b * n) { for k in 0..<9 { collapsed[flat: r * 2 + (offsets[k] == 0 ? 0 : 1)] += w[flat: r * 9 + k] } }
        let y2 = sparseFactorProduct(weights: Variable(collapsed), values: Variable(v), offsets: [0, 4]).value
        #expect(relativeError(y, y2, floor: 1) < 1e-5)
    }

    @Test("finite-difference gradients: CHORD N = 13 and N = 37, CDIL with duplicates N = 8",
          arguments: [("chord13", 13, 3), ("chord37", 37, 5), ("cdil8-m1", 8, 4), ("cdil8-m2", 8, 9), ("cdil13-m2", 13, 8)])
    func finiteDifferenceGradients(label: String, n: Int, d: Int) throws {
        let offsets: [Int]
        switch label {
        case "cdil8-m1": offsets = cdil(n, factor: 1)
        case "cdil8-m2": offsets = cdil(n, factor: 2)
        case "cdil13-m2": offsets = cdil(n, factor: 2)
        default: offsets = chord(n)
        }
        var gen = RandomGenerator(seed: UInt64(n * 31 + d))
        let w = Variable(randomTensor([2, n, offsets.count], &gen), requiresGradient: true)
        let v = Variable(randomTensor([2, n, d], &gen), requiresGradient: true)
        let worst = try gradientCheck(inputs: [w, v]) { xs in sparseFactorProduct(weights: xs[0], values: xs[1], offsets: offsets) }
        #expect(worst <= 1, "\(label): worst error / tolerance = \(worst)")
        // The project's shared checker (Autodiff/GradientCheck.swift) must agree.
        let shared = checkGradients([w, v]) { xs in sparseFactorProduct(weights: xs[0], values: xs[1], offsets: offsets) }
        #expect(shared.passed, "\(label): \(shared)")
    }

    @Test("a chain of factors with residuals (as in a Paramixer block) has correct gradients")
    func chainedFactorsGradient() throws {
        var gen = RandomGenerator(seed: 9)
        let n = 13, d = 3, table = [chord(n), cdil(n, factor: 1)]
        let ws = table.map { off -> Variable in
            var t = randomTensor([1, n, off.count], &gen)
            for i in 0..<t.count { t[flat: i] *= 0.5 }
            return Variable(t, requiresGradient: true)
        }
        let v = Variable(randomTensor([1, n, d], &gen), requiresGradient: true)
        // The product of two factors is bilinear in (w1, w2): curvature in ε², so a smaller ε.
        let worst = try gradientCheck(inputs: ws + [v], f: { xs in
            var y = xs[2]
            for (m, off) in table.enumerated() { y = sparseFactorProduct(weights: xs[m], values: y, offsets: off) + y }
            return y
        }, epsilon: 1e-3, absolute: 1e-2, relative: 1e-2)
        #expect(worst <= 1)
    }

    @Test("gradients flow only to inputs that require them")
    func partialGradients() throws {
        var gen = RandomGenerator(seed: 12)
        let w = Variable(randomTensor([1, 8, 4], &gen), requiresGradient: true)
        let v = Variable(randomTensor([1, 8, 3], &gen))
        let y = sparseFactorProduct(weights: w, values: v, offsets: chord(8))
        try sum(y).backward()
        #expect(w.grad?.shape == [1, 8, 4])
        #expect(v.grad == nil)
    }

    @Test("offsets outside 0..<N stop with a message naming them")
    func badOffsetsAreRejected() async {
        await #expect(processExitsWith: .failure) {
            let w = Variable(Tensor(zeros: [1, 4, 2])), v = Variable(Tensor(zeros: [1, 4, 3]))
            _ = sparseFactorProduct(weights: w, values: v, offsets: [0, 4])
        }
        await #expect(processExitsWith: .failure) {
            let w = Variable(Tensor(zeros: [1, 4, 3])), v = Variable(Tensor(zeros: [1, 4, 3]))
            _ = sparseFactorProduct(weights: w, values: v, offsets: [0, 1])
        }
    }
}
