import Foundation
import Testing
@testable import LongMixerCore

/// CyclePermutation (cycle decomposition, O(1) powers) and the permuteFeatures op.

/// π^t(j) by applying the index array t times (t ≥ 0) or its inverse −t times.
private func repeatedApplication(_ perm: [Int], _ j: Int, _ t: Int) -> Int {
    var inverse = [Int](repeating: 0, count: perm.count)
    for (i, p) in perm.enumerated() { inverse[p] = i }
    var idx = j
    for _ in 0..<abs(t) { idx = t >= 0 ? perm[idx] : inverse[idx] }
    return idx
}

private func randomPermutations(_ count: Int, size: Int, seed: UInt64) -> [CyclePermutation] {
    var g = RandomGenerator(seed: seed)
    return (0..<count).map { _ in CyclePermutation.random(size: size, generator: &g) }
}

@Suite("Permutations")
struct PermutationTests {
    @Test func indexEqualsRepeatedApplication() {
        // Two cycles (0 3 1) and (2 5), fixed point 4: order 6.
        let p = CyclePermutation([3, 0, 5, 1, 4, 2])
        #expect(p.order == 6)
        #expect(p.cycleLengths.sorted() == [1, 2, 3])
        for t in -20...20 {
            for j in 0..<6 { #expect(p.index(j, power: t) == repeatedApplication(p.permutation, j, t), "j \(j) t \(t)") }
        }
        // Random permutations of several sizes, t up to about 3·order (capped) and negative.
        var g = RandomGenerator(seed: 7)
        for size in [1, 2, 5, 16, 32, 64] {
            let r = CyclePermutation.random(size: size, generator: &g)
            // Every t in −limit…limit, limit = 3·order + 2 capped at 400 (random orders can be huge).
            let limit = r.order > 132 ? 400 : 3 * r.order + 2
            for t in -limit...limit {
                for j in 0..<size { #expect(r.index(j, power: t) == repeatedApplication(r.permutation, j, t)) }
            }
            // Powers that are multiples of the order are the identity (when the order is representable).
            if r.order < Int.max / 4 {
                for j in 0..<size {
                    #expect(r.index(j, power: r.order) == j)
                    #expect(r.index(j, power: -2 * r.order) == j)
                }
            }
        }
    }

    @Test func extremePowers() {
        let p = CyclePermutation([1, 2, 0, 4, 3])   // cycles of length 3 and 2
        for t in [Int.max, Int.min, Int.max - 1, Int.min + 1] {
            for j in 0..<5 {
                // π^t(j) depends on t mod the cycle length; compute it from a small equivalent power.
                let len = j < 3 ? 3 : 2
                var small = t % len
                if small < 0 { small += len }
                #expect(p.index(j, power: t) == repeatedApplication(p.permutation, j, small))
            }
        }
    }

    @Test func orderIsTheLcmOfCycleLengths() {
        #expect(CyclePermutation.identity(size: 5).order == 1)
        #expect(CyclePermutation([]).order == 1)
        // Cycles of lengths 2, 3, 4, 5 → lcm 60.
        var perm: [Int] = []
        var start = 0
        for len in [2, 3, 4, 5] {
            for i in 0..<len { perm.append(start + (i + 1) % len) }
            start += len
        }
        let p = CyclePermutation(perm)
        #expect(p.order == 60)
        // Cycles of distinct primes up to 113 (sum 1720 elements) have an lcm far beyond Int.max.
        let primes = (2...113).filter { n in (2..<n).allSatisfy { n % $0 != 0 } }
        var big: [Int] = []
        start = 0
        for len in primes {
            for i in 0..<len { big.append(start + (i + 1) % len) }
            start += len
        }
        #expect(CyclePermutation(big).order == Int.max)
    }

    @Test func randomIsSeededAndAPermutation() {
        var g1 = RandomGenerator(seed: 11), g2 = RandomGenerator(seed: 11), g3 = RandomGenerator(seed: 12)
        let a = CyclePermutation.random(size: 64, generator: &g1)
        let b = CyclePermutation.random(size: 64, generator: &g2)
        let c = CyclePermutation.random(size: 64, generator: &g3)
        #expect(a == b)
        #expect(a != c)
        #expect(a.permutation.sorted() == Array(0..<64))
        #expect(a != CyclePermutation.identity(size: 64))
    }

    @Test func codableRoundTripAndMutation() throws {
        var g = RandomGenerator(seed: 13)
        var p = CyclePermutation.random(size: 10, generator: &g)
        let data = try JSONEncoder().encode(p)
        let decoded = try JSONDecoder().decode(CyclePermutation.self, from: data)
        #expect(decoded == p)
        for j in 0..<10 { #expect(decoded.index(j, power: 5) == p.index(j, power: 5)) }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(CyclePermutation.self, from: Data(#"{"permutation":[0,0,1]}"#.utf8))
        }
        // Setting the index array rebuilds the cycles.
        p.permutation = [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]
        #expect(p.index(0, power: 1) == 1 && p.index(0, power: 2) == 0 && p.index(5, power: 3) == 5)
        #expect(p.order == 2)
    }

    @Test func notAPermutationIsRejected() async {
        await #expect(processExitsWith: .failure) { _ = CyclePermutation([0, 2, 2]) }
    }

    // MARK: permuteFeatures

    @Test(arguments: [nil, 2..<7] as [Range<Int>?])
    func forwardMatchesReference(range: Range<Int>?) {
        let (B, H, N, F) = (2, 3, 9, 8)
        let R = range?.count ?? F
        let perms = randomPermutations(H, size: R, seed: 20)
        let positions = [0, 1, 2, 3, 17, -1, -5, 100, 7]
        let x = randomVariable([B, H, N, F], seed: 21)
        let out = permuteFeatures(x, permutations: perms, positions: positions, featureRange: range)
        var expected = Tensor(zeros: x.shape)
        expected.withUnsafeMutablePointer { e in
            permuteFeaturesReference(out: e, x: x.value.pointer, permutations: perms.map(\.permutation), positions: positions,
                                     batch: B, heads: H, length: N, features: F, rangeStart: range?.lowerBound ?? 0)
        }
        #expect(out.value.scalars == expected.scalars)
        // Gather semantics spelled out for one element: out[b,h,t,lo+j] = x[b,h,t,lo+π^{p_t}(j)].
        let (b, h, t, j, lo) = (1, 2, 4, 3, range?.lowerBound ?? 0)
        let src = perms[h].index(j, power: positions[t])
        #expect(out.value[flat: ((b * H + h) * N + t) * F + lo + j] == x.value[flat: ((b * H + h) * N + t) * F + lo + src])
    }

    @Test(arguments: [nil, 3..<8] as [Range<Int>?])
    func gradients(range: Range<Int>?) {
        let perms = randomPermutations(2, size: range?.count ?? 8, seed: 30)
        let x = randomVariable([2, 2, 6, 8], seed: 31)
        expectGradients([x]) { permuteFeatures($0[0], permutations: perms, positions: [0, 3, 1, -2, 9, 4], featureRange: range) }
    }

    @Test func backwardIsTheInverseGather() {
        // The pullback of a permutation is its inverse: permuting the gradient back gives the original layout.
        let (B, H, N, F) = (1, 2, 5, 16)
        let perms = randomPermutations(H, size: F, seed: 40)
        let positions = [0, 4, 9, 2, 33]
        let x = randomVariable([B, H, N, F], seed: 41)
        let y = permuteFeatures(x, permutations: perms, positions: positions)
        try! y.backward(seed: y.value)   // dx = Pᵀ y = Pᵀ P x = x
        #expect(x.grad!.scalars == x.value.scalars)
    }

    @Test func identityPermutationIsIdentity() {
        let x = randomVariable([2, 2, 7, 6], seed: 50)
        let perms = [CyclePermutation.identity(size: 6), CyclePermutation.identity(size: 6)]
        let y = permuteFeatures(x, permutations: perms, positions: Array(0..<7).map { $0 * 13 - 20 })
        #expect(y.value.scalars == x.value.scalars)
        // Position 0 is the identity for any permutation.
        let random = randomPermutations(2, size: 6, seed: 51)
        let z = permuteFeatures(x, permutations: random, positions: [Int](repeating: 0, count: 7))
        #expect(z.value.scalars == x.value.scalars)
    }

    @Test func relativePositionProperty() {
        // ⟨π^i a, π^j b⟩ = ⟨π^(i−j) a, b⟩: the score after permuting query row i and key row j depends on i − j only.
        let (N, F) = (12, 32)
        let perms = randomPermutations(1, size: F, seed: 60)
        let a = randomVariable([1, 1, N, F], seed: 61).value, bKeys = randomVariable([1, 1, N, F], seed: 62).value
        let positions = Array(0..<N)
        let pa = withoutGradient { permuteFeatures(Variable(a), permutations: perms, positions: positions).value }
        let pb = withoutGradient { permuteFeatures(Variable(bKeys), permutations: perms, positions: positions).value }
        func dot(_ x: Tensor, _ i: Int, _ y: Tensor, _ j: Int) -> Double {
            (0..<F).reduce(0.0) { $0 + Double(x[flat: i * F + $1]) * Double(y[flat: j * F + $1]) }
        }
        for i in 0..<N {
            for j in 0..<N {
                // Permute query row i alone by π^(i−j) and pair it with the unpermuted key row j.
                let rel = withoutGradient {
                    permuteFeatures(Variable(a), permutations: perms, positions: [Int](repeating: i - j, count: N)).value
                }
                let lhs = dot(pa, i, pb, j), rhs = dot(rel, i, bKeys, j)
                #expect(abs(lhs - rhs) <= 1e-5 * max(1, abs(rhs)), "i \(i) j \(j)")
            }
        }
        // And the permutation is not trivial: shifted pairs differ from unshifted ones for some offset.
        #expect((1..<N).contains { abs(dot(pa, $0, pb, 0) - dot(a, $0, bKeys, 0)) > 1e-3 })
    }

    @Test func twoDimensionalHalvesCommute() {
        // 2D PermuteFormer: x-positions on the first half, y-positions on the second; the order of the calls does not matter,
        // and the score of a pair depends only on (Δx, Δy).
        let (W, Hh, F) = (4, 3, 16)
        let N = W * Hh
        let base = randomPermutations(1, size: F / 2, seed: 70)
        let xs = (0..<N).map { $0 % W }, ys = (0..<N).map { $0 / W }
        let q = randomVariable([1, 1, N, F], seed: 71).value, k = randomVariable([1, 1, N, F], seed: 72).value
        func permute2D(_ t: Tensor, xFirst: Bool) -> Tensor {
            withoutGradient {
                let v = Variable(t)
                if xFirst {
                    return permuteFeatures(permuteFeatures(v, permutations: base, positions: xs, featureRange: 0..<(F / 2)),
                                           permutations: base, positions: ys, featureRange: (F / 2)..<F).value
                }
                return permuteFeatures(permuteFeatures(v, permutations: base, positions: ys, featureRange: (F / 2)..<F),
                                       permutations: base, positions: xs, featureRange: 0..<(F / 2)).value
            }
        }
        #expect(permute2D(q, xFirst: true).scalars == permute2D(q, xFirst: false).scalars)
        #expect(permute2D(k, xFirst: true).scalars == permute2D(k, xFirst: false).scalars)
        // Shifting both tokens by the same (dx, dy) keeps the score when the underlying vectors are shared.
        let shared = randomVariable([1, 1, 1, F], seed: 73).value
        var qs = Tensor(zeros: [1, 1, N, F]), ks = Tensor(zeros: [1, 1, N, F])
        let other = randomVariable([1, 1, 1, F], seed: 74).value
        for n in 0..<N { for f in 0..<F { qs[flat: n * F + f] = shared[flat: f]; ks[flat: n * F + f] = other[flat: f] } }
        let pqs = permute2D(qs, xFirst: true), pks = permute2D(ks, xFirst: true)
        func score(_ i: Int, _ j: Int) -> Double { (0..<F).reduce(0.0) { $0 + Double(pqs[flat: i * F + $1]) * Double(pks[flat: j * F + $1]) } }
        // (x=2,y=1)·(x=1,y=0) vs (x=3,y=2)·(x=2,y=1): both Δ = (1, 1).
        #expect(abs(score(1 * W + 2, 0 * W + 1) - score(2 * W + 3, 1 * W + 2)) <= 1e-5)
        // A different offset gives a different score (the encoding is not trivial).
        #expect(abs(score(1 * W + 2, 0 * W + 1) - score(2 * W + 3, 0 * W + 0)) > 1e-4)
    }

    // MARK: PermuteFormer attention core (permutation + linear attention)

    @Test func attentionIsInvariantToAPositionShift() {
        // Scores depend on i − j only, so shifting every position by s leaves the attention output unchanged
        // (bidirectional normalised, and causal with decay).
        let (B, H, N, F, Dh) = (1, 2, 10, 16, 4)
        let perms = randomPermutations(H, size: F, seed: 80)
        let q = randomVariable([B, H, N, F], seed: 81, low: 0.2, high: 1).value
        let k = randomVariable([B, H, N, F], seed: 82, low: 0.2, high: 1).value
        let v = randomVariable([B, H, N, Dh], seed: 83).value
        func attend(shift: Int, causal: Bool) -> Tensor {
            withoutGradient {
                let positions = (0..<N).map { $0 + shift }
                let pq = permuteFeatures(Variable(q), permutations: perms, positions: positions)
                let pk = permuteFeatures(Variable(k), permutations: perms, positions: positions)
                if causal {
                    return causalLinearAttention(queries: pq, keys: pk, values: Variable(v), decay: [0.9, 0.7], normalized: true, chunkSize: 4).value
                }
                return linearAttention(queries: pq, keys: pk, values: Variable(v)).value
            }
        }
        for causal in [false, true] {
            let base = attend(shift: 0, causal: causal)
            for shift in [1, 7, -3, 1000] {
                let shifted = attend(shift: shift, causal: causal)
                for i in 0..<base.count { #expect(abs(shifted[flat: i] - base[flat: i]) <= 1e-5 * max(1, abs(base[flat: i]))) }
            }
        }
        // Identity permutations give plain (Performer) linear attention.
        let identity = [CyclePermutation](repeating: .identity(size: F), count: H)
        let plain = withoutGradient { linearAttention(queries: Variable(q), keys: Variable(k), values: Variable(v)).value }
        let permuted = withoutGradient {
            linearAttention(queries: permuteFeatures(Variable(q), permutations: identity, positions: Array(0..<N)),
                            keys: permuteFeatures(Variable(k), permutations: identity, positions: Array(0..<N)),
                            values: Variable(v)).value
        }
        #expect(plain.scalars == permuted.scalars)
    }

    @Test func permutedAttentionGradients() {
        // Gradients flow through the inverse gather into q and k of the PermuteFormer core.
        let perms = randomPermutations(2, size: 6, seed: 90)
        let q = randomVariable([1, 2, 7, 6], seed: 91, low: 0.2, high: 1), k = randomVariable([1, 2, 7, 6], seed: 92, low: 0.2, high: 1)
        let v = randomVariable([1, 2, 7, 3], seed: 93)
        let positions = Array(0..<7)
        expectGradients([q, k, v]) {
            causalLinearAttention(queries: permuteFeatures($0[0], permutations: perms, positions: positions),
                                  keys: permuteFeatures($0[1], permutations: perms, positions: positions),
                                  values: $0[2], decay: [0.8, 0.95], normalized: true, chunkSize: 3)
        }
    }
}

@Suite("Pairwise rotation (RoPE)")
struct RotatePairsTests {
    func tables(heads: Int, length: Int, half: Int, seed: UInt64) -> (Tensor, Tensor, [Float]) {
        var g = RandomGenerator(seed: seed)
        let angles = Tensor.uniform([heads, length, half], low: -7, high: 7, generator: &g).scalars
        return (Tensor(shape: [heads, length, half], scalars: angles.map { Foundation.cos($0) }),
                Tensor(shape: [heads, length, half], scalars: angles.map { Foundation.sin($0) }), angles)
    }

    @Test("Forward equals the plain 2×2 rotation of every pair, with shared and per-head angles")
    func forwardMatchesPlainRotation() {
        for angleHeads in [1, 3] {
            let (b, h, n, f) = (2, 3, 5, 6)
            let x = randomVariable([b, h, n, f], seed: 11)
            let (c, s, _) = tables(heads: angleHeads, length: n, half: f / 2, seed: 12)
            let y = rotatePairs(x, cosines: c, sines: s).value
            for bi in 0..<b { for hi in 0..<h { for t in 0..<n { for i in 0..<(f / 2) {
                let row = ((bi * h + hi) * n + t) * f, a = ((angleHeads == 1 ? 0 : hi) * n + t) * (f / 2) + i
                let e = x.value[flat: row + 2 * i], o = x.value[flat: row + 2 * i + 1]
                let (ci, si) = (c[flat: a], s[flat: a])
                #expect(abs(y[flat: row + 2 * i] - (e * ci - o * si)) <= 1e-6)
                #expect(abs(y[flat: row + 2 * i + 1] - (e * si + o * ci)) <= 1e-6)
            } } } }
        }
    }

    @Test("Finite-difference gradient, shared and per-head angles")
    func gradient() {
        for angleHeads in [1, 2] {
            let (c, s, _) = tables(heads: angleHeads, length: 7, half: 4, seed: 21)
            expectGradients([randomVariable([2, 2, 7, 8], seed: 22)]) { sum(rotatePairs($0[0], cosines: c, sines: s) * $0[0]) }
        }
    }

    @Test func mismatchedTablesStopWithAMessage() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let x = Variable(Tensor(zeros: [1, 2, 3, 4]))
            _ = rotatePairs(x, cosines: Tensor(zeros: [1, 3, 3]), sines: Tensor(zeros: [1, 3, 3]))
        }
        let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(message.contains("rotatePairs: cosines [1, 3, 3] and sines [1, 3, 3] must both be [1 or 2, 3, 2] for x [1, 2, 3, 4]"))
    }
}
