import COpenBLAS
import Foundation
import LongMixerWideKernels

/// GEMM: LongMixerWideKernels' packed AVX-512 SGEMM for large products on AVX-512 machines, OpenBLAS
/// otherwise (see `usesPackedGemm`). Transposes are passed as flags, never materialised.
///
/// Determinism: every path gives the same bits from run to run for a fixed thread count. The packed
/// AVX-512 kernel and the skinny kernels (both widths) also give the same bits for any thread count
/// (`usesPackedGemm`, `usesSkinnyGemm`); OpenBLAS does not, since its threading and our row splits
/// change the summation order.
public enum BLAS {
    /// OpenBLAS 0.3.21 runs mid-sized sgemm at a third of its speed until one large-M-and-N sgemm
    /// has run in the process; one 1024×1024×8 call fixes it.
    nonisolated(unsafe) private static var warmedUp = false

    public static func warmUp() {
        if warmedUp { return }
        warmedUp = true
        _ = Parallel.threadCount
        let a = [Float](repeating: 0.5, count: 1024 * 8)
        var c = [Float](repeating: 0, count: 1024 * 1024)
        a.withUnsafeBufferPointer { ap in
            c.withUnsafeMutableBufferPointer { cp in
                openBLASSgemm(false, true, 1024, 1024, 8, alpha: 1, ap.baseAddress!, 8, ap.baseAddress!, 8, beta: 0, cp.baseAddress!, 1024)
            }
        }
    }

    /// Held around `fork` (`ChildProcess`): OpenBLAS's fork handler stops its thread pool. OpenBLAS itself
    /// always runs single-threaded (`Parallel.threadCount`), so its pool stays idle and this lock is
    /// uncontended in a training process.
    static let openBLASLock = NSLock()

    /// `cblas_sgemm` (row-major, explicit leading dimensions) on the caller's thread: OpenBLAS is held at one
    /// thread, so concurrent calls from `parallelFor` workers run side by side.
    @inline(__always)
    static func openBLASSgemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, alpha: Float,
                              _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                              beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
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
        if usesPackedGemm(m: m, n: n, k: k) {
            packedGemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                       a: a, lda: transposeA ? m : k, b: b, ldb: transposeB ? k : n, beta: beta, c: c, ldc: n,
                       threads: singleThreadDepth > 0 ? 1 : Parallel.threadCount)
            return
        }
        warmUp()
        splitOpenBLASGemm(transposeA, transposeB, m, n, k, alpha: alpha, a, transposeA ? m : k, b, transposeB ? k : n,
                          beta: beta, c, n)
    }

    /// `openBLASSgemm` split over `parallelFor` (one piece inside `withSingleThread`), with explicit leading
    /// dimensions. Our own split over single-threaded sgemm rather than OpenBLAS's threads: after each
    /// threaded call OpenBLAS's workers spin on sched_yield for about 0.1 s and take cores from the
    /// `parallelFor` kernels that run between the products (a Transformer step at N 1024 on 2 cores: 22 %
    /// slower).
    static func splitOpenBLASGemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, alpha: Float,
                                  _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                                  beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        splitProduct(m: m, n: n, k: k, rowTile: openBLASSplitTile, columnTile: openBLASSplitTile,
                     threads: singleThreadDepth > 0 ? 1 : Parallel.threadCount) { rows, columns in
            let i = rows.lowerBound, j = columns.lowerBound
            openBLASSgemm(transA, transB, rows.count, columns.count, k, alpha: alpha,
                          transA ? a + i : a + i * lda, lda, transB ? b + j * ldb : b + j, ldb, beta: beta, c + i * ldc + j, ldc)
        }
    }

    /// Rows or columns of C by which an OpenBLAS product is split (a multiple of its register tiles).
    static let openBLASSplitTile = 16

    /// Splits an M×N product C into ranges of whole `rowTile`-row or `columnTile`-column blocks along its
    /// longer side and runs `piece(rows, columns)` for each, on up to `threads` `parallelFor` threads. Every
    /// piece repacks all of op(B) (row split) or of op(A) (column split); products below
    /// `gemmMinimumWorkPerThread` multiply-adds per piece stay on the caller's thread.
    static func splitProduct(m: Int, n: Int, k: Int, rowTile: Int, columnTile: Int, threads: Int,
                             _ piece: (_ rows: Range<Int>, _ columns: Range<Int>) -> Void) {
        let rowTiles = (m + rowTile - 1) / rowTile, columnTiles = (n + columnTile - 1) / columnTile
        let splitRows = m >= n ? rowTiles >= 2 : columnTiles < 2
        let tiles = splitRows ? rowTiles : columnTiles
        let pieces = max(1, min(threads, tiles, m * n * k / gemmMinimumWorkPerThread))
        func run(_ p: Int) {
            let lo = tiles * p / pieces, hi = tiles * (p + 1) / pieces
            if splitRows {
                piece(min(m, lo * rowTile)..<min(m, hi * rowTile), 0..<n)
            } else {
                piece(0..<m, min(n, lo * columnTile)..<min(n, hi * columnTile))
            }
        }
        if pieces == 1 { run(0) } else { parallelFor(pieces) { r in for p in r { run(p) } } }
    }

    // MARK: Packed AVX-512 SGEMM

    /// Which GEMM `gemm` uses: `LONGMIXER_GEMM=openblas` forces OpenBLAS for every shape, `packed` the packed
    /// AVX-512 kernel for every shape (on AVX-512 machines; for tests and benchmarks), unset or `auto` picks by size.
    public enum GemmBackend: String, Sendable { case auto, openblas, packed }

    public static let gemmBackend: GemmBackend = GemmBackend(rawValue: RuntimeOptions.environment.gemm.rawValue) ?? .auto

    /// The packed kernel runs at all: AVX-512 (CPUFeatures.avx512, so LONGMIXER_NO_AVX512=1 turns it off)
    /// and not LONGMIXER_GEMM=openblas.
    public static var packedGemmAvailable: Bool { CPUFeatures.avx512 && gemmBackend != .openblas }

    /// Whether `gemm` takes the packed kernel for an M×K·K×N product: on AVX-512, when the product is large
    /// enough that packing pays. Measured on Zen 5 against the forced-Haswell OpenBLAS, one thread: the packed
    /// kernel wins from 64³ (1.2×; 1.7–1.9× from 256³) but not on thin products: every row of op(A) and column
    /// of op(B) is repacked, so with m or n below 64 the packing (and the 12×32 tile's padding) costs what the
    /// wider FMAs save (16×512·512×512ᵀ: 0.7×; 512×32·32×512: 1.05×).
    public static func usesPackedGemm(m: Int, n: Int, k: Int) -> Bool {
        guard packedGemmAvailable else { return false }
        if gemmBackend == .packed { return true }
        return min(m, n) >= packedGemmMinimumSide && m * n * k >= packedGemmMinimumWork
    }

    /// Multiply-adds (m·n·k), and rows and columns of C, from which the packed kernel beats OpenBLAS.
    public static let packedGemmMinimumWork = 64 * 64 * 64, packedGemmMinimumSide = 64

    /// C = alpha·op(A)·op(B) + beta·C on the packed AVX-512 kernel (which the caller checked is available),
    /// split over `threads` calls run by `parallelFor` (with `Parallel.threadCount` ≥ `threads`). C is split
    /// into ranges of whole register tiles along its longer side; every element's sum has the same operations
    /// in the same order whatever the split, so the result does not depend on the thread count.
    static func packedGemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                           a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                           beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int) {
        check(m >= 0 && n >= 0 && k >= 0, "gemm: negative size m \(m) n \(n) k \(k)")
        check(lda >= (transposeA ? m : k) && ldb >= (transposeB ? k : n) && ldc >= n,
              "gemm: leading dimensions lda \(lda) ldb \(ldb) ldc \(ldc) too small for m \(m) n \(n) k \(k)")
        check(threads >= 1, "gemm: thread count must be ≥ 1, got \(threads)")
        if m == 0 || n == 0 { return }
        if k == 0 {
            for i in 0..<m {
                let row = c + i * ldc
                if beta == 0 { row.update(repeating: 0, count: n) } else if beta != 1 { for j in 0..<n { row[j] *= beta } }
            }
            return
        }
        // Every element's sum has the same operations in the same order whatever the split.
        splitProduct(m: m, n: n, k: k, rowTile: PackedGemm.tileRows, columnTile: PackedGemm.tileColumns,
                     threads: threads) { rows, columns in
            PackBuffers.with { packA, packB in
                PackedGemm.gemm(transposeA: transposeA, transposeB: transposeB, rows: rows, columns: columns, k: k,
                                alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc,
                                packA: packA, packB: packB)
            }
        }
    }

    /// Multiply-adds per thread below which a product is not split further.
    static let gemmMinimumWorkPerThread = 128 * 128 * 128

    /// Packing buffers of the packed GEMM, reused between calls (a fresh 670 KiB buffer per call would
    /// page-fault on first touch). Each call takes one pair and gives it back.
    enum PackBuffers {
        nonisolated(unsafe) private static var idle: [UnsafeMutableRawPointer] = []
        private static let lock = NSLock()
        private static let aBytes = (PackedGemm.packedACount * 4 + 4095) / 4096 * 4096
        private static let bytes = aBytes + PackedGemm.packedBCount * 4

        static func with<R>(_ body: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> R) -> R {
            lock.lock()
            let raw = idle.popLast() ?? UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
            lock.unlock()
            defer {
                lock.lock()
                if idle.count < 8 { idle.append(raw) } else { raw.deallocate() }
                lock.unlock()
            }
            return body(raw.bindMemory(to: Float.self, capacity: PackedGemm.packedACount),
                        (raw + aBytes).bindMemory(to: Float.self, capacity: PackedGemm.packedBCount))
        }
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

    nonisolated(unsafe) static var singleThreadDepth = 0
    private static let singleThreadLock = NSLock()

    /// Runs `body` with every product on its caller's thread (no split over `parallelFor`).
    ///
    /// This is the one sanctioned exception to "a `parallelFor` body never calls BLAS": a kernel that
    /// parallelises over independent (batch, head) slices wraps its `parallelFor` in this, so each
    /// worker runs its products alone and at most `Parallel.threadCount` threads are busy
    /// (per-head parallelism beats splitting small products). Nests and may be entered from concurrent
    /// threads. The state is process-global, so other BLAS callers running meanwhile also stay on one
    /// thread (slower, never wrong).
    public static func withSingleThread<R>(_ body: () throws -> R) rethrows -> R {
        _ = Parallel.threadCount   // its initialiser holds OpenBLAS at one thread, before any worker calls it
        singleThreadLock.withLock { singleThreadDepth += 1 }
        defer { singleThreadLock.withLock { singleThreadDepth -= 1 } }
        return try body()
    }

    /// Runs `body` with OpenBLAS's own threading at `threads`, then holds it at one thread again: the raw
    /// `cblas_sgemm` baseline of `longmixer bench core`. Nothing else may call BLAS meanwhile.
    public static func withOpenBLASThreads<R>(_ threads: Int, _ body: () throws -> R) rethrows -> R {
        try openBLASLock.withLock {
            openblas_set_num_threads(Int32(clamping: threads))
            defer { openblas_set_num_threads(1) }
            return try body()
        }
    }

    /// OpenBLAS build configuration, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64".
    public static var configuration: String { String(cString: openblas_get_config()).trimmingCharacters(in: .whitespaces) }

    /// Whether a tall-skinny GEMM (many rows, small weight) should be split by rows over our
    /// threads with single-threaded sgemm: OpenBLAS's own threading of such shapes (e.g. 32768×32·32×32)
    /// is slower on 2 threads than on 1 (docs/benchmarks.md, core kernels).
    static func prefersRowSplit(rows: Int, n: Int, k: Int) -> Bool {
        Parallel.threadCount > 1 && rows >= 2048 && n * k <= 256 * 256
    }

    /// C[M,N] = A[M,K] · op(B) (+ beta·C, or + a bias row [N] broadcast to every row), rows of A and C split
    /// over `parallelFor` with single-threaded BLAS when the shape is tall and skinny; one sgemm otherwise.
    /// Bitwise independent of the thread count only where `usesSkinnyGemm`.
    /// With `bias`, `beta` is ignored: each row chunk copies the bias into its rows right before its own
    /// sgemm (β = 1), so the fill runs in parallel and the rows are still in cache for the product.
    public static func rowSplitGemm(transposeB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>,
                                    b: UnsafePointer<Float>, beta: Float = 0, bias: UnsafePointer<Float>? = nil,
                                    c: UnsafeMutablePointer<Float>) {
        if (beta == 0 || bias != nil) && usesSkinnyGemm(m: m, n: n, k: k) {
            skinnyGemm(transposeB: transposeB, m: m, n: n, k: k, a: a, b: b, bias: bias, c: c)
            return
        }
        func chunk(_ r: Range<Int>) {
            var chunkBeta = beta
            if let bias {
                for row in r { (c + row * n).update(from: bias, count: n) }
                chunkBeta = 1
            }
            gemm(transposeB: transposeB, m: r.count, n: n, k: k, a: a + r.lowerBound * k, b: b, beta: chunkBeta,
                 c: c + r.lowerBound * n)
        }
        guard prefersRowSplit(rows: m, n: n, k: k) else {
            // One (possibly multi-threaded) GEMM: fill the bias rows in parallel first.
            if let bias { parallelFor(m, grain: max(1, 65_536 / max(n, 1))) { r in for row in r { (c + row * n).update(from: bias, count: n) } } }
            gemm(transposeB: transposeB, m: m, n: n, k: k, a: a, b: b, beta: bias == nil ? beta : 1, c: c)
            return
        }
        warmUp()
        withSingleThread {
            parallelFor(m, grain: 1024) { r in
                // Pieces of ≤ 1024 rows, so a piece's bias-filled rows are still in L2 when its sgemm reads them.
                var lo = r.lowerBound
                while lo < r.upperBound {
                    let hi = Swift.min(r.upperBound, lo + 1024)
                    chunk(lo..<hi)
                    lo = hi
                }
            }
        }
    }

    /// C[N,K] = A[M,N]ᵀ · B[M,K] (a weight gradient: a reduction over the M rows). Tall and skinny
    /// shapes reduce one row chunk per thread into partial products, added in chunk order (deterministic
    /// for a given thread count; bitwise independent of it only where `usesSkinnyGemm`).
    ///
    /// With `columnSumsOfA` ([N]), also its column sums Σ_m A[m, :] (a bias gradient): in the same pass on
    /// the skinny kernel, in a serial pass otherwise.
    public static func rowReducedGemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                                      c: UnsafeMutablePointer<Float>, columnSumsOfA: UnsafeMutablePointer<Float>? = nil) {
        if usesSkinnyGemm(m: m, n: n, k: k) {
            skinnyReducedGemm(m: m, n: n, k: k, a: a, b: b, c: c, columnSumsOfA: columnSumsOfA)
            return
        }
        if let columnSumsOfA { sumRows(out: columnSumsOfA, x: a, rows: m, width: n, stride: n) }
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

    // MARK: Skinny GEMM (tall A, weight of at most 64×64 on AVX-512, 128×128 otherwise): 16 lanes on AVX-512, 8 otherwise

    /// Whether `rowSplitGemm`/`rowReducedGemm` (and so `linear`) take the skinny kernels for an [m, k]·[k, n]
    /// product (or the [n, k] reduction over m rows): not LONGMIXER_GEMM=openblas, n, k ≤ `skinnyGemmMaxSide` and
    /// m ≥ `skinnyGemmMinimumRows`. `SkinnyGemm` (16 lanes) on AVX-512, `EightLaneSkinnyGemm` otherwise.
    public static func usesSkinnyGemm(m: Int, n: Int, k: Int) -> Bool {
        gemmBackend != .openblas && n >= 1 && k >= 1 && n <= skinnyGemmMaxSide && k <= skinnyGemmMaxSide && m >= skinnyGemmMinimumRows
    }

    /// The largest k and n of the skinny kernels this CPU runs: `SkinnyGemm.maxSide` (64, given here without calling
    /// into AVX-512 code; a test checks it on AVX-512 machines) or `EightLaneSkinnyGemm.maxSide` (128).
    public static var skinnyGemmMaxSide: Int { CPUFeatures.avx512 ? 64 : EightLaneSkinnyGemm.maxSide }

    /// Rows from which the skinny kernels run (below, a product is a few microseconds either way).
    public static let skinnyGemmMinimumRows = 64

    /// Rows per `parallelFor` piece of the skinny product (a piece must be worth a thread): 1024 rows up to
    /// 64×64 weights, fewer for larger ones (the same 4M multiply-adds).
    static func skinnyGemmGrain(n: Int, k: Int) -> Int { 1024 * 4096 / max(4096, n * k) }

    /// C[M,N] = A[M,K]·op(B) (+ bias row) on the skinny kernels, rows split over `parallelFor`; op(B) (and the
    /// bias) are first copied into the kernel's panel (≤ 64 KiB; the 16 columns a tile reads stay in L1).
    static func skinnyGemm(transposeB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                           bias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>) {
        let ldw = EightLaneSkinnyGemm.panelStride(n: n)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: (k + 1) * ldw) { buffer in
            let panel = buffer.baseAddress!, biasPanel = panel + k * ldw
            EightLaneSkinnyGemm.makePanel(transposeB: transposeB, n: n, k: k, b: b, panel: panel, bias: bias, biasPanel: biasPanel)
            let wide = CPUFeatures.avx512
            parallelFor(m, grain: skinnyGemmGrain(n: n, k: k)) { r in
                if wide {
                    SkinnyGemm.rowsTimesPanel(rows: r, n: n, k: k, a: a, panel: panel, biasPanel: biasPanel, c: c)
                } else {
                    EightLaneSkinnyGemm.rowsTimesPanel(rows: r, n: n, k: k, a: a, panel: panel, biasPanel: biasPanel, c: c)
                }
            }
        }
    }

    /// Rows per partial of `skinnyReducedGemm`: fixed, so the partials (and their sum) do not depend on
    /// the thread count.
    static let skinnyReductionChunkRows = 4096

    /// C[N,K] = A[M,N]ᵀ·B[M,K] (and A's column sums) on the skinny kernels: fixed chunks of rows reduced in
    /// parallel into partials, which are then added in chunk order (bitwise the same for any thread count).
    static func skinnyReducedGemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                                  c: UnsafeMutablePointer<Float>, columnSumsOfA: UnsafeMutablePointer<Float>?) {
        let wide = CPUFeatures.avx512
        let (np, ldp) = wide ? SkinnyGemm.partialShape(n: n, k: k) : EightLaneSkinnyGemm.partialShape(n: n, k: k)
        let size = np * ldp + np   // a partial product, then its column sums
        let chunks = (m + skinnyReductionChunkRows - 1) / skinnyReductionChunkRows
        let partials = UnsafeMutablePointer<Float>.allocate(capacity: chunks * size)
        defer { partials.deallocate() }
        parallelFor(chunks) { r in
            for i in r {
                let p = partials + i * size
                let rows = i * skinnyReductionChunkRows..<min(m, (i + 1) * skinnyReductionChunkRows)
                if wide {
                    SkinnyGemm.transposedProduct(rows: rows, m: m, n: n, k: k, a: a, b: b, partial: p, sums: p + np * ldp)
                } else {
                    EightLaneSkinnyGemm.transposedProduct(rows: rows, m: m, n: n, k: k, a: a, b: b, partial: p, sums: p + np * ldp)
                }
            }
        }
        for j in 0..<n { (c + j * k).update(from: partials + j * ldp, count: k) }
        if let columnSumsOfA { columnSumsOfA.update(from: partials + np * ldp, count: n) }
        for i in 1..<max(chunks, 1) {
            let p = partials + i * size
            for j in 0..<n { axpySerial(y: c + j * k, x: p + j * ldp, count: k) }
            if let columnSumsOfA { axpySerial(y: columnSumsOfA, x: p + np * ldp, count: n) }
        }
    }
}
