import COpenBLAS
import Dispatch
import Foundation

/// Thread budget of LongMixer's loops (`parallelFor`), which also run the split matrix products.
///
/// Rule against oversubscription: a `parallelFor` body never calls BLAS, and BLAS is called only
/// from the calling thread, so at most `threadCount` threads are busy at any time. OpenBLAS itself is
/// held at one thread: `BLAS.gemm` splits large products over `parallelFor`, since OpenBLAS's idle
/// workers spin on sched_yield between calls and take cores from our kernels. Set it once with
/// `Parallel.setThreadCount(_:)` (the CLI's `--threads`, or `LONGMIXER_THREADS`).
public enum Parallel {
    nonisolated(unsafe) public private(set) static var threadCount: Int = {
        openblas_set_num_threads(1)
        return RuntimeOptions.environment.threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Sets LongMixer's thread count. User input goes through `RuntimeOptions.validatedThreadCount`
    /// first (1 … 4 × cores).
    public static func setThreadCount(_ n: Int) {
        _ = threadCount   // holds OpenBLAS at one thread
        check(n >= 1, "thread count must be ≥ 1, got \(n)")
        threadCount = n
    }

    public static var blasThreadCount: Int { Int(openblas_get_num_threads()) }
}

/// Runs `body` over disjoint sub-ranges covering 0..<count, on up to `Parallel.threadCount`
/// threads. `grain` is the smallest range worth a thread (below it, everything runs inline).
/// Ranges depend only on `count`, `grain` and the thread count, never on timing.

public func parallelFor(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
    if count <= 0 { return }
    let threads = Parallel.threadCount
    let chunks = min(threads, max(1, count / max(grain, 1)))
    if chunks <= 1 {
        body(0..<count)
        return
    }
    // A few more pieces than threads balances uneven rows without much dispatch overhead.
    let pieces = min(count, chunks * (count / max(grain, 1) >= chunks * 4 ? 4 : 1))
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: pieces) { p in
            let start = count * p / pieces
            let end = count * (p + 1) / pieces
            if start < end { body(start..<end) }
        }
    }
}
