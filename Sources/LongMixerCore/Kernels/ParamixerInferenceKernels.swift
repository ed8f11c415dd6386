import Foundation

// Paramixer inference: one sparse factor with its weight network fused, for forwards that record no
// graph. The autodiff forward computes the factor's link weights w = f(data) = W2·GELU(W1·data + b1) + b2
// for every row as [B, N, H] and [B, N, L] tensors (each written and read again, with the bias and GELU
// passes in between) before the sparse product reads them. Here each row's hidden vector and L link
// weights are computed into an L1 scratch right before that row's sparse product uses them, so neither
// ever goes to memory; the weight matrices (a few KiB) stay in L1 for all rows.

/// Weights of one factor's f-MLP laid out for `sparseFactorMLPForward`: W1ᵀ [D, Hp] and W2ᵀ [Hp, Lp]
/// with the hidden and link widths padded to whole 8-lane vectors (zero columns and rows, zero biases:
/// padded hidden units are GELU(0) = 0 and padded links get weight 0 and are never used).
public final class SparseFactorMLPWeights {
    public let inputs: Int, hidden: Int, links: Int
    public let paddedHidden: Int, paddedLinks: Int
    /// W1ᵀ [D, Hp], b1 [Hp], W2ᵀ [Hp, Lp], b2 [Lp], one allocation.
    let storage: UnsafeMutablePointer<Float>

    var w1T: UnsafeMutablePointer<Float> { storage }
    var b1: UnsafeMutablePointer<Float> { storage + inputs * paddedHidden }
    var w2T: UnsafeMutablePointer<Float> { b1 + paddedHidden }
    var b2: UnsafeMutablePointer<Float> { w2T + paddedHidden * paddedLinks }

    /// w1: [H, D], b1: [H], w2: [L, H], b2: [L] (the `Linear` layouts).
    public init(w1: UnsafePointer<Float>, b1: UnsafePointer<Float>, w2: UnsafePointer<Float>, b2: UnsafePointer<Float>,
                inputs d: Int, hidden h: Int, links l: Int) {
        inputs = d; hidden = h; links = l
        paddedHidden = (h + 7) / 8 * 8
        paddedLinks = (l + 7) / 8 * 8
        let count = d * paddedHidden + paddedHidden + paddedHidden * paddedLinks + paddedLinks
        storage = .allocate(capacity: count)
        storage.initialize(repeating: 0, count: count)
        for r in 0..<h {
            for c in 0..<d { storage[c * paddedHidden + r] = w1[r * d + c] }
        }
        let b1p = storage + d * paddedHidden, w2p = b1p + paddedHidden, b2p = w2p + paddedHidden * paddedLinks
        for r in 0..<h { b1p[r] = b1[r] }
        for k in 0..<l {
            for r in 0..<h { w2p[r * paddedLinks + k] = w2[k * h + r] }
            b2p[k] = b2[k]
        }
    }

    deinit { storage.deallocate() }
}

/// out[q·width + j] = bias[j] + Σ_c x[q·xStride + c]·m[c·width + j] for the rows q < 4 and j < width (m: [count,
/// width], width a multiple of 8); rows q ≥ `rows` repeat the last row. One row alone is bound by the FMA
/// latency (a chain per accumulator); four rows share every load of m and keep eight chains in flight.
@inline(__always)
func fourRowsTimesMatrix(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, xStride: Int, rows: Int, count: Int,
                         _ m: UnsafePointer<Float>, width: Int, bias: UnsafePointer<Float>) {
    let x0 = x, x1 = x + Swift.min(1, rows - 1) * xStride
    let x2 = x + Swift.min(2, rows - 1) * xStride, x3 = x + Swift.min(3, rows - 1) * xStride
    let o0 = out, o1 = out + width, o2 = out + 2 * width, o3 = out + 3 * width
    var j = 0
    while j + 16 <= width {
        let lo = bias.load8(j), hi = bias.load8(j + 8)
        var a0 = lo, b0 = hi, a1 = lo, b1 = hi, a2 = lo, b2 = hi, a3 = lo, b3 = hi
        for c in 0..<count {
            let row = m + c * width + j
            let mLo = row.load8(0), mHi = row.load8(8)
            let s0 = Float8(repeating: x0[c]), s1 = Float8(repeating: x1[c])
            a0 = VectorMath.multiplyAdd(s0, mLo, a0); b0 = VectorMath.multiplyAdd(s0, mHi, b0)
            a1 = VectorMath.multiplyAdd(s1, mLo, a1); b1 = VectorMath.multiplyAdd(s1, mHi, b1)
            let s2 = Float8(repeating: x2[c]), s3 = Float8(repeating: x3[c])
            a2 = VectorMath.multiplyAdd(s2, mLo, a2); b2 = VectorMath.multiplyAdd(s2, mHi, b2)
            a3 = VectorMath.multiplyAdd(s3, mLo, a3); b3 = VectorMath.multiplyAdd(s3, mHi, b3)
        }
        o0.store8(a0, j); o0.store8(b0, j + 8); o1.store8(a1, j); o1.store8(b1, j + 8)
        o2.store8(a2, j); o2.store8(b2, j + 8); o3.store8(a3, j); o3.store8(b3, j + 8)
        j += 16
    }
    while j + 8 <= width {
        let lo = bias.load8(j)
        var a0 = lo, a1 = lo, a2 = lo, a3 = lo
        for c in 0..<count {
            let mLo = (m + c * width + j).load8(0)
            a0 = VectorMath.multiplyAdd(Float8(repeating: x0[c]), mLo, a0)
            a1 = VectorMath.multiplyAdd(Float8(repeating: x1[c]), mLo, a1)
            a2 = VectorMath.multiplyAdd(Float8(repeating: x2[c]), mLo, a2)
            a3 = VectorMath.multiplyAdd(Float8(repeating: x3[c]), mLo, a3)
        }
        o0.store8(a0, j); o1.store8(a1, j); o2.store8(a2, j); o3.store8(a3, j)
        j += 8
    }
}

/// One Paramixer factor without autodiff bookkeeping:
///   w[b,i,:] = W2·GELU(W1·data[b,i,:] + b1) + b2,
///   out[b,i,:] = Σ_k w[b,i,k]·values[b,(i + off_k) mod N,:] + residual[b,i,:]
/// — `sparseFactorProduct(weights: f(data), values:, offsets:) + residual` of the autodiff forward, with
/// each row's hidden units and link weights kept in an L1 scratch (see the file comment).
/// out, values, residual, data: [B, N, D]; offsets: L integers in 0..<N. out must not alias values
/// (other rows read them); it may alias residual.
public func sparseFactorMLPForward(out: UnsafeMutablePointer<Float>, values: UnsafePointer<Float>, residual: UnsafePointer<Float>,
                                   data: UnsafePointer<Float>, dataDimensions: Int, mlp: SparseFactorMLPWeights,
                                   offsets: UnsafePointer<Int>, batch: Int, length n: Int, dimensions d: Int) {
    let l = mlp.links, hp = mlp.paddedHidden, lp = mlp.paddedLinks, di = dataDimensions
    let w1T = UnsafePointer(mlp.w1T), b1 = UnsafePointer(mlp.b1), w2T = UnsafePointer(mlp.w2T), b2 = UnsafePointer(mlp.b2)
    check(mlp.inputs == di, "sparseFactorMLPForward: the MLP reads \(mlp.inputs) inputs, data rows have \(di)")
    // Per row: D·H + H·L multiply-adds for the weights, L·D for the product.
    let grain = max(1, sparseFactorGrainMACs / max(1, di * mlp.hidden + mlp.hidden * l + l * d))
    withExtendedLifetime(mlp) {
        parallelFor(batch * n, grain: grain) { rows in
            // Four rows at a time: their hidden units [4, Hp], then their link weights [4, Lp].
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * (hp + lp)) { scratch in
                let hidden = scratch.baseAddress!, weights = hidden + 4 * hp
                var r0 = rows.lowerBound
                while r0 < rows.upperBound {
                    let t = Swift.min(4, rows.upperBound - r0)
                    fourRowsTimesMatrix(hidden, data + r0 * di, xStride: di, rows: t, count: di, w1T, width: hp, bias: b1)
                    var j = 0
                    while j < 4 * hp { hidden.store8(VectorMath.gelu(hidden.load8(j)), j); j += 8 }
                    fourRowsTimesMatrix(weights, hidden, xStride: hp, rows: 4, count: hp, w2T, width: lp, bias: b2)
                    for q in 0..<t {
                        let r = r0 + q, b = r / n, i = r - b * n
                        sparseFactorRowPlusResidual(out: out + r * d, src: values + b * n * d, weights: weights + q * lp,
                                                    offsets: offsets, row: i, n: n, links: l, d: d, residual: residual + r * d)
                    }
                    r0 += t
                }
            }
        }
    }
}

/// out[0..<d] = (Σ_k w_k·src[(i + off_k) mod n, 0..<d]) + residual[0..<d]: the sum first, then the residual,
/// as the autodiff forward's `mixed + v`.
@inline(__always)
func sparseFactorRowPlusResidual(out: UnsafeMutablePointer<Float>, src: UnsafePointer<Float>, weights w: UnsafePointer<Float>,
                                 offsets: UnsafePointer<Int>, row i: Int, n: Int, links: Int, d: Int,
                                 residual: UnsafePointer<Float>) {
    @inline(__always) func source(_ k: Int) -> UnsafePointer<Float> {
        var r = i + offsets[k]; if r >= n { r -= n }
        return src + r * d
    }
    var c = 0
    while c + 32 <= d {
        // Even and odd links in separate sums: eight add chains in flight instead of four.
        var a0 = Float8(), a1 = Float8(), a2 = Float8(), a3 = Float8()
        var e0 = Float8(), e1 = Float8(), e2 = Float8(), e3 = Float8()
        var k = 0
        while k + 2 <= links {
            let p = source(k) + c, q = source(k + 1) + c
            let wv = Float8(repeating: w[k]), wq = Float8(repeating: w[k + 1])
            a0 = wv * p.load8(0) + a0; e0 = wq * q.load8(0) + e0
            a1 = wv * p.load8(8) + a1; e1 = wq * q.load8(8) + e1
            a2 = wv * p.load8(16) + a2; e2 = wq * q.load8(16) + e2
            a3 = wv * p.load8(24) + a3; e3 = wq * q.load8(24) + e3
            k += 2
        }
        if k < links {
            let p = source(k) + c
            let wv = Float8(repeating: w[k])
            a0 = wv * p.load8(0) + a0; a1 = wv * p.load8(8) + a1
            a2 = wv * p.load8(16) + a2; a3 = wv * p.load8(24) + a3
        }
        out.store8((a0 + e0) + residual.load8(c), c); out.store8((a1 + e1) + residual.load8(c + 8), c + 8)
        out.store8((a2 + e2) + residual.load8(c + 16), c + 16); out.store8((a3 + e3) + residual.load8(c + 24), c + 24)
        c += 32
    }
    while c + 8 <= d {
        var a0 = Float8()
        for k in 0..<links { a0 = Float8(repeating: w[k]) * (source(k) + c).load8(0) + a0 }
        out.store8(a0 + residual.load8(c), c)
        c += 8
    }
    while c < d {
        var s: Float = 0
        for k in 0..<links { s += w[k] * source(k)[c] }
        out[c] = s + residual[c]
        c += 1
    }
}

/// Reference for `sparseFactorMLPForward`: scalar loops in Double, libm's erfc GELU, one thread.
/// w1: [H, D], b1: [H], w2: [L, H], b2: [L] (the `Linear` layouts).
func sparseFactorMLPForwardReference(out: UnsafeMutablePointer<Float>, values: UnsafePointer<Float>,
                                            residual: UnsafePointer<Float>, data: UnsafePointer<Float>, dataDimensions di: Int,
                                            w1: UnsafePointer<Float>, b1: UnsafePointer<Float>, w2: UnsafePointer<Float>,
                                            b2: UnsafePointer<Float>, hidden h: Int, offsets: UnsafePointer<Int>, links l: Int,
                                            batch: Int, length n: Int, dimensions d: Int) {
    var hiddenRow = [Double](repeating: 0, count: h), weightRow = [Double](repeating: 0, count: l)
    for b in 0..<batch {
        for i in 0..<n {
            let r = b * n + i
            for u in 0..<h {
                var s = Double(b1[u])
                for c in 0..<di { s += Double(w1[u * di + c]) * Double(data[r * di + c]) }
                hiddenRow[u] = s * 0.5 * Foundation.erfc(-s / 2.0.squareRoot())
            }
            for k in 0..<l {
                var s = Double(b2[k])
                for u in 0..<h { s += Double(w2[k * h + u]) * hiddenRow[u] }
                weightRow[k] = s
            }
            for c in 0..<d {
                var s = Double(residual[r * d + c])
                for k in 0..<l { s += weightRow[k] * Double(values[(b * n + (i + offsets[k]) % n) * d + c]) }
                out[r * d + c] = Float(s)
            }
        }
    }
}
