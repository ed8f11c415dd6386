import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerCore

/// Fused linear attention: gradient checks of every variant, the fused kernels against the naive O(N²)
/// references, the recurrent step against the parallel form, causality, masking, and long-N stability.

/// Positive features (as after φ = ReLU + ε), bounded away from 0 so denominators stay well conditioned.
private func features(_ shape: [Int], seed: UInt64) -> Variable {
    randomVariable(shape, seed: seed, low: 0.2, high: 1)
}

private struct ReferenceResult { var out: Tensor; var dq: Tensor; var dk: Tensor; var dv: Tensor }

/// The naive references' output and gradients for the upstream gradient `g`.
private func reference(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: Tensor?, decay: [Float]?, causal: Bool,
                       normalized: Bool, g: Tensor) -> ReferenceResult {
    let sizes = LinearAttentionSizes(batch: q.shape[0], heads: q.shape[1], length: q.shape[2],
                                     features: q.shape[3], valueDimensions: v.shape[3])
    var out = Tensor(zeros: v.shape), dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
    out.withUnsafeMutablePointer { o in
        linearAttentionReferenceForward(out: o, q: q.pointer, k: k.pointer, v: v.pointer, keyMask: mask?.pointer,
                                        decay: decay, causal: causal, normalized: normalized, sizes: sizes)
    }
    dq.withUnsafeMutablePointer { a in dk.withUnsafeMutablePointer { b in dv.withUnsafeMutablePointer { c in
        linearAttentionReferenceBackward(dq: a, dk: b, dv: c, gradOut: g.pointer, q: q.pointer, k: k.pointer, v: v.pointer,
                                         keyMask: mask?.pointer, decay: decay, causal: causal, normalized: normalized, sizes: sizes)
    } } }
    return ReferenceResult(out: out, dq: dq, dk: dk, dv: dv)
}

/// Output and input gradients of a fused op for the upstream gradient `g`.
private func fused(_ q: Tensor, _ k: Tensor, _ v: Tensor, g: Tensor,
                   _ op: (Variable, Variable, Variable) -> Variable) -> ReferenceResult {
    let qv = Variable(q, requiresGradient: true), kv = Variable(k, requiresGradient: true), vv = Variable(v, requiresGradient: true)
    let out = op(qv, kv, vv)
    try! out.backward(seed: g)
    return ReferenceResult(out: out.value, dq: qv.grad!, dk: kv.grad!, dv: vv.grad!)
}

private let twoHeadDecay: [Float] = [0.9, 0.6]

@Suite("Linear attention")
struct LinearAttentionTests {
    // MARK: Gradient checks

    @Test(arguments: [true, false], [true, false])
    func bidirectionalGradients(normalized: Bool, masked: Bool) {
        let q = features([2, 2, 5, 4], seed: 1), k = features([2, 2, 5, 4], seed: 2)
        let v = randomVariable([2, 2, 5, 3], seed: 3)
        let mask = masked ? Tensor(shape: [2, 5], scalars: [1, 1, 0, 1, 1, 1, 1, 1, 0, 0]) : nil
        expectGradients([q, k, v]) {
            linearAttention(queries: $0[0], keys: $0[1], values: $0[2], keyMask: mask, normalized: normalized)
        }
    }

    @Test(arguments: [true, false], [true, false])
    func causalGradientsSeveralChunks(normalized: Bool, decayed: Bool) {
        // N = 11 with chunk 4: two full chunks and a partial one, so the carried state and its reverse scan are used.
        let q = features([2, 2, 11, 4], seed: 4), k = features([2, 2, 11, 4], seed: 5)
        let v = randomVariable([2, 2, 11, 3], seed: 6)
        let decay = decayed ? twoHeadDecay : nil
        expectGradients([q, k, v]) {
            causalLinearAttention(queries: $0[0], keys: $0[1], values: $0[2], decay: decay, normalized: normalized, chunkSize: 4)
        }
    }

    @Test(arguments: [true, false], [true, false])
    func causalGradientsDefaultChunk(normalized: Bool, decayed: Bool) {
        // N = 70 > 64: one full default chunk plus a partial one. One batch, two heads keeps the check fast.
        let q = features([1, 2, 70, 3], seed: 7), k = features([1, 2, 70, 3], seed: 8)
        let v = randomVariable([1, 2, 70, 2], seed: 9)
        let decay = decayed ? twoHeadDecay : nil
        expectGradients([q, k, v]) {
            causalLinearAttention(queries: $0[0], keys: $0[1], values: $0[2], decay: decay, normalized: normalized)
        }
    }

    @Test func gradientOfOnlySomeInputs() {
        // Inputs that don't require a gradient are skipped by the checker; the op still gives the others.
        let q = features([1, 2, 6, 3], seed: 10), k = Variable(features([1, 2, 6, 3], seed: 11).value)
        let v = randomVariable([1, 2, 6, 2], seed: 12)
        expectGradients([q, k, v]) { causalLinearAttention(queries: $0[0], keys: $0[1], values: $0[2], normalized: true, chunkSize: 4) }
        expectGradients([q, k, v]) { linearAttention(queries: $0[0], keys: $0[1], values: $0[2]) }
    }

    // MARK: Fused kernels against the naive references

    @Test(arguments: [1, 7, 64, 65, 100], [true, false])
    func causalChunkedMatchesNaive(length: Int, normalized: Bool) {
        let q = features([2, 2, length, 8], seed: 20).value, k = features([2, 2, length, 8], seed: 21).value
        let v = randomVariable([2, 2, length, 5], seed: 22).value
        let g = randomVariable([2, 2, length, 5], seed: 23).value
        for decay in [nil, twoHeadDecay] {
            let ref = reference(q, k, v, mask: nil, decay: decay, causal: true, normalized: normalized, g: g)
            for chunk in [4, 16, 64] {
                let got = fused(q, k, v, g: g) {
                    causalLinearAttention(queries: $0, keys: $1, values: $2, decay: decay, normalized: normalized, chunkSize: chunk)
                }
                let context = "N \(length) chunk \(chunk) decay \(decay.map { "\($0)" } ?? "none") normalized \(normalized)"
                #expect(relativeError(got.out, ref.out, floor: 1) <= 1e-5, "forward, \(context)")
                #expect(relativeError(got.dq, ref.dq, floor: 1) <= 1e-5, "dq, \(context)")
                #expect(relativeError(got.dk, ref.dk, floor: 1) <= 1e-5, "dk, \(context)")
                #expect(relativeError(got.dv, ref.dv, floor: 1) <= 1e-5, "dv, \(context)")
            }
        }
    }

    @Test(arguments: [true, false], [true, false])
    func bidirectionalMatchesNaive(normalized: Bool, masked: Bool) {
        let (B, H, N) = (2, 3, 37)
        let q = features([B, H, N, 16], seed: 30).value, k = features([B, H, N, 16], seed: 31).value
        let v = randomVariable([B, H, N, 9], seed: 32).value
        let g = randomVariable([B, H, N, 9], seed: 33).value
        var generator = RandomGenerator(seed: 34)
        let mask = masked ? Tensor.bernoulli([B, N], probability: 0.7, generator: &generator) : nil
        let ref = reference(q, k, v, mask: mask, decay: nil, causal: false, normalized: normalized, g: g)
        let got = fused(q, k, v, g: g) { linearAttention(queries: $0, keys: $1, values: $2, keyMask: mask, normalized: normalized) }
        #expect(relativeError(got.out, ref.out, floor: 1) <= 1e-5)
        #expect(relativeError(got.dq, ref.dq, floor: 1) <= 1e-5)
        #expect(relativeError(got.dk, ref.dk, floor: 1) <= 1e-5)
        #expect(relativeError(got.dv, ref.dv, floor: 1) <= 1e-5)
    }

    @Test func referencesAgreeWithTheDefinitionOnATinyCase() {
        // One head, N = 2, F = 1, Dh = 1, by hand: q = [1, 2], k = [3, 4], v = [5, 6], r = 0.5.
        let q = Tensor(shape: [1, 1, 2, 1], scalars: [1, 2]), k = Tensor(shape: [1, 1, 2, 1], scalars: [3, 4])
        let v = Tensor(shape: [1, 1, 2, 1], scalars: [5, 6]), g = Tensor(zeros: [1, 1, 2, 1])
        // Causal, decayed: out_0 = 3·5 = 15, out_1 = 0.5·(2·3)·5 + (2·4)·6 = 63; normalized: 15/3, 63/(3 + 8).
        let un = reference(q, k, v, mask: nil, decay: [0.5], causal: true, normalized: false, g: g).out.scalars
        let no = reference(q, k, v, mask: nil, decay: [0.5], causal: true, normalized: true, g: g).out.scalars
        #expect(un == [15, 63])
        #expect(abs(no[0] - 5) < 1e-6 && abs(no[1] - 63.0 / 11) < 1e-6)
        // Bidirectional with the second key masked: out_i = (q_i·3)·5 / (q_i·3) = 5.
        let masked = reference(q, k, v, mask: Tensor(shape: [1, 2], scalars: [1, 0]), decay: nil, causal: false, normalized: true, g: g)
        #expect(masked.out.scalars == [5, 5])
    }

    // MARK: Properties

    @Test(arguments: [true, false], [true, false])
    func recurrentStepEqualsParallelForm(normalized: Bool, decayed: Bool) {
        let (B, H, N, F, Dh) = (2, 2, 23, 6, 4)
        let q = features([B, H, N, F], seed: 40).value, k = features([B, H, N, F], seed: 41).value
        let v = randomVariable([B, H, N, Dh], seed: 42).value
        let decay = decayed ? twoHeadDecay : nil
        let parallel = withoutGradient {
            causalLinearAttention(queries: Variable(q), keys: Variable(k), values: Variable(v), decay: decay,
                                  normalized: normalized, chunkSize: 8).value
        }
        var state = CausalLinearAttentionState(batch: B, heads: H, features: F, valueDimensions: Dh, decay: decay, normalized: normalized)
        for t in 0..<N {
            let row = state.step(query: q.slice(axis: 2, t..<(t + 1)).reshaped([B, H, F]),
                                 key: k.slice(axis: 2, t..<(t + 1)).reshaped([B, H, F]),
                                 value: v.slice(axis: 2, t..<(t + 1)).reshaped([B, H, Dh]))
            let expected = parallel.slice(axis: 2, t..<(t + 1)).reshaped([B, H, Dh])
            #expect(relativeError(row, expected, floor: 1) <= 1e-5, "position \(t)")
        }
        #expect(state.length == N)
    }

    @Test(arguments: [true, false])
    func causalOutputsIgnoreTheFuture(normalized: Bool) {
        let (B, H, N, F, Dh) = (1, 2, 30, 5, 3)
        let q = features([B, H, N, F], seed: 50).value, k = features([B, H, N, F], seed: 51).value
        let v = randomVariable([B, H, N, Dh], seed: 52).value
        func run(_ q: Tensor, _ k: Tensor, _ v: Tensor) -> Tensor {
            withoutGradient {
                causalLinearAttention(queries: Variable(q), keys: Variable(k), values: Variable(v), decay: twoHeadDecay,
                                      normalized: normalized, chunkSize: 8).value
            }
        }
        let base = run(q, k, v)
        for t in [0, 6, 7, 13, 28] {
            // Replace every input after position t (inside t's chunk and in later chunks).
            func changedAfter(_ x: Tensor, seed: UInt64) -> Tensor {
                var g = RandomGenerator(seed: seed)
                let noise = Tensor.uniform(x.shape, low: 0.2, high: 3, generator: &g)
                let width = x.shape[3]
                var y = x
                for i in 0..<y.count where (i / width) % N > t { y[flat: i] = noise[flat: i] }
                return y
            }
            let changed = run(changedAfter(q, seed: 53), changedAfter(k, seed: 54), changedAfter(v, seed: 55))
            let upTo = base.slice(axis: 2, 0..<(t + 1)), changedUpTo = changed.slice(axis: 2, 0..<(t + 1))
            #expect(upTo.scalars == changedUpTo.scalars, "outputs ≤ \(t) changed when only later inputs changed")
            let after = base.slice(axis: 2, (t + 1)..<N), changedAfterT = changed.slice(axis: 2, (t + 1)..<N)
            #expect(relativeError(after, changedAfterT, floor: 1) > 1e-3, "the test perturbation must change later outputs")
        }
    }

    @Test(arguments: [true, false])
    func maskedKeysHaveNoEffect(normalized: Bool) {
        let (B, H, N, F, Dh) = (2, 2, 9, 6, 4)
        let q = features([B, H, N, F], seed: 60), k = features([B, H, N, F], seed: 61)
        let v = randomVariable([B, H, N, Dh], seed: 62)
        let mask = Tensor(shape: [B, N], scalars: [1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1])
        let out = linearAttention(queries: q, keys: k, values: v, keyMask: mask, normalized: normalized)
        // Overwrite the keys and values of every masked position.
        var k2 = k.value, v2 = v.value
        var g = RandomGenerator(seed: 63)
        for b in 0..<B { for h in 0..<H { for j in 0..<N where mask[flat: b * N + j] == 0 {
            for f in 0..<F { k2[flat: ((b * H + h) * N + j) * F + f] = 0.2 + 5 * g.nextUniform() }
            for c in 0..<Dh { v2[flat: ((b * H + h) * N + j) * Dh + c] = 10 * g.nextUniform() - 5 }
        } } }
        let k2v = Variable(k2, requiresGradient: true), v2v = Variable(v2, requiresGradient: true)
        let out2 = linearAttention(queries: q, keys: k2v, values: v2v, keyMask: mask, normalized: normalized)
        #expect(out.value.scalars == out2.value.scalars)
        // Masked keys and values also get no gradient.
        try! sum(out2 * out2).backward()
        for b in 0..<B { for h in 0..<H { for j in 0..<N where mask[flat: b * N + j] == 0 {
            for f in 0..<F { #expect(k2v.grad![flat: ((b * H + h) * N + j) * F + f] == 0) }
            for c in 0..<Dh { #expect(v2v.grad![flat: ((b * H + h) * N + j) * Dh + c] == 0) }
        } } }
        // And the mask matters: without it the output differs.
        let unmasked = linearAttention(queries: q, keys: k2v, values: v2v, normalized: normalized)
        #expect(relativeError(unmasked.value, out.value, floor: 1) > 1e-2)
    }

    @Test func decayOfOneEqualsNoDecay() {
        let q = features([1, 2, 20, 4], seed: 70), k = features([1, 2, 20, 4], seed: 71), v = randomVariable([1, 2, 20, 3], seed: 72)
        let a = causalLinearAttention(queries: q, keys: k, values: v, decay: [1, 1], normalized: true, chunkSize: 6)
        let b = causalLinearAttention(queries: q, keys: k, values: v, decay: nil, normalized: true, chunkSize: 6)
        #expect(relativeError(a.value, b.value, floor: 1) <= 1e-6)
    }

    @Test(arguments: [false, true])
    func longSequenceWithDecayStaysFinite(normalized: Bool) throws {
        // The reference implementation's r^(−j) overflows fp32 for head 0 beyond N ≈ 700; the chunked form must not.
        let (B, H, N, F, Dh) = (1, 2, 65_536, 16, 8)
        let decay: [Float] = (0..<H).map { h in Float(1 / (1 + Foundation.exp(-(2 + 3 * Double(h) / Double(H))))) }
        let q = features([B, H, N, F], seed: 80), k = features([B, H, N, F], seed: 81)
        let v = randomVariable([B, H, N, Dh], seed: 82)
        let out = causalLinearAttention(queries: q, keys: k, values: v, decay: decay, normalized: normalized)
        var generator = RandomGenerator(seed: 83)
        let seed = Tensor.uniform(out.shape, low: -1, high: 1, generator: &generator)
        try out.backward(seed: seed)
        #expect(out.value.scalars.allSatisfy { $0.isFinite })
        for x in [q, k, v] { #expect(x.grad!.scalars.allSatisfy { $0.isFinite }) }
        // The last row equals a direct decayed sum over the last 3000 positions (older terms are below r^3000 ≈ 1e-39).
        let window = 3000
        for h in 0..<H {
            let r = Double(decay[h])
            var num = [Double](repeating: 0, count: Dh), den = 0.0
            let i = N - 1
            for j in (N - window)..<N {
                var s = 0.0
                for f in 0..<F { s += Double(q.value[flat: (h * N + i) * F + f]) * Double(k.value[flat: (h * N + j) * F + f]) }
                let w = Foundation.pow(r, Double(i - j)) * s
                den += w
                for c in 0..<Dh { num[c] += w * Double(v.value[flat: (h * N + j) * Dh + c]) }
            }
            for c in 0..<Dh {
                let expected = normalized ? num[c] / den : num[c]
                let got = Double(out.value[flat: (h * N + i) * Dh + c])
                #expect(abs(got - expected) <= 1e-4 * max(1, abs(expected)), "head \(h) column \(c): \(got) vs \(expected)")
            }
        }
    }

    @Test func parallelAndSequentialSlicesAgree() {
        // Many slices run over parallelFor with single-threaded BLAS; one slice at a time runs on the caller.
        let q = features([3, 2, 40, 8], seed: 90).value, k = features([3, 2, 40, 8], seed: 91).value
        let v = randomVariable([3, 2, 40, 5], seed: 92).value
        let all = withoutGradient {
            causalLinearAttention(queries: Variable(q), keys: Variable(k), values: Variable(v), decay: twoHeadDecay, normalized: true, chunkSize: 16).value
        }
        var generator = RandomGenerator(seed: 93)
        let mask = Tensor.bernoulli([3, 40], probability: 0.8, generator: &generator)
        let allBidirectional = withoutGradient {
            linearAttention(queries: Variable(q), keys: Variable(k), values: Variable(v), keyMask: mask).value
        }
        for b in 0..<3 {
            for h in 0..<2 {
                func one(_ x: Tensor) -> Variable { Variable(x.slice(axis: 0, b..<(b + 1)).slice(axis: 1, h..<(h + 1))) }
                let single = withoutGradient {
                    causalLinearAttention(queries: one(q), keys: one(k), values: one(v), decay: [twoHeadDecay[h]], normalized: true, chunkSize: 16).value
                }
                // Same arithmetic per slice; allow for OpenBLAS's threaded sgemm splitting work differently.
                #expect(relativeError(single, all.slice(axis: 0, b..<(b + 1)).slice(axis: 1, h..<(h + 1))) <= 1e-6)
                let maskRow = mask.slice(axis: 0, b..<(b + 1))
                let singleBidirectional = withoutGradient {
                    linearAttention(queries: one(q), keys: one(k), values: one(v), keyMask: maskRow).value
                }
                #expect(relativeError(singleBidirectional, allBidirectional.slice(axis: 0, b..<(b + 1)).slice(axis: 1, h..<(h + 1))) <= 1e-6)
            }
        }
    }

    @Test func invalidDecayIsRejected() async {
        await #expect(processExitsWith: .failure) {
            let x = Variable(Tensor(ones: [1, 2, 3, 4]))
            _ = causalLinearAttention(queries: x, keys: x, values: x, decay: [0.5, 1.5], normalized: true)
        }
    }
}
