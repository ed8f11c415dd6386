import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData
import LongMixerBenchmarks

/// `longmixer bench attention`: forward and forward+backward time per sequence of the
/// attention family vs sequence length, with PyTorch side by side (`--torch`).
struct BenchAttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Forward and training-step time per sequence of Transformer, Performer, PermuteFormer, FAVOR+, RoPE-Performer vs N; PyTorch side by side.",
        discussion: """
            Model: \(AttentionBenchmark.describe(layers: 1, batch: 1)) (--layers, --batch change those two). \
            Forward = eval mode under withoutGradient; forward+backward = train mode, logits, BCE loss and backward \
            into every parameter (no optimizer). Times are per sequence, best of --repeats samples; at each length all \
            mixers run interleaved round by round. The CPU columns are the best process CPU time per sequence \
            (all threads, including OpenBLAS spin-waits): when other jobs oversubscribe the cores, wall time also counts \
            waiting for a core, CPU time much less. Softmax attention is skipped where one B·H·N² float32 score tensor \
            would exceed --softmax-limit-gib (a bound on run time here: the fused attention of both sides keeps no N² \
            tensor, so raise it to time N = 16384, about 25 s per training step). With --torch, Scripts/bench/attention_torch.py (run from the repository root) \
            times the same model in PyTorch right after the Swift cases of each length, with the same thread count \
            (interpreter: $LONGMIXER_TORCH_PYTHON, else python3); ratios are torch time / Swift time.
            """)

    @Option(help: "Comma-separated sequence lengths.")
    var lengths: String = "256,1024,4096,16384"

    @Option(help: "Comma-separated mixers: transformer, performer, permuteformer, favor, rope.")
    var mixers: String = "transformer,performer,permuteformer,favor,rope"

    @Option(help: "Threads for LongMixer's kernels, OpenBLAS and PyTorch.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Samples per case; the best is reported.")
    var repeats: Int = 5

    @Option(help: "Encoder blocks.")
    var layers: Int = 1

    @Option(help: "Sequences per call (times are divided by it).")
    var batch: Int = 1

    @Option(name: .customLong("softmax-limit-gib"), help: "Skip softmax attention where one B·H·N² score tensor exceeds this many GiB.")
    var softmaxLimitGiB: Double = 1

    @Flag(help: "Also time the PyTorch formulation (Scripts/bench/attention_torch.py) on the same shapes and threads.")
    var torch = false

    @Option(help: "Write the results with machine information as JSON to this path.")
    var json: String?

    @Flag(help: "Also print the table as Markdown.")
    var markdown = false

    func parsedLengths() throws -> [Int] {
        let parts = lengths.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let values = parts.compactMap { Int($0) }
        guard !parts.isEmpty, values.count == parts.count, values.allSatisfy({ $0 >= 2 }) else {
            throw ValidationError("--lengths must be comma-separated integers ≥ 2, got '\(lengths)'")
        }
        return values
    }

    func parsedMixers() throws -> [AttentionBenchmarkMixer] {
        try mixers.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.map { name in
            guard let m = AttentionBenchmarkMixer.named(name) else {
                throw ValidationError("unknown mixer '\(name)'; mixers: \(AttentionBenchmarkMixer.all.map(\.name).joined(separator: ", "))")
            }
            return m
        }
    }

    func validate() throws {
        _ = try parsedLengths()
        guard !(try parsedMixers()).isEmpty else { throw ValidationError("--mixers is empty") }
        guard threads >= 1 else { throw ValidationError("--threads must be ≥ 1, got \(threads)") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be ≥ 1, got \(repeats)") }
        guard layers >= 1 else { throw ValidationError("--layers must be ≥ 1, got \(layers)") }
        guard batch >= 1 else { throw ValidationError("--batch must be ≥ 1, got \(batch)") }
        guard softmaxLimitGiB > 0 else { throw ValidationError("--softmax-limit-gib must be > 0, got \(softmaxLimitGiB)") }
    }

    func run() throws {
        // Here rather than in validate(): ArgumentParser rewraps what validate() throws, and the cap is a UserError.
        _ = try RuntimeOptions.validatedThreadCount(threads, what: "--threads")
        let machine = MachineInfo.current()
        let command = (["longmixer"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        print("longmixer bench attention — \(machine.summary)")
        print("command: \(command)")
        print("model: \(AttentionBenchmark.describe(layers: layers, batch: batch)); threads \(threads)")
        print("instruction set (ours): \(Roofline.instructionSetPath)\n")
        let python = torch ? (RuntimeOptions.environment.torchPython ?? "python3") : nil
        let options = AttentionBenchmarkOptions(lengths: try parsedLengths(), mixers: try parsedMixers(), threads: threads,
                                                repeats: repeats, layers: layers, batch: batch, softmaxLimitGiB: softmaxLimitGiB,
                                                torchPython: python)
        let result = try AttentionBenchmark.run(options) { line in print(line); fflush(stdout) }
        let withTorch = result.rows.contains { $0.torchForward != nil || $0.torchTraining != nil }
        print("")
        if let v = result.torchVersion {
            print("PyTorch \(v), \(threads) thread\(threads == 1 ? "" : "s"), CPU capability \(result.torchCapability ?? "unknown")")
        }
        print("instruction set (ours): \(Roofline.instructionSetPath)")
        print("roofline GEMM rate: " + result.gemmRates.map(\.description).joined(separator: "; "))
        print("roofline = model FLOPs ÷ that rate (the time of the GEMMs alone) ÷ measured time; training step = 3 × forward FLOPs")
        if let note = result.torchNote { print("PyTorch comparison unavailable: \(note) (Swift columns only)") }
        let table = AttentionBenchmark.table(result.rows, withTorch: withTorch)
        print(table.render())
        if markdown { print(""); print(table.render(markdown: true)) }
        let overheads = AttentionBenchmark.overheads(result.rows)
        if !overheads.isEmpty {
            print("\nPermuteFormer overhead over Performer (best times; target ≤ 3 %):")
            for o in overheads {
                var line = "  N = \(o.length): forward \(formatNumber(o.forwardPercent)) %, forward+backward \(formatNumber(o.trainingPercent)) %"
                if let f = o.forwardCPUPercent, let t = o.trainingCPUPercent {
                    line += "  (CPU time: forward \(formatNumber(f)) %, forward+backward \(formatNumber(t)) %)"
                }
                print(line)
                if let f = o.forwardPairedPercent, let t = o.trainingPairedPercent {
                    func describe(_ e: AttentionBenchmarkReport.PairedEstimate) -> String {
                        "\(formatNumber(e.median)) % (IQR \(formatNumber(e.lowerQuartile)) … \(formatNumber(e.upperQuartile)) %)"
                    }
                    print("    paired per round, median of \(f.rounds): forward \(describe(f)), forward+backward \(describe(t))")
                }
            }
        }
        let ratios = result.rows.compactMap(\.trainingRatio)
        if !ratios.isEmpty {
            print("training step torch/Swift: min \(formatNumber(ratios.min()!, decimals: 2))×, max \(formatNumber(ratios.max()!, decimals: 2))× (target ≥ 1.5×)")
        }
        if let json {
            try AttentionBenchmarkReport(command: command, machine: machine, configuration: AttentionBenchmark.describe(layers: layers, batch: batch),
                                         threads: threads, repeats: repeats, batch: batch, layers: layers,
                                         result: result, permuteFormerOverhead: overheads).writeJSON(to: json)
            print("wrote \(json)")
        }
    }
}
