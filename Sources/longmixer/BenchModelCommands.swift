import ArgumentParser
import Foundation
import LongMixerCore
import LongMixerModels
import LongMixerBenchmarks

/// The options of `bench scaling` and `bench paramixer` (the same benchmark with other default models).
struct ScalingOptions: ParsableArguments {
    @Option(help: ArgumentHelp(BenchHelp.lengths + " (default 2^7 … 2^16)"))
    var lengths: String?

    @Option(help: "Comma-separated models: \(ScalingBenchmark.models.map(\.label).joined(separator: ", ")).")
    var models: String?

    @Option(help: ArgumentHelp(BenchHelp.batchSize + " (default: 16,384 tokens per batch, at least one sequence)"))
    var batchSize: Int?

    @Option(help: ArgumentHelp(BenchHelp.repeats + " (default 5; 3 with --quick)"))
    var repeats: Int?

    @Option(help: "Fit growth exponents over N ≥ this.")
    var fitFrom: Int = 1024

    @Option(name: .customLong("softmax-limit-gib"), help: "Skip softmax attention where one B·H·N² score tensor exceeds this many GiB.")
    var softmaxLimitGiB: Double = 1

    @Flag(help: "A short run: N = 256, 1024, 4096, 16384 and 3 rounds (a check that everything runs, not figures of record).")
    var quick = false

    @OptionGroup var threadOption: BenchThreadsOption
    @OptionGroup var torchOptions: BenchTorchOptions
    @OptionGroup var output: BenchOutputOptions
    @OptionGroup var plotOption: BenchPlotOption

    /// Runs the scaling benchmark on `models` (default `defaultModels`); `name` goes into the report.
    func run(name: String, defaultModels: [String]) throws {
        let threads = try threadOption.applySingle()
        let lengths = try self.lengths.map { try BenchArguments.lengths($0) } ?? (quick ? ScalingBenchmark.quickLengths : ScalingBenchmark.fullLengths)
        let labels = try BenchArguments.names(models ?? defaultModels.joined(separator: ","), option: "--models",
                                              valid: ScalingBenchmark.models.map(\.label))
        let specs = ScalingBenchmark.models.filter { labels.contains($0.label) }
        if let batchSize { try BenchArguments.atLeast(1, batchSize, "--batch-size") }
        let rounds = try BenchArguments.atLeast(1, repeats ?? (quick ? 3 : 5), "--repeats")
        try BenchArguments.atLeast(2, fitFrom, "--fit-from")
        guard softmaxLimitGiB > 0 else { throw UserError(what: "--softmax-limit-gib", value: String(softmaxLimitGiB), why: "must be > 0") }
        let torch = try torchOptions.checked()

        let run = try BenchRun(name: name, threads: threads, torch: torch)
        defer { run.worker?.close() }
        let (machine, command, worker) = (run.machine, run.command, run.worker)
        let gemmBefore = Roofline.measureGemmRate()
        var rows: [ModelBenchRow] = []
        for n in lengths {
            let batch = ScalingBenchmark.batch(length: n, batchSize: batchSize)
            for (group, groupSpecs) in [(ScalingBenchmark.shape(length: n, batch: batch), specs.filter { !ScalingBenchmark.isAdding($0.label) }),
                                        (ScalingBenchmark.addingShape(length: n, batch: batch), specs.filter { ScalingBenchmark.isAdding($0.label) })]
                where !groupSpecs.isEmpty {
                rows += try ModelBenchmark.run(group, specs: groupSpecs, rounds: rounds, torch: worker,
                                               skip: { ScalingBenchmark.softmaxSkip($0, length: n, batch: batch, limitGiB: softmaxLimitGiB) },
                                               log: progress)
            }
            progress("N = \(n) done (\(run.elapsed))")
        }
        let gemmAfter = Roofline.measureGemmRate()
        let gemm = Roofline.GemmRate.best(gemmBefore, gemmAfter)
        let fits = ScalingBenchmark.fits(rows, fitFrom: fitFrom)
        let table = ModelBenchTables.lengths(rows, withTorch: worker != nil, gemm: gemm), fitTable = ScalingBenchmark.fitTable(fits)
        print("")
        print(table.render())
        print("\nGrowth exponents (time or memory per sequence ∝ N^k):")
        print(fits.isEmpty ? "  none: fewer than two lengths ≥ --fit-from \(fitFrom)" : fitTable.render())
        print("roofline = model FLOPs ÷ \(gemm.description) ÷ median time; a training step counts 3 × the forward FLOPs; "
              + "Paramixer's count has its f-MLPs at every position on D inputs, which token input and the Adding shape's fold avoid (see the setup), so it can pass 100 %")
        if output.markdown { print(""); print(table.render(markdown: true)); print(""); print(fitTable.render(markdown: true)) }
        if output.checkTargets {
            print("\nTargets:")
            for line in ScalingBenchmark.targetLines(fits) { print(line) }
        }
        let report = ModelBenchReport(benchmark: name, command: command, machine: machine, threads: threads, repeats: rounds,
                                      setup: ScalingBenchmark.setup, torch: worker?.info, gemm: gemm, rows: rows, fits: fits)
        try writeOutputs(report, json: output.json, plot: plotOption.plot.map { ($0, ScalingBenchmark.plot(rows, subtitle: plotSubtitle(machine, threads))) })
        print("finished in \(run.elapsed)")
    }
}

/// `longmixer bench scaling`: every model on one stack and one shape family against N.
struct BenchScalingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scaling",
        abstract: "Every model on one stack against N = 128 … 65,536: forward and training-step time, peak memory, growth exponents, SVG plot.",
        discussion: ScalingBenchmark.setup + """
             Softmax attention runs until one B·H·N² score tensor would exceed --softmax-limit-gib. Growth exponents are \
            least-squares slopes on log-log over N ≥ --fit-from.
            """)

    @OptionGroup var options: ScalingOptions

    func run() throws { try options.run(name: "scaling", defaultModels: ScalingBenchmark.scalingModels) }
}

/// `longmixer bench paramixer`: the scaling benchmark with Paramixer's two link protocols only.
struct BenchParamixerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paramixer",
        abstract: "Paramixer (CHORD and CDIL) against N on the shapes of `bench scaling`, with growth exponents; optionally vs PyTorch.",
        discussion: "`bench scaling` with --models \(ScalingBenchmark.paramixerModels.joined(separator: ",")) by default. " + ScalingBenchmark.setup)

    @OptionGroup var options: ScalingOptions

    func run() throws { try options.run(name: "paramixer", defaultModels: ScalingBenchmark.paramixerModels) }
}

/// `longmixer bench tables`: the PermuteFormer paper's Tables 2 and 3 at CPU scale.
struct BenchTablesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tables",
        abstract: "Training time, inference latency and peak memory on the four LRA task shapes, with ratios to the Transformer (PermuteFormer's Tables 2 and 3).",
        discussion: TablesBenchmark.setup(batches: TablesBenchmark.tasks.map { ($0.name, $0.batch) }) + """
             Ratios to the Transformer are medians of per-round ratios (IQR in parentheses). --quick: batch 1 (Text, \
            Retrieval) or 4 (Image, Pathfinder) and 2 rounds.
            """)

    @Option(help: "Comma-separated tasks: text, retrieval, image, pathfinder.")
    var tasks: String = "text,retrieval,image,pathfinder"

    @Option(help: "Comma-separated models: \(TablesBenchmark.modelLabels.joined(separator: ", ")).")
    var models: String = TablesBenchmark.modelLabels.joined(separator: ",")

    @Option(help: ArgumentHelp(BenchHelp.batchSize + " (default: 2 for Text and Retrieval, 16 for Image and Pathfinder)"))
    var batchSize: Int?

    @Option(help: ArgumentHelp(BenchHelp.repeats + " (default 5; 2 with --quick)"))
    var repeats: Int?

    @Flag(help: "A short run: smaller batches and fewer rounds (a check that everything runs, not figures of record).")
    var quick = false

    @OptionGroup var threadOption: BenchThreadsOption
    @OptionGroup var torchOptions: BenchTorchOptions
    @OptionGroup var output: BenchOutputOptions

    func run() throws {
        let threads = try threadOption.applySingle()
        let taskNames = try BenchArguments.names(tasks, option: "--tasks", valid: TablesBenchmark.tasks.map(\.preset))
        let labels = try BenchArguments.names(models, option: "--models", valid: TablesBenchmark.modelLabels)
        if let batchSize { try BenchArguments.atLeast(1, batchSize, "--batch-size") }
        let rounds = try BenchArguments.atLeast(1, repeats ?? (quick ? 2 : 5), "--repeats")
        let torch = try torchOptions.checked()

        let run = try BenchRun(name: "tables", threads: threads, torch: torch)
        defer { run.worker?.close() }
        let (machine, command, worker) = (run.machine, run.command, run.worker)
        var rows: [ModelBenchRow] = [], batches: [(task: String, batch: Int)] = []
        for task in TablesBenchmark.tasks where taskNames.contains(task.preset) {
            let specs = try TablesBenchmark.specs(task).filter { labels.contains($0.label) }
            let group = TablesBenchmark.group(task, batch: batchSize ?? (quick ? task.quickBatch : task.batch))
            batches.append((task.name, group.trainingBatch))
            rows += try ModelBenchmark.run(group, specs: specs, rounds: rounds, torch: worker, log: progress)
            progress("\(task.name) done (\(run.elapsed))")
        }
        let training = TablesBenchmark.table(rows, training: true, withTorch: worker != nil)
        let inference = TablesBenchmark.table(rows, training: false, withTorch: worker != nil)
        print("\nTraining (Table 2): time per 1,000 samples, training-step peak memory")
        print(training.render())
        print("\nInference (Table 3): latency of one sample, inference peak memory")
        print(inference.render())
        if output.markdown { print(""); print(training.render(markdown: true)); print(""); print(inference.render(markdown: true)) }
        let report = ModelBenchReport(benchmark: "tables", command: command, machine: machine, threads: threads, repeats: rounds,
                                      setup: TablesBenchmark.setup(batches: batches), torch: worker?.info, rows: rows)
        try writeOutputs(report, json: output.json, plot: nil)
        print("finished in \(run.elapsed)")
    }
}

/// The start of a model benchmark: the machine, the command and the PyTorch worker, printed first.
struct BenchRun {
    let start = BenchmarkClock.seconds()
    let machine = MachineInfo.current()
    let command = benchCommandLine()
    let worker: TorchWorker?

    init(name: String, threads: Int, torch: (interpreter: TorchInterpreter, info: TorchInfo)?) throws {
        print("longmixer bench \(name) — \(machine.summary)")
        print("command: \(command)")
        print("instruction set: \(machine.instructionSet ?? "unknown"); threads \(threads)")
        if CPUFeatures.flags.contains("avx512f") && !CPUFeatures.avx512 && BLAS.coreName != "Haswell" {
            print("note: our kernels run the AVX2 path, OpenBLAS its \(BLAS.coreName) kernels; start with OPENBLAS_CORETYPE=Haswell for AVX2 on both")
        }
        worker = try torch.map { try TorchWorker(interpreter: $0.interpreter, threads: threads) }
        if let worker { print("PyTorch \(worker.info.version), CPU capability \(worker.info.capability ?? "unknown")") }
    }

    /// Seconds since the start, as printed.
    var elapsed: String { "\(formatNumber(BenchmarkClock.seconds() - start, decimals: 0)) s" }
}

/// A progress line, flushed at once (runs take minutes).
func progress(_ line: String) {
    print(line)
    fflush(stdout)
}

func plotSubtitle(_ machine: MachineInfo, _ threads: Int) -> String {
    "\(machine.cpuModel), \(threads) thread\(threads == 1 ? "" : "s"), \(machine.date.prefix(10))"
}

/// Writes the JSON report and the SVG plot where asked.
func writeOutputs(_ report: ModelBenchReport, json: String?, plot: (path: String, plot: SVGPlot)?) throws {
    if let json {
        try report.writeJSON(to: json)
        print("wrote \(json)")
    }
    if let plot {
        try Data(plot.plot.render().utf8).write(to: URL(fileURLWithPath: plot.path))
        print("wrote \(plot.path)")
    }
}

/// `longmixer bench report`: docs/benchmarks.md from the committed benchmark JSON.
struct BenchReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write the benchmark page (docs/benchmarks.md) from the JSON files the benchmarks wrote (docs/benchmarks/*.json).",
        discussion: """
            One section per JSON file, newest first within a benchmark, each with its command, machine, instruction set, \
            date and tables, and the SVG plot of the same name when there is one. --check compares instead of writing \
            (exit 1 when the page is out of date).
            """)

    @Option(help: "Folder of benchmark JSON files.")
    var input: String = "docs/benchmarks"

    @Option(help: "The Markdown page to write.")
    var output: String = "docs/benchmarks.md"

    @Flag(help: "Do not write: exit 1 if the page differs from what the JSON files give.")
    var check = false

    func run() throws {
        let inputURL = URL(fileURLWithPath: input).standardizedFileURL, outputURL = URL(fileURLWithPath: output).standardizedFileURL
        let base = outputURL.deletingLastPathComponent().path + "/"
        let linkPrefix = inputURL.path.hasPrefix(base) ? String(inputURL.path.dropFirst(base.count)) : inputURL.path
        let text = try BenchmarkDocument.render(directory: inputURL, linkPrefix: linkPrefix)
        if check {
            let current = (try? String(contentsOf: outputURL, encoding: .utf8)) ?? ""
            guard current == text else {
                throw UserError(.runtime, what: output, why: "is not what the JSON files in \(input) give", remedy: "run `longmixer bench report`")
            }
            print("\(output) is up to date")
            return
        }
        try Data(text.utf8).write(to: outputURL)
        print("wrote \(output) (\(text.split(separator: "\n", omittingEmptySubsequences: false).count) lines)")
    }
}
