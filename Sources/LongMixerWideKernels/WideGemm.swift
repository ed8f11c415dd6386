// A small single-threaded GEMM on 16-lane vectors, for the fused softmax attention's block products
// (LongMixerCore/Kernels/ScaledDotProductAttentionKernels.swift). Same rules as WideKernels.swift: only
// called after `CPUFeatures.avx512`, nothing @inlinable.
//
// Why not OpenBLAS: the project benchmarks OpenBLAS with its Haswell (AVX2) kernels, and the attention
// GEMMs (head size 64, thousands of keys) are most of a Transformer training step. On the AVX-512
// development machine (full-width 512-bit FMA units) 16-lane FMAs do twice the work per instruction,
// and these shapes need no packing: every operand is either small enough for L1/L2 or streamed once
// (OpenBLAS repacks all of K and V for every row block, ~10 % of the step).
//
// Register tile: 8 rows × 32 columns (16 accumulators, 2 B loads and 8 broadcasts per k step). The
// A operand is addressed through two strides, so one kernel serves A·B (aRow = lda, aK = 1) and Aᵀ·B
// (aRow = 1, aK = lda) without a transposed copy.

extension WideKernels {
    /// C[i·ldc + j] = alpha·Σ_p A(i, p)·B[p·ldb + j] (+ C[i·ldc + j] when `accumulate`), for i < m, j < n,
    /// p < k, where A(i, p) = a[i·aRow + p·aK]. Single-threaded; any sizes (fast when n ≥ 32, m ≥ 8).
    /// Every element is alpha·(fused multiply-adds over p = 0..<k in order, from 0), whatever its tile.
    public static func gemm(m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, aRow: Int, aK: Int,
                            b: UnsafePointer<Float>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m <= 0 || n <= 0 { return }
        var j = 0
        // Columns outer, rows inner: a k×32 panel of B stays in L1 while every row tile uses it.
        while j + 32 <= n {
            var i = 0
            while i + 8 <= m {
                tile8x32(k: k, alpha: alpha, a: a + i * aRow, aRow: aRow, aK: aK, b: b + j, ldb: ldb,
                         accumulate: accumulate, c: c + i * ldc + j, ldc: ldc)
                i += 8
            }
            while i < m {
                tile1x32(k: k, alpha: alpha, a: a + i * aRow, aK: aK, b: b + j, ldb: ldb,
                         accumulate: accumulate, c: c + i * ldc + j)
                i += 1
            }
            j += 32
        }
        if j + 16 <= n {
            for i in 0..<m {
                tile1x16(k: k, alpha: alpha, a: a + i * aRow, aK: aK, b: b + j, ldb: ldb,
                         accumulate: accumulate, c: c + i * ldc + j)
            }
            j += 16
        }
        if j < n {
            // The last < 16 columns: scalar, with the tiles' fused multiply-adds in the same order, so an
            // element gets the same bits wherever it falls (the fused attention's backward recomputes
            // scores in key blocks whose tails are not the forward's).
            for i in 0..<m {
                for jj in j..<n {
                    var s: Float = 0
                    for p in 0..<k { s = s.addingProduct(a[i * aRow + p * aK], b[p * ldb + jj]) }
                    let r = alpha * s
                    c[i * ldc + jj] = accumulate ? c[i * ldc + jj] + r : r
                }
            }
        }
    }

    @inline(__always)
    static func finish(_ v: Float16x, _ alpha: Float16x, _ accumulate: Bool, _ c: UnsafeMutablePointer<Float>, _ j: Int) {
        store(c, accumulate ? load(UnsafePointer(c), j) + alpha * v : alpha * v, j)
    }

    @inline(__always)
    static func tile8x32(k: Int, alpha: Float, a: UnsafePointer<Float>, aRow: Int, aK: Int,
                         b: UnsafePointer<Float>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) {
        var c00 = Float16x(), c01 = Float16x(), c10 = Float16x(), c11 = Float16x()
        var c20 = Float16x(), c21 = Float16x(), c30 = Float16x(), c31 = Float16x()
        var c40 = Float16x(), c41 = Float16x(), c50 = Float16x(), c51 = Float16x()
        var c60 = Float16x(), c61 = Float16x(), c70 = Float16x(), c71 = Float16x()
        var ap = a, bp = b
        let r1 = aRow, r2 = 2 * aRow, r3 = 3 * aRow, r4 = 4 * aRow, r5 = 5 * aRow, r6 = 6 * aRow, r7 = 7 * aRow
        for _ in 0..<k {
            let b0 = load(bp, 0), b1 = load(bp, 16)
            var x = Float16x(repeating: ap[0]); c00 = multiplyAdd(x, b0, c00); c01 = multiplyAdd(x, b1, c01)
            x = Float16x(repeating: ap[r1]); c10 = multiplyAdd(x, b0, c10); c11 = multiplyAdd(x, b1, c11)
            x = Float16x(repeating: ap[r2]); c20 = multiplyAdd(x, b0, c20); c21 = multiplyAdd(x, b1, c21)
            x = Float16x(repeating: ap[r3]); c30 = multiplyAdd(x, b0, c30); c31 = multiplyAdd(x, b1, c31)
            x = Float16x(repeating: ap[r4]); c40 = multiplyAdd(x, b0, c40); c41 = multiplyAdd(x, b1, c41)
            x = Float16x(repeating: ap[r5]); c50 = multiplyAdd(x, b0, c50); c51 = multiplyAdd(x, b1, c51)
            x = Float16x(repeating: ap[r6]); c60 = multiplyAdd(x, b0, c60); c61 = multiplyAdd(x, b1, c61)
            x = Float16x(repeating: ap[r7]); c70 = multiplyAdd(x, b0, c70); c71 = multiplyAdd(x, b1, c71)
            ap += aK; bp += ldb
        }
        let al = Float16x(repeating: alpha)
        var cp = c
        finish(c00, al, accumulate, cp, 0); finish(c01, al, accumulate, cp, 16); cp += ldc
        finish(c10, al, accumulate, cp, 0); finish(c11, al, accumulate, cp, 16); cp += ldc
        finish(c20, al, accumulate, cp, 0); finish(c21, al, accumulate, cp, 16); cp += ldc
        finish(c30, al, accumulate, cp, 0); finish(c31, al, accumulate, cp, 16); cp += ldc
        finish(c40, al, accumulate, cp, 0); finish(c41, al, accumulate, cp, 16); cp += ldc
        finish(c50, al, accumulate, cp, 0); finish(c51, al, accumulate, cp, 16); cp += ldc
        finish(c60, al, accumulate, cp, 0); finish(c61, al, accumulate, cp, 16); cp += ldc
        finish(c70, al, accumulate, cp, 0); finish(c71, al, accumulate, cp, 16)
    }

    @inline(__always)
    static func tile1x32(k: Int, alpha: Float, a: UnsafePointer<Float>, aK: Int, b: UnsafePointer<Float>, ldb: Int,
                         accumulate: Bool, c: UnsafeMutablePointer<Float>) {
        var c0 = Float16x(), c1 = Float16x()
        var ap = a, bp = b
        for _ in 0..<k {
            let x = Float16x(repeating: ap[0])
            c0 = multiplyAdd(x, load(bp, 0), c0); c1 = multiplyAdd(x, load(bp, 16), c1)
            ap += aK; bp += ldb
        }
        let al = Float16x(repeating: alpha)
        finish(c0, al, accumulate, c, 0); finish(c1, al, accumulate, c, 16)
    }

    @inline(__always)
    static func tile1x16(k: Int, alpha: Float, a: UnsafePointer<Float>, aK: Int, b: UnsafePointer<Float>, ldb: Int,
                         accumulate: Bool, c: UnsafeMutablePointer<Float>) {
        var c0 = Float16x()
        var ap = a, bp = b
        for _ in 0..<k {
            c0 = multiplyAdd(Float16x(repeating: ap[0]), load(bp, 0), c0)
            ap += aK; bp += ldb
        }
        finish(c0, Float16x(repeating: alpha), accumulate, c, 0)
    }
}

// MARK: - Attention rows

extension WideKernels {
    /// x[j] ← exp(x[j] − shift) for j < n, in place; returns Σ_j x[j] (two 16-lane chains, then the tail).
    static func exponentiateShifted(_ x: UnsafeMutablePointer<Float>, n: Int, by shift: Float) -> Float {
        let mv = Float16x(repeating: shift)
        var acc0 = Float16x(), acc1 = Float16x()
        var j = 0
        while j + 32 <= n {
            let e0 = expNonPositive(load(x, j) - mv), e1 = expNonPositive(load(x, j + 16) - mv)
            store(x, e0, j); store(x, e1, j + 16)
            acc0 += e0; acc1 += e1
            j += 32
        }
        while j + 16 <= n { let e = expNonPositive(load(x, j) - mv); store(x, e, j); acc0 += e; j += 16 }
        var s = (acc0 + acc1).sum()
        while j < n { let e = expNonPositive(Float16x(repeating: x[j] - shift))[0]; x[j] = e; s += e; j += 1 }
        return s
    }

    /// Softmax of x[0..<n] in place after adding bias (if any); returns the row's max (after the bias) and
    /// 1/Σ exp(x − max). The 16-lane twin of LongMixerCore's `softmaxRowInPlace`; the fused attention
    /// uses this one in its forward exactly when it uses `attentionProbabilitiesRow` in its backward.
    public static func attentionSoftmaxRow(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, n: Int) -> (max: Float, inverseSum: Float) {
        var m16 = Float16x(repeating: -.infinity), j = 0
        if let bias {
            while j + 16 <= n { store(x, load(x, j) + load(bias, j), j); j += 16 }
            while j < n { x[j] += bias[j]; j += 1 }
            j = 0
        }
        while j + 16 <= n { let v = load(x, j); m16 = m16.replacing(with: v, where: v .> m16); j += 16 }
        var m = horizontalMax(m16)
        while j < n { if x[j] > m { m = x[j] }; j += 1 }
        let inv = 1 / exponentiateShifted(x, n: n, by: m), iv = Float16x(repeating: inv)
        j = 0
        while j + 16 <= n { store(x, load(x, j) * iv, j); j += 16 }
        while j < n { x[j] *= inv; j += 1 }
        return (m, inv)
    }

    /// x[j] = exp(x[j] + bias[j] − max)·inverseSum for j < n, with the operations of `attentionSoftmaxRow`
    /// (the same scores give the same bits).
    public static func attentionProbabilitiesRow(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?,
                                                 max m: Float, inverseSum inv: Float, n: Int) {
        let mv = Float16x(repeating: m), iv = Float16x(repeating: inv)
        var j = 0
        if let bias {
            while j + 16 <= n { store(x, expNonPositive((load(x, j) + load(bias, j)) - mv) * iv, j); j += 16 }
            while j < n { x[j] = expNonPositive(Float16x(repeating: (x[j] + bias[j]) - m))[0] * inv; j += 1 }
        } else {
            while j + 32 <= n {
                let e0 = expNonPositive(load(x, j) - mv), e1 = expNonPositive(load(x, j + 16) - mv)
                store(x, e0 * iv, j); store(x, e1 * iv, j + 16)
                j += 32
            }
            while j + 16 <= n { store(x, expNonPositive(load(x, j) - mv) * iv, j); j += 16 }
            while j < n { x[j] = expNonPositive(Float16x(repeating: x[j] - m))[0] * inv; j += 1 }
        }
    }
}

extension WideKernels {
    /// One query row of one key block in the online (flash) softmax of the fused attention's forward:
    /// x[j] += bias[j] and m' = max(m, max_j x[j]) over j < n, then x[j] = exp(x[j] − m') (x[n..<width] = 0),
    /// sum = sum·exp(m − m') + Σ_j x[j], m = m'. Returns exp(m − m'), the factor for the row's output so far
    /// (0 while m was −∞, 1 when the max did not move). The scores x + bias are rounded exactly as in
    /// `attentionProbabilitiesRow`, and m ends as the row's exact max, so the backward's P = exp(x + bias − m)/sum
    /// recomputes the probabilities that were used here up to the rounding of the sum's rescalings.
    public static func attentionOnlineSoftmaxRow(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, n: Int,
                                                 width: Int, max m: inout Float, sum: inout Float) -> Float {
        if n <= 0 {
            if width > 0 { x.update(repeating: 0, count: width) }
            return 1
        }
        var m16 = Float16x(repeating: -.infinity), j = 0
        if let bias {
            while j + 16 <= n { let v = load(x, j) + load(bias, j); store(x, v, j); m16 = m16.replacing(with: v, where: v .> m16); j += 16 }
            while j < n { x[j] += bias[j]; j += 1 }
        } else {
            while j + 16 <= n { let v = load(x, j); m16 = m16.replacing(with: v, where: v .> m16); j += 16 }
        }
        var blockMax = horizontalMax(m16)
        for t in (n - n % 16)..<n where x[t] > blockMax { blockMax = x[t] }
        let newMax = Swift.max(m, blockMax)
        let factor = newMax == m ? Float(1) : expNonPositive(Float16x(repeating: m - newMax))[0]
        let s = exponentiateShifted(x, n: n, by: newMax)
        if n < width { (x + n).update(repeating: 0, count: width - n) }
        sum = sum * factor + s
        m = newMax
        return factor
    }

    /// x[j] *= factor for j < n.
    public static func scaleRow(_ x: UnsafeMutablePointer<Float>, _ factor: Float, n: Int) {
        let f = Float16x(repeating: factor)
        var j = 0
        while j + 16 <= n { store(x, load(x, j) * f, j); j += 16 }
        while j < n { x[j] *= factor; j += 1 }
    }
}
