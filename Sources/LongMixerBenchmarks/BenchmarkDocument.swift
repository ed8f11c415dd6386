import Foundation
import LongMixerCore

/// `longmixer bench report`: docs/benchmarks.md generated from the JSON the benchmarks wrote
/// (docs/benchmarks/*.json): one section per file with its command, machine, instruction set and date,
/// its tables, and its SVG plot when one with the same name lies beside it.
public enum BenchmarkDocument {
    /// One JSON file, decoded.
    public enum Result {
        case model(ModelBenchReport)
        case core(BenchmarkReport)
        /// Files written before the model benchmarks shared one engine (best-of samples, no rounds).
        case legacyAttention(LegacyAttentionReport)
        case legacyParamixer(LegacyParamixerReport)
        case distributed(DistributedBenchReport)

        var kind: String {
            switch self {
            case .distributed: return "distributed"
            case .model(let r): return r.benchmark
            case .core: return "core"
            case .legacyAttention: return "attention"
            case .legacyParamixer: return "paramixer"
            }
        }
        /// The thread counts of the run, as a title shows them.
        var threads: String {
            let counts: [Int]
            switch self {
            case .model(let r): counts = [r.threads]
            case .core(let r): counts = Array(Set(r.records.map(\.threads))).sorted()
            case .legacyAttention(let r): counts = [r.threads]
            case .legacyParamixer(let r): counts = [r.threads]
            case .distributed(let r): counts = Array(Set(r.distributedRows.map(\.threadsPerProcess))).sorted()
            }
            return counts.map(String.init).joined(separator: " and ") + (counts == [1] ? " thread" : " threads")
        }
        var machine: MachineInfo {
            switch self {
            case .model(let r): return r.machine
            case .core(let r): return r.machine
            case .legacyAttention(let r): return r.machine
            case .legacyParamixer(let r): return r.machine
            case .distributed(let r): return r.machine
            }
        }
    }

    /// Sections in this order; within a benchmark, newest first.
    static let order = ["tables", "scaling", "attention", "paramixer", "distributed", "core"]
    static let titles = [
        "tables": "Efficiency tables: training, inference, memory on the LRA shapes",
        "scaling": "Scaling with N: every model on one stack",
        "attention": "Attention family at the LRA Text width, and PyTorch",
        "paramixer": "Paramixer against N, and PyTorch",
        "distributed": "Data-parallel training over MPI, and an estimate for 8–64 machines",
        "core": "Kernels against the machine's limits",
    ]

    /// Decodes one benchmark JSON file (a usage error names the file it cannot read).
    public static func decode(_ data: Data, name: String) throws -> Result {
        let decoder = JSONDecoder()
        let keys = (try? JSONSerialization.jsonObject(with: data) as? [String: Any]).map { Set($0.keys) } ?? []
        do {
            if keys.contains("distributedRows") { return .distributed(try decoder.decode(DistributedBenchReport.self, from: data)) }
            if keys.contains("benchmark") { return .model(try decoder.decode(ModelBenchReport.self, from: data)) }
            if keys.contains("records") { return .core(try decoder.decode(BenchmarkReport.self, from: data)) }
            if keys.contains("permuteFormerOverhead") { return .legacyAttention(try decoder.decode(LegacyAttentionReport.self, from: data)) }
            if keys.contains("torchRows") { return .legacyParamixer(try decoder.decode(LegacyParamixerReport.self, from: data)) }
        } catch {
            throw UserError(what: name, why: "is not a benchmark report this version reads (\(error))")
        }
        throw UserError(what: name, why: "is not a benchmark report (no benchmark, records, permuteFormerOverhead or torchRows field)")
    }

    /// The whole document from the `*.json` files of `directory`; `linkPrefix` is the directory as seen
    /// from the document (`benchmarks`).
    public static func render(directory: URL, linkPrefix: String) throws -> String {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".json") }.sorted()
        guard !files.isEmpty else {
            throw UserError(what: "--input", value: directory.path, why: "holds no benchmark JSON files", remedy: "run a benchmark with --json into it")
        }
        var results: [(file: String, result: Result)] = []
        for f in files {
            results.append((f, try decode(try Data(contentsOf: directory.appendingPathComponent(f)), name: f)))
        }
        results.sort { a, b in
            let (i, j) = (order.firstIndex(of: a.result.kind) ?? order.count, order.firstIndex(of: b.result.kind) ?? order.count)
            return i != j ? i < j : a.result.machine.date > b.result.machine.date
        }
        var sections: [(anchor: String, title: String, body: String)] = []
        for (file, result) in results {
            let title = "\(titles[result.kind] ?? result.kind) — \(shortMachine(result.machine)), \(result.threads), \(result.machine.date.prefix(10))"
            var body = provenance(result, file: file, linkPrefix: linkPrefix)
            body += tables(result)
            let svg = String(file.dropLast(5)) + ".svg"
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent(svg).path) {
                body += "\n![\(titles[result.kind] ?? result.kind)](\(linkPrefix)/\(svg))\n"
            }
            // GitHub numbers repeated anchors: the second is `-1`, the third `-2`.
            let base = anchor(title)
            let repeats = sections.filter { $0.anchor == base || $0.anchor.hasPrefix(base + "-") && Int($0.anchor.dropFirst(base.count + 1)) != nil }.count
            sections.append((repeats == 0 ? base : "\(base)-\(repeats)", title, body))
        }
        var out = header
        out += "\n## Contents\n\n"
        for s in sections { out += "- [\(s.title)](#\(s.anchor))\n" }
        out += "\n" + readingNotes
        for s in sections { out += "\n## \(s.title)\n\n" + s.body }
        return out
    }

    static let header = """
        # Benchmarks

        <!-- Generated by `longmixer bench report` from docs/benchmarks/*.json; edit those or the generator, not this file. -->

        Current results of every `longmixer bench` benchmark, one section per run: the command, the machine
        (CPU, instruction set, OpenBLAS kernels, load at the start), the date, the tables and, for sweeps over N,
        the plot. Regenerate this page with `longmixer bench report` after a benchmark has written its JSON into
        `docs/benchmarks/` (`--json docs/benchmarks/<name>.json`, `--plot docs/benchmarks/<name>.svg`).
        What the models learn (accuracy, bits per byte) is in [results.md](results.md).

        """

    static let readingNotes = """
        ## How to read these tables

        - Times are **medians over rounds** (IQR: interquartile range); every case of a group runs once per round,
          the order reversed every other round, PyTorch alternating with Swift. A ratio (`÷ Transformer`,
          `torch ÷ Swift`) is the **median of per-round ratios**: both sides ran seconds apart, so load hits both.
        - Memory: exact bytes of live tensors at the peak of one call, parameters, gradients and Adam moments included.
        - CPU columns: the best process CPU time of a call, all threads. With more runnable threads than cores, wall
          time also counts waiting for a core at every thread barrier; CPU time does not.
        - Roofline: model FLOPs ÷ the `BLAS.gemm` rate measured in the same run ÷ time, the share of the time the
          arithmetic alone would take at that rate. Paramixer's count has its f-MLPs at every position on D
          inputs; with token input they run per vocabulary entry (with positions: their first layer per token, the
          position part kept in inference), and on the Adding shape their first layer reads the two input features
          through a fold, so its roofline can pass 100 %. Ceiling (attention family): PyTorch's time ÷ the time of the
          model FLOPs at that rate, the `torch ÷ Swift` ratio a run at 100 % of the roofline would reach; where
          it is below a target, only fewer FLOPs or a faster GEMM reach it. Newer runs give the rate's share of the
          cores' multiply-add peak (12 chains of fused multiply-adds per thread, out of registers).
        - Load average is given per section; compare ratios, and absolute times only within a section. Load slows
          PyTorch's Paramixer reference (hundreds of small threaded ops per step) more than ours, so its ratios
          from a section loaded above its core count overstate an idle machine's. *best-of* sections predate
          the rounds: best of a few samples, training step without the optimizer update.
        - The AVX2 path on an AVX-512 machine: `LONGMIXER_NO_AVX512=1 OPENBLAS_CORETYPE=Haswell longmixer bench …`,
          which also holds the PyTorch worker to AVX2 (`ATEN_CPU_CAPABILITY=avx2`, `MKL_ENABLE_INSTRUCTIONS=AVX2`,
          `ONEDNN_MAX_CPU_ISA=AVX2`); each section names the instruction sets both sides ran.
        - Commands are shown as they ran; renamed since: `--threads-list` is `--threads`, `--batch` and
          `--tokens-per-batch` are `--batch-size`.

        """

    static func shortMachine(_ m: MachineInfo) -> String {
        let flags = m.cpuModel.contains("avx512f") ? "AVX-512" : (m.cpuModel.contains("avx2") ? "AVX2" : "baseline")
        var family = ""
        func number(_ field: String) -> Int? {
            m.cpuModel.range(of: field + #" \d+"#, options: .regularExpression).flatMap { Int(m.cpuModel[$0].dropFirst(field.count + 1)) }
        }
        if let f = number("family") {
            // AMD family 25 holds Zen 3 and Zen 4; Zen 4's model numbers are 0x10–0x1F, 0x60–0x7F and 0xA0–0xAF.
            let zen4 = number("model").map { (0x10...0x1F).contains($0) || (0x60...0x7F).contains($0) || (0xA0...0xAF).contains($0) } ?? false
            family = [23: " Zen 1/2", 25: zen4 ? " Zen 4" : " Zen 3", 26: " Zen 5"][f] ?? ""
        }
        let name = m.cpuModel.split(separator: "(").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? m.cpuModel
        return "\(name)\(family), \(flags), \(m.logicalCores) cores"
    }

    static func provenance(_ result: Result, file: String, linkPrefix: String) -> String {
        let m = result.machine
        var lines: [String] = []
        switch result {
        case .model(let r):
            lines.append("Command: `\(r.command)` ([JSON](\(linkPrefix)/\(file)))")
            lines.append("Threads: \(r.threads); rounds: \(r.repeats)"
                         + (r.torch.map { "; PyTorch \($0.version) (CPU capability \($0.capability ?? "unknown"))" } ?? "")
                         + (r.gemm.map { "; roofline rate: \($0.description)" } ?? ""))
            lines.append("Setup: \(r.setup)")
        case .core(let r):
            lines.append("Command: `\(r.command)` ([JSON](\(linkPrefix)/\(file))); best of \(r.repeats) samples per case")
        case .legacyAttention(let r):
            lines.append("Command: `\(r.command)` ([JSON](\(linkPrefix)/\(file))); *best-of* \(r.repeats) samples")
            lines.append("Threads: \(r.threads)" + (r.torchVersion.map { "; PyTorch \($0)" } ?? ""))
            lines.append("Setup: \(r.configuration). Training step: forward, loss and backward (no optimizer).")
        case .distributed(let r):
            lines.append("Command: `\(r.command)` ([JSON](\(linkPrefix)/\(file))); each K is one `mpirun -np K longmixer train … --distributed`")
            lines.append("Setup: Adding task, paramixer D = H = 32, 1 block, CHORD, FLATTEN; permuteformer D 32, 1 layer, 2 heads, FFN 64, CLS; "
                         + "processes on this one machine share its cores (threads per process = cores ÷ K, at least 1)"
                         + (r.build.map { "; \($0)" } ?? ""))
        case .legacyParamixer(let r):
            lines.append("Command: `\(r.command ?? "longmixer bench paramixer")` ([JSON](\(linkPrefix)/\(file))); *best-of* ≥ 3 runs")
            lines.append("Threads: \(r.threads). Setup: Paramixer D = H = 32, one block, CHORD, FLATTEN, 10 classes, random tokens, "
                         + "about 32,768 tokens per batch; training step: forward, loss and backward (no optimizer).")
        }
        lines.append("Machine: \(m.cpuModel), \(m.logicalCores) logical cores; "
                     + "instruction set: \(m.instructionSet ?? inferredInstructionSet(m)); \(m.date)"
                     + (m.loadAverage.map { "; load average at the start \($0)" } ?? ""))
        return lines.map { "- " + $0 }.joined(separator: "\n") + "\n"
    }

    /// For reports written before the instruction set was recorded.
    static func inferredInstructionSet(_ m: MachineInfo) -> String {
        "not recorded (the CPU has \(m.cpuModel.contains("avx512f") ? "AVX-512" : "AVX2 + FMA"); OpenBLAS ran its \(m.blasCore) kernels)"
    }

    static func tables(_ result: Result) -> String {
        var out = ""
        func add(_ title: String?, _ table: TextTable) {
            if let title { out += "\n**\(title)**\n" }
            out += "\n" + table.render(markdown: true) + "\n"
        }
        switch result {
        case .model(let r):
            let torch = r.torch != nil
            switch r.benchmark {
            case "tables":
                add("Training (Table 2): seconds per 1,000 samples, training-step peak memory", TablesBenchmark.table(r.rows, training: true, withTorch: torch))
                add("Inference (Table 3): latency of one sample, inference peak memory", TablesBenchmark.table(r.rows, training: false, withTorch: torch))
            case "attention":
                add(nil, ModelBenchTables.lengths(r.rows, withTorch: torch, gemm: r.gemm, ceilings: true))
                let overhead = AttentionBenchmarkSetup.overheadTable(r.rows)
                if !overhead.rows.isEmpty { add("PermuteFormer ÷ Performer (medians of per-round ratios)", overhead) }
            default:
                add(nil, ModelBenchTables.lengths(r.rows, withTorch: torch, gemm: r.gemm))
                if let fits = r.fits, !fits.isEmpty { add("Growth exponents (per sequence ∝ N^k)", ScalingBenchmark.fitTable(fits)) }
            }
        case .core(let r):
            // The DRAM rates the "% DRAM" columns are taken against, as lines rather than a table.
            for (title, table) in CoreBenchmarkTables.tables(r.records, withTargets: false) where title != CoreBenchmarkTables.dramTitle {
                add(title, table)
            }
            let dram = CoreBenchmarkTables.dramSummary(r.records)
            if !dram.isEmpty { out += "\n**\(CoreBenchmarkTables.dramTitle)** (STREAM-like)\n\n" + dram.map { "- " + $0 }.joined(separator: "\n") + "\n" }
        case .legacyAttention(let r):
            add(nil, r.table())
        case .distributed(let r):
            add("Measured: K processes on this machine", r.measuredTable())
            add("Estimated: K machines like this one, ring all-reduce", r.estimateTable())
            out += "\n" + DistributedBenchReport.reading + "\n\n" + DistributedBenchReport.assumptions + "\n"
        case .legacyParamixer(let r):
            add(nil, r.table())
            let k = [("forward", r.forwardExponent), ("training", r.forwardBackwardExponent), ("memory", r.memoryExponent)]
                .compactMap { name, v in v.map { "\(name) \(formatNumber($0, decimals: 2))" } }
            if !k.isEmpty { out += "\nGrowth exponents over N ≥ 1024: \(k.joined(separator: ", ")).\n" }
        }
        return out
    }

    /// GitHub's heading anchor: lower case, spaces to hyphens, punctuation dropped.
    static func anchor(_ title: String) -> String {
        String(title.lowercased().compactMap { c -> Character? in
            if c == " " { return "-" }
            if c.isLetter || c.isNumber || c == "-" || c == "_" { return c }
            return nil
        })
    }
}

/// `bench attention` JSON written before the shared engine (best-of samples; training without optimizer).
public struct LegacyAttentionReport: Codable, Sendable {
    public struct Timing: Codable, Sendable { public var best: Double }
    public struct Row: Codable, Sendable {
        public var mixer: String
        public var length: Int
        public var forward: Timing?
        public var training: Timing?
        public var skipped: String?
        public var torchForward: Double?
        public var torchTraining: Double?
    }
    public var command: String
    public var machine: MachineInfo
    public var configuration: String
    public var threads: Int
    public var repeats: Int
    public var torchVersion: String?
    public var rows: [Row]

    func table() -> TextTable {
        let torch = rows.contains { $0.torchTraining != nil }
        var t = TextTable(headers: ["mixer", "N", "fwd ms", "fwd+bwd ms"] + (torch ? ["torch fwd ms", "torch fwd+bwd ms", "torch ÷ Swift fwd+bwd"] : []))
        for r in rows {
            if let s = r.skipped { t.append([r.mixer, "\(r.length)", s, ""] + (torch ? ["", "", ""] : [])); continue }
            var cells = [r.mixer, "\(r.length)", r.forward.map { formatMilliseconds($0.best) } ?? "–", r.training.map { formatMilliseconds($0.best) } ?? "–"]
            if torch {
                cells += [r.torchForward.map(formatMilliseconds) ?? "–", r.torchTraining.map(formatMilliseconds) ?? "–",
                          (r.torchTraining != nil && r.training != nil) ? formatNumber(r.torchTraining! / r.training!.best, decimals: 2) + "×" : "–"]
            }
            t.append(cells)
        }
        return t
    }
}

/// `bench paramixer` JSON written before the shared engine (best-of runs; training without optimizer).
public struct LegacyParamixerReport: Codable, Sendable {
    public struct Row: Codable, Sendable {
        public var length: Int
        public var batch: Int
        public var forwardSecondsPerSequence: Double
        public var forwardBackwardSecondsPerSequence: Double
        public var trainingStepPeakBytes: Int?
    }
    public struct TorchRow: Codable, Sendable {
        public var length: Int
        public var forwardSecondsPerSequence: Double
        public var forwardBackwardSecondsPerSequence: Double
    }
    public var command: String?
    public var machine: MachineInfo
    public var threads: Int
    public var rows: [Row]
    public var torchRows: [TorchRow]
    public var forwardExponent: Double?
    public var forwardBackwardExponent: Double?
    public var memoryExponent: Double?

    func table() -> TextTable {
        let torch = !torchRows.isEmpty
        var t = TextTable(headers: ["N", "batch", "fwd ms/seq", "fwd+bwd ms/seq", "step MiB/seq"]
                          + (torch ? ["torch fwd ms/seq", "torch fwd+bwd ms/seq", "torch ÷ Swift fwd", "torch ÷ Swift fwd+bwd"] : []))
        for r in rows {
            var cells = ["\(r.length)", "\(r.batch)", formatMilliseconds(r.forwardSecondsPerSequence), formatMilliseconds(r.forwardBackwardSecondsPerSequence),
                         r.trainingStepPeakBytes.map { formatNumber(Double($0) / Double(r.batch) / 1_048_576, decimals: 2) } ?? "–"]
            if torch {
                if let p = torchRows.first(where: { $0.length == r.length }) {
                    cells += [formatMilliseconds(p.forwardSecondsPerSequence), formatMilliseconds(p.forwardBackwardSecondsPerSequence),
                              formatNumber(p.forwardSecondsPerSequence / r.forwardSecondsPerSequence, decimals: 2) + "×",
                              formatNumber(p.forwardBackwardSecondsPerSequence / r.forwardBackwardSecondsPerSequence, decimals: 2) + "×"]
                } else { cells += ["–", "–", "–", "–"] }
            }
            t.append(cells)
        }
        return t
    }
}
