import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerCore
@testable import LongMixerWideKernels

/// The packed AVX-512 SGEMM (LongMixerWideKernels.PackedGemm, driven by `BLAS.packedGemm`) and `BLAS.gemm`
/// end to end against a naive double-accumulated reference: all transpose combinations, sizes around the
/// register tile (12×32) and cache blocks (K 512, M 144, N 512), padded leading dimensions, alpha and beta
/// (beta = 0 must overwrite a C full of NaN). Correctness only; speed is `longmixer bench core`.
@Suite("Packed AVX-512 GEMM matches a reference", .serialized)
struct PackedGemmTests {
    struct Case: CustomStringConvertible {
        var transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int
        var alpha: Float, beta: Float
        var pad = 0   // extra elements per row of A, B and C (leading dimensions larger than the widths)
        var description: String {
            "\(transposeA ? "Aᵀ" : "A")·\(transposeB ? "Bᵀ" : "B") m \(m) n \(n) k \(k) alpha \(alpha) beta \(beta) pad \(pad)"
        }
    }

    struct Operands {
        var a: [Float], b: [Float], c: [Float]
        var lda: Int, ldb: Int, ldc: Int
    }

    static func operands(_ t: Case, seed: UInt64) -> Operands {
        var g = RandomGenerator(seed: seed)
        let lda = (t.transposeA ? t.m : t.k) + t.pad, ldb = (t.transposeB ? t.k : t.n) + t.pad, ldc = t.n + t.pad
        let aRows = t.transposeA ? t.k : t.m, bRows = t.transposeB ? t.n : t.k
        let a = (0..<(aRows * lda)).map { _ in 2 * g.nextUniform() - 1 }
        let b = (0..<(bRows * ldb)).map { _ in 2 * g.nextUniform() - 1 }
        // beta = 0: C starts as NaN and must be overwritten, never read.
        let c: [Float] = t.beta == 0 ? Array(repeating: .nan, count: t.m * ldc) : (0..<(t.m * ldc)).map { _ in 2 * g.nextUniform() - 1 }
        return Operands(a: a, b: b, c: c, lda: lda, ldb: ldb, ldc: ldc)
    }

    /// alpha·op(A)·op(B) + beta·C in Double (entries of C past n keep their values), and for each element
    /// the scale of its terms, |alpha|·Σ|a·b| + |beta·c|. (Unsafe pointers: the tests are built unoptimised.)
    static func reference(_ t: Case, _ o: Operands) -> (value: [Float], scale: [Double]) {
        var out = o.c, scale = [Double](repeating: 0, count: o.c.count)
        o.a.withUnsafeBufferPointer { a in
            o.b.withUnsafeBufferPointer { b in
                for i in 0..<t.m {
                    for j in 0..<t.n {
                        var s = 0.0, sa = 0.0
                        for p in 0..<t.k {
                            let prod = Double(t.transposeA ? a[p * o.lda + i] : a[i * o.lda + p])
                                * Double(t.transposeB ? b[j * o.ldb + p] : b[p * o.ldb + j])
                            s += prod; sa += abs(prod)
                        }
                        let prior = t.beta == 0 ? 0 : Double(t.beta) * Double(o.c[i * o.ldc + j])
                        out[i * o.ldc + j] = Float(Double(t.alpha) * s + prior)
                        scale[i * o.ldc + j] = abs(Double(t.alpha)) * sa + abs(prior)
                    }
                }
            }
        }
        return (out, scale)
    }

    /// Every element's error relative to its scale (at least 1e-3) must be ≤ 1e-5·√k; padding must be
    /// untouched. Returns a description of the first failure, or nil.
    static func compare(_ got: [Float], _ want: (value: [Float], scale: [Double]), _ t: Case, _ o: Operands) -> String? {
        let tolerance = 1e-5 * Double(max(1, t.k)).squareRoot() + 1e-6
        for i in 0..<t.m {
            for j in 0..<(t.n + t.pad) {
                let idx = i * o.ldc + j
                if j >= t.n {
                    if got[idx].bitPattern != want.value[idx].bitPattern { return "padding at (\(i), \(j)) changed" }
                    continue
                }
                let err = Double(abs(got[idx] - want.value[idx])) / max(want.scale[idx], 1e-3)
                if !(err <= tolerance) {
                    return "(\(i), \(j)): got \(got[idx]), want \(want.value[idx]), relative error \(err) > \(tolerance)"
                }
            }
        }
        return nil
    }

    /// The packed kernel directly, split into `threads` pieces.
    static func runPacked(_ t: Case, _ o: Operands, threads: Int) -> [Float] {
        var c = o.c
        o.a.withUnsafeBufferPointer { ap in
            o.b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    BLAS.packedGemm(transposeA: t.transposeA, transposeB: t.transposeB, m: t.m, n: t.n, k: t.k,
                                    alpha: t.alpha, a: ap.baseAddress!, lda: o.lda, b: bp.baseAddress!, ldb: o.ldb,
                                    beta: t.beta, c: cp.baseAddress!, ldc: o.ldc, threads: threads)
                }
            }
        }
        return c
    }

    static let sizes = [1, 2, 7, 13, 31, 32, 33, 64, 100, 257]

    /// Shapes around tiles and blocks: every m, n from `sizes` with a few k, plus larger ones (k over two 512
    /// blocks, m over two 144-row blocks, n over two 512-column blocks).
    static var shapes: [(Int, Int, Int)] {
        var s: [(Int, Int, Int)] = []
        for m in sizes { for n in sizes { s.append((m, n, [1, 13, 64][(m + n) % 3])) } }
        for k in sizes { s.append((13, 33, k)) }
        s += [(150, 40, 1100), (145, 1030, 37), (7, 513, 1025), (289, 33, 600), (1, 1, 2000), (150, 530, 100)]
        return s
    }

    @Test(requiresAVX512)
    func packedKernelMatchesReference() {
        var checked = 0
        for (index, (m, n, k)) in Self.shapes.enumerated() {
            for flags in 0..<4 {
                let alpha: Float = index % 2 == 0 ? 1 : -0.5
                let beta: Float = [0, 1, 0.3][(index + flags) % 3]
                let t = Case(transposeA: flags & 1 != 0, transposeB: flags & 2 != 0, m: m, n: n, k: k,
                             alpha: alpha, beta: beta, pad: (index + flags) % 4 == 1 ? 3 : 0)
                let o = Self.operands(t, seed: UInt64(index * 4 + flags))
                let want = Self.reference(t, o)
                let one = Self.runPacked(t, o, threads: 1)
                if let e = Self.compare(one, want, t, o) { Issue.record("\(t), 1 piece: \(e)"); return }
                // The split changes nothing, bit for bit.
                for threads in [2, 3] {
                    let split = Self.runPacked(t, o, threads: threads)
                    #expect(split.map(\.bitPattern) == one.map(\.bitPattern), "\(t): \(threads) pieces differ from 1")
                }
                checked += 1
            }
        }
        #expect(checked == Self.shapes.count * 4)
    }

    @Test(requiresAVX512)
    func packedKernelOnEveryAlphaBetaAndTransposeOfOneShape() {
        for flags in 0..<4 {
            for alpha: Float in [1, -0.5] {
                for beta: Float in [0, 1, 0.3] {
                    let t = Case(transposeA: flags & 1 != 0, transposeB: flags & 2 != 0, m: 40, n: 70, k: 1037,
                                 alpha: alpha, beta: beta, pad: 5)
                    let o = Self.operands(t, seed: 99)
                    if let e = Self.compare(Self.runPacked(t, o, threads: 2), Self.reference(t, o), t, o) {
                        Issue.record("\(t): \(e)")
                    }
                }
            }
        }
    }

    @Test(requiresAVX512)
    func packedKernelWithZeroDepthScalesC() {
        for beta: Float in [0, 1, 0.3] {
            let t = Case(transposeA: false, transposeB: false, m: 5, n: 9, k: 0, alpha: 1, beta: beta)
            let o = Self.operands(t, seed: 7)
            let got = Self.runPacked(t, o, threads: 1)
            #expect(got == o.c.map { beta == 0 ? 0 : beta * $0 }, "k = 0, beta \(beta)")
        }
    }

    /// `BLAS.gemm` (packed or OpenBLAS, whichever it picks) with 1 and 2 threads, also inside
    /// `withSingleThread` (a parallelFor worker's view), on shapes below and above the packed threshold.
    @Test func blasGemmMatchesReference() {
        let shapes = [(1, 1, 1), (7, 13, 33), (31, 64, 100), (64, 64, 64), (257, 100, 64), (100, 257, 200),
                      (300, 520, 33), (145, 64, 1030)]
        withEachThreadCount { threads in
            for (index, (m, n, k)) in shapes.enumerated() {
                for flags in 0..<4 {
                    let beta: Float = [0, 1, 0.3][(index + flags) % 3]
                    let t = Case(transposeA: flags & 1 != 0, transposeB: flags & 2 != 0, m: m, n: n, k: k,
                                 alpha: index % 2 == 0 ? 1 : -0.5, beta: beta)
                    let o = Self.operands(t, seed: UInt64(1000 + index * 4 + flags))
                    let want = Self.reference(t, o)
                    for single in [false, true] {
                        var c = o.c
                        o.a.withUnsafeBufferPointer { ap in
                            o.b.withUnsafeBufferPointer { bp in
                                c.withUnsafeMutableBufferPointer { cp in
                                    let (pa, pb, pc) = (ap.baseAddress!, bp.baseAddress!, cp.baseAddress!)
                                    let call = {
                                        BLAS.gemm(transposeA: t.transposeA, transposeB: t.transposeB, m: m, n: n, k: k,
                                                  alpha: t.alpha, a: pa, b: pb, beta: t.beta, c: pc)
                                    }
                                    if single { BLAS.withSingleThread(call) } else { call() }
                                }
                            }
                        }
                        if let e = Self.compare(c, want, t, o) {
                            Issue.record("BLAS.gemm \(t), \(threads) threads\(single ? " (single-thread scope)" : ""): \(e)")
                        }
                    }
                }
            }
        }
    }

    @Test func packedPathIsTakenForLargeProductsOnAVX512() {
        #expect(BLAS.usesPackedGemm(m: 4096, n: 512, k: 512) == BLAS.packedGemmAvailable)
        if BLAS.gemmBackend == .auto { #expect(!BLAS.usesPackedGemm(m: 2, n: 2, k: 2)) }
    }

    /// Matmul results are bit-identical for 1 and 2 threads when the packed kernel runs (the split never
    /// changes an element's operations).
    @Test(requiresAVX512)
    func packedMatmulIsIndependentOfThreadCount() {
        let saved = Parallel.threadCount
        defer { Parallel.setThreadCount(saved) }
        var g = RandomGenerator(seed: 5)
        let a = Tensor.uniform([300, 700], low: -1, high: 1, generator: &g)
        let b = Tensor.uniform([700, 260], low: -1, high: 1, generator: &g)
        Parallel.setThreadCount(1)
        let one = Tensor.matmul(a, b)
        Parallel.setThreadCount(2)
        let two = Tensor.matmul(a, b)
        #expect(one.scalars.map(\.bitPattern) == two.scalars.map(\.bitPattern))
    }
}
