import Foundation
import LongMixerCore
import LongMixerModels
import LongMixerNN
import LongMixerData

/// The GEMM roofline of a benchmark case: its model FLOPs (counted from the shapes) divided by the GEMM
/// rate measured in the same process is the time the case would need if all of its arithmetic ran at
/// that rate; `percent` reports that bound as a share of the measured time. What is missing to 100 % is
/// the work between GEMMs (softmax, layer norm, GELU, feature maps, copies, memory traffic) and GEMMs
/// slower than the representative one.
///
/// Model FLOPs: 2 per multiply-add of every matrix product of the forward (dense layers, attention
/// products, random-feature projections, Paramixer's sparse products); a training step counts 3× the
/// forward (forward, input gradient, weight gradient). Element-wise work is not counted, nor the scores
/// the fused softmax attention's backward recomputes: the bound is what the model needs, not what a given
/// implementation executes. Paramixer's f-MLPs count at every position on D inputs, although with token input they
/// run once per vocabulary entry (first layer: and per position row) and with narrow real-valued input their first
/// layer folds into the input projection, so its share can pass 100 %.
public enum Roofline {
    /// A GEMM rate measured through `BLAS.gemm`.
    public struct GemmRate: Codable, Sendable {
        public var m: Int, n: Int, k: Int
        public var threads: Int
        /// Best of the samples.
        public var gflops: Double
        /// The cores' multiply-add peak at the same thread count, which bounds any GEMM (nil in older reports).
        public var peak: MultiplyAddPeak?

        public init(m: Int, n: Int, k: Int, threads: Int, gflops: Double, peak: MultiplyAddPeak? = nil) {
            self.m = m; self.n = n; self.k = k; self.threads = threads; self.gflops = gflops; self.peak = peak
        }

        /// The faster of two measurements (before and after a benchmark), each rate and peak on its own: on a
        /// shared machine either may have lost a core for a while.
        public static func best(_ a: GemmRate, _ b: GemmRate) -> GemmRate {
            var r = a.gflops >= b.gflops ? a : b
            let peaks = [a.peak, b.peak].compactMap { $0 }
            r.peak = peaks.max { $0.gflops < $1.gflops }
            return r
        }

        public var description: String {
            "BLAS.gemm \(m)×\(k)·\(k)×\(n), \(threads) thread\(threads == 1 ? "" : "s"): \(formatNumber(gflops, decimals: 1)) GFLOP/s"
                + (peak.map { ", \(formatNumber(100 * gflops / $0.gflops)) % of the \($0.lanes)-lane multiply-add peak (\(formatNumber($0.gflops, decimals: 1)) GFLOP/s)" } ?? "")
        }
    }

    /// Fused multiply-adds per second out of registers on every thread (`timeMultiplyAddChains`), in GFLOP/s.
    public struct MultiplyAddPeak: Codable, Sendable {
        public var lanes: Int
        public var threads: Int
        public var gflops: Double

        public init(lanes: Int, threads: Int, gflops: Double) {
            self.lanes = lanes; self.threads = threads; self.gflops = gflops
        }
    }

    /// The multiply-add peak at the current thread count.
    public static func measureMultiplyAddPeak() -> MultiplyAddPeak {
        let (lanes, flops, seconds) = timeMultiplyAddChains()
        return MultiplyAddPeak(lanes: lanes, threads: Parallel.threadCount, gflops: flops / seconds / 1e9)
    }

    /// The reference product: C = A·Bᵀ (the dense layers' forward, x·Wᵀ) in the attention benchmark's FFN input
    /// layer on 2048 tokens (D 512 → 2048), 2048×512 · (2048×512)ᵀ, through `BLAS.gemm` on operands of its own.
    public final class ReferenceGemm {
        public static let (m, k, n) = (2048, 512, 2048)
        let a: Tensor, b: Tensor
        let c: UnsafeMutablePointer<Float>

        public init(generator g: inout RandomGenerator) {
            a = Tensor.normal([Self.m, Self.k], generator: &g)
            b = Tensor.normal([Self.n, Self.k], generator: &g)
            c = .allocate(capacity: Self.m * Self.n)
            c.initialize(repeating: 0, count: Self.m * Self.n)
        }

        deinit { c.deallocate() }

        public func run() { BLAS.gemm(transposeB: true, m: Self.m, n: Self.n, k: Self.k, a: a.pointer, b: b.pointer, c: c) }

        public static let flops = 2.0 * Double(m * n * k)
        public static let name = "\(m)x\(k) · (\(n)x\(k))ᵀ"

        /// One call per sample, to interleave with the kernels reported against this rate.
        public var benchmarkCase: BenchmarkCase { BenchmarkCase("BLAS.gemm") { [self] in run() } }

        /// Its timing as a record of `group` (GFLOP/s).
        public func record(group: String, threads: Int, timing: TimingStatistics) -> BenchmarkRecord {
            BenchmarkRecord(group: group, name: Self.name, variant: "BLAS.gemm", threads: threads, timing: timing,
                            work: Self.flops, rateUnit: "GFLOP/s")
        }
    }

    /// Best rate of the reference product over `samples` calls after one warm-up, at the current thread count.
    public static func measureGemmRate(samples: Int = 7) -> GemmRate {
        BLAS.warmUp()
        var g = RandomGenerator(seed: 99)
        let gemm = ReferenceGemm(generator: &g)
        var best = Double.infinity
        for s in 0...samples {
            let t0 = BenchmarkClock.nanoseconds()
            gemm.run()
            let seconds = Double(BenchmarkClock.nanoseconds() - t0) * 1e-9
            if s > 0 { best = min(best, seconds) }
        }
        return GemmRate(m: ReferenceGemm.m, n: ReferenceGemm.n, k: ReferenceGemm.k, threads: Parallel.threadCount,
                        gflops: ReferenceGemm.flops / best / 1e9, peak: measureMultiplyAddPeak())
    }

    /// PyTorch's time over the time `flops` take at `gflops`: the torch ÷ Swift ratio of a Swift run at 100 % of
    /// the roofline, with all work between the products free (nil without a count or a time).
    public static func torchCeiling(flops: Double?, gflops: Double, torch: CaseTiming?) -> Double? {
        guard let flops, flops > 0, let p = percent(flops: flops, gflops: gflops, seconds: torch?.median) else { return nil }
        return 100 / p
    }

    /// bound ÷ measured in % for `flops` at `gflops` measured in `seconds` (nil without a time).
    public static func percent(flops: Double, gflops: Double, seconds: Double?) -> Double? {
        guard let seconds, seconds > 0, gflops > 0 else { return nil }
        return 100 * (flops / (gflops * 1e9)) / seconds
    }

    /// Model FLOPs per sequence of length N.
    public struct Flops: Equatable, Sendable {
        public var forward: Double
        /// Forward + backward (3 × forward).
        public var training: Double { 3 * forward }
    }

    /// One encoder classifier of `c` on a sequence of `length` tokens: per layer the Q, K, V and output
    /// projections, the mixer's products and the two FFN layers; then pooler and head (one row each).
    ///
    /// Mixer products per head (Dh = D / heads, F = Q/K features per head):
    /// softmax 2·N²·Dh (Q·Kᵀ) + 2·N²·Dh (P·V); linear attention (Performer, PermuteFormer, RoPE) Kᵀ·[V | 1]
    /// and Q·(Kᵀ[V | 1]), 4·N·F·(Dh + 1) (the normaliser is one more value column; RoPE's denominator is
    /// exactly that); FAVOR+ adds the random-feature projections of Q and K, 2 · 2·N·F·m, and attends over
    /// its m features.
    public static func encoderFlops(_ c: EncoderConfiguration, length n: Int) -> Flops {
        let N = Double(n), D = Double(c.dimensions), H = Double(c.heads), dh = D / H
        let fm = Double(c.mixer.featureMultiplier)
        var perLayer = 0.0
        switch c.mixer.kind {
        case .softmax, .causalSoftmax:
            perLayer += 4 * 2 * N * D * D                       // Q, K, V, output projections
            perLayer += H * 4 * N * N * dh                      // Q·Kᵀ and P·V
        case .favor:
            let f = fm * dh, m = Double(c.mixer.randomFeatures ?? Int(f))
            perLayer += 2 * 2 * N * D * (fm * D) + 2 * 2 * N * D * D
            perLayer += H * (2 * 2 * N * f * m)                 // Ω·x' for queries and keys
            perLayer += H * 4 * N * m * (dh + 1)
        default:
            let f = fm * dh
            perLayer += 2 * 2 * N * D * (fm * D) + 2 * 2 * N * D * D
            perLayer += H * 4 * N * f * (dh + 1)
        }
        perLayer += 2 * 2 * N * D * Double(c.feedForwardDimensions)
        var total = Double(c.layers) * perLayer
        if c.pooling != .flatten { total += 2 * D * D }         // pooler on the CLS (or mean) row
        let headInput = Double(c.headInputWidth)
        switch c.head {
        case .classification: total += 2 * headInput * Double(c.classes)
        case .binary: total += 2 * headInput
        case .regression: total += 2 * headInput * Double(c.outputs)
        case .retrieval: total += 2 * (2 * D * 4 * D + 4 * D * 2 * D + 2 * D)   // per document pair (counted once)
        }
        return Flops(forward: total)
    }

    /// One Paramixer sequence: per block g (D → H → D) and, per factor, f (D → H → L) and the sparse
    /// product (2·N·L·D); then the output layer (FLATTEN: N·D → C; CLS: D → C).
    public static func paramixerFlops(_ c: ParamixerConfiguration, factors: Int, links: Int) -> Flops {
        let N = Double(c.length), D = Double(c.embeddingSize), H = Double(c.hiddenSize), L = Double(links)
        var perBlock = 2 * N * D * H * 2
        perBlock += Double(factors) * (2 * N * D * H + 2 * N * H * L + 2 * N * L * D)
        var total = Double(c.blocks) * perBlock
        if let f = c.inputFeatures { total += 2 * N * Double(f) * D }
        total += c.pooling == .flatten ? 2 * N * D * Double(c.outputCount) : 2 * D * Double(c.outputCount)
        return Flops(forward: total)
    }

    /// Which instruction-set path this process runs: the width of LongMixer's kernels, the GEMM behind
    /// `BLAS.gemm`, and OpenBLAS's kernel set (with a forcing OPENBLAS_CORETYPE).
    public static var instructionSetPath: String {
        let forced = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"].map { ", forced by OPENBLAS_CORETYPE=\($0)" } ?? ""
        let kernels = CPUFeatures.avx512 ? "AVX-512 (16-lane kernels)" : "AVX2 + FMA (8-lane kernels)"
        let openBLAS = "single-threaded OpenBLAS, large products split over the threads"
        let gemm = BLAS.packedGemmAvailable ? "packed AVX-512 SGEMM for large products, \(openBLAS) otherwise" : openBLAS
        let skinny = BLAS.gemmBackend == .openblas ? "" : "; Linear layers of k, n ≤ \(BLAS.skinnyGemmMaxSide): \(CPUFeatures.avx512 ? 16 : 8)-lane skinny GEMM"
        return "\(kernels); BLAS.gemm: \(gemm)\(skinny); OpenBLAS core \(BLAS.coreName)\(forced)"
    }
}
