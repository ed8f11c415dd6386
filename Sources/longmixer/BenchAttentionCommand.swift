import ArgumentParser
import Foundation
import LongMixerCore
import LongMixerModels
import LongMixerBenchmarks

/// `longmixer bench attention`: the attention family at the LRA Text width against N, with the
/// PermuteFormer overhead over Performer and PyTorch side by side.
struct BenchAttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Transformer, Performer, PermuteFormer, FAVOR+, RoPE-Performer at the LRA Text width against N; PermuteFormer's overhead; PyTorch side by side.",
        discussion: AttentionBenchmarkSetup.setup + """
             Softmax attention is skipped where one B·H·N² score tensor would exceed --softmax-limit-gib (the fused \
            kernels of both sides keep no such tensor; the bound keeps run time in check). The CPU columns are the \
            best process CPU time per sequence (all threads): on a machine oversubscribed by other jobs, wall time \
            also counts waiting for a core.
            """)

    @Option(help: ArgumentHelp(BenchHelp.lengths))
    var lengths: String = "256,1024,4096,16384"

    @Option(help: "Comma-separated mixers: \(AttentionBenchmarkSetup.mixers.joined(separator: ", ")).")
    var mixers: String = AttentionBenchmarkSetup.mixers.joined(separator: ",")

    @Option(help: ArgumentHelp(BenchHelp.repeats))
    var repeats: Int = 5

    @Option(help: "Encoder layers.")
    var layers: Int = 1

    @Option(help: ArgumentHelp(BenchHelp.batchSize + " Forward calls use the same batch; times are per sequence."))
    var batchSize: Int = 1

    @Option(name: .customLong("softmax-limit-gib"), help: "Skip softmax attention where one B·H·N² score tensor exceeds this many GiB.")
    var softmaxLimitGiB: Double = 1

    @OptionGroup var threadOption: BenchThreadsOption
    @OptionGroup var torchOptions: BenchTorchOptions
    @OptionGroup var output: BenchOutputOptions
    @OptionGroup var plotOption: BenchPlotOption

    func run() throws {
        // Every option, and the PyTorch interpreter, is checked before the first timing.
        let threads = try threadOption.applySingle()
        let lengths = try BenchArguments.lengths(self.lengths)
        let names = try BenchArguments.names(mixers, option: "--mixers", valid: AttentionBenchmarkSetup.mixers)
        try BenchArguments.atLeast(1, repeats, "--repeats")
        try BenchArguments.atLeast(1, layers, "--layers")
        try BenchArguments.atLeast(1, batchSize, "--batch-size")
        guard softmaxLimitGiB > 0 else { throw UserError(what: "--softmax-limit-gib", value: String(softmaxLimitGiB), why: "must be > 0") }
        let torch = try torchOptions.checked()

        let run = try BenchRun(name: "attention", threads: threads, torch: torch)
        defer { run.worker?.close() }
        let (machine, command, worker) = (run.machine, run.command, run.worker)
        let specs = AttentionBenchmarkSetup.specs(names, layers: layers)
        let gemmBefore = Roofline.measureGemmRate()
        var rows: [ModelBenchRow] = []
        for n in lengths {
            rows += try ModelBenchmark.run(AttentionBenchmarkSetup.shape(length: n, batch: batchSize), specs: specs, rounds: repeats, torch: worker,
                                           skip: { ScalingBenchmark.softmaxSkip($0, length: n, batch: batchSize, limitGiB: softmaxLimitGiB) },
                                           log: progress)
            progress("N = \(n) done (\(run.elapsed))")
        }
        let gemmAfter = Roofline.measureGemmRate()
        let gemm = Roofline.GemmRate.best(gemmBefore, gemmAfter)
        let table = ModelBenchTables.lengths(rows, withTorch: worker != nil, gemm: gemm, ceilings: true)
        print("")
        print(table.render())
        print("roofline = model FLOPs ÷ \(gemm.description) ÷ median time; a training step counts 3 × the forward FLOPs"
              + (worker != nil ? "; ceiling = torch time ÷ the time of the model FLOPs at that rate (torch ÷ Swift at 100 % of the roofline)" : ""))
        let overhead = AttentionBenchmarkSetup.overheadTable(rows)
        if !overhead.rows.isEmpty {
            print("\nPermuteFormer ÷ Performer, medians of per-round ratios (IQR):")
            print(overhead.render())
        }
        if output.markdown {
            print(""); print(table.render(markdown: true))
            if !overhead.rows.isEmpty { print(""); print(overhead.render(markdown: true)) }
        }
        if output.checkTargets {
            print("\nTargets:")
            for line in AttentionBenchmarkSetup.targetLines(rows, gemm: gemm) { print(line) }
        }
        let report = ModelBenchReport(benchmark: "attention", command: command, machine: machine, threads: threads, repeats: repeats,
                                      setup: AttentionBenchmarkSetup.setup, torch: worker?.info, gemm: gemm, rows: rows)
        try writeOutputs(report, json: output.json, plot: plotOption.plot.map { ($0, ScalingBenchmark.plot(rows, subtitle: plotSubtitle(machine, threads))) })
        print("finished in \(run.elapsed)")
    }
}
