import Foundation
import Testing
@testable import LongMixerCore

/// The fused Performer / PermuteFormer feature op `reluFeatureHeads` (head split + ReLU + ε + π^t)
/// against the composed ops it replaces and against its plain reference kernel.
@Suite("ReLUFeatureHeads permutation")
struct ReLUFeatureHeadsPermutationTests {
    /// permuteFeatures(relu(splitHeads(x)) + ε) with the library's own ops.
    static func composed(_ x: Variable, heads: Int, epsilon: Float, permutations: [CyclePermutation]?, positions: [Int]) -> Variable {
        let (b, n, w) = (x.shape[0], x.shape[1], x.shape[2])
        let split = transpose(reshape(x, [b, n, heads, w / heads]), [0, 2, 1, 3])
        let phi = relu(split) + epsilon
        guard let permutations else { return phi }
        return permuteFeatures(phi, permutations: permutations, positions: positions)
    }

    @Test(arguments: [false, true])
    func matchesComposedOpsBitwise(permuted: Bool) throws {
        var g = RandomGenerator(seed: 11)
        let (b, n, h, f) = (2, 9, 3, 10)
        var xt = Tensor.uniform([b, n, h * f], low: -1, high: 1, generator: &g)
        xt.withUnsafeMutablePointer { $0[5] = 0 }      // ReLU's kink: subgradient 0 at 0 in both forms
        let perms = permuted ? (0..<h).map { _ in CyclePermutation.random(size: f, generator: &g) } : nil
        let positions = [0, 1, 2, 3, 7, 100, -3, 5, 1_003]
        let seed = Tensor.uniform([b, h, n, f], low: -1, high: 1, generator: &g)

        let x1 = Variable(xt, requiresGradient: true), x2 = Variable(xt, requiresGradient: true)
        let fused = reluFeatureHeads(x1, heads: h, epsilon: 1e-3, permutations: perms, positions: permuted ? positions : nil)
        let reference = Self.composed(x2, heads: h, epsilon: 1e-3, permutations: perms, positions: positions)
        #expect(fused.shape == [b, h, n, f])
        #expect(fused.value.scalars == reference.value.scalars)
        try fused.backward(seed: seed)
        try reference.backward(seed: seed)
        #expect(x1.grad!.scalars == x2.grad!.scalars)

        // Plain reference kernel.
        var out = [Float](repeating: .nan, count: b * h * n * f)
        xt.scalars.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                reluFeatureHeadsReference(out: op.baseAddress!, x: xp.baseAddress!, permutations: perms?.map(\.permutation),
                                          positions: positions, batch: b, heads: h, length: n, features: f, epsilon: 1e-3)
            }
        }
        #expect(out == fused.value.scalars)
    }

    @Test func gradientCheck() {
        var g = RandomGenerator(seed: 5)
        let (b, n, h, f) = (1, 5, 2, 6)
        // Keep inputs away from ReLU's kink so central differences are valid.
        var xt = Tensor.uniform([b, n, h * f], low: 0.1, high: 1, generator: &g)
        xt.withUnsafeMutablePointer { p in for i in stride(from: 0, to: b * n * h * f, by: 3) { p[i] = -p[i] } }
        let perms = (0..<h).map { _ in CyclePermutation.random(size: f, generator: &g) }
        let x = Variable(xt, requiresGradient: true)
        let result = checkGradients([x]) { v in
            reluFeatureHeads(v[0], heads: h, epsilon: 1e-3, permutations: perms, positions: [0, 4, 1, 9, 2])
        }
        #expect(result.passed, "\(result)")
    }
}
