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
    /// Processes of a data-parallel run (nil: one); `threads` is per process and the configuration's
    /// batch size the global batch.
    public var processes: Int? = nil
    public var parameterCount: Int
    /// The data, as the task describes them (corpus size and windows).
    public var data: String?
    // Read by `generate` and older tools.
    public var task: String
    public var model: String
}

/// What `config.json` is read back as, to resume or evaluate a run.
public struct StoredRunRecord: Decodable {
    public var configuration: RunConfiguration
    public var threads: Int?

    /// Reads `config.json` of the run directory `url`; one usage error when it is not a run's.
    public static func read(_ url: URL, option: String) throws -> StoredRunRecord {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw UserError(what: option, value: url.path, why: "is not a folder", remedy: "name the run directory of a training run")
        }
        let configURL = url.appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: configURL.path) else {
            throw UserError(what: option, value: url.path, why: "has no config.json, so it is not a training run's directory",
                            remedy: "name the run directory of a training run")
        }
        let record: StoredRunRecord
        do { record = try JSONDecoder().decode(StoredRunRecord.self, from: data) } catch {
            throw UserError(what: option, value: configURL.path, why: "is not the configuration of a training run (\(jsonProblem(error)))",
                            remedy: "name the run directory of a `longmixer train` run")
        }
        do { try record.configuration.checkStored() } catch let e as UserError {
            let field = e.what.hasPrefix("--") ? String(e.what.dropFirst(2)) : e.what
            throw UserError(what: option, value: configURL.path,
                            why: "its \(field)\(e.value.map { " (\($0))" } ?? "") is invalid: \(e.why)",
                            remedy: "restore the file the run wrote, or start a new run")
        }
        return record
    }
}

/// One training run of any model on any task: data, model, optimiser, schedule, run directory and
/// trainer, built from a `RunConfiguration` in that order (the run directory only once everything
/// that can be refused has been checked).
public enum TrainingRun {
    /// The task, model and data a configuration builds (the same for training, resuming and evaluating).
    public struct Parts {
        public let task: any Task
        public let entry: ModelEntry
        public let data: TaskData
        public let built: BuiltModel
        public let memory: MemoryEstimate
        /// The model configuration as the weights metadata records it.
        public let weightsMetadata: [String: String]
    }

    /// Builds the task's data and the model (initial weights from the seed); refuses what cannot fit
    /// in memory (the memory of one of `processes` processes, each with its share of the batch).
    public static func build(_ c: RunConfiguration, processes: Int = 1) throws -> Parts {
        let task = try TaskRegistry.task(c.task)
        let entry = try ModelRegistry.entry(c.model)
        var perProcess = c
        perProcess.training.batchSize = (c.training.batchSize + processes - 1) / max(processes, 1)
        perProcess.training.microBatchSize = c.training.microBatchSize.map { min($0, perProcess.training.batchSize) }
        let memory = try MemoryEstimate(perProcess)
        try memory.check()
        let trainSamples = c.training.steps.map { $0 * c.training.batchSize }
        let data = try task.makeData(c.data, trainSamples: trainSamples)
        var generator = RandomGenerator(seed: c.seed ^ 0x6D6F_6465_6C00_0000)   // "model": independent of the data stream
        let built = try ModelRegistry.build(entry, for: c.modelShape(task), taskName: task.name, options: c.modelOptions,
                                            generator: &generator)
        let metadata = ["task": task.name, "model": entry.name, "length": String(c.length),
                        "configuration": String(decoding: try encodeSorted(built.configuration), as: UTF8.self)]
        return Parts(task: task, entry: entry, data: data, built: built, memory: memory, weightsMetadata: metadata)
    }

    /// The trainer of a configuration: optimiser and schedule over the built parts.
    static func makeTrainer(_ c: RunConfiguration, _ parts: Parts, runDirectory: RunDirectory?, reporter: TrainingReporter,
                            communicator: any Communicator) throws -> Trainer {
        let task = parts.task, model = parts.built.model
        let (schedule, warmup) = try makeSchedule(c, parts)
        // The LM reference (fairseq) uses β = (0.9, 0.98); the classification references PyTorch's defaults.
        let betas: (Float, Float) = task.isCausal ? (0.9, 0.98) : (0.9, 0.999)
        let optimizer: any Optimizer
        switch c.optimizer {
        case .adam: optimizer = Adam(parameters: model.parameters(), learningRate: c.learningRate, beta1: betas.0, beta2: betas.1, weightDecay: c.weightDecay)
        case .adamw: optimizer = AdamW(parameters: model.parameters(), learningRate: c.learningRate, beta1: betas.0, beta2: betas.1, weightDecay: c.weightDecay)
        case .sgd: optimizer = SGD(parameters: model.parameters(), learningRate: c.learningRate, momentum: 0.9, weightDecay: c.weightDecay)
        }
        if c.headLearningRateScale != 1, let adam = optimizer as? Adam {
            adam.setLearningRateMultiplier(c.headLearningRateScale, for: parts.built.headParameters)
        }
        let trainer = try Trainer(model: model, optimizer: optimizer, objective: task.objective,
                                  train: parts.data.train, validation: parts.data.validation, test: parts.data.test,
                                  configuration: c.training, runDirectory: runDirectory, reporter: reporter, schedule: schedule)
        trainer.weightsMetadata = parts.weightsMetadata
        trainer.trainingOrder = parts.data.trainingOrder
        trainer.stopSignal = { StopSignals.received }
        trainer.divergenceAdvice = divergenceAdvice(c, warmup: warmup)
        trainer.communicator = communicator
        return trainer
    }

    /// The learning-rate schedule and its warm-up (the default, 10 % of an LM run, always fits the
    /// run; a given one is checked against the run's length, known once the data are).
    static func makeSchedule(_ c: RunConfiguration, _ parts: Parts) throws -> (schedule: (any LearningRateSchedule)?, warmup: Int) {
        let totalSteps = c.training.totalSteps(trainCount: parts.data.train.count)
        let warmup = c.warmupSteps ?? (c.schedule == .constant || !parts.task.isCausal ? 0 : min(max(1, totalSteps / 10), totalSteps - 1))
        guard warmup == 0 || warmup < totalSteps else {
            // Name the preset only when the warm-up is the recipe's (shrunk as `--scale` shrinks it).
            let recipe = c.preset.flatMap { try? RunPreset.named($0) }?.settings.warmupSteps
            let fromPreset = recipe.map { w in c.scale.map { RunConfiguration.scaledWarmup(w, by: $0) } ?? w } == warmup
            throw RunConfiguration.warmupTooLong(warmup, totalSteps: totalSteps, preset: fromPreset ? c.preset : nil, scale: c.scale)
        }
        switch c.schedule {
        case .constant: return (nil, warmup)
        case .cosine: return (WarmupCosineSchedule(peakLearningRate: c.learningRate, warmupSteps: warmup, totalSteps: totalSteps), warmup)
        case .inverseSqrt: return (WarmupInverseSqrtSchedule(peakLearningRate: c.learningRate, warmupSteps: max(warmup, 1)), warmup)
        }
    }

    /// What to change after a divergence, from the options the run has.
    static func divergenceAdvice(_ c: RunConfiguration, warmup: Int) -> String {
        var advice = "lower --learning-rate (now \(c.learningRate))"
        if let clip = c.training.clipNorm { advice += " or --clip-norm (now \(clip))" } else { advice += " or clip gradients (--clip-norm 1)" }
        if warmup == 0 && c.schedule != .constant { advice += ", or add a warm-up (--warmup-steps)" }
        return advice
    }

    /// Runs `body` in the run directory: an interrupted or diverged run that kept a checkpoint is a
    /// run to resume, so a replaced previous run is let go as after a success.
    static func finishing<T>(_ runDirectory: RunDirectory, _ body: () throws -> T) throws -> T {
        try runDirectory.finishing(keepingOn: { error in
            if error is TrainingInterrupted { return true }
            if case .diverged(_, _, _, .some, _) = error as? TrainingError { return true }
            return false
        }) { try StopSignals.catching(body) }
    }

    /// Builds and runs the training; `reporter` sees progress, `announce` the data summary line.
    /// With several processes (`communicator`) every one calls this with the same configuration;
    /// rank 0 makes the run directory and alone reports and writes.
    @discardableResult
    public static func run(_ c: RunConfiguration, command: [String] = CommandLine.arguments, output: URL?, overwrite: Bool,
                           reporter: TrainingReporter, announce: (String) -> Void = { _ in },
                           communicator: any Communicator = SingleProcess()) throws -> TrainingSummary {
        let parts = try build(c, processes: communicator.size)
        let model = parts.built.model
        let directoryURL = output ?? RunDirectory.defaultURL(task: parts.task.name, model: parts.entry.name)
        // The inputs a replaced run directory must not hold (a corpus or data folder inside it would be deleted).
        let inputs = [c.data.corpus, c.data.dataDirectory].compactMap { $0 }.map { URL(fileURLWithPath: $0) }
        _ = try makeSchedule(c, parts)   // refused before the run directory exists
        let prepared = try communicator.onRoot { () throws -> (RunDirectory, RunDirectory.Lock) in
            let runDirectory = try RunDirectory.prepare(directoryURL, overwrite: overwrite, inputs: inputs)
            return (runDirectory, try runDirectory.lock())
        }
        defer { withExtendedLifetime(prepared) {} }
        let isRoot = communicator.isRoot
        if isRoot, let summary = parts.data.summary { announce(summary) }
        if isRoot { announce(String(format: "estimated peak memory %.2f GiB", parts.memory.gibibytes) + (communicator.size > 1 ? " per process" : "")) }
        var record = RunRecord(command: command, startedAt: ISO8601DateFormatter().string(from: Date()), configuration: c,
                               threads: Parallel.threadCount, processes: communicator.size > 1 ? communicator.size : nil,
                               parameterCount: model.parameterCount, data: parts.data.summary,
                               task: parts.task.name, model: parts.entry.name)
        switch parts.built.configuration {
        case let p as ParamixerConfiguration: record.paramixer = p
        case let e as EncoderConfiguration: record.encoder = e
        case let l as LanguageModelConfiguration: record.languageModel = l
        default: break
        }
        let trainer = try makeTrainer(c, parts, runDirectory: prepared?.0, reporter: isRoot ? reporter : SilentReporter(),
                                      communicator: communicator)
        guard let runDirectory = prepared?.0 else { return try StopSignals.catching { try trainer.run(resolvedConfiguration: record) } }
        return try withReport(runDirectory) {
            try finishing(runDirectory) { try trainer.run(resolvedConfiguration: record) }
        }
    }

    /// Runs `body`, then writes the run's report (also when it stopped with a checkpoint to resume from).
    static func withReport<T>(_ runDirectory: RunDirectory, _ body: () throws -> T) throws -> T {
        func report() {
            // The run itself is done: a report that cannot be written is a warning, not a failure.
            do { try RunReport.write(runDirectory.url) } catch {
                FileHandle.standardError.write(Data("warning: the report was not written: \(error)\n".utf8))
            }
        }
        do {
            let result = try body()
            report()
            return result
        } catch let e as TrainingInterrupted {
            report()
            throw e
        } catch let e as TrainingError {
            if case .diverged = e { report() }
            throw e
        }
    }

    /// Continues the run in `url` from its newest intact checkpoint (from the start when it has none
    /// yet), with the configuration it stored. `settings` are the options given with `--resume`: any
    /// that differs from the stored configuration is refused. Unless `threadsGiven`, the stored thread
    /// count is used (the same count gives the same numbers as an uninterrupted run).
    @discardableResult
    public static func resume(_ url: URL, settings: RunSettings = RunSettings(), threadsGiven: Bool = false,
                              reporter: TrainingReporter, announce: (String) -> Void = { _ in },
                              communicator: any Communicator = SingleProcess()) throws -> TrainingSummary {
        let url = url.standardizedFileURL
        // Rank 0 checks the run directory and reads its configuration; the others take it from there
        // (on other machines they need not see the directory).
        let checked = try communicator.onRoot { () throws -> (StoredRunRecord, RunDirectory, RunDirectory.Lock) in
            let stored = try StoredRunRecord.read(url, option: "--resume")
            let contradictions = stored.configuration.contradictions(with: settings)
            guard contradictions.isEmpty else {
                throw UserError(what: "--resume", value: url.path,
                                why: "\(contradictions.joined(separator: ", ")) contradict\(contradictions.count == 1 ? "s" : "") the stored configuration",
                                remedy: "drop \(contradictions.count == 1 ? "it" : "them") (a resumed run goes on as it was started), or start a new run")
            }
            guard FileManager.default.fileExists(atPath: url.appendingPathComponent(RunDirectory.markerName).path) else {
                throw UserError(what: "--resume", value: url.path, why: "has no \(RunDirectory.markerName) marker, so it is not a run directory this version wrote",
                                remedy: "start a new run")
            }
            let summaryURL = url.appendingPathComponent("summary.json")
            guard !FileManager.default.fileExists(atPath: summaryURL.path) else {
                throw UserError(what: "--resume", value: url.path, why: "the run is complete (it has summary.json)",
                                remedy: "evaluate it with `longmixer evaluate \(url.path)`, or start a new run")
            }
            let runDirectory = RunDirectory(url: url)
            return (stored, runDirectory, try runDirectory.lock())
        }
        defer { withExtendedLifetime(checked) {} }
        let stored = try SharedRunRecord.broadcast(checked?.0, communicator)
        let isRoot = communicator.isRoot
        if !threadsGiven, let threads = stored.threads, let valid = try? RuntimeOptions.validatedThreadCount(threads, what: "threads") {
            Parallel.setThreadCount(valid)
        }
        if isRoot, let threads = stored.threads, threads != Parallel.threadCount {
            announce("note: resuming with \(Parallel.threadCount) threads; the run used \(threads), so its numbers will differ from a run that never stopped")
        }
        let parts = try build(stored.configuration, processes: communicator.size)
        if isRoot, let summary = parts.data.summary { announce(summary) }
        let trainer = try makeTrainer(stored.configuration, parts, runDirectory: checked?.1, reporter: isRoot ? reporter : SilentReporter(),
                                      communicator: communicator)
        guard let runDirectory = checked?.1 else { return try StopSignals.catching { try trainer.run(resume: true) } }
        return try withReport(runDirectory) { try finishing(runDirectory) { try trainer.run(resume: true) } }
    }

    /// The stored configuration as rank 0 passes it to the other ranks of a resumed run.
    struct SharedRunRecord: Codable {
        var configuration: RunConfiguration
        var threads: Int?

        /// Rank 0's `record` (nil on the other ranks) on every rank.
        static func broadcast(_ record: StoredRunRecord?, _ communicator: any Communicator) throws -> SharedRunRecord {
            let bytes = try communicator.broadcast(record.map { try JSONEncoder().encode(SharedRunRecord(configuration: $0.configuration, threads: $0.threads)) } ?? Data())
            return try JSONDecoder().decode(SharedRunRecord.self, from: bytes)
        }
    }

    static func encodeSorted(_ value: any Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(value)
    }
}
