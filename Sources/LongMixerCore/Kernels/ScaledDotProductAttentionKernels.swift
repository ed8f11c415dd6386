import Foundation
import LongMixerWideKernels

// Fused scaled-dot-product softmax attention (flash-attention style, on CPU), with a naive O(N²)-memory
// double-precision reference.
//
// Layout: q, k: [B, H, N, F]; v, out: [B, H, N, Dv]; one (b, h) pair is a "slice". Scores of one slice:
//   S_ij = scale·q_i·k_j + bias_j (+ causal: −∞ for j > i),  bias_j = (1 − m_j)·(−10000) with a key mask
// (HF BERT's additive mask: a padded key keeps a tiny, finite weight, and a row whose keys are all padded
// is the plain softmax of its shifted scores — not NaN), P = softmax_j(S), out = P·V.
//
// Forward, per slice and per block of R query rows: S_blk = scale·Q_blk·Kᵀ (one GEMM into an R×N scratch
// per worker), bias and row softmax in place (max, exp, sum), O_blk = P_blk·V (one GEMM). Only the output
// and two statistics per row, the max m_i and 1/Σ_j exp(S_ij − m_i), are saved (O(N) extra memory instead
// of the unfused path's B·H·N² probabilities); the backward recomputes P_blk = exp(S_blk − m)·(1/Σ) from
// Q_blk and K with the same GEMM and the same float operations, so it gets the forward's P bit for bit.
// (A single log-sum-exp m + log Σ would be rounded to the ulp of m, ≈ 1e-3 when every key of a row is
// padded and m ≈ −10000, and would put a 5e-4 relative error on that row's recomputed P.)
//
// Backward, per row block (g = ∂L/∂out, D_i = g_i·out_i = Σ_j P_ij (g_i·v_j)):
//   dV += P_blkᵀ·g_blk;  dP = g_blk·Vᵀ;  dS = P ⊙ (dP − D);  dQ_blk = scale·dS·K;  dK += scale·dSᵀ·Q_blk.
// Causal: a block of rows r0..<r1 only sees keys 0..<r1, so every GEMM runs on C = r1 columns (half the
// work overall); entries j > i inside the block are set to P = 0 (hence dS = 0).
//
// Head sizes F and Dv of whole vectors: the same math in flash-attention order on small register-tiled GEMMs
// without packing, with every operand of a block pair in L1/L2 (`scaledDotProductAttentionForwardKeyBlocks`,
// `…BackwardKeyBlocks`): forward per query block over key blocks with an online softmax; backward per key
// block (dK, dV rows cache-resident) over query blocks (dQ_blk += scale·dS·K_blk). One algorithm, generic
// over its micro-kernels (`AttentionBlockKernels`, AttentionBlockKernels.swift): on an AVX-512 CPU
// (`CPUFeatures.avx512`) with F and Dv multiples of 16 the 16-lane GEMM of LongMixerWideKernels (8×32 tiles);
// otherwise, with F and Dv multiples of 8, the 8-lane AVX2 + FMA GEMM (6×16 tiles). The row-block scheme
// above repacks K and V in every GEMM and streams them and an R×N scratch (2 MB at N = 4096, R = 128)
// through L3 for every few rows; the flash order keeps a block pair's operands in L1/L2, so the GEMMs run
// near their in-cache rate. Other head sizes: OpenBLAS with the row blocks above and, on an AVX-512 CPU,
// 16-lane softmax rows.
//
// Threads: one work item is a slice, or a part of a slice's row blocks (key blocks in the key-blocked backward)
// when there are fewer slices than threads (`ScaledDotProductAttentionPlan`). Items run over `parallelFor` with their products on one thread
// (`BLAS.withSingleThread`). A slice owned by one item accumulates dK and dV in place; a slice split over
// several items gets one dK/dV partial per item (dQ in the key-blocked backward, whose items own key
// blocks), added in item order afterwards. Blocks, items and
// partial sums depend only on the sizes and the thread count, so results are deterministic for a fixed
// thread count.

/// Sizes of a scaled-dot-product attention call: q, k: [B, H, N, F]; v, out: [B, H, N, Dv].
public struct AttentionSizes: Equatable, Sendable {
    public var batch: Int, heads: Int, length: Int, features: Int, valueDimensions: Int

    public init(batch: Int, heads: Int, length: Int, features: Int, valueDimensions: Int) {
        self.batch = batch; self.heads = heads; self.length = length
        self.features = features; self.valueDimensions = valueDimensions
    }

    public var slices: Int { batch * heads }
}

/// How a call is cut into row blocks and work items.
struct ScaledDotProductAttentionPlan {
    /// Rows per block (query rows; keys in the key-blocked backward; the key-blocked kernels pass their block
    /// sizes). Default (OpenBLAS row blocks), never fewer than 16: 128 up to N = 8192, then fewer (an R×N
    /// float scratch, two in the backward, of at most 4 MB); each block's GEMMs repack all of K and V, so
    /// taller blocks pack less per FLOP, up to the point where the scratch leaves L2.
    let rowBlock: Int
    let blocks: Int
    /// Items per slice (1 unless there are fewer slices than threads).
    let partsPerSlice: Int
    let slices: Int

    init(sizes: AttentionSizes, threads: Int, rowBlock: Int = 0) {
        let n = max(sizes.length, 1)
        let r = rowBlock > 0 ? rowBlock : max(16, min(128, 1_048_576 / n))
        self.rowBlock = r
        blocks = (n + r - 1) / r
        slices = sizes.slices
        partsPerSlice = slices >= threads ? 1 : min(blocks, (threads + slices - 1) / max(slices, 1))
    }

    var items: Int { slices * partsPerSlice }

    /// (slice, block range) of work item `w`.
    func item(_ w: Int) -> (slice: Int, blocks: Range<Int>) {
        let s = w / partsPerSlice, p = w % partsPerSlice
        return (s, (blocks * p / partsPerSlice)..<(blocks * (p + 1) / partsPerSlice))
    }

    /// Runs `body` for every item: over `parallelFor` with single-threaded BLAS when there are two or
    /// more items and threads, else on the calling thread (with its products split over the threads).
    func forEachItem(_ body: (Int) -> Void) {
        if items <= 0 { return }
        BLAS.warmUp()
        if items >= 2 && Parallel.threadCount > 1 {
            BLAS.withSingleThread { parallelFor(items) { r in for w in r { body(w) } } }
        } else {
            for w in 0..<items { body(w) }
        }
    }
}

/// bias_j = (1 − m_j)·(−10000) for one batch row of the key mask.   bias, mask: [n]
@inline(__always)
func attentionMaskBias(_ bias: UnsafeMutablePointer<Float>, _ mask: UnsafePointer<Float>, _ n: Int) {
    for j in 0..<n { bias[j] = (1 - mask[j]) * attentionMaskedKeyBias }
}

/// The additive score of a padded key (HF BERT's extended attention mask).
public let attentionMaskedKeyBias: Float = -10000

/// x[j] += bias[j] for j < n, returning max_j x[j] (after the bias).
@inline(__always)
func addBiasAndMax(_ x: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>?, _ n: Int) -> Float {
    if let bias {
        var m8 = Float8(repeating: -.infinity), j = 0
        while j + 8 <= n {
            let v = x.load8(j) + bias.load8(j)
            x.store8(v, j)
            m8 = m8.replacing(with: v, where: v .> m8)
            j += 8
        }
        var m = horizontalMax(m8)
        while j < n { let v = x[j] + bias[j]; x[j] = v; if v > m { m = v }; j += 1 }
        return m
    }
    return rowMax(UnsafePointer(x), n)
}

/// Softmax of x[0..<n] in place, with bias added first; returns the row's max (after the bias) and 1/Σ exp(x − max).
@inline(__always)
func softmaxRowInPlace(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, _ n: Int) -> (max: Float, inverseSum: Float) {
    let m = addBiasAndMax(x, bias, n)
    let inv = exponentiateAndNormalizeRow(x, from: x, max: m, n)
    return (m, inv)
}

/// x[j] = exp(x[j] + bias[j] − max)·inverseSum for j < n: the recomputed probabilities of one row, with
/// the operations of `softmaxRowInPlace` (so the same scores give the same bits).
@inline(__always)
func probabilitiesFromStatistics(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, max m: Float,
                                 inverseSum inv: Float, _ n: Int) {
    let m8 = Float8(repeating: m), inv8 = Float8(repeating: inv)
    var j = 0
    if let bias {
        while j + 8 <= n { x.store8(VectorMath.expNonPositive((x.load8(j) + bias.load8(j)) - m8) * inv8, j); j += 8 }
        while j < n { x[j] = VectorMath.exp((x[j] + bias[j]) - m) * inv; j += 1 }
    } else {
        while j + 16 <= n {
            let e0 = VectorMath.expNonPositive(x.load8(j) - m8), e1 = VectorMath.expNonPositive(x.load8(j + 8) - m8)
            x.store8(e0 * inv8, j); x.store8(e1 * inv8, j + 8)
            j += 16
        }
        while j + 8 <= n { x.store8(VectorMath.expNonPositive(x.load8(j) - m8) * inv8, j); j += 8 }
        while j < n { x[j] = VectorMath.exp(x[j] - m) * inv; j += 1 }
    }
}

/// dp[j] = p[j]·(dp[j] − d) for j < n (dS from dP, P and D_i = g_i·out_i).
@inline(__always)
func softmaxGradientRow(_ dp: UnsafeMutablePointer<Float>, _ p: UnsafePointer<Float>, _ d: Float, _ n: Int) {
    let d8 = Float8(repeating: d)
    var j = 0
    while j + 8 <= n { dp.store8(p.load8(j) * (dp.load8(j) - d8), j); j += 8 }
    while j < n { dp[j] = p[j] * (dp[j] - d); j += 1 }
}

/// xT[c·n + j] = x[j·width + c]: a slice's keys or values, transposed.   xT: [width, n]; x: [n, width]
func transposeSlice(_ xT: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, n: Int, width: Int) {
    // Strips of 8 keys: reads 8 rows of x, writes 8 consecutive floats of each row of xT.
    var j0 = 0
    while j0 < n {
        let j1 = min(n, j0 + 8)
        for c in 0..<width { for j in j0..<j1 { xT[c * n + j] = x[j * width + c] } }
        j0 = j1
    }
}

/// The kernels that run a call; the forward and the backward of one call pick the same, which the
/// backward's recomputed P relies on.
enum AttentionKernelPath: Equatable {
    /// Flash order on the 16-lane kernels (`WideAttentionBlockKernels`).
    case keyBlocks16
    /// Flash order on the 8-lane kernels (`AVX2AttentionBlockKernels`).
    case keyBlocks8
    /// OpenBLAS row blocks, with 16-lane softmax rows when `wideRows`.
    case rowBlocks(wideRows: Bool)

    /// Key blocks on 16 lanes: an AVX-512 CPU (`CPUFeatures.avx512`), head sizes that are whole 16-lane vectors,
    /// wide kernels allowed. Else key blocks on 8 lanes: head sizes of whole 8-lane vectors. Else (or with
    /// `allowKeyBlocks` false) the row blocks. Tests disable either to run every path.
    init(_ sizes: AttentionSizes, allowWideKernels: Bool, allowKeyBlocks: Bool) {
        let wide = allowWideKernels && CPUFeatures.avx512
        if allowKeyBlocks && wide && sizes.features % 16 == 0 && sizes.valueDimensions % 16 == 0 {
            self = .keyBlocks16
        } else if allowKeyBlocks && sizes.features % 8 == 0 && sizes.valueDimensions % 8 == 0 {
            self = .keyBlocks8
        } else {
            self = .rowBlocks(wideRows: wide)
        }
    }
}

// MARK: - Forward

/// Forward of fused scaled-dot-product attention.
/// out: [B,H,N,Dv]; statistics: [B,H,N,2] saved for backward: (max, 1/Σ exp(S − max)) of each row of the
/// biased, scaled scores;
/// q, k: [B,H,N,F]; v: [B,H,N,Dv]; keyMask: [B,N] of 0/1 or nil. `rowBlock` > 0 overrides the plan (tests);
/// `allowWideKernels` and `allowKeyBlocks` false rule out kernels (`AttentionKernelPath`; tests run every path).
public func scaledDotProductAttentionForward(out: UnsafeMutablePointer<Float>, statistics: UnsafeMutablePointer<Float>,
                                             q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                             keyMask: UnsafePointer<Float>?, causal: Bool, scale: Float,
                                             sizes: AttentionSizes, rowBlock: Int = 0, allowWideKernels: Bool = true,
                                             allowKeyBlocks: Bool = true) {
    let (H, N, F, Dv) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    if N == 0 || sizes.slices == 0 { return }
    let wideRows: Bool
    switch AttentionKernelPath(sizes, allowWideKernels: allowWideKernels, allowKeyBlocks: allowKeyBlocks) {
    case .keyBlocks16:
        scaledDotProductAttentionForwardKeyBlocks(WideAttentionBlockKernels.self, out: out, statistics: statistics, q: q, k: k,
                                                  v: v, keyMask: keyMask, causal: causal, scale: scale, sizes: sizes, block: rowBlock)
        return
    case .keyBlocks8:
        scaledDotProductAttentionForwardKeyBlocks(AVX2AttentionBlockKernels.self, out: out, statistics: statistics, q: q, k: k,
                                                  v: v, keyMask: keyMask, causal: causal, scale: scale, sizes: sizes, block: rowBlock)
        return
    case .rowBlocks(let wide):
        wideRows = wide                                     // 16-lane softmax rows (any head size)
    }
    let plan = ScaledDotProductAttentionPlan(sizes: sizes, threads: Parallel.threadCount, rowBlock: rowBlock)
    let R = plan.rowBlock
    plan.forEachItem { w in
        let (s, blocks) = plan.item(w)
        let b = s / H
        let scores = allocateScratch(R * N)                      // [R, C]: S, then P, of one row block
        let bias = keyMask != nil ? allocateScratch(N) : nil     // [N]
        defer { scores.deallocate(); bias?.deallocate() }
        if let bias, let keyMask { attentionMaskBias(bias, keyMask + b * N, N) }
        let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dv
        let os = out + s * N * Dv, stats = statistics + s * N * 2
        for blk in blocks {
            let r0 = blk * R, r1 = min(N, r0 + R), rows = r1 - r0
            let C = causal ? r1 : N                              // keys this block can see
            stridedGemm(false, true, rows, C, F, alpha: scale, qs + r0 * F, F, ks, F, beta: 0, scores, C)  // S = scale·Q_blk·Kᵀ
            for i in 0..<rows {
                let row = scores + i * C
                let L = causal ? r0 + i + 1 : C                  // keys row r0 + i sees
                let (m, inv) = wideRows ? WideKernels.attentionSoftmaxRow(row, bias: bias.map { UnsafePointer($0) }, n: L)
                                        : softmaxRowInPlace(row, bias: bias.map { UnsafePointer($0) }, L)
                stats[2 * (r0 + i)] = m; stats[2 * (r0 + i) + 1] = inv
                if L < C { (row + L).update(repeating: 0, count: C - L) }
            }
            stridedGemm(false, false, rows, Dv, C, scores, C, vs, Dv, beta: 0, os + r0 * Dv, Dv)                // O_blk = P·V
        }
    }
}

/// The forward on block kernels of one vector width, in flash-attention order with an online softmax: per query block of Br
/// rows, key blocks of Bc keys in turn: S = scale·Q_blk·K_blkᵀ (+ bias), running row max m and sum l (the
/// output rows so far rescaled by exp(m_old − m_new) when the max moves), P̃ = exp(S − m), O_blk += P̃·V_blk;
/// at the end O_blk /= l and the statistics are (m, 1/l). Everything a block pair touches stays in L1/L2
/// (the two-pass row blocks streamed all of K and V per 16–64 rows from L3 at N = 16384). m is each row's exact
/// max of the same rounded scores as the backward's, so the backward's P = exp(S − m)/l are the forward's
/// probabilities up to the rounding of the rescalings. K is transposed once per item into key-block panels
/// ([F, C] per block, row stride C). Causal: a query block stops at the key block holding its last row, and a
/// key block's products start at the row of its first key.
/// `block` > 0 overrides both block sizes (tests).
func scaledDotProductAttentionForwardKeyBlocks<Kernels: AttentionBlockKernels>(
    _ kernels: Kernels.Type, out: UnsafeMutablePointer<Float>, statistics: UnsafeMutablePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    keyMask: UnsafePointer<Float>?, causal: Bool, scale: Float, sizes: AttentionSizes, block: Int) {
    let (H, N, F, Dv) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    // 128 keys × 256 rows: each query block streams all of K and V once, so taller blocks stream less per
    // FLOP, while the P̃ (128 KB) and output (64 KB) blocks still stay in L2.
    let Bc = block > 0 ? block : 128     // keys per block
    let Br = block > 0 ? block : 256     // query rows per block
    let plan = ScaledDotProductAttentionPlan(sizes: sizes, threads: Parallel.threadCount, rowBlock: Br)
    let keyBlocks = (N + Bc - 1) / Bc
    plan.forEachItem { w in
        let (s, queryBlocks) = plan.item(w)
        let b = s / H
        let p = allocateScratch(Br * Bc)                          // [Br, C]: S, then P̃
        let kT = allocateScratch(F * N)                           // key block kb: [F, C] at kb·Bc·F
        let rowMax = allocateScratch(Br), rowSum = allocateScratch(Br)
        let bias = keyMask != nil ? allocateScratch(N) : nil
        defer { p.deallocate(); kT.deallocate(); rowMax.deallocate(); rowSum.deallocate(); bias?.deallocate() }
        if let bias, let keyMask { attentionMaskBias(bias, keyMask + b * N, N) }
        let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dv
        let lastRow = min(N, queryBlocks.upperBound * Br)
        for kb in 0..<(causal ? (lastRow - 1) / Bc + 1 : keyBlocks) {
            let j0 = kb * Bc
            transposeSlice(kT + j0 * F, ks + j0 * F, n: min(N, j0 + Bc) - j0, width: F)
        }
        let os = out + s * N * Dv, stats = statistics + s * N * 2
        for qb in queryBlocks {
            let r0 = qb * Br, r1 = min(N, r0 + Br), rows = r1 - r0
            let ob = os + r0 * Dv
            ob.update(repeating: 0, count: rows * Dv)
            rowMax.update(repeating: -.infinity, count: rows)
            rowSum.update(repeating: 0, count: rows)
            for kb in 0..<(causal ? (r1 - 1) / Bc + 1 : keyBlocks) {
                let j0 = kb * Bc, j1 = min(N, j0 + Bc), C = j1 - j0
                // Causal: rows before j0 see none of these keys (their state would not change), so they are skipped.
                let first = causal ? max(0, j0 - r0) : 0
                Kernels.gemm(m: rows - first, n: C, k: F, alpha: scale, a: qs + (r0 + first) * F, aRow: F, aK: 1, b: kT + j0 * F,
                             ldb: C, accumulate: false, c: p + first * C, ldc: C)                   // S = scale·Q_blk·K_blkᵀ
                let blockBias = bias.map { UnsafePointer($0 + j0) }
                for ii in first..<rows {
                    let L = causal ? min(C, max(0, r0 + ii + 1 - j0)) : C                        // keys of the block row sees
                    let factor = Kernels.onlineSoftmaxRow(p + ii * C, bias: blockBias, n: L, width: C,
                                                          max: &rowMax[ii], sum: &rowSum[ii])
                    if factor != 1 { Kernels.scaleRow(ob + ii * Dv, factor, n: Dv) }
                }
                Kernels.gemm(m: rows - first, n: Dv, k: C, alpha: 1, a: p + first * C, aRow: C, aK: 1, b: vs + j0 * Dv, ldb: Dv,
                             accumulate: true, c: ob + first * Dv, ldc: Dv)                         // O_blk += P̃·V_blk
            }
            for ii in 0..<rows {
                let inv = 1 / rowSum[ii]
                Kernels.scaleRow(ob + ii * Dv, inv, n: Dv)
                stats[2 * (r0 + ii)] = rowMax[ii]; stats[2 * (r0 + ii) + 1] = inv
            }
        }
    }
}

// MARK: - Backward

/// Backward of fused scaled-dot-product attention; accumulates (+=) into dq, dk, dv.
/// dq, dk: [B,H,N,F]; dv: [B,H,N,Dv]; gradOut, out: [B,H,N,Dv]; statistics: [B,H,N,2] as saved by the forward;
/// q, k: [B,H,N,F]; v: [B,H,N,Dv]; keyMask: [B,N] or nil. Pass the forward's `rowBlock`, `allowWideKernels` and
/// `allowKeyBlocks` to get its P bit for bit.
public func scaledDotProductAttentionBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                                              dv: UnsafeMutablePointer<Float>,
                                              gradOut: UnsafePointer<Float>, out: UnsafePointer<Float>,
                                              statistics: UnsafePointer<Float>,
                                              q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                              keyMask: UnsafePointer<Float>?, causal: Bool, scale: Float,
                                              sizes: AttentionSizes, rowBlock: Int = 0, allowWideKernels: Bool = true,
                                              allowKeyBlocks: Bool = true) {
    let (H, N, F, Dv) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    if N == 0 || sizes.slices == 0 { return }
    let wideRows: Bool
    switch AttentionKernelPath(sizes, allowWideKernels: allowWideKernels, allowKeyBlocks: allowKeyBlocks) {
    case .keyBlocks16:
        scaledDotProductAttentionBackwardKeyBlocks(WideAttentionBlockKernels.self, dq: dq, dk: dk, dv: dv, gradOut: gradOut, out: out,
                                                   statistics: statistics, q: q, k: k, v: v, keyMask: keyMask, causal: causal,
                                                   scale: scale, sizes: sizes, block: rowBlock)
        return
    case .keyBlocks8:
        scaledDotProductAttentionBackwardKeyBlocks(AVX2AttentionBlockKernels.self, dq: dq, dk: dk, dv: dv, gradOut: gradOut, out: out,
                                                   statistics: statistics, q: q, k: k, v: v, keyMask: keyMask, causal: causal,
                                                   scale: scale, sizes: sizes, block: rowBlock)
        return
    case .rowBlocks(let wide):
        wideRows = wide                                     // 16-lane softmax rows (any head size)
    }
    let plan = ScaledDotProductAttentionPlan(sizes: sizes, threads: Parallel.threadCount, rowBlock: rowBlock)
    let R = plan.rowBlock
    let split = plan.partsPerSlice > 1
    // One dK/dV partial per item when slices are split (added in item order below).
    let partials = split ? allocateScratch(plan.items * N * (F + Dv)) : nil
    defer { partials?.deallocate() }
    plan.forEachItem { w in
        let (s, blocks) = plan.item(w)
        let b = s / H
        let p = allocateScratch(R * N), dp = allocateScratch(R * N)   // [R, C]: P and dP → dS
        let bias = keyMask != nil ? allocateScratch(N) : nil
        defer { p.deallocate(); dp.deallocate(); bias?.deallocate() }
        if let bias, let keyMask { attentionMaskBias(bias, keyMask + b * N, N) }
        let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dv
        let gs = gradOut + s * N * Dv, os = out + s * N * Dv, stats = statistics + s * N * 2
        let dqs = dq + s * N * F
        let dks = partials.map { $0 + w * N * (F + Dv) } ?? dk + s * N * F
        let dvs = partials.map { $0 + w * N * (F + Dv) + N * F } ?? dv + s * N * Dv
        for blk in blocks {
            let r0 = blk * R, r1 = min(N, r0 + R), rows = r1 - r0
            let C = causal ? r1 : N
            let qb = qs + r0 * F, gb = gs + r0 * Dv
            stridedGemm(false, true, rows, C, F, alpha: scale, qb, F, ks, F, beta: 0, p, C)                     // S = scale·Q_blk·Kᵀ
            stridedGemm(false, true, rows, C, Dv, gb, Dv, vs, Dv, beta: 0, dp, C)                              // dP = G_blk·Vᵀ
            for i in 0..<rows {
                let prow = p + i * C, drow = dp + i * C
                let L = causal ? r0 + i + 1 : C
                if wideRows {
                    WideKernels.attentionProbabilitiesRow(prow, bias: bias.map { UnsafePointer($0) }, max: stats[2 * (r0 + i)],
                                                          inverseSum: stats[2 * (r0 + i) + 1], n: L)
                } else {
                    probabilitiesFromStatistics(prow, bias: bias.map { UnsafePointer($0) }, max: stats[2 * (r0 + i)],
                                                inverseSum: stats[2 * (r0 + i) + 1], L)
                }
                if L < C { (prow + L).update(repeating: 0, count: C - L) }
                let d = rowDot(gb + i * Dv, os + (r0 + i) * Dv, Dv)                                    // D_i = g_i·out_i
                softmaxGradientRow(drow, prow, d, C)                                                     // dS = P ⊙ (dP − D)
            }
            stridedGemm(true, false, C, Dv, rows, p, C, gb, Dv, beta: 1, dvs, Dv)                               // dV += Pᵀ·G_blk
            stridedGemm(false, false, rows, F, C, alpha: scale, dp, C, ks, F, beta: 1, dqs + r0 * F, F)         // dQ_blk += scale·dS·K
            stridedGemm(true, false, C, F, rows, alpha: scale, dp, C, qb, F, beta: 1, dks, F)                   // dK += scale·dSᵀ·Q_blk
        }
    }
    if let partials {
        // Slices split over items: dK, dV += Σ partials in item order (deterministic).
        parallelFor(sizes.slices) { r in
            for s in r {
                for part in 0..<plan.partsPerSlice {
                    let src = partials + (s * plan.partsPerSlice + part) * N * (F + Dv)
                    axpySerial(y: dk + s * N * F, x: src, count: N * F)
                    axpySerial(y: dv + s * N * Dv, x: src + N * F, count: N * Dv)
                }
            }
        }
    }
}

/// The backward on block kernels of one vector width, in flash-attention-2 order: per slice, key blocks outer (their dK and
/// dV rows stay in L1/L2 while every query block adds to them), query blocks inner (dQ_blk += scale·dS·K_blk
/// from L2/L3). Per (key block, query block) pair, all five products are small L1/L2-resident GEMMs:
///   S = scale·Q_blk·K_blkᵀ, P = exp(S + bias − m)·(1/Σ), dP = G_blk·V_blkᵀ, dS = P ⊙ (dP − D),
///   dV_blk += Pᵀ·G_blk,  dK_blk += scale·dSᵀ·Q_blk,  dQ_blk += scale·dS·K_blk.
/// Every score is the forward's (same GEMM element formula, same row operations), so P is the forward's bit
/// for bit. Causal: a key block starts at the row of its first key. Items own key blocks, so a
/// slice split over items gets one dQ partial per item (added in item order); dK and dV are written by
/// their one owner. `block` > 0 overrides both block sizes (tests).
func scaledDotProductAttentionBackwardKeyBlocks<Kernels: AttentionBlockKernels>(
    _ kernels: Kernels.Type, dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
    gradOut: UnsafePointer<Float>, out: UnsafePointer<Float>, statistics: UnsafePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    keyMask: UnsafePointer<Float>?, causal: Bool, scale: Float, sizes: AttentionSizes, block: Int) {
    let (H, N, F, Dv) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    // 64 keys × 128 query rows: the key block's K, Kᵀ, Vᵀ and dK, dV rows (16 KB each at Dh = 64) stay in L1/L2
    // with the pair's P and dS (32 KB each); smaller blocks pay more per-block overhead, larger ones leave L1.
    let Bc = block > 0 ? block : 64      // keys per block
    let Br = block > 0 ? block : 128     // query rows per block
    let plan = ScaledDotProductAttentionPlan(sizes: sizes, threads: Parallel.threadCount, rowBlock: Bc)
    let split = plan.partsPerSlice > 1
    let partials = split ? allocateScratch(plan.items * N * F) : nil      // dQ partials, one per item
    defer { partials?.deallocate() }
    plan.forEachItem { w in
        let (s, keyBlocks) = plan.item(w)
        let b = s / H
        let p = allocateScratch(Br * Bc), ds = allocateScratch(Br * Bc)   // [Br, C]: P; dP → dS
        let kT = allocateScratch(F * Bc), vT = allocateScratch(Dv * Bc)  // [F, C], [Dv, C]: the key block's K, V transposed
        let delta = allocateScratch(N)                                   // D_i = g_i·out_i
        let bias = keyMask != nil ? allocateScratch(N) : nil
        defer { p.deallocate(); ds.deallocate(); kT.deallocate(); vT.deallocate(); delta.deallocate(); bias?.deallocate() }
        if let bias, let keyMask { attentionMaskBias(bias, keyMask + b * N, N) }
        let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dv
        let gs = gradOut + s * N * Dv, os = out + s * N * Dv, stats = statistics + s * N * 2
        let firstRow = causal ? (keyBlocks.lowerBound * Bc / Br) * Br : 0     // causal: the first query row used
        for i in firstRow..<N { delta[i] = rowDot(gs + i * Dv, os + i * Dv, Dv) }
        let dqs = partials.map { $0 + w * N * F } ?? dq + s * N * F
        let dks = dk + s * N * F, dvs = dv + s * N * Dv
        for kb in keyBlocks {
            let j0 = kb * Bc, j1 = min(N, j0 + Bc), C = j1 - j0
            transposeSlice(kT, ks + j0 * F, n: C, width: F)
            transposeSlice(vT, vs + j0 * Dv, n: C, width: Dv)
            let blockBias = bias.map { UnsafePointer($0 + j0) }
            var r0 = causal ? (j0 / Br) * Br : 0                // rows < j0 see none of these keys
            while r0 < N {
                // Causal: rows before j0 see none of these keys (P = dS = 0), so they are skipped; the sums over
                // rows keep the blocks' grouping, so every element gets the bits of the full block.
                let lo = causal ? max(r0, j0) : r0
                let r1 = min(N, r0 + Br), rows = r1 - lo
                let qb = qs + lo * F, gb = gs + lo * Dv
                Kernels.gemm(m: rows, n: C, k: F, alpha: scale, a: qb, aRow: F, aK: 1, b: kT, ldb: C,
                             accumulate: false, c: p, ldc: C)                                      // S = scale·Q_blk·K_blkᵀ
                Kernels.gemm(m: rows, n: C, k: Dv, alpha: 1, a: gb, aRow: Dv, aK: 1, b: vT, ldb: C,
                             accumulate: false, c: ds, ldc: C)                                     // dP = G_blk·V_blkᵀ
                for ii in 0..<rows {
                    let i = lo + ii, prow = p + ii * C
                    let L = causal ? min(C, max(0, i + 1 - j0)) : C                              // keys of the block row i sees
                    if L > 0 {
                        Kernels.probabilitiesRow(prow, bias: blockBias, max: stats[2 * i], inverseSum: stats[2 * i + 1], n: L)
                    }
                    if L < C { (prow + L).update(repeating: 0, count: C - L) }
                    softmaxGradientRow(ds + ii * C, prow, delta[i], C)                            // dS = P ⊙ (dP − D)
                }
                Kernels.gemm(m: C, n: Dv, k: rows, alpha: 1, a: p, aRow: 1, aK: C, b: gb, ldb: Dv,
                             accumulate: true, c: dvs + j0 * Dv, ldc: Dv)                          // dV_blk += Pᵀ·G_blk
                Kernels.gemm(m: C, n: F, k: rows, alpha: scale, a: ds, aRow: 1, aK: C, b: qb, ldb: F,
                             accumulate: true, c: dks + j0 * F, ldc: F)                            // dK_blk += scale·dSᵀ·Q_blk
                Kernels.gemm(m: rows, n: F, k: C, alpha: scale, a: ds, aRow: C, aK: 1, b: ks + j0 * F, ldb: F,
                             accumulate: true, c: dqs + lo * F, ldc: F)                            // dQ_blk += scale·dS·K_blk
                r0 = r1
            }
        }
    }
    if let partials {
        // Slices split over items: dQ += Σ partials in item order (deterministic).
        parallelFor(sizes.slices) { r in
            for s in r {
                for part in 0..<plan.partsPerSlice {
                    axpySerial(y: dq + s * N * F, x: partials + (s * plan.partsPerSlice + part) * N * F, count: N * F)
                }
            }
        }
    }
}

// MARK: - Plain reference (tests compare the kernels above with it)
//
// Scalar loops, one thread, Double accumulators, the full [N, N] probabilities of a slice.

/// Probabilities of one slice: P[i·N + j] (0 where causal hides j from i).
func attentionReferenceProbabilities(q: UnsafePointer<Float>, k: UnsafePointer<Float>, mask: UnsafePointer<Float>?,
                                     causal: Bool, scale: Float, n: Int, f: Int) -> [Double] {
    var p = [Double](repeating: 0, count: n * n)
    for i in 0..<n {
        let visible = causal ? i + 1 : n
        var row = [Double](repeating: 0, count: visible)
        for j in 0..<visible {
            var dot = 0.0
            for c in 0..<f { dot += Double(q[i * f + c]) * Double(k[j * f + c]) }
            let bias = mask.map { (1 - Double($0[j])) * Double(attentionMaskedKeyBias) } ?? 0
            row[j] = Double(scale) * dot + bias
        }
        let m = row.max()!
        var sum = 0.0
        for j in 0..<visible { row[j] = Foundation.exp(row[j] - m); sum += row[j] }
        for j in 0..<visible { p[i * n + j] = row[j] / sum }
    }
    return p
}

/// Reference forward: out = softmax(scale·QKᵀ + bias [+ causal]) V.   out: [B,H,N,Dv]; others as the kernel.
func scaledDotProductAttentionReferenceForward(out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>,
                                                      k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                                      keyMask: UnsafePointer<Float>?, causal: Bool, scale: Float,
                                                      sizes: AttentionSizes) {
    let (H, N, F, Dv) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    for s in 0..<sizes.slices {
        let b = s / H
        let p = attentionReferenceProbabilities(q: q + s * N * F, k: k + s * N * F, mask: keyMask.map { $0 + b * N },
                                                causal: causal, scale: scale, n: N, f: F)
        let vs = v + s * N * Dv
        for i in 0..<N {
            for c in 0..<Dv {
                var acc = 0.0
                for j in 0..<N { acc += p[i * N + j] * Double(vs[j * Dv + c]) }
                out[(s * N + i) * Dv + c] = Float(acc)
            }
        }
    }
}

/// Reference backward (accumulates into dq, dk, dv) from the definition, with the full P of each slice.
func scaledDotProductAttentionReferenceBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                                                       dv: UnsafeMutablePointer<Float>, gradOut: UnsafePointer<Float>,
                                                       q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                                       keyMask: UnsafePointer<Float>?, causal: Bool, scale: Float,
                                                       sizes: AttentionSizes) {
    let (H, N, F, Dv) = (sizes.heads, sizes.length, sizes.features, sizes.valueDimensions)
    for s in 0..<sizes.slices {
        let b = s / H
        let qs = q + s * N * F, ks = k + s * N * F, vs = v + s * N * Dv, gs = gradOut + s * N * Dv
        let p = attentionReferenceProbabilities(q: qs, k: ks, mask: keyMask.map { $0 + b * N },
                                                causal: causal, scale: scale, n: N, f: F)
        var dqD = [Double](repeating: 0, count: N * F), dkD = dqD, dvD = [Double](repeating: 0, count: N * Dv)
        for i in 0..<N {
            // dP_ij = g_i·v_j; dS_ij = P_ij (dP_ij − Σ_l P_il dP_il)
            var dP = [Double](repeating: 0, count: N)
            for j in 0..<N { for c in 0..<Dv { dP[j] += Double(gs[i * Dv + c]) * Double(vs[j * Dv + c]) } }
            var dot = 0.0
            for j in 0..<N { dot += p[i * N + j] * dP[j] }
            for j in 0..<N {
                let pij = p[i * N + j]
                if pij == 0 { continue }
                let ds = pij * (dP[j] - dot) * Double(scale)
                for c in 0..<Dv { dvD[j * Dv + c] += pij * Double(gs[i * Dv + c]) }
                for c in 0..<F {
                    dqD[i * F + c] += ds * Double(ks[j * F + c])
                    dkD[j * F + c] += ds * Double(qs[i * F + c])
                }
            }
        }
        for e in 0..<(N * F) { dq[s * N * F + e] += Float(dqD[e]); dk[s * N * F + e] += Float(dkD[e]) }
        for e in 0..<(N * Dv) { dv[s * N * Dv + e] += Float(dvD[e]) }
    }
}
