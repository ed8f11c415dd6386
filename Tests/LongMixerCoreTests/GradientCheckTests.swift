import Foundation
import Testing
@testable import LongMixerCore

/// Finite-difference checks of every differentiable op, through the one shared `checkGradients`.

func randomVariable(_ shape: [Int], seed: UInt64, low: Float = -1, high: Float = 1) -> Variable {
    var g = RandomGenerator(seed: seed)
    return Variable(.uniform(shape, low: low, high: high, generator: &g), requiresGradient: true)
}

/// Values bounded away from 0 (for relu/max kinks and for log/sqrt/div domains).
func awayFromZero(_ shape: [Int], seed: UInt64, positive: Bool = false) -> Variable {
    var g = RandomGenerator(seed: seed)
    let t = Tensor.uniform(shape, low: 0.3, high: 1.5, generator: &g)
    let signs = Tensor.bernoulli(shape, probability: positive ? 1 : 0.5, generator: &g)
    return Variable(Tensor(shape: shape, scalars: zip(t.scalars, signs.scalars).map { $1 == 1 ? $0 : -$0 }), requiresGradient: true)
}

func expectGradients(_ inputs: [Variable], step: Float = 1e-2, tolerance: Double = 2e-3,
                     sourceLocation: SourceLocation = #_sourceLocation, _ f: ([Variable]) -> Variable) {
    let r = checkGradients(inputs, step: step, absoluteTolerance: tolerance, relativeTolerance: tolerance, f)
    #expect(r.passed, "\(r)", sourceLocation: sourceLocation)
}

@Suite("Gradient checks")
struct GradientCheckTests {
    @Test func checkerCatchesAWrongPullback() {
        // A deliberately wrong op (pullback off by a factor 2) must fail the check.
        func brokenSquare(_ x: Variable) -> Variable {
            let y = Tensor(shape: x.shape, scalars: x.value.scalars.map { $0 * $0 })
            return makeResult(y, [x]) { g in [Tensor(shape: x.shape, scalars: zip(g.scalars, x.value.scalars).map { $0 * $1 })] }
        }
        let r = checkGradients([randomVariable([5], seed: 1)]) { brokenSquare($0[0]) }
        #expect(!r.passed)
        #expect(r.worstRatio > 10)
    }

    @Test func unaryOps() {
        let x = randomVariable([3, 7], seed: 2, low: -2, high: 2)
        expectGradients([x]) { exp($0[0]) }
        expectGradients([x]) { tanh($0[0]) }
        expectGradients([x]) { sigmoid($0[0]) }
        expectGradients([x]) { gelu($0[0]) }
        expectGradients([x]) { softplus($0[0]) }
        expectGradients([x]) { -$0[0] }
        expectGradients([x]) { pow($0[0], 2) }
        let k = awayFromZero([3, 7], seed: 3)
        expectGradients([k]) { relu($0[0]) }
        let p = awayFromZero([3, 7], seed: 4, positive: true)
        expectGradients([p], step: 1e-3) { log($0[0]) }
        expectGradients([p], step: 1e-3) { sqrt($0[0]) }
        expectGradients([p], step: 1e-3) { pow($0[0], 1.7) }
        expectGradients([p], step: 1e-3) { pow($0[0], -0.5) }
    }

    @Test func geluLargeArguments() {
        let x = Variable(Tensor(shape: [8], scalars: [-9, -6, -4, -1e-3, 1e-3, 4, 6, 9]), requiresGradient: true)
        expectGradients([x]) { gelu($0[0]) }
    }

    @Test(arguments: [
        ([2, 3], [2, 3]), ([2, 3], [3]), ([3], [2, 3]), ([2, 1, 4], [3, 1]), ([2, 3], []), ([], [2, 3]),
        ([4, 1], [1, 5]), ([2, 3, 4], [2, 1, 4]),
    ])
    func broadcastingBinaryOps(shapes: ([Int], [Int])) {
        let a = randomVariable(shapes.0, seed: 5), b = randomVariable(shapes.1, seed: 6)
        expectGradients([a, b]) { $0[0] + $0[1] }
        expectGradients([a, b]) { $0[0] - $0[1] }
        expectGradients([a, b]) { $0[0] * $0[1] }
        let d = awayFromZero(shapes.1, seed: 7)
        expectGradients([a, d], step: 1e-3) { $0[0] / $0[1] }
    }

    @Test func scalarOperands() {
        let a = randomVariable([3, 2], seed: 8)
        expectGradients([a]) { 2 * $0[0] + 1 }
        expectGradients([a]) { ($0[0] - 0.5) / 3 }
        let d = awayFromZero([3, 2], seed: 9)
        expectGradients([d], step: 1e-3) { 1 / $0[0] }
        expectGradients([d]) { 2 - $0[0] }
    }

    @Test func valueUsedTwiceAccumulates() {
        let x = randomVariable([4], seed: 10)
        expectGradients([x]) { x in x[0] * x[0] + exp(x[0]) * x[0] }
        // Analytic check too: d/dx (x·x + x) = 2x + 1.
        let y = Variable(Tensor(shape: [2], scalars: [1.5, -2]), requiresGradient: true)
        try! sum(y * y + y).backward()
        #expect(y.grad!.scalars == [4, -3])
    }

    @Test func reductions() {
        let x = randomVariable([2, 3, 4], seed: 11)
        expectGradients([x]) { sum($0[0]) }
        expectGradients([x]) { sum($0[0], axes: [1]) }
        expectGradients([x]) { sum($0[0], axes: [0, 2], keepDims: true) }
        expectGradients([x]) { mean($0[0], axes: [-1]) }
        expectGradients([x]) { mean($0[0]) }
        // Distinct values so the maximum is unique and away from ties.
        let distinct = Variable(Tensor(shape: [2, 3, 4], scalars: (0..<24).map { Float(($0 * 7) % 24) * 0.1 }), requiresGradient: true)
        expectGradients([distinct]) { max($0[0], axis: 1) }
        expectGradients([distinct]) { max($0[0], axis: -1, keepDims: true) }
        expectGradients([distinct]) { max($0[0], axis: 0) }
    }

    @Test func softmaxAndLogSoftmax() {
        let x = randomVariable([3, 5], seed: 12, low: -3, high: 3)
        expectGradients([x]) { softmax($0[0]) }
        expectGradients([x]) { logSoftmax($0[0]) }
        let y = randomVariable([2, 4, 3], seed: 13)
        expectGradients([y]) { softmax($0[0], axis: 1) }
        expectGradients([y]) { logSoftmax($0[0], axis: 0) }
        let wide = randomVariable([2, 37], seed: 14, low: -4, high: 4)   // SIMD body + tail
        expectGradients([wide]) { softmax($0[0]) }
    }

    @Test func layerNormAllInputs() {
        let x = randomVariable([4, 11], seed: 15, low: -2, high: 2)
        let gamma = randomVariable([11], seed: 16, low: 0.5, high: 1.5), beta = randomVariable([11], seed: 17)
        expectGradients([x, gamma, beta], step: 3e-3) { layerNorm($0[0], gamma: $0[1], beta: $0[2]) }
        let wide = randomVariable([3, 24], seed: 18, low: -2, high: 2)
        let g2 = randomVariable([24], seed: 19), b2 = randomVariable([24], seed: 20)
        expectGradients([wide, g2, b2], step: 3e-3) { layerNorm($0[0], gamma: $0[1], beta: $0[2], epsilon: 1e-3) }
    }

    @Test func shapeOps() {
        let x = randomVariable([2, 3, 4], seed: 21)
        expectGradients([x]) { reshape($0[0], [6, -1]) }
        expectGradients([x]) { transpose($0[0], [2, 0, 1]) }
        expectGradients([x]) { transpose($0[0], 0, 2) }
        expectGradients([x]) { slice($0[0], axis: 1, 1..<3) }
        expectGradients([x]) { pad($0[0], axis: -1, before: 2, after: 1, value: 3) }
        let y = randomVariable([2, 2, 4], seed: 22)
        expectGradients([x, y]) { concatenate([$0[0], $0[1], $0[0]], axis: 1) }
        // Repeated indices must accumulate.
        let idx = IntTensor(shape: [2, 3], scalars: [2, 0, 2, 1, 1, 0])
        expectGradients([x]) { gather($0[0], axis: 1, indices: idx) }
        expectGradients([x]) { gather($0[0], axis: 2, indices: IntTensor([3, 3, 0])) }
    }

    @Test func matmulVariants() {
        let a = randomVariable([3, 4], seed: 23), b = randomVariable([4, 5], seed: 24)
        expectGradients([a, b]) { matmul($0[0], $0[1]) }
        let at = randomVariable([4, 3], seed: 25), bt = randomVariable([5, 4], seed: 26)
        expectGradients([at, b]) { matmul($0[0], $0[1], transposeA: true) }
        expectGradients([a, bt]) { matmul($0[0], $0[1], transposeB: true) }
        expectGradients([at, bt]) { matmul($0[0], $0[1], transposeA: true, transposeB: true) }
        let ba = randomVariable([2, 3, 4], seed: 27), bb = randomVariable([2, 4, 5], seed: 28)
        expectGradients([ba, bb]) { matmul($0[0], $0[1]) }
        let bat = randomVariable([2, 4, 3], seed: 29), bbt = randomVariable([2, 5, 4], seed: 30)
        expectGradients([bat, bbt]) { matmul($0[0], $0[1], transposeA: true, transposeB: true) }
        // Shared right-hand matrix for a batch.
        expectGradients([ba, b]) { matmul($0[0], $0[1]) }
        expectGradients([ba, bt]) { matmul($0[0], $0[1], transposeB: true) }
    }

    @Test func linearWithAndWithoutBias() {
        let x = randomVariable([2, 3, 4], seed: 31), w = randomVariable([5, 4], seed: 32), b = randomVariable([5], seed: 33)
        expectGradients([x, w, b]) { linear($0[0], weight: $0[1], bias: $0[2]) }
        expectGradients([x, w]) { linear($0[0], weight: $0[1], bias: nil) }
    }

    @Test func embeddingPaddingRowGetsNoGradient() {
        let table = randomVariable([6, 3], seed: 34)
        let ids = IntTensor(shape: [2, 4], scalars: [1, 5, 2, 1, 0, 5, 3, 1])
        expectGradients([table]) { embedding(ids, table: $0[0]) }
        table.grad = nil
        try! sum(embedding(ids, table: table, paddingIndex: 5) * 3).backward()
        #expect(table.grad!.slice(axis: 0, 5..<6).scalars == [0, 0, 0])
        #expect(table.grad!.slice(axis: 0, 1..<2).scalars == [9, 9, 9])   // id 1 used three times
        #expect(table.grad!.slice(axis: 0, 4..<5).scalars == [0, 0, 0])   // unused id
    }

    @Test func dropoutWithFixedMask() {
        let x = randomVariable([4, 6], seed: 35)
        expectGradients([x]) { v in
            var g = RandomGenerator(seed: 99)
            return dropout(v[0], probability: 0.3, training: true, generator: &g)
        }
    }

    @Test func losses() {
        let logits = randomVariable([5, 4], seed: 36, low: -2, high: 2)
        let targets = IntTensor([0, 3, -100, 1, 3])
        expectGradients([logits]) { crossEntropy(logits: $0[0], targets: targets) }
        let bceLogits = randomVariable([3, 2], seed: 37, low: -3, high: 3)
        let bceTargets = Tensor(shape: [3, 2], scalars: [0, 1, 1, 0, 0.3, 1])
        expectGradients([bceLogits]) { binaryCrossEntropy(logits: $0[0], targets: bceTargets) }
        let p = randomVariable([3, 2], seed: 38), t = randomVariable([3, 2], seed: 39)
        expectGradients([p, t]) { meanSquaredError($0[0], $0[1]) }
    }

    @Test("binary cross-entropy keeps its targets for backward (a temporary target tensor was read after being freed)")
    func binaryCrossEntropyOwnsItsTargets() throws {
        let logits = Variable(Tensor(shape: [4, 1], scalars: [0.5, -1, 2, 0]), requiresGradient: true)
        // The targets are a temporary, as the trainer builds them from class labels.
        let loss = binaryCrossEntropy(logits: logits, targets: Tensor(shape: [4, 1], scalars: [1, 0, 0, 1]))
        // Reuse of freed memory: allocate tensors of the same size filled with a large value.
        let churn = (0..<256).map { _ in Tensor(repeating: 1e30, shape: [4, 1]) }
        try loss.backward()
        let x: [Float] = [0.5, -1, 2, 0], t: [Float] = [1, 0, 0, 1]
        let expected: [Float] = (0..<4).map { i in
            let sigmoid = Float(1 / (1 + Foundation.exp(-Double(x[i]))))
            return (sigmoid - t[i]) / 4
        }
        let grad = try #require(logits.grad).scalars
        for (g, e) in zip(grad, expected) { #expect(abs(g - e) < 1e-6) }
        #expect(churn.count == 256)
    }

    @Test func composedNetwork() {
        // Embedding → Linear → GELU → LayerNorm → Linear → cross-entropy: all parameters at once.
        let table = randomVariable([7, 4], seed: 40)
        let w1 = randomVariable([6, 4], seed: 41), b1 = randomVariable([6], seed: 42)
        let gamma = randomVariable([6], seed: 43, low: 0.5, high: 1.5), beta = randomVariable([6], seed: 44)
        let w2 = randomVariable([3, 6], seed: 45), b2 = randomVariable([3], seed: 46)
        let ids = IntTensor(shape: [2, 3], scalars: [1, 4, 6, 0, 2, 2])
        let targets = IntTensor([0, 2, 1, 1, -100, 2])
        expectGradients([table, w1, b1, gamma, beta, w2, b2], step: 3e-3) { p in
            let h = gelu(linear(embedding(ids, table: p[0]), weight: p[1], bias: p[2]))
            let n = layerNorm(h, gamma: p[3], beta: p[4])
            let logits = linear(n, weight: p[5], bias: p[6])
            return crossEntropy(logits: reshape(logits, [6, 3]), targets: targets)
        }
    }
}
