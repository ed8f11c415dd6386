// 8-lane (AVX2) GEMMs for tall, skinny products: millions of rows times a weight of at most 128×128 (the
// Linear layers of Paramixer's factor and channel MLPs, [B·N, 32]·[32, L or 32], H up to 128), the counterpart of
// LongMixerWideKernels' 16-lane `SkinnyGemm` on CPUs without AVX-512. OpenBLAS packs op(A) and op(B) for
// every call; with k, n ≤ 64 that copying costs about as much as the FMAs (bench core, 32768x32 · 32x32
// on Zen 3, one thread: OpenBLAS at 40–60 % of its large-GEMM rate, these kernels at about 1.8× OpenBLAS).
// Here the weight stays in L1 in a panel laid out as `SkinnyGemm`'s and A streams through once. Nothing here calls into LongMixerWideKernels: code built
// for AVX-512 may use its instructions anywhere, even in a scalar copy loop.
//
// Register tile: 6 rows of A × 16 columns of C (two 8-lane vectors) in 12 ymm accumulators; per k step
// two loads of the weight row, six broadcasts of A and 12 FMAs (15 of the 16 ymm registers). Columns are
// covered as in `SkinnyGemm`: pairs of vectors from 0, 16, …, the last from n − 16 (overlapping the pair
// before, with the same values); for n < 16 a row's store runs into the next rows, which are written later,
// and the rows near the end of a range go through a scratch tile.
//
// Determinism: every C element is one multiply-add chain in k order (products) or in row order (the
// reduction), whatever tile or thread it lands in, so results do not depend on how rows are split.

public enum EightLaneSkinnyGemm {
    /// Rows of A per register tile.
    public static let tileRows = 6
    /// Largest k and n the kernels take (the weight panel is at most maxSide × maxSide floats, 64 KiB; a tile reads
    /// 16 of its columns, k × 64 bytes, which stay in L1). 128 on Zen 3 (`bench core`, `bench tables`): the
    /// 4096x128 · 128x128 layer at 88–96 % of threaded OpenBLAS, the Paramixer Text preset's training step (H 128)
    /// about 17 % faster than with OpenBLAS for its 128-wide layers.
    public static let maxSide = 128

    /// Row stride (floats) of the panel `makePanel` writes: n, but 16 for n < 16 (zero-padded).
    public static func panelStride(n: Int) -> Int { max(n, 16) }

    /// panel[p·ldw + j] = op(B)[p, j] (ldw = `panelStride(n:)`): B is [n, k] when `transposeB` (a Linear
    /// weight, x·Wᵀ), else [k, n]; columns n..<16 are zero when n < 16. Same for `bias` → `biasPanel`
    /// (ldw floats; zero without a bias).   panel: [k, ldw]
    public static func makePanel(transposeB: Bool, n: Int, k: Int, b: UnsafePointer<Float>,
                                 panel: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?,
                                 biasPanel: UnsafeMutablePointer<Float>) {
        let ldw = panelStride(n: n)
        for p in 0..<k {
            let row = panel + p * ldw
            if transposeB { for j in 0..<n { row[j] = b[j * k + p] } } else { row.update(from: b + p * n, count: n) }
            for j in n..<ldw { row[j] = 0 }
        }
        for j in 0..<ldw { biasPanel[j] = bias != nil && j < n ? bias![j] : 0 }
    }

    /// C[i, :] = bias + A[i, :]·panel for i in `rows`. A: [_, k] (row stride k), C: [_, n] (row stride n),
    /// panel and biasPanel from `makePanel` (k, n ≤ `maxSide`). Writes only rows in
    /// `rows` (so disjoint ranges may run concurrently).
    public static func rowsTimesPanel(rows: Range<Int>, n: Int, k: Int, a: UnsafePointer<Float>,
                                      panel: UnsafePointer<Float>, biasPanel: UnsafePointer<Float>,
                                      c: UnsafeMutablePointer<Float>) {
        let ldw = panelStride(n: n), pairs = (n + 15) / 16
        // A direct tile's last row stores 16 floats; for n < 16 they reach this many rows further.
        let spill = n < 16 ? (16 - n + n - 1) / n : 0
        var i0 = rows.lowerBound
        while i0 + tileRows + spill <= rows.upperBound {
            // Last pair first: for n < 16 it is the only one, and its stores run into later rows.
            for v in stride(from: pairs - 1, through: 0, by: -1) {
                let s = n < 16 ? 0 : min(16 * v, n - 16)
                tile(a + i0 * k, k, k, panel + s, ldw, biasPanel.load8(s), biasPanel.load8(s + 8), c + i0 * n + s, n)
            }
            i0 += tileRows
        }
        if i0 == rows.upperBound { return }
        // The rest (fewer than 6 + spill rows): tiles of up to 6 rows through scratch A and C tiles.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: tileRows * (maxSide + 16)) { buffer in
            let sa = buffer.baseAddress!, sc = sa + tileRows * maxSide
            while i0 < rows.upperBound {
                let count = min(tileRows, rows.upperBound - i0)
                sa.update(from: a + i0 * k, count: count * k)
                (sa + count * k).update(repeating: 0, count: (tileRows - count) * k)
                for v in 0..<pairs {
                    let s = n < 16 ? 0 : min(16 * v, n - 16), width = min(16, n - s)
                    tile(sa, k, k, panel + s, ldw, biasPanel.load8(s), biasPanel.load8(s + 8), sc, 16)
                    for r in 0..<count { (c + (i0 + r) * n + s).update(from: sc + r * 16, count: width) }
                }
                i0 += count
            }
        }
    }

    /// 6 rows of A (row stride lda) times 16 panel columns: c[r·ldc + j] = initial[j] + Σ_p a[r·lda + p]·w[p·ldw + j],
    /// stored as 6 × 2 full vectors (initial = lo ++ hi).
    @inline(__always)
    static func tile(_ a: UnsafePointer<Float>, _ lda: Int, _ k: Int, _ w: UnsafePointer<Float>, _ ldw: Int,
                     _ lo: Float8, _ hi: Float8, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        var c00 = lo, c01 = hi, c10 = lo, c11 = hi, c20 = lo, c21 = hi
        var c30 = lo, c31 = hi, c40 = lo, c41 = hi, c50 = lo, c51 = hi
        let l1 = lda, l2 = 2 &* lda, l3 = 3 &* lda, l4 = 4 &* lda, l5 = 5 &* lda
        var q = a, wp = w
        for _ in 0..<k {
            let b0 = wp.load8(0), b1 = wp.load8(8)
            var s = Float8(repeating: q[0])
            c00 = VectorMath.multiplyAdd(s, b0, c00); c01 = VectorMath.multiplyAdd(s, b1, c01)
            s = Float8(repeating: q[l1])
            c10 = VectorMath.multiplyAdd(s, b0, c10); c11 = VectorMath.multiplyAdd(s, b1, c11)
            s = Float8(repeating: q[l2])
            c20 = VectorMath.multiplyAdd(s, b0, c20); c21 = VectorMath.multiplyAdd(s, b1, c21)
            s = Float8(repeating: q[l3])
            c30 = VectorMath.multiplyAdd(s, b0, c30); c31 = VectorMath.multiplyAdd(s, b1, c31)
            s = Float8(repeating: q[l4])
            c40 = VectorMath.multiplyAdd(s, b0, c40); c41 = VectorMath.multiplyAdd(s, b1, c41)
            s = Float8(repeating: q[l5])
            c50 = VectorMath.multiplyAdd(s, b0, c50); c51 = VectorMath.multiplyAdd(s, b1, c51)
            q += 1; wp += ldw
        }
        var cp = c
        cp.store8(c00, 0); cp.store8(c01, 8); cp += ldc
        cp.store8(c10, 0); cp.store8(c11, 8); cp += ldc
        cp.store8(c20, 0); cp.store8(c21, 8); cp += ldc
        cp.store8(c30, 0); cp.store8(c31, 8); cp += ldc
        cp.store8(c40, 0); cp.store8(c41, 8); cp += ldc
        cp.store8(c50, 0); cp.store8(c51, 8)
    }

    // MARK: - Reduction over rows: Aᵀ·B and the column sums of A

    /// Row count and row stride of a `transposedProduct` partial: n rounded up to a multiple of 6, k to one of 16.
    public static func partialShape(n: Int, k: Int) -> (rows: Int, stride: Int) {
        ((n + tileRows - 1) / tileRows * tileRows, (k + 15) / 16 * 16)
    }

    /// partial[j·ldp + p] = Σ_{i in rows} A[i, j]·B[i, p] and sums[j] = Σ_{i in rows} A[i, j] (the partial's
    /// row count and ldp from `partialShape`; sums has as many floats as the partial has rows; entries past
    /// n or k are scratch). A: [m, n], B: [m, k], both of m rows in total (the kernel reads no further).
    /// Each element is one chain over the rows in order, so the result is the same for any tiling of the rows.
    public static func transposedProduct(rows: Range<Int>, m: Int, n: Int, k: Int, a: UnsafePointer<Float>,
                                         b: UnsafePointer<Float>, partial: UnsafeMutablePointer<Float>,
                                         sums: UnsafeMutablePointer<Float>) {
        let (np, ldp) = partialShape(n: n, k: k)
        partial.update(repeating: 0, count: np * ldp)
        sums.update(repeating: 0, count: np)
        // A tile reads np − n floats past a row of A and ldp − k past a row of B (into the next rows, landing
        // in scratch entries); the last rows of the matrix, where that would run past its end, go through
        // zero-padded copies.
        let safeEnd = m - max((np - 1) / n, (ldp - 1) / k)
        let direct = rows.lowerBound..<max(rows.lowerBound, min(rows.upperBound, safeEnd))
        var lo = direct.lowerBound
        while lo < direct.upperBound {
            // Blocks of rows that stay in L1 while every (column tile, vector pair) pass re-reads them.
            let hi = min(direct.upperBound, lo + reductionBlockRows)
            reduceBlock(a + lo * n, n, b + lo * k, k, hi - lo, n, np, ldp, partial, sums)
            lo = hi
        }
        if direct.upperBound < rows.upperBound {
            // At most 15 rows (the largest over-read, 15 floats, is less than 16 rows of n, k ≥ 1).
            let count = rows.upperBound - direct.upperBound
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 15 * (np + ldp)) { buffer in
                let sa = buffer.baseAddress!, sb = sa + count * np
                for r in 0..<count {
                    let row = direct.upperBound + r
                    (sa + r * np).update(from: a + row * n, count: n); (sa + r * np + n).update(repeating: 0, count: np - n)
                    (sb + r * ldp).update(from: b + row * k, count: k); (sb + r * ldp + k).update(repeating: 0, count: ldp - k)
                }
                reduceBlock(sa, np, sb, ldp, count, n, np, ldp, partial, sums)
            }
        }
    }

    /// Rows per block of `transposedProduct` (64 rows of 2 × 64 floats: 32 KiB, Zen 3's L1).
    static let reductionBlockRows = 64

    /// Adds `count` rows of A (stride lda, n columns used) and B (stride ldb) to partial (np × ldp) and sums.
    static func reduceBlock(_ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int, _ count: Int,
                            _ n: Int, _ np: Int, _ ldp: Int, _ partial: UnsafeMutablePointer<Float>, _ sums: UnsafeMutablePointer<Float>) {
        var t = 0
        while t < np {
            var s = 0
            while s < ldp {
                reductionTile(a + t, lda, b + s, ldb, count, partial + t * ldp + s, ldp)
                s += 16
            }
            t += tileRows
        }
        // Column sums of A: one add chain per column in row order, from the block while it is in L1, held in
        // registers over the rows (a chain through memory would wait on store-to-load forwarding every row).
        var j = 0
        while j + 32 <= n {
            var s0 = sums.load8(j), s1 = sums.load8(j + 8), s2 = sums.load8(j + 16), s3 = sums.load8(j + 24)
            var row = a + j
            for _ in 0..<count {
                s0 += row.load8(0); s1 += row.load8(8); s2 += row.load8(16); s3 += row.load8(24)
                row += lda
            }
            sums.store8(s0, j); sums.store8(s1, j + 8); sums.store8(s2, j + 16); sums.store8(s3, j + 24)
            j += 32
        }
        while j + 8 <= n {
            var s0 = sums.load8(j), row = a + j
            for _ in 0..<count { s0 += row.load8(0); row += lda }
            sums.store8(s0, j)
            j += 8
        }
        while j < n {
            var s0 = sums[j], row = a + j
            for _ in 0..<count { s0 += row[0]; row += lda }
            sums[j] = s0
            j += 1
        }
    }

    /// partial rows 0..<6 (columns of A), columns 0..<16 (of B): c[j·ldc + 0..<16] += Σ_i a[i·lda + j]·b[i·ldb + 0..<16].
    @inline(__always)
    static func reductionTile(_ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int, _ count: Int,
                              _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        let r1 = c + ldc, r2 = r1 + ldc, r3 = r2 + ldc, r4 = r3 + ldc, r5 = r4 + ldc
        var c00 = c.load8(0), c01 = c.load8(8), c10 = r1.load8(0), c11 = r1.load8(8)
        var c20 = r2.load8(0), c21 = r2.load8(8), c30 = r3.load8(0), c31 = r3.load8(8)
        var c40 = r4.load8(0), c41 = r4.load8(8), c50 = r5.load8(0), c51 = r5.load8(8)
        var ap = a, bp = b
        for _ in 0..<count {
            let b0 = bp.load8(0), b1 = bp.load8(8)
            var s = Float8(repeating: ap[0])
            c00 = VectorMath.multiplyAdd(s, b0, c00); c01 = VectorMath.multiplyAdd(s, b1, c01)
            s = Float8(repeating: ap[1])
            c10 = VectorMath.multiplyAdd(s, b0, c10); c11 = VectorMath.multiplyAdd(s, b1, c11)
            s = Float8(repeating: ap[2])
            c20 = VectorMath.multiplyAdd(s, b0, c20); c21 = VectorMath.multiplyAdd(s, b1, c21)
            s = Float8(repeating: ap[3])
            c30 = VectorMath.multiplyAdd(s, b0, c30); c31 = VectorMath.multiplyAdd(s, b1, c31)
            s = Float8(repeating: ap[4])
            c40 = VectorMath.multiplyAdd(s, b0, c40); c41 = VectorMath.multiplyAdd(s, b1, c41)
            s = Float8(repeating: ap[5])
            c50 = VectorMath.multiplyAdd(s, b0, c50); c51 = VectorMath.multiplyAdd(s, b1, c51)
            ap += lda; bp += ldb
        }
        c.store8(c00, 0); c.store8(c01, 8); r1.store8(c10, 0); r1.store8(c11, 8)
        r2.store8(c20, 0); r2.store8(c21, 8); r3.store8(c30, 0); r3.store8(c31, 8)
        r4.store8(c40, 0); r4.store8(c41, 8); r5.store8(c50, 0); r5.store8(c51, 8)
    }
}
