import ArgumentParser
import COpenBLAS
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData
import LongMixerBenchmarks

/// `longmixer bench …`: performance benchmarks (never timed tests). Each subcommand prints a table
/// and can write JSON with the machine description; docs/benchmarks.md records the results.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks: kernels against the machine's limits, models against each other and against PyTorch.",
        subcommands: [BenchTablesCommand.self, BenchScalingCommand.self, BenchCoreCommand.self, BenchAttentionCommand.self,
                      BenchParamixerCommand.self, BenchDataCommand.self, BenchDistributedCommand.self, BenchReportCommand.self])
}

/// `longmixer bench core`: our GEMM entry points against raw `cblas_sgemm`, and the memory-bound
/// kernels (add, GELU, softmax, layer norm) against the DRAM bandwidth measured in the same run.
struct BenchCoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "core",
        abstract: "GFLOP/s of linear/matmul vs raw cblas_sgemm, and GB/s of add, GELU, softmax, layer norm vs DRAM bandwidth.",
        discussion: """
            GEMM shapes: linear (with bias) on 4096x128·128x128 and 32768x32·32x32 and that layer's input and \
            weight gradients (BLAS.rowSplitGemm, BLAS.rowReducedGemm), Tensor.matmul on 1024³, \
            and BLAS.gemm on the dense layers of the attention benchmark (model 512, FFN 2048, 4096 rows): \
            forward x·Wᵀ, input gradient dY·W and weight gradient dYᵀ·X (target: ≥ 130 % of raw at 2 threads \
            when the packed AVX-512 GEMM runs, with --check-targets; LONGMIXER_GEMM=openblas compares OpenBLAS with itself); \
            the raw baseline is cblas_sgemm with the same transposes on preallocated buffers (beta = 0), on \
            OpenBLAS's own threads (ours hold OpenBLAS at one thread and split large products themselves). \
            Both sides are also given as a share of the cores' multiply-add peak, measured first: 12 independent \
            chains of fused multiply-adds per thread in registers, 8-lane (16-lane where the AVX-512 kernels run), \
            no GEMM can pass it. \
            One Paramixer factor (f-MLP, sparse product and residual; 4 sequences of N 4096, D = H = 32, CHORD \
            and CDIL links) without a graph, as the fused kernel and as the composed ops, in GFLOP/s against \
            the BLAS.gemm 2048x512·512x2048 rate of the same rounds (what the rooflines use). \
            Memory-bound kernels run on --elements floats (default 16M = 64 MiB per tensor): the kernel on a \
            preallocated output, and the differentiable op, which allocates a fresh output tensor per call. \
            GB/s counts the bytes each kernel must move (add: 2 reads + 1 write; GELU, softmax, layer norm: \
            1 read + 1 write; inputs uniform in [-3, 3]). Outputs beyond the last-level cache are written with \
            streaming stores (LONGMIXER_NO_STREAMING=1: ordinary stores). "% DRAM" is relative to the best STREAM \
            copy or triad sample, with ordinary or streaming stores (on --bandwidth-elements floats per array), \
            of the run at the same thread count; "% DRAM ord." against ordinary-store copy/triad only (they also run interleaved with every kernel, so load from \
            other processes hits both alike); with --check-targets the target (60 %) is judged on the kernel rows at 2 threads. Every figure is the best of --repeats samples; cases that are compared run \
            interleaved, round by round. "% DRAM paired" is the median (and interquartile range) over rounds of the \
            kernel's rate divided by the best copy/triad rate of the same round: on a shared VM, a round that \
            loses the second vCPU loses it for both sides of its ratio.
            """)

    @OptionGroup var threadOption: BenchThreadsOption

    @Option(help: "Samples per case, interleaved round by round; the best is reported, paired ratios are medians over rounds.")
    var repeats: Int = 15

    @Option(help: "Floats per tensor for the memory-bound kernels and the bandwidth probe.")
    var elements: Int = 1 << 24

    @Option(help: """
        Floats per array of the STREAM-like DRAM probe (default 64M = 256 MiB: 64 MiB arrays were sometimes \
        can be served partly from cache on a shared VM, which shows up as 2× "DRAM" bandwidth).
        """)
    var bandwidthElements: Int = 1 << 26

    @Option(help: "Row width for softmax and layer norm.")
    var width: Int = 1024

    @OptionGroup var output: BenchOutputOptions

    @Option(name: .customLong("sample-ms"), help: ArgumentHelp("""
        Minimum length of one sample of the memory-bound kernels and DRAM probes, in ms (each sample repeats \
        its call until then). 0: one call per sample, whose best catches short quiet windows on a loaded machine.
        """, visibility: .hidden))
    var sampleMilliseconds: Double = 10

    @Option(help: ArgumentHelp("Run only one group: gemm, dense (the dense-layer GEMMs only), memory or paramixer, or the memory-bound kernels whose name starts with this (for quick iterations).", visibility: .hidden))
    var only: String?

    func run() throws {
        // Checked here, not in validate(): ArgumentParser rewraps what validate() throws, and these are UserErrors.
        let threadCounts = try BenchArguments.threads(threadOption.threads, single: false)
        try BenchArguments.atLeast(1, repeats, "--repeats")
        try BenchArguments.atLeast(1 << 20, bandwidthElements, "--bandwidth-elements")
        try BenchArguments.atLeast(1, width, "--width")
        guard elements >= width, elements % width == 0 else {
            throw UserError(what: "--elements", value: String(elements), why: "must be a positive multiple of --width (\(width))")
        }
        let machine = MachineInfo.current()
        let command = benchCommandLine()
        print("longmixer bench core — \(machine.summary)")
        print("command: \(command)")
        print("BLAS.gemm: \(BLAS.packedGemmAvailable ? "packed AVX-512 SGEMM for large products (LONGMIXER_GEMM=openblas to disable)" : "OpenBLAS") — raw: cblas_sgemm, OpenBLAS \(BLAS.coreName) kernels\n")

        let suite = CoreBenchmarkSuite(elements: elements, bandwidthElements: bandwidthElements, width: width,
                                       repeats: repeats, only: only, sampleSeconds: sampleMilliseconds * 1e-3)
        var records: [BenchmarkRecord] = []
        for t in threadCounts {
            Parallel.setThreadCount(t)
            BLAS.warmUp()
            print("threads = \(t) (LongMixer \(Parallel.threadCount), OpenBLAS \(Parallel.blasThreadCount)) …")
            records += suite.run(threads: t)
        }
        print("")
        let tables = CoreBenchmarkTables.tables(records, withTargets: output.checkTargets)
        for (title, table) in tables {
            print(title)
            print(table.render())
            print("")
        }
        if output.markdown {
            for (title, table) in tables {
                print("**\(title)**\n")
                print(table.render(markdown: true))
                print("")
            }
        }
        if output.checkTargets { for line in CoreBenchmarkTables.targetSummary(records) { print(line) } }
        if let json = output.json {
            try BenchmarkReport(command: command, machine: machine, repeats: repeats, records: records).writeJSON(to: json)
            print("wrote \(json)")
        }
    }
}

/// The data and cases of `bench core`. Inputs are allocated and filled once and shared by all thread counts.
final class CoreBenchmarkSuite {
    static let gemmTarget = 85.0
    static let packedGemmTarget = 130.0
    /// Idle time after each raw threaded sgemm sample: OpenBLAS's workers spin for 2^28 cycles (its default
    /// thread timeout, about 0.1 s) before they sleep, and would slow the next case down.
    static let openBLASSpinSeconds = 0.2
    static let memoryTarget = 60.0
    static let streamingVariant = CoreBenchmarkTables.streamingVariant

    let elements: Int, width: Int, repeats: Int, only: String?
    /// Minimum seconds per sample of the memory-bound kernels and the DRAM probes.
    let sampleSeconds: Double
    let probe: MemoryBandwidthProbe

    // Memory-bound kernels.
    let a: Tensor, b: Tensor, x2d: Tensor, gamma: Tensor, beta: Tensor
    let out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>

    struct GemmShape {
        enum Kind { case linear, matmul, gemm, linearInputGradient, linearWeightGradient }
        var name: String, m: Int, k: Int, n: Int
        var kind: Kind, transposeA = false, transposeB = false
        var entryPoint: String
        var x: Tensor, w: Tensor, bias: Tensor?
        var c: UnsafeMutablePointer<Float>
        var dense: Bool { kind == .gemm }
    }
    var gemms: [GemmShape] = []

    init(elements: Int, bandwidthElements: Int, width: Int, repeats: Int, only: String? = nil, sampleSeconds: Double = 0.01) {
        self.elements = elements; self.width = width; self.repeats = repeats; self.only = only
        self.sampleSeconds = sampleSeconds
        var g = RandomGenerator(seed: 2024)
        probe = MemoryBandwidthProbe(count: bandwidthElements)
        a = Tensor.uniform([elements], low: -3, high: 3, generator: &g)
        b = Tensor.uniform([elements], low: -3, high: 3, generator: &g)
        x2d = a.reshaped([elements / width, width])
        gamma = Tensor.uniform([width], low: 0.5, high: 1.5, generator: &g)
        beta = Tensor.uniform([width], low: -0.5, high: 0.5, generator: &g)
        out = BenchmarkBuffer.allocate(floats: elements)   // placed like a large tensor's buffer
        out.initialize(repeating: 0, count: elements)   // touched once: no page faults while timing
        mean = .allocate(capacity: elements / width); mean.initialize(repeating: 0, count: elements / width)
        rstd = .allocate(capacity: elements / width); rstd.initialize(repeating: 0, count: elements / width)

        func shape(_ name: String, _ m: Int, _ k: Int, _ n: Int, linear: Bool) -> GemmShape {
            let x = Tensor.uniform([m, k], low: -1, high: 1, generator: &g)
            // linear's weight is [out, in] (x·Wᵀ); matmul's right operand is [K, N].
            let w = Tensor.uniform(linear ? [n, k] : [k, n], low: -1, high: 1, generator: &g)
            let bias = linear ? Tensor.uniform([n], low: -1, high: 1, generator: &g) : nil
            let c = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
            c.initialize(repeating: 0, count: m * n)
            return GemmShape(name: name, m: m, k: k, n: n, kind: linear ? .linear : .matmul,
                             transposeB: linear, entryPoint: linear ? "linear + bias" : "Tensor.matmul",
                             x: x, w: w, bias: bias, c: c)
        }
        /// BLAS.gemm on op(A)[m,k]·op(B)[k,n] with the stored operands A: [m,k] ([k,m] when transposeA),
        /// B: [k,n] ([n,k] when transposeB).
        func dense(_ name: String, _ m: Int, _ k: Int, _ n: Int, transposeA: Bool = false, transposeB: Bool = false) -> GemmShape {
            let x = Tensor.uniform(transposeA ? [k, m] : [m, k], low: -1, high: 1, generator: &g)
            let w = Tensor.uniform(transposeB ? [n, k] : [k, n], low: -1, high: 1, generator: &g)
            let c = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
            c.initialize(repeating: 0, count: m * n)
            return GemmShape(name: name, m: m, k: k, n: n, kind: .gemm, transposeA: transposeA, transposeB: transposeB,
                             entryPoint: "BLAS.gemm", x: x, w: w, bias: nil, c: c)
        }
        /// The backward products of `linear` on a skinny shape: dX = dY·W ([m, n]·[n, k]) and dW = dYᵀ·X.
        func linearBackward(_ name: String, _ m: Int, _ k: Int, _ n: Int, weightGradient: Bool) -> GemmShape {
            var s = dense(name, m, k, n, transposeA: weightGradient)
            s.kind = weightGradient ? .linearWeightGradient : .linearInputGradient
            s.entryPoint = weightGradient ? "BLAS.rowReducedGemm" : "BLAS.rowSplitGemm"
            return s
        }
        gemms = [shape("4096x128 · 128x128", 4096, 128, 128, linear: true),
                 shape("32768x32 · 32x32", 32768, 32, 32, linear: true),
                 // Paramixer's factor MLPs in a training step: the input and weight gradients of the layer above.
                 linearBackward("dX = dY·W 32768x32 · 32x32", 32768, 32, 32, weightGradient: false),
                 linearBackward("dW = dYᵀ·X (32768x32)ᵀ · 32768x32", 32, 32768, 32, weightGradient: true),
                 shape("1024x1024 · 1024x1024", 1024, 1024, 1024, linear: false),
                 // The dense layers of `bench attention` (d 512, FFN 2048) on 4096 rows.
                 dense("fwd x·Wᵀ 4096x512 · (512x512)ᵀ", 4096, 512, 512, transposeB: true),
                 dense("fwd x·Wᵀ 4096x512 · (2048x512)ᵀ", 4096, 512, 2048, transposeB: true),
                 dense("fwd x·Wᵀ 4096x2048 · (512x2048)ᵀ", 4096, 2048, 512, transposeB: true),
                 dense("dX = dY·W 4096x512 · 512x512", 4096, 512, 512),
                 dense("dX = dY·W 4096x2048 · 2048x512", 4096, 2048, 512),
                 dense("dW = dYᵀ·X (4096x512)ᵀ · 4096x512", 512, 4096, 512, transposeA: true),
                 dense("dW = dYᵀ·X (4096x2048)ᵀ · 4096x512", 2048, 4096, 512, transposeA: true)]
    }

    deinit {
        BenchmarkBuffer.deallocate(out, floats: elements); mean.deallocate(); rstd.deallocate()
        for s in gemms { s.c.deallocate() }
    }

    func run(threads: Int) -> [BenchmarkRecord] {
        var records: [BenchmarkRecord] = []

        // DRAM bandwidth, same thread count. Copy and triad also run interleaved with every memory-bound
        // kernel below (the machine is shared: load changes during a run), and the reference is the best
        // copy or triad sample of the whole run at this thread count.
        let probe = self.probe
        // Kernels write outputs beyond the last-level cache with streaming stores, so the reference is the
        // best of copy and triad with ordinary *and* with streaming stores.
        let copyCase = BenchmarkCase("copy") { probe.copy() }, triadCase = BenchmarkCase("triad") { probe.triad() }
        let copyNTCase = BenchmarkCase("copy NT") { probe.copyStreaming() }
        let triadNTCase = BenchmarkCase("triad NT") { probe.triadStreaming() }
        let streamCases = [copyCase, triadCase, copyNTCase, triadNTCase]
        let stream = BenchmarkTimer.measure(streamCases + [BenchmarkCase("memcpy") { probe.memcpyCopy() }], repeats: repeats,
                                            minimumSampleSeconds: sampleSeconds)
        var bestStream = Array(stream[0..<4])
        let memcpyRecord = BenchmarkRecord(group: "dram-info", name: "memcpy", variant: "glibc, per chunk", threads: threads,
                                           timing: stream[4], work: probe.copyBytes, rateUnit: "GB/s")

        // The cores' multiply-add peak, the limit of every GEMM below.
        if only == nil || only == "gemm" || only == "dense" {
            let iterations = 4_000_000
            let run = runMultiplyAddChains(iterations: iterations)   // also a warm-up: the lanes and FLOPs of one run
            let timing = BenchmarkTimer.measure("FMA chains", repeats: max(repeats, 15)) { runMultiplyAddChains(iterations: iterations) }
            records.append(BenchmarkRecord(group: "peak", name: "\(run.lanes)-lane fused multiply-adds, 12 chains per thread in registers",
                                           variant: "peak", threads: threads, timing: timing, work: run.flops, rateUnit: "GFLOP/s"))
        }

        // GEMM: our entry point (allocating its output) against raw sgemm, interleaved.
        for s in gemms where only == nil || only == "gemm" || (only == "dense" && s.dense) {
            let ours: BenchmarkCase
            let (vx, vw) = (Variable(s.x), Variable(s.w))
            let (xp, wp, c) = (s.x.pointer, s.w.pointer, s.c)
            let (transA, transB) = (s.transposeA, s.transposeB)   // the raw call uses the same flags
            switch s.kind {
            case .linear:
                let vb = Variable(s.bias!)
                ours = BenchmarkCase("linear") { withoutGradient { _ = linear(vx, weight: vw, bias: vb) } }
            case .matmul:
                let (x, w) = (s.x, s.w)
                ours = BenchmarkCase("matmul") { _ = Tensor.matmul(x, w) }
            case .gemm:
                let (mm, nn, kk) = (s.m, s.n, s.k)
                ours = BenchmarkCase("BLAS.gemm") {
                    BLAS.gemm(transposeA: transA, transposeB: transB, m: mm, n: nn, k: kk, a: xp, b: wp, c: c)
                }
            case .linearInputGradient:
                let (mm, nn, kk) = (s.m, s.n, s.k)
                ours = BenchmarkCase("rowSplitGemm") { BLAS.rowSplitGemm(transposeB: false, m: mm, n: nn, k: kk, a: xp, b: wp, c: c) }
            case .linearWeightGradient:
                // C[m, n] = Aᵀ·B with A: [k, m] (dY), B: [k, n] (X): a reduction over the k rows.
                let (mm, nn, kk) = (s.m, s.n, s.k)
                ours = BenchmarkCase("rowReducedGemm") { BLAS.rowReducedGemm(m: kk, n: mm, k: nn, a: xp, b: wp, c: c) }
            }
            let (m, n, k) = (Int32(s.m), Int32(s.n), Int32(s.k))
            let raw = BenchmarkCase("cblas_sgemm", settleSeconds: Self.openBLASSpinSeconds) {
                BLAS.withOpenBLASThreads(threads) {
                    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, m, n, k, 1,
                                xp, transA ? m : k, wp, transB ? k : n, 0, c, n)
                }
            }
            let t = BenchmarkTimer.measure([ours, raw], repeats: repeats, warmUp: 2)
            let flops = 2.0 * Double(s.m) * Double(s.n) * Double(s.k)
            let rawRecord = BenchmarkRecord(group: "gemm", name: s.name, variant: "cblas_sgemm", threads: threads,
                                            timing: t[1], work: flops, rateUnit: "GFLOP/s")
            let packed = s.dense && BLAS.usesPackedGemm(m: s.m, n: s.n, k: s.k)
            var ourRecord = BenchmarkRecord(group: "gemm", name: s.name, variant: s.entryPoint + (packed ? " (packed)" : ""),
                                            threads: threads, timing: t[0], work: flops, rateUnit: "GFLOP/s")
            ourRecord.percentOfReference = 100 * ourRecord.rate / rawRecord.rate
            ourRecord.reference = "cblas_sgemm"
            // The packed AVX-512 GEMM's target is stated at 2 threads against the forced-Haswell OpenBLAS.
            ourRecord.targetPercent = packed ? (threads >= 2 ? Self.packedGemmTarget : nil) : Self.gemmTarget
            records += [ourRecord, rawRecord]
        }

        if only == nil || only == "paramixer" { records += paramixerFactorRecords(threads: threads) }
        if only == nil || only == "attention" { records += attentionKernelRecords(threads: threads) }

        // Memory-bound kernels: kernel on a preallocated output, and the op allocating a fresh one.
        let n = elements, rows = elements / width, width = self.width
        let (ap, bp, xp, gp, bep) = (a.pointer, b.pointer, x2d.pointer, gamma.pointer, beta.pointer)
        let (out, mean, rstd) = (self.out, self.mean, self.rstd)
        let (va, vb, vx, vg, vbeta) = (Variable(a), Variable(b), Variable(x2d), Variable(gamma), Variable(beta))
        let kernels: [(name: String, bytes: Double, kernel: BenchmarkCase, op: BenchmarkCase)] = [
            ("add", Double(3 * 4 * n),
             BenchmarkCase("add kernel") {
                 broadcastBinaryKernel(AddFunction.self, out: out, outShape: [n], a: ap, aShape: [n], b: bp, bShape: [n])
             },
             BenchmarkCase("a + b") { withoutGradient { _ = va + vb } }),
            ("GELU (\(CPUFeatures.avx512 ? "AVX-512" : "AVX2"))", Double(2 * 4 * n),
             BenchmarkCase("gelu kernel") { mapKernel(GELUFunction.self, out: out, x: ap, count: n) },
             BenchmarkCase("gelu(x)") { withoutGradient { _ = gelu(va) } }),
            ("softmax (rows of \(width), \(CPUFeatures.avx512 ? "AVX-512" : "AVX2"))", Double(2 * 4 * n),
             BenchmarkCase("softmax kernel") { softmaxForward(y: out, x: xp, rows: rows, n: width) },
             BenchmarkCase("softmax(x)") { withoutGradient { _ = softmax(vx) } }),
            ("layer norm (rows of \(width), \(CPUFeatures.avx512 ? "AVX-512" : "AVX2"))", Double(2 * 4 * n + 2 * 4 * rows),
             BenchmarkCase("layer norm kernel") {
                 layerNormForward(y: out, mean: mean, rstd: rstd, x: xp, gamma: gp, beta: bep, rows: rows, n: width, epsilon: 1e-5)
             },
             BenchmarkCase("layerNorm(x)") { withoutGradient { _ = layerNorm(vx, gamma: vg, beta: vbeta) } }),
        ]
        var memoryRecords: [BenchmarkRecord] = []
        let streamBytes = [probe.copyBytes, probe.triadBytes, probe.copyBytes, probe.triadBytes]
        for k in kernels where only == nil || only == "memory" || k.name.hasPrefix(only!) {
            let t = BenchmarkTimer.measure([k.kernel, k.op] + streamCases, repeats: repeats, minimumSampleSeconds: sampleSeconds)
            for s in 0..<4 where t[2 + s].best < bestStream[s].best { bestStream[s] = t[2 + s] }
            // Round r's DRAM reference: the best of its four copy/triad samples (bytes per second).
            let roundReference = (0..<repeats).map { r in (0..<4).map { s in streamBytes[s] / t[2 + s].roundSamples![r] }.max()! }
            for (variant, timing) in [("kernel, preallocated output", t[0]), ("op, fresh output tensor", t[1])] {
                var r = BenchmarkRecord(group: "memory", name: k.name, variant: variant, threads: threads,
                                        timing: timing, work: k.bytes, rateUnit: "GB/s")
                r.pairedPercentOfReference = Quartiles(zip(timing.roundSamples!, roundReference).map { 100 * k.bytes / $0 / $1 })
                r.reference = "DRAM (best STREAM copy or triad sample, ordinary or streaming stores, \(threads) thread\(threads == 1 ? "" : "s"))"
                // The issue's target is stated for 2 threads, on the kernel itself.
                if threads >= 2 && variant.hasPrefix("kernel") { r.targetPercent = Self.memoryTarget }
                memoryRecords.append(r)
            }
        }
        let dramRecords = [
            BenchmarkRecord(group: "dram", name: "STREAM copy", variant: "c = a", threads: threads,
                            timing: bestStream[0], work: probe.copyBytes, rateUnit: "GB/s"),
            BenchmarkRecord(group: "dram", name: "STREAM triad", variant: "a = b + s·c", threads: threads,
                            timing: bestStream[1], work: probe.triadBytes, rateUnit: "GB/s"),
            BenchmarkRecord(group: "dram", name: "STREAM copy", variant: Self.streamingVariant + "c = a", threads: threads,
                            timing: bestStream[2], work: probe.copyBytes, rateUnit: "GB/s"),
            BenchmarkRecord(group: "dram", name: "STREAM triad", variant: Self.streamingVariant + "a = b + s·c", threads: threads,
                            timing: bestStream[3], work: probe.triadBytes, rateUnit: "GB/s"),
        ]
        let dram = dramRecords.map(\.rate).max()!
        for i in memoryRecords.indices { memoryRecords[i].percentOfReference = 100 * memoryRecords[i].rate / dram }
        records += dramRecords + [memcpyRecord] + memoryRecords
        return records
    }

    /// One Paramixer factor per link protocol on the `bench paramixer` shapes at N 4096 (B 4, D = H = 32):
    /// the fused kernel and the composed ops (Linear → GELU → Linear, sparse product, residual add), both
    /// without a graph, interleaved with the raw GEMM that is the roofline reference of `bench paramixer`.
    func paramixerFactorRecords(threads: Int) -> [BenchmarkRecord] {
        let (batch, n, d, h) = (4, 4096, 32, 32)
        var g = RandomGenerator(seed: 7)
        let data = Variable(Tensor.normal([batch, n, d], mean: 0, standardDeviation: 1, generator: &g))
        let values = Variable(Tensor.normal([batch, n, d], mean: 0, standardDeviation: 1, generator: &g))
        let gemm = Roofline.ReferenceGemm(generator: &g)
        var records: [BenchmarkRecord] = []
        for linkProtocol in [LinkProtocol.chord, .cdil] {
            // The middle factor: CDIL's links then reach ±4·2^5 rows, CHORD's are the same for every factor.
            let factorCount = try! LinkProtocols.factorCount(length: n)
            let offsets = try! LinkProtocols.offsets(linkProtocol, length: n, factor: factorCount / 2)
            let l = offsets.count
            let w1 = Variable(Tensor.normal([h, d], mean: 0, standardDeviation: 0.2, generator: &g))
            let b1 = Variable(Tensor.normal([h], mean: 0, standardDeviation: 0.2, generator: &g))
            let w2 = Variable(Tensor.normal([l, h], mean: 0, standardDeviation: 0.2, generator: &g))
            let b2 = Variable(Tensor.normal([l], mean: 0, standardDeviation: 0.2, generator: &g))
            let mlp = SparseFactorMLPWeights(w1: w1.value.pointer, b1: b1.value.pointer, w2: w2.value.pointer, b2: b2.value.pointer,
                                             inputs: d, hidden: h, links: l)
            let out = UnsafeMutablePointer<Float>.allocate(capacity: batch * n * d)
            out.initialize(repeating: 0, count: batch * n * d)
            defer { out.deallocate() }
            let fused = BenchmarkCase("fused") {
                offsets.withUnsafeBufferPointer { off in
                    sparseFactorMLPForward(out: out, values: values.value.pointer, residual: values.value.pointer, data: data.value.pointer,
                                           dataDimensions: d, mlp: mlp, offsets: off.baseAddress!, batch: batch, length: n, dimensions: d)
                }
            }
            let composed = BenchmarkCase("composed") {
                withoutGradient {
                    let w = linear(gelu(linear(data, weight: w1, bias: b1)), weight: w2, bias: b2)
                    _ = sparseFactorProduct(weights: w, values: values, offsets: offsets) + values
                }
            }
            let t = BenchmarkTimer.measure([fused, composed, gemm.benchmarkCase], repeats: repeats, warmUp: 2)
            let flops = 2.0 * Double(batch * n) * Double(d * h + h * l + l * d)
            let gemmRecord = gemm.record(group: "paramixer-info", threads: threads, timing: t[2])
            let name = "\(linkProtocol.rawValue.uppercased()), B \(batch) · N \(n) · D \(d) · H \(h) · L \(l)"
            for (variant, timing) in [("fused kernel", t[0]), ("composed ops", t[1])] {
                var r = BenchmarkRecord(group: "paramixer", name: name, variant: variant, threads: threads,
                                        timing: timing, work: flops, rateUnit: "GFLOP/s")
                r.percentOfReference = 100 * r.rate / gemmRecord.rate
                r.reference = "BLAS.gemm \(gemmRecord.name)"
                records.append(r)
            }
            records.append(gemmRecord)
        }
        return records
    }

    /// The fused softmax attention of `bench attention`'s Transformer at N 4096 (B 1, 8 heads, Dh 64): forward
    /// and backward kernel calls, interleaved with the raw GEMM of `bench attention`'s roofline. FLOPs are the
    /// model's (forward Q·Kᵀ and P·V; backward dV, dP, dQ, dK), not the scores the backward recomputes, as in
    /// the roofline.
    func attentionKernelRecords(threads: Int) -> [BenchmarkRecord] {
        let sizes = AttentionSizes(batch: 1, heads: 8, length: 4096, features: 64, valueDimensions: 64)
        let count = sizes.slices * sizes.length * sizes.features
        var g = RandomGenerator(seed: 11)
        let q = Tensor.normal([count], generator: &g), k = Tensor.normal([count], generator: &g)
        let v = Tensor.normal([count], generator: &g), gradOut = Tensor.normal([count], generator: &g)
        let outputs = UnsafeMutablePointer<Float>.allocate(capacity: 4 * count + 2 * count / sizes.features)
        outputs.initialize(repeating: 0, count: 4 * count + 2 * count / sizes.features)
        defer { outputs.deallocate() }
        let (out, dq, dk, dv, statistics) = (outputs, outputs + count, outputs + 2 * count, outputs + 3 * count, outputs + 4 * count)
        let (qp, kp, vp, gp) = (q.pointer, k.pointer, v.pointer, gradOut.pointer)
        let scale = 1 / Float(sizes.features).squareRoot()
        let forward = BenchmarkCase("forward") {
            scaledDotProductAttentionForward(out: out, statistics: statistics, q: qp, k: kp, v: vp, keyMask: nil,
                                             causal: false, scale: scale, sizes: sizes)
        }
        let backward = BenchmarkCase("backward") {
            scaledDotProductAttentionBackward(dq: dq, dk: dk, dv: dv, gradOut: gp, out: out, statistics: statistics,
                                              q: qp, k: kp, v: vp, keyMask: nil, causal: false, scale: scale, sizes: sizes)
        }
        let gemm = Roofline.ReferenceGemm(generator: &g)
        forward.body()                                              // statistics for the first backward
        let t = BenchmarkTimer.measure([forward, backward, gemm.benchmarkCase], repeats: repeats, warmUp: 2)
        let gemmRecord = gemm.record(group: "attention-info", threads: threads, timing: t[2])
        let pairFlops = 2.0 * Double(sizes.slices) * Double(sizes.length * sizes.length) * Double(sizes.features)
        let name = "softmax, B 1 · H 8 · N 4096 · Dh 64"
        var records: [BenchmarkRecord] = []
        for (variant, timing, flops) in [("forward", t[0], 2 * pairFlops), ("backward", t[1], 4 * pairFlops)] {
            var r = BenchmarkRecord(group: "attention", name: name, variant: variant, threads: threads,
                                    timing: timing, work: flops, rateUnit: "GFLOP/s")
            r.percentOfReference = 100 * r.rate / gemmRecord.rate
            r.reference = "BLAS.gemm \(gemmRecord.name)"
            records.append(r)
        }
        return records + [gemmRecord]
    }
}
