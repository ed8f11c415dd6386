import Foundation

// Paramixer inference: one sparse factor with its weight network fused, for forwards that record no
// graph. The autodiff forward computes the factor's link weights w = f(data) = W2·GELU(W1·data + b1) + b2
// for every row as [B, N, H] and [B, N, L] tensors (each written and read again, with the bias and GELU
// passes in between) before the sparse product reads them. Here six rows' hidden vectors and L link
// weights are computed into an L1 scratch (on `EightLaneSkinnyGemm`'s 6×16 register tile) right before
// those rows' sparse products use them, so neither ever goes to memory; the weight matrices (a few KiB)
// stay in L1 for all rows.

/// Weights of one factor's f-MLP laid out for `sparseFactorMLPForward`: W1ᵀ [D, Hp] and W2ᵀ [Hp, Lp]
/// with the hidden and link widths padded to multiples of 16, the register tile's width (zero columns and
/// rows, zero biases: padded hidden units are GELU(0) = 0 and padded links get weight 0 and are never used).
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
        paddedHidden = (h + 15) / 16 * 16
        paddedLinks = (l + 15) / 16 * 16
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
    check(mlp.inputs == di, "sparseFactorMLPForward: the MLP reads \(mlp.inputs) inputs, data rows have \(di)")
    // Per row: D·H + H·L multiply-adds for the weights, L·D for the product.
    let group = EightLaneSkinnyGemm.tileRows
    let grain = max(group, sparseFactorGrainMACs / max(1, di * mlp.hidden + mlp.hidden * l + l * d))
    withExtendedLifetime(mlp) {
        parallelFor(batch * n, grain: grain) { rows in
            // Six rows at a time: their hidden units [6, Hp] and link weights [6, Lp]; six data rows copied and
            // zero-padded where a group would read past the end of the data.
            withUnsafeTemporaryAllocation(of: Float.self, capacity: group * (hp + lp + di)) { scratch in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: group + l) { indexScratch in
                    let hidden = scratch.baseAddress!, weights = hidden + group * hp, lastData = weights + group * lp
                    let weightRows = indexScratch.baseAddress!, starts = weightRows + group
                    for q in 0..<group { weightRows[q] = q * lp }
                    var r0 = rows.lowerBound
                    while r0 < rows.upperBound {
                        // The group's f-MLP reads six data rows; rows past the range are read, their results unused.
                        let x = sparseFactorSixRows(data, from: r0, of: batch * n, width: di, scratch: lastData)
                        sparseFactorSixRowLinkWeights(x, mlp, hidden: hidden, weights: weights)
                        sparseFactorRowsPlusResidual(out: out, residual: residual, values: values, weights: weights, weightRows: weightRows,
                                                     starts: starts, offsets: offsets, links: l, firstRow: r0,
                                                     count: Swift.min(group, rows.upperBound - r0), n: n, d: d)
                        r0 += group
                    }
                }
            }
        }
    }
}

/// The link weights f(x) of each table row, for inputs whose data rows are rows of a table (token
/// embeddings without positions or active dropout): table[v·Lp + k] = (W2·GELU(W1·rows[v] + b1) + b2)_k, the
/// same values, bit for bit, as `sparseFactorMLPForward` computes for a data row equal to rows[v].
/// rows: [V, dataDimensions]; table: V rounded up to a multiple of 6 rows of Lp floats (entries past V·Lp, and
/// past L in each row, are scratch).
public func sparseFactorLinkTable(_ table: UnsafeMutablePointer<Float>, rows: UnsafePointer<Float>, count v: Int,
                                  dataDimensions di: Int, mlp: SparseFactorMLPWeights) {
    check(mlp.inputs == di, "sparseFactorLinkTable: the MLP reads \(mlp.inputs) inputs, table rows have \(di)")
    let group = EightLaneSkinnyGemm.tileRows, hp = mlp.paddedHidden, lp = mlp.paddedLinks
    withExtendedLifetime(mlp) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: group * (hp + di)) { scratch in
            let hidden = scratch.baseAddress!, lastRows = hidden + group * hp
            var r0 = 0
            while r0 < v {
                let x = sparseFactorSixRows(rows, from: r0, of: v, width: di, scratch: lastRows)
                sparseFactorSixRowLinkWeights(x, mlp, hidden: hidden, weights: table + r0 * lp)
                r0 += group
            }
        }
    }
}

/// `sparseFactorMLPForward` with each row's link weights read from a table by the row's token:
///   out[b,i,:] = Σ_k table[tokens[b,i]·tableStride + k]·values[b,(i + off_k) mod N,:] + residual[b,i,:]
/// (the table from `sparseFactorLinkTable`, tableStride = Lp). The f-MLP then runs once per table row
/// instead of once per position, and the outputs equal `sparseFactorMLPForward`'s bit for bit.
/// tokens: [B, N] indices of table rows (not checked here). Aliasing as `sparseFactorMLPForward`.
public func sparseFactorTableForward(out: UnsafeMutablePointer<Float>, values: UnsafePointer<Float>, residual: UnsafePointer<Float>,
                                     tokens: UnsafePointer<Int32>, table: UnsafePointer<Float>, tableStride: Int,
                                     offsets: UnsafePointer<Int>, links l: Int, batch: Int, length n: Int, dimensions d: Int) {
    let group = EightLaneSkinnyGemm.tileRows
    let grain = max(group, sparseFactorGrainMACs / max(1, l * d))
    parallelFor(batch * n, grain: grain) { rows in
        withUnsafeTemporaryAllocation(of: Int.self, capacity: group + l) { indexScratch in
            let weightRows = indexScratch.baseAddress!, starts = weightRows + group
            var r0 = rows.lowerBound
            while r0 < rows.upperBound {
                let count = Swift.min(group, rows.upperBound - r0)
                for q in 0..<count { weightRows[q] = Int(tokens[r0 + q]) * tableStride }
                sparseFactorRowsPlusResidual(out: out, residual: residual, values: values, weights: table, weightRows: weightRows,
                                             starts: starts, offsets: offsets, links: l, firstRow: r0, count: count, n: n, d: d)
                r0 += group
            }
        }
    }
}

/// First-layer pre-activations of table rows: pre[v·Hp + u] = (W1·rows[v])_u (+ b1_u with `bias`), for inputs whose
/// data rows are sums of rows of two tables (token embeddings plus learned positions): W1·(e + p) + b1 =
/// W1·e + (W1·p + b1) lets the first layer run once per table row. rows: [V, dataDimensions]; pre: V rounded up
/// to a multiple of 6 rows of Hp floats (entries past V·Hp are scratch).
public func sparseFactorPreActivations(_ pre: UnsafeMutablePointer<Float>, rows: UnsafePointer<Float>, count v: Int,
                                       dataDimensions di: Int, bias: Bool, mlp: SparseFactorMLPWeights) {
    check(mlp.inputs == di, "sparseFactorPreActivations: the MLP reads \(mlp.inputs) inputs, table rows have \(di)")
    let group = EightLaneSkinnyGemm.tileRows, hp = mlp.paddedHidden
    withExtendedLifetime(mlp) {
        let w1T = UnsafePointer(mlp.w1T), b1 = UnsafePointer(mlp.b1)
        parallelFor((v + group - 1) / group, grain: max(1, sparseFactorGrainMACs / max(1, group * di * hp))) { groups in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: group * di) { scratch in
                for g in groups {
                    let r0 = g * group
                    let x = sparseFactorSixRows(rows, from: r0, of: v, width: di, scratch: scratch.baseAddress!)
                    var s = 0
                    while s < hp {
                        let lo = bias ? b1.load8(s) : Float8(), hi = bias ? b1.load8(s + 8) : Float8()
                        EightLaneSkinnyGemm.tile(x, di, di, w1T + s, hp, lo, hi, pre + r0 * hp + s, hp)
                        s += 16
                    }
                }
            }
        }
    }
}

/// `sparseFactorMLPForward` for data rows that are token rows plus position rows, from their first-layer
/// pre-activations (`sparseFactorPreActivations`): row (b, i) has hidden units GELU(tokenPre[tokens[b,i]] +
/// positionPre[i]) (the bias in positionPre), then W2, b2 and the sparse product + residual as there. Equal to
/// `sparseFactorMLPForward` on data = e + p up to the rounding of the first layer's split sum.
/// tokens: [B, N] indices of tokenPre rows (not checked here); tokenPre: [V, Hp]; positionPre: [N, Hp].
public func sparseFactorSplitForward(out: UnsafeMutablePointer<Float>, values: UnsafePointer<Float>, residual: UnsafePointer<Float>,
                                     tokens: UnsafePointer<Int32>, tokenPre: UnsafePointer<Float>, positionPre: UnsafePointer<Float>,
                                     mlp: SparseFactorMLPWeights, offsets: UnsafePointer<Int>, batch: Int, length n: Int, dimensions d: Int) {
    let l = mlp.links, hp = mlp.paddedHidden, lp = mlp.paddedLinks
    let group = EightLaneSkinnyGemm.tileRows
    let grain = max(group, sparseFactorGrainMACs / max(1, mlp.hidden * l + l * d))
    withExtendedLifetime(mlp) {
        parallelFor(batch * n, grain: grain) { rows in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: group * (hp + lp)) { scratch in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: group + l) { indexScratch in
                    let hidden = scratch.baseAddress!, weights = hidden + group * hp
                    let weightRows = indexScratch.baseAddress!, starts = weightRows + group
                    for q in 0..<group { weightRows[q] = q * lp }
                    var r0 = rows.lowerBound
                    while r0 < rows.upperBound {
                        // Rows past the range (their hidden units zero) are computed and not used.
                        let count = Swift.min(group, rows.upperBound - r0)
                        for q in 0..<group {
                            let row = hidden + q * hp
                            guard q < count else { row.update(repeating: 0, count: hp); continue }
                            let r = r0 + q, t = tokenPre + Int(tokens[r]) * hp, p = positionPre + (r % n) * hp
                            var u = 0
                            while u < hp { row.store8(t.load8(u) + p.load8(u), u); u += 8 }
                        }
                        sparseFactorSixRowLinkWeights(preActivations: hidden, mlp, weights: weights)
                        sparseFactorRowsPlusResidual(out: out, residual: residual, values: values, weights: weights, weightRows: weightRows,
                                                     starts: starts, offsets: offsets, links: l, firstRow: r0, count: count, n: n, d: d)
                        r0 += group
                    }
                }
            }
        }
    }
}

/// Rows r0 ..< r0 + 6 of `rows` (`count` rows of `width` floats in all): the rows themselves, or where fewer than six
/// remain, a copy zero-padded to six rows in `scratch` (6·width floats), so a 6-row tile never reads past the end.
@inline(__always)
func sparseFactorSixRows(_ rows: UnsafePointer<Float>, from r0: Int, of count: Int, width: Int,
                         scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
    let group = EightLaneSkinnyGemm.tileRows, available = count - r0, first = rows + r0 * width
    guard available < group else { return first }
    scratch.update(from: first, count: available * width)
    (scratch + available * width).update(repeating: 0, count: (group - available) * width)
    return UnsafePointer(scratch)
}

/// weights[q·Lp + k] = (W2·GELU(W1·x_q + b1) + b2)_k for the six data rows x_q = x + q·D (D = mlp.inputs), on
/// `EightLaneSkinnyGemm`'s 6×16 tile; hidden: [6, Hp] scratch. Each output depends on its own row only.
@inline(__always)
func sparseFactorSixRowLinkWeights(_ x: UnsafePointer<Float>, _ mlp: SparseFactorMLPWeights,
                                   hidden: UnsafeMutablePointer<Float>, weights: UnsafeMutablePointer<Float>) {
    let di = mlp.inputs, hp = mlp.paddedHidden, w1T = UnsafePointer(mlp.w1T), b1 = UnsafePointer(mlp.b1)
    var s = 0
    while s < hp {
        EightLaneSkinnyGemm.tile(x, di, di, w1T + s, hp, b1.load8(s), b1.load8(s + 8), hidden + s, hp)
        s += 16
    }
    sparseFactorSixRowLinkWeights(preActivations: hidden, mlp, weights: weights)
}

/// The rest of `sparseFactorSixRowLinkWeights` from six rows' first-layer pre-activations [6, Hp] (overwritten
/// by their GELU): weights[q·Lp + k] = (W2·GELU(pre_q) + b2)_k.
@inline(__always)
func sparseFactorSixRowLinkWeights(preActivations hidden: UnsafeMutablePointer<Float>, _ mlp: SparseFactorMLPWeights,
                                   weights: UnsafeMutablePointer<Float>) {
    let hp = mlp.paddedHidden, lp = mlp.paddedLinks, w2T = UnsafePointer(mlp.w2T), b2 = UnsafePointer(mlp.b2)
    var j = 0
    while j < EightLaneSkinnyGemm.tileRows * hp { hidden.store8(VectorMath.gelu(hidden.load8(j)), j); j += 8 }
    var s = 0
    while s < lp {
        EightLaneSkinnyGemm.tile(hidden, hp, mlp.hidden, w2T + s, lp, b2.load8(s), b2.load8(s + 8), weights + s, lp)
        s += 16
    }
}

/// Rows r0 ..< r0 + count (count ≤ 6) of out = Σ_k w_k·values[(i + off_k) mod N] + residual, row q's L link
/// weights at weights + weightRows[q]; starts: L scratch integers. Six rows of one sequence whose links all stay
/// clear of the wrap go as two triples (each link's three source rows consecutive); the others (about one group
/// in N/6 per link) row by row. Both sum the links in order from the residual up, so the grouping does not
/// change the results.
@inline(__always)
func sparseFactorRowsPlusResidual(out: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                  weights: UnsafePointer<Float>, weightRows: UnsafePointer<Int>, starts: UnsafeMutablePointer<Int>,
                                  offsets: UnsafePointer<Int>, links l: Int, firstRow r0: Int, count: Int, n: Int, d: Int) {
    let group = EightLaneSkinnyGemm.tileRows, b0 = r0 / n, i0 = r0 - b0 * n
    let src = values + b0 * n * d
    var triples = count == group && i0 + group <= n && d % 8 == 0
    if triples {
        for k in 0..<l {
            var j = i0 + offsets[k]; if j >= n { j -= n }
            if j > n - group { triples = false; break }
            starts[k] = j * d
        }
    }
    if triples {
        let o = out + r0 * d, res = residual + r0 * d
        sparseFactorThreeRowsPlusResidual(out: o, residual: res, src: src, starts: starts, weights: weights + weightRows[0],
                                          weights + weightRows[1], weights + weightRows[2], links: l, d: d)
        sparseFactorThreeRowsPlusResidual(out: o + 3 * d, residual: res + 3 * d, src: src + 3 * d, starts: starts,
                                          weights: weights + weightRows[3], weights + weightRows[4], weights + weightRows[5],
                                          links: l, d: d)
    } else {
        for q in 0..<count {
            let r = r0 + q, b = r / n, i = r - b * n
            sparseFactorGatherRow(dst: out + r * d, src: values + b * n * d, coef: weights + weightRows[q], offsets: offsets,
                                  row: i, n: n, links: l, d: d, inverse: false, initial: residual + r * d)
        }
    }
}

/// Three consecutive rows q = 0, 1, 2 whose link sources do not wrap:
///   out[q·d + c] = residual[q·d + c] + Σ_k w_q[k]·src[starts[k] + q·d + c],
/// the links applied from the residual up in link order (as `sparseFactorGatherRow`, so the same sums).
/// Each link's three source rows are consecutive, so one start per link serves all three rows and the
/// 3 × 32-column tile (12 accumulators) makes 12 multiply-adds per link. d: a multiple of 8.
@inline(__always)
func sparseFactorThreeRowsPlusResidual(out: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>, src: UnsafePointer<Float>,
                                       starts: UnsafePointer<Int>, weights w: UnsafePointer<Float>, _ w1: UnsafePointer<Float>,
                                       _ w2: UnsafePointer<Float>, links: Int, d: Int) {
    let d2 = 2 &* d
    var c = 0
    while c &+ 32 <= d {
        let r0 = residual + c, r1 = r0 + d, r2 = r0 + d2
        var a00 = r0.load8(0), a01 = r0.load8(8), a02 = r0.load8(16), a03 = r0.load8(24)
        var a10 = r1.load8(0), a11 = r1.load8(8), a12 = r1.load8(16), a13 = r1.load8(24)
        var a20 = r2.load8(0), a21 = r2.load8(8), a22 = r2.load8(16), a23 = r2.load8(24)
        for k in 0..<links {
            let p = src + (starts[k] &+ c), q = p + d, s = p + d2
            var v = Float8(repeating: w[k])
            a00 = VectorMath.multiplyAdd(v, p.load8(0), a00); a01 = VectorMath.multiplyAdd(v, p.load8(8), a01)
            a02 = VectorMath.multiplyAdd(v, p.load8(16), a02); a03 = VectorMath.multiplyAdd(v, p.load8(24), a03)
            v = Float8(repeating: w1[k])
            a10 = VectorMath.multiplyAdd(v, q.load8(0), a10); a11 = VectorMath.multiplyAdd(v, q.load8(8), a11)
            a12 = VectorMath.multiplyAdd(v, q.load8(16), a12); a13 = VectorMath.multiplyAdd(v, q.load8(24), a13)
            v = Float8(repeating: w2[k])
            a20 = VectorMath.multiplyAdd(v, s.load8(0), a20); a21 = VectorMath.multiplyAdd(v, s.load8(8), a21)
            a22 = VectorMath.multiplyAdd(v, s.load8(16), a22); a23 = VectorMath.multiplyAdd(v, s.load8(24), a23)
        }
        let o0 = out + c, o1 = o0 + d, o2 = o0 + d2
        o0.store8(a00, 0); o0.store8(a01, 8); o0.store8(a02, 16); o0.store8(a03, 24)
        o1.store8(a10, 0); o1.store8(a11, 8); o1.store8(a12, 16); o1.store8(a13, 24)
        o2.store8(a20, 0); o2.store8(a21, 8); o2.store8(a22, 16); o2.store8(a23, 24)
        c &+= 32
    }
    while c < d {
        var a0 = residual.load8(c), a1 = residual.load8(c &+ d), a2 = residual.load8(c &+ d2)
        for k in 0..<links {
            let p = src + (starts[k] &+ c)
            a0 = VectorMath.multiplyAdd(Float8(repeating: w[k]), p.load8(0), a0)
            a1 = VectorMath.multiplyAdd(Float8(repeating: w1[k]), p.load8(d), a1)
            a2 = VectorMath.multiplyAdd(Float8(repeating: w2[k]), p.load8(d2), a2)
        }
        out.store8(a0, c); out.store8(a1, c &+ d); out.store8(a2, c &+ d2)
        c &+= 8
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
