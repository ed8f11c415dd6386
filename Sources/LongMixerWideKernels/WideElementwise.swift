import CLongMixerMemory

// 16-lane GELU and layer norm, and the streaming-store helpers of the wide kernels (see WideKernels.swift
// for why this module exists). On 2 threads the 8-lane GELU and layer norm were limited by instruction
// throughput, not by memory: in cache (1 thread) GELU took as long per float as streaming it from DRAM,
// and layer norm's reductions were single dependency chains (one add per 8 floats, 3–4 cycles each).
//
// `streaming`: the output is much larger than the last-level cache, so it is written with streaming
// (non-temporal) stores, which skip the read-for-ownership of every output line (1 read + 1 write of
// DRAM traffic instead of 2 reads + 1 write) and leave the caches to the input. Each function then
// ends with a store fence, before its caller's thread hands the results to another thread.

extension WideKernels {
    /// out[i] = GELU(x[i]) for i in `range`: the same constants and operation order as
    /// `VectorMath.gelu` in LongMixerCore, so results agree bit for bit (tested).
    public static func gelu(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, range: Range<Int>, streaming: Bool) {
        var i = range.lowerBound
        let end = range.upperBound
        if streaming {
            // Ordinary stores up to the first 64-byte boundary of `out`, then whole lines.
            let head = min(end - i, misalignment(out + i))
            if head > 0 { geluPartial(out: out + i, x: x + i, count: head); i += head }
            // Software prefetch 8 KiB ahead: the hardware prefetcher stops at every 4 KiB page boundary.
            while i + 64 <= end {
                let ahead = x + i + geluPrefetchFloats
                lm_prefetch(ahead); lm_prefetch(ahead + 16); lm_prefetch(ahead + 32); lm_prefetch(ahead + 48)
                let y0 = gelu(load(x, i)), y1 = gelu(load(x, i + 16)), y2 = gelu(load(x, i + 32)), y3 = gelu(load(x, i + 48))
                lm_stream16(out + i, y0); lm_stream16(out + i + 16, y1); lm_stream16(out + i + 32, y2); lm_stream16(out + i + 48, y3)
                i += 64
            }
            while i + 16 <= end { lm_stream16(out + i, gelu(load(x, i))); i += 16 }
            lm_store_fence()
        } else {
            while i + 64 <= end {
                let y0 = gelu(load(x, i)), y1 = gelu(load(x, i + 16)), y2 = gelu(load(x, i + 32)), y3 = gelu(load(x, i + 48))
                store(out, y0, i); store(out, y1, i + 16); store(out, y2, i + 32); store(out, y3, i + 48)
                i += 64
            }
            while i + 16 <= end { store(out, gelu(load(x, i)), i); i += 16 }
        }
        if i < end { geluPartial(out: out + i, x: x + i, count: end - i) }
    }

    /// How far ahead (in floats) the streaming GELU prefetches its input. Prefetches past the end of
    /// the input are harmless (a prefetch never faults).
    static let geluPrefetchFloats = 2048

    /// GELU of fewer than 16 floats (heads and tails), through one padded vector.
    static func geluPartial(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, count: Int) {
        var v = Float16x()
        for k in 0..<count { v[k] = x[k] }
        let y = gelu(v)
        for k in 0..<count { out[k] = y[k] }
    }

    /// `VectorMath.gelu` on 16 lanes: Φ(x) = ½ + x·P(x²)/Q(x²) on |x| ≤ 5.25, saturated beyond.
    @inline(__always) static func gelu(_ x: Float16x) -> Float16x {
        let phi = normalCDFNearZero(x, square: x * x)
        return (x * phi).replacing(with: x, where: x .> 5.25).replacing(with: 0, where: x .< -5.25)
    }

    /// `VectorMath.normalCDFNearZero` on 16 lanes: ½ + x·P(x²)/Q(x²), unsaturated.
    @_transparent static func normalCDFNearZero(_ x: Float16x, square s: Float16x) -> Float16x {
        var p = Float16x(repeating: 1.241_390_2e-10)
        var q = Float16x(repeating: 5.289_464_1e-05)
        p = multiplyAdd(p, s, Float16x(repeating: -2.264_697_6e-08))
        q = multiplyAdd(q, s, Float16x(repeating: 1.656_908_1e-03))
        p = multiplyAdd(p, s, Float16x(repeating: 2.967_638_6e-06))
        q = multiplyAdd(q, s, Float16x(repeating: 2.737_140_5e-02))
        p = multiplyAdd(p, s, Float16x(repeating: 1.407_543_9e-04))
        q = multiplyAdd(q, s, Float16x(repeating: 2.492_817_2e-01))
        p = multiplyAdd(p, s, Float16x(repeating: 4.317_511_3e-03))
        q = multiplyAdd(q, s, Float16x(repeating: 1))
        p = multiplyAdd(p, s, Float16x(repeating: 3.295_901_1e-02))
        p = multiplyAdd(p, s, Float16x(repeating: 3.989_422_4e-01))
        return multiplyAdd(x, p / q, Float16x(repeating: 0.5))
    }

    /// gradIn[i] = gradOut[i]·GELU′(x[i]) for i in `range` (overwriting gradIn), GELU′(x) = Φ(x) + x·φ(x):
    /// `GELUFunction`'s derivative in LongMixerCore (`VectorMath.geluDerivative`: Φ from the rational fit,
    /// φ from exp) with the same constants and operation order, on 16 lanes.
    public static func geluBackward(gradIn: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                                    gradOut: UnsafePointer<Float>, range: Range<Int>) {
        var i = range.lowerBound
        let end = range.upperBound
        // Two vectors per iteration: independent exp and division chains for the out-of-order core.
        while i + 32 <= end {
            let d0 = geluDerivative(load(x, i)), d1 = geluDerivative(load(x, i + 16))
            store(gradIn, load(gradOut, i) * d0, i); store(gradIn, load(gradOut, i + 16) * d1, i + 16)
            i += 32
        }
        while i + 16 <= end { store(gradIn, load(gradOut, i) * geluDerivative(load(x, i)), i); i += 16 }
        if i < end {
            var xv = Float16x(), gv = Float16x()
            for k in 0..<(end - i) { xv[k] = x[i + k]; gv[k] = gradOut[i + k] }
            let y = gv * geluDerivative(xv)
            for k in 0..<(end - i) { gradIn[i + k] = y[k] }
        }
    }

    /// Φ(x) + x·φ(x) (`VectorMath.geluDerivative`: Φ from the rational fit, saturated; φ from one exp).
    // @_transparent: with @inline(__always) it stayed an out-of-line call (perf: 1/3 of the backward).
    @_transparent static func geluDerivative(_ x: Float16x) -> Float16x {
        let s = x * x
        let cdf = normalCDFNearZero(x, square: s).replacing(with: 1, where: x .> 5.25).replacing(with: 0, where: x .< -5.25)
        let e = Float16x(repeating: -0.5) * s
        let pdf = Float16x(repeating: 0.398_942_28) * expNonPositive(e).replacing(with: e, where: e .!= e)
        return cdf + x * pdf
    }

    /// y = (x − μ)·rstd·γ + β for each row in `rows`, saving μ and rstd = 1/√(σ² + ε) (biased variance):
    /// the computation of `layerNormForward` in LongMixerCore on 16 lanes, with four accumulators per
    /// reduction (partial sums combined in a fixed order, so results depend only on n).
    ///
    /// Pass 1 (sum) reads the row from memory; pass 2 (squared deviations) and pass 3 (output) hit L1.
    /// Rows of 4 KiB are one page each, which the hardware prefetcher does not run across, so pass 3
    /// prefetches the row `prefetchRows` ahead, keeping memory busy while this row computes.
    public static func layerNormRows(y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                                     x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                     rows: Range<Int>, n: Int, epsilon: Float, streaming: Bool) {
        let lastRow = rows.upperBound - 1
        for row in rows {
            let xr = x + row * n, yr = y + row * n
            let ahead = x + min(row + prefetchRows, lastRow) * n
            let (mu, rs) = meanAndRstd(xr, n, epsilon)
            mean[row] = mu; rstd[row] = rs
            let mu16 = Float16x(repeating: mu), rs16 = Float16x(repeating: rs)
            var j = 0
            // Head (up to the first 64-byte boundary of the row's output) with ordinary stores.
            if streaming {
                let head = min(n, misalignment(yr))
                while j < head { yr[j] = (xr[j] - mu) * rs * gamma[j] + beta[j]; j += 1 }
            }
            while j + 64 <= n {
                lm_prefetch(ahead + j); lm_prefetch(ahead + j + 16); lm_prefetch(ahead + j + 32); lm_prefetch(ahead + j + 48)
                let y0 = (load(xr, j) - mu16) * rs16 * load(gamma, j) + load(beta, j)
                let y1 = (load(xr, j + 16) - mu16) * rs16 * load(gamma, j + 16) + load(beta, j + 16)
                let y2 = (load(xr, j + 32) - mu16) * rs16 * load(gamma, j + 32) + load(beta, j + 32)
                let y3 = (load(xr, j + 48) - mu16) * rs16 * load(gamma, j + 48) + load(beta, j + 48)
                if streaming {
                    lm_stream16(yr + j, y0); lm_stream16(yr + j + 16, y1); lm_stream16(yr + j + 32, y2); lm_stream16(yr + j + 48, y3)
                } else {
                    store(yr, y0, j); store(yr, y1, j + 16); store(yr, y2, j + 32); store(yr, y3, j + 48)
                }
                j += 64
            }
            while j + 16 <= n {
                let v = (load(xr, j) - mu16) * rs16 * load(gamma, j) + load(beta, j)
                if streaming { lm_stream16(yr + j, v) } else { store(yr, v, j) }
                j += 16
            }
            while j < n { yr[j] = (xr[j] - mu) * rs * gamma[j] + beta[j]; j += 1 }
        }
        if streaming { lm_store_fence() }
    }

    /// Rows ahead that `layerNormRows` prefetches (the hardware prefetcher stops at page boundaries; 2 and 4 did equally well).
    static let prefetchRows = 2

    /// (μ, 1/√(σ² + ε)) of one row: sum, then squared deviations from μ (no E[x²] − μ² cancellation).
    @inline(__always) static func meanAndRstd(_ xr: UnsafePointer<Float>, _ n: Int, _ epsilon: Float) -> (Float, Float) {
        var a0 = Float16x(), a1 = Float16x(), a2 = Float16x(), a3 = Float16x(), j = 0
        while j + 64 <= n {
            a0 += load(xr, j); a1 += load(xr, j + 16); a2 += load(xr, j + 32); a3 += load(xr, j + 48)
            j += 64
        }
        while j + 16 <= n { a0 += load(xr, j); j += 16 }
        var s = ((a0 + a1) + (a2 + a3)).sum()
        while j < n { s += xr[j]; j += 1 }
        let mu = s / Float(n)
        let mu16 = Float16x(repeating: mu)
        a0 = Float16x(); a1 = Float16x(); a2 = Float16x(); a3 = Float16x(); j = 0
        while j + 64 <= n {
            let d0 = load(xr, j) - mu16, d1 = load(xr, j + 16) - mu16, d2 = load(xr, j + 32) - mu16, d3 = load(xr, j + 48) - mu16
            a0 = multiplyAdd(d0, d0, a0); a1 = multiplyAdd(d1, d1, a1); a2 = multiplyAdd(d2, d2, a2); a3 = multiplyAdd(d3, d3, a3)
            j += 64
        }
        while j + 16 <= n { let d = load(xr, j) - mu16; a0 = multiplyAdd(d, d, a0); j += 16 }
        var v = ((a0 + a1) + (a2 + a3)).sum()
        while j < n { let d = xr[j] - mu; v += d * d; j += 1 }
        return (mu, 1 / (v / Float(n) + epsilon).squareRoot())
    }

    /// Floats from `p` to the next 64-byte boundary (0 when aligned; `p` is 4-byte aligned).
    @inline(__always) static func misalignment(_ p: UnsafeMutablePointer<Float>) -> Int {
        let offset = Int(bitPattern: p) & 63
        return offset == 0 ? 0 : (64 - offset) / 4
    }
}
