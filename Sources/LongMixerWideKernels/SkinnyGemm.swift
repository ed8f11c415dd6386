// Unpacked 16-lane GEMMs for tall, skinny products: millions of rows times a weight of at most 64×64
// (the Linear layers of Paramixer's factor MLPs, [B·N, 32]·[32, 14 or 32]). Same rules as
// WideKernels.swift: only called after `CPUFeatures.avx512`, nothing @inlinable, no threads here.
//
// Why: OpenBLAS (and PackedGemm) repack op(A) and op(B) for every call or row chunk; with k, n ≤ 64 the
// packing copies cost about as much as the FMAs (perf: `sgemm_oncopy`/`itcopy`/`otcopy` were 18 % of a
// Paramixer training step, the kernel itself 20 %). Here the weight stays in L1 as it is stored (or,
// for x·Wᵀ, transposed once per call, ≤ 16 KiB) and A streams through once, row by row.
//
// Register tile: 16 rows of A × 16 columns of C in 16 zmm accumulators; per k step one load of the
// weight row and 16 FMAs with a broadcast element of A (embedded-broadcast memory operands). The column
// vectors of a row start at 0, 16, …, and the last at n − 16 (overlapping the one before, which it
// rewrites with the same values), so for n ≥ 16 no store leaves the row; for n < 16 a store runs into
// the next rows, which are written later (rows ascending), and the tiles near the end of a range go
// through a scratch tile.
//
// Determinism: every C element is one FMA chain in k order (forward) or in row order (the reduction),
// whatever tile or thread it lands in, so results do not depend on how rows are split.

public enum SkinnyGemm {
    /// Rows of A per register tile.
    public static let tileRows = 16
    /// Largest k and n the kernels take (the weight panel is at most maxSide × maxSide floats).
    public static let maxSide = 64

    /// Row stride (floats) of the weight panel: n, but 16 for n < 16. The panel [k, stride] holds op(B) with
    /// zero columns from n, and the bias panel [stride] the bias (or zeros); LongMixerCore builds both
    /// (`EightLaneSkinnyGemm.makePanel`, the same layout for both widths, in code safe on any CPU).
    public static func panelStride(n: Int) -> Int { max(n, 16) }

    /// C[i, :] = bias + A[i, :]·panel for i in `rows` (bias 0 when `hasBias` is false). A: [_, k] (row
    /// stride k), C: [_, n] (row stride n), panel and biasPanel as described at `panelStride`. Writes only rows in
    /// `rows` (so disjoint ranges may run concurrently).
    public static func rowsTimesPanel(rows: Range<Int>, n: Int, k: Int, a: UnsafePointer<Float>,
                                      panel: UnsafePointer<Float>, biasPanel: UnsafePointer<Float>,
                                      c: UnsafeMutablePointer<Float>) {
        let ldw = panelStride(n: n), vectors = (n + 15) / 16
        // Last row (exclusive) a direct tile may start below: its 16 rows plus, for n < 16, the spill
        // of its last row's store (16 − n floats) stay inside `rows`.
        let spill = n < 16 ? (16 - n + n - 1) / n : 0
        var i0 = rows.lowerBound
        while i0 + tileRows + spill <= rows.upperBound {
            // Last vector first: its store (n < 16: the only one) may run into the next row, whose
            // first vector is stored after it.
            for v in stride(from: vectors - 1, through: 0, by: -1) {
                let s = n < 16 ? 0 : min(16 * v, n - 16)
                tile(a + i0 * k, k, k, panel + s, ldw, WideKernels.load(biasPanel, s), c + i0 * n + s, n)
            }
            i0 += tileRows
        }
        if i0 == rows.upperBound { return }
        // The rest (fewer than 16 + spill rows): tiles of up to 16 rows through scratch A and C tiles.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: tileRows * (maxSide + 16)) { buffer in
            let sa = buffer.baseAddress!, sc = sa + tileRows * maxSide
            while i0 < rows.upperBound {
                let count = min(tileRows, rows.upperBound - i0)
                sa.update(from: a + i0 * k, count: count * k)
                (sa + count * k).update(repeating: 0, count: (tileRows - count) * k)
                for v in 0..<vectors {
                    let s = n < 16 ? 0 : min(16 * v, n - 16), width = min(16, n - s)
                    tile(sa, k, k, panel + s, ldw, WideKernels.load(biasPanel, s), sc, 16)
                    for r in 0..<count { (c + (i0 + r) * n + s).update(from: sc + r * 16, count: width) }
                }
                i0 += count
            }
        }
    }

    /// 16 rows of A (row stride lda) times 16 panel columns: c[r·ldc + j] = initial[j] + Σ_p a[r·lda + p]·w[p·ldw + j],
    /// stored as 16 full vectors.
    @inline(__always)
    static func tile(_ a: UnsafePointer<Float>, _ lda: Int, _ k: Int, _ w: UnsafePointer<Float>, _ ldw: Int,
                     _ initial: Float16x, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        var c0 = initial, c1 = initial, c2 = initial, c3 = initial, c4 = initial, c5 = initial, c6 = initial, c7 = initial
        var c8 = initial, c9 = initial, c10 = initial, c11 = initial, c12 = initial, c13 = initial, c14 = initial, c15 = initial
        let l1 = lda, l2 = 2 &* lda, l3 = 3 &* lda, l4 = 4 &* lda
        var q = a, wp = w
        for _ in 0..<k {
            let b = WideKernels.load(wp, 0)
            let q4 = q + l4, q8 = q4 + l4, q12 = q8 + l4
            c0 = c0.addingProduct(Float16x(repeating: q[0]), b); c1 = c1.addingProduct(Float16x(repeating: q[l1]), b)
            c2 = c2.addingProduct(Float16x(repeating: q[l2]), b); c3 = c3.addingProduct(Float16x(repeating: q[l3]), b)
            c4 = c4.addingProduct(Float16x(repeating: q4[0]), b); c5 = c5.addingProduct(Float16x(repeating: q4[l1]), b)
            c6 = c6.addingProduct(Float16x(repeating: q4[l2]), b); c7 = c7.addingProduct(Float16x(repeating: q4[l3]), b)
            c8 = c8.addingProduct(Float16x(repeating: q8[0]), b); c9 = c9.addingProduct(Float16x(repeating: q8[l1]), b)
            c10 = c10.addingProduct(Float16x(repeating: q8[l2]), b); c11 = c11.addingProduct(Float16x(repeating: q8[l3]), b)
            c12 = c12.addingProduct(Float16x(repeating: q12[0]), b); c13 = c13.addingProduct(Float16x(repeating: q12[l1]), b)
            c14 = c14.addingProduct(Float16x(repeating: q12[l2]), b); c15 = c15.addingProduct(Float16x(repeating: q12[l3]), b)
            q += 1; wp += ldw
        }
        var cp = c
        WideKernels.store(cp, c0, 0); cp += ldc; WideKernels.store(cp, c1, 0); cp += ldc
        WideKernels.store(cp, c2, 0); cp += ldc; WideKernels.store(cp, c3, 0); cp += ldc
        WideKernels.store(cp, c4, 0); cp += ldc; WideKernels.store(cp, c5, 0); cp += ldc
        WideKernels.store(cp, c6, 0); cp += ldc; WideKernels.store(cp, c7, 0); cp += ldc
        WideKernels.store(cp, c8, 0); cp += ldc; WideKernels.store(cp, c9, 0); cp += ldc
        WideKernels.store(cp, c10, 0); cp += ldc; WideKernels.store(cp, c11, 0); cp += ldc
        WideKernels.store(cp, c12, 0); cp += ldc; WideKernels.store(cp, c13, 0); cp += ldc
        WideKernels.store(cp, c14, 0); cp += ldc; WideKernels.store(cp, c15, 0)
    }

    // MARK: - Reduction over rows: Aᵀ·B and the column sums of A

    /// Row count and row stride of a `transposedProduct` partial: n and k rounded up to multiples of 16.
    public static func partialShape(n: Int, k: Int) -> (rows: Int, stride: Int) { ((n + 15) / 16 * 16, (k + 15) / 16 * 16) }

    /// partial[j·ldp + p] = Σ_{i in rows} A[i, j]·B[i, p] and sums[j] = Σ_{i in rows} A[i, j] (the partial's
    /// row count and ldp from `partialShape`; sums has as many floats as the partial has rows; entries past
    /// n or k are scratch). A: [m, n], B: [m, k], both of m rows in total (the kernel reads no further).
    /// Each element is one chain of FMAs (adds) over the rows in order, so the result is the same for any
    /// tiling of the rows.
    public static func transposedProduct(rows: Range<Int>, m: Int, n: Int, k: Int, a: UnsafePointer<Float>,
                                         b: UnsafePointer<Float>, partial: UnsafeMutablePointer<Float>,
                                         sums: UnsafeMutablePointer<Float>) {
        let (np, ldp) = partialShape(n: n, k: k)
        partial.update(repeating: 0, count: np * ldp)
        sums.update(repeating: 0, count: np)
        // Rows are read in whole vectors (np floats of A, ldp of B), which for n or k not a multiple of 16
        // run into the next rows (lanes that land in scratch entries); the last rows of the matrix, where
        // they would run past its end, go through zero-padded copies.
        let safeEnd = m - max((np - 1) / n, (ldp - 1) / k)
        let direct = rows.lowerBound..<max(rows.lowerBound, min(rows.upperBound, safeEnd))
        var lo = direct.lowerBound
        while lo < direct.upperBound {
            // Blocks of rows that stay in L1 while every (column tile, vector) pass re-reads them.
            let hi = min(direct.upperBound, lo + reductionBlockRows)
            reduceBlock(a + lo * n, n, b + lo * k, k, hi - lo, np, ldp, partial, sums)
            lo = hi
        }
        if direct.upperBound < rows.upperBound {
            // At most 15 rows (the largest over-read, 15 floats, is less than 16 rows of n, k ≥ 1).
            let count = rows.upperBound - direct.upperBound
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 15 * 2 * maxSide) { buffer in
                let sa = buffer.baseAddress!, sb = sa + count * np
                for r in 0..<count {
                    let row = direct.upperBound + r
                    (sa + r * np).update(from: a + row * n, count: n); (sa + r * np + n).update(repeating: 0, count: np - n)
                    (sb + r * ldp).update(from: b + row * k, count: k); (sb + r * ldp + k).update(repeating: 0, count: ldp - k)
                }
                reduceBlock(sa, np, sb, ldp, count, np, ldp, partial, sums)
            }
        }
    }

    /// Rows per block of `transposedProduct` (64 rows of 2 × 64 floats: 32 KiB, inside Zen 5's 48 KiB L1).
    static let reductionBlockRows = 64

    /// Adds `count` rows of A (stride lda) and B (stride ldb) to partial (np × ldp) and sums.
    static func reduceBlock(_ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int, _ count: Int,
                            _ np: Int, _ ldp: Int, _ partial: UnsafeMutablePointer<Float>, _ sums: UnsafeMutablePointer<Float>) {
        var t = 0
        while t < np {
            var s = 0
            while s < ldp {
                reductionTile(a + t, lda, b + s, ldb, count, partial + t * ldp + s, ldp, s == 0 ? sums + t : nil)
                s += 16
            }
            t += 16
        }
    }

    /// acc[j] (16 rows of the partial, 16 columns) += Σ_i a[i·lda + j]·b[i·ldb + 0..<16]; with `sums`,
    /// sums[0..<16] += Σ_i a[i·lda + 0..<16].
    @inline(__always)
    static func reductionTile(_ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int, _ count: Int,
                              _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ sums: UnsafeMutablePointer<Float>?) {
        var c0 = WideKernels.load(c, 0), c1 = WideKernels.load(c, ldc), c2 = WideKernels.load(c, 2 * ldc)
        var c3 = WideKernels.load(c, 3 * ldc), c4 = WideKernels.load(c, 4 * ldc), c5 = WideKernels.load(c, 5 * ldc)
        var c6 = WideKernels.load(c, 6 * ldc), c7 = WideKernels.load(c, 7 * ldc), c8 = WideKernels.load(c, 8 * ldc)
        var c9 = WideKernels.load(c, 9 * ldc), c10 = WideKernels.load(c, 10 * ldc), c11 = WideKernels.load(c, 11 * ldc)
        var c12 = WideKernels.load(c, 12 * ldc), c13 = WideKernels.load(c, 13 * ldc), c14 = WideKernels.load(c, 14 * ldc)
        var c15 = WideKernels.load(c, 15 * ldc)
        var ap = a, bp = b
        // Two copies of the row loop, with and without the column sums, so the 16-FMA body has no per-row branch.
        if let sums {
            var s = WideKernels.load(sums, 0)
            for _ in 0..<count {
                s += WideKernels.load(ap, 0)
                let x = WideKernels.load(bp, 0)
                c0 = c0.addingProduct(Float16x(repeating: ap[0]), x); c1 = c1.addingProduct(Float16x(repeating: ap[1]), x)
                c2 = c2.addingProduct(Float16x(repeating: ap[2]), x); c3 = c3.addingProduct(Float16x(repeating: ap[3]), x)
                c4 = c4.addingProduct(Float16x(repeating: ap[4]), x); c5 = c5.addingProduct(Float16x(repeating: ap[5]), x)
                c6 = c6.addingProduct(Float16x(repeating: ap[6]), x); c7 = c7.addingProduct(Float16x(repeating: ap[7]), x)
                c8 = c8.addingProduct(Float16x(repeating: ap[8]), x); c9 = c9.addingProduct(Float16x(repeating: ap[9]), x)
                c10 = c10.addingProduct(Float16x(repeating: ap[10]), x); c11 = c11.addingProduct(Float16x(repeating: ap[11]), x)
                c12 = c12.addingProduct(Float16x(repeating: ap[12]), x); c13 = c13.addingProduct(Float16x(repeating: ap[13]), x)
                c14 = c14.addingProduct(Float16x(repeating: ap[14]), x); c15 = c15.addingProduct(Float16x(repeating: ap[15]), x)
                ap += lda; bp += ldb
            }
            WideKernels.store(sums, s, 0)
        } else {
            for _ in 0..<count {
                let x = WideKernels.load(bp, 0)
                c0 = c0.addingProduct(Float16x(repeating: ap[0]), x); c1 = c1.addingProduct(Float16x(repeating: ap[1]), x)
                c2 = c2.addingProduct(Float16x(repeating: ap[2]), x); c3 = c3.addingProduct(Float16x(repeating: ap[3]), x)
                c4 = c4.addingProduct(Float16x(repeating: ap[4]), x); c5 = c5.addingProduct(Float16x(repeating: ap[5]), x)
                c6 = c6.addingProduct(Float16x(repeating: ap[6]), x); c7 = c7.addingProduct(Float16x(repeating: ap[7]), x)
                c8 = c8.addingProduct(Float16x(repeating: ap[8]), x); c9 = c9.addingProduct(Float16x(repeating: ap[9]), x)
                c10 = c10.addingProduct(Float16x(repeating: ap[10]), x); c11 = c11.addingProduct(Float16x(repeating: ap[11]), x)
                c12 = c12.addingProduct(Float16x(repeating: ap[12]), x); c13 = c13.addingProduct(Float16x(repeating: ap[13]), x)
                c14 = c14.addingProduct(Float16x(repeating: ap[14]), x); c15 = c15.addingProduct(Float16x(repeating: ap[15]), x)
                ap += lda; bp += ldb
            }
        }
        WideKernels.store(c, c0, 0); WideKernels.store(c, c1, ldc); WideKernels.store(c, c2, 2 * ldc)
        WideKernels.store(c, c3, 3 * ldc); WideKernels.store(c, c4, 4 * ldc); WideKernels.store(c, c5, 5 * ldc)
        WideKernels.store(c, c6, 6 * ldc); WideKernels.store(c, c7, 7 * ldc); WideKernels.store(c, c8, 8 * ldc)
        WideKernels.store(c, c9, 9 * ldc); WideKernels.store(c, c10, 10 * ldc); WideKernels.store(c, c11, 11 * ldc)
        WideKernels.store(c, c12, 12 * ldc); WideKernels.store(c, c13, 13 * ldc); WideKernels.store(c, c14, 14 * ldc)
        WideKernels.store(c, c15, 15 * ldc)
    }
}
