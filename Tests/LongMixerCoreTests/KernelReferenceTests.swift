import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerCore
@testable import LongMixerWideKernels

/// Every optimised kernel against its plain reference implementation, on odd sizes (SIMD tails,
/// rows narrower than a vector) and on sizes large enough to be split over threads, with 1 and 2
/// threads. Correctness only: performance is measured by `longmixer bench core`, never by tests.
@Suite("Optimised kernels match their plain references", .serialized)
struct KernelReferenceTests {
    /// Element counts: tails of the 8- and 32-wide loops, and > 2 · elementwiseGrain (multi-threaded, uneven pieces).
    static let counts = [1, 7, 8, 9, 31, 33, 1000, 2 * elementwiseGrain + 13]
    /// (rows, n) for row kernels: n below, at and above a vector, odd widths, and enough rows to be split.
    static let rowShapes = [(1, 1), (3, 7), (5, 8), (4, 17), (9, 33), (2, 1025), (2049, 37), (70, 1024)]

    func randomArray(_ count: Int, seed: UInt64, low: Float = -4, high: Float = 4) -> [Float] {
        var g = RandomGenerator(seed: seed)
        return (0..<count).map { _ in low + (high - low) * g.nextUniform() }
    }

    /// max |a − b| / max(|b|, floor)
    func worstError(_ a: [Float], _ b: [Float], floor: Float = 1e-3) -> Float {
        precondition(a.count == b.count)
        var worst: Float = 0
        for i in a.indices {
            let e = abs(a[i] - b[i]) / max(abs(b[i]), floor)
            if e.isNaN || e > worst { worst = e.isNaN ? .infinity : e }
        }
        return worst
    }

    // MARK: Elementwise

    @Test func addMatchesReference() {
        withEachThreadCount { t in
            for n in Self.counts {
                let a = randomArray(n, seed: 1), b = randomArray(n, seed: 2)
                var out = [Float](repeating: .nan, count: n)
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        out.withUnsafeMutableBufferPointer { op in
                            broadcastBinaryKernel(AddFunction.self, out: op.baseAddress!, outShape: [n],
                                                  a: ap.baseAddress!, aShape: [n], b: bp.baseAddress!, bShape: [n])
                        }
                    }
                }
                let ref = broadcastBinaryReference(+, outShape: [n], a: a, aShape: [n], b: b, bShape: [n])
                #expect(out == ref, "add, n = \(n), \(t) threads")
            }
        }
    }

    @Test func broadcastAddMatchesReference() {
        withEachThreadCount { t in
            for (rows, n) in Self.rowShapes {
                let a = randomArray(rows * n, seed: 3), b = randomArray(n, seed: 4)
                var out = [Float](repeating: .nan, count: rows * n)
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        out.withUnsafeMutableBufferPointer { op in
                            broadcastBinaryKernel(AddFunction.self, out: op.baseAddress!, outShape: [rows, n],
                                                  a: ap.baseAddress!, aShape: [rows, n], b: bp.baseAddress!, bShape: [n])
                        }
                    }
                }
                let ref = broadcastBinaryReference(+, outShape: [rows, n], a: a, aShape: [rows, n], b: b, bShape: [n])
                #expect(out == ref, "bias add, [\(rows), \(n)], \(t) threads")
            }
        }
    }

    @Test func geluKernelMatchesScalarPathAndDoublePrecision() {
        withEachThreadCount { t in
            for n in Self.counts {
                // Wide range: both tails, the centre, and the underflow region of the erfc tail.
                let x = randomArray(n, seed: 5, low: -14, high: 9)
                var out = [Float](repeating: .nan, count: n), scalar = out
                x.withUnsafeBufferPointer { xp in
                    out.withUnsafeMutableBufferPointer { mapKernel(GELUFunction.self, out: $0.baseAddress!, x: xp.baseAddress!, count: n) }
                    scalar.withUnsafeMutableBufferPointer { mapReference(GELUFunction.self, out: $0.baseAddress!, x: xp.baseAddress!, count: n) }
                }
                // The vector loop and the scalar form are the same arithmetic: identical results.
                #expect(out == scalar, "GELU kernel vs its scalar form, n = \(n), \(t) threads")
                // Absolute bound, as torch's float GELU (the rational Φ is not relatively accurate in the tail).
                var worst: Double = 0
                for i in 0..<n {
                    let xd = Double(x[i]), ref = 0.5 * xd * Foundation.erfc(-xd / 2.0.squareRoot())
                    worst = max(worst, abs(Double(out[i]) - ref) / (2e-7 * max(1, abs(xd)) + 1e-7))
                }
                #expect(worst <= 1, "GELU vs double-precision erfc, n = \(n), \(t) threads: error / bound = \(worst)")
            }
        }
    }

    @Test func geluBackwardMatchesReference() {
        withEachThreadCount { t in
            for n in Self.counts {
                let x = randomArray(n, seed: 6, low: -9, high: 9), dy = randomArray(n, seed: 7)
                let start = randomArray(n, seed: 8)
                var dx = start, ref = start
                x.withUnsafeBufferPointer { xp in
                    dy.withUnsafeBufferPointer { gp in
                        dx.withUnsafeMutableBufferPointer {
                            mapBackwardKernel(GELUFunction.self, gradIn: $0.baseAddress!, x: xp.baseAddress!, y: xp.baseAddress!,
                                              gradOut: gp.baseAddress!, count: n)
                        }
                        ref.withUnsafeMutableBufferPointer {
                            mapBackwardReference(GELUFunction.self, gradIn: $0.baseAddress!, x: xp.baseAddress!, y: xp.baseAddress!,
                                                 gradOut: gp.baseAddress!, count: n)
                        }
                    }
                }
                #expect(dx == ref, "GELU backward, n = \(n), \(t) threads")
                // And the derivative itself against double precision: Φ(x) + x·φ(x).
                var worst: Double = 0
                for i in 0..<n {
                    let xd = Double(x[i])
                    let d = 0.5 * Foundation.erfc(-xd / 2.0.squareRoot()) + xd * Foundation.exp(-xd * xd / 2) / (2 * Double.pi).squareRoot()
                    let expected = Double(dy[i]) * d   // overwritten, not added to `start`
                    worst = max(worst, abs(Double(dx[i]) - expected) / max(abs(expected), 1))
                }
                #expect(worst < 4e-6, "GELU' vs double precision, n = \(n), \(t) threads: \(worst)")
            }
        }
    }

    @Test func expKernelAccuracyAndSpecialValues() {
        var worst: Double = 0
        var x: Float = -87
        while x < 88 {
            let v = Double(VectorMath.exp(x)), ref = Foundation.exp(Double(x))
            worst = max(worst, abs(v - ref) / ref)
            x += 0.0137
        }
        #expect(worst < 5e-7, "exp max relative error \(worst)")
        #expect(VectorMath.exp(-200) == 0)
        #expect(VectorMath.exp(200) == .infinity)
        #expect(VectorMath.exp(-Float.infinity) == 0)
        #expect(VectorMath.exp(Float.infinity) == .infinity)
        #expect(VectorMath.exp(Float.nan).isNaN)
        // expNonPositive is exp without the overflow handling: identical wherever it applies.
        var y: Float = -100
        while y <= 0 {
            let v = Float8(repeating: y)
            #expect(VectorMath.expNonPositive(v) == VectorMath.exp(v), "expNonPositive(\(y))")
            y += 0.0371
        }
        #expect(VectorMath.expNonPositive(Float8(repeating: .nan))[0].isNaN)
        #expect(VectorMath.expNonPositive(Float8(repeating: -.infinity))[0] == 0)
    }

    @Test(requiresAVX512) func wideExpIsTheSameComputation() {
        // The 16-lane exp of the AVX-512 kernels equals the 8-lane one bit for bit.
        var z: Float = -100
        while z <= 0 {
            let narrow = VectorMath.expNonPositive(Float8(repeating: z))[0]
            #expect(WideKernels.expNonPositive(SIMD16(repeating: z))[0] == narrow, "wide exp(\(z))")
            z += 0.0371
        }
    }

    @Test func geluDerivativeKeepsItsAccuracyThroughTheSaturations() {
        // Φ from the rational fit is saturated beyond |x| = 5.25, x·φ(x) is not: both tails and the
        // switch points stay within the absolute bound.
        var worst: Double = 0, worstAt: Float = 0
        var x: Float = -12
        while x < 12 {
            let xd = Double(x)
            let dRef = 0.5 * Foundation.erfc(-xd / 2.0.squareRoot()) + xd * Foundation.exp(-xd * xd / 2) / (2 * Double.pi).squareRoot()
            let error = abs(Double(GELUFunction.apply(x: x, y: 0, gradient: 1)) - dRef)
            if error > worst { worst = error; worstAt = x }
            x += 0.00731
        }
        for x: Float in [5.25, 5.2501, -5.25, -5.2501] {
            let xd = Double(x)
            let dRef = 0.5 * Foundation.erfc(-xd / 2.0.squareRoot()) + xd * Foundation.exp(-xd * xd / 2) / (2 * Double.pi).squareRoot()
            worst = max(worst, abs(Double(GELUFunction.apply(x: x, y: 0, gradient: 1)) - dRef))
        }
        #expect(worst < 3e-7, "GELU' absolute error \(worst) at x = \(worstAt)")
        #expect(GELUFunction.apply(x: .nan, y: 0, gradient: 1).isNaN)
    }

    @Test func geluForwardStaysWithinItsBoundOnAStridedSweep() {
        // Every 4099th float bit pattern in [−10, 10] (≈ 5.3e5 values; the exhaustive sweep of
        // [−5.3, 5.3] was run offline): |GELU − x·Φ(x)| ≤ 2e-7·max(1, |x|) + 1e-7.
        var worst: Double = 0, worstAt: Float = 0
        for sign: UInt32 in [0, 0x8000_0000] {
            var bits: UInt32 = 0
            let end = Float(10).bitPattern
            while bits <= end {
                let x = Float(bitPattern: bits | sign), xd = Double(x)
                let ref = 0.5 * xd * Foundation.erfc(-xd / 2.0.squareRoot())
                let ratio = abs(Double(VectorMath.gelu(Float8(repeating: x))[0]) - ref) / (2e-7 * max(1, abs(xd)) + 1e-7)
                if ratio > worst { worst = ratio; worstAt = x }
                bits &+= 4099   // odd stride: covers all exponents and varied mantissas
            }
        }
        #expect(worst <= 1, "GELU error / bound = \(worst) at x = \(worstAt)")
    }

    // MARK: Row kernels

    @Test func softmaxForwardAndBackwardMatchReference() {
        withEachThreadCount { t in
            for (rows, n) in Self.rowShapes {
                let x = randomArray(rows * n, seed: 9, low: -30, high: 30), dy = randomArray(rows * n, seed: 10)
                var y = [Float](repeating: .nan, count: rows * n), yRef = y
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { softmaxForward(y: $0.baseAddress!, x: xp.baseAddress!, rows: rows, n: n) }
                    yRef.withUnsafeMutableBufferPointer { softmaxForwardReference(y: $0.baseAddress!, x: xp.baseAddress!, rows: rows, n: n) }
                }
                let err = worstError(y, yRef, floor: 1e-6)
                #expect(err < 2e-5, "softmax [\(rows), \(n)], \(t) threads: \(err)")

                let start = randomArray(rows * n, seed: 11)
                var dx = start, dxRef = start
                yRef.withUnsafeBufferPointer { yp in
                    dy.withUnsafeBufferPointer { gp in
                        dx.withUnsafeMutableBufferPointer {
                            softmaxBackward(dx: $0.baseAddress!, y: yp.baseAddress!, dy: gp.baseAddress!, rows: rows, n: n)
                        }
                        dxRef.withUnsafeMutableBufferPointer {
                            softmaxBackwardReference(dx: $0.baseAddress!, y: yp.baseAddress!, dy: gp.baseAddress!, rows: rows, n: n)
                        }
                    }
                }
                let errB = worstError(dx, dxRef, floor: 1)
                #expect(errB < 1e-5, "softmax backward [\(rows), \(n)], \(t) threads: \(errB)")
            }
        }
    }

    @Test func softmaxSpecialRows() {
        // −∞ entries get probability 0; a row with a NaN is all NaN (as before the optimisation).
        let x: [Float] = [0, -.infinity, 1, 2, -.infinity, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, -1000]
        var y = [Float](repeating: .nan, count: x.count)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { softmaxForward(y: $0.baseAddress!, x: xp.baseAddress!, rows: 1, n: x.count) } }
        #expect(y[1] == 0 && y[4] == 0 && y[17] == 0)
        #expect(abs(y.reduce(0, +) - 1) < 1e-6)
        var z = x
        z[5] = .nan
        z.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { softmaxForward(y: $0.baseAddress!, x: xp.baseAddress!, rows: 1, n: x.count) } }
        #expect(y.allSatisfy { $0.isNaN })
    }

    typealias RowKernel = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Range<Int>, Int) -> Void

    @Test("the AVX2 softmax row kernel matches the reference, tails and special rows included")
    func softmaxRowsAVX2MatchReference() {
        softmaxRowKernelMatchesReference([("AVX2", { softmaxRowsAVX2(y: $0, x: $1, rows: $2, n: $3) })])
    }

    @Test("the AVX-512 softmax row kernel matches the reference, tails and special rows included", requiresAVX512)
    func softmaxRowsAVX512MatchReference() {
        softmaxRowKernelMatchesReference([("AVX-512", { WideKernels.softmaxRows(y: $0, x: $1, rows: $2, n: $3) })])
    }

    func softmaxRowKernelMatchesReference(_ paths: [(String, RowKernel)]) {
        let shapes = [(1, 1), (3, 15), (3, 16), (4, 17), (2, 31), (3, 32), (5, 63), (4, 64), (3, 65), (3, 100), (6, 1000), (2, 1024)]
        for (name, kernel) in paths {
            for (rows, n) in shapes {
                var x = randomArray(rows * n, seed: 21, low: -40, high: 40)
                if n >= 3 {
                    x[n + 1] = -.infinity          // row 1: a masked entry → probability 0
                    x[2 * n - 1] = -200            // row 1: underflows → 0
                }
                var y = [Float](repeating: .nan, count: rows * n), yRef = y
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { kernel($0.baseAddress!, xp.baseAddress!, 0..<rows, n) }
                    yRef.withUnsafeMutableBufferPointer { softmaxForwardReference(y: $0.baseAddress!, x: xp.baseAddress!, rows: rows, n: n) }
                }
                #expect(worstError(y, yRef, floor: 1e-6) < 2e-5, "\(name) softmax [\(rows), \(n)]")
                if n >= 3 { #expect(y[n + 1] == 0 && y[2 * n - 1] == 0, "\(name) [\(rows), \(n)]: masked entries") }
                // A sub-range of rows touches only those rows (the next-row max must stop at the range).
                if rows >= 3 {
                    var part = [Float](repeating: 7, count: rows * n)
                    x.withUnsafeBufferPointer { xp in part.withUnsafeMutableBufferPointer { kernel($0.baseAddress!, xp.baseAddress!, 1..<2, n) } }
                    #expect(part[..<n].allSatisfy { $0 == 7 } && part[(2 * n)...].allSatisfy { $0 == 7 }, "\(name) [\(rows), \(n)]: rows outside the range")
                    #expect(worstError(Array(part[n..<(2 * n)]), Array(yRef[n..<(2 * n)]), floor: 1e-6) < 2e-5, "\(name) [\(rows), \(n)]: one row")
                }
                // A NaN makes its row NaN and leaves the next row alone.
                if rows >= 2 {
                    var z = x
                    z[n / 2] = .nan
                    z.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { kernel($0.baseAddress!, xp.baseAddress!, 0..<rows, n) } }
                    #expect(y[..<n].allSatisfy { $0.isNaN }, "\(name) [\(rows), \(n)]: NaN row")
                    #expect(worstError(Array(y[n...]), Array(yRef[n...]), floor: 1e-6) < 2e-5, "\(name) [\(rows), \(n)]: rows after a NaN row")
                }
            }
        }
    }

    @Test func logSoftmaxMatchesReference() {
        withEachThreadCount { t in
            for (rows, n) in Self.rowShapes {
                let x = randomArray(rows * n, seed: 12, low: -30, high: 30), dy = randomArray(rows * n, seed: 13)
                var y = [Float](repeating: .nan, count: rows * n), yRef = y
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { logSoftmaxForward(y: $0.baseAddress!, x: xp.baseAddress!, rows: rows, n: n) }
                    yRef.withUnsafeMutableBufferPointer { logSoftmaxForwardReference(y: $0.baseAddress!, x: xp.baseAddress!, rows: rows, n: n) }
                }
                #expect(worstError(y, yRef, floor: 1) < 1e-5, "log-softmax [\(rows), \(n)], \(t) threads")
                var dx = [Float](repeating: 0, count: rows * n), dxRef = dx
                yRef.withUnsafeBufferPointer { yp in
                    dy.withUnsafeBufferPointer { gp in
                        dx.withUnsafeMutableBufferPointer { logSoftmaxBackward(dx: $0.baseAddress!, y: yp.baseAddress!, dy: gp.baseAddress!, rows: rows, n: n) }
                        dxRef.withUnsafeMutableBufferPointer {
                            logSoftmaxBackwardReference(dx: $0.baseAddress!, y: yp.baseAddress!, dy: gp.baseAddress!, rows: rows, n: n)
                        }
                    }
                }
                #expect(worstError(dx, dxRef, floor: 1) < 1e-4, "log-softmax backward [\(rows), \(n)], \(t) threads")
            }
        }
    }

    @Test func layerNormForwardAndBackwardMatchReference() {
        withEachThreadCount { t in
            for (rows, n) in Self.rowShapes {
                // An offset mean checks the two-pass variance.
                let x = randomArray(rows * n, seed: 14, low: 95, high: 105), dy = randomArray(rows * n, seed: 15)
                let gamma = randomArray(n, seed: 16, low: 0.5, high: 1.5), beta = randomArray(n, seed: 17)
                var y = [Float](repeating: .nan, count: rows * n), yRef = y
                var mean = [Float](repeating: .nan, count: rows), rstd = mean, meanRef = mean, rstdRef = mean
                x.withUnsafeBufferPointer { xp in
                    gamma.withUnsafeBufferPointer { gp in
                        beta.withUnsafeBufferPointer { bp in
                            y.withUnsafeMutableBufferPointer { yp in
                                mean.withUnsafeMutableBufferPointer { mp in
                                    rstd.withUnsafeMutableBufferPointer { rp in
                                        layerNormForward(y: yp.baseAddress!, mean: mp.baseAddress!, rstd: rp.baseAddress!, x: xp.baseAddress!,
                                                         gamma: gp.baseAddress!, beta: bp.baseAddress!, rows: rows, n: n, epsilon: 1e-5)
                                    }
                                }
                            }
                            yRef.withUnsafeMutableBufferPointer { yp in
                                meanRef.withUnsafeMutableBufferPointer { mp in
                                    rstdRef.withUnsafeMutableBufferPointer { rp in
                                        layerNormForwardReference(y: yp.baseAddress!, mean: mp.baseAddress!, rstd: rp.baseAddress!, x: xp.baseAddress!,
                                                                  gamma: gp.baseAddress!, beta: bp.baseAddress!, rows: rows, n: n, epsilon: 1e-5)
                                    }
                                }
                            }
                        }
                    }
                }
                // n = 1: x − μ = 0 exactly, so y = β in both.
                #expect(worstError(y, yRef, floor: 1) < 5e-4, "layer norm y [\(rows), \(n)], \(t) threads: \(worstError(y, yRef, floor: 1))")
                #expect(worstError(mean, meanRef) < 1e-6, "layer norm mean [\(rows), \(n)], \(t) threads")
                #expect(worstError(rstd, rstdRef) < 5e-4, "layer norm rstd [\(rows), \(n)], \(t) threads")

                // Backward from the reference statistics, accumulating into non-zero buffers.
                var dx = randomArray(rows * n, seed: 18), dxRef = dx
                var dg = randomArray(n, seed: 19), db = randomArray(n, seed: 20), dgRef = dg, dbRef = db
                x.withUnsafeBufferPointer { xp in
                    gamma.withUnsafeBufferPointer { gp in
                        dy.withUnsafeBufferPointer { yp in
                            meanRef.withUnsafeBufferPointer { mp in
                                rstdRef.withUnsafeBufferPointer { rp in
                                    dx.withUnsafeMutableBufferPointer { d in
                                        dg.withUnsafeMutableBufferPointer { g in
                                            db.withUnsafeMutableBufferPointer { b in
                                                layerNormBackward(dx: d.baseAddress!, dGamma: g.baseAddress!, dBeta: b.baseAddress!, x: xp.baseAddress!,
                                                                  mean: mp.baseAddress!, rstd: rp.baseAddress!, gamma: gp.baseAddress!,
                                                                  dy: yp.baseAddress!, rows: rows, n: n)
                                            }
                                        }
                                    }
                                    dxRef.withUnsafeMutableBufferPointer { d in
                                        dgRef.withUnsafeMutableBufferPointer { g in
                                            dbRef.withUnsafeMutableBufferPointer { b in
                                                layerNormBackwardReference(dx: d.baseAddress!, dGamma: g.baseAddress!, dBeta: b.baseAddress!,
                                                                           x: xp.baseAddress!, mean: mp.baseAddress!, rstd: rp.baseAddress!,
                                                                           gamma: gp.baseAddress!, dy: yp.baseAddress!, rows: rows, n: n)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                #expect(worstError(dx, dxRef, floor: 1) < 2e-3, "layer norm dx [\(rows), \(n)], \(t) threads: \(worstError(dx, dxRef, floor: 1))")
                // dγ, dβ sum `rows` terms of size ~4 in float: scale the error by the typical size of such a sum.
                let sumScale = 4 * Float(rows).squareRoot()
                #expect(worstError(dg, dgRef, floor: sumScale) < 1e-4, "layer norm dγ [\(rows), \(n)], \(t) threads: \(worstError(dg, dgRef, floor: sumScale))")
                #expect(worstError(db, dbRef, floor: sumScale) < 1e-4, "layer norm dβ [\(rows), \(n)], \(t) threads: \(worstError(db, dbRef, floor: sumScale))")
            }
        }
    }

    @Test func sumAxisMatchesReference() {
        withEachThreadCount { t in
            for (outer, n, inner) in [(1, 1, 1), (3, 7, 1), (5, 33, 1), (2049, 37, 1), (1, 9, 13), (7, 5, 17), (1, 300, 1001), (3, 1025, 9)] {
                let x = randomArray(outer * n * inner, seed: 21)
                var out = [Float](repeating: .nan, count: outer * inner), ref = out
                x.withUnsafeBufferPointer { xp in
                    out.withUnsafeMutableBufferPointer { sumAxisKernel(out: $0.baseAddress!, x: xp.baseAddress!, outer: outer, n: n, inner: inner) }
                    ref.withUnsafeMutableBufferPointer { sumAxisReference(out: $0.baseAddress!, x: xp.baseAddress!, outer: outer, n: n, inner: inner) }
                }
                #expect(worstError(out, ref, floor: 1) < 1e-5 * Float(n).squareRoot(), "sum [\(outer), \(n), \(inner)], \(t) threads")
            }
        }
    }

    // MARK: Threading

    @Test func parallelForCoversEveryIndexOnce() {
        withEachThreadCount { t in
            for (count, grain) in [(0, 1), (1, 1), (7, 1), (100, 3), (1000, 1), (100_003, 1 << 15), (1 << 16, 1 << 15)] {
                let hits = UnsafeMutablePointer<Int32>.allocate(capacity: max(count, 1))
                hits.initialize(repeating: 0, count: max(count, 1))
                defer { hits.deallocate() }
                parallelFor(count, grain: grain) { r in for i in r { hits[i] += 1 } }
                #expect((0..<count).allSatisfy { hits[$0] == 1 }, "count \(count), grain \(grain), \(t) threads")
            }
        }
    }
}
