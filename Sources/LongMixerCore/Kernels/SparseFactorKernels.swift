/// Sparse-factor product kernels (Paramixer, Yu et al. CVPR 2022).
///
/// One factor with L links per row and fixed per-slot offsets off_k ∈ 0..<N:
///
///     out[b,i,:] = Σ_k w[b,i,k] · v[b,(i + off_k) mod N,:]
///
/// Backward (derivation: out is linear in w and in v separately):
///
///     dW[b,i,k] = ⟨dOut[b,i,:], v[b,(i + off_k) mod N,:]⟩
///     dV[b,j,:] = Σ_k w[b,r,k] · dOut[b,r,:]   with r = (j − off_k) mod N
///
/// (row j of v is read by row r = j − off_k through slot k, so dV is a gather with negated
/// offsets: no scatter, no atomics, rows are independent and run in parallel). Duplicate offsets
/// are separate slots whose contributions add, as the reference's spmm (gather + scatter_add).
///
/// Loop order: row-outer, with the output row's columns held in SIMD8 register
/// accumulators (4 × 8 = 32 columns at a time) while the L shifted rows are streamed in. The
/// (B, N, L, D) product is never materialised.

/// Work per parallel chunk worth a thread (multiply-adds), about 20 µs at 0.15 ns each.
@usableFromInline let sparseFactorGrainMACs = 131_072

@inline(__always)
func sparseFactorGrain(links: Int, dimensions: Int) -> Int {
    max(1, sparseFactorGrainMACs / max(1, links * dimensions))
}

/// Source row and coefficient of slot k for output row i (see `sparseFactorGatherRow`).
@inline(__always)
func sparseFactorLink(row i: Int, slot k: Int, coef: UnsafePointer<Float>, offsets: UnsafePointer<Int>,
                      n: Int, links: Int, inverse: Bool) -> (row: Int, weight: Float) {
    if inverse {
        var r = i - offsets[k]; if r < 0 { r += n }
        return (r, coef[r * links + k])
    }
    var r = i + offsets[k]; if r >= n { r -= n }
    return (r, coef[k])
}

/// dst[0..<d] = initial[0..<d] + Σ_k coef_k · src[row_k, 0..<d] for one output row `i` (initial nil: 0), the
/// links added in order from the initial value up.
/// Forward form (`inverse == false`): row_k = (i + off_k) mod n, coef_k = coef[k] (coef: the row's own L weights).
/// Inverse form (`inverse == true`):   row_k = (i − off_k) mod n, coef_k = coef[row_k·L + k] (coef: [n, L]).
/// src: [n, d] of one batch element; initial: the row's own d floats (may be dst).
@inline(__always)
func sparseFactorGatherRow(dst: UnsafeMutablePointer<Float>, src: UnsafePointer<Float>,
                           coef: UnsafePointer<Float>, offsets: UnsafePointer<Int>, row i: Int,
                           n: Int, links: Int, d: Int, inverse: Bool, initial: UnsafePointer<Float>? = nil) {
    @inline(__always) func start(_ c: Int) -> Float8 { initial.map { $0.load8(c) } ?? Float8() }
    var c = 0
    while c + 32 <= d {
        var a0 = start(c), a1 = start(c + 8), a2 = start(c + 16), a3 = start(c + 24)
        for k in 0..<links {
            let (r, w) = sparseFactorLink(row: i, slot: k, coef: coef, offsets: offsets, n: n, links: links, inverse: inverse)
            let p = src + r * d + c
            let wv = Float8(repeating: w)
            a0 = VectorMath.multiplyAdd(wv, p.load8(0), a0)
            a1 = VectorMath.multiplyAdd(wv, p.load8(8), a1)
            a2 = VectorMath.multiplyAdd(wv, p.load8(16), a2)
            a3 = VectorMath.multiplyAdd(wv, p.load8(24), a3)
        }
        dst.store8(a0, c); dst.store8(a1, c + 8); dst.store8(a2, c + 16); dst.store8(a3, c + 24)
        c += 32
    }
    while c + 8 <= d {
        var a0 = start(c)
        for k in 0..<links {
            let (r, w) = sparseFactorLink(row: i, slot: k, coef: coef, offsets: offsets, n: n, links: links, inverse: inverse)
            a0 = VectorMath.multiplyAdd(Float8(repeating: w), (src + r * d + c).load8(0), a0)
        }
        dst.store8(a0, c)
        c += 8
    }
    while c < d {
        var s: Float = initial?[c] ?? 0
        for k in 0..<links {
            let (r, w) = sparseFactorLink(row: i, slot: k, coef: coef, offsets: offsets, n: n, links: links, inverse: inverse)
            s += w * src[r * d + c]
        }
        dst[c] = s
        c += 1
    }
}

/// out = Σ_k w[:, :, k] ⊙ v shifted by off_k (+ residual) (overwrites out).
/// out: [B, N, D]; weights: [B, N, L]; values: [B, N, D]; offsets: [L], each in 0..<N; residual: [B, N, D] or
/// nil (it may be out; values may not).
public func sparseFactorForward(out: UnsafeMutablePointer<Float>, weights: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                offsets: UnsafePointer<Int>, batch: Int, length n: Int, links: Int, dimensions d: Int,
                                residual: UnsafePointer<Float>? = nil) {
    parallelFor(batch * n, grain: sparseFactorGrain(links: links, dimensions: d)) { rows in
        for r in rows {
            let b = r / n, i = r - b * n
            sparseFactorGatherRow(dst: out + r * d, src: values + b * n * d, coef: weights + r * links,
                                  offsets: offsets, row: i, n: n, links: links, d: d, inverse: false, initial: residual.map { $0 + r * d })
        }
    }
}

/// dW[b,i,k] = ⟨dOut[b,i,:], v[b,(i+off_k) mod N,:]⟩ for one row, four slots per pass over dOut[i]
/// (one load of dOut feeds four dot products).
@inline(__always)
func sparseFactorWeightGradientRow(dWeights: UnsafeMutablePointer<Float>, dOutRow g: UnsafePointer<Float>,
                                   values v: UnsafePointer<Float>, offsets: UnsafePointer<Int>,
                                   row i: Int, n: Int, links: Int, d: Int) {
    @inline(__always) func rowPointer(_ k: Int) -> UnsafePointer<Float> {
        var r = i + offsets[k]; if r >= n { r -= n }
        return v + r * d
    }
    let d8 = d & ~7
    var k = 0
    while k + 8 <= links {
        let p0 = rowPointer(k), p1 = rowPointer(k + 1), p2 = rowPointer(k + 2), p3 = rowPointer(k + 3)
        let p4 = rowPointer(k + 4), p5 = rowPointer(k + 5), p6 = rowPointer(k + 6), p7 = rowPointer(k + 7)
        var a0 = Float8(), a1 = Float8(), a2 = Float8(), a3 = Float8()
        var a4 = Float8(), a5 = Float8(), a6 = Float8(), a7 = Float8()
        var c = 0
        while c < d8 {
            let gv = g.load8(c)
            a0 = VectorMath.multiplyAdd(gv, p0.load8(c), a0)
            a1 = VectorMath.multiplyAdd(gv, p1.load8(c), a1)
            a2 = VectorMath.multiplyAdd(gv, p2.load8(c), a2)
            a3 = VectorMath.multiplyAdd(gv, p3.load8(c), a3)
            a4 = VectorMath.multiplyAdd(gv, p4.load8(c), a4)
            a5 = VectorMath.multiplyAdd(gv, p5.load8(c), a5)
            a6 = VectorMath.multiplyAdd(gv, p6.load8(c), a6)
            a7 = VectorMath.multiplyAdd(gv, p7.load8(c), a7)
            c += 8
        }
        // Transpose-and-add: lane j of the result is the horizontal sum of a_j.
        let s = horizontalSums(a0, a1, a2, a3, a4, a5, a6, a7)
        var tail = Float8()
        while c < d {
            let gc = g[c]
            tail[0] += gc * p0[c]; tail[1] += gc * p1[c]; tail[2] += gc * p2[c]; tail[3] += gc * p3[c]
            tail[4] += gc * p4[c]; tail[5] += gc * p5[c]; tail[6] += gc * p6[c]; tail[7] += gc * p7[c]
            c += 1
        }
        dWeights.store8(s + tail, k)
        k += 8
    }
    while k + 4 <= links {
        let p0 = rowPointer(k), p1 = rowPointer(k + 1), p2 = rowPointer(k + 2), p3 = rowPointer(k + 3)
        var a0 = Float8(), a1 = Float8(), a2 = Float8(), a3 = Float8()
        var c = 0
        while c < d8 {
            let gv = g.load8(c)
            a0 = VectorMath.multiplyAdd(gv, p0.load8(c), a0)
            a1 = VectorMath.multiplyAdd(gv, p1.load8(c), a1)
            a2 = VectorMath.multiplyAdd(gv, p2.load8(c), a2)
            a3 = VectorMath.multiplyAdd(gv, p3.load8(c), a3)
            c += 8
        }
        var s0 = horizontalSum(a0), s1 = horizontalSum(a1), s2 = horizontalSum(a2), s3 = horizontalSum(a3)
        while c < d {
            let gc = g[c]
            s0 += gc * p0[c]; s1 += gc * p1[c]; s2 += gc * p2[c]; s3 += gc * p3[c]
            c += 1
        }
        dWeights[k] = s0; dWeights[k + 1] = s1; dWeights[k + 2] = s2; dWeights[k + 3] = s3
        k += 4
    }
    while k < links {
        let p = rowPointer(k)
        var a = Float8()
        var c = 0
        while c < d8 { a = VectorMath.multiplyAdd(g.load8(c), p.load8(c), a); c += 8 }
        var s = horizontalSum(a)
        while c < d { s += g[c] * p[c]; c += 1 }
        dWeights[k] = s
        k += 1
    }
}

/// (Σ a0, Σ a1, …, Σ a7) as one vector, by three rounds of pairwise adds of interleaved halves.
@inline(__always)
func horizontalSums(_ a0: Float8, _ a1: Float8, _ a2: Float8, _ a3: Float8,
                    _ a4: Float8, _ a5: Float8, _ a6: Float8, _ a7: Float8) -> Float8 {
    // Round 1: fold 8 lanes to 4 per vector, packing two vectors into one.
    @inline(__always) func fold(_ x: Float8, _ y: Float8) -> Float8 {
        let xs = x.lowHalf + x.highHalf, ys = y.lowHalf + y.highHalf
        return Float8(lowHalf: xs, highHalf: ys)
    }
    // b_j holds 4 partial sums of each of two vectors.
    let b0 = fold(a0, a1), b1 = fold(a2, a3), b2 = fold(a4, a5), b3 = fold(a6, a7)
    // Round 2: pairs of lanes → (a_even 2 sums, a_odd 2 sums) …
    @inline(__always) func fold2(_ x: Float8, _ y: Float8) -> Float8 {
        let xl = SIMD4(x[0] + x[2], x[1] + x[3], x[4] + x[6], x[5] + x[7])
        let yl = SIMD4(y[0] + y[2], y[1] + y[3], y[4] + y[6], y[5] + y[7])
        return Float8(lowHalf: xl, highHalf: yl)
    }
    let c0 = fold2(b0, b1), c1 = fold2(b2, b3)
    return Float8(c0[0] + c0[1], c0[2] + c0[3], c0[4] + c0[5], c0[6] + c0[7],
                  c1[0] + c1[1], c1[2] + c1[3], c1[4] + c1[5], c1[6] + c1[7])
}

/// Gradients of `sparseFactorForward`, written over dWeights and dValues (no zero fill needed); pass nil
/// to skip one.
/// dWeights: [B, N, L]; dValues: [B, N, D]; dOut: [B, N, D]; weights: [B, N, L]; values: [B, N, D]; offsets: [L].
public func sparseFactorBackward(dWeights: UnsafeMutablePointer<Float>?, dValues: UnsafeMutablePointer<Float>?,
                                 dOut: UnsafePointer<Float>, weights: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                 offsets: UnsafePointer<Int>, batch: Int, length n: Int, links: Int, dimensions d: Int) {
    // Two passes (dW, then dV) rather than both per row: each pass streams fewer arrays at once, which
    // the hardware prefetchers follow better.
    let grain = sparseFactorGrain(links: links, dimensions: d)
    if let dWeights {
        parallelFor(batch * n, grain: grain) { rows in
            for r in rows {
                let b = r / n, i = r - b * n
                sparseFactorWeightGradientRow(dWeights: dWeights + r * links, dOutRow: dOut + r * d, values: values + b * n * d,
                                              offsets: offsets, row: i, n: n, links: links, d: d)
            }
        }
    }
    if let dValues {
        parallelFor(batch * n, grain: grain) { rows in
            for r in rows {
                let b = r / n, i = r - b * n
                sparseFactorGatherRow(dst: dValues + r * d, src: dOut + b * n * d, coef: weights + b * n * links,
                                      offsets: offsets, row: i, n: n, links: links, d: d, inverse: true)
            }
        }
    }
}

// MARK: - Reference implementations (plain loops, scatter form for dV; used by tests)

/// Plain reference of `sparseFactorForward` (same shapes; overwrites out).
func sparseFactorForwardReference(out: UnsafeMutablePointer<Float>, weights: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                         offsets: UnsafePointer<Int>, batch: Int, length n: Int, links: Int, dimensions d: Int) {
    for b in 0..<batch {
        for i in 0..<n {
            for c in 0..<d {
                var s: Float = 0
                for k in 0..<links {
                    let j = (i + offsets[k]) % n
                    s += weights[(b * n + i) * links + k] * values[(b * n + j) * d + c]
                }
                out[(b * n + i) * d + c] = s
            }
        }
    }
}

/// Plain reference of `sparseFactorBackward`: dW by direct dot products, dV by scattering each
/// row's contribution to the column it read (the transpose of the forward), into zeroed outputs.
func sparseFactorBackwardReference(dWeights: UnsafeMutablePointer<Float>?, dValues: UnsafeMutablePointer<Float>?,
                                          dOut: UnsafePointer<Float>, weights: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                          offsets: UnsafePointer<Int>, batch: Int, length n: Int, links: Int, dimensions d: Int) {
    dWeights?.update(repeating: 0, count: batch * n * links)
    dValues?.update(repeating: 0, count: batch * n * d)
    for b in 0..<batch {
        for i in 0..<n {
            for k in 0..<links {
                let j = (i + offsets[k]) % n
                let w = weights[(b * n + i) * links + k]
                var dot: Float = 0
                for c in 0..<d {
                    let g = dOut[(b * n + i) * d + c]
                    dot += g * values[(b * n + j) * d + c]
                    dValues?[(b * n + j) * d + c] += w * g
                }
                dWeights?[(b * n + i) * links + k] += dot
            }
        }
    }
}
