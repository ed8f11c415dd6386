import ArgumentParser
import Foundation
import LongMixerTraining

// Numeric options that may be given a negative value (a mistake we want to name) parse
// `.unconditional`ly: otherwise "--clip-norm -1" reads "-1" as an unknown flag and prints the usage.

/// A user mistake: printed by ArgumentParser as one "Error: …" line, exit code 1, no usage dump.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// `longmixer train`: train a model on a synthetic task and write a run directory.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model on a synthetic long-range task (Adding, Temporal Order) or a byte-level language model (--task lm).",
        discussion: """
            Data are generated on the fly from --seed (100,000 / 1,000 / 1,000 sequences by default, as the \
            reference), so any length fits in memory. Writes config.json, metrics.jsonl, model.safetensors and \
            summary.json to the run directory (default runs/<task>-<model>-<UTC time>).

            Without --preset the defaults are a quick recipe for `--task adding --length 1024` (≥ 99 % test \
            accuracy in a few minutes on 2 cores): the reference model (D = H = 32, 1 block, CHORD, FLATTEN, \
            no dropout, Adam, batch 40, clip 1.0) trained for 1500 steps (60,000 sequences) with a cosine \
            learning rate from 2e-3 to 0, instead of the reference's 50 epochs at a constant 1e-3. \
            Temporal Order without a preset uses the block-input residual (--residual block-input, the \
            reference's own advice for Order): with the released per-factor residual it stayed at chance at \
            N = 1024 after 240,000 sequences. \
            --preset paramixer-adding / paramixer-order reproduce the reference recipes (Table 1 synthetic \
            rows) in full; explicit flags override preset values. --micro-batch-size accumulates a step's \
            batch in pieces (same gradients, less memory), e.g. the reference batch of 40 at N = 65536.

            Examples:
              longmixer train --task adding --length 1024
              longmixer train --task order --length 1024 --steps 4000 --target-accuracy 0.99
              longmixer train --task adding --length 8192 --residual block-input --head-lr-scale 0.125 --warmup-steps 100 --steps 7000 --target-accuracy 0.99
                (N = 8192: 99.7 % test accuracy after 5000 steps, 200,000 sequences, ≈ 2 h on 2 cores)
              longmixer train --task adding --length 65536 --batch-size 40 --micro-batch-size 8 --steps 100
              longmixer train --preset paramixer-adding --length 1024 --epochs 5 --output runs/adding-1k

            Byte-level language modelling (--task lm): --corpus is a text file or a folder of .txt files \
            (e.g. data/shakespeare after `longmixer data fetch shakespeare`), split 90/5/5 % into contiguous \
            train/validation/test byte ranges; training windows of --length bytes start at seeded random \
            offsets, evaluation uses the non-overlapping windows (--val-size/--test-size cap their number). \
            --model \(LanguageModelKind.allCases.map(\.rawValue).joined(separator: "|")), --preset \
            small|tiny|wikitext (the model size; default small). LM defaults: AdamW (β 0.9, 0.98, weight decay \
            0.01, as the reference), learning rate 5e-4, cosine schedule with 10 % warm-up, batch 16, clip 1.0. \
            Validation loss, perplexity and bits per byte are logged; --steps counts optimizer steps.
              longmixer train --task lm --model permuteformer --corpus data/shakespeare --length 256 --preset tiny --steps 1000
            """)

    // MARK: What to train

    @Option(help: "Task: \(SyntheticTask.allCases.map(\.rawValue).joined(separator: ", ")) (Temporal Order), or lm (byte-level language model on --corpus). Required unless --preset sets it.")
    var task: String?

    @Option(help: "Model: \(TrainCommand.models.joined(separator: ", ")); with --task lm: \(LanguageModelKind.allCases.map(\.rawValue).joined(separator: ", ")) (default permuteformer).")
    var model: String?

    @Option(help: "--task lm: a text file or a folder of .txt files.")
    var corpus: String?

    @Option(help: "Sequence length N (≥ 2).")
    var length: Int = 1024

    @Option(help: "Reference recipe: \(TrainingPreset.all.map(\.name).joined(separator: ", ")); with --task lm the model size: small, tiny, wikitext. Flags given explicitly override it.")
    var preset: String?

    // MARK: Model

    @Option(name: [.customLong("dimensions"), .customLong("embedding-size")], help: "Model width D (default 32).")
    var dimensions: Int?

    @Option(name: [.customLong("hidden"), .customLong("hidden-size")], help: "Hidden width H of the f and g MLPs (default 32).")
    var hidden: Int?

    @Option(help: "Number of Paramixer blocks (default 1); with --task lm the decoder layers (default: the preset's).")
    var blocks: Int?

    @Option(help: "--task lm: attention heads (default: the preset's).")
    var heads: Int?

    @Option(help: "--task lm: dropout (default: the preset's, 0.1).")
    var dropout: Float?

    @Option(name: .customLong("protocol"), help: "Sparse-factor link protocol: \(LinkProtocol.allCases.map(\.rawValue).joined(separator: ", ")) (default chord).")
    var linkProtocol: String?

    @Option(help: "Number of factors M from N: ceil or floor of log2 N (default ceil; the presets use floor, as the synthetic reference; equal for powers of two).")
    var factorRule: String?

    @Option(parsing: .unconditional, help: "Dropout on the embedded input (default 0).")
    var dropout1: Float?

    @Option(parsing: .unconditional, help: "Dropout on each block's output (default 0).")
    var dropout2: Float?

    @Option(help: "Pooling: flatten (Linear(N·D, C)) or cls (position 0; no CLS token is added for synthetic tasks) (default flatten).")
    var pooling: String?

    @Option(help: "Positional embedding: none or apc (learned absolute) (default: none for adding, apc for order, as the reference).")
    var positionalEmbedding: String?

    @Option(help: "What each sparse factor adds back: every-factor (V ← W·V + V, the released reference) or block-input (V ← W·V + g(V_in), the reference's advice for Temporal Order at long N) (default: block-input for --task order without a preset, else every-factor).")
    var residual: String?

    // MARK: Training

    @Option(help: "Optimizer: adam, adamw or sgd (with momentum 0.9) (default adam, as the reference).")
    var optimizer: String?

    @Option(name: [.customLong("learning-rate"), .customLong("lr")], parsing: .unconditional, help: "Learning rate (default \(TrainCommand.defaultLearningRate) without a preset (the peak of the cosine schedule); the presets use the reference's 1e-3).")
    var learningRate: Float?

    @Option(help: "Learning-rate schedule: constant, or cosine (decay to 0 over the run after --warmup-steps of linear warm-up) (default: cosine without a preset, constant with one, as the reference).")
    var schedule: String?

    @Option(help: "Linear warm-up steps of the cosine schedule (default 0).")
    var warmupSteps: Int?

    @Option(name: .customLong("head-lr-scale"), parsing: .unconditional, help: "Multiply the learning rate of the output Linear ('final') by this (adam/adamw; default 1, as the reference). Adam moves each weight by about lr per step, so a FLATTEN head with N·D inputs moves the prediction by about lr·N·D·|V|: scale it by about 32768/(N·D) to keep the N = 1024 dynamics at longer N.")
    var headLearningRateScale: Float?

    @Option(parsing: .unconditional, help: "Weight decay (default 0; decoupled for adamw, L2 for adam and sgd).")
    var weightDecay: Float?

    @Option(help: "Sequences per step (default 40).")
    var batchSize: Int?

    @Option(help: "Accumulate each step's batch in pieces of this many sequences (same gradients as the whole batch, less activation memory; also the evaluation batch). Default: the whole batch at once.")
    var microBatchSize: Int?

    @Option(help: "Passes over the training split (default: preset's, else train by --steps).")
    var epochs: Int?

    @Option(help: "Optimizer steps; overrides the epoch count (default \(TrainCommand.defaultSteps) without a preset).")
    var steps: Int?

    @Option(parsing: .unconditional, help: "Clip the global gradient norm to this value; 0 disables (default 1.0).")
    var clipNorm: Float?

    @Option(help: "Seed for data, initialisation and dropout (default 42).")
    var seed: UInt64?

    @Option(help: "Training sequences (default 100000).")
    var trainSize: Int?

    @Option(name: [.customLong("val-size"), .customLong("validation-size")], help: "Validation sequences (default 1000); with --task lm at most this many evaluation windows (default: all).")
    var valSize: Int?

    @Option(help: "Test sequences (default 1000); with --task lm at most this many evaluation windows (default: all).")
    var testSize: Int?

    @Option(help: "Steps between validation evaluations (default: \(TrainCommand.defaultEvaluationInterval) when training by steps, else every epoch).")
    var evalInterval: Int?

    @Option(help: "Steps between progress lines (default 50).")
    var logInterval: Int?

    @Option(parsing: .unconditional, help: "Stop early once validation accuracy reaches this fraction in (0, 1] (default: off).")
    var targetAccuracy: Double?

    // MARK: Output

    @OptionGroup var threadOptions: ThreadOptions

    @Option(help: "Run directory (default runs/<task>-<model>-<UTC time>).")
    var output: String?

    @Flag(help: "Replace the contents of a non-empty --output directory.")
    var overwrite = false

    @Flag(help: "Print only the final line.")
    var quiet = false

    static let models = ["paramixer"]
    static let defaultSteps = 1500
    static let defaultEvaluationInterval = 250
    static let defaultLearningRate: Float = 2e-3

    /// Everything `config.json` records.
    struct ResolvedConfiguration: Codable {
        var command: [String]
        var startedAt: String
        var task: SyntheticTask
        var model: String
        var preset: String?
        var length: Int
        var seed: UInt64
        var splitSizes: SplitSizes
        var optimizer: String
        var learningRate: Float
        var schedule: String
        var warmupSteps: Int
        var weightDecay: Float
        var headLearningRateScale: Float
        var training: TrainingConfiguration
        var paramixer: ParamixerConfiguration
        var threads: Int
        var parameterCount: Int?
    }

    func run() throws {
        do { try threadOptions.apply() } catch let e as ValidationError { throw CommandError(e.message) }
        if task?.lowercased() == "lm" { return try runLanguageModel() }
        if corpus != nil { throw CommandError("--corpus is for --task lm") }
        let preset = try preset.map { name -> TrainingPreset in
            do { return try TrainingPreset.named(name) } catch { throw CommandError("\(error)") }
        }

        // Task, model, length.
        guard let taskName = task ?? preset?.task.rawValue else {
            throw CommandError("missing --task; valid tasks: \(SyntheticTask.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let task = try SyntheticTask(parsing: taskName)
        let modelName = (model ?? preset?.model ?? "paramixer").lowercased()
        guard Self.models.contains(modelName) else {
            throw CommandError("unknown model '\(model!)'; valid models: \(Self.models.joined(separator: ", "))")
        }
        guard length >= 2 else { throw CommandError("--length must be ≥ 2 (the tasks mark two positions), got \(length)") }
        if let preset { try preset.check(task: task, length: length) }

        // Model configuration: defaults ← preset ← flags.
        let linkProtocol = try linkProtocol.map { try LinkProtocol(parsing: $0) } ?? preset?.linkProtocol ?? .chord
        let factorRule: FactorCountRule
        if let name = self.factorRule {
            guard let rule = FactorCountRule(rawValue: name.lowercased()) else {
                throw CommandError("unknown --factor-rule '\(name)'; valid rules: \(FactorCountRule.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            factorRule = rule
        } else { factorRule = preset?.factorCountRule ?? .ceil }
        let pooling: ParamixerConfiguration.Pooling
        if let name = self.pooling {
            guard let p = ParamixerConfiguration.Pooling(rawValue: name.lowercased()) else {
                throw CommandError("unknown --pooling '\(name)'; valid choices: \(ParamixerConfiguration.Pooling.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            pooling = p
        } else { pooling = preset?.pooling ?? .flatten }
        let positional: Bool
        if let name = positionalEmbedding {
            switch name.lowercased() {
            case "none", "off": positional = false
            case "apc", "learned": positional = true
            default: throw CommandError("unknown --positional-embedding '\(name)'; valid choices: none, apc")
            }
        } else { positional = preset?.positionalEmbedding ?? (task == .order) }
        // Without a preset, Temporal Order uses the block-input residual: with the per-factor residual of
        // the released code it stayed at chance (26.6 % after 240k sequences at N = 1024), with block-input
        // it learns in a few thousand steps (docs/benchmarks.md, "Learning"). Presets keep the released form.
        var residualKind: ParamixerConfiguration.Residual = preset == nil && task == .order ? .blockInput : .everyFactor
        if let name = residual {
            guard let r = ParamixerConfiguration.Residual(rawValue: name.lowercased()) else {
                throw CommandError("unknown --residual '\(name)'; valid choices: \(ParamixerConfiguration.Residual.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            residualKind = r
        }
        let paramixer = ParamixerConfiguration(
            vocabularySize: task.vocabularySize, inputFeatures: task.inputFeatures, length: length,
            embeddingSize: dimensions ?? preset?.embeddingSize ?? 32, hiddenSize: hidden ?? preset?.hiddenSize ?? 32,
            blocks: blocks ?? preset?.blocks ?? 1, linkProtocol: linkProtocol, factorCountRule: factorRule,
            dropout1: dropout1 ?? preset?.dropout1 ?? 0, dropout2: dropout2 ?? preset?.dropout2 ?? 0,
            pooling: pooling, positionalEmbedding: positional, outputCount: task.objective.outputCount,
            residual: residualKind)
        try paramixer.validate()

        // Training configuration.
        if epochs != nil && steps != nil { throw CommandError("give --epochs or --steps, not both") }
        let useSteps: Int? = steps ?? (epochs == nil && preset == nil ? Self.defaultSteps : nil)
        let clip: Float?
        switch clipNorm ?? preset?.clipNorm ?? 1 {
        case 0: clip = nil
        case let c where c > 0 && c.isFinite: clip = c
        case let c: throw CommandError("--clip-norm must be > 0 (or 0 to disable), got \(c)")
        }
        let training = TrainingConfiguration(
            batchSize: batchSize ?? preset?.batchSize ?? 40, evaluationBatchSize: microBatchSize, microBatchSize: microBatchSize,
            epochs: epochs ?? preset?.epochs ?? 1, steps: useSteps, clipNorm: clip, logInterval: logInterval ?? 50,
            evaluationInterval: evalInterval ?? (useSteps != nil ? Self.defaultEvaluationInterval : nil),
            targetAccuracy: targetAccuracy)
        try training.validate()
        let sizes = SplitSizes(train: trainSize ?? preset?.splitSizes.train ?? 100_000,
                               validation: valSize ?? preset?.splitSizes.validation ?? 1_000,
                               test: testSize ?? preset?.splitSizes.test ?? 1_000)
        try sizes.validate()
        let seed = self.seed ?? preset?.seed ?? 42
        let optimizerName = (optimizer ?? "adam").lowercased()
        guard ["adam", "adamw", "sgd"].contains(optimizerName) else {
            throw CommandError("unknown --optimizer '\(optimizer!)'; valid optimizers: adam, adamw, sgd")
        }
        let lr = learningRate ?? preset?.learningRate ?? Self.defaultLearningRate
        guard lr.isFinite && lr > 0 else { throw CommandError("--learning-rate must be > 0, got \(lr)") }
        let scheduleName = (schedule ?? (preset == nil ? "cosine" : "constant")).lowercased()
        guard ["constant", "cosine"].contains(scheduleName) else {
            throw CommandError("unknown --schedule '\(schedule!)'; valid schedules: constant, cosine")
        }
        let warmup = warmupSteps ?? 0
        let totalSteps = training.totalSteps(trainCount: sizes.train)
        guard warmup >= 0 && warmup < totalSteps else {
            throw CommandError("--warmup-steps must be in 0..<\(totalSteps) (the run's steps), got \(warmup)")
        }
        let learningRateSchedule: (any LearningRateSchedule)? = scheduleName == "cosine"
            ? WarmupCosineSchedule(peakLearningRate: lr, warmupSteps: warmup, totalSteps: totalSteps) : nil
        let decay = weightDecay ?? 0
        guard decay.isFinite && decay >= 0 else { throw CommandError("--weight-decay must be ≥ 0, got \(decay)") }
        let headScale = headLearningRateScale ?? 1
        guard headScale.isFinite && headScale > 0 else { throw CommandError("--head-lr-scale must be > 0, got \(headScale)") }
        if headScale != 1 && optimizerName == "sgd" { throw CommandError("--head-lr-scale needs --optimizer adam or adamw") }

        // Data, then the run directory (before the model, so a bad --output fails fast).
        let data = try SyntheticDataset.splits(task: task, length: length, sizes: sizes, seed: seed)
        let directoryURL = output.map { URL(fileURLWithPath: $0) } ?? RunDirectory.defaultURL(task: task.rawValue, model: modelName)
        let runDirectory = try RunDirectory.prepare(directoryURL, overwrite: overwrite)

        var generator = RandomGenerator(seed: seed ^ 0x6D6F_6465_6C00_0000)   // "model": independent of the data stream
        let model = try Paramixer(configuration: paramixer, generator: &generator)
        let optimizer: any Optimizer
        switch optimizerName {
        case "adamw": optimizer = AdamW(parameters: model.parameters(), learningRate: lr, weightDecay: decay)
        case "sgd": optimizer = SGD(parameters: model.parameters(), learningRate: lr, momentum: 0.9, weightDecay: decay)
        default: optimizer = Adam(parameters: model.parameters(), learningRate: lr, weightDecay: decay)
        }
        if headScale != 1, let adam = optimizer as? Adam {
            adam.setLearningRateMultiplier(headScale, for: model.final.parameters())
        }

        let resolved = ResolvedConfiguration(
            command: CommandLine.arguments, startedAt: ISO8601DateFormatter().string(from: Date()), task: task, model: modelName, preset: preset?.name, length: length, seed: seed,
            splitSizes: sizes, optimizer: optimizerName, learningRate: lr, schedule: scheduleName, warmupSteps: warmup, weightDecay: decay, headLearningRateScale: headScale, training: training,
            paramixer: paramixer, threads: Parallel.threadCount, parameterCount: model.parameterCount)
        let reporter: TrainingReporter = quiet ? FinalLineReporter() : ConsoleReporter()
        let trainer = try Trainer(model: model, optimizer: optimizer, objective: task.objective,
                                  train: data.train, validation: data.validation, test: data.test,
                                  configuration: training, runDirectory: runDirectory, reporter: reporter,
                                  schedule: learningRateSchedule)
        trainer.weightsMetadata = ["task": task.rawValue, "model": modelName, "length": String(length),
                                   "configuration": String(decoding: try JSONEncoder().encode(paramixer), as: UTF8.self)]
        try runDirectory.finishing { try trainer.run(resolvedConfiguration: resolved) }
    }
}

/// Prints only the `finished` line.
final class FinalLineReporter: TrainingReporter {
    let console = ConsoleReporter()
    func report(_ event: TrainingEvent) {
        if case .finished = event { console.report(event) }
    }
}
