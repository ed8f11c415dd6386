import Foundation

// FAVOR+ positive random features (Performer, `FavorAttention`) as one op:
//
//   x' = c·x (c = F^(−1/4)),  P = x'·Ωᵀ,  h_r = ½·|x'_r|²,  φ = s·(exp(P − h − M) + ε)   (s = m^(−1/2))
//
// with M the detached maximum of P per row (queries) or per group of rows (keys: every position and
// feature of one (batch, head)). Composed from tensor ops the forward writes and reads x', P, x'², the
// row sums, P − h, P − h − M, the exponentials and the shifted exponentials, each a fresh tensor, and the
// backward as many again; here the forward is one GEMM plus one pass over P (in place, per row in L1), the
// backward one pass plus one GEMM. The forward performs the composed ops' float operations in their order
// (the same results bit for bit); the backward recovers exp(·) from φ (s is a power of two for the
// usual m, so φ/s is exact).
//
// Backward, with g = ∂L/∂φ and e = exp(P − h − M) = φ/s − ε (M detached):
//   dP = g·s·e;  dh_r = −Σ_j dP_rj;  dx' = dP·Ω + dh_r·x'_r;  dx = c·dx'.

/// Floats of P and x' per parallel chunk of rows worth a thread.
let favorGrainFloats = 1 << 15

/// φ of `rows` rows (see the file comment).
/// out: [rows, m] (φ); x: [rows, f]; omega: [m, f]; scaled: [rows, f] scratch (x'); rowsPerGroup divides rows.
public func favorFeaturesForward(out: UnsafeMutablePointer<Float>, scaled: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                                 omega: UnsafePointer<Float>, rows: Int, features f: Int, randomFeatures m: Int,
                                 rowsPerGroup: Int, inputScale c: Float, outputScale s: Float, stabilizer: Float) {
    check(rowsPerGroup >= 1 && rows % rowsPerGroup == 0, "favorFeaturesForward: \(rows) rows in groups of \(rowsPerGroup)")
    if rows == 0 { return }
    let count = rows * f
    parallelFor(count, grain: elementwiseGrain) { r in
        let c8 = Float8(repeating: c)
        var i = r.lowerBound
        while i + 8 <= r.upperBound { scaled.store8(x.load8(i) * c8, i); i += 8 }
        while i < r.upperBound { scaled[i] = x[i] * c; i += 1 }
    }
    BLAS.gemm(transposeB: true, m: rows, n: m, k: f, a: UnsafePointer(scaled), b: omega, c: out)   // P = x'·Ωᵀ
    let groups = rows / rowsPerGroup
    parallelFor(groups, grain: max(1, favorGrainFloats / max(1, rowsPerGroup * (m + f)))) { range in
        for group in range {
            let r0 = group * rowsPerGroup
            let p = out + r0 * m
            // The detached maximum M of the group (NaN entries skipped, as `rowMax`).
            let maximum = rowMax(UnsafePointer(p), rowsPerGroup * m)
            for row in r0..<(r0 + rowsPerGroup) {
                let pr = out + row * m
                let h = 0.5 * favorSquaredNorm(UnsafePointer(scaled + row * f), f)
                let h8 = Float8(repeating: h), m8 = Float8(repeating: maximum)
                let eps8 = Float8(repeating: stabilizer), s8 = Float8(repeating: s)
                var j = 0
                // (P − h) − M ≤ 0 (M is at least the row's maximum, h ≥ 0): the exp needs no overflow
                // handling, and `expNonPositive` gives `exp`'s results there.
                while j + 8 <= m {
                    pr.store8((VectorMath.expNonPositive((pr.load8(j) - h8) - m8) + eps8) * s8, j)
                    j += 8
                }
                while j < m { pr[j] = (VectorMath.exp((pr[j] - h) - maximum) + stabilizer) * s; j += 1 }
            }
        }
    }
}

/// Σ_k v_k² of one row, with the operations of `sum(v * v, axes: [last])` (squares rounded, then the
/// 8-lane sum of `sumAxisKernel`).
@inline(__always)
func favorSquaredNorm(_ v: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = Float8(), j = 0
    while j + 8 <= n { let a = v.load8(j); acc += a * a; j += 8 }
    var total = horizontalSum(acc)
    while j < n { total += v[j] * v[j]; j += 1 }
    return total
}

/// dx of `favorFeaturesForward` (overwrites dx). dP: [rows, m] scratch.
/// dx, x: [rows, f]; gradOut, phi: [rows, m]; omega: [m, f].
public func favorFeaturesBackward(dx: UnsafeMutablePointer<Float>, dP: UnsafeMutablePointer<Float>, gradOut: UnsafePointer<Float>,
                                  phi: UnsafePointer<Float>, x: UnsafePointer<Float>, omega: UnsafePointer<Float>,
                                  rows: Int, features f: Int, randomFeatures m: Int,
                                  inputScale c: Float, outputScale s: Float, stabilizer: Float) {
    if rows == 0 { return }
    BLAS.warmUp()
    let rowGrainCount = max(1, favorGrainFloats / max(1, m + f))
    // dP = g·s·e with e = φ/s − ε.
    parallelFor(rows * m, grain: elementwiseGrain) { r in
        let s8 = Float8(repeating: s), eps8 = Float8(repeating: stabilizer)
        var i = r.lowerBound
        while i + 8 <= r.upperBound { dP.store8((gradOut.load8(i) * s8) * (phi.load8(i) / s8 - eps8), i); i += 8 }
        while i < r.upperBound { dP[i] = (gradOut[i] * s) * (phi[i] / s - stabilizer); i += 1 }
    }
    BLAS.gemm(m: rows, n: f, k: m, alpha: c, a: UnsafePointer(dP), b: omega, c: dx)      // c·dP·Ω
    // dx_r += c·dh_r·x'_r, dh_r = −Σ_j dP_rj.
    parallelFor(rows, grain: rowGrainCount) { range in
        for row in range {
            let dr = dx + row * f, xr = x + row * f, pr = UnsafePointer(dP + row * m)
            var acc = Float8(), j = 0
            while j + 8 <= m { acc += pr.load8(j); j += 8 }
            var sum = horizontalSum(acc)
            while j < m { sum += pr[j]; j += 1 }
            let k = -sum * c * c
            let k8 = Float8(repeating: k)
            j = 0
            while j + 8 <= f { dr.store8(VectorMath.multiplyAdd(k8, xr.load8(j), dr.load8(j)), j); j += 8 }
            while j < f { dr[j] += k * xr[j]; j += 1 }
        }
    }
}

// MARK: - Plain reference (tests compare the kernels above with it)

/// P = x'·Ωᵀ and h = ½·|x'|² per row, in Double (x' = c·x).
func favorReferenceProjections(x: UnsafePointer<Float>, omega: UnsafePointer<Float>, rows: Int, features f: Int,
                               randomFeatures m: Int, inputScale c: Float) -> (p: [Double], h: [Double]) {
    var p = [Double](repeating: 0, count: rows * m), h = [Double](repeating: 0, count: rows)
    for r in 0..<rows {
        for k in 0..<f { let v = Double(c) * Double(x[r * f + k]); h[r] += 0.5 * v * v }
        for j in 0..<m {
            var acc = 0.0
            for k in 0..<f { acc += Double(c) * Double(x[r * f + k]) * Double(omega[j * f + k]) }
            p[r * m + j] = acc
        }
    }
    return (p, h)
}

/// Reference for `favorFeaturesForward` in Double, one thread.
func favorFeaturesForwardReference(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, omega: UnsafePointer<Float>,
                                          rows: Int, features f: Int, randomFeatures m: Int, rowsPerGroup: Int,
                                          inputScale c: Float, outputScale s: Float, stabilizer: Float) {
    let (p, h) = favorReferenceProjections(x: x, omega: omega, rows: rows, features: f, randomFeatures: m, inputScale: c)
    for g in 0..<(rows / rowsPerGroup) {
        let lo = g * rowsPerGroup * m, hi = lo + rowsPerGroup * m
        let maximum = p[lo..<hi].max()!
        for i in lo..<hi {
            out[i] = Float(Double(s) * (Foundation.exp(p[i] - h[i / m] - maximum) + Double(stabilizer)))
        }
    }
}

/// Reference for `favorFeaturesBackward` in Double (M held fixed), one thread.
func favorFeaturesBackwardReference(dx: UnsafeMutablePointer<Float>, gradOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                           omega: UnsafePointer<Float>, rows: Int, features f: Int, randomFeatures m: Int,
                                           rowsPerGroup: Int, inputScale c: Float, outputScale s: Float) {
    let (p, h) = favorReferenceProjections(x: x, omega: omega, rows: rows, features: f, randomFeatures: m, inputScale: c)
    for g in 0..<(rows / rowsPerGroup) {
        let lo = g * rowsPerGroup * m, hi = lo + rowsPerGroup * m
        let maximum = p[lo..<hi].max()!
        for r in (g * rowsPerGroup)..<((g + 1) * rowsPerGroup) {
            var dxr = [Double](repeating: 0, count: f), dh = 0.0
            for j in 0..<m {
                let dp = Double(gradOut[r * m + j]) * Double(s) * Foundation.exp(p[r * m + j] - h[r] - maximum)
                dh -= dp
                for k in 0..<f { dxr[k] += dp * Double(omega[j * f + k]) }
            }
            for k in 0..<f { dx[r * f + k] = Float(Double(c) * (dxr[k] + dh * Double(c) * Double(x[r * f + k]))) }
        }
    }
}
