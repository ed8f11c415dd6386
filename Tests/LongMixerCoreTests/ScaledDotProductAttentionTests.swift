import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerCore
@testable import LongMixerWideKernels

/// Fused softmax attention: the kernels against the naive O(N²) reference and against the unfused
/// composition of autodiff ops (matmul, bias, softmax, matmul), on lengths that are not multiples of
/// the row block, with and without key mask and causal masking, 1 and 2 threads, on every kernel path
/// (`AttentionKernelPath`: OpenBLAS row blocks, the flash order on 8 and on 16 lanes); the block GEMMs
/// against a naive loop; finite-difference gradient checks; padded rows; input checks.

private struct AttentionResult { var out: Tensor; var dq: Tensor; var dk: Tensor; var dv: Tensor }

private func sizes(_ q: Tensor, _ v: Tensor) -> AttentionSizes {
    AttentionSizes(batch: q.shape[0], heads: q.shape[1], length: q.shape[2], features: q.shape[3], valueDimensions: v.shape[3])
}

/// The naive reference's output and gradients for the upstream gradient `g`.
private func reference(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: Tensor?, causal: Bool, scale: Float, g: Tensor) -> AttentionResult {
    let s = sizes(q, v)
    var out = Tensor(zeros: v.shape), dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
    out.withUnsafeMutablePointer { o in
        scaledDotProductAttentionReferenceForward(out: o, q: q.pointer, k: k.pointer, v: v.pointer, keyMask: mask?.pointer,
                                                  causal: causal, scale: scale, sizes: s)
    }
    dq.withUnsafeMutablePointer { a in dk.withUnsafeMutablePointer { b in dv.withUnsafeMutablePointer { c in
        scaledDotProductAttentionReferenceBackward(dq: a, dk: b, dv: c, gradOut: g.pointer, q: q.pointer, k: k.pointer,
                                                   v: v.pointer, keyMask: mask?.pointer, causal: causal, scale: scale, sizes: s)
    } } }
    return AttentionResult(out: out, dq: dq, dk: dk, dv: dv)
}

/// The fused kernels called directly (so the row block can be forced small), output and gradients.
private func fusedKernels(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: Tensor?, causal: Bool, scale: Float, g: Tensor,
                          rowBlock: Int, wide: Bool = true, keyBlocks: Bool = true) -> AttentionResult {
    let s = sizes(q, v)
    var out = Tensor(zeros: v.shape), lse = Tensor(zeros: [s.batch, s.heads, s.length, 2])
    var dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
    out.withUnsafeMutablePointer { o in lse.withUnsafeMutablePointer { l in
        scaledDotProductAttentionForward(out: o, statistics: l, q: q.pointer, k: k.pointer, v: v.pointer, keyMask: mask?.pointer,
                                         causal: causal, scale: scale, sizes: s, rowBlock: rowBlock, allowWideKernels: wide,
                                         allowKeyBlocks: keyBlocks)
    } }
    dq.withUnsafeMutablePointer { a in dk.withUnsafeMutablePointer { b in dv.withUnsafeMutablePointer { c in
        scaledDotProductAttentionBackward(dq: a, dk: b, dv: c, gradOut: g.pointer, out: out.pointer, statistics: lse.pointer,
                                          q: q.pointer, k: k.pointer, v: v.pointer, keyMask: mask?.pointer, causal: causal,
                                          scale: scale, sizes: s, rowBlock: rowBlock, allowWideKernels: wide,
                                          allowKeyBlocks: keyBlocks)
    } } }
    return AttentionResult(out: out, dq: dq, dk: dk, dv: dv)
}

/// Output and input gradients of an op on Variables for the upstream gradient `g`.
private func throughAutodiff(_ q: Tensor, _ k: Tensor, _ v: Tensor, g: Tensor,
                             _ op: (Variable, Variable, Variable) -> Variable) -> AttentionResult {
    let qv = Variable(q, requiresGradient: true), kv = Variable(k, requiresGradient: true), vv = Variable(v, requiresGradient: true)
    let out = op(qv, kv, vv)
    try! out.backward(seed: g)
    return AttentionResult(out: out.value, dq: qv.grad!, dk: kv.grad!, dv: vv.grad!)
}

/// The unfused composition, as `SoftmaxAttention` without the fused kernel: scale·QKᵀ + (1 − m)(−10000)
/// [+ −∞ above the diagonal], softmax over keys, ·V.
private func unfused(_ q: Variable, _ k: Variable, _ v: Variable, mask: Tensor?, causal: Bool, scale: Float) -> Variable {
    let (b, n) = (q.shape[0], q.shape[2])
    var scores = matmul(q, k, transposeB: true) * scale
    if causal {
        var t = Tensor(zeros: [n, n])
        for i in 0..<n { for j in 0..<n where j > i { t[flat: i * n + j] = -.infinity } }
        scores = scores + Variable(t)
    }
    if let mask {
        let bias = Tensor(shape: [b, 1, 1, n], scalars: mask.scalars.map { (1 - $0) * attentionMaskedKeyBias })
        scores = scores + Variable(bias)
    }
    return matmul(softmax(scores, axis: -1), v)
}

private func random(_ shape: [Int], seed: UInt64, low: Float = -1, high: Float = 1) -> Tensor {
    var g = RandomGenerator(seed: seed)
    return Tensor.uniform(shape, low: low, high: high, generator: &g)
}

/// A [B, N] 0/1 mask keeping about 70 % of the keys (at least one per row).
private func randomMask(batch: Int, length: Int, seed: UInt64) -> Tensor {
    var g = RandomGenerator(seed: seed)
    var m = Tensor.bernoulli([batch, length], probability: 0.7, generator: &g)
    for b in 0..<batch { m[flat: b * length] = 1 }
    return m
}

@Suite("Scaled dot-product attention", .serialized)
struct ScaledDotProductAttentionTests {

    // MARK: Kernels against the reference and the unfused ops

    @Test(arguments: [1, 7, 50, 65, 130], [false, true])
    func kernelsMatchReferenceAndUnfused(length: Int, causal: Bool) {
        kernelsMatchReferenceAndUnfused(length: length, causal: causal, wide: false)
    }

    /// The same with the 16-lane rows (and for Dh 64 the 16-lane GEMM).
    @Test(requiresAVX512, arguments: [1, 7, 50, 65, 130], [false, true])
    func wideKernelsMatchReferenceAndUnfused(length: Int, causal: Bool) {
        kernelsMatchReferenceAndUnfused(length: length, causal: causal, wide: true)
    }

    /// Every path: `wide` false runs the OpenBLAS row blocks with 8-lane rows and, for head sizes of whole
    /// 8-lane vectors (8, 24, 64), the 8-lane flash order; `wide` true the row blocks with 16-lane rows and
    /// the 16-lane flash order (Dh 64) or the 8-lane one (Dh 8, 24). Dh 12: row blocks only.
    func kernelsMatchReferenceAndUnfused(length: Int, causal: Bool, wide: Bool) {
        for (batch, heads) in [(2, 2), (1, 1)] {            // (1, 1): one slice split over the threads' items
            for dh in [8, 12, 24, 64] {
                let scale = 1 / Float(dh).squareRoot()
                let shape = [batch, heads, length, dh]
                let q = random(shape, seed: 1, low: -2, high: 2), k = random(shape, seed: 2, low: -2, high: 2)
                let v = random(shape, seed: 3), g = random(shape, seed: 4)
                for mask in [nil, randomMask(batch: batch, length: length, seed: 5)] {
                    let ref = reference(q, k, v, mask: mask, causal: causal, scale: scale, g: g)
                    let composed = throughAutodiff(q, k, v, g: g) { unfused($0, $1, $2, mask: mask, causal: causal, scale: scale) }
                    withEachThreadCount { threads in
                        for rowBlock in [0, 16] { for keyBlocks in [false, true] {
                            let got = fusedKernels(q, k, v, mask: mask, causal: causal, scale: scale, g: g, rowBlock: rowBlock,
                                                   wide: wide, keyBlocks: keyBlocks)
                            let path = AttentionKernelPath(sizes(q, v), allowWideKernels: wide, allowKeyBlocks: keyBlocks)
                            let context = "B \(batch) H \(heads) N \(length) Dh \(dh) causal \(causal) mask \(mask != nil) threads \(threads) rows \(rowBlock == 0 ? "default" : "\(rowBlock)") path \(path)"
                            for (name, a, r, c) in [("out", got.out, ref.out, composed.out), ("dq", got.dq, ref.dq, composed.dq),
                                                    ("dk", got.dk, ref.dk, composed.dk), ("dv", got.dv, ref.dv, composed.dv)] {
                                #expect(relativeError(a, r, floor: 1) <= 1e-5, "\(name) vs reference, \(context)")
                                #expect(relativeError(a, c, floor: 1) <= 1e-5, "\(name) vs unfused, \(context)")
                            }
                        } }
                    }
                }
            }
        }
    }

    @Test func opEqualsTheKernels() {
        // The public op (default row blocks, via autodiff) against the reference, masked and causal.
        let shape = [2, 3, 37, 16]
        let q = random(shape, seed: 10), k = random(shape, seed: 11), v = random(shape, seed: 12), g = random(shape, seed: 13)
        let mask = randomMask(batch: 2, length: 37, seed: 14)
        for causal in [false, true] {
            let ref = reference(q, k, v, mask: mask, causal: causal, scale: 0.25, g: g)
            let got = throughAutodiff(q, k, v, g: g) {
                scaledDotProductAttention(queries: $0, keys: $1, values: $2, keyMask: mask, causal: causal, scale: 0.25)
            }
            #expect(relativeError(got.out, ref.out, floor: 1) <= 1e-5)
            #expect(relativeError(got.dq, ref.dq, floor: 1) <= 1e-5)
            #expect(relativeError(got.dk, ref.dk, floor: 1) <= 1e-5)
            #expect(relativeError(got.dv, ref.dv, floor: 1) <= 1e-5)
        }
    }

    @Test func deterministicForAThreadCount() {
        // Two runs with 2 threads (slices split into items, dK/dV partials) give identical bits.
        let shape = [1, 1, 200, 8]
        let q = random(shape, seed: 20), k = random(shape, seed: 21), v = random(shape, seed: 22), g = random(shape, seed: 23)
        withEachThreadCount([2]) { _ in
            let a = fusedKernels(q, k, v, mask: nil, causal: false, scale: 0.3, g: g, rowBlock: 16)
            let b = fusedKernels(q, k, v, mask: nil, causal: false, scale: 0.3, g: g, rowBlock: 16)
            #expect(a.out.scalars == b.out.scalars && a.dq.scalars == b.dq.scalars)
            #expect(a.dk.scalars == b.dk.scalars && a.dv.scalars == b.dv.scalars)
        }
    }

    @Test func wholeMaskedKeyBlocks() {
        // Padded keys 16..<48 in batch row 0 and 1..<64 in batch row 1: whole 16-key blocks and (most of) a
        // default 64-key block. Key 0 stays, so no row is all padded (fullyPaddedRowMatchesTheUnfusedPath covers
        // those). Lengths 70 and 140 (partial last blocks); Dh 64 (the 16-lane key-blocked backward on an AVX-512
        // CPU) and 16 (OpenBLAS); causal and not; forced 16-row blocks and the default; 1 and 2 threads.
        for (length, dh) in [(70, 64), (140, 64), (70, 16)] {
            let shape = [2, 2, length, dh]
            let q = random(shape, seed: 70, low: -2, high: 2), k = random(shape, seed: 71, low: -2, high: 2)
            let v = random(shape, seed: 72), g = random(shape, seed: 73)
            var mask = Tensor(repeating: 1, shape: [2, length])
            for j in 16..<48 { mask[flat: j] = 0 }
            for j in 1..<64 { mask[flat: length + j] = 0 }
            let scale: Float = 0.125
            for causal in [false, true] {
                let ref = reference(q, k, v, mask: mask, causal: causal, scale: scale, g: g)
                withEachThreadCount { threads in
                    for rowBlock in [0, 16] {
                        let got = fusedKernels(q, k, v, mask: mask, causal: causal, scale: scale, g: g, rowBlock: rowBlock)
                        let context = "N \(length) Dh \(dh) causal \(causal) threads \(threads) rows \(rowBlock)"
                        #expect(relativeError(got.out, ref.out, floor: 1) <= 1e-5, "out, \(context)")
                        #expect(relativeError(got.dq, ref.dq, floor: 1) <= 1e-5, "dq, \(context)")
                        #expect(relativeError(got.dk, ref.dk, floor: 1) <= 1e-5, "dk, \(context)")
                        #expect(relativeError(got.dv, ref.dv, floor: 1) <= 1e-5, "dv, \(context)")
                    }
                }
            }
        }
    }

    @Test func blockedBackwardDeterministicForAThreadCount() {
        // Dh 64: the key-blocked backward (16-lane on an AVX-512 CPU); one slice over 2 threads (dQ partials), causal
        // and not; two runs give identical bits.
        let shape = [1, 1, 300, 64]
        let q = random(shape, seed: 80), k = random(shape, seed: 81), v = random(shape, seed: 82), g = random(shape, seed: 83)
        withEachThreadCount([2]) { _ in
            for causal in [false, true] {
                let a = fusedKernels(q, k, v, mask: nil, causal: causal, scale: 0.125, g: g, rowBlock: 0)
                let b = fusedKernels(q, k, v, mask: nil, causal: causal, scale: 0.125, g: g, rowBlock: 0)
                #expect(a.out.scalars == b.out.scalars && a.dq.scalars == b.dq.scalars)
                #expect(a.dk.scalars == b.dk.scalars && a.dv.scalars == b.dv.scalars)
                let ref = reference(q, k, v, mask: nil, causal: causal, scale: 0.125, g: g)
                #expect(relativeError(a.dq, ref.dq, floor: 1) <= 1e-5 && relativeError(a.dk, ref.dk, floor: 1) <= 1e-5 && relativeError(a.dv, ref.dv, floor: 1) <= 1e-5)
            }
        }
    }

    @Test(requiresAVX512) func wideGemmMatchesNaive() {
        blockGemmMatchesNaive(shapes: [(13, 50, 5), (8, 32, 64), (1, 7, 3), (17, 97, 130)], WideAttentionBlockKernels.gemm)
    }

    @Test func avx2GemmMatchesNaive() {
        // Every row tail of the 6-row tile (m % 6 = 0…5), an 8-column tile, < 8 scalar columns.
        blockGemmMatchesNaive(shapes: [(13, 50, 5), (8, 32, 64), (1, 7, 3), (17, 97, 130), (6, 16, 1), (4, 24, 9), (9, 40, 2),
                                       (29, 61, 33)], AVX2AttentionBlockKernels.gemm)
    }

    /// A block GEMM (`AttentionBlockKernels.gemm`'s arguments) on shapes with every tail, A plain and
    /// transposed (the two strides), overwrite and accumulate, against a double loop; and each element gets the
    /// same bits when the columns are cut differently (the last 5 alone, all but the first 16), which the
    /// key-blocked backward's recomputed scores rely on.
    func blockGemmMatchesNaive(shapes: [(Int, Int, Int)],
                               _ gemm: (Int, Int, Int, Float, UnsafePointer<Float>, Int, Int, UnsafePointer<Float>, Int, Bool,
                                        UnsafeMutablePointer<Float>, Int) -> Void) {
        for (m, n, k) in shapes {
            for transposeA in [false, true] {
                for accumulate in [false, true] {
                    let lda = transposeA ? m + 3 : k + 2, ldb = n + 1, ldc = n + 5
                    let a = random([transposeA ? k * lda : m * lda], seed: 60).scalars
                    let b = random([k * ldb], seed: 61).scalars
                    let c0 = random([m * ldc], seed: 62).scalars
                    var expected = c0
                    for i in 0..<m { for j in 0..<n {
                        var s = 0.0
                        for p in 0..<k { s += Double(transposeA ? a[p * lda + i] : a[i * lda + p]) * Double(b[p * ldb + j]) }
                        expected[i * ldc + j] = Float((accumulate ? Double(c0[i * ldc + j]) : 0) + 0.5 * s)
                    } }
                    /// C after the GEMM over columns `columns` only.
                    func run(_ columns: Range<Int>) -> [Float] {
                        var c = c0
                        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                            gemm(m, columns.count, k, 0.5, ap.baseAddress!, transposeA ? 1 : lda, transposeA ? lda : 1,
                                 bp.baseAddress! + columns.lowerBound, ldb, accumulate, cp.baseAddress! + columns.lowerBound, ldc)
                        } } }
                        return c
                    }
                    let c = run(0..<n)
                    let context = "m \(m) n \(n) k \(k) transposeA \(transposeA) accumulate \(accumulate)"
                    expectClose(Tensor(shape: [m * ldc], scalars: c), Tensor(shape: [m * ldc], scalars: expected),
                                tolerance: 1e-5 * Float(k), floor: 1, context)
                    for columns in [max(0, n - 5)..<n, min(n, 16)..<n] {
                        let part = run(columns)
                        let same = (0..<m).allSatisfy { i in columns.allSatisfy { part[i * ldc + $0] == c[i * ldc + $0] } }
                        #expect(same, "columns \(columns) alone differ from the full product, \(context)")
                    }
                }
            }
        }
    }

    // MARK: Gradient checks

    /// F 4, Dv 3: the OpenBLAS row blocks; F = Dv = 8: the 8-lane flash order (also on AVX-512 CPUs).
    @Test(arguments: [false, true], [false, true])
    func gradients(masked: Bool, causal: Bool) {
        for (f, dv) in [(4, 3), (8, 8)] {
            let q = randomVariable([2, 2, 6, f], seed: 30), k = randomVariable([2, 2, 6, f], seed: 31)
            let v = randomVariable([2, 2, 6, dv], seed: 32)
            let mask = masked ? Tensor(shape: [2, 6], scalars: [1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0]) : nil
            expectGradients([q, k, v]) {
                scaledDotProductAttention(queries: $0[0], keys: $0[1], values: $0[2], keyMask: mask, causal: causal, scale: 0.7)
            }
        }
    }

    // MARK: Padding

    @Test func fullyPaddedRowMatchesTheUnfusedPath() {
        // Batch row 1 has every key padded: each score gets −10000, so the row is the softmax of the shifted
        // scores (finite, not NaN, not zero), exactly as the unfused path. Scale 1/8 (Dh = 64) is exact, so
        // both paths round the same shifted scores.
        let (B, H, N, Dh) = (2, 2, 21, 64)
        let shape = [B, H, N, Dh]
        let q = random(shape, seed: 40), k = random(shape, seed: 41), v = random(shape, seed: 42), g = random(shape, seed: 43)
        var mask = Tensor(repeating: 1, shape: [B, N])
        for j in 0..<N { mask[flat: N + j] = 0 }
        mask[flat: 3] = 0
        let scale: Float = 0.125
        let fused = throughAutodiff(q, k, v, g: g) {
            scaledDotProductAttention(queries: $0, keys: $1, values: $2, keyMask: mask, scale: scale)
        }
        let composed = throughAutodiff(q, k, v, g: g) { unfused($0, $1, $2, mask: mask, causal: false, scale: scale) }
        #expect(fused.out.scalars.allSatisfy { $0.isFinite })
        #expect(relativeError(fused.out, composed.out, floor: 1) <= 1e-5)
        #expect(relativeError(fused.dq, composed.dq, floor: 1) <= 1e-5)
        #expect(relativeError(fused.dk, composed.dk, floor: 1) <= 1e-5)
        #expect(relativeError(fused.dv, composed.dv, floor: 1) <= 1e-5)
    }

    // MARK: Input checks

    @Test func badInputsStopWithAMessage() async {
        let r1 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let x = Variable(Tensor(zeros: [2, 3, 4]))
            _ = scaledDotProductAttention(queries: x, keys: x, values: x, scale: 1)
        }
        #expect(stderrText(r1).contains("scaledDotProductAttention: queries must be [B, H, N, F], got shape [2, 3, 4]"))
        let r2 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let q = Variable(Tensor(zeros: [1, 2, 5, 4])), k = Variable(Tensor(zeros: [1, 2, 6, 4]))
            _ = scaledDotProductAttention(queries: q, keys: k, values: q, scale: 1)
        }
        #expect(stderrText(r2).contains("scaledDotProductAttention: keys shape [1, 2, 6, 4] ≠ queries shape [1, 2, 5, 4]"))
        let r3 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let q = Variable(Tensor(zeros: [1, 2, 5, 4])), v = Variable(Tensor(zeros: [1, 2, 4, 4]))
            _ = scaledDotProductAttention(queries: q, keys: q, values: v, scale: 1)
        }
        #expect(stderrText(r3).contains("scaledDotProductAttention: values must be [B, H, N, Dv] with B, H, N of the queries [1, 2, 5, 4], got [1, 2, 4, 4]"))
        let r4 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let q = Variable(Tensor(zeros: [1, 2, 5, 4]))
            _ = scaledDotProductAttention(queries: q, keys: q, values: q, keyMask: Tensor(zeros: [1, 4]), scale: 1)
        }
        #expect(stderrText(r4).contains("scaledDotProductAttention: keyMask must be [B, N] = [1, 5], got [1, 4]"))
    }
}

/// The standard error of an exit test's child process ("" if the exit test did not run).
private func stderrText(_ result: ExitTest.Result?) -> String {
    String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
}
