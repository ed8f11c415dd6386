import Testing
import LongMixerTestSupport
@testable import LongMixerCore
import LongMixerWideKernels

/// `BLAS.rowSplitGemm`/`rowReducedGemm` (and so `linear`) against double-accumulated references, on
/// shapes that are not multiples of the 16-row/16-column (AVX-512) or 6-row/16-column (AVX2) tiles: the
/// skinny kernels of this CPU, or OpenBLAS under LONGMIXER_GEMM=openblas. Closeness holds on every path; bitwise independence of the thread count
/// only where `BLAS.usesSkinnyGemm` (OpenBLAS's own threading changes the summation order).
@Suite("Skinny GEMM")
struct SkinnyGemmTests {
    /// (n, k) pairs from {1, 7, 14, 32, 33, 64, 65, 100, 128}: every size on both sides, the Paramixer shapes (14/32, and
    /// H 128), the 8-lane kernels' widths past the 16-lane ones' 64.
    static let sides: [(n: Int, k: Int)] = [(1, 1), (1, 64), (64, 1), (7, 14), (14, 7), (14, 32), (32, 14), (32, 32),
                                             (33, 7), (7, 33), (33, 33), (64, 64), (64, 14), (1, 33), (128, 32), (9, 128),
                                             (65, 100), (128, 128)]

    static func uniform(_ count: Int, seed: UInt64) -> [Float] {
        var g = RandomGenerator(seed: seed)
        return Tensor.uniform([count], low: -1, high: 1, generator: &g).scalars
    }

    /// |c − reference| ≤ tolerance·Σ|terms| + 1e-6 for every element.
    static func expectClose(_ c: [Float], _ reference: [Double], _ magnitude: [Double], tolerance: Double,
                            _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        var worst = 0.0, at = -1
        for i in c.indices {
            let excess = abs(Double(c[i]) - reference[i]) - (tolerance * magnitude[i] + 1e-6)
            if !(excess <= worst) { worst = excess.isNaN ? .infinity : excess; at = i }
        }
        #expect(at < 0, "\(what): element \(at) is \(at >= 0 ? c[at] : 0), reference \(at >= 0 ? reference[at] : 0)",
                sourceLocation: sourceLocation)
    }

    @Test func kernelsAreTakenUnlessOpenBLASIsForced() {
        #expect(BLAS.usesSkinnyGemm(m: 327_680, n: 14, k: 32) == (BLAS.gemmBackend != .openblas))
        #expect(BLAS.usesSkinnyGemm(m: 327_680, n: 128, k: 32) == (BLAS.gemmBackend != .openblas && !CPUFeatures.avx512))
        #expect(!BLAS.usesSkinnyGemm(m: 327_680, n: 65, k: 32) || !CPUFeatures.avx512)
        #expect(!BLAS.usesSkinnyGemm(m: 327_680, n: 129, k: 32))
        #expect(!BLAS.usesSkinnyGemm(m: 10, n: 32, k: 32))
        if CPUFeatures.avx512 { #expect(BLAS.skinnyGemmMaxSide == SkinnyGemm.maxSide) }
    }

    @Test(arguments: [69, 2085])
    func productWithAndWithoutBias(m: Int) {
        for (n, k) in Self.sides {
            let a = Self.uniform(m * k, seed: UInt64(m * 1000 + n * 70 + k))
            let w = Self.uniform(n * k, seed: UInt64(n * 70 + k + 1))                      // [n, k]
            let wt = (0..<(k * n)).map { w[($0 % n) * k + $0 / n] }                         // [k, n] = Wᵀ
            let bias = Self.uniform(n, seed: UInt64(n + 5))
            var reference = [Double](repeating: 0, count: m * n), magnitude = reference
            a.withUnsafeBufferPointer { ap in
                w.withUnsafeBufferPointer { wp in
                    for i in 0..<m {
                        for j in 0..<n {
                            var s = 0.0, t = 0.0
                            for p in 0..<k { let x = Double(ap[i * k + p]) * Double(wp[j * k + p]); s += x; t += abs(x) }
                            reference[i * n + j] = s; magnitude[i * n + j] = t
                        }
                    }
                }
            }
            let withBias = zip(reference, (0..<(m * n)).map { Double(bias[$0 % n]) }).map { $0 + $1 }
            let biasMagnitude = zip(magnitude, (0..<(m * n)).map { abs(Double(bias[$0 % n])) }).map { $0 + $1 }
            for transposeB in [true, false] {
                for useBias in [false, true] {
                    var results: [[Float]] = []
                    withEachThreadCount { _ in
                        var c = [Float](repeating: .nan, count: m * n)
                        a.withUnsafeBufferPointer { ap in
                            (transposeB ? w : wt).withUnsafeBufferPointer { bp in
                                bias.withUnsafeBufferPointer { biasp in
                                    c.withUnsafeMutableBufferPointer { cp in
                                        BLAS.rowSplitGemm(transposeB: transposeB, m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!,
                                                          bias: useBias ? biasp.baseAddress! : nil, c: cp.baseAddress!)
                                    }
                                }
                            }
                        }
                        results.append(c)
                    }
                    let what = "m \(m) n \(n) k \(k) transposeB \(transposeB) bias \(useBias)"
                    Self.expectClose(results[0], useBias ? withBias : reference, useBias ? biasMagnitude : magnitude,
                                     tolerance: 1e-5, what)
                    if BLAS.usesSkinnyGemm(m: m, n: n, k: k) {
                        #expect(results[0].map(\.bitPattern) == results[1].map(\.bitPattern), "\(what): 1 and 2 threads differ")
                    }
                }
            }
        }
    }

    @Test(arguments: [69, 2085, 2 * 4096 + 123])
    func reductionAndColumnSums(m: Int) {
        // The long case crosses the fixed 4096-row partials; it runs the Paramixer shapes and the odd ones.
        let sides = m > 4096 ? [(14, 32), (32, 32), (33, 7), (1, 64), (64, 64), (128, 32)] : Self.sides
        for (n, k) in sides {
            let a = Self.uniform(m * n, seed: UInt64(m * 1000 + n * 70 + k + 3))   // dY [m, n]
            let b = Self.uniform(m * k, seed: UInt64(m * 1000 + n * 70 + k + 4))   // X [m, k]
            var reference = [Double](repeating: 0, count: n * k), magnitude = reference
            var sums = [Double](repeating: 0, count: n), sumMagnitude = sums
            a.withUnsafeBufferPointer { ap in
                b.withUnsafeBufferPointer { bp in
                    reference.withUnsafeMutableBufferPointer { rp in
                        magnitude.withUnsafeMutableBufferPointer { mp in
                            for i in 0..<m {
                                for j in 0..<n {
                                    let x = Double(ap[i * n + j])
                                    sums[j] += x; sumMagnitude[j] += abs(x)
                                    for p in 0..<k { let t = x * Double(bp[i * k + p]); rp[j * k + p] += t; mp[j * k + p] += abs(t) }
                                }
                            }
                        }
                    }
                }
            }
            var products: [[Float]] = [], columnSums: [[Float]] = []
            withEachThreadCount { _ in
                var c = [Float](repeating: .nan, count: n * k), s = [Float](repeating: .nan, count: n)
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        c.withUnsafeMutableBufferPointer { cp in
                            s.withUnsafeMutableBufferPointer { sp in
                                BLAS.rowReducedGemm(m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!, c: cp.baseAddress!,
                                                    columnSumsOfA: sp.baseAddress!)
                            }
                        }
                    }
                }
                products.append(c); columnSums.append(s)
            }
            let what = "m \(m) n \(n) k \(k)"
            Self.expectClose(products[0], reference, magnitude, tolerance: 2e-5, what + " Aᵀ·B")
            Self.expectClose(columnSums[0], sums, sumMagnitude, tolerance: 2e-5, what + " column sums")
            if BLAS.usesSkinnyGemm(m: m, n: n, k: k) {
                #expect(products[0].map(\.bitPattern) == products[1].map(\.bitPattern), "\(what): Aᵀ·B differs between 1 and 2 threads")
                #expect(columnSums[0].map(\.bitPattern) == columnSums[1].map(\.bitPattern), "\(what): sums differ between 1 and 2 threads")
            }
        }
    }

    @Test func linearGradientsOnTheSkinnyPath() {
        // 2·40 = 80 rows (≥ skinnyGemmMinimumRows), 14 → 7 features: the fused bias gradient, tails everywhere.
        #expect(BLAS.usesSkinnyGemm(m: 80, n: 7, k: 14) == (BLAS.gemmBackend != .openblas))
        let x = randomVariable([2, 40, 14], seed: 31), w = randomVariable([7, 14], seed: 32), b = randomVariable([7], seed: 33)
        expectGradients([x, w, b]) { linear($0[0], weight: $0[1], bias: $0[2]) }
        expectGradients([x, w]) { linear($0[0], weight: $0[1], bias: nil) }
        // A bias gradient without a weight gradient takes the separate sum.
        let frozen = Variable(w.value)
        expectGradients([x, b]) { linear($0[0], weight: frozen, bias: $0[1]) }
    }

    @Test(requiresAVX512) func geluBackwardWideMatchesAVX2() {
        // Every 1/64 in [−12, 12] (both saturations, the erfc tail), plus special values; a count that
        // is not a multiple of 16 or 32 for the tails.
        var xs = stride(from: Float(-12), through: 12, by: 1.0 / 64).map { $0 }
        xs += [0, -0, .infinity, -.infinity, .nan, 1e-30, -1e-30, 88, -88, 1e4, -1e4]
        let count = xs.count
        let gs = Self.uniform(count, seed: 77).enumerated().map { $0.offset == 5 ? 0 : $0.element * 3 }
        var narrow = [Float](repeating: 0, count: count), wide = [Float](repeating: .nan, count: count)
        xs.withUnsafeBufferPointer { xp in
            gs.withUnsafeBufferPointer { gp in
                narrow.withUnsafeMutableBufferPointer { np in
                    mapBackwardReference(GELUFunction.self, gradIn: np.baseAddress!, x: xp.baseAddress!, y: xp.baseAddress!,
                                         gradOut: gp.baseAddress!, count: count)
                }
                wide.withUnsafeMutableBufferPointer { wp in
                    WideKernels.geluBackward(gradIn: wp.baseAddress!, x: xp.baseAddress!, gradOut: gp.baseAddress!, range: 0..<count)
                }
            }
        }
        // The same operations: equal values.
        for i in 0..<count where !(wide[i] == narrow[i] || (wide[i].isNaN && narrow[i].isNaN)) {
            Issue.record("x \(xs[i]) g \(gs[i]): wide \(wide[i]) AVX2 \(narrow[i])")
        }
    }

    @Test func geluBackwardThroughTheOpEqualsTheScalarForm() {
        // Whichever kernel the CPU takes (16 lanes on AVX-512, 8 otherwise), split over 2 threads.
        withEachThreadCount([2]) { _ in
            let n = 3 * elementwiseGrain + 5
            var g = RandomGenerator(seed: 78)
            let x = Variable(.uniform([n], low: -6, high: 6, generator: &g), requiresGradient: true)
            let seed = Tensor.uniform([n], low: -1, high: 1, generator: &g)
            try! gelu(x).backward(seed: seed)
            var expected = [Float](repeating: 0, count: n)
            mapBackwardReference(GELUFunction.self, gradIn: &expected, x: x.value.pointer, y: x.value.pointer, gradOut: seed.pointer, count: n)
            #expect(x.grad!.scalars == expected)
        }
    }
}
