import Foundation
import LongMixerCore
import LongMixerModels
import LongMixerNN
import LongMixerData
import LongMixerTraining

// `longmixer bench attention`: forward and forward+backward time per sequence of the
// attention family in one LRA encoder configuration, against the same model in PyTorch
// (`Scripts/bench/attention_torch.py`, run as a subprocess on the same shapes and thread count).
//
// Configuration: the `text` preset (D = 512, 8 heads, FFN 2048, GELU, pre-LN, binary head, vocabulary
// 259; Performer-family Q/K at 4 × Dh = 256 features per head, FAVOR+ at 1 × Dh with m = 64 random
// features) with `layers` blocks (default 1), dropout 0 (hidden and attention probabilities), learned
// positions for softmax/Performer/FAVOR+ (table = the longest length), none for PermuteFormer/RoPE.
// Input: random byte tokens (ids 3..<259) after CLS, no padding (no key mask). Forward: eval mode under
// `withoutGradient`, logits only. Training step: train mode, logits + BCE loss + `backward()` into
// every parameter (gradients reset before each step); no optimizer.
//
// Noise (shared 2-core machine): at one length every mixer's forward and training cases run
// interleaved, round by round (so load bursts hit PermuteFormer and Performer alike), and the figure
// of record is the best of `repeats` samples. PyTorch runs right after the Swift cases of the same
// length, in one subprocess per length.

/// A mixer of the benchmark: CLI name and model kind.
public struct AttentionBenchmarkMixer: Sendable, Equatable {
    public var name: String
    public var kind: MixerKind

    /// The attention models of the model registry that run on 1D token sequences (names as `train --model`),
    /// less the orthogonal ablation, which the PyTorch side (`Scripts/bench/attention_torch.py`) does not have.
    public static let all: [AttentionBenchmarkMixer] = ModelRegistry.entries.compactMap { entry in
        guard entry.family == .encoder, let kind = entry.mixer, !entry.needsGrid, kind != .orthogonalFormer else { return nil }
        return AttentionBenchmarkMixer(name: entry.name, kind: kind)
    }

    public static func named(_ name: String) -> AttentionBenchmarkMixer? {
        let key = name.lowercased()
        return all.first { $0.name == key || $0.kind.rawValue.lowercased() == key }
    }
}

public struct AttentionBenchmarkOptions: Sendable {
    public var lengths: [Int]
    public var mixers: [AttentionBenchmarkMixer]
    public var threads: Int
    public var repeats: Int
    public var layers: Int
    public var batch: Int
    /// Softmax is skipped where one B·H·N² float32 score tensor exceeds this (GiB); a training step
    /// keeps about four such tensors (scores, probabilities and their gradients).
    public var softmaxLimitGiB: Double
    /// Python interpreter with torch for the side-by-side run; nil = Swift only.
    public var torchPython: String?
    public var torchScript: String

    public init(lengths: [Int], mixers: [AttentionBenchmarkMixer], threads: Int, repeats: Int, layers: Int = 1, batch: Int = 1,
                softmaxLimitGiB: Double = 1, torchPython: String? = nil, torchScript: String = "Scripts/bench/attention_torch.py") {
        self.lengths = lengths; self.mixers = mixers; self.threads = threads; self.repeats = repeats
        self.layers = layers; self.batch = batch; self.softmaxLimitGiB = softmaxLimitGiB
        self.torchPython = torchPython; self.torchScript = torchScript
    }
}

/// One (mixer, length) line. Times are seconds per sequence (call time / batch).
public struct AttentionBenchmarkRow: Codable, Sendable {
    public var mixer: String
    public var kind: String
    public var length: Int
    public var forward: TimingStatistics?
    public var training: TimingStatistics?
    public var skipped: String?
    public var torchForward: Double?
    public var torchTraining: Double?
    public var torchSkipped: String?
    /// Best process CPU time per sequence (all threads; includes OpenBLAS's spin-waiting). On a machine
    /// oversubscribed by other jobs, wall time also counts the time this process waited for a core.
    public var forwardCPU: Double?
    public var trainingCPU: Double?
    public var torchForwardCPU: Double?
    public var torchTrainingCPU: Double?
    /// Every wall-clock sample per sequence, in round order (round k of every case ran back to back), so
    /// two mixers can be compared round by round.
    public var forwardSamples: [Double]?
    public var trainingSamples: [Double]?
    /// Model FLOPs per sequence (`Roofline.encoderFlops`) and the GEMM rate measured right before this
    /// length's cases (GFLOP/s): the roofline columns.
    public var forwardFlops: Double?
    public var trainingFlops: Double?
    public var gemmGFLOPS: Double?

    /// GEMM-only bound ÷ measured time, in % (`Roofline.percent`).
    public var forwardRoofline: Double? { roofline(forwardFlops, forward?.best) }
    public var trainingRoofline: Double? { roofline(trainingFlops, training?.best) }
    public var torchForwardRoofline: Double? { roofline(forwardFlops, torchForward) }
    public var torchTrainingRoofline: Double? { roofline(trainingFlops, torchTraining) }

    func roofline(_ flops: Double?, _ seconds: Double?) -> Double? {
        guard let flops, let rate = gemmGFLOPS else { return nil }
        return Roofline.percent(flops: flops, gflops: rate, seconds: seconds)
    }

    /// torch / Swift on best times (> 1: Swift faster).
    public var forwardRatio: Double? { ratio(torchForward, forward?.best) }
    public var trainingRatio: Double? { ratio(torchTraining, training?.best) }

    func ratio(_ torch: Double?, _ swift: Double?) -> Double? {
        guard let t = torch, let s = swift, s > 0 else { return nil }
        return t / s
    }
}

public struct AttentionBenchmarkReport: Codable, Sendable {
    public var command: String
    public var machine: MachineInfo
    public var configuration: String
    public var threads: Int
    public var repeats: Int
    public var batch: Int
    public var layers: Int
    public var torchVersion: String?
    public var torchNote: String?
    /// Instruction-set paths: ours (`Roofline.instructionSetPath`) and torch's `get_cpu_capability()`.
    public var instructionSet: String?
    public var torchCapability: String?
    public var gemmRates: [Roofline.GemmRate]?
    public var rows: [AttentionBenchmarkRow]
    /// (PermuteFormer − Performer) / Performer in %, per length: forward and training step.
    public var permuteFormerOverhead: [PermuteFormerOverhead]

    public struct PermuteFormerOverhead: Codable, Sendable {
        public var length: Int
        public var forwardPercent: Double
        public var trainingPercent: Double
        /// The same on best process CPU times.
        public var forwardCPUPercent: Double?
        public var trainingCPUPercent: Double?
        /// Paired estimate: the median over rounds of (PermuteFormer sample / Performer sample of the same
        /// round − 1), in %, with the interquartile range. Both samples of a pair ran seconds apart, so
        /// slow drifts of the shared machine cancel, which best-of-rounds figures do not guarantee.
        public var forwardPairedPercent: PairedEstimate?
        public var trainingPairedPercent: PairedEstimate?
    }

    public struct PairedEstimate: Codable, Sendable {
        public var median: Double
        public var lowerQuartile: Double
        public var upperQuartile: Double
        public var rounds: Int

        /// nil without at least one pair.
        public init?(candidate: [Double], baseline: [Double]) {
            let ratios = zip(candidate, baseline).filter { $0.1 > 0 }.map { 100 * ($0.0 / $0.1 - 1) }.sorted()
            guard !ratios.isEmpty else { return nil }
            func quantile(_ q: Double) -> Double {
                let x = q * Double(ratios.count - 1), i = Int(x), f = x - Double(i)
                return i + 1 < ratios.count ? ratios[i] * (1 - f) + ratios[i + 1] * f : ratios[i]
            }
            median = quantile(0.5); lowerQuartile = quantile(0.25); upperQuartile = quantile(0.75); rounds = ratios.count
        }
    }

    public init(command: String, machine: MachineInfo, configuration: String, threads: Int, repeats: Int, batch: Int, layers: Int,
                torchVersion: String?, torchNote: String?, rows: [AttentionBenchmarkRow], permuteFormerOverhead: [PermuteFormerOverhead]) {
        self.command = command; self.machine = machine; self.configuration = configuration; self.threads = threads
        self.repeats = repeats; self.batch = batch; self.layers = layers; self.torchVersion = torchVersion
        self.torchNote = torchNote; self.rows = rows; self.permuteFormerOverhead = permuteFormerOverhead
    }

    public init(command: String, machine: MachineInfo, configuration: String, threads: Int, repeats: Int, batch: Int, layers: Int,
                result: AttentionBenchmark.RunResult, permuteFormerOverhead: [PermuteFormerOverhead]) {
        self.init(command: command, machine: machine, configuration: configuration, threads: threads, repeats: repeats, batch: batch,
                  layers: layers, torchVersion: result.torchVersion, torchNote: result.torchNote, rows: result.rows,
                  permuteFormerOverhead: permuteFormerOverhead)
        instructionSet = Roofline.instructionSetPath
        torchCapability = result.torchCapability
        gemmRates = result.gemmRates
    }

    public func writeJSON(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try encoder.encode(self).write(to: url)
    }
}

public enum AttentionBenchmark {
    /// The `text` preset for `kind` with `layers` blocks, dropout 0 and a position table of `maxLength` rows.
    public static func configuration(kind: MixerKind, layers: Int, maxLength: Int) throws -> EncoderConfiguration {
        var c = try EncoderConfiguration.preset("text-\(kind.rawValue)")
        c.layers = layers
        c.dropout = 0
        c.mixer.attentionDropout = 0
        c.maxPositions = max(c.maxPositions, maxLength)
        return c
    }

    public static func describe(layers: Int, batch: Int) -> String {
        "text preset (D 512, 8 heads, FFN 2048, pre-LN, binary head, vocabulary 259), \(layers) layer\(layers == 1 ? "" : "s"), "
            + "batch \(batch), dropout 0; Performer/PermuteFormer/RoPE Q/K 4×Dh = 256 features per head, FAVOR+ 1×Dh with m = 64; "
            + "learned positions for transformer/performer/favor, none for permuteformer/rope; no padding"
    }

    /// Bytes of one B·H·N² float32 score tensor, in GiB.
    public static func softmaxScoresGiB(batch: Int, heads: Int, length: Int) -> Double {
        Double(batch) * Double(heads) * Double(length) * Double(length) * 4 / Double(1 << 30)
    }

    /// Token ids [B, N]: CLS (1) then random bytes (3..<259), seeded.
    static func tokens(batch: Int, length: Int, seed: UInt64) -> IntTensor {
        var g = RandomGenerator(seed: seed)
        var ids = [Int32](); ids.reserveCapacity(batch * length)
        for _ in 0..<batch {
            ids.append(1)
            for _ in 1..<max(length, 1) { ids.append(Int32(3 + g.nextInt(below: 256))) }
        }
        return IntTensor(shape: [batch, length], scalars: ids)
    }

    public struct RunResult: Sendable {
        public var rows: [AttentionBenchmarkRow]
        public var torchVersion: String?
        public var torchNote: String?
        /// `torch.backends.cpu.get_cpu_capability()` of the PyTorch side.
        public var torchCapability: String?
        /// The roofline's GEMM rate, measured before each length's cases.
        public var gemmRates: [Roofline.GemmRate]
    }

    /// Runs every (mixer, length): Swift, then (if asked) PyTorch on the same length. `log` gets progress lines.
    public static func run(_ o: AttentionBenchmarkOptions, log: (String) -> Void) throws -> RunResult {
        Parallel.setThreadCount(o.threads)
        BLAS.warmUp()
        let maxLength = o.lengths.max() ?? 1
        var rows: [AttentionBenchmarkRow] = []
        var torchVersion: String? = nil, torchNote: String? = nil, torchCapability: String? = nil
        var gemmRates: [Roofline.GemmRate] = []
        var torchAvailable = o.torchPython != nil
        for n in o.lengths {
            var cases: [BenchmarkCase] = []
            var lineRows: [AttentionBenchmarkRow] = []
            var caseIndex: [(row: Int, training: Bool)] = []
            let ids = tokens(batch: o.batch, length: n, seed: 1234 + UInt64(n))
            let targets = Targets.classes(IntTensor(shape: [o.batch], scalars: (0..<o.batch).map { Int32($0 % 2) }))
            for mixer in o.mixers {
                let config = try configuration(kind: mixer.kind, layers: o.layers, maxLength: maxLength)
                var row = AttentionBenchmarkRow(mixer: mixer.name, kind: mixer.kind.rawValue, length: n)
                let flops = Roofline.encoderFlops(config, length: n)
                row.forwardFlops = flops.forward; row.trainingFlops = flops.training
                if mixer.kind == .softmax {
                    let gib = softmaxScoresGiB(batch: o.batch, heads: config.heads, length: n)
                    if gib > o.softmaxLimitGiB {
                        row.skipped = "skipped: N² scores = \(formatNumber(gib, decimals: 2)) GiB (limit \(formatNumber(o.softmaxLimitGiB, decimals: 2)) GiB per score tensor)"
                        log("  \(mixer.name) N=\(n): \(row.skipped!)")
                        lineRows.append(row)
                        continue
                    }
                }
                var g = RandomGenerator(seed: 42)
                let model = try EncoderClassifier(configuration: config, generator: &g)
                let input = SequenceInput.tokens(ids)
                let r = lineRows.count
                lineRows.append(row)
                cases.append(BenchmarkCase("\(mixer.name) forward") {
                    model.train(false)
                    withoutGradient { _ = model(input) }
                })
                caseIndex.append((r, false))
                cases.append(BenchmarkCase("\(mixer.name) forward+backward") {
                    model.train(true)
                    model.zeroGradients()
                    let objective: TaskObjective = config.head == .classification ? .classification(classes: config.classes) : .binary
                    do { try objective.loss(model(input), targets).backward() } catch { fatalError("bench attention: backward failed: \(error)") }
                })
                caseIndex.append((r, true))
            }
            log("N = \(n): timing \(cases.count) Swift cases, \(o.repeats) rounds …")
            // The GEMM rate right before and after the cases; the better one (a load burst from other
            // processes would lower one of them).
            let before = Roofline.measureGemmRate()
            let timings = measureWithCPUTime(cases, repeats: o.repeats)
            let after = Roofline.measureGemmRate()
            let rate = after.gflops > before.gflops ? after : before
            gemmRates.append(rate)
            for i in lineRows.indices { lineRows[i].gemmGFLOPS = rate.gflops }
            log("N = \(n): roofline GEMM rate \(rate.description)")
            for (i, t) in timings.enumerated() {
                var perSequence = t.wall
                perSequence.best /= Double(o.batch); perSequence.median /= Double(o.batch)
                let cpu = t.cpu / Double(o.batch)
                let samples = t.samples.map { $0 / Double(o.batch) }
                let r = caseIndex[i].row
                if caseIndex[i].training {
                    lineRows[r].training = perSequence; lineRows[r].trainingCPU = cpu; lineRows[r].trainingSamples = samples
                } else {
                    lineRows[r].forward = perSequence; lineRows[r].forwardCPU = cpu; lineRows[r].forwardSamples = samples
                }
            }
            if torchAvailable, let python = o.torchPython {
                log("N = \(n): PyTorch (\(python)) …")
                switch runTorch(python: python, script: o.torchScript, length: n, options: o) {
                case .success(let result):
                    torchVersion = result.version
                    torchCapability = result.capability ?? torchCapability
                    for i in lineRows.indices {
                        guard let t = result.rows.first(where: { $0.mixer == lineRows[i].kind }) else { continue }
                        lineRows[i].torchForward = t.forward.map { $0 / Double(o.batch) }
                        lineRows[i].torchTraining = t.training.map { $0 / Double(o.batch) }
                        lineRows[i].torchSkipped = t.skipped
                        lineRows[i].torchForwardCPU = t.forward_cpu.map { $0 / Double(o.batch) }
                        lineRows[i].torchTrainingCPU = t.training_cpu.map { $0 / Double(o.batch) }
                    }
                case .failure(let message):
                    torchNote = message
                    torchAvailable = false
                    log("PyTorch comparison unavailable: \(message)")
                }
            }
            rows += lineRows
        }
        return RunResult(rows: rows, torchVersion: torchVersion, torchNote: torchNote, torchCapability: torchCapability,
                         gemmRates: gemmRates)
    }

    /// Seconds of CPU time used by this process (all threads).
    static func processCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Interleaved best-of-`repeats` like `BenchmarkTimer.measure` (one warm-up call, rounds over the
    /// cases in turn, alternately forwards and backwards, one call per sample: these calls take milliseconds to seconds), recording the
    /// process CPU time of each sample too (best CPU sample reported).
    static func measureWithCPUTime(_ cases: [BenchmarkCase], repeats: Int) -> [(wall: TimingStatistics, cpu: Double, samples: [Double])] {
        for c in cases { c.body() }
        var wall = [[Double]](repeating: [], count: cases.count)
        var cpu = [Double](repeating: .infinity, count: cases.count)
        for round in 0..<repeats {
            // Every other round runs the cases in reverse, so no case always follows the same neighbour.
            for i in (round % 2 == 0 ? Array(cases.indices) : cases.indices.reversed()) {
                let c = cases[i]
                let c0 = processCPUSeconds(), t0 = BenchmarkClock.nanoseconds()
                c.body()
                wall[i].append(Double(BenchmarkClock.nanoseconds() - t0) * 1e-9)
                cpu[i] = min(cpu[i], processCPUSeconds() - c0)
            }
        }
        return zip(wall, cpu).map { w, c in
            let sorted = w.sorted()
            return (TimingStatistics(best: sorted[0], median: sorted[sorted.count / 2], samples: sorted.count, callsPerSample: 1), c, w)
        }
    }

    public static func overheads(_ rows: [AttentionBenchmarkRow]) -> [AttentionBenchmarkReport.PermuteFormerOverhead] {
        var out: [AttentionBenchmarkReport.PermuteFormerOverhead] = []
        for n in Set(rows.map(\.length)).sorted() {
            guard let p = rows.first(where: { $0.length == n && $0.kind == MixerKind.performer.rawValue }),
                  let q = rows.first(where: { $0.length == n && $0.kind == MixerKind.permuteFormer.rawValue }),
                  let pf = p.forward?.best, let qf = q.forward?.best, let pt = p.training?.best, let qt = q.training?.best
            else { continue }
            var o = AttentionBenchmarkReport.PermuteFormerOverhead(length: n, forwardPercent: 100 * (qf - pf) / pf,
                                                                   trainingPercent: 100 * (qt - pt) / pt)
            if let a = p.forwardCPU, let b = q.forwardCPU, let c = p.trainingCPU, let d = q.trainingCPU {
                o.forwardCPUPercent = 100 * (b - a) / a; o.trainingCPUPercent = 100 * (d - c) / c
            }
            if let a = q.forwardSamples, let b = p.forwardSamples { o.forwardPairedPercent = .init(candidate: a, baseline: b) }
            if let a = q.trainingSamples, let b = p.trainingSamples { o.trainingPairedPercent = .init(candidate: a, baseline: b) }
            out.append(o)
        }
        return out
    }

    public static func table(_ rows: [AttentionBenchmarkRow], withTorch: Bool) -> TextTable {
        var headers = ["mixer", "N", "fwd ms/seq", "fwd+bwd ms/seq"]
        if withTorch { headers += ["torch fwd", "torch fwd+bwd", "torch/Swift fwd", "torch/Swift fwd+bwd"] }
        headers += ["CPU fwd", "CPU fwd+bwd"]
        if withTorch { headers += ["torch CPU fwd+bwd", "CPU ratio fwd+bwd"] }
        headers += ["roofline fwd", "roofline fwd+bwd"]
        if withTorch { headers += ["torch roofline fwd", "torch roofline fwd+bwd"] }
        var t = TextTable(headers: headers)
        for r in rows {
            var cells = [r.mixer, "\(r.length)"]
            if let skipped = r.skipped {
                cells += [skipped, ""]
                if withTorch { cells += ["", "", "", ""] }
                cells += ["", ""]
                if withTorch { cells += ["", ""] }
                cells += ["", ""]
                if withTorch { cells += ["", ""] }
                t.append(cells)
                continue
            }
            cells += [r.forward.map { formatMilliseconds($0.best) } ?? "–", r.training.map { formatMilliseconds($0.best) } ?? "–"]
            if withTorch {
                cells += [r.torchForward.map { formatMilliseconds($0) } ?? (r.torchSkipped != nil ? "skipped" : "–"),
                          r.torchTraining.map { formatMilliseconds($0) } ?? (r.torchSkipped != nil ? "skipped" : "–"),
                          r.forwardRatio.map { formatNumber($0, decimals: 2) + "×" } ?? "–",
                          r.trainingRatio.map { formatNumber($0, decimals: 2) + "×" } ?? "–"]
            }
            cells += [r.forwardCPU.map { formatMilliseconds($0) } ?? "–", r.trainingCPU.map { formatMilliseconds($0) } ?? "–"]
            if withTorch {
                cells += [r.torchTrainingCPU.map { formatMilliseconds($0) } ?? "–",
                          r.ratio(r.torchTrainingCPU, r.trainingCPU).map { formatNumber($0, decimals: 2) + "×" } ?? "–"]
            }
            func percent(_ x: Double?) -> String { x.map { formatNumber($0) + " %" } ?? "–" }
            cells += [percent(r.forwardRoofline), percent(r.trainingRoofline)]
            if withTorch { cells += [percent(r.torchForwardRoofline), percent(r.torchTrainingRoofline)] }
            t.append(cells)
        }
        return t
    }

    // MARK: PyTorch subprocess

    struct TorchResult: Decodable {
        struct Row: Decodable {
            var mixer: String
            var length: Int
            var forward: Double?
            var training: Double?
            var skipped: String?
            var forward_cpu: Double?
            var training_cpu: Double?
        }
        var version: String
        var threads: Int
        var capability: String?
        var rows: [Row]
    }

    enum TorchOutcome { case success(TorchResult), failure(String) }

    /// One length of the PyTorch side: seconds at small N, about a minute per training step of softmax
    /// attention at N = 16384; two hours means it hangs.
    static let torchTimeout: Double = 7200

    static func runTorch(python: String, script: String, length: Int, options o: AttentionBenchmarkOptions) -> TorchOutcome {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            return .failure("no Python interpreter at \(python) (set LONGMIXER_TORCH_PYTHON)")
        }
        guard FileManager.default.fileExists(atPath: script) else {
            return .failure("PyTorch script \(script) not found (run from the repository root)")
        }
        let arguments = [script, "--lengths", "\(length)", "--mixers", o.mixers.map(\.kind.rawValue).joined(separator: ","),
                             "--threads", "\(o.threads)", "--repeats", "\(o.repeats)", "--layers", "\(o.layers)",
                             "--batch", "\(o.batch)", "--max-length", "\(o.lengths.max() ?? length)",
                             "--softmax-limit-gib", "\(o.softmaxLimitGiB)"]
        var environment = ProcessInfo.processInfo.environment
        for key in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] { environment[key] = "\(o.threads)" }
        let result: ChildProcess.Output
        do { result = try ChildProcess.run(python, arguments, timeout: torchTimeout, environment: environment) } catch {
            return .failure("\(error)")
        }
        let outData = result.standardOutput
        let stderrText = String(decoding: result.standardError, as: UTF8.self)
        if result.status != 0 {
            if stderrText.contains("No module named 'torch'") { return .failure("torch is not installed for \(python)") }
            let last = stderrText.split(separator: "\n").suffix(3).joined(separator: " | ")
            return .failure("\(python) \(script) exited with status \(result.status): \(last)")
        }
        do {
            return .success(try JSONDecoder().decode(TorchResult.self, from: outData))
        } catch {
            return .failure("could not read the PyTorch script's JSON: \(error)")
        }
    }
}
