import COpenBLAS
import Foundation

/// GEMM on OpenBLAS. Transposes are passed as flags, never materialised.
public enum BLAS {
    /// OpenBLAS 0.3.21 runs mid-sized sgemm at a third of its speed until one large-M-and-N sgemm
    /// has run in the process (see reference/perf-probe.md §2); one 1024×1024×8 call fixes it.
    nonisolated(unsafe) private static var warmedUp = false

    public static func warmUp() {
        if warmedUp { return }
        warmedUp = true
        _ = Parallel.threadCount
        let a = [Float](repeating: 0.5, count: 1024 * 8)
        var c = [Float](repeating: 0, count: 1024 * 1024)
        a.withUnsafeBufferPointer { ap in
            c.withUnsafeMutableBufferPointer { cp in
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1024, 1024, 8, 1,
                            ap.baseAddress, 8, ap.baseAddress, 8, 0, cp.baseAddress, 1024)
            }
        }
    }

    /// C[M,N] = alpha · op(A) · op(B) + beta · C, row-major. op(A) is M×K, op(B) is K×N.
    /// A: [M,K] (or [K,M] when transposeA), B: [K,N] (or [N,K] when transposeB), C: [M,N].
    
    public static func gemm(transposeA: Bool = false, transposeB: Bool = false,
                            m: Int, n: Int, k: Int, alpha: Float = 1,
                            a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            if beta == 0 { c.update(repeating: 0, count: m * n) } else if beta != 1 { for i in 0..<(m * n) { c[i] *= beta } }
            return
        }
        warmUp()
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(transposeA ? m : k), b, Int32(transposeB ? k : n), beta, c, Int32(n))
    }

    /// `batch` independent GEMMs over consecutive matrices (strides = matrix sizes); a stride of 0
    /// reuses one operand for every batch entry (a shared weight).
    
    public static func batchedGemm(batch: Int, transposeA: Bool = false, transposeB: Bool = false,
                                   m: Int, n: Int, k: Int, alpha: Float = 1,
                                   a: UnsafePointer<Float>, strideA: Int, b: UnsafePointer<Float>, strideB: Int,
                                   beta: Float = 0, c: UnsafeMutablePointer<Float>) {
        for i in 0..<batch {
            gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                 a: a + i * strideA, b: b + i * strideB, beta: beta, c: c + i * m * n)
        }
    }

    public static var coreName: String { String(cString: openblas_get_corename()) }

    nonisolated(unsafe) private static var singleThreadDepth = 0
    private static let singleThreadLock = NSLock()

    /// Runs `body` with OpenBLAS limited to one thread, then restores `Parallel.threadCount`.
    ///
    /// This is the one sanctioned exception to "a `parallelFor` body never calls BLAS": a kernel that
    /// parallelises over independent (batch, head) slices wraps its `parallelFor` in this, so each
    /// worker calls single-threaded sgemm and at most `Parallel.threadCount` threads are busy
    /// (perf-probe §4: per-head parallelism beats BLAS threading on small GEMMs). Nests and may be
    /// entered from concurrent threads: the first entry sets 1 thread, the last exit restores.
    /// OpenBLAS's thread count is process-global, so other BLAS callers running meanwhile also run
    /// single-threaded (slower, never wrong).
    public static func withSingleThread<R>(_ body: () throws -> R) rethrows -> R {
        _ = Parallel.threadCount   // initialise the budget (it sets OpenBLAS's count) before we change it
        singleThreadLock.lock()
        if singleThreadDepth == 0 { openblas_set_num_threads(1) }
        singleThreadDepth += 1
        singleThreadLock.unlock()
        defer {
            singleThreadLock.lock()
            singleThreadDepth -= 1
            if singleThreadDepth == 0 { openblas_set_num_threads(Int32(Parallel.threadCount)) }
            singleThreadLock.unlock()
        }
        return try body()
    }

    /// OpenBLAS build configuration, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64".
    public static var configuration: String { String(cString: openblas_get_config()).trimmingCharacters(in: .whitespaces) }

    /// Whether a tall-skinny GEMM (many rows, small weight) should be split by rows over our
    /// threads with single-threaded sgemm: OpenBLAS's own threading of such shapes (e.g. 32768×32·32×32)
    /// is slower on 2 threads than on 1 (docs/benchmarks.md, core kernels).
    static func prefersRowSplit(rows: Int, n: Int, k: Int) -> Bool {
        Parallel.threadCount > 1 && rows >= 2048 && n * k <= 256 * 256
    }

    /// C[M,N] = A[M,K] · op(B) (+ beta·C), rows of A and C split over `parallelFor` with
    /// single-threaded BLAS when the shape is tall and skinny; one sgemm otherwise.
    public static func rowSplitGemm(transposeB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>,
                                    b: UnsafePointer<Float>, beta: Float = 0, c: UnsafeMutablePointer<Float>) {
        guard prefersRowSplit(rows: m, n: n, k: k) else {
            gemm(transposeB: transposeB, m: m, n: n, k: k, a: a, b: b, beta: beta, c: c)
            return
        }
        warmUp()
        withSingleThread {
            parallelFor(m, grain: 1024) { r in
                gemm(transposeB: transposeB, m: r.count, n: n, k: k, a: a + r.lowerBound * k, b: b, beta: beta,
                     c: c + r.lowerBound * n)
            }
        }
    }

    /// C[N,K] = A[M,N]ᵀ · B[M,K] (a weight gradient: a reduction over the M rows). Tall and skinny
    /// shapes reduce fixed row chunks in parallel into partial products, added in chunk order
    /// (deterministic for a given thread count).
    public static func rowReducedGemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                                      c: UnsafeMutablePointer<Float>) {
        guard prefersRowSplit(rows: m, n: n, k: k) else {
            gemm(transposeA: true, m: n, n: k, k: m, a: a, b: b, c: c)
            return
        }
        warmUp()
        let chunks = Parallel.threadCount
        let partial = UnsafeMutablePointer<Float>.allocate(capacity: chunks * n * k)
        defer { partial.deallocate() }
        withSingleThread {
            DispatchQueueHelper.run(chunks) { i in
                let lo = m * i / chunks, hi = m * (i + 1) / chunks
                gemm(transposeA: true, m: n, n: k, k: hi - lo, a: a + lo * n, b: b + lo * k, c: partial + i * n * k)
            }
        }
        c.update(from: partial, count: n * k)
        for i in 1..<chunks { axpySerial(y: c, x: partial + i * n * k, count: n * k) }
    }
}
