import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData
import LongMixerBenchmarks

/// `longmixer bench paramixer`: the Paramixer scaling benchmark — forward and
/// forward+backward time per sequence and a training step's peak memory for N = 2^7 … 2^16
/// (D = H = 32, 1 block, CHORD, FLATTEN), the fitted growth exponents, and optionally the PyTorch
/// reference on the same shapes and thread count, run back to back in the same session.
struct BenchParamixerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paramixer",
        abstract: "Paramixer time per sequence and memory vs N, with the fitted growth exponent; optionally vs PyTorch.",
        discussion: """
            Each length runs a batch of about --tokens-per-batch tokens (at least one sequence) of random \
            tokens (vocabulary 16, 10 classes). Times are the best of several runs after a warm-up; "fwd+bwd" \
            is forward + cross-entropy + backward (no optimizer step). Peak memory is the largest number of \
            bytes held in live tensors during one training step on that batch (activations kept for backward, \
            gradients and parameters; exact, unlike resident-set readings, which malloc's page reuse blurs). Exponents are fitted by least \
            squares on log-log over N ≥ --fit-from. With --torch, the PyTorch reference \
            (Scripts/reference/paramixer_reference.py --benchmark) runs with the same lengths, batch and \
            thread count; its interpreter is --python (default: $LONGMIXER_TORCH_PYTHON or python3).
            """)

    @Option(help: "Comma-separated sequence lengths (default 2^7 … 2^16).")
    var lengths: String = (7...16).map { String(1 << $0) }.joined(separator: ",")

    @Option(help: "Tokens per batch; the batch is max(1, tokens / N) sequences.")
    var tokensPerBatch: Int = 1 << 15

    @Option(help: "Fit growth exponents over N ≥ this.")
    var fitFrom: Int = 1024

    @Flag(help: "Also run the PyTorch reference on the same shapes and threads.")
    var torch = false

    @Option(help: "Python interpreter with torch for --torch.")
    var python: String?

    @Option(help: "Write rows and machine information as JSON to this path.")
    var json: String?

    @OptionGroup var threadOptions: ThreadOptions

    struct TorchRow: Codable { var length: Int; var batch: Int; var forwardSecondsPerSequence: Double
        var forwardBackwardSecondsPerSequence: Double; var torch: String; var threads: Int; var capability: String? }

    struct Report: Codable {
        var machine: MachineInfo
        var threads: Int
        var rows: [ParamixerBenchmark.ModelRow]
        var torchRows: [TorchRow]
        var forwardExponent: Double?
        var forwardBackwardExponent: Double?
        var memoryExponent: Double?
        var instructionSet: String?
        var gemmRate: Roofline.GemmRate?
    }

    func run() throws {
        try threadOptions.apply()
        let ns = try lengths.split(separator: ",").map { part -> Int in
            guard let n = Int(part.trimmingCharacters(in: .whitespaces)), n >= 2 else {
                throw ValidationError("--lengths must be integers ≥ 2, got '\(part)'")
            }
            return n
        }
        guard tokensPerBatch >= 1 else { throw ValidationError("--tokens-per-batch must be ≥ 1") }
        let threads = Parallel.threadCount
        print("Paramixer (D = H = 32, 1 block, CHORD, FLATTEN), \(threads) thread(s); \(MachineInfo.current().summary)")
        print("instruction set (ours): \(Roofline.instructionSetPath)")
        let rate = Roofline.measureGemmRate()
        print("roofline GEMM rate: \(rate.description)")
        var rows: [ParamixerBenchmark.ModelRow] = []
        for n in ns {
            let row = try ParamixerBenchmark.model(lengths: [n], tokensPerBatch: tokensPerBatch)[0]
            rows.append(row)
            print(String(format: "  N = %6d  B = %3d  fwd %9.3f ms/seq  fwd+bwd %9.3f ms/seq  step peak %@",
                         n, row.batch, row.forwardSecondsPerSequence * 1e3, row.forwardBackwardSecondsPerSequence * 1e3,
                         row.trainingStepPeakBytes.map { String(format: "%.1f MiB", Double($0) / 1048576) } ?? "n/a"))
            fflush(stdout)
        }
        let torchRows = torch ? try runTorch(lengths: ns, threads: threads) : []

        let fitted = rows.filter { $0.length >= fitFrom }
        let fwdExp = ParamixerBenchmark.growthExponent(fitted.map { (Double($0.length), $0.forwardSecondsPerSequence) })
        let fbExp = ParamixerBenchmark.growthExponent(fitted.map { (Double($0.length), $0.forwardBackwardSecondsPerSequence) })
        let memExp = ParamixerBenchmark.growthExponent(fitted.compactMap { r in
            r.trainingStepPeakBytes.map { (Double(r.length), Double($0) / Double(r.batch)) } })

        var header = "| N | batch | M | fwd ms/seq | fwd+bwd ms/seq | step tensor peak MiB | MiB/seq |"
        var rule = "|---:|---:|---:|---:|---:|---:|---:|"
        header += " roofline fwd | roofline fwd+bwd |"; rule += "---:|---:|"
        if torch {
            header += " torch fwd | torch fwd+bwd | torch ÷ ours (fwd) | torch ÷ ours (fwd+bwd) | torch roofline fwd | torch roofline fwd+bwd |"
            rule += "---:|---:|---:|---:|---:|---:|"
        }
        func roofline(_ flops: Double?, _ seconds: Double) -> String {
            guard let flops, let p = Roofline.percent(flops: flops, gflops: rate.gflops, seconds: seconds) else { return "–" }
            return String(format: "%.1f %%", p)
        }
        print("\n" + header + "\n" + rule)
        for r in rows {
            let peak = r.trainingStepPeakBytes.map { Double($0) / 1048576 }
            var line = String(format: "| %d | %d | %d | %.3f | %.3f | %@ | %@ |", r.length, r.batch, r.factors,
                              r.forwardSecondsPerSequence * 1e3, r.forwardBackwardSecondsPerSequence * 1e3,
                              peak.map { String(format: "%.1f", $0) } ?? "n/a",
                              peak.map { String(format: "%.2f", $0 / Double(r.batch)) } ?? "n/a")
            let trainingFlops = r.forwardFlops.map { 3 * $0 }
            line += " \(roofline(r.forwardFlops, r.forwardSecondsPerSequence)) | \(roofline(trainingFlops, r.forwardBackwardSecondsPerSequence)) |"
            if torch {
                if let t = torchRows.first(where: { $0.length == r.length }) {
                    line += String(format: " %.3f | %.3f | %.2f× | %.2f× |", t.forwardSecondsPerSequence * 1e3,
                                   t.forwardBackwardSecondsPerSequence * 1e3,
                                   t.forwardSecondsPerSequence / r.forwardSecondsPerSequence,
                                   t.forwardBackwardSecondsPerSequence / r.forwardBackwardSecondsPerSequence)
                    line += " \(roofline(r.forwardFlops, t.forwardSecondsPerSequence)) | \(roofline(trainingFlops, t.forwardBackwardSecondsPerSequence)) |"
                } else { line += " – | – | – | – | – | – |" }
            }
            print(line)
        }
        func fmt(_ x: Double?) -> String { x.map { String(format: "%.2f", $0) } ?? "n/a" }
        print("\nGrowth exponents over N ≥ \(fitFrom) (time or memory ∝ N^k): fwd \(fmt(fwdExp)), fwd+bwd \(fmt(fbExp)), step memory per sequence \(fmt(memExp))")
        if let t = torchRows.first { print("PyTorch \(t.torch), \(t.threads) thread(s), CPU capability \(t.capability ?? "unknown")") }
        print("roofline = model FLOPs ÷ \(formatNumber(rate.gflops, decimals: 1)) GFLOP/s (the time of the products alone at the measured GEMM rate) ÷ measured time; training step = 3 × forward FLOPs")

        if let json {
            let report = Report(machine: MachineInfo.current(), threads: threads, rows: rows, torchRows: torchRows,
                                forwardExponent: fwdExp, forwardBackwardExponent: fbExp, memoryExponent: memExp,
                                instructionSet: Roofline.instructionSetPath, gemmRate: rate)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
            print("wrote \(json)")
        }
    }

    /// Runs the PyTorch reference benchmark and parses its JSON lines.
    func runTorch(lengths: [Int], threads: Int) throws -> [TorchRow] {
        let script = "Scripts/reference/paramixer_reference.py"
        guard FileManager.default.fileExists(atPath: script) else {
            throw ValidationError("--torch needs \(script): run from the repository root")
        }
        let interpreter = python ?? RuntimeOptions.environment.torchPython ?? "python3"
        var environment = ProcessInfo.processInfo.environment
        for key in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"] { environment[key] = String(threads) }
        print("\nrunning PyTorch reference: \(interpreter) \(script) --benchmark … --threads \(threads)")
        // Two hours: the whole sweep takes minutes; beyond that the reference hangs.
        let result = try ChildProcess.run(interpreter, [script, "--benchmark"] + lengths.map(String.init) + ["--threads", String(threads)],
                                          timeout: 7200, environment: environment)
        let data = result.standardOutput
        guard result.status == 0 else {
            throw ValidationError("the PyTorch reference failed (exit \(result.status)): \(result.lastErrorLine)")
        }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
            try? JSONDecoder().decode(TorchRow.self, from: Data($0.utf8))
        }
    }
}
