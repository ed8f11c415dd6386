import Foundation
import LongMixerWideKernels

/// One run of `iterations` steps of 12 independent chains of fused multiply-adds on every thread at once, all
/// in registers (12 chains hide a 4–5-cycle latency on two pipes): timed, the cores' vector multiply-add peak,
/// the limit under every GEMM rate. 16 lanes where the wide kernels run (`CPUFeatures.avx512`), else 8.
/// Returns the lanes and the FLOPs of the run.
@discardableResult
public func runMultiplyAddChains(iterations: Int) -> (lanes: Int, flops: Double) {
    let wide = CPUFeatures.avx512
    let threads = Parallel.threadCount
    let sinks = UnsafeMutablePointer<Float>.allocate(capacity: threads)
    defer { sinks.deallocate() }
    parallelFor(threads) { r in
        for t in r { sinks[t] = wide ? WideKernels.multiplyAddChains(iterations: iterations) : multiplyAddChains(iterations: iterations) }
    }
    let lanes = wide ? 16 : 8
    return (lanes, Double(threads * iterations * 12 * lanes * 2))
}

/// `runMultiplyAddChains`, timed: the fastest of `samples` runs (about 8 ms each at 3 GHz) after a warm-up (on
/// a shared machine, short samples catch the moments with every core). Returns (lanes, FLOPs, seconds).
public func timeMultiplyAddChains(iterations: Int = 4_000_000, samples: Int = 15) -> (lanes: Int, flops: Double, seconds: Double) {
    var best = Double.infinity, run = (lanes: 8, flops: 0.0)
    for sample in 0...samples {
        let start = DispatchTime.now().uptimeNanoseconds
        run = runMultiplyAddChains(iterations: iterations)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        if sample > 0 { best = min(best, seconds) }
    }
    return (run.lanes, run.flops, best)
}

/// The 8-lane chains of `timeMultiplyAddChains`.
func multiplyAddChains(iterations: Int) -> Float {
    let b = Float8(repeating: 0.999_999), c = Float8(repeating: 1e-7)
    var a0 = Float8(repeating: 0), a1 = Float8(repeating: 1), a2 = Float8(repeating: 2), a3 = Float8(repeating: 3)
    var a4 = Float8(repeating: 4), a5 = Float8(repeating: 5), a6 = Float8(repeating: 6), a7 = Float8(repeating: 7)
    var a8 = Float8(repeating: 8), a9 = Float8(repeating: 9), a10 = Float8(repeating: 10), a11 = Float8(repeating: 11)
    for _ in 0..<iterations {
        a0 = VectorMath.multiplyAdd(a0, b, c); a1 = VectorMath.multiplyAdd(a1, b, c); a2 = VectorMath.multiplyAdd(a2, b, c)
        a3 = VectorMath.multiplyAdd(a3, b, c); a4 = VectorMath.multiplyAdd(a4, b, c); a5 = VectorMath.multiplyAdd(a5, b, c)
        a6 = VectorMath.multiplyAdd(a6, b, c); a7 = VectorMath.multiplyAdd(a7, b, c); a8 = VectorMath.multiplyAdd(a8, b, c)
        a9 = VectorMath.multiplyAdd(a9, b, c); a10 = VectorMath.multiplyAdd(a10, b, c); a11 = VectorMath.multiplyAdd(a11, b, c)
    }
    return (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11).sum()
}
