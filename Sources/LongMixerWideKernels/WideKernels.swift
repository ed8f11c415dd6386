// Kernels for 512-bit vectors (AVX-512), in a module of their own because Swift picks the target CPU
// per module: this one is built with `-target-cpu skylake-avx512` (AVX-512 F/CD/BW/DQ/VL) (see Package.swift), the rest of the
// package for AVX2 + FMA. Nothing here may run on a CPU without AVX-512: LongMixerCore calls these
// functions only after `CPUFeatures.avx512` (from /proc/cpuinfo) said yes, and keeps an AVX2 path
// beside each one. Nothing is @inlinable, so no AVX-512 instruction can be inlined into AVX2 code.
//
// Why: the exp-bound softmax is limited by vector instruction throughput, not memory, on 2 threads;
// 16 lanes per instruction (and 32 vector registers, so constants stay in registers) halve the work.

import CLongMixerMemory

public typealias Float16x = SIMD16<Float>

public enum WideKernels {
    /// True when this module was compiled for AVX-512 (false in LONGMIXER_PORTABLE=1 builds, where the
    /// 16-lane code would be split into narrower instructions and would gain nothing).
    public static var compiledForAVX512: Bool {
        #if LONGMIXER_AVX512
        return true
        #else
        return false
        #endif
    }

    /// y = softmax(x) for each row in `rows`.   y, x: [_, n]
    ///
    /// Per row: max (reads memory); exp(x − max), store and sum (L1); scale by 1/sum (L1). x − max ≤ 0,
    /// so the exp needs no overflow handling. NaN and −∞ rows behave as the AVX2 kernel's (all NaN).
    ///
    /// `streaming` (outputs much larger than the last-level cache): the exp pass writes a scratch row
    /// (L1) and the scale pass writes y with streaming stores (see WideElementwise.swift), so y's lines
    /// are never read from memory; then one store fence.
    public static func softmaxRows(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Range<Int>, n: Int,
                                   streaming: Bool = false) {
        guard !rows.isEmpty else { return }
        if streaming {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { scratch in
                softmaxRows(y: y, x: x, rows: rows, n: n, scratch: scratch.baseAddress!)
            }
            lm_store_fence()
        } else {
            softmaxRows(y: y, x: x, rows: rows, n: n, scratch: nil)
        }
    }

    /// `softmaxRows`; with a scratch row of n floats, exp goes there and the scaled row streams to y.
    static func softmaxRows(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Range<Int>, n: Int,
                            scratch: UnsafeMutablePointer<Float>?) {
        var m = rowMax(x + rows.lowerBound * n, n)
        for row in rows {
            let xr = x + row * n, yr = scratch ?? y + row * n
            // The max pass only waits on memory and the exp pass only computes, so the exp loop of this
            // row also takes the max of the next one (its loads then overlap the polynomial). The last
            // row of the range re-reads itself (from L1) to keep the loop branch-free.
            let next = row + 1 < rows.upperBound ? xr + n : xr
            // Software prefetch of the row 4 ahead (16 KiB for n = 1024): rows of 4 KiB are one page each,
            // which the hardware prefetcher does not run across.
            let ahead = x + min(row + softmaxPrefetchRows, rows.upperBound - 1) * n
            let mv = Float16x(repeating: m)
            var acc0 = Float16x(), acc1 = Float16x(), acc2 = Float16x(), acc3 = Float16x()
            var nextMax0 = Float16x(repeating: -.infinity), nextMax1 = nextMax0
            var j = 0
            while j + 64 <= n {
                lm_prefetch(ahead + j); lm_prefetch(ahead + j + 16); lm_prefetch(ahead + j + 32); lm_prefetch(ahead + j + 48)
                let e0 = expNonPositive(load(xr, j) - mv), e1 = expNonPositive(load(xr, j + 16) - mv)
                let e2 = expNonPositive(load(xr, j + 32) - mv), e3 = expNonPositive(load(xr, j + 48) - mv)
                store(yr, e0, j); store(yr, e1, j + 16); store(yr, e2, j + 32); store(yr, e3, j + 48)
                acc0 += e0; acc1 += e1; acc2 += e2; acc3 += e3
                let v0 = load(next, j), v1 = load(next, j + 16), v2 = load(next, j + 32), v3 = load(next, j + 48)
                nextMax0 = nextMax0.replacing(with: v0, where: v0 .> nextMax0)
                nextMax1 = nextMax1.replacing(with: v1, where: v1 .> nextMax1)
                nextMax0 = nextMax0.replacing(with: v2, where: v2 .> nextMax0)
                nextMax1 = nextMax1.replacing(with: v3, where: v3 .> nextMax1)
                j += 64
            }
            let pairedEnd = j
            while j + 16 <= n { let e = expNonPositive(load(xr, j) - mv); store(yr, e, j); acc0 += e; j += 16 }
            var s = ((acc0 + acc1) + (acc2 + acc3)).sum()
            // Tail: one vector with −∞ in the lanes past n (exp → 0), so the tail uses the same exp.
            if j < n {
                var tail = Float16x(repeating: -.infinity)
                for i in 0..<(n - j) { tail[i] = xr[j + i] }
                let e = expNonPositive(tail - mv)
                for i in 0..<(n - j) { yr[j + i] = e[i] }
                s += e.sum()
            }
            let inv = Float16x(repeating: 1 / s)
            j = 0
            if scratch != nil {
                // yr is the scratch row; the output row gets ordinary stores up to its first 64-byte
                // boundary, then streaming stores of whole lines.
                let out = y + row * n
                let head = min(n, misalignment(out))
                while j < head { out[j] = yr[j] * inv[0]; j += 1 }
                while j + 16 <= n { lm_stream16(out + j, load(yr, j) * inv); j += 16 }
                while j < n { out[j] = yr[j] * inv[0]; j += 1 }
            } else {
                while j + 16 <= n { store(yr, load(yr, j) * inv, j); j += 16 }
                while j < n { yr[j] *= inv[0]; j += 1 }
            }
            // The next row's max: the paired blocks above, then the rest of the row.
            nextMax0 = nextMax0.replacing(with: nextMax1, where: nextMax1 .> nextMax0)
            m = horizontalMax(nextMax0)
            for k in pairedEnd..<n where next[k] > m { m = next[k] }
        }
    }

    /// Rows ahead that `softmaxRows` prefetches.
    static let softmaxPrefetchRows = 4

    /// max_j x[j] (NaN entries are skipped, as `rowMax` in LongMixerCore; −∞ for an empty row).
    static func rowMax(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var m16 = Float16x(repeating: -.infinity), j = 0
        while j + 16 <= n { let v = load(x, j); m16 = m16.replacing(with: v, where: v .> m16); j += 16 }
        var m = horizontalMax(m16)
        while j < n { if x[j] > m { m = x[j] }; j += 1 }
        return m
    }

    @inline(__always) static func horizontalMax(_ v: Float16x) -> Float {
        var m = v[0]
        for i in 1..<16 where v[i] > m { m = v[i] }
        return m
    }

    // MARK: - 16-lane helpers

    @inline(__always) static func load(_ p: UnsafePointer<Float>, _ i: Int) -> Float16x {
        UnsafeRawPointer(p + i).loadUnaligned(as: Float16x.self)
    }
    @inline(__always) static func load(_ p: UnsafeMutablePointer<Float>, _ i: Int) -> Float16x {
        UnsafeRawPointer(p + i).loadUnaligned(as: Float16x.self)
    }
    @inline(__always) static func store(_ p: UnsafeMutablePointer<Float>, _ v: Float16x, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: Float16x.self)
    }
    /// c + a·b (one FMA).
    @inline(__always) static func multiplyAdd(_ a: Float16x, _ b: Float16x, _ c: Float16x) -> Float16x { c.addingProduct(a, b) }

    /// exp(x) for x ≤ 0 (or NaN): the same reduction, polynomial, constants and operation order as
    /// `VectorMath.expNonPositive` in LongMixerCore (so results agree bit for bit; tested), on 16 lanes.
    @inline(__always) static func expNonPositive(_ x: Float16x) -> Float16x {
        let underflow = x .< -87.33
        let xc = x.replacing(with: -87.33, where: underflow)
        let shifter = Float16x(repeating: 12_582_912.0)
        let nShifted = multiplyAdd(xc, Float16x(repeating: 1.442_695_04), shifter)
        let n = nShifted - shifter
        let r = multiplyAdd(n, Float16x(repeating: 2.121_944_4e-4), multiplyAdd(n, Float16x(repeating: -0.693_359_375), xc))
        var p = Float16x(repeating: 8.297_654_8e-3)
        p = multiplyAdd(p, r, Float16x(repeating: 4.191_538_3e-2))
        p = multiplyAdd(p, r, Float16x(repeating: 1.666_757_46e-1))
        p = multiplyAdd(p, r, Float16x(repeating: 4.999_889_43e-1))
        p = multiplyAdd(p, r, Float16x(repeating: 9.999_997_02e-1))
        p = multiplyAdd(p, r, Float16x(repeating: 1.000_000_12))
        let nInt = unsafeBitCast(nShifted, to: SIMD16<Int32>.self) &- 0x4B40_0000
        let scale = unsafeBitCast((nInt &+ 127) &<< 23, to: Float16x.self)
        return (p * scale).replacing(with: 0, where: underflow)
    }
}

extension WideKernels {
    /// `iterations` steps of 12 independent chains of 16-lane fused multiply-adds (384 FLOPs per step), all
    /// in registers: timed, the core's 16-lane multiply-add throughput (12 chains hide a 4-cycle latency on
    /// two pipes). Returns a sum of the chains, so that they are computed.
    public static func multiplyAddChains(iterations: Int) -> Float {
        let b = Float16x(repeating: 0.999_999), c = Float16x(repeating: 1e-7)
        var a0 = Float16x(repeating: 0), a1 = Float16x(repeating: 1), a2 = Float16x(repeating: 2), a3 = Float16x(repeating: 3)
        var a4 = Float16x(repeating: 4), a5 = Float16x(repeating: 5), a6 = Float16x(repeating: 6), a7 = Float16x(repeating: 7)
        var a8 = Float16x(repeating: 8), a9 = Float16x(repeating: 9), a10 = Float16x(repeating: 10), a11 = Float16x(repeating: 11)
        for _ in 0..<iterations {
            a0 = c.addingProduct(a0, b); a1 = c.addingProduct(a1, b); a2 = c.addingProduct(a2, b); a3 = c.addingProduct(a3, b)
            a4 = c.addingProduct(a4, b); a5 = c.addingProduct(a5, b); a6 = c.addingProduct(a6, b); a7 = c.addingProduct(a7, b)
            a8 = c.addingProduct(a8, b); a9 = c.addingProduct(a9, b); a10 = c.addingProduct(a10, b); a11 = c.addingProduct(a11, b)
        }
        return (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11).sum()
    }
}
