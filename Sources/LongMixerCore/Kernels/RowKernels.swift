import Foundation
import LongMixerWideKernels

/// Kernels over rows of a [rows, n] matrix: reductions over an axis, softmax, log-softmax,
/// layer norm and cross-entropy. Parallel over rows; SIMD8 within a row.

func rowGrain(_ n: Int) -> Int { max(1, elementwiseGrain / max(n, 1)) }

// MARK: - Axis reductions on the [outer, n, inner] view

/// out[o, i] = Σ_k x[o, k, i].   out: [outer, inner]; x: [outer, n, inner]
public func sumAxisKernel(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, outer: Int, n: Int, inner: Int) {
    if inner == 1 {
        parallelFor(outer, grain: rowGrain(n)) { r in
            for o in r {
                let row = x + o * n
                var acc = Float8(), j = 0
                while j + 8 <= n { acc += row.load8(j); j += 8 }
                var s = horizontalSum(acc)
                while j < n { s += row[j]; j += 1 }
                out[o] = s
            }
        }
        return
    }
    // Accumulate whole rows of length `inner`; split over outer, or over inner when outer is small.
    if outer >= Parallel.threadCount {
        parallelFor(outer, grain: rowGrain(n * inner)) { r in
            for o in r { sumRows(out: out + o * inner, x: x + o * n * inner, rows: n, width: inner, stride: inner) }
        }
    } else {
        for o in 0..<outer {
            parallelFor(inner, grain: max(8, rowGrain(n))) { r in
                sumRows(out: out + o * inner + r.lowerBound, x: x + o * n * inner + r.lowerBound,
                        rows: n, width: r.count, stride: inner)
            }
        }
    }
}

/// out[j] = Σ_k x[k·stride + j] for j < width.
func sumRows(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Int, width: Int, stride: Int) {
    out.update(repeating: 0, count: width)
    for k in 0..<rows {
        let row = x + k * stride
        var j = 0
        while j + 8 <= width { out.store8(out.load8(j) + row.load8(j), j); j += 8 }
        while j < width { out[j] += row[j]; j += 1 }
    }
}

/// out[o, i] = max_k x[o, k, i], argmax[o, i] = first k attaining it (NaN propagates).
/// out, argmax: [outer, inner]; x: [outer, n, inner]; n ≥ 1
public func maxAxisKernel(out: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>, x: UnsafePointer<Float>,
                          outer: Int, n: Int, inner: Int) {
    parallelFor(outer * inner, grain: rowGrain(n)) { r in
        for idx in r {
            let o = idx / inner, i = idx % inner
            let base = x + o * n * inner + i
            var best = base[0], arg = 0
            if !best.isNaN {
                for k in 1..<max(n, 1) {
                    let v = base[k * inner]
                    if v > best || v.isNaN { best = v; arg = k; if v.isNaN { break } }
                }
            }
            out[idx] = best
            argmax[idx] = Int32(arg)
        }
    }
}

// MARK: - Softmax and log-softmax over the last axis

/// y = softmax(x) per row.   y, x: [rows, n]
///
/// Exp-bound, not memory-bound, at 2 threads: on AVX-512 CPUs the 16-lane
/// `WideKernels.softmaxRows` runs instead of the AVX2 `softmaxRowsAVX2`.
///
/// Outputs larger than the last-level cache, with rows on cache-line boundaries, are written with
/// streaming stores (`StreamingStores`): the exp pass then goes to a scratch row in L1, and the scaled
/// row streams to y.
public func softmaxForward(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Int, n: Int) {
    softmaxForward(y: y, x: x, rows: rows, n: n, streaming: StreamingStores.shouldStreamRows(y, rows: rows, n: n),
                   wide: CPUFeatures.avx512)
}

/// `softmaxForward` with the store kind and kernel width chosen by the caller (tests run every path).
func softmaxForward(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Int, n: Int, streaming: Bool, wide: Bool) {
    parallelFor(rows, grain: rowGrain(n)) { r in
        if wide {
            WideKernels.softmaxRows(y: y, x: x, rows: r, n: n, streaming: streaming)
        } else if streaming {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { scratch in
                softmaxRowsAVX2(y: y, x: x, rows: r, n: n, scratch: scratch.baseAddress!)
            }
            StreamingStores.fence()
        } else {
            softmaxRowsAVX2(y: y, x: x, rows: r, n: n, scratch: nil)
        }
    }
}

/// Rows ahead that the AVX2 softmax rows prefetch (rows of 4 KiB are one page each, which the hardware
/// prefetcher does not run across).
let softmaxPrefetchRows = 4

/// `softmaxForward` on the rows `r`, with 8-lane vectors.
public func softmaxRowsAVX2(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows r: Range<Int>, n: Int) {
    softmaxRowsAVX2(y: y, x: x, rows: r, n: n, scratch: nil)
}

/// `softmaxForward` on the rows `r`, with 8-lane vectors. Per row: exp(x − max), store and sum; scale by
/// 1/sum. x − max ≤ 0, so the exp needs no overflow handling (`expNonPositive`).
///
/// The max pass only waits on memory and the exp pass only computes, so the exp loop of a row also takes
/// the max of the next one, whose loads then overlap the polynomial (as the 16-lane
/// `WideKernels.softmaxRows`), and it prefetches the row `softmaxPrefetchRows` ahead, one line per step;
/// the last row of the range re-reads itself (from L1) to keep the loop branch-free. The sums and maxima
/// keep the order of the separate passes they replace, so results are unchanged bit for bit.
///
/// With `scratch` (n floats; outputs beyond the last-level cache, rows on cache lines), the exp pass writes
/// the scratch row (L1) and the scaled row goes to y with streaming stores, so y's lines are never read
/// from memory; the caller fences.
func softmaxRowsAVX2(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows r: Range<Int>, n: Int,
                     scratch: UnsafeMutablePointer<Float>?) {
    guard !r.isEmpty else { return }
    var m = rowMax(x + r.lowerBound * n, n)
    for row in r {
        let xr = x + row * n
        let er = scratch ?? y + row * n
        let next = row + 1 < r.upperBound ? xr + n : xr
        let ahead = x + Swift.min(row + softmaxPrefetchRows, r.upperBound - 1) * n
        let m8 = Float8(repeating: m)
        var acc0 = Float8(), acc1 = Float8()
        var nextMax0 = Float8(repeating: -.infinity), nextMax1 = nextMax0
        var j = 0
        while j + 16 <= n {
            StreamingStores.prefetch(ahead + j)
            let e0 = VectorMath.expNonPositive(xr.load8(j) - m8)
            let e1 = VectorMath.expNonPositive(xr.load8(j + 8) - m8)
            er.store8(e0, j); er.store8(e1, j + 8)
            acc0 += e0; acc1 += e1
            let v0 = next.load8(j), v1 = next.load8(j + 8)
            nextMax0 = nextMax0.replacing(with: v0, where: v0 .> nextMax0)
            nextMax1 = nextMax1.replacing(with: v1, where: v1 .> nextMax1)
            j += 16
        }
        let pairedEnd = j
        while j + 8 <= n { let e = VectorMath.expNonPositive(xr.load8(j) - m8); er.store8(e, j); acc0 += e; j += 8 }
        var s = horizontalSum(acc0 + acc1)
        while j < n { let e = VectorMath.exp(xr[j] - m); er[j] = e; s += e; j += 1 }
        let inv = 1 / s
        let inv8 = Float8(repeating: inv)
        j = 0
        if scratch != nil {
            let yr = y + row * n
            let head = Swift.min(n, StreamingStores.floatsToAlignment32(yr))
            while j < head { yr[j] = er[j] * inv; j += 1 }
            while j + 8 <= n { StreamingStores.store8(er.load8(j) * inv8, yr + j); j += 8 }
            while j < n { yr[j] = er[j] * inv; j += 1 }
        } else {
            while j + 8 <= n { er.store8(er.load8(j) * inv8, j); j += 8 }
            while j < n { er[j] *= inv; j += 1 }
        }
        // The next row's max: the paired blocks above, then the rest of the row.
        nextMax0 = nextMax0.replacing(with: nextMax1, where: nextMax1 .> nextMax0)
        var k = pairedEnd
        while k + 8 <= n { let v = next.load8(k); nextMax0 = nextMax0.replacing(with: v, where: v .> nextMax0); k += 8 }
        m = horizontalMax(nextMax0)
        while k < n { if next[k] > m { m = next[k] }; k += 1 }
    }
}

/// dst[j] = exp(src[j] − max) / Σ_k exp(src[k] − max) for j < n; returns 1/Σ. dst may be src (in place).
/// The exp/sum/scale passes of a softmax row, shared by `softmaxRowsAVX2` and the fused attention's
/// `softmaxRowInPlace`. Two vectors per step: out-of-order execution overlaps the polynomial chains of
/// consecutive steps; four per step spilled accumulators and constants (16 ymm registers).
@inline(__always)
func exponentiateAndNormalizeRow(_ dst: UnsafeMutablePointer<Float>, from src: UnsafePointer<Float>, max m: Float, _ n: Int) -> Float {
    let inv = exponentiateRow(dst, from: src, max: m, n)
    var j = 0
    let inv8 = Float8(repeating: inv)
    while j + 8 <= n { dst.store8(dst.load8(j) * inv8, j); j += 8 }
    while j < n { dst[j] *= inv; j += 1 }
    return inv
}

/// dst[j] = exp(src[j] − max) for j < n; returns 1/Σ_j dst[j] (the exp and sum passes of a softmax row).
@inline(__always)
func exponentiateRow(_ dst: UnsafeMutablePointer<Float>, from src: UnsafePointer<Float>, max m: Float, _ n: Int) -> Float {
    1 / exponentiateRowSum(dst, from: src, max: m, n)
}

/// dst[j] = exp(src[j] − max) for j < n; returns Σ_j dst[j] (the online softmax of the fused attention
/// keeps the sum itself).
@inline(__always)
func exponentiateRowSum(_ dst: UnsafeMutablePointer<Float>, from src: UnsafePointer<Float>, max m: Float, _ n: Int) -> Float {
    var acc0 = Float8(), acc1 = Float8(), j = 0
    let m8 = Float8(repeating: m)
    while j + 16 <= n {
        let e0 = VectorMath.expNonPositive(src.load8(j) - m8)
        let e1 = VectorMath.expNonPositive(src.load8(j + 8) - m8)
        dst.store8(e0, j); dst.store8(e1, j + 8)
        acc0 += e0; acc1 += e1
        j += 16
    }
    while j + 8 <= n { let e = VectorMath.expNonPositive(src.load8(j) - m8); dst.store8(e, j); acc0 += e; j += 8 }
    var s = horizontalSum(acc0 + acc1)
    while j < n { let e = VectorMath.exp(src[j] - m); dst[j] = e; s += e; j += 1 }
    return s
}

/// dx += y ⊙ (dy − ⟨dy, y⟩) per row.   dx, y, dy: [rows, n]
public func softmaxBackward(dx: UnsafeMutablePointer<Float>, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, n: Int) {
    parallelFor(rows, grain: rowGrain(n)) { r in
        for row in r {
            let yr = y + row * n, gr = dy + row * n, dr = dx + row * n
            let dot = rowDot(yr, gr, n)
            for j in 0..<n { dr[j] += yr[j] * (gr[j] - dot) }
        }
    }
}

/// y = x − logΣexp(x) per row.   y, x: [rows, n]
public func logSoftmaxForward(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Int, n: Int) {
    parallelFor(rows, grain: rowGrain(n)) { r in
        for row in r {
            let xr = x + row * n, yr = y + row * n
            let lse = rowLogSumExp(xr, n)
            for j in 0..<n { yr[j] = xr[j] - lse }
        }
    }
}

/// dx += dy − softmax(x)·Σdy per row, with softmax = exp(y).   dx, y, dy: [rows, n]
public func logSoftmaxBackward(dx: UnsafeMutablePointer<Float>, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, n: Int) {
    parallelFor(rows, grain: rowGrain(n)) { r in
        for row in r {
            let yr = y + row * n, gr = dy + row * n, dr = dx + row * n
            var s: Float = 0
            for j in 0..<n { s += gr[j] }
            for j in 0..<n { dr[j] += gr[j] - VectorMath.exp(yr[j]) * s }
        }
    }
}

func rowMax(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var m = -Float.infinity
    var m8 = Float8(repeating: -.infinity), m8b = m8, j = 0
    while j + 16 <= n {
        let v = x.load8(j), w = x.load8(j + 8)
        m8 = m8.replacing(with: v, where: v .> m8)
        m8b = m8b.replacing(with: w, where: w .> m8b)
        j += 16
    }
    m8 = m8.replacing(with: m8b, where: m8b .> m8)
    while j + 8 <= n { let v = x.load8(j); m8 = m8.replacing(with: v, where: v .> m8); j += 8 }
    m = horizontalMax(m8)
    while j < n { if x[j] > m { m = x[j] }; j += 1 }
    return m
}

func rowDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = Float8(), j = 0
    while j + 8 <= n { acc += a.load8(j) * b.load8(j); j += 8 }
    var s = horizontalSum(acc)
    while j < n { s += a[j] * b[j]; j += 1 }
    return s
}

/// log Σ_j exp(x_j), stable (max-shifted). −∞ for an all −∞ row.
func rowLogSumExp(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    let m = rowMax(x, n)
    if m == -.infinity { return -.infinity }
    var acc = Float8(), j = 0
    let m8 = Float8(repeating: m)
    while j + 8 <= n { acc += VectorMath.exp(x.load8(j) - m8); j += 8 }
    var s = horizontalSum(acc)
    while j < n { s += VectorMath.exp(x[j] - m); j += 1 }
    return m + Foundation.log(s)
}

// MARK: - Layer norm over the last axis

/// y = (x − μ)·rstd·γ + β per row; saves μ and rstd = 1/√(σ² + ε) (biased variance, as PyTorch).
/// y, x: [rows, n]; gamma, beta: [n]; mean, rstd: [rows]
///
/// On AVX-512 CPUs the 16-lane `WideKernels.layerNormRows` runs instead of `layerNormRowsAVX2`.
/// Outputs larger than the last-level cache, with rows on cache-line boundaries, are written with
/// streaming stores (`StreamingStores`).
public func layerNormForward(y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                             x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                             rows: Int, n: Int, epsilon: Float) {
    layerNormForward(y: y, mean: mean, rstd: rstd, x: x, gamma: gamma, beta: beta, rows: rows, n: n, epsilon: epsilon,
                     streaming: StreamingStores.shouldStreamRows(y, rows: rows, n: n), wide: CPUFeatures.avx512)
}

/// `layerNormForward` with the store kind and kernel width chosen by the caller (tests run every path).
func layerNormForward(y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                      x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                      rows: Int, n: Int, epsilon: Float, streaming: Bool, wide: Bool) {
    parallelFor(rows, grain: rowGrain(n)) { r in
        if wide {
            WideKernels.layerNormRows(y: y, mean: mean, rstd: rstd, x: x, gamma: gamma, beta: beta, rows: r, n: n,
                                      epsilon: epsilon, streaming: streaming)
        } else {
            layerNormRowsAVX2(y: y, mean: mean, rstd: rstd, x: x, gamma: gamma, beta: beta, rows: r, n: n,
                              epsilon: epsilon, streaming: streaming)
        }
    }
}

/// `layerNormForward` on the rows `r`, with 8-lane vectors.
///
/// Three passes over a row: sum (reads memory), squared deviations from μ (L1; no E[x²] − μ²
/// cancellation) and the output (L1). Rows of 4 KiB are one page each, which the hardware prefetcher
/// does not run across, so the output pass prefetches the row two ahead.
func layerNormRowsAVX2(y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                       x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                       rows r: Range<Int>, n: Int, epsilon: Float, streaming: Bool) {
    let lastRow = r.upperBound - 1
    for row in r {
        let xr = x + row * n, yr = y + row * n
        let ahead = x + Swift.min(row + 2, lastRow) * n
        // The reductions keep the order of the original kernel (one accumulator; d·d then add, no FMA),
        // so results on this path are bitwise those of before the 16-lane kernel (the PyTorch parity
        // tests sit close to their tolerances). The 16-lane kernel uses four accumulators.
        var acc = Float8(), j = 0
        while j + 8 <= n { acc += xr.load8(j); j += 8 }
        var s = horizontalSum(acc)
        while j < n { s += xr[j]; j += 1 }
        let mu = s / Float(n)
        let mu8 = Float8(repeating: mu)
        acc = Float8(); j = 0
        while j + 8 <= n { let d = xr.load8(j) - mu8; acc += d * d; j += 8 }
        var v = horizontalSum(acc)
        while j < n { let d = xr[j] - mu; v += d * d; j += 1 }
        let rs = 1 / (v / Float(n) + epsilon).squareRoot()
        mean[row] = mu; rstd[row] = rs
        let rs8 = Float8(repeating: rs)
        j = 0
        if streaming {
            let head = Swift.min(n, StreamingStores.floatsToAlignment32(yr))
            while j < head { yr[j] = (xr[j] - mu) * rs * gamma[j] + beta[j]; j += 1 }
        }
        while j + 16 <= n {
            StreamingStores.prefetch(ahead + j)
            let y0 = (xr.load8(j) - mu8) * rs8 * gamma.load8(j) + beta.load8(j)
            let y1 = (xr.load8(j + 8) - mu8) * rs8 * gamma.load8(j + 8) + beta.load8(j + 8)
            if streaming {
                StreamingStores.store8(y0, yr + j); StreamingStores.store8(y1, yr + j + 8)
            } else {
                yr.store8(y0, j); yr.store8(y1, j + 8)
            }
            j += 16
        }
        while j + 8 <= n {
            let v8 = (xr.load8(j) - mu8) * rs8 * gamma.load8(j) + beta.load8(j)
            if streaming { StreamingStores.store8(v8, yr + j) } else { yr.store8(v8, j) }
            j += 8
        }
        while j < n { yr[j] = (xr[j] - mu) * rs * gamma[j] + beta[j]; j += 1 }
    }
    if streaming { StreamingStores.fence() }
}

/// Accumulates dx, dγ, dβ. With x̂ = (x − μ)·rstd and g = dy·γ:
/// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)); dγ = Σ_rows dy·x̂; dβ = Σ_rows dy.
/// dx, x, dy: [rows, n]; dGamma, dBeta, gamma: [n]; mean, rstd: [rows]
public func layerNormBackward(dx: UnsafeMutablePointer<Float>, dGamma: UnsafeMutablePointer<Float>, dBeta: UnsafeMutablePointer<Float>,
                              x: UnsafePointer<Float>, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                              gamma: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, n: Int) {
    // dγ/dβ partial sums per thread chunk, added in a fixed order for run-to-run determinism.
    let chunks = max(1, min(Parallel.threadCount, rows / max(rowGrain(n), 1)))
    let partial = UnsafeMutablePointer<Float>.allocate(capacity: chunks * 2 * n)
    partial.initialize(repeating: 0, count: chunks * 2 * n)
    defer { partial.deallocate() }
    DispatchQueueHelper.run(chunks) { c in
        let lo = rows * c / chunks, hi = rows * (c + 1) / chunks
        let pg = partial + c * 2 * n, pb = pg + n
        for row in lo..<hi {
            let xr = x + row * n, gr = dy + row * n, dr = dx + row * n
            let mu = mean[row], rs = rstd[row]
            var sumG: Float = 0, sumGX: Float = 0
            for j in 0..<n {
                let xhat = (xr[j] - mu) * rs
                let g = gr[j] * gamma[j]
                sumG += g; sumGX += g * xhat
                pg[j] += gr[j] * xhat
                pb[j] += gr[j]
            }
            let meanG = sumG / Float(n), meanGX = sumGX / Float(n)
            for j in 0..<n {
                let xhat = (xr[j] - mu) * rs
                dr[j] += rs * (gr[j] * gamma[j] - meanG - xhat * meanGX)
            }
        }
    }
    for c in 0..<chunks {
        let pg = partial + c * 2 * n, pb = pg + n
        for j in 0..<n { dGamma[j] += pg[j]; dBeta[j] += pb[j] }
    }
}

/// Runs body(0..<count) concurrently, one iteration per index (no further splitting).
public enum DispatchQueueHelper {
    public static func run(_ count: Int, _ body: (Int) -> Void) {
        if count == 1 { body(0); return }
        withoutActuallyEscaping(body) { body in DispatchQueue.concurrentPerform(iterations: count, execute: body) }
    }
}

// MARK: - Cross-entropy with class indices

/// Per-row loss −log softmax(x)[target], 0 for ignored rows; saves per-row logsumexp.
/// Returns the number of rows that count. loss, lse: [rows]; logits: [rows, classes]; targets: [rows]
public func crossEntropyForward(loss: UnsafeMutablePointer<Float>, logSumExp: UnsafeMutablePointer<Float>,
                                logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
                                rows: Int, classes: Int, ignoreIndex: Int32) {
    parallelFor(rows, grain: rowGrain(classes)) { r in
        for row in r {
            let xr = logits + row * classes
            let t = targets[row]
            if t == ignoreIndex { loss[row] = 0; logSumExp[row] = 0; continue }
            let lse = rowLogSumExp(xr, classes)
            logSumExp[row] = lse
            loss[row] = lse - xr[Int(t)]
        }
    }
}

/// dlogits += scale[row]·(softmax(x) − onehot(target)), scale = upstream gradient / count.
/// dlogits, logits: [rows, classes]; lse: [rows]; targets: [rows]
public func crossEntropyBackward(dLogits: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>, logSumExp: UnsafePointer<Float>,
                                 targets: UnsafePointer<Int32>, rowScale: (Int) -> Float,
                                 rows: Int, classes: Int, ignoreIndex: Int32) {
    parallelFor(rows, grain: rowGrain(classes)) { r in
        for row in r {
            let t = targets[row]
            if t == ignoreIndex { continue }
            let s = rowScale(row)
            let xr = logits + row * classes, dr = dLogits + row * classes
            let lse = logSumExp[row]
            for j in 0..<classes { dr[j] += s * VectorMath.exp(xr[j] - lse) }
            dr[Int(t)] -= s
        }
    }
}

// MARK: - Plain reference implementations (tests compare the kernels above with these)
//
// Scalar loops, one thread, libm functions and Double accumulators: slow and obviously right.

/// Reference for `sumAxisKernel`.
func sumAxisReference(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, outer: Int, n: Int, inner: Int) {
    for o in 0..<outer {
        for i in 0..<inner {
            var s: Double = 0
            for k in 0..<n { s += Double(x[(o * n + k) * inner + i]) }
            out[o * inner + i] = Float(s)
        }
    }
}

/// Reference for `softmaxForward`.
func softmaxForwardReference(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Int, n: Int) {
    for row in 0..<rows {
        let xr = x + row * n, yr = y + row * n
        var m = -Double.infinity
        for j in 0..<n { m = Swift.max(m, Double(xr[j])) }
        var s: Double = 0
        for j in 0..<n { s += Foundation.exp(Double(xr[j]) - m) }
        for j in 0..<n { yr[j] = Float(Foundation.exp(Double(xr[j]) - m) / s) }
    }
}

/// Reference for `softmaxBackward`: dx += y ⊙ (dy − ⟨dy, y⟩).
func softmaxBackwardReference(dx: UnsafeMutablePointer<Float>, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, n: Int) {
    for row in 0..<rows {
        let yr = y + row * n, gr = dy + row * n, dr = dx + row * n
        var dot: Double = 0
        for j in 0..<n { dot += Double(yr[j]) * Double(gr[j]) }
        for j in 0..<n { dr[j] += Float(Double(yr[j]) * (Double(gr[j]) - dot)) }
    }
}

/// Reference for `logSoftmaxForward`.
func logSoftmaxForwardReference(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Int, n: Int) {
    for row in 0..<rows {
        let xr = x + row * n, yr = y + row * n
        var m = -Double.infinity
        for j in 0..<n { m = Swift.max(m, Double(xr[j])) }
        var s: Double = 0
        for j in 0..<n { s += Foundation.exp(Double(xr[j]) - m) }
        let lse = m + Foundation.log(s)
        for j in 0..<n { yr[j] = Float(Double(xr[j]) - lse) }
    }
}

/// Reference for `logSoftmaxBackward`: dx += dy − exp(y)·Σdy.
func logSoftmaxBackwardReference(dx: UnsafeMutablePointer<Float>, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, n: Int) {
    for row in 0..<rows {
        let yr = y + row * n, gr = dy + row * n, dr = dx + row * n
        var s: Double = 0
        for j in 0..<n { s += Double(gr[j]) }
        for j in 0..<n { dr[j] += Float(Double(gr[j]) - Foundation.exp(Double(yr[j])) * s) }
    }
}

/// Reference for `layerNormForward` (two-pass mean and biased variance in Double).
func layerNormForwardReference(y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                                      x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                      rows: Int, n: Int, epsilon: Float) {
    for row in 0..<rows {
        let xr = x + row * n, yr = y + row * n
        var mu: Double = 0
        for j in 0..<n { mu += Double(xr[j]) }
        mu /= Double(n)
        var v: Double = 0
        for j in 0..<n { let d = Double(xr[j]) - mu; v += d * d }
        let rs = 1 / (v / Double(n) + Double(epsilon)).squareRoot()
        mean[row] = Float(mu); rstd[row] = Float(rs)
        for j in 0..<n { yr[j] = Float((Double(xr[j]) - mu) * rs * Double(gamma[j]) + Double(beta[j])) }
    }
}

/// Reference for `layerNormBackward` (accumulates dx, dγ, dβ), from the saved mean and rstd.
func layerNormBackwardReference(dx: UnsafeMutablePointer<Float>, dGamma: UnsafeMutablePointer<Float>, dBeta: UnsafeMutablePointer<Float>,
                                       x: UnsafePointer<Float>, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                       gamma: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, n: Int) {
    var dg = [Double](repeating: 0, count: n), db = [Double](repeating: 0, count: n)
    for row in 0..<rows {
        let xr = x + row * n, gr = dy + row * n, dr = dx + row * n
        let mu = Double(mean[row]), rs = Double(rstd[row])
        var sumG: Double = 0, sumGX: Double = 0
        for j in 0..<n {
            let xhat = (Double(xr[j]) - mu) * rs, g = Double(gr[j]) * Double(gamma[j])
            sumG += g; sumGX += g * xhat
            dg[j] += Double(gr[j]) * xhat; db[j] += Double(gr[j])
        }
        for j in 0..<n {
            let xhat = (Double(xr[j]) - mu) * rs
            dr[j] += Float(rs * (Double(gr[j]) * Double(gamma[j]) - sumG / Double(n) - xhat * sumGX / Double(n)))
        }
    }
    for j in 0..<n { dGamma[j] += Float(dg[j]); dBeta[j] += Float(db[j]) }
}
