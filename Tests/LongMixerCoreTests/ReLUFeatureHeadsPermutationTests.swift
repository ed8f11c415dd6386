import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerCore

/// The fused Performer / PermuteFormer feature op `reluFeatureHeads` (head split + ReLU + ε + π^t, the
/// permuted features in cycle order) against the composed ops it replaces and its plain reference kernel.
@Suite("ReLUFeatureHeads permutation")
struct ReLUFeatureHeadsPermutationTests {
    /// relu(splitHeads(x)) + ε, permuted (original order) and relabeled to cycle order, with the library's
    /// own ops: the relabeling out[s] = y[e_h[s]] is permuteFeatures with the index array e_h at power 1.
    static func composed(_ x: Variable, heads: Int, epsilon: Float, permutations: [CyclePermutation]?, positions: [Int]) -> Variable {
        let (b, n, w) = (x.shape[0], x.shape[1], x.shape[2])
        let split = transpose(reshape(x, [b, n, heads, w / heads]), [0, 2, 1, 3])
        let phi = relu(split) + epsilon
        guard let permutations else { return phi }
        let permuted = permuteFeatures(phi, permutations: permutations, positions: positions)
        return permuteFeatures(permuted, permutations: Self.cycleOrders(permutations), positions: [Int](repeating: 1, count: n))
    }

    /// σ_h(s) = e_h[s] (the cycle elements end to end) as permutations.
    static func cycleOrders(_ permutations: [CyclePermutation]) -> [CyclePermutation] {
        permutations.map { CyclePermutation($0.cycleElements.map(Int.init)) }
    }

    /// Random permutations with some fixed points (cycles of length 1) forced in.
    static func permutations(heads: Int, size: Int, generator g: inout RandomGenerator) -> [CyclePermutation] {
        (0..<heads).map { h in
            var p = CyclePermutation.random(size: size, generator: &g).permutation
            // Make π(j) = j for j = h and, if distinct, the last feature (re-closing the cycles through them).
            for j in Set([h % size, size - 1]) where p[j] != j {
                let i = p.firstIndex(of: j)!
                p[i] = p[j]; p[j] = j
            }
            return CyclePermutation(p)
        }
    }

    @Test(arguments: [false, true])
    func matchesComposedOpsBitwise(permuted: Bool) throws {
        var g = RandomGenerator(seed: 11)
        let (b, n, h, f) = (2, 9, 3, 10)
        var xt = Tensor.uniform([b, n, h * f], low: -1, high: 1, generator: &g)
        xt.withUnsafeMutablePointer { $0[5] = 0 }      // ReLU's kink: subgradient 0 at 0 in both forms
        let perms = permuted ? Self.permutations(heads: h, size: f, generator: &g) : nil
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

        // Plain reference kernel (original order), relabeled.
        var out = Tensor(zeros: [b, h, n, f])
        out.withUnsafeMutablePointer { op in
            reluFeatureHeadsReference(out: op, x: xt.pointer, permutations: perms?.map(\.permutation),
                                      positions: positions, batch: b, heads: h, length: n, features: f, epsilon: 1e-3)
        }
        if let perms {
            out = withoutGradient {
                permuteFeatures(Variable(out), permutations: Self.cycleOrders(perms), positions: [Int](repeating: 1, count: n)).value
            }
        }
        #expect(out.scalars == fused.value.scalars)
    }

    /// The kernels themselves on one gather width (8 or 16 lanes) and 1 and 2
    /// threads: feature widths that are not multiples of 8 or 16 (and F = 1), cycles of length 1 (fixed points and the
    /// identity), runs of consecutive positions (the shifts advance by one step) and jumps, negative and
    /// huge positions; forward and backward against the composed ops, bitwise.
    static let kernelCases: [(Int, Int, Int, UInt64)] = [(1, 2, 37, 1), (2, 3, 20, 2), (1, 2, 24, 3), (2, 2, 16, 4), (1, 3, 1, 5)]

    @Test(arguments: kernelCases)
    func kernelsWith8LaneGathers(batch b: Int, heads h: Int, features f: Int, seed: UInt64) throws {
        try kernelsOnOnePath(batch: b, heads: h, features: f, seed: seed, wide: false)
    }

    @Test(requiresAVX512, arguments: kernelCases)
    func kernelsWith16LaneGathers(batch b: Int, heads h: Int, features f: Int, seed: UInt64) throws {
        try kernelsOnOnePath(batch: b, heads: h, features: f, seed: seed, wide: true)
    }

    func kernelsOnOnePath(batch b: Int, heads h: Int, features f: Int, seed: UInt64, wide: Bool) throws {
        var g = RandomGenerator(seed: seed)
        // 600 rows per (batch, head), so 2 threads really split them (the grain is 16 384 / F rows).
        let positions = [5, 6, 7, 8, 0, 1, -7, -6, 1_000_003, 1_000_004, Int.max - 1, Int.max, Int.min, Int.min + 1, 3]
            + (0..<585).map { $0 + ($0 / 100) * 7 }
        let n = positions.count
        var perms = Self.permutations(heads: h, size: f, generator: &g)
        perms[0] = .identity(size: f)
        let xt = Tensor.uniform([b, n, h * f], low: -1, high: 1, generator: &g)
        let seedGradient = Tensor.uniform([b, h, n, f], low: -1, high: 1, generator: &g)
        let accumulated = Tensor.uniform([b, n, h * f], low: -1, high: 1, generator: &g)   // the backward accumulates

        let x2 = Variable(xt, requiresGradient: true)
        let reference = Self.composed(x2, heads: h, epsilon: 1e-3, permutations: perms, positions: positions)
        try reference.backward(seed: seedGradient)
        let expectedGradient = zip(accumulated.scalars, x2.grad!.scalars).map { $0 + $1 }

        let tables = PermutationCycleTables(perms)
        withEachThreadCount { threads in
            var out = Tensor(repeating: .nan, shape: [b, h, n, f])
            var dx = accumulated
            positions.withUnsafeBufferPointer { pos in
                out.withUnsafeMutablePointer { o in
                    reluFeatureHeadsForward(out: o, x: xt.pointer, tables: tables, positions: pos.baseAddress, batch: b, heads: h,
                                            length: n, features: f, epsilon: 1e-3, wide: wide)
                }
                dx.withUnsafeMutablePointer { d in
                    reluFeatureHeadsBackward(dx: d, gradOut: seedGradient.pointer, x: xt.pointer, tables: tables, positions: pos.baseAddress,
                                             batch: b, heads: h, length: n, features: f, wide: wide)
                }
            }
            #expect(out.scalars == reference.value.scalars, "forward F \(f) wide \(wide) threads \(threads)")
            #expect(dx.scalars == expectedGradient, "backward F \(f) wide \(wide) threads \(threads)")
        }
    }

    @Test func cycleOrderIsOneRelabelingPerHead() {
        // Slot s of head h holds PermuteFormer's feature e_h[s] at every position: spelled out for one element.
        var g = RandomGenerator(seed: 3)
        let (n, h, f) = (6, 2, 12)
        let perms = Self.permutations(heads: h, size: f, generator: &g)
        let xt = Tensor.uniform([1, n, h * f], low: 0.1, high: 1, generator: &g)
        let positions = [0, 2, 5, 9, 10, 11]
        let out = withoutGradient { reluFeatureHeads(Variable(xt), heads: h, epsilon: 0, permutations: perms, positions: positions).value }
        for (head, t, s) in [(0, 0, 3), (1, 3, 7), (1, 5, 11)] {
            let feature = Int(perms[head].cycleElements[s])
            let source = perms[head].index(feature, power: positions[t])      // original order: y[j] = x[π^p(j)]
            #expect(out[flat: (head * n + t) * f + s] == xt[flat: t * h * f + head * f + source])
        }
    }

    @Test func gradientCheck() {
        var g = RandomGenerator(seed: 5)
        let (b, n, h, f) = (1, 5, 2, 6)
        // Keep inputs away from ReLU's kink so central differences are valid.
        var xt = Tensor.uniform([b, n, h * f], low: 0.1, high: 1, generator: &g)
        xt.withUnsafeMutablePointer { p in for i in stride(from: 0, to: b * n * h * f, by: 3) { p[i] = -p[i] } }
        let perms = Self.permutations(heads: h, size: f, generator: &g)
        let x = Variable(xt, requiresGradient: true)
        let result = checkGradients([x]) { v in
            reluFeatureHeads(v[0], heads: h, epsilon: 1e-3, permutations: perms, positions: [0, 4, 1, 9, 2])
        }
        #expect(result.passed, "\(result)")
    }
}
