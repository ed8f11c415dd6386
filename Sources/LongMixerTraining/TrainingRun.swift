import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

/// What `config.json` holds: the resolved run configuration, the model family's own configuration
/// (which rebuilds the model: `paramixer`, `encoder` or `languageModel`) and how the run was started.
public struct RunRecord: Encodable {
    public var command: [String]
    public var startedAt: String
    public var configuration: RunConfiguration
    public var paramixer: ParamixerConfiguration?
    public var encoder: EncoderConfiguration?
    public var languageModel: LanguageModelConfiguration?
    public var threads: Int
    public var parameterCount: Int
    /// The data, as the task describes them (corpus size and windows).
    public var data: String?
    // Read by `generate` and older tools.
    public var task: String
    public var model: String
}

/// One training run of any model on any task: data, model, optimiser, schedule, run directory and
/// trainer, built from a `RunConfiguration` in that order (the run directory only once everything
/// that can be refused has been checked).
public enum TrainingRun {
    /// Builds and runs the training; `reporter` sees progress, `announce` the data summary line.
    @discardableResult
    public static func run(_ c: RunConfiguration, command: [String] = CommandLine.arguments, output: URL?, overwrite: Bool,
                           reporter: TrainingReporter, announce: (String) -> Void = { _ in }) throws -> TrainingSummary {
        let task = try TaskRegistry.task(c.task)
        let entry = try ModelRegistry.entry(c.model)
        let memory = try MemoryEstimate(c)
        try memory.check()
        let trainSamples = c.training.steps.map { $0 * c.training.batchSize }
        let data = try task.makeData(c.data, trainSamples: trainSamples)
        let totalSteps = c.training.totalSteps(trainCount: data.train.count)
        // The default warm-up (10 % of an LM run) always fits the run; a given one is checked.
        let warmup = c.warmupSteps ?? (c.schedule == .constant || !task.isCausal ? 0 : min(max(1, totalSteps / 10), totalSteps - 1))
        guard warmup == 0 || warmup < totalSteps else {
            throw UserError(what: "--warmup-steps", value: String(warmup), why: "must be below the run's \(totalSteps) steps",
                            remedy: "lower --warmup-steps or train longer")
        }
        let schedule: (any LearningRateSchedule)?
        switch c.schedule {
        case .constant: schedule = nil
        case .cosine: schedule = WarmupCosineSchedule(peakLearningRate: c.learningRate, warmupSteps: warmup, totalSteps: totalSteps)
        case .inverseSqrt: schedule = WarmupInverseSqrtSchedule(peakLearningRate: c.learningRate, warmupSteps: max(warmup, 1))
        }

        var generator = RandomGenerator(seed: c.seed ^ 0x6D6F_6465_6C00_0000)   // "model": independent of the data stream
        let built = try ModelRegistry.build(entry, for: c.modelShape(task), taskName: task.name, options: c.modelOptions,
                                            generator: &generator)
        let model = built.model
        // The LM reference (fairseq) uses β = (0.9, 0.98); the classification references PyTorch's defaults.
        let betas: (Float, Float) = task.isCausal ? (0.9, 0.98) : (0.9, 0.999)
        let optimizer: any Optimizer
        switch c.optimizer {
        case .adam: optimizer = Adam(parameters: model.parameters(), learningRate: c.learningRate, beta1: betas.0, beta2: betas.1, weightDecay: c.weightDecay)
        case .adamw: optimizer = AdamW(parameters: model.parameters(), learningRate: c.learningRate, beta1: betas.0, beta2: betas.1, weightDecay: c.weightDecay)
        case .sgd: optimizer = SGD(parameters: model.parameters(), learningRate: c.learningRate, momentum: 0.9, weightDecay: c.weightDecay)
        }
        if c.headLearningRateScale != 1, let adam = optimizer as? Adam {
            adam.setLearningRateMultiplier(c.headLearningRateScale, for: built.headParameters)
        }

        let directoryURL = output ?? RunDirectory.defaultURL(task: task.name, model: entry.name)
        // The inputs a replaced run directory must not hold (a corpus inside it would be deleted).
        let inputs = [c.data.corpus].compactMap { $0 }.map { URL(fileURLWithPath: $0) }
        let runDirectory = try RunDirectory.prepare(directoryURL, overwrite: overwrite, inputs: inputs)
        if let summary = data.summary { announce(summary) }
        announce(String(format: "estimated peak memory %.2f GiB", memory.gibibytes))
        var record = RunRecord(command: command, startedAt: ISO8601DateFormatter().string(from: Date()), configuration: c,
                               threads: Parallel.threadCount, parameterCount: model.parameterCount, data: data.summary,
                               task: task.name, model: entry.name)
        switch built.configuration {
        case let p as ParamixerConfiguration: record.paramixer = p
        case let e as EncoderConfiguration: record.encoder = e
        case let l as LanguageModelConfiguration: record.languageModel = l
        default: break
        }
        let trainer = try Trainer(model: model, optimizer: optimizer, objective: task.objective,
                                  train: data.train, validation: data.validation, test: data.test,
                                  configuration: c.training, runDirectory: runDirectory, reporter: reporter, schedule: schedule)
        trainer.trainingOrder = data.trainingOrder
        trainer.weightsMetadata = ["task": task.name, "model": entry.name, "length": String(c.length),
                                   "configuration": String(decoding: try encodeSorted(built.configuration), as: UTF8.self)]
        return try runDirectory.finishing { try trainer.run(resolvedConfiguration: record) }
    }

    static func encodeSorted(_ value: any Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(value)
    }
}
