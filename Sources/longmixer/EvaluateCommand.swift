import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore

extension CheckpointKind: ExpressibleByArgument {}
extension MetricsRecord.Kind: ExpressibleByArgument {}

/// `longmixer evaluate`: score a run's checkpoint on its validation or test split.
struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Score a run's best or last checkpoint on its test or validation split (every sequence).",
        discussion: """
            Rebuilds the data and the model from the run's config.json, loads the checkpoint (a damaged one is \
            passed over for the previous one, with a warning) and prints loss and accuracy (bits per byte for a \
            language model). The run's thread count is used unless --threads is given (with --distributed, each \
            process takes its share of the machine's cores).

            Examples:
              longmixer evaluate runs/adding-paramixer-… --split test --checkpoint best
              mpirun -np 4 longmixer evaluate runs/adding-paramixer-… --distributed
            """)

    @Argument(help: ArgumentHelp("The run directory.", valueName: "run-dir"))
    var runDirectory: String

    @Option(help: "Split: test or validation.")
    var split: MetricsRecord.Kind = .test

    @Option(help: "Weights: best (by validation) or last.")
    var checkpoint: CheckpointKind = .best

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    @Flag(help: "Split the batches over MPI processes: start as `mpirun -np K longmixer evaluate … --distributed`. Rank 0 reads the run directory and prints the result, the single-process one. Needs a build with LONGMIXER_MPI=1.")
    var distributed = false

    @OptionGroup var threadOptions: ThreadOptions

    func run() throws {
        do { try threadOptions.apply() } catch let e as ValidationError { throw CommandError(e.message) }
        let threadsGiven = threadOptions.threads != nil || RuntimeOptions.environment.threads != nil
        if distributed { try DistributedRun.checkLaunched("evaluate") }
        let communicator: any Communicator = distributed ? try DistributedRun.world(threadsGiven: threadsGiven) : SingleProcess()
        let isRoot = communicator.isRoot
        let live = json || isatty(STDOUT_FILENO) != 1 || !isRoot ? nil : LiveReporter(columns: terminalColumns())
        let reporter: TrainingReporter = !isRoot ? SilentReporter() : live ?? (json ? WarningReporter() as TrainingReporter : ConsoleReporter())
        let o = try RunEvaluation.evaluate(URL(fileURLWithPath: runDirectory), split: split, checkpoint: checkpoint,
                                           threadsGiven: threadsGiven, reporter: reporter, communicator: communicator)
        guard isRoot else { return }
        if json {
            struct Line: Encodable {
                let split: String, checkpoint: String, step: Int?, weights: String, seconds: Double
                let result: EvaluationResult
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            let data = try encoder.encode(Line(split: o.split.rawValue, checkpoint: o.checkpoint.rawValue, step: o.step, weights: o.weights.path,
                                               seconds: o.seconds, result: o.result))
            print(String(decoding: data, as: UTF8.self))
            return
        }
        let r = o.result
        let lm = r.bitsPerByte.map { String(format: "  bpb %.4f  ppl %.3f", $0, r.perplexity ?? .nan) } ?? ""
        let auc = r.rocAUC.map { String(format: "  auc %.4f", $0) } ?? ""
        let step = o.step.map { " (step \($0))" } ?? ""
        let line = String(format: "%@, %@ weights%@: loss %.5f  acc %.4f%@%@  (%d sequences, %@)", o.split.rawValue, o.checkpoint.rawValue, step,
                          r.loss, r.accuracy, lm, auc, r.count, ProgressText.duration(o.seconds))
        if let live { live.printLine(line) } else { print(line) }
    }
}
