// A packed, cache-blocked SGEMM on 16-lane vectors (AVX-512), for the dense layers (LongMixerCore's
// `BLAS.gemm` routes large GEMMs here on AVX-512 machines). Same rules as WideKernels.swift: only called
// after `CPUFeatures.avx512`, nothing @inlinable. No threads here: the caller splits C into row or
// column ranges, one call per range, each with its own packing buffers.
//
// Why: the project runs OpenBLAS with its Haswell (AVX2) kernels (OPENBLAS_CORETYPE=Haswell), while the
// hosts' Zen 5 cores have full-width 512-bit FMA units; the Transformer step is GEMM-bound.
//
// Design (GotoBLAS/BLIS): for each block of `columnBlock` columns and each block of `depthBlock` of the
// K dimension, op(B) is packed into panels of 32 columns (k-major, zero-padded at the right edge); for
// each block of `rowBlock` rows, op(A) is packed into panels of 12 rows (k-major, zero-padded at the
// bottom). Packing absorbs the transposes, so one micro-kernel serves all four cases. The micro-kernel
// keeps a 12×32 tile of C in 24 zmm accumulators; per k step it loads two vectors of B and broadcasts
// 12 values of A (24 FMAs). Sizes for Zen 5 (48 KiB L1d, 1 MiB L2 per core), measured against other
// K/M/N blocks, loop orders and tiles (14×32, 8×48, 6×64): an A micro-panel (12×512 floats, 24 KiB)
// stays in L1 while the packed B block (512×512 floats, 1 MiB) streams from L2; the packed A block
// (144×512 floats, 288 KiB) is reused for every column panel.
//
// Determinism: the K dimension is always cut at the same points (they depend only on k), each C element
// is accumulated in one register lane over a K block and added to C block by block in K order, and edge
// tiles use the same operations through a scratch tile. So C does not depend on how the caller splits
// rows or columns between calls (or threads).

public enum PackedGemm {
    /// The register tile: rows and columns of C per micro-kernel call.
    public static let tileRows = 12, tileColumns = 32
    /// Cache blocks along K (packed panel depth), M (rows of A packed at once) and N (columns of B packed at once).
    public static let depthBlock = 512, rowBlock = 144, columnBlock = 512
    /// Floats of the packing buffers each concurrent call needs (64-byte aligned for speed).
    public static let packedACount = rowBlock * depthBlock
    public static let packedBCount = depthBlock * columnBlock

    /// C[i·ldc + j] = alpha·Σ_p op(A)[i, p]·op(B)[p, j] + beta·C[i·ldc + j] for i in `rows`, j in `columns`
    /// (beta = 0 overwrites C without reading it). Row-major: op(A)[i, p] = a[i·lda + p], or a[p·lda + i]
    /// when `transposeA`; op(B)[p, j] = b[p·ldb + j], or b[j·ldb + p] when `transposeB`. `a`, `b` and `c`
    /// address the whole matrices (row and column 0), so calls on disjoint ranges may run concurrently,
    /// each with its own `packA` (≥ `packedACount` floats) and `packB` (≥ `packedBCount` floats).
    /// The caller validates sizes (k ≥ 1, ranges inside C, leading dimensions large enough).
    public static func gemm(transposeA: Bool, transposeB: Bool, rows: Range<Int>, columns: Range<Int>, k: Int,
                            alpha: Float, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
                            packA: UnsafeMutablePointer<Float>, packB: UnsafeMutablePointer<Float>) {
        if rows.isEmpty || columns.isEmpty || k <= 0 { return }
        // Equal K blocks of at most depthBlock (no thin last block); the cuts depend on k only.
        let kBlocks = (k + depthBlock - 1) / depthBlock
        let kcb = (k + kBlocks - 1) / kBlocks
        var jc = columns.lowerBound
        while jc < columns.upperBound {
            let nb = min(columnBlock, columns.upperBound - jc)
            var pc = 0
            while pc < k {
                let kb = min(kcb, k - pc)
                packBBlock(transposeB, b, ldb, pc, kb, jc, nb, packB)
                var ic = rows.lowerBound
                while ic < rows.upperBound {
                    let mb = min(rowBlock, rows.upperBound - ic)
                    packABlock(transposeA, a, lda, ic, mb, pc, kb, packA)
                    // The first K block applies beta; the later ones add to C.
                    macroKernel(mb, nb, kb, alpha, pc == 0 ? beta : 1, packA, packB, c + ic * ldc + jc, ldc)
                    ic += mb
                }
                pc += kb
            }
            jc += nb
        }
    }

    /// One packed A block (mb×kb) times one packed B block (kb×nb) into C[0..<mb, 0..<nb].
    static func macroKernel(_ mb: Int, _ nb: Int, _ kb: Int, _ alpha: Float, _ beta: Float,
                            _ pa: UnsafePointer<Float>, _ pb: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        let mr = tileRows, nr = tileColumns
        // Rows outer: one A micro-panel (12×kb, 24 KiB) stays in L1 while the B block streams from L2.
        var ir = 0
        while ir < mb {
            let mv = min(mr, mb - ir), ap = pa + (ir / mr) * kb * mr
            var jr = 0
            while jr < nb {
                let nv = min(nr, nb - jr), bp = pb + (jr / nr) * kb * nr
                let ct = c + ir * ldc + jr
                if mv == mr && nv == nr {
                    kernel12x32(kb, ap, bp, ct, ldc, alpha, beta)
                } else {
                    edgeTile(kb, ap, bp, ct, ldc, mv, nv, alpha, beta)
                }
                jr += nr
            }
            ir += mr
        }
    }

    /// A partial tile (mv < 12 rows or nv < 32 columns): the full tile into scratch (alpha 1, beta 0:
    /// the exact sums), then C = alpha·sum (+ beta·C) element by element with the kernel's operations.
    static func edgeTile(_ kb: Int, _ ap: UnsafePointer<Float>, _ bp: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
                         _ ldc: Int, _ mv: Int, _ nv: Int, _ alpha: Float, _ beta: Float) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: tileRows * tileColumns) { t in
            let tp = t.baseAddress!
            kernel12x32(kb, ap, bp, tp, tileColumns, 1, 0)
            for i in 0..<mv {
                let cr = c + i * ldc, tr = tp + i * tileColumns
                if beta == 0 {
                    for j in 0..<nv { cr[j] = alpha * tr[j] }
                } else {
                    for j in 0..<nv { cr[j] = (beta * cr[j]).addingProduct(alpha, tr[j]) }
                }
            }
        }
    }

    /// Packs op(B)[pc..<pc+kb, jc..<jc+nb] into panels of 32 columns: panel q holds kb rows of 32 floats
    /// (columns past nb are zero).
    static func packBBlock(_ transposed: Bool, _ b: UnsafePointer<Float>, _ ldb: Int, _ pc: Int, _ kb: Int,
                           _ jc: Int, _ nb: Int, _ out: UnsafeMutablePointer<Float>) {
        let nr = tileColumns
        var j0 = 0, dst = out
        while j0 < nb {
            let nv = min(nr, nb - j0)
            if !transposed {
                // op(B)[p, j] = b[p·ldb + j]: rows of B, copied.
                var src = b + pc * ldb + jc + j0, d = dst
                if nv == nr {
                    for _ in 0..<kb {
                        WideKernels.store(d, WideKernels.load(src, 0), 0); WideKernels.store(d, WideKernels.load(src, 16), 16)
                        src += ldb; d += nr
                    }
                } else {
                    for _ in 0..<kb {
                        for j in 0..<nv { d[j] = src[j] }
                        for j in nv..<nr { d[j] = 0 }
                        src += ldb; d += nr
                    }
                }
            } else {
                // op(B)[p, j] = b[j·ldb + p]: a transpose of nv rows of B.
                transposeRows(b + (jc + j0) * ldb + pc, ldb, rows: nv, width: nr, count: kb, into: dst)
            }
            dst += kb * nr; j0 += nr
        }
    }

    /// Packs op(A)[ic..<ic+mb, pc..<pc+kb] into panels of 12 rows: panel q holds kb columns of 12 floats
    /// (rows past mb are zero).
    static func packABlock(_ transposed: Bool, _ a: UnsafePointer<Float>, _ lda: Int, _ ic: Int, _ mb: Int,
                           _ pc: Int, _ kb: Int, _ out: UnsafeMutablePointer<Float>) {
        let mr = tileRows
        if transposed {
            // op(A)[i, p] = a[p·lda + i]: row p of the stored A holds column p of every panel, so p outer
            // reads it once, contiguously.
            let panels = (mb + mr - 1) / mr
            for p in 0..<kb {
                let src = a + (pc + p) * lda + ic
                var d = out + p * mr
                for q in 0..<panels {
                    let i0 = q * mr, mv = min(mr, mb - i0)
                    for i in 0..<mv { d[i] = src[i0 &+ i] }
                    for i in mv..<mr { d[i] = 0 }
                    d += kb * mr
                }
            }
            return
        }
        // op(A)[i, p] = a[i·lda + p]: a transpose of 12 rows of A per panel, read p by p as 12 parallel
        // streams (faster here than `transposeRows`, measured: the A block is reused for all of N).
        var i0 = 0, dst = out
        while i0 < mb {
            let mv = min(mr, mb - i0)
            let src = a + (ic + i0) * lda + pc
            if mv == mr {
                let s6 = src + 6 &* lda
                let l1 = lda, l2 = 2 &* lda, l3 = 3 &* lda, l4 = 4 &* lda, l5 = 5 &* lda
                var d = dst
                for p in 0..<kb {
                    d[0] = src[p]; d[1] = src[l1 &+ p]; d[2] = src[l2 &+ p]
                    d[3] = src[l3 &+ p]; d[4] = src[l4 &+ p]; d[5] = src[l5 &+ p]
                    d[6] = s6[p]; d[7] = s6[l1 &+ p]; d[8] = s6[l2 &+ p]
                    d[9] = s6[l3 &+ p]; d[10] = s6[l4 &+ p]; d[11] = s6[l5 &+ p]
                    d += mr
                }
            } else {
                transposeRows(src, lda, rows: mv, width: mr, count: kb, into: dst)
            }
            dst += kb * mr; i0 += mr
        }
    }

    /// out[p·width + r] = src[r·ld + p] for r < rows, p < count, and 0 for rows ≤ r < width (≤ 32).
    ///
    /// Reading the rows directly, p by p, keeps `rows` cache lines in use whose addresses differ by a
    /// multiple of the row stride; with strides of 2 or 8 KiB they fall into one or two L1 sets and evict
    /// each other (the packing then ran at L2 speed). So 16 columns of every row are first copied with
    /// vector loads into a small contiguous tile (in L1), and transposed from there.
    @inline(__always)
    static func transposeRows(_ src: UnsafePointer<Float>, _ ld: Int, rows: Int, width: Int, count: Int,
                              into out: UnsafeMutablePointer<Float>) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 * 16) { buffer in
            let tile = buffer.baseAddress!
            var p0 = 0, d = out
            while p0 + 16 <= count {
                for r in 0..<rows { WideKernels.store(tile, WideKernels.load(src + r &* ld, p0), r &* 16) }
                if rows == width {
                    for q in 0..<16 {
                        for r in 0..<width { d[r] = tile[r &* 16 &+ q] }
                        d += width
                    }
                } else {
                    for q in 0..<16 {
                        for r in 0..<rows { d[r] = tile[r &* 16 &+ q] }
                        for r in rows..<width { d[r] = 0 }
                        d += width
                    }
                }
                p0 += 16
            }
            for p in p0..<count {
                for r in 0..<rows { d[r] = src[r &* ld &+ p] }
                for r in rows..<width { d[r] = 0 }
                d += width
            }
        }
    }

    // MARK: - Micro-kernel

    /// The 12×32 register tile: C[r·ldc + j] = alpha·acc + beta·C (C not read when beta = 0), acc = Σ_p a[p·12 + r]·b[p·32 + j].
    static func kernel12x32(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                              _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ alpha: Float, _ beta: Float) {
        var c0_0 = Float16x(), c0_1 = Float16x()
        var c1_0 = Float16x(), c1_1 = Float16x()
        var c2_0 = Float16x(), c2_1 = Float16x()
        var c3_0 = Float16x(), c3_1 = Float16x()
        var c4_0 = Float16x(), c4_1 = Float16x()
        var c5_0 = Float16x(), c5_1 = Float16x()
        var c6_0 = Float16x(), c6_1 = Float16x()
        var c7_0 = Float16x(), c7_1 = Float16x()
        var c8_0 = Float16x(), c8_1 = Float16x()
        var c9_0 = Float16x(), c9_1 = Float16x()
        var c10_0 = Float16x(), c10_1 = Float16x()
        var c11_0 = Float16x(), c11_1 = Float16x()
        var ap = a, bp = b
        for _ in 0..<kc {
            let b0 = WideKernels.load(bp, 0), b1 = WideKernels.load(bp, 16)
            var x = Float16x(repeating: ap[0]); c0_0 = c0_0.addingProduct(x, b0); c0_1 = c0_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[1]); c1_0 = c1_0.addingProduct(x, b0); c1_1 = c1_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[2]); c2_0 = c2_0.addingProduct(x, b0); c2_1 = c2_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[3]); c3_0 = c3_0.addingProduct(x, b0); c3_1 = c3_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[4]); c4_0 = c4_0.addingProduct(x, b0); c4_1 = c4_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[5]); c5_0 = c5_0.addingProduct(x, b0); c5_1 = c5_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[6]); c6_0 = c6_0.addingProduct(x, b0); c6_1 = c6_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[7]); c7_0 = c7_0.addingProduct(x, b0); c7_1 = c7_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[8]); c8_0 = c8_0.addingProduct(x, b0); c8_1 = c8_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[9]); c9_0 = c9_0.addingProduct(x, b0); c9_1 = c9_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[10]); c10_0 = c10_0.addingProduct(x, b0); c10_1 = c10_1.addingProduct(x, b1)
            x = Float16x(repeating: ap[11]); c11_0 = c11_0.addingProduct(x, b0); c11_1 = c11_1.addingProduct(x, b1)
            ap += 12; bp += 32
        }
        let al = Float16x(repeating: alpha)
        var cp = c
        if beta == 0 {
            WideKernels.store(cp, al * c0_0, 0); WideKernels.store(cp, al * c0_1, 16); cp += ldc
            WideKernels.store(cp, al * c1_0, 0); WideKernels.store(cp, al * c1_1, 16); cp += ldc
            WideKernels.store(cp, al * c2_0, 0); WideKernels.store(cp, al * c2_1, 16); cp += ldc
            WideKernels.store(cp, al * c3_0, 0); WideKernels.store(cp, al * c3_1, 16); cp += ldc
            WideKernels.store(cp, al * c4_0, 0); WideKernels.store(cp, al * c4_1, 16); cp += ldc
            WideKernels.store(cp, al * c5_0, 0); WideKernels.store(cp, al * c5_1, 16); cp += ldc
            WideKernels.store(cp, al * c6_0, 0); WideKernels.store(cp, al * c6_1, 16); cp += ldc
            WideKernels.store(cp, al * c7_0, 0); WideKernels.store(cp, al * c7_1, 16); cp += ldc
            WideKernels.store(cp, al * c8_0, 0); WideKernels.store(cp, al * c8_1, 16); cp += ldc
            WideKernels.store(cp, al * c9_0, 0); WideKernels.store(cp, al * c9_1, 16); cp += ldc
            WideKernels.store(cp, al * c10_0, 0); WideKernels.store(cp, al * c10_1, 16); cp += ldc
            WideKernels.store(cp, al * c11_0, 0); WideKernels.store(cp, al * c11_1, 16)
        } else {
            let be = Float16x(repeating: beta)
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c0_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c0_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c1_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c1_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c2_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c2_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c3_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c3_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c4_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c4_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c5_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c5_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c6_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c6_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c7_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c7_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c8_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c8_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c9_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c9_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c10_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c10_1), 16); cp += ldc
            WideKernels.store(cp, (be * WideKernels.load(cp, 0)).addingProduct(al, c11_0), 0); WideKernels.store(cp, (be * WideKernels.load(cp, 16)).addingProduct(al, c11_1), 16)
        }
    }
}
