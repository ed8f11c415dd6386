import LongMixerWideKernels

// The micro-kernels of the fused softmax attention's flash order (ScaledDotProductAttentionKernels.swift):
// one algorithm (`scaledDotProductAttentionForwardKeyBlocks`, `…BackwardKeyBlocks`), generic over a set of
// block GEMM and softmax-row kernels of one vector width: 16 lanes on AVX-512 CPUs (LongMixerWideKernels),
// 8 lanes on AVX2 + FMA (here).
//
// Why an own GEMM on AVX2 too: the attention's block products (64–256 rows × 64–128 keys × Dh 64) are
// small, and every operand of a block pair is in L1/L2. OpenBLAS packs both operands on every call, and
// its row-block alternative repacks all of K and V and writes an R×N score scratch (2 MB at N = 4096) for
// every 128 query rows, streaming them through L3. A register tile straight from the operands needs no
// packing; the A operand is addressed through two strides, so Aᵀ·B needs no transposed copy either.

/// The block products and row operations the flash-order attention runs on, at one vector width.
protocol AttentionBlockKernels {
    /// C[i·ldc + j] = alpha·Σ_p A(i, p)·B[p·ldb + j] (+ C[i·ldc + j] when `accumulate`), for i < m, j < n,
    /// p < k, where A(i, p) = a[i·aRow + p·aK]. Single-threaded. Every element is alpha·(fused
    /// multiply-adds over p = 0..<k in order, from 0), wherever it falls in the tiles: the backward
    /// recomputes the forward's scores in other key blocks and must get the same bits.
    static func gemm(m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, aRow: Int, aK: Int,
                     b: UnsafePointer<Float>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int)

    /// One query row of one key block in the online softmax: x[j] += bias[j], m' = max(m, max_j x[j]) over
    /// j < n, x[j] = exp(x[j] − m') (x[n..<width] = 0), sum = sum·exp(m − m') + Σ_j x[j], m = m'. Returns
    /// exp(m − m'), the factor for the row's output so far (1 when the max did not move).
    static func onlineSoftmaxRow(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, n: Int, width: Int,
                                 max m: inout Float, sum: inout Float) -> Float

    /// x[j] = exp(x[j] + bias[j] − max)·inverseSum for j < n: the backward's recomputed probabilities, with
    /// the score and bias rounded as in `onlineSoftmaxRow`.
    static func probabilitiesRow(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, max m: Float,
                                 inverseSum inv: Float, n: Int)

    /// x[j] *= factor for j < n.
    static func scaleRow(_ x: UnsafeMutablePointer<Float>, _ factor: Float, n: Int)
}

/// The 16-lane kernels of LongMixerWideKernels (8×32 GEMM tiles); only after `CPUFeatures.avx512`.
enum WideAttentionBlockKernels: AttentionBlockKernels {
    static func gemm(m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, aRow: Int, aK: Int,
                     b: UnsafePointer<Float>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) {
        WideKernels.gemm(m: m, n: n, k: k, alpha: alpha, a: a, aRow: aRow, aK: aK, b: b, ldb: ldb,
                         accumulate: accumulate, c: c, ldc: ldc)
    }

    static func onlineSoftmaxRow(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, n: Int, width: Int,
                                 max m: inout Float, sum: inout Float) -> Float {
        WideKernels.attentionOnlineSoftmaxRow(x, bias: bias, n: n, width: width, max: &m, sum: &sum)
    }

    static func probabilitiesRow(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, max m: Float,
                                 inverseSum inv: Float, n: Int) {
        WideKernels.attentionProbabilitiesRow(x, bias: bias, max: m, inverseSum: inv, n: n)
    }

    static func scaleRow(_ x: UnsafeMutablePointer<Float>, _ factor: Float, n: Int) {
        WideKernels.scaleRow(x, factor, n: n)
    }
}

/// The 8-lane (AVX2 + FMA) kernels: a 6×16 register-tiled GEMM and the rows of `softmaxRowInPlace`'s family.
enum AVX2AttentionBlockKernels: AttentionBlockKernels {
    /// Register tile: 6 rows × 16 columns, 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm
    /// registers; per k step 2 B loads and 6 broadcasts feed 12 FMAs. Columns outer, rows inner: a k×16
    /// panel of B stays in L1 while every row tile uses it. Tails: the last 1–5 rows in one 6×16 tile whose
    /// extra rows repeat the last row (computed, not stored: narrower tiles are load-bound and cost about as
    /// much); 4×8 and 1×8 tiles for 8 more columns; scalar fused multiply-adds (same order) for the last < 8.
    static func gemm(m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, aRow: Int, aK: Int,
                     b: UnsafePointer<Float>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m <= 0 || n <= 0 { return }
        var j = 0
        while j + 16 <= n {
            var i = 0
            while i < m {
                tile6x16(rows: min(6, m - i), k: k, alpha: alpha, a: a + i * aRow, aRow: aRow, aK: aK, b: b + j, ldb: ldb,
                         accumulate: accumulate, c: c + i * ldc + j, ldc: ldc)
                i += 6
            }
            j += 16
        }
        if j + 8 <= n {
            var i = 0
            while i + 4 <= m {
                tile4x8(k: k, alpha: alpha, a: a + i * aRow, aRow: aRow, aK: aK, b: b + j, ldb: ldb,
                        accumulate: accumulate, c: c + i * ldc + j, ldc: ldc)
                i += 4
            }
            while i < m {
                tile1x8(k: k, alpha: alpha, a: a + i * aRow, aK: aK, b: b + j, ldb: ldb, accumulate: accumulate, c: c + i * ldc + j)
                i += 1
            }
            j += 8
        }
        if j < n {
            for i in 0..<m {
                for jj in j..<n {
                    var s: Float = 0
                    for p in 0..<k { s = multiplyAdd(a[i * aRow + p * aK], b[p * ldb + jj], s) }
                    let r = alpha * s
                    c[i * ldc + jj] = accumulate ? c[i * ldc + jj] + r : r
                }
            }
        }
    }

    /// a·b + c, rounded as one lane of `VectorMath.multiplyAdd` (fused unless LONGMIXER_NO_FMA).
    @_transparent
    static func multiplyAdd(_ a: Float, _ b: Float, _ c: Float) -> Float {
        #if LONGMIXER_NO_FMA
        return a * b + c
        #else
        return c.addingProduct(a, b)
        #endif
    }

    @inline(__always)
    static func finish(_ v: Float8, _ alpha: Float8, _ accumulate: Bool, _ c: UnsafeMutablePointer<Float>, _ j: Int) {
        c.store8(accumulate ? c.load8(j) + alpha * v : alpha * v, j)
    }

    /// The 6×16 tile on its first `rows` (1...6) rows: A rows past the last are read as the last one.
    @inline(__always)
    static func tile6x16(rows: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, aRow: Int, aK: Int,
                         b: UnsafePointer<Float>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) {
        var c00 = Float8(), c01 = Float8(), c10 = Float8(), c11 = Float8(), c20 = Float8(), c21 = Float8()
        var c30 = Float8(), c31 = Float8(), c40 = Float8(), c41 = Float8(), c50 = Float8(), c51 = Float8()
        var ap = a, bp = b
        let last = rows - 1
        let r1 = min(1, last) * aRow, r2 = min(2, last) * aRow, r3 = min(3, last) * aRow
        let r4 = min(4, last) * aRow, r5 = min(5, last) * aRow
        for _ in 0..<k {
            let b0 = bp.load8(0), b1 = bp.load8(8)
            var x = Float8(repeating: ap[0]); c00 = VectorMath.multiplyAdd(x, b0, c00); c01 = VectorMath.multiplyAdd(x, b1, c01)
            x = Float8(repeating: ap[r1]); c10 = VectorMath.multiplyAdd(x, b0, c10); c11 = VectorMath.multiplyAdd(x, b1, c11)
            x = Float8(repeating: ap[r2]); c20 = VectorMath.multiplyAdd(x, b0, c20); c21 = VectorMath.multiplyAdd(x, b1, c21)
            x = Float8(repeating: ap[r3]); c30 = VectorMath.multiplyAdd(x, b0, c30); c31 = VectorMath.multiplyAdd(x, b1, c31)
            x = Float8(repeating: ap[r4]); c40 = VectorMath.multiplyAdd(x, b0, c40); c41 = VectorMath.multiplyAdd(x, b1, c41)
            x = Float8(repeating: ap[r5]); c50 = VectorMath.multiplyAdd(x, b0, c50); c51 = VectorMath.multiplyAdd(x, b1, c51)
            ap += aK; bp += ldb
        }
        let al = Float8(repeating: alpha)
        finish(c00, al, accumulate, c, 0); finish(c01, al, accumulate, c, 8)
        if rows > 1 { finish(c10, al, accumulate, c + ldc, 0); finish(c11, al, accumulate, c + ldc, 8) }
        if rows > 2 { finish(c20, al, accumulate, c + 2 * ldc, 0); finish(c21, al, accumulate, c + 2 * ldc, 8) }
        if rows > 3 { finish(c30, al, accumulate, c + 3 * ldc, 0); finish(c31, al, accumulate, c + 3 * ldc, 8) }
        if rows > 4 { finish(c40, al, accumulate, c + 4 * ldc, 0); finish(c41, al, accumulate, c + 4 * ldc, 8) }
        if rows > 5 { finish(c50, al, accumulate, c + 5 * ldc, 0); finish(c51, al, accumulate, c + 5 * ldc, 8) }
    }

    @inline(__always)
    static func tile4x8(k: Int, alpha: Float, a: UnsafePointer<Float>, aRow: Int, aK: Int,
                        b: UnsafePointer<Float>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) {
        var c0 = Float8(), c1 = Float8(), c2 = Float8(), c3 = Float8()
        var ap = a, bp = b
        let r1 = aRow, r2 = 2 * aRow, r3 = 3 * aRow
        for _ in 0..<k {
            let b0 = bp.load8(0)
            c0 = VectorMath.multiplyAdd(Float8(repeating: ap[0]), b0, c0)
            c1 = VectorMath.multiplyAdd(Float8(repeating: ap[r1]), b0, c1)
            c2 = VectorMath.multiplyAdd(Float8(repeating: ap[r2]), b0, c2)
            c3 = VectorMath.multiplyAdd(Float8(repeating: ap[r3]), b0, c3)
            ap += aK; bp += ldb
        }
        let al = Float8(repeating: alpha)
        finish(c0, al, accumulate, c, 0); finish(c1, al, accumulate, c + ldc, 0)
        finish(c2, al, accumulate, c + 2 * ldc, 0); finish(c3, al, accumulate, c + 3 * ldc, 0)
    }

    @inline(__always)
    static func tile1x8(k: Int, alpha: Float, a: UnsafePointer<Float>, aK: Int, b: UnsafePointer<Float>, ldb: Int,
                        accumulate: Bool, c: UnsafeMutablePointer<Float>) {
        var c0 = Float8()
        var ap = a, bp = b
        for _ in 0..<k {
            c0 = VectorMath.multiplyAdd(Float8(repeating: ap[0]), bp.load8(0), c0)
            ap += aK; bp += ldb
        }
        finish(c0, Float8(repeating: alpha), accumulate, c, 0)
    }

    static func onlineSoftmaxRow(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, n: Int, width: Int,
                                 max m: inout Float, sum: inout Float) -> Float {
        if n <= 0 {
            if width > 0 { x.update(repeating: 0, count: width) }
            return 1
        }
        let newMax = Swift.max(m, addBiasAndMax(x, bias, n))
        let factor = newMax == m ? Float(1) : VectorMath.expNonPositive(Float8(repeating: m - newMax))[0]
        let s = exponentiateRowSum(x, from: x, max: newMax, n)
        if n < width { (x + n).update(repeating: 0, count: width - n) }
        sum = sum * factor + s
        m = newMax
        return factor
    }

    static func probabilitiesRow(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, max m: Float,
                                 inverseSum inv: Float, n: Int) {
        probabilitiesFromStatistics(x, bias: bias, max: m, inverseSum: inv, n)
    }

    static func scaleRow(_ x: UnsafeMutablePointer<Float>, _ factor: Float, n: Int) {
        let f = Float8(repeating: factor)
        var j = 0
        while j + 8 <= n { x.store8(x.load8(j) * f, j); j += 8 }
        while j < n { x[j] *= factor; j += 1 }
    }
}
