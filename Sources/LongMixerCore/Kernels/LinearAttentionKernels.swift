import COpenBLAS
import Foundation

// Linear attention kernels: bidirectional (masked, normalised or not) and causal (chunked,
// optional per-head decay r ∈ (0, 1], normalised or not), with naive O(N²) double-precision references.
//
// Layout: q, k: [B, H, N, F]; v, out: [B, H, N, Dh]; one (b, h) pair is a "slice" of N rows.
//
// Both kernels work on *extended values*: the normaliser Σ_j w_ij (q_i·k_j) is the numerator of an extra
// value column of ones, so with ve_j = [m_j·v_j, m_j] (E = Dh + 1; m_j the key mask, 1 without one) one
// set of GEMMs gives numerator and denominator together, and the backward pass needs no separate
// rank-1 terms. Unnormalised calls use ve_j = m_j·v_j (E = Dh; v itself when there is no mask).
//
// Threads: slices are independent. With ≥ 2 slices and ≥ 2 threads they run over `parallelFor`, each
// slice's products on its worker's thread (`BLAS.withSingleThread`), which beats splitting these small
// GEMMs. A single slice runs on the calling thread (see `forEachSliceRange`).

/// Sizes of a linear-attention call: q, k: [B, H, N, F]; v, out: [B, H, N, Dh].
public struct LinearAttentionSizes: Equatable, Sendable {
    public var batch: Int, heads: Int, length: Int, features: Int, valueDimensions: Int

    public init(batch: Int, heads: Int, length: Int, features: Int, valueDimensions: Int) {
        self.batch = batch; self.heads = heads; self.length = length
        self.features = features; self.valueDimensions = valueDimensions
    }

    var slices: Int { batch * heads }
}

// MARK: - Shared helpers

/// C = alpha·op(A)·op(B) + beta·C on OpenBLAS with explicit leading dimensions (row-major), split over
/// `parallelFor` outside `BLAS.withSingleThread`.
/// op(A): [m, k] (A stored [k, m] when transA), op(B): [k, n], C: [m, n] with row stride ldc.
@inline(__always)
func stridedGemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, alpha: Float = 1,
                 _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                 beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    if m == 0 || n == 0 { return }
    if k == 0 {
        for i in 0..<m {
            let row = c + i * ldc
            for j in 0..<n { row[j] = beta == 0 ? 0 : beta * row[j] }
        }
        return
    }
    BLAS.splitOpenBLASGemm(transA, transB, m, n, k, alpha: alpha, a, lda, b, ldb, beta: beta, c, ldc)
}

/// Runs `body` over ranges of 0..<count slices: in parallel with single-threaded BLAS when there are
/// at least two slices and two threads. A single slice runs on the calling thread, with its products split
/// over the threads if `threadedBLASForOneSlice` (large GEMMs: the bidirectional kernel) or on one thread
/// otherwise (the causal kernel's chunk GEMMs, 64×64×256 and smaller, got slower, not faster, when
/// OpenBLAS split them: 3–4× slower forward+backward on the shared 2-core machine). `body` allocates its
/// scratch once per range.
func forEachSliceRange(_ count: Int, threadedBLASForOneSlice: Bool, _ body: (Range<Int>) -> Void) {
    if count <= 0 { return }
    BLAS.warmUp()
    if count >= 2 && Parallel.threadCount > 1 {
        BLAS.withSingleThread { parallelFor(count) { body($0) } }
    } else if threadedBLASForOneSlice || Parallel.threadCount == 1 {
        body(0..<count)
    } else {
        BLAS.withSingleThread { body(0..<count) }
    }
}

/// Scratch memory, zeroed (so a stray read can never see NaN garbage).
@inline(__always)
func allocateScratch(_ count: Int) -> UnsafeMutablePointer<Float> {
    let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    p.initialize(repeating: 0, count: max(count, 1))
    return p
}

/// ve[j] = [m_j·v_j, m_j] when `withOnes`, else m_j·v_j (m_j = 1 without a mask).
/// ve: [n, dh + (withOnes ? 1 : 0)]; v: [n, dh]; mask: [n] or nil
@inline(__always)
func buildExtendedValues(ve: UnsafeMutablePointer<Float>, v: UnsafePointer<Float>, mask: UnsafePointer<Float>?,
                         n: Int, dh: Int, withOnes: Bool) {
    let e = withOnes ? dh + 1 : dh
    for j in 0..<n {
        let m: Float = mask?[j] ?? 1
        let src = v + j * dh, dst = ve + j * e
        for c in 0..<dh { dst[c] = m * src[c] }
        if withOnes { dst[dh] = m }
    }
}

/// out_i = oe_i[0..<dh] / oe_i[dh], denominator_i = oe_i[dh].
/// out: [n, dh]; denominator: [n]; oe: [n, dh + 1]
@inline(__always)
func normalizeExtendedOutputs(out: UnsafeMutablePointer<Float>, denominator: UnsafeMutablePointer<Float>,
                              oe: UnsafePointer<Float>, n: Int, dh: Int) {
    let e = dh + 1
    for i in 0..<n {
        let row = oe + i * e, dst = out + i * dh
        let d = row[dh]
        denominator[i] = d
        let inv = 1 / d
        for c in 0..<dh { dst[c] = row[c] * inv }
    }
}

/// Gradient on the extended outputs of a normalised call (out = num / d):
/// ge_i = [g_i / d_i, −(g_i·out_i) / d_i]   (∂/∂num = g/d; ∂/∂d = −Σ_c g_c num_c / d² = −(g·out)/d).
/// ge: [n, dh + 1]; g, out: [n, dh]; denominator: [n]
@inline(__always)
func buildExtendedGradient(ge: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>, out: UnsafePointer<Float>,
                           denominator: UnsafePointer<Float>, n: Int, dh: Int) {
    let e = dh + 1
    for i in 0..<n {
        let gi = g + i * dh, oi = out + i * dh, dst = ge + i * e
        let inv = 1 / denominator[i]
        var dot: Float = 0
        for c in 0..<dh {
            dst[c] = gi[c] * inv
            dot += gi[c] * oi[c]
        }
        dst[dh] = -dot * inv
    }
}

// MARK: - Bidirectional linear attention

/// Forward of bidirectional linear attention. out_i = Σ_j m_j (q_i·k_j) v_j [ / Σ_j m_j q_i·k_j ].
/// Per slice: KVe = Kᵀ·Ve, Oe = Q·KVe (two GEMMs, O(N·F·Dh)).
/// out: [B,H,N,Dh]; kv: [B,H,F,E] saved for backward, E = Dh + 1 if normalized else Dh (last column = Σ_j m_j k_j);
/// denominator: [B,H,N] (normalized only; else nil); q, k: [B,H,N,F]; v: [B,H,N,Dh]; keyMask: [B,N] or nil
public func linearAttentionForward(out: UnsafeMutablePointer<Float>, kv: UnsafeMutablePointer<Float>,
                                   denominator: UnsafeMutablePointer<Float>?,
                                   q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                   keyMask: UnsafePointer<Float>?, sizes: LinearAttentionSizes, normalized: Bool) {
    let (H, N, F, Dh) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    check(!normalized || denominator != nil, "linearAttentionForward: normalized needs a denominator buffer")
    let E = normalized ? Dh + 1 : Dh
    let extended = normalized || keyMask != nil
    forEachSliceRange(sizes.slices, threadedBLASForOneSlice: true) { range in
        let ve = extended ? allocateScratch(N * E) : nil
        let oe = normalized ? allocateScratch(N * E) : nil
        defer { ve?.deallocate(); oe?.deallocate() }
        for s in range {
            let b = s / H
            let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dh, os = out + s * N * Dh
            let kvs = kv + s * F * E
            let mask = keyMask.map { $0 + b * N }
            if let ve { buildExtendedValues(ve: ve, v: vs, mask: mask, n: N, dh: Dh, withOnes: normalized) }
            let values = ve.map { UnsafePointer($0) } ?? vs
            stridedGemm(true, false, F, E, N, ks, F, values, E, beta: 0, kvs, E)
            if let oe {
                stridedGemm(false, false, N, E, F, qs, F, kvs, E, beta: 0, oe, E)
                normalizeExtendedOutputs(out: os, denominator: denominator! + s * N, oe: oe, n: N, dh: Dh)
            } else {
                stridedGemm(false, false, N, Dh, F, qs, F, kvs, E, beta: 0, os, Dh)
            }
        }
    }
}

/// Backward of bidirectional linear attention; accumulates (+=) into dq, dk, dv.
///
/// Derivation (one slice; ve_j = m_j·[v_j, 1] when normalised, KVe = Σ_j k_j ve_jᵀ, oe_i = KVeᵀ q_i,
/// out_i = oe_i[:Dh] / oe_i[Dh] = n_i / d_i). With g = ∂L/∂out: ∂L/∂n_i = g_i/d_i and
/// ∂L/∂d_i = −Σ_c g_ic n_ic / d_i² = −(g_i·out_i)/d_i, stacked as ge_i (unnormalised: ge = g). Then
/// dQ = Ge·KVeᵀ (= dN·KVᵀ + dd·ksumᵀ), dKVe = Qᵀ·Ge (= [Qᵀ·dN, Qᵀ·dd] = [dKV, dksum]),
/// dK = Ve·dKVeᵀ (= diag(m)(V·dKVᵀ + 1·dksumᵀ), masked rows zero), dV = diag(m)·K·dKV.
/// dq, dk: [B,H,N,F]; dv: [B,H,N,Dh]; gradOut, out: [B,H,N,Dh]; kv, denominator: as saved by the forward;
/// q, k: [B,H,N,F]; v: [B,H,N,Dh]; keyMask: [B,N] or nil
public func linearAttentionBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
                                    gradOut: UnsafePointer<Float>, out: UnsafePointer<Float>,
                                    kv: UnsafePointer<Float>, denominator: UnsafePointer<Float>?,
                                    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                    keyMask: UnsafePointer<Float>?, sizes: LinearAttentionSizes, normalized: Bool) {
    let (H, N, F, Dh) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    check(!normalized || denominator != nil, "linearAttentionBackward: normalized needs the saved denominator")
    let E = normalized ? Dh + 1 : Dh
    let extended = normalized || keyMask != nil
    forEachSliceRange(sizes.slices, threadedBLASForOneSlice: true) { range in
        let ve = extended ? allocateScratch(N * E) : nil
        let ge = normalized ? allocateScratch(N * E) : nil
        let dkv = allocateScratch(F * E)
        let masked = keyMask != nil ? allocateScratch(N * Dh) : nil
        defer { ve?.deallocate(); ge?.deallocate(); dkv.deallocate(); masked?.deallocate() }
        for s in range {
            let b = s / H
            let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dh
            let gs = gradOut + s * N * Dh, outs = out + s * N * Dh
            let kvs = kv + s * F * E
            let dqs = dq + s * N * F, dks = dk + s * N * F, dvs = dv + s * N * Dh
            let mask = keyMask.map { $0 + b * N }
            if let ve { buildExtendedValues(ve: ve, v: vs, mask: mask, n: N, dh: Dh, withOnes: normalized) }
            let values = ve.map { UnsafePointer($0) } ?? vs
            if let ge { buildExtendedGradient(ge: ge, g: gs, out: outs, denominator: denominator! + s * N, n: N, dh: Dh) }
            let grad = ge.map { UnsafePointer($0) } ?? gs
            stridedGemm(false, true, N, F, E, grad, E, kvs, E, beta: 1, dqs, F)           // dQ += Ge·KVeᵀ
            stridedGemm(true, false, F, E, N, qs, F, grad, E, beta: 0, dkv, E)            // dKVe = Qᵀ·Ge
            stridedGemm(false, true, N, F, E, values, E, dkv, E, beta: 1, dks, F)         // dK += Ve·dKVeᵀ
            if let masked, let mask {                                                      // dV += diag(m)·K·dKV
                stridedGemm(false, false, N, Dh, F, ks, F, dkv, E, beta: 0, masked, Dh)
                for j in 0..<N {
                    let m = mask[j]
                    if m == 0 { continue }
                    let src = masked + j * Dh, dst = dvs + j * Dh
                    for c in 0..<Dh { dst[c] += m * src[c] }
                }
            } else {
                stridedGemm(false, false, N, Dh, F, ks, F, dkv, E, beta: 1, dvs, Dh)
            }
        }
    }
}

// MARK: - Causal (chunked, decayed) linear attention

/// r^t for t = 0...chunk, or nil when r = 1 (no decay: every weight is 1 and scalings are skipped).
/// powers: [chunk + 1]
@inline(__always)
func fillDecayPowers(_ powers: UnsafeMutablePointer<Float>, decay r: Float, chunk: Int) -> UnsafePointer<Float>? {
    if r == 1 { return nil }
    for t in 0...chunk { powers[t] = Float(Foundation.pow(Double(r), Double(t))) }
    return UnsafePointer(powers)
}

/// In place: s[a, b] *= r^(a−b) for b ≤ a, s[a, b] = 0 for b > a.   s: [n, n]; powers: [≥ n] or nil (r = 1)
@inline(__always)
func applyCausalDecayMask(_ s: UnsafeMutablePointer<Float>, n: Int, powers: UnsafePointer<Float>?) {
    for a in 0..<n {
        let row = s + a * n
        if let pw = powers { for b in 0...a { row[b] *= pw[a - b] } }
        var b = a + 1
        while b < n { row[b] = 0; b += 1 }
    }
}

/// dst[i, :] = scale[i] · src[i, :].   dst, src: [n, width]; scale: [n]
@inline(__always)
func scaleRows(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, n: Int, width: Int, scale: (Int) -> Float) {
    for i in 0..<n {
        let f = scale(i), s = src + i * width, d = dst + i * width
        for c in 0..<width { d[c] = f * s[c] }
    }
}

/// S ← r^n S + K_cᵀ diag(r^(n−1−b)) Ve_c; for the first chunk the old S (scratch) is ignored.
/// state: [F, E]; kc: [n, F]; vc: [n, E]; powers: [C + 1] or nil; rows: [n, E] scratch
@inline(__always)
func advanceChunkState(_ state: UnsafeMutablePointer<Float>, kc: UnsafePointer<Float>, vc: UnsafePointer<Float>, n: Int,
                       features F: Int, width E: Int, first: Bool, powers pw: UnsafePointer<Float>?,
                       rows: UnsafeMutablePointer<Float>) {
    if let pw {
        scaleRows(rows, vc, n: n, width: E) { pw[n - 1 - $0] }
        stridedGemm(true, false, F, E, n, kc, F, rows, E, beta: first ? 0 : pw[n], state, E)
    } else {
        stridedGemm(true, false, F, E, n, kc, F, vc, E, beta: first ? 0 : 1, state, E)
    }
}

/// Per-range scratch of the chunked causal kernels.
struct CausalScratch {
    let scores: UnsafeMutablePointer<Float>    // [C, C]
    let scores2: UnsafeMutablePointer<Float>   // [C, C]
    let state: UnsafeMutablePointer<Float>     // [F, E]: S (forward) or dS (reverse scan)
    let rows: UnsafeMutablePointer<Float>      // [C, E]
    let rows2: UnsafeMutablePointer<Float>     // [C, E]
    let powers: UnsafeMutablePointer<Float>    // [C + 1]
    let extended: UnsafeMutablePointer<Float>? // [N, E] (Ve), normalized only
    let extended2: UnsafeMutablePointer<Float>? // [N, E] (Oe or Ge), normalized only

    init(chunk C: Int, length N: Int, features F: Int, width E: Int, normalized: Bool) {
        scores = allocateScratch(C * C); scores2 = allocateScratch(C * C)
        state = allocateScratch(F * E); rows = allocateScratch(C * E); rows2 = allocateScratch(C * E)
        powers = allocateScratch(C + 1)
        extended = normalized ? allocateScratch(N * E) : nil
        extended2 = normalized ? allocateScratch(N * E) : nil
    }

    func deallocate() {
        scores.deallocate(); scores2.deallocate(); state.deallocate(); rows.deallocate(); rows2.deallocate()
        powers.deallocate(); extended?.deallocate(); extended2?.deallocate()
    }
}

/// Chunked causal attention on one slice, unnormalised, extended values:
/// oe_i = Σ_{j≤i} r^(i−j) (q_i·k_j) ve_j.
/// A chunk starting at c0 with n rows (local a = i − c0, b = j − c0) and S = Σ_{j<c0} r^(c0−1−j) k_j ve_jᵀ:
/// Oe_c = (Q_c K_cᵀ ⊙ W) Ve_c + diag(r^(a+1)) Q_c S,  W[a,b] = r^(a−b) (b ≤ a), 0 above the diagonal;
/// S ← r^n S + K_cᵀ diag(r^(n−1−b)) Ve_c. Only powers r^0…r^C appear, so nothing overflows for any N.
/// oe: [N, E]; q, k: [N, F]; ve: [N, E]; powers: [C + 1] or nil (r = 1)
func causalChunkedForwardSlice(oe: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                               ve: UnsafePointer<Float>, length N: Int, features F: Int, width E: Int, chunk C: Int,
                               powers pw: UnsafePointer<Float>?, scratch: CausalScratch) {
    let scores = scratch.scores, state = scratch.state, rows = scratch.rows
    var c0 = 0
    while c0 < N {
        let n = min(C, N - c0)
        let qc = q + c0 * F, kc = k + c0 * F, vc = ve + c0 * E, oc = oe + c0 * E
        stridedGemm(false, true, n, n, F, qc, F, kc, F, beta: 0, scores, n)
        applyCausalDecayMask(scores, n: n, powers: pw)
        var beta: Float = 0
        if c0 > 0 {
            stridedGemm(false, false, n, E, F, qc, F, state, E, beta: 0, oc, E)
            if let pw { scaleRows(oc, oc, n: n, width: E) { pw[$0 + 1] } }
            beta = 1
        }
        stridedGemm(false, false, n, E, n, scores, n, vc, E, beta: beta, oc, E)
        if c0 + n < N {
            advanceChunkState(state, kc: kc, vc: vc, n: n, features: F, width: E, first: c0 == 0, powers: pw, rows: rows)
        }
        c0 += n
    }
}

/// Backward of `causalChunkedForwardSlice`; accumulates (+=) into dq, dk and the first `dvWidth` columns of
/// the extended value gradient (written to dv with row stride dvWidth).
/// Pass 1 (forward over chunks, recomputing S): dQ_c += (Ge_c Ve_cᵀ ⊙ W) K_c + diag(r^(a+1)) Ge_c Sᵀ.
/// Pass 2 (reverse scan, dS = ∂L/∂S after chunk c, 0 after the last):
/// dK_c += (Ge_c Ve_cᵀ ⊙ W)ᵀ Q_c + diag(r^(n−1−b)) Ve_c dSᵀ, dVe_c += (Q_c K_cᵀ ⊙ W)ᵀ Ge_c + diag(r^(n−1−b)) K_c dS,
/// then dS ← r^n dS + Q_cᵀ diag(r^(a+1)) Ge_c. No subtraction of states, so no cancellation for long N.
/// dq, dk: [N, F]; dv: [N, dvWidth]; ge: [N, E]; q, k: [N, F]; ve: [N, E]; powers: [C + 1] or nil
func causalChunkedBackwardSlice(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                                dv: UnsafeMutablePointer<Float>, dvWidth Dv: Int, ge: UnsafePointer<Float>,
                                q: UnsafePointer<Float>, k: UnsafePointer<Float>, ve: UnsafePointer<Float>,
                                length N: Int, features F: Int, width E: Int, chunk C: Int,
                                powers pw: UnsafePointer<Float>?, scratch: CausalScratch) {
    let scores = scratch.scores, p = scratch.scores2, state = scratch.state
    let rows = scratch.rows, rows2 = scratch.rows2
    // Pass 1: dQ.
    var c0 = 0
    while c0 < N {
        let n = min(C, N - c0)
        let kc = k + c0 * F, vc = ve + c0 * E, gc = ge + c0 * E, dqc = dq + c0 * F
        stridedGemm(false, true, n, n, E, gc, E, vc, E, beta: 0, p, n)
        applyCausalDecayMask(p, n: n, powers: pw)
        stridedGemm(false, false, n, F, n, p, n, kc, F, beta: 1, dqc, F)
        if c0 > 0 {
            var src = gc
            if let pw { scaleRows(rows, gc, n: n, width: E) { pw[$0 + 1] }; src = UnsafePointer(rows) }
            stridedGemm(false, true, n, F, E, src, E, state, E, beta: 1, dqc, F)
        }
        if c0 + n < N {
            advanceChunkState(state, kc: kc, vc: vc, n: n, features: F, width: E, first: c0 == 0, powers: pw, rows: rows)
        }
        c0 += n
    }
    // Pass 2: dK, dV by the reverse scan; `state` now holds dS.
    var hasState = false
    c0 = ((N - 1) / C) * C
    while c0 >= 0 {
        let n = min(C, N - c0)
        let qc = q + c0 * F, kc = k + c0 * F, vc = ve + c0 * E, gc = ge + c0 * E
        let dkc = dk + c0 * F, dvc = dv + c0 * Dv
        stridedGemm(false, true, n, n, F, qc, F, kc, F, beta: 0, scores, n)
        applyCausalDecayMask(scores, n: n, powers: pw)
        stridedGemm(false, true, n, n, E, gc, E, vc, E, beta: 0, p, n)
        applyCausalDecayMask(p, n: n, powers: pw)
        stridedGemm(true, false, n, F, n, p, n, qc, F, beta: 1, dkc, F)
        stridedGemm(true, false, n, Dv, n, scores, n, gc, E, beta: 1, dvc, Dv)
        if hasState {
            if let pw {
                scaleRows(rows, vc, n: n, width: E) { pw[n - 1 - $0] }
                stridedGemm(false, true, n, F, E, rows, E, state, E, beta: 1, dkc, F)
                stridedGemm(false, false, n, Dv, F, kc, F, state, E, beta: 0, rows2, Dv)
                for b in 0..<n {
                    let f = pw[n - 1 - b], src = rows2 + b * Dv, dst = dvc + b * Dv
                    for c in 0..<Dv { dst[c] += f * src[c] }
                }
            } else {
                stridedGemm(false, true, n, F, E, vc, E, state, E, beta: 1, dkc, F)
                stridedGemm(false, false, n, Dv, F, kc, F, state, E, beta: 1, dvc, Dv)
            }
        }
        if c0 > 0 {
            var src = gc
            if let pw { scaleRows(rows, gc, n: n, width: E) { pw[$0 + 1] }; src = UnsafePointer(rows) }
            stridedGemm(true, false, F, E, n, qc, F, src, E, beta: hasState ? (pw?[n] ?? 1) : 0, state, E)
            hasState = true
        }
        c0 -= C
    }
}

/// Forward of causal linear attention with optional per-head decay:
/// out_i = Σ_{j≤i} r_h^(i−j) (q_i·k_j) v_j [ / Σ_{j≤i} r_h^(i−j) q_i·k_j ].
/// out: [B,H,N,Dh]; denominator: [B,H,N] (normalized only, saved for backward; else nil);
/// q, k: [B,H,N,F]; v: [B,H,N,Dh]; decay: [H] in (0, 1] or nil (= 1)
public func causalLinearAttentionForward(out: UnsafeMutablePointer<Float>, denominator: UnsafeMutablePointer<Float>?,
                                         q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                         decay: [Float]?, sizes: LinearAttentionSizes, normalized: Bool, chunkSize: Int) {
    let (H, N, F, Dh) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    check(chunkSize >= 1, "causalLinearAttentionForward: chunk size must be ≥ 1, got \(chunkSize)")
    check(!normalized || denominator != nil, "causalLinearAttentionForward: normalized needs a denominator buffer")
    let C = min(chunkSize, max(N, 1))
    let E = normalized ? Dh + 1 : Dh
    forEachSliceRange(sizes.slices, threadedBLASForOneSlice: false) { range in
        let scratch = CausalScratch(chunk: C, length: N, features: F, width: E, normalized: normalized)
        defer { scratch.deallocate() }
        for s in range {
            let pw = fillDecayPowers(scratch.powers, decay: decay?[s % H] ?? 1, chunk: C)
            let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dh, os = out + s * N * Dh
            if normalized {
                let ve = scratch.extended!, oe = scratch.extended2!
                buildExtendedValues(ve: ve, v: vs, mask: nil, n: N, dh: Dh, withOnes: true)
                causalChunkedForwardSlice(oe: oe, q: qs, k: ks, ve: ve, length: N, features: F, width: E, chunk: C,
                                          powers: pw, scratch: scratch)
                normalizeExtendedOutputs(out: os, denominator: denominator! + s * N, oe: oe, n: N, dh: Dh)
            } else {
                causalChunkedForwardSlice(oe: os, q: qs, k: ks, ve: vs, length: N, features: F, width: E, chunk: C,
                                          powers: pw, scratch: scratch)
            }
        }
    }
}

/// Backward of causal linear attention; accumulates (+=) into dq, dk, dv. Normalised calls go through the
/// extended gradient ge_i = [g_i/d_i, −(g_i·out_i)/d_i] (see `linearAttentionBackward`).
/// dq, dk: [B,H,N,F]; dv: [B,H,N,Dh]; gradOut, out: [B,H,N,Dh]; denominator: [B,H,N] or nil;
/// q, k: [B,H,N,F]; v: [B,H,N,Dh]; decay: [H] or nil
public func causalLinearAttentionBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                                          dv: UnsafeMutablePointer<Float>,
                                          gradOut: UnsafePointer<Float>, out: UnsafePointer<Float>,
                                          denominator: UnsafePointer<Float>?,
                                          q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                          decay: [Float]?, sizes: LinearAttentionSizes, normalized: Bool, chunkSize: Int) {
    let (H, N, F, Dh) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    check(chunkSize >= 1, "causalLinearAttentionBackward: chunk size must be ≥ 1, got \(chunkSize)")
    check(!normalized || denominator != nil, "causalLinearAttentionBackward: normalized needs the saved denominator")
    let C = min(chunkSize, max(N, 1))
    let E = normalized ? Dh + 1 : Dh
    forEachSliceRange(sizes.slices, threadedBLASForOneSlice: false) { range in
        let scratch = CausalScratch(chunk: C, length: N, features: F, width: E, normalized: normalized)
        defer { scratch.deallocate() }
        for s in range {
            let pw = fillDecayPowers(scratch.powers, decay: decay?[s % H] ?? 1, chunk: C)
            let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dh
            let gs = gradOut + s * N * Dh
            let dqs = dq + s * N * F, dks = dk + s * N * F, dvs = dv + s * N * Dh
            if normalized {
                let ve = scratch.extended!, ge = scratch.extended2!
                buildExtendedValues(ve: ve, v: vs, mask: nil, n: N, dh: Dh, withOnes: true)
                buildExtendedGradient(ge: ge, g: gs, out: out + s * N * Dh, denominator: denominator! + s * N, n: N, dh: Dh)
                causalChunkedBackwardSlice(dq: dqs, dk: dks, dv: dvs, dvWidth: Dh, ge: ge, q: qs, k: ks, ve: ve,
                                           length: N, features: F, width: E, chunk: C, powers: pw, scratch: scratch)
            } else {
                causalChunkedBackwardSlice(dq: dqs, dk: dks, dv: dvs, dvWidth: Dh, ge: gs, q: qs, k: ks, ve: vs,
                                           length: N, features: F, width: E, chunk: C, powers: pw, scratch: scratch)
            }
        }
    }
}

// MARK: - Naive references (O(N²), double precision)

/// Reference forward, both variants: out_i = Σ_j w_ij (q_i·k_j) v_j [ / Σ_j w_ij q_i·k_j ] with
/// w_ij = m_j (bidirectional) or m_j·r_h^(i−j)·[j ≤ i] (causal), every score formed explicitly.
/// out: [B,H,N,Dh]; q, k: [B,H,N,F]; v: [B,H,N,Dh]; keyMask: [B,N] or nil; decay: [H] or nil (causal only)
func linearAttentionReferenceForward(out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                            v: UnsafePointer<Float>, keyMask: UnsafePointer<Float>?, decay: [Float]?,
                                            causal: Bool, normalized: Bool, sizes: LinearAttentionSizes) {
    let (H, N, F, Dh) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    check(causal || decay == nil, "linearAttentionReferenceForward: decay is only defined for causal attention")
    var numerator = [Double](repeating: 0, count: Dh)
    for s in 0..<sizes.slices {
        let b = s / H, r = Double(decay?[s % H] ?? 1)
        let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dh, os = out + s * N * Dh
        for i in 0..<N {
            for c in 0..<Dh { numerator[c] = 0 }
            var den = 0.0
            for j in 0..<(causal ? i + 1 : N) {
                var w = keyMask.map { Double($0[b * N + j]) } ?? 1
                if causal { w *= Foundation.pow(r, Double(i - j)) }
                var score = 0.0
                for f in 0..<F { score += Double(qs[i * F + f]) * Double(ks[j * F + f]) }
                for c in 0..<Dh { numerator[c] += w * score * Double(vs[j * Dh + c]) }
                den += w * score
            }
            for c in 0..<Dh { os[i * Dh + c] = Float(normalized ? numerator[c] / den : numerator[c]) }
        }
    }
}

/// Reference backward of `linearAttentionReferenceForward`, accumulating (+=), straight from the scores:
/// with s_ij = q_i·k_j, n_i = Σ_j w_ij s_ij v_j, d_i = Σ_j w_ij s_ij, out_i = n_i/d_i:
/// ∂L/∂s_ij = w_ij (g_i·v_j / d_i − (g_i·n_i)/d_i²) (unnormalised: w_ij g_i·v_j), dq_i += ∂s_ij k_j,
/// dk_j += ∂s_ij q_i, dv_j += w_ij s_ij g_i / d_i.
/// dq, dk: [B,H,N,F]; dv: [B,H,N,Dh]; gradOut: [B,H,N,Dh]; the rest as the forward
func linearAttentionReferenceBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
                                             gradOut: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                             v: UnsafePointer<Float>, keyMask: UnsafePointer<Float>?, decay: [Float]?,
                                             causal: Bool, normalized: Bool, sizes: LinearAttentionSizes) {
    let (H, N, F, Dh) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    check(causal || decay == nil, "linearAttentionReferenceBackward: decay is only defined for causal attention")
    for s in 0..<sizes.slices {
        let b = s / H, r = Double(decay?[s % H] ?? 1)
        let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dh, gs = gradOut + s * N * Dh
        var gq = [Double](repeating: 0, count: N * F), gk = gq, gv = [Double](repeating: 0, count: N * Dh)
        func weight(_ i: Int, _ j: Int) -> Double {
            var w = keyMask.map { Double($0[b * N + j]) } ?? 1
            if causal { w *= Foundation.pow(r, Double(i - j)) }
            return w
        }
        func score(_ i: Int, _ j: Int) -> Double {
            var t = 0.0
            for f in 0..<F { t += Double(qs[i * F + f]) * Double(ks[j * F + f]) }
            return t
        }
        for i in 0..<N {
            let js = 0..<(causal ? i + 1 : N)
            var den = 1.0, gDotN = 0.0
            if normalized {
                den = 0
                var num = [Double](repeating: 0, count: Dh)
                for j in js {
                    let ws = weight(i, j) * score(i, j)
                    den += ws
                    for c in 0..<Dh { num[c] += ws * Double(vs[j * Dh + c]) }
                }
                for c in 0..<Dh { gDotN += Double(gs[i * Dh + c]) * num[c] }
            }
            for j in js {
                let w = weight(i, j), sij = score(i, j)
                var gDotV = 0.0
                for c in 0..<Dh { gDotV += Double(gs[i * Dh + c]) * Double(vs[j * Dh + c]) }
                let ds = normalized ? w * (gDotV / den - gDotN / (den * den)) : w * gDotV
                for f in 0..<F {
                    gq[i * F + f] += ds * Double(ks[j * F + f])
                    gk[j * F + f] += ds * Double(qs[i * F + f])
                }
                for c in 0..<Dh { gv[j * Dh + c] += w * sij * Double(gs[i * Dh + c]) / den }
            }
        }
        for e in 0..<(N * F) { dq[s * N * F + e] += Float(gq[e]); dk[s * N * F + e] += Float(gk[e]) }
        for e in 0..<(N * Dh) { dv[s * N * Dh + e] += Float(gv[e]) }
    }
}

// MARK: - Recurrent step (generation)

/// One position of the decayed causal recurrence for every slice:
/// S ← r S + k vᵀ, z ← r z + k, out = Sᵀq [ / (q·z) ].
/// out: [B·H, Dh]; state: [B·H, F, Dh]; normalizer: [B·H, F] (normalized only, else nil);
/// q, k: [B·H, F]; v: [B·H, Dh]; decay: [H] or nil
public func causalLinearAttentionStep(out: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>,
                                      normalizer: UnsafeMutablePointer<Float>?,
                                      q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                      decay: [Float]?, slices: Int, heads H: Int, features F: Int, valueDimensions Dh: Int) {
    for s in 0..<slices {
        let r = decay?[s % H] ?? 1
        let S = state + s * F * Dh, qs = q + s * F, ks = k + s * F, vs = v + s * Dh, os = out + s * Dh
        for c in 0..<Dh { os[c] = 0 }
        for f in 0..<F {
            let row = S + f * Dh, kf = ks[f], qf = qs[f]
            for c in 0..<Dh {
                let updated = r * row[c] + kf * vs[c]
                row[c] = updated
                os[c] += qf * updated
            }
        }
        if let normalizer {
            let z = normalizer + s * F
            var den: Float = 0
            for f in 0..<F {
                z[f] = r * z[f] + ks[f]
                den += qs[f] * z[f]
            }
            let inv = 1 / den
            for c in 0..<Dh { os[c] *= inv }
        }
    }
}
