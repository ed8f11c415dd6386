import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

// One run configuration for every model and task, resolved by one function from three layers:
// defaults (per task and model family) ← preset ← command-line settings. A setting that does not
// apply to the chosen task or model is refused with one line before anything is allocated.

public enum OptimizerKind: String, Codable, CaseIterable, Sendable {
    case adam, adamw, sgd
}

public enum ScheduleKind: String, Codable, CaseIterable, Sendable {
    /// The same rate every step.
    case constant
    /// Linear warm-up, then cosine decay to 0 over the run.
    case cosine
    /// Linear warm-up, then lr·√(warmup/step) (fairseq's inverse_sqrt, the LM reference).
    case inverseSqrt = "inverse-sqrt"
}

/// Model sizes of the language models (D / heads / layers / FFN).
public enum LanguageModelSize: String, Codable, CaseIterable, Sendable {
    /// 64 / 2 / 2 / 128.
    case tiny
    /// 256 / 4 / 4 / 1024.
    case small
    /// 512 / 8 / 6 / 2048: fairseq's transformer_lm, the PermuteFormer WikiText-103 model.
    case wikitext

    public var options: ModelOptions {
        switch self {
        case .tiny: return ModelOptions(dimensions: 64, layers: 2, heads: 2, feedForward: 128, dropout: 0.1)
        case .small: return ModelOptions(dimensions: 256, layers: 4, heads: 4, feedForward: 1024, dropout: 0.1)
        case .wikitext: return ModelOptions(dimensions: 512, layers: 6, heads: 8, feedForward: 2048, dropout: 0.1)
        }
    }
}

/// What one layer of the configuration sets (defaults, a preset, or the command line): every field
/// optional; `overridden(by:)` lays one layer over another.
public struct RunSettings: Codable, Equatable, Sendable {
    public var task: String?
    public var model: String?
    public var length: Int?
    public var seed: UInt64?
    public var modelOptions = ModelOptions()
    public var size: LanguageModelSize?
    public var optimizer: OptimizerKind?
    public var learningRate: Float?
    public var schedule: ScheduleKind?
    public var warmupSteps: Int?
    public var weightDecay: Float?
    public var headLearningRateScale: Float?
    public var batchSize: Int?
    public var microBatchSize: Int?
    public var epochs: Int?
    public var steps: Int?
    /// Gradient-norm clipping; 0 turns it off.
    public var clipNorm: Float?
    public var logInterval: Int?
    public var evaluationInterval: Int?
    public var targetAccuracy: Double?
    public var trainSize: Int?
    public var validationSize: Int?
    public var testSize: Int?
    public var corpus: String?
    public var dataDirectory: String?
    public var checkpointInterval: Int?
    public var validationSample: Int?

    public init() {}

    public func overridden(by o: RunSettings) -> RunSettings {
        var r = self
        r.modelOptions = modelOptions.overridden(by: o.modelOptions)
        func take<T>(_ k: WritableKeyPath<RunSettings, T?>) { if let v = o[keyPath: k] { r[keyPath: k] = v } }
        take(\.task); take(\.model); take(\.length); take(\.seed); take(\.size); take(\.optimizer); take(\.learningRate)
        take(\.schedule); take(\.warmupSteps); take(\.weightDecay); take(\.headLearningRateScale); take(\.batchSize)
        take(\.microBatchSize); take(\.epochs); take(\.steps); take(\.clipNorm); take(\.logInterval); take(\.evaluationInterval)
        take(\.targetAccuracy); take(\.trainSize); take(\.validationSize); take(\.testSize); take(\.corpus)
        take(\.dataDirectory)
        take(\.checkpointInterval); take(\.validationSample)
        return r
    }
}

/// Everything a training run is, resolved and checked; written whole to `config.json`.
public struct RunConfiguration: Codable, Equatable, Sendable {
    public var task: String
    public var model: String
    /// The recipe the values came from, and the factor it was shrunk by.
    public var preset: String?
    public var scale: Double?
    public var length: Int
    public var seed: UInt64
    public var modelOptions: ModelOptions
    public var size: LanguageModelSize?
    public var optimizer: OptimizerKind
    public var learningRate: Float
    public var schedule: ScheduleKind
    /// nil: the schedule's default (10 % of the run for the LM's cosine, else 0), known once the
    /// data are (a corpus run's length depends on the corpus).
    public var warmupSteps: Int?
    public var weightDecay: Float
    public var headLearningRateScale: Float
    public var training: TrainingConfiguration
    public var data: TaskDataOptions

    public static let defaultEvaluationInterval = 250
    /// Windows a language model's validations during training score (all of them at the end).
    public static let defaultLanguageModelValidationSample = 200
}

extension RunConfiguration {
    /// The defaults layer for a task and model: a quick CPU recipe (Paramixer on Adding N = 1024 reaches
    /// ≥ 99 % test accuracy in a few minutes on 2 cores), and the reference's LM optimiser for `lm`.
    static func defaults(task: any Task, family: ModelFamily) -> RunSettings {
        var d = RunSettings()
        d.length = task.defaultLength ?? 1024
        d.seed = 42
        d.clipNorm = 1
        d.logInterval = 50
        d.evaluationInterval = defaultEvaluationInterval
        if task.isCausal {
            d.optimizer = .adamw
            d.learningRate = 5e-4
            d.schedule = .cosine
            d.weightDecay = 0.01
            d.batchSize = 16
            d.steps = 1000
            d.size = .small
            d.validationSample = defaultLanguageModelValidationSample
        } else {
            d.optimizer = .adam
            d.learningRate = 2e-3
            d.schedule = .cosine
            d.warmupSteps = 0
            d.weightDecay = 0
            d.batchSize = 40
            d.steps = 1500
            if task.dataOptions.contains(.trainSize) && !task.dataOptions.contains(.dataDirectory) {
                // Generated tasks: the splits' sizes (prepared data use their whole splits by default).
                d.trainSize = 100_000
                d.validationSize = 1_000
                d.testSize = 1_000
            }
            if family == .paramixer {
                // Temporal Order: with the released per-factor residual Paramixer stayed at chance at
                // N = 1024 after 240,000 sequences; with the block-input residual it learns in a few
                // thousand steps. The presets keep the released form.
                if task.name == SyntheticTask.order.rawValue {
                    d.modelOptions.residual = .blockInput
                    d.modelOptions.positions = .learned
                }
            }
        }
        return d
    }

    /// Resolves `settings` (the command line) over `preset` over the defaults, shrinks by `scale`,
    /// and checks every value and that every given setting applies. Throws one `UserError`.
    public static func resolve(_ settings: RunSettings, preset presetName: String? = nil, scale: Double? = nil) throws -> RunConfiguration {
        let preset = try presetName.map { try RunPreset.named($0) }
        if let preset {
            if let t = settings.task, t.lowercased() != preset.task, !preset.otherTasks.contains(t.lowercased()) {
                let tasks = ([preset.task] + preset.otherTasks).joined(separator: ", ")
                throw UserError(what: "--task", value: t, why: "preset \(preset.name) is for the \(tasks) task\(preset.otherTasks.isEmpty ? "" : "s")",
                                remedy: "drop --task or choose another preset (`longmixer presets`)")
            }
            if let m = settings.model, m.lowercased() != preset.model {
                throw UserError(what: "--model", value: m, why: "preset \(preset.name) is for the \(preset.model) model",
                                remedy: "drop --model or choose another preset (`longmixer presets`)")
            }
            if let missing = preset.missingData {
                throw UserError(what: "--preset", value: preset.name, why: "its data are not available: \(missing)")
            }
        }
        guard let taskName = settings.task ?? preset?.task else {
            throw UserError(what: "--task", why: "missing", remedy: "valid tasks: \(TaskRegistry.names.joined(separator: ", "))")
        }
        let task = try TaskRegistry.task(taskName)
        let entry = try ModelRegistry.entry(settings.model ?? preset?.model ?? (task.isCausal ? "permuteformer" : "paramixer"))
        let family = ModelRegistry.family(of: entry, causal: task.isCausal)

        // Settings that do not apply to this task or model: refused, never ignored.
        try checkApplicable(settings, task: task, entry: entry, family: family)

        var merged = defaults(task: task, family: family)
        if let preset { merged = merged.overridden(by: preset.settings) }
        if family == .decoder {
            // The model size is the base; the preset's and the command line's width/depth options override it.
            let size = settings.size ?? merged.size ?? .small
            merged.size = size
            merged.modelOptions = size.options.overridden(by: preset?.settings.modelOptions ?? ModelOptions())
        }
        // --scale shrinks the recipe (defaults and preset); what the command line gives is taken as given.
        if let scale { merged = try shrink(merged, by: scale, family: family) }
        merged = merged.overridden(by: settings)
        if family != .decoder { merged.size = nil }
        // --epochs given on the command line replaces a step count from defaults or preset (and vice versa).
        if settings.epochs != nil && settings.steps == nil { merged.steps = nil }
        if settings.steps != nil && settings.epochs == nil { merged.epochs = nil }
        if merged.steps != nil && merged.epochs != nil && settings.steps == nil && settings.epochs == nil {
            merged.steps = nil   // a preset's epochs win over the default step count
        }
        if let fixed = task.layout.fixedLength {
            // An image task's N is its grid's (whatever --scale does to lengths).
            if let n = settings.length, n != fixed {
                throw UserError(what: "--length", value: String(n), why: "the \(task.name) task's images give N = \(fixed)", remedy: "drop --length")
            }
            merged.length = fixed
        }
        if let preset, let lengths = preset.lengths, let n = merged.length, !lengths.contains(n), scale == nil {
            throw UserError(what: "--length", value: String(n), why: "preset \(preset.name) reproduces the reference at N = \(lengths.map(String.init).joined(separator: ", "))",
                            remedy: "drop --preset to train at other lengths, or add --scale")
        }

        let (length, lr, decay, headScale, clip) = try checkRanges(merged, given: settings, task: task)
        if let steps = merged.steps, let warmup = merged.warmupSteps, warmup > 0, warmup >= steps {
            throw warmupTooLong(warmup, totalSteps: steps, preset: settings.warmupSteps == nil ? preset?.name : nil, scale: scale)
        }

        let training = TrainingConfiguration(
            batchSize: merged.batchSize!, evaluationBatchSize: merged.microBatchSize, microBatchSize: merged.microBatchSize,
            epochs: merged.epochs ?? 1, steps: merged.steps, clipNorm: clip, logInterval: merged.logInterval!,
            evaluationInterval: merged.steps != nil ? merged.evaluationInterval : nil, targetAccuracy: merged.targetAccuracy,
            // By default a checkpoint comes with every validation (each epoch when training by epochs).
            checkpointInterval: merged.checkpointInterval ?? (merged.steps != nil ? merged.evaluationInterval : nil),
            validationSample: merged.validationSample)
        let data: TaskDataOptions
        if task.dataOptions.contains(.corpus) {
            data = TaskDataOptions(length: length, seed: merged.seed!, corpus: merged.corpus,
                                   validationLimit: merged.validationSize, testLimit: merged.testSize)
        } else if task.dataOptions.contains(.dataDirectory) {
            // Prepared data: the sizes, where given, cap each split.
            data = TaskDataOptions(length: length, seed: merged.seed!, trainLimit: merged.trainSize,
                                   validationLimit: merged.validationSize, testLimit: merged.testSize,
                                   dataDirectory: merged.dataDirectory)
        } else {
            data = TaskDataOptions(length: length, seed: merged.seed!,
                                   splitSizes: SplitSizes(train: merged.trainSize!, validation: merged.validationSize!, test: merged.testSize!))
        }
        let configuration = RunConfiguration(
            task: task.name, model: entry.name, preset: preset?.name, scale: scale, length: length, seed: merged.seed!,
            modelOptions: merged.modelOptions, size: merged.size, optimizer: merged.optimizer!, learningRate: lr,
            schedule: merged.schedule!, warmupSteps: merged.warmupSteps, weightDecay: decay, headLearningRateScale: headScale,
            training: training, data: data)
        // The model options against the model (unknown combinations, sizes the family refuses).
        try ModelRegistry.check(entry, for: configuration.modelShape(task), taskName: task.name, options: settings.modelOptions)
        return configuration
    }

    /// Checks every numeric value of `merged` (the resolved settings) against its documented range, naming
    /// the option; `given` is what the command line said (a warm-up only it gave is refused for the
    /// constant schedule). Returns the values resolve goes on with.
    static func checkRanges(_ merged: RunSettings, given settings: RunSettings, task: any Task) throws
        -> (length: Int, learningRate: Float, weightDecay: Float, headScale: Float, clip: Float?) {
        guard let length = merged.length, let lr = merged.learningRate, let decay = merged.weightDecay,
              let clipNorm = merged.clipNorm else {
            throw UserError(what: "configuration", why: "lacks a length, learning rate, weight decay or clip norm")
        }
        guard length >= task.minimumLength && length <= 1 << 24 else {
            throw UserError(what: "--length", value: String(length), why: "must be in \(task.minimumLength)...\(1 << 24) for the \(task.name) task")
        }
        func positive(_ v: Int?, _ flag: String, max: Int = 1 << 40) throws {
            if let v, !(1...max).contains(v) { throw UserError(what: flag, value: String(v), why: "must be in 1...\(max)") }
        }
        try positive(merged.batchSize, "--batch-size", max: 1 << 20)
        try positive(merged.microBatchSize, "--micro-batch-size", max: merged.batchSize ?? 1)
        try positive(merged.epochs, "--epochs", max: 1 << 20)
        try positive(merged.steps, "--steps", max: 1 << 32)
        try positive(merged.logInterval, "--log-interval")
        try positive(merged.evaluationInterval, "--eval-interval")
        try positive(merged.checkpointInterval, "--checkpoint-interval")
        try positive(merged.validationSample, "--val-sample", max: 1 << 32)
        try positive(merged.trainSize, "--train-size", max: 1 << 32)
        try positive(merged.validationSize, "--val-size", max: 1 << 32)
        try positive(merged.testSize, "--test-size", max: 1 << 32)
        let o = merged.modelOptions
        try positive(o.dimensions, "--dimensions", max: 1 << 16)
        try positive(o.layers, "--layers", max: 1024)
        try positive(o.hidden, "--hidden", max: 1 << 16)
        try positive(o.heads, "--heads", max: 1024)
        try positive(o.feedForward, "--feed-forward", max: 1 << 18)
        for (flag, p) in [("--dropout", o.dropout), ("--dropout1", o.dropout1), ("--dropout2", o.dropout2)] {
            if let p, !(p >= 0 && p < 1) { throw UserError(what: flag, value: "\(p)", why: "must be in [0, 1)") }
        }
        guard lr.isFinite && lr > 0 && lr <= 10 else { throw UserError(what: "--learning-rate", value: "\(lr)", why: "must be in (0, 10]") }
        guard decay.isFinite && decay >= 0 && decay <= 10 else { throw UserError(what: "--weight-decay", value: "\(decay)", why: "must be in [0, 10]") }
        let headScale = merged.headLearningRateScale ?? 1
        guard headScale.isFinite && headScale > 0 && headScale <= 1e4 else {
            throw UserError(what: "--head-lr-scale", value: "\(headScale)", why: "must be in (0, 10000]")
        }
        if headScale != 1 && merged.optimizer == .sgd {
            throw UserError(what: "--head-lr-scale", value: "\(headScale)", why: "scales Adam's per-parameter steps", remedy: "use --optimizer adam or adamw")
        }
        if let w = merged.warmupSteps, w < 0 { throw UserError(what: "--warmup-steps", value: String(w), why: "must be ≥ 0") }
        if merged.schedule == .constant, let w = settings.warmupSteps, w > 0 {
            throw UserError(what: "--warmup-steps", value: String(w), why: "the constant schedule has no warm-up", remedy: "use --schedule cosine or inverse-sqrt")
        }
        let clip: Float?
        switch clipNorm {
        case 0: clip = nil
        case let c where c > 0 && c.isFinite: clip = c
        case let c: throw UserError(what: "--clip-norm", value: "\(c)", why: "must be > 0, or 0 to turn clipping off")
        }
        if let t = merged.targetAccuracy, !(t > 0 && t <= 1) {
            throw UserError(what: "--target-accuracy", value: "\(t)", why: "must be in (0, 1]")
        }
        return (length, lr, decay, headScale, clip)
    }

    /// Refuses every given setting that the task or the model does not read.
    static func checkApplicable(_ s: RunSettings, task: any Task, entry: ModelEntry, family: ModelFamily) throws {
        func refuse(_ flag: String, _ why: String) -> UserError {
            UserError(what: flag, why: why, remedy: "drop it")
        }
        let dataFlags: [(TaskDataOption, Bool)] = [(.trainSize, s.trainSize != nil), (.validationSize, s.validationSize != nil),
                                                   (.testSize, s.testSize != nil), (.corpus, s.corpus != nil),
                                                   (.dataDirectory, s.dataDirectory != nil)]
        for (option, given) in dataFlags where given && !task.dataOptions.contains(option) {
            throw refuse(option.rawValue, "does not apply to the \(task.name) task")
        }
        if s.size != nil && family != .decoder { throw refuse("--size", "sets the size of a language model (--task lm); use --dimensions, --layers") }
        if s.headLearningRateScale != nil && family == .decoder {
            throw refuse("--head-lr-scale", "the language model's output layer is tied to its embedding")
        }
        if s.targetAccuracy != nil && task.isCausal { throw refuse("--target-accuracy", "language models stop by --steps or --epochs") }
        if s.steps != nil && s.epochs != nil {
            throw UserError(what: "--epochs", why: "--steps and --epochs both set the run's length", remedy: "give one")
        }
        if family == .decoder {
            for flag in ["--pooling", "--positions"] where s.modelOptions.givenOptions.contains(flag) {
                throw refuse(flag, "a language model predicts every position from sinusoidal positions")
            }
        }
    }

    /// A warm-up that the run would never finish; names the preset when the warm-up is the recipe's.
    static func warmupTooLong(_ warmup: Int, totalSteps: Int, preset: String?, scale: Double?) -> UserError {
        let origin = preset.map { "preset \($0)'s warm-up\(scale.map { " after --scale \($0)" } ?? ""); " } ?? ""
        return UserError(what: "--warmup-steps", value: String(warmup), why: "must be below the run's \(totalSteps) steps",
                         remedy: "\(origin)give a shorter --warmup-steps or train longer")
    }

    /// Shrinks widths, depth, length, steps and data by `scale` ∈ (0, 1], keeping the architecture.
    static func shrink(_ s: RunSettings, by scale: Double, family: ModelFamily) throws -> RunSettings {
        guard scale > 0 && scale <= 1 && scale.isFinite else {
            throw UserError(what: "--scale", value: "\(scale)", why: "must be in (0, 1]")
        }
        var r = s
        func scaled(_ v: Int?, minimum: Int) -> Int? { v.map { max(minimum, Int((Double($0) * scale).rounded())) } }
        var o = r.modelOptions
        let heads = o.heads ?? 1
        if let d = o.dimensions {
            // Keep D a multiple of the heads and of 2 (sinusoids, rotary pairs).
            let unit = heads * 2
            o.dimensions = max(unit, Int((Double(d) * scale / Double(unit)).rounded()) * unit)
        }
        o.hidden = scaled(o.hidden, minimum: 4)
        o.feedForward = scaled(o.feedForward, minimum: 4)
        o.layers = scaled(o.layers, minimum: 1)
        r.modelOptions = o
        r.length = scaled(r.length, minimum: 16)
        r.steps = scaled(r.steps, minimum: 1)
        r.epochs = scaled(r.epochs, minimum: 1)
        r.trainSize = scaled(r.trainSize, minimum: 1)
        r.validationSize = scaled(r.validationSize, minimum: 1)
        r.testSize = scaled(r.testSize, minimum: 1)
        r.warmupSteps = r.warmupSteps.map { scaledWarmup($0, by: scale) }
        return r
    }

    /// A recipe's warm-up under `--scale` (also how a refused warm-up is traced back to its preset).
    static func scaledWarmup(_ steps: Int, by scale: Double) -> Int { Int((Double(steps) * scale).rounded()) }

    /// Checks a configuration read back from a run's `config.json` as `resolve` checks a command line:
    /// every value in its range, so a hand-edited or damaged file is one error, not a trap or an
    /// allocation that cannot succeed. The error names the option whose range was left.
    public func checkStored() throws {
        let task = try TaskRegistry.task(self.task)
        _ = try ModelRegistry.entry(model)
        var s = RunSettings()
        s.length = length; s.seed = seed; s.modelOptions = modelOptions; s.size = size; s.optimizer = optimizer
        s.learningRate = learningRate; s.schedule = schedule; s.warmupSteps = warmupSteps; s.weightDecay = weightDecay
        s.headLearningRateScale = headLearningRateScale; s.batchSize = training.batchSize
        s.microBatchSize = training.microBatchSize; s.epochs = training.epochs; s.steps = training.steps
        s.clipNorm = training.clipNorm ?? 0; s.logInterval = training.logInterval
        s.evaluationInterval = training.evaluationInterval; s.targetAccuracy = training.targetAccuracy
        s.checkpointInterval = training.checkpointInterval; s.validationSample = training.validationSample
        s.trainSize = data.splitSizes?.train ?? data.trainLimit
        s.validationSize = data.splitSizes?.validation ?? data.validationLimit
        s.testSize = data.splitSizes?.test ?? data.testLimit
        _ = try Self.checkRanges(s, given: RunSettings(), task: task)
        if let e = training.evaluationBatchSize, !(1...(1 << 20)).contains(e) {
            throw UserError(what: "--micro-batch-size", value: String(e), why: "must be in 1...\(1 << 20)")
        }
        if let clip = training.clipNorm, !(clip > 0 && clip.isFinite) {
            throw UserError(what: "--clip-norm", value: "\(clip)", why: "must be > 0, or 0 to turn clipping off")
        }
        guard data.length == length, data.seed == seed else {
            throw UserError(what: "--length", value: String(data.length), why: "the data's length and seed must be the run's (\(length), \(seed))")
        }
    }

    /// The settings given with `--resume` that differ from this (stored) configuration, as
    /// `--flag (given value; the run has stored value)`: a resumed run continues the stored run as it was.
    public func contradictions(with s: RunSettings) -> [String] {
        var out: [String] = []
        func compare<T: Equatable>(_ flag: String, _ given: T?, _ stored: T?) {
            guard let given, given != stored else { return }
            out.append("\(flag) \(given) (the run has \(stored.map { "\($0)" } ?? "none"))")
        }
        compare("--task", s.task?.lowercased(), task)
        compare("--model", s.model?.lowercased(), model)
        compare("--length", s.length, length)
        compare("--seed", s.seed, seed)
        compare("--size", s.size, size)
        compare("--optimizer", s.optimizer, optimizer)
        compare("--learning-rate", s.learningRate, learningRate)
        compare("--schedule", s.schedule, schedule)
        compare("--warmup-steps", s.warmupSteps, warmupSteps)
        compare("--weight-decay", s.weightDecay, weightDecay)
        compare("--head-lr-scale", s.headLearningRateScale, headLearningRateScale)
        compare("--batch-size", s.batchSize, training.batchSize)
        compare("--micro-batch-size", s.microBatchSize, training.microBatchSize)
        compare("--epochs", s.epochs, training.steps == nil ? training.epochs : nil)
        compare("--steps", s.steps, training.steps)
        compare("--clip-norm", s.clipNorm, training.clipNorm ?? 0)
        compare("--log-interval", s.logInterval, training.logInterval)
        compare("--eval-interval", s.evaluationInterval, training.evaluationInterval)
        compare("--target-accuracy", s.targetAccuracy, training.targetAccuracy)
        compare("--checkpoint-interval", s.checkpointInterval, training.checkpointInterval)
        compare("--val-sample", s.validationSample, training.validationSample)
        compare("--train-size", s.trainSize, data.splitSizes?.train)
        compare("--val-size", s.validationSize, data.splitSizes?.validation ?? data.validationLimit)
        compare("--test-size", s.testSize, data.splitSizes?.test ?? data.testLimit)
        compare("--corpus", s.corpus, data.corpus)
        let given = s.modelOptions, stored = modelOptions
        compare("--dimensions", given.dimensions, stored.dimensions)
        compare("--layers", given.layers, stored.layers)
        compare("--hidden", given.hidden, stored.hidden)
        compare("--heads", given.heads, stored.heads)
        compare("--feed-forward", given.feedForward, stored.feedForward)
        compare("--dropout", given.dropout, stored.dropout)
        compare("--dropout1", given.dropout1, stored.dropout1)
        compare("--dropout2", given.dropout2, stored.dropout2)
        compare("--protocol", given.linkProtocol, stored.linkProtocol)
        compare("--factor-rule", given.factorRule, stored.factorRule)
        compare("--residual", given.residual, stored.residual)
        compare("--pooling", given.pooling, stored.pooling)
        compare("--positions", given.positions, stored.positions)
        return out
    }

    /// The model side of the task at this configuration's length.
    public func modelShape(_ task: any Task) -> ModelTaskShape {
        let input: ModelTaskShape.Input
        switch task.input {
        case .tokens(let v, let p): input = .tokens(vocabulary: v, paddingIndex: p)
        case .features(let f): input = .features(f)
        }
        let objective: ModelTaskShape.Objective
        switch task.objective {
        case .regression: objective = .regression
        case .binary: objective = .binary
        case .classification, .languageModel: objective = .classes
        }
        var grid: ImageGrid?, pair = false
        switch task.layout {
        case .sequence: break
        case .grid(let w, let h, let prefix, let suffix): grid = ImageGrid(width: w, height: h, prefix: prefix, suffix: suffix)
        case .pair: pair = true
        }
        return ModelTaskShape(input: input, objective: objective, length: length, outputs: task.objective.outputCount,
                              causal: task.isCausal, grid: grid, pair: pair)
    }
}
