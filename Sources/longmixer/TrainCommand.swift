import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

// Numeric options that may be given a negative value (a mistake we want to name) parse
// `.unconditional`ly: otherwise "--clip-norm -1" reads "-1" as an unknown flag and prints the usage.

/// A user mistake: printed by ArgumentParser as one "Error: …" line, exit code 1, no usage dump.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

extension LinkProtocol: ExpressibleByArgument {}
extension FactorCountRule: ExpressibleByArgument {}
extension ParamixerConfiguration.Residual: ExpressibleByArgument {}
extension Pooling: ExpressibleByArgument {}
extension PositionEncoding: ExpressibleByArgument {}
extension OptimizerKind: ExpressibleByArgument {}
extension ScheduleKind: ExpressibleByArgument {}
extension LanguageModelSize: ExpressibleByArgument {}

/// `longmixer train`: any model on any task, through one run configuration.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train any model on any task (\(TaskRegistry.names.joined(separator: ", "))) and write a run directory.",
        discussion: """
            The configuration is resolved in three layers: defaults for the task and model ← --preset (a \
            recipe of one of the papers; `longmixer presets`) ← the options given here. An option that does \
            not apply to the chosen task or model is refused. --scale shrinks the widths, depth, length, steps \
            and data of the defaults and preset for a CPU budget, keeping the architecture; the options given \
            here are taken as given. config.json records the whole resolved configuration, the preset and the \
            scale.

            Defaults without a preset: a quick recipe for `--task adding --length 1024` (≥ 99 % test accuracy in \
            a few minutes on 2 cores with Paramixer): D = H = 32, 1 block, CHORD, FLATTEN, Adam, batch 40, clip \
            1.0, 1500 steps (60,000 sequences), cosine learning rate from 2e-3. Temporal Order uses the \
            block-input residual and learned positions. The attention models (transformer, performer, favor, \
            permuteformer, rope, orthogonal) default to a small encoder: D 32, 1 layer, 2 heads, FFN 64, CLS pooling (position 0). \
            --task lm: byte-level language model on --corpus, AdamW (β 0.9, 0.98, weight decay 0.01), 5e-4, \
            cosine with 10 % warm-up, batch 16, 1000 steps, --size small.

            The run directory holds config.json, metrics.jsonl (and .csv), checkpoints/ (every \
            --checkpoint-interval steps, the best by validation, the end), model.safetensors, summary.json and \
            report.md with plots. Ctrl-C or SIGTERM writes a checkpoint and stops; `train --resume RUN_DIR` \
            continues from the newest intact checkpoint and ends with the weights of a run that never stopped \
            (same thread count). The test split is scored with the best and the last weights; `longmixer \
            evaluate` and `longmixer report` work on any run directory. --seeds 1,2,3 trains once per seed and \
            reports the test metric's mean ± standard deviation. On a terminal progress is one live line.

            Models: \(ModelRegistry.entries.map { "\($0.name) (\($0.summary))" }.joined(separator: "; ")).

            Examples:
              longmixer train --task adding --length 1024
              longmixer train --task adding --model performer --length 1024 --steps 3000
              longmixer train --task order --model paramixer --protocol cdil --length 1024 --steps 4000 --target-accuracy 0.99
              longmixer train --task adding --length 8192 --residual block-input --head-lr-scale 0.125 --warmup-steps 100 --steps 7000 --target-accuracy 0.99
                (N = 8192: 99.7 % test accuracy after 5000 steps, 200,000 sequences, ≈ 2 h on 2 cores)
              longmixer train --preset paramixer-adding --length 1024 --epochs 5 --output runs/adding-1k
              longmixer train --task lm --model permuteformer --corpus data/shakespeare --length 256 --size tiny --steps 1000
              longmixer train --resume runs/adding-1k
              longmixer train --task adding --length 1024 --seeds 1,2,3 --output runs/adding-seeds
            """)

    // MARK: What to train

    @Option(help: "Task: \(TaskRegistry.names.joined(separator: ", ")). Required unless --preset sets it.")
    var task: String?

    @Option(help: "Model: \(ModelRegistry.names.joined(separator: ", ")) (default paramixer; permuteformer with --task lm).")
    var model: String?

    @Option(help: "A recipe of one of the papers (`longmixer presets`); options given here override it.")
    var preset: String?

    @Option(parsing: .unconditional, help: "Shrink the preset's width, depth, length, steps and data by this factor in (0, 1]; options given here are not shrunk.")
    var scale: Double?

    @Option(help: "--task lm: a text file or a folder of .txt files.")
    var corpus: String?

    @Option(help: "Tasks with prepared data (`longmixer data prepare`): the data folder (default: data).")
    var dataDir: String?

    @Option(parsing: .unconditional, help: "Sequence length N (default 1024).")
    var length: Int?

    // MARK: Model

    @Option(name: [.customLong("dimensions"), .customLong("embedding-size")], parsing: .unconditional, help: "Model width D.")
    var dimensions: Int?

    @Option(name: [.customLong("layers"), .customLong("blocks")], parsing: .unconditional, help: "Paramixer blocks, or encoder/decoder layers.")
    var layers: Int?

    @Option(name: [.customLong("hidden"), .customLong("hidden-size")], parsing: .unconditional, help: "Paramixer: hidden width H of the f and g MLPs (default 32).")
    var hidden: Int?

    @Option(parsing: .unconditional, help: "Attention models: heads.")
    var heads: Int?

    @Option(parsing: .unconditional, help: "Attention models: feed-forward width.")
    var feedForward: Int?

    @Option(parsing: .unconditional, help: "Attention models: hidden dropout.")
    var dropout: Float?

    @Option(help: "--task lm: model size (\(LanguageModelSize.allCases.map(\.rawValue).joined(separator: ", ")); default small); width and depth options override it.")
    var size: LanguageModelSize?

    @Option(name: .customLong("protocol"), help: "Paramixer: sparse-factor link protocol (\(LinkProtocol.allCases.map(\.rawValue).joined(separator: ", ")); default chord).")
    var linkProtocol: LinkProtocol?

    @Option(help: "Paramixer: number of factors M from N, ceil or floor of log2 N (default ceil; the presets use floor, as the reference).")
    var factorRule: FactorCountRule?

    @Option(parsing: .unconditional, help: "Paramixer: dropout on the embedded input (default 0).")
    var dropout1: Float?

    @Option(parsing: .unconditional, help: "Paramixer: dropout on each block's output (default 0).")
    var dropout2: Float?

    @Option(help: "Paramixer: what each factor adds back: every-factor (the released reference) or block-input (default: block-input for --task order, else every-factor).")
    var residual: ParamixerConfiguration.Residual?

    @Option(help: "Pooling: \(Pooling.allCases.map(\.rawValue).joined(separator: ", ")) (default: flatten for Paramixer, cls for the attention models, as the references).")
    var pooling: Pooling?

    @Option(help: "Absolute positions: \(PositionEncoding.allCases.map(\.rawValue).joined(separator: ", ")) (default: none for Paramixer on adding, learned on order; the reference's choice per attention mixer).")
    var positions: PositionEncoding?

    // MARK: Training

    @Option(help: "Optimizer: adam, adamw or sgd (momentum 0.9) (default adam; adamw with --task lm).")
    var optimizer: OptimizerKind?

    @Option(name: [.customLong("learning-rate"), .customLong("lr")], parsing: .unconditional, help: "Peak learning rate (default 2e-3; 5e-4 with --task lm).")
    var learningRate: Float?

    @Option(help: "Learning-rate schedule: constant, cosine or inverse-sqrt (default cosine).")
    var schedule: ScheduleKind?

    @Option(parsing: .unconditional, help: "Linear warm-up steps (default 0; 10 % of the run with --task lm).")
    var warmupSteps: Int?

    @Option(name: .customLong("head-lr-scale"), parsing: .unconditional, help: "Multiply the learning rate of the output layer by this (adam/adamw; default 1). Adam moves each weight by about lr per step, so a FLATTEN head with N·D inputs moves the prediction by about lr·N·D·|V|: scale it by about 32768/(N·D) to keep the N = 1024 dynamics at longer N.")
    var headLearningRateScale: Float?

    @Option(parsing: .unconditional, help: "Weight decay (default 0; 0.01 with --task lm; decoupled for adamw, L2 for adam and sgd).")
    var weightDecay: Float?

    @Option(parsing: .unconditional, help: "Sequences per step (default 40; 16 with --task lm).")
    var batchSize: Int?

    @Option(parsing: .unconditional, help: "Accumulate each step's batch in pieces of this many sequences (same gradients, less memory; also the evaluation batch).")
    var microBatchSize: Int?

    @Option(parsing: .unconditional, help: "Passes over the training split (instead of --steps).")
    var epochs: Int?

    @Option(parsing: .unconditional, help: "Optimizer steps (default 1500; 1000 with --task lm).")
    var steps: Int?

    @Option(parsing: .unconditional, help: "Clip the global gradient norm to this value; 0 disables (default 1.0).")
    var clipNorm: Float?

    @Option(parsing: .unconditional, help: "Seed for data, initialisation and dropout (default 42).")
    var seed: UInt64?

    @Option(help: ArgumentHelp("Train once per seed (e.g. 1,2,3) into <output>/seed-<n> and report the test metric's mean ± standard deviation.", valueName: "list"))
    var seeds: String?

    @Option(parsing: .unconditional, help: "Generated tasks: training sequences (default 100000).")
    var trainSize: Int?

    @Option(name: [.customLong("val-size"), .customLong("validation-size")], parsing: .unconditional, help: "Validation sequences (default 1000); with --task lm at most this many evaluation windows (default: all).")
    var valSize: Int?

    @Option(parsing: .unconditional, help: "Test sequences (default 1000); with --task lm at most this many evaluation windows (default: all).")
    var testSize: Int?

    @Option(parsing: .unconditional, help: "Steps between validation evaluations (default 250 when training by steps, else every epoch).")
    var evalInterval: Int?

    @Option(parsing: .unconditional, help: "Steps between progress lines (default 50; in a pipe or a file a line also comes after a minute without one).")
    var logInterval: Int?

    @Option(parsing: .unconditional, help: "Stop early once validation accuracy reaches this fraction in (0, 1].")
    var targetAccuracy: Double?

    @Option(parsing: .unconditional, help: "Steps between checkpoints (default: with every validation; each epoch when training by epochs). There is always one at the end and on Ctrl-C / SIGTERM.")
    var checkpointInterval: Int?

    @Option(name: .customLong("val-sample"), parsing: .unconditional, help: "Validation sequences scored at each validation during training, spread over the split (default: all; 200 windows with --task lm); the final validation scores all.")
    var validationSample: Int?

    @Option(help: ArgumentHelp("Continue the run in this run directory from its newest intact checkpoint, with its stored configuration (options that contradict it are refused).", valueName: "run-dir"))
    var resume: String?

    // MARK: Output

    @OptionGroup var threadOptions: ThreadOptions

    @Option(help: "Run directory (default runs/<task>-<model>-<UTC time>).")
    var output: String?

    @Flag(help: "Replace the contents of a non-empty --output directory.")
    var overwrite = false

    @Flag(help: "Print only the final line.")
    var quiet = false

    @Flag(help: "Data-parallel training over MPI: start as `mpirun -np K longmixer train … --distributed`. --batch-size is per process (the global batch is K times it); rank 0 writes the run directory. Needs a build with LONGMIXER_MPI=1.")
    var distributed = false

    @Flag(help: "Print one JSON object per event (start, train records, evaluations, checkpoints, end) instead of text.")
    var json = false

    /// The settings given on the command line (nil where an option was not given).
    var settings: RunSettings {
        var s = RunSettings()
        s.task = task; s.model = model; s.length = length; s.seed = seed
        s.modelOptions = ModelOptions(dimensions: dimensions, layers: layers, hidden: hidden, heads: heads, feedForward: feedForward,
                                      dropout: dropout, dropout1: dropout1, dropout2: dropout2, linkProtocol: linkProtocol,
                                      factorRule: factorRule, residual: residual, pooling: pooling, positions: positions)
        s.size = size; s.optimizer = optimizer; s.learningRate = learningRate; s.schedule = schedule; s.warmupSteps = warmupSteps
        s.weightDecay = weightDecay; s.headLearningRateScale = headLearningRateScale; s.batchSize = batchSize
        s.microBatchSize = microBatchSize; s.epochs = epochs; s.steps = steps; s.clipNorm = clipNorm; s.logInterval = logInterval
        s.evaluationInterval = evalInterval; s.targetAccuracy = targetAccuracy; s.trainSize = trainSize; s.validationSize = valSize
        s.testSize = testSize; s.corpus = corpus; s.dataDirectory = dataDir; s.checkpointInterval = checkpointInterval
        s.validationSample = validationSample
        return s
    }

    /// Plain lines in a pipe or a file, one live line on a terminal, JSON, or only the final line.
    var reporter: TrainingReporter {
        if json { return JSONReporter() }
        if quiet { return FinalLineReporter() }
        if isatty(STDOUT_FILENO) == 1 { return LiveReporter(columns: terminalColumns()) }
        return ConsoleReporter()
    }

    func run() throws {
        do { try threadOptions.apply() } catch let e as ValidationError { throw CommandError(e.message) }
        if let output, output.trimmingCharacters(in: .whitespaces).isEmpty {
            throw UserError(what: "--output", value: "''", why: "is empty", remedy: "name a run directory")
        }
        if quiet && json { throw UserError(what: "--quiet", why: "and --json choose different outputs", remedy: "give one") }
        let threadsGiven = threadOptions.threads != nil || RuntimeOptions.environment.threads != nil
        if distributed {
            try DistributedRun.checkLaunched()
            if seeds != nil { throw UserError(what: "--seeds", why: "does not go with --distributed", remedy: "train one seed per mpirun") }
        }
        // Through the same unbuffered handle as the progress lines, so the order holds in a pipe too.
        let announce: (String) -> Void = { line in if !quiet && !json { FileHandle.standardOutput.write(Data((line + "\n").utf8)) } }
        if let resume {
            for (flag, given) in [("--preset", preset != nil), ("--scale", scale != nil), ("--output", output != nil), ("--overwrite", overwrite)] where given {
                throw UserError(what: flag, why: "does not go with --resume (the run continues in its own directory with its stored configuration)",
                                remedy: "drop it")
            }
            if seeds != nil { throw UserError(what: "--seeds", why: "does not go with --resume (a sweep resumes with its own seeds)", remedy: "drop it") }
            let url = URL(fileURLWithPath: resume)
            if distributed {
                let world = try DistributedRun.world(threadsGiven: threadsGiven)
                var given = settings
                given.batchSize = given.batchSize.map { $0 * world.size }   // per process, the run stores the global batch
                try TrainingRun.resume(url, settings: given, threadsGiven: threadsGiven, reporter: reporter, announce: announce,
                                       communicator: world)
                return
            }
            if SeedSweep.isSweep(url) {
                let record = try SeedSweep.resume(url, settings: settings, threadsGiven: threadsGiven, reporter: reporter, announce: announce)
                if !json { print(SeedSweep.line(record, folder: url.standardizedFileURL)) }
            } else {
                try TrainingRun.resume(url, settings: settings, threadsGiven: threadsGiven, reporter: reporter, announce: announce)
            }
            return
        }
        let configuration = try RunConfiguration.resolve(settings, preset: preset, scale: scale)
        if let seeds {
            if seed != nil { throw UserError(what: "--seed", why: "and --seeds both set the seed", remedy: "give one") }
            let list = seeds.split(separator: ",", omittingEmptySubsequences: false).map { UInt64($0.trimmingCharacters(in: .whitespaces)) }
            guard !list.isEmpty, list.allSatisfy({ $0 != nil }) else {
                throw UserError(what: "--seeds", value: seeds, why: "must be a comma-separated list of non-negative integers", remedy: "e.g. --seeds 1,2,3")
            }
            let (record, folder) = try SeedSweep.run(configuration, seeds: list.map { $0! }, output: output.map { URL(fileURLWithPath: $0) },
                                                     overwrite: overwrite, reporter: reporter, announce: announce)
            if !json { print(SeedSweep.line(record, folder: folder)) }
            return
        }
        var global = configuration
        let communicator: any Communicator = distributed ? try DistributedRun.world(threadsGiven: threadsGiven) : SingleProcess()
        if communicator.size > 1 {
            // --batch-size is per process; so is an evaluation batch (each process scores whole batches of its share).
            global.training.evaluationBatchSize = global.training.evaluationBatchSize ?? global.training.batchSize
            global.training.batchSize *= communicator.size
        }
        try TrainingRun.run(global, output: output.map { URL(fileURLWithPath: $0) }, overwrite: overwrite, reporter: reporter,
                            announce: announce, communicator: communicator)
    }
}

/// The width of the terminal on standard output (the widest progress line when it cannot be told).
func terminalColumns() -> Int {
    var size = winsize()
    return ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : ProgressText.columns
}

/// Prints only the `finished` line (and warnings, on standard error).
final class FinalLineReporter: TrainingReporter {
    let console = ConsoleReporter()
    let warnings = WarningReporter()
    func report(_ event: TrainingEvent) {
        if case .finished = event { console.report(event) }
        warnings.report(event)
    }
}

/// Prints only warnings (a damaged checkpoint passed over), on standard error.
final class WarningReporter: TrainingReporter {
    func report(_ event: TrainingEvent) {
        if case .checkpointRefused = event, let line = ProgressText.line(event) {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }
}

/// `longmixer presets`: the papers' recipes.
struct PresetsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "presets", abstract: "List the recipes of both papers that `train --preset` reproduces.")

    func run() throws {
        for p in RunPreset.all {
            let also = p.otherTasks.isEmpty ? "" : " (also --task \(p.otherTasks.joined(separator: ", ")))"
            print("\(p.name)\n    \(p.summary)\n    task \(p.task)\(also), model \(p.model); source: \(p.source)")
            if let missing = p.missingData { print("    not runnable yet: \(missing)") }
        }
    }
}
