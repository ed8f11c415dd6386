import Dispatch
import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

/// Errors that stop a training run, one line each.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case invalidConfiguration(String)
    case shapeMismatch(String)
    /// A non-finite loss or gradient norm at `step` (counted from 1), with the last good checkpoint
    /// (nil: none could be kept) and advice that fits the configuration.
    case diverged(step: Int, totalSteps: Int, what: String, checkpoint: String?, advice: String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let message): return "training configuration: \(message)"
        case .shapeMismatch(let message): return "training: \(message)"
        case .diverged(let step, let total, let what, let checkpoint, let advice):
            return "training diverged: \(what) at step \(step) of \(total); "
                + (checkpoint.map { "the last good checkpoint is kept in \($0)" } ?? "no checkpoint was kept")
                + "; \(advice)"
        }
    }
}

/// A run stopped by SIGINT or SIGTERM after writing a checkpoint: not a failure, the run goes on
/// with `longmixer train --resume`.
public struct TrainingInterrupted: Error, CustomStringConvertible {
    public let signal: Int32
    public let step: Int
    public let totalSteps: Int
    public let checkpoint: URL?
    public let runDirectory: URL?

    public var signalName: String { signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)" }

    public var description: String {
        "stopped by \(signalName) at step \(step) of \(totalSteps)"
            + (checkpoint.map { "; checkpoint \($0.path)" } ?? "")
            + (runDirectory.map { "; continue with: longmixer train --resume \($0.path)" } ?? "")
    }
}

/// How long and how to train (the optimizer itself is built by the caller).
public struct TrainingConfiguration: Codable, Equatable, Sendable {
    /// Sequences per optimizer step.
    public var batchSize: Int
    /// Sequences per evaluation batch (nil: `batchSize`).
    public var evaluationBatchSize: Int?
    /// Sequences per forward/backward pass when a step's batch is accumulated in pieces (nil: the
    /// whole batch at once). Gradients, loss and metrics equal the whole batch's (each piece's loss
    /// is weighted by its share of the batch); only activation memory shrinks.
    public var microBatchSize: Int?
    /// Passes over the training split (used when `steps` is nil).
    public var epochs: Int
    /// Total optimizer steps; overrides `epochs` (the training split is cycled as needed).
    public var steps: Int?
    /// Global gradient-norm clipping threshold (nil: no clipping).
    public var clipNorm: Float?
    /// Steps between train-metric records and progress lines.
    public var logInterval: Int
    /// Steps between validation evaluations (nil: at the end of every epoch, as the reference).
    public var evaluationInterval: Int?
    /// Stop as soon as validation accuracy reaches this fraction (nil: never stop early).
    public var targetAccuracy: Double?
    /// Steps between checkpoints of a run with a run directory (nil: at the end of every epoch);
    /// there is always one at the end and on SIGINT/SIGTERM.
    public var checkpointInterval: Int?
    /// Sequences the validations during training score, spread evenly over the split (nil: all);
    /// the final validation scores all of them.
    public var validationSample: Int?

    public init(batchSize: Int = 40, evaluationBatchSize: Int? = nil, microBatchSize: Int? = nil, epochs: Int = 1, steps: Int? = nil,
                clipNorm: Float? = 1, logInterval: Int = 50, evaluationInterval: Int? = nil, targetAccuracy: Double? = nil,
                checkpointInterval: Int? = nil, validationSample: Int? = nil) {
        self.checkpointInterval = checkpointInterval
        self.validationSample = validationSample
        self.batchSize = batchSize
        self.evaluationBatchSize = evaluationBatchSize
        self.microBatchSize = microBatchSize
        self.epochs = epochs
        self.steps = steps
        self.clipNorm = clipNorm
        self.logInterval = logInterval
        self.evaluationInterval = evaluationInterval
        self.targetAccuracy = targetAccuracy
    }

    public func validate() throws {
        func fail(_ m: String) -> TrainingError { .invalidConfiguration(m) }
        if batchSize < 1 { throw fail("batch size must be ≥ 1, got \(batchSize)") }
        if let e = evaluationBatchSize, e < 1 { throw fail("evaluation batch size must be ≥ 1, got \(e)") }
        if let m = microBatchSize, !(1...batchSize).contains(m) {
            throw fail("micro-batch size must be in 1...\(batchSize) (the batch size), got \(m)")
        }
        if steps == nil && epochs < 1 { throw fail("epochs must be ≥ 1, got \(epochs)") }
        if let s = steps, s < 1 { throw fail("steps must be ≥ 1, got \(s)") }
        if let c = clipNorm, !(c.isFinite && c > 0) { throw fail("clip norm must be finite and > 0, got \(c)") }
        if logInterval < 1 { throw fail("log interval must be ≥ 1, got \(logInterval)") }
        if let e = evaluationInterval, e < 1 { throw fail("evaluation interval must be ≥ 1 step, got \(e)") }
        if let t = targetAccuracy, !(t > 0 && t <= 1) { throw fail("target accuracy must be in (0, 1], got \(t)") }
        if let c = checkpointInterval, c < 1 { throw fail("checkpoint interval must be ≥ 1 step, got \(c)") }
        if let v = validationSample, v < 1 { throw fail("validation sample must be ≥ 1 sequence, got \(v)") }
    }

    /// Optimizer steps for a training split of `trainCount` samples.
    public func totalSteps(trainCount: Int) -> Int {
        steps ?? epochs * ((trainCount + batchSize - 1) / batchSize)
    }
}

/// What `summary.json` holds.
public struct TrainingSummary: Codable, Equatable, Sendable {
    public var steps: Int
    /// Completed passes over the training split, fractional.
    public var epochs: Double
    public var samplesSeen: Int
    /// Wall-clock seconds of the whole run (training, evaluations, writing).
    public var wallClockSeconds: Double
    /// Seconds spent in training steps only.
    public var trainingSeconds: Double
    public var trainSamplesPerSecond: Double
    public var stoppedEarly: Bool
    public var stopReason: String
    public var parameterCount: Int
    /// Running training metrics of the last logging window.
    public var lastTrain: EvaluationResult?
    /// The final validation (every sequence of the split) of the last weights.
    public var validation: EvaluationResult
    /// The test split scored with the best checkpoint's weights (by validation: highest accuracy, or
    /// lowest loss for a language model); `testLast` with the last weights.
    public var test: EvaluationResult
    public var testLast: EvaluationResult? = nil
    /// The step of the best checkpoint and its validation.
    public var bestStep: Int? = nil
    public var bestValidation: EvaluationResult? = nil
    public var bestValidationAccuracy: Double
    public var lossName: String
    public var accuracyDefinition: String
    /// Peak resident memory of the process so far, in bytes (nil where /proc is unavailable).
    public var peakResidentBytes: Int? = nil
}

/// The training loop: mini-batch steps over a streamed training split with one optimizer,
/// optional global-norm clipping, periodic validation (eval mode, no graph), optional early stop
/// on a target validation accuracy, a final validation, and the test split scored with the best
/// and the last weights. With a run directory: `config.json`, `metrics.jsonl`, checkpoints (periodic,
/// best, at the end, and on SIGINT/SIGTERM when `stopSignal` reports one), `model.safetensors` (the
/// last weights) and `summary.json`; `run(resume: true)` continues from the newest intact checkpoint.
///
/// Batches are taken in order (batch k of the epoch is samples k·B ..< (k+1)·B) by default: the
/// synthetic samples are i.i.d. by construction, as in the reference's `shuffle=False` loader. With
/// `trainingOrder` `.shuffled`, batch k takes positions k·B ..< (k+1)·B of the epoch's seeded
/// permutation instead. A run is a pure function of the model's initial weights, the data seeds and
/// the configuration (and the
/// thread count), so a resumed run ends with the weights of one that never stopped.
public final class Trainer {
    public let model: any SequenceModel
    public let optimizer: any Optimizer
    public let objective: TaskObjective
    public let train: any BatchSource
    public let validation: any BatchSource
    public let test: any BatchSource
    public let configuration: TrainingConfiguration
    public let runDirectory: RunDirectory?
    public let reporter: TrainingReporter
    /// Sets the optimizer's learning rate before every step (nil: leave it as it is).
    public let schedule: (any LearningRateSchedule)?
    /// Key–value pairs stored in the safetensors header of the weights (final and checkpoints).
    public var weightsMetadata: [String: String] = [:]
    /// The stop signal received so far (0: none); polled between steps and evaluation batches.
    public var stopSignal: () -> Int32 = { 0 }
    /// What a diverged run's message advises (the caller knows the options that were given).
    public var divergenceAdvice = "lower the learning rate or enable gradient clipping"
    /// The order of the training samples in each epoch (the task's `TaskData.trainingOrder`).
    public var trainingOrder: TrainingOrder = .sequential
    /// The seeded permutation of the current epoch (shuffled order only; a pure function of the step,
    /// so a resumed run takes the same samples).
    private var epochOrder: EpochOrder?

    public init(model: any SequenceModel, optimizer: any Optimizer, objective: TaskObjective,
                train: any BatchSource, validation: any BatchSource, test: any BatchSource,
                configuration: TrainingConfiguration, runDirectory: RunDirectory? = nil,
                reporter: TrainingReporter = SilentReporter(), schedule: (any LearningRateSchedule)? = nil) throws {
        try configuration.validate()
        guard train.length == validation.length && train.length == test.length else {
            throw TrainingError.invalidConfiguration("split lengths differ: train \(train.length), validation \(validation.length), test \(test.length)")
        }
        self.model = model
        self.optimizer = optimizer
        self.objective = objective
        self.train = train
        self.validation = validation
        self.test = test
        self.configuration = configuration
        self.runDirectory = runDirectory
        self.reporter = reporter
        self.schedule = schedule
    }

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    var isLanguageModel: Bool {
        if case .languageModel = objective { return true } else { return false }
    }

    /// Whether validation `a` beats `b`: lower loss for a language model; else higher accuracy, then lower loss.
    func isBetter(_ a: EvaluationResult, than b: EvaluationResult?) -> Bool {
        guard let b else { return true }
        if isLanguageModel { return a.loss < b.loss }
        return a.accuracy > b.accuracy || (a.accuracy == b.accuracy && a.loss < b.loss)
    }

    /// Runs the whole training (or, with `resume`, the rest of it from the newest intact checkpoint
    /// in the run directory). `resolvedConfiguration` is written as `config.json` before the first step.
    @discardableResult
    public func run(resolvedConfiguration: (any Encodable)? = nil, resume: Bool = false) throws -> TrainingSummary {
        let c = configuration
        let parameters = model.parameters()
        let batchesPerEpoch = train.batchCount(size: c.batchSize)
        let totalSteps = c.totalSteps(trainCount: train.count)
        let evaluationBatch = c.evaluationBatchSize ?? c.batchSize
        let store = runDirectory.map { CheckpointStore(runDirectory: $0.url) }
        let task = weightsMetadata["task"], modelName = weightsMetadata["model"]

        var s = TrainingProgress()
        var bestWeights: [String: NamedTensor]? = nil
        var lastCheckpoint: (step: Int, url: URL)? = nil
        var log: JSONLinesWriter? = nil
        if resume {
            guard let dir = runDirectory, let store else { throw TrainingError.invalidConfiguration("resuming needs a run directory") }
            let restored = try restore(from: store)
            if let (last, best) = restored {
                s = last.record.progress
                bestWeights = best?.weights
                lastCheckpoint = (last.record.step, last.url)
                store.removeCheckpoints(after: last.record.step)
            } else {
                store.removeCheckpoints(after: 0)
            }
            let step = restored?.last.record.step ?? 0
            let keeping = restored.map { $0.last.record.metricsBytes ?? Self.metricsBytes(dir.metricsURL, through: step) } ?? 0
            log = try JSONLinesWriter(url: dir.metricsURL, keeping: keeping)
            reporter.report(.resumed(step: s.step, checkpoint: restored?.last.url))
        } else if let dir = runDirectory {
            if let resolvedConfiguration { try dir.writeJSON(resolvedConfiguration, to: "config.json") }
            log = try JSONLinesWriter(url: dir.metricsURL)
        }
        let start = Self.now() - s.elapsedSeconds
        func elapsed() -> Double { Self.now() - start }
        reporter.report(.started(totalSteps: totalSteps, parameterCount: model.parameterCount, trainSamples: train.count,
                                 runDirectory: runDirectory?.url))

        func epoch(ofStep step: Int) -> Int { (max(step, 1) - 1) / batchesPerEpoch }

        /// Writes the periodic checkpoint of the current step (once per step).
        @discardableResult
        func checkpointLast() throws -> URL? {
            guard let store else { return nil }
            if let last = lastCheckpoint, last.step == s.step { return last.url }
            s.elapsedSeconds = elapsed()
            var record = CheckpointRecord(kind: .last, step: s.step, task: task, model: modelName, progress: s)
            record.randomStreams = model.randomStreamStates()
            record.metricsBytes = log?.size ?? 0
            let url = try store.write(record, model: model, weightsMetadata: weightsMetadata, optimizer: optimizer)
            lastCheckpoint = (s.step, url)
            reporter.report(.checkpoint(.last, step: s.step, url: url))
            return url
        }

        func interrupted(_ signal: Int32) throws -> TrainingInterrupted {
            TrainingInterrupted(signal: signal, step: s.step, totalSteps: totalSteps, checkpoint: try checkpointLast(),
                                runDirectory: runDirectory?.url)
        }

        /// Reports evaluation progress and stops it when a stop signal arrived.
        func evaluationProgress(_ split: MetricsRecord.Kind) -> (Int, Int) throws -> Void {
            { [self] done, total in
                let signal = stopSignal()
                if signal != 0 { throw try interrupted(signal) }
                reporter.report(.evaluating(split: split, done: done, total: total))
            }
        }

        let validationDuringTraining = c.validationSample.map { SampledBatches(validation, count: $0) } ?? SampledBatches(validation, count: validation.count)

        /// Scores `source` as a validation record at the current step.
        func validate(_ source: any BatchSource) throws -> EvaluationResult {
            let r = try evaluate(model, on: source, objective: objective, batchSize: evaluationBatch, progress: evaluationProgress(.validation))
            var record = MetricsRecord(step: s.step, epoch: epoch(ofStep: s.step), split: .validation, loss: r.loss, accuracy: r.accuracy,
                                       elapsedSeconds: elapsed(), samplesSeen: s.samplesSeen, evaluatedSamples: r.count)
                .withLanguageModelMetrics(objective)
            record.rocAUC = r.rocAUC
            try log?.append(record)
            reporter.report(.evaluation(record))
            return r
        }

        /// A validation during training: best checkpoint, early stop.
        func validateDuringTraining() throws {
            let r = try validate(validationDuringTraining)
            s.lastValidationStep = s.step
            s.lastValidation = r
            s.validationPending = false
            if isBetter(r, than: s.best) { try keepBest(r) }
            if let target = c.targetAccuracy, r.accuracy >= target {
                s.stoppedEarly = true
                s.stopReason = String(format: "validation accuracy %.4f reached the target %.4f at step %d", r.accuracy, target, s.step)
                reporter.report(.earlyStop(step: s.step, accuracy: r.accuracy, target: target))
            }
        }

        func keepBest(_ r: EvaluationResult) throws {
            s.best = r
            s.bestStep = s.step
            bestWeights = model.stateDictionary()
            if let store {
                let record = CheckpointRecord(kind: .best, step: s.step, task: task, model: modelName, progress: s)
                let url = try store.write(record, model: model, weightsMetadata: weightsMetadata, optimizer: nil)
                reporter.report(.checkpoint(.best, step: s.step, url: url))
            }
        }

        func checkpointDue() -> Bool {
            s.step > 0 && (s.step >= totalSteps || s.stoppedEarly || s.step % (c.checkpointInterval ?? batchesPerEpoch) == 0)
        }

        model.train()
        do {
            while true {
                if s.validationPending { try validateDuringTraining() }
                if checkpointDue() { try checkpointLast() }
                let signal = stopSignal()
                if signal != 0 { throw try interrupted(signal) }
                if s.step >= totalSteps || s.stoppedEarly { break }
                try trainStep(&s, parameters: parameters, batchesPerEpoch: batchesPerEpoch, totalSteps: totalSteps,
                              log: log, elapsed: elapsed, lastCheckpoint: lastCheckpoint?.url, store: store)
                if let interval = c.evaluationInterval { s.validationPending = s.step % interval == 0 } else {
                    s.validationPending = s.step % batchesPerEpoch == 0
                }
                s.validationPending = s.validationPending && s.step < totalSteps
            }
        } catch let divergence as Divergence {
            // The weights are still those after the last completed step: keep them when they are finite.
            var kept = lastCheckpoint?.url
            if s.step > 0 && parameters.allSatisfy({ $0.value.scalars.allSatisfy(\.isFinite) }) { kept = try checkpointLast() ?? kept }
            throw TrainingError.diverged(step: s.step + 1, totalSteps: totalSteps, what: divergence.what,
                                         checkpoint: kept?.path, advice: divergenceAdvice)
        }

        // Final validation of the last weights on every sequence (and on the training-time sample, so
        // the best checkpoint is chosen among comparable scores), then test with the best and the last.
        let stopReason = s.stopReason ?? (c.steps != nil ? "completed \(totalSteps) steps" : "completed \(c.epochs) epochs")
        if s.lastValidationStep != s.step && validationDuringTraining.isSample {
            let r = try validate(validationDuringTraining)
            if isBetter(r, than: s.best) { try keepBest(r) }
        }
        let finalValidation: EvaluationResult
        if let last = s.lastValidation, s.lastValidationStep == s.step, !validationDuringTraining.isSample {
            finalValidation = last
        } else {
            finalValidation = try validate(validation)
            if !validationDuringTraining.isSample && isBetter(finalValidation, than: s.best) { try keepBest(finalValidation) }
        }
        let lastWeights = model.stateDictionary()
        if let dir = runDirectory {
            var metadata = weightsMetadata
            metadata["steps"] = String(s.step)
            metadata["samples_seen"] = String(s.samplesSeen)
            do { try model.saveWeights(to: dir.weightsURL, metadata: metadata) } catch {
                throw RunDirectoryError.notWritable(dir.weightsURL.path, "\(error)")
            }
        }
        func scoreTest(_ kind: CheckpointKind, step: Int) throws -> EvaluationResult {
            let r = try evaluate(model, on: test, objective: objective, batchSize: evaluationBatch, progress: evaluationProgress(.test))
            var record = MetricsRecord(step: step, epoch: epoch(ofStep: step), split: .test, loss: r.loss, accuracy: r.accuracy,
                                       elapsedSeconds: elapsed(), samplesSeen: s.samplesSeen, evaluatedSamples: r.count)
                .withLanguageModelMetrics(objective)
            record.rocAUC = r.rocAUC
            record.checkpoint = kind
            try log?.append(record)
            reporter.report(.evaluation(record))
            return r
        }
        let testLast = try scoreTest(.last, step: s.step)
        var testBest = testLast
        if let bestStep = s.bestStep, bestStep != s.step, let bestWeights {
            try model.loadStateDictionary(bestWeights)
            defer { try? model.loadStateDictionary(lastWeights) }
            testBest = try scoreTest(.best, step: bestStep)
        } else if let log {
            // Best and last are the same weights: the record says so once more, labelled.
            var record = MetricsRecord(step: s.step, epoch: epoch(ofStep: s.step), split: .test, loss: testLast.loss, accuracy: testLast.accuracy,
                                       elapsedSeconds: elapsed(), samplesSeen: s.samplesSeen, evaluatedSamples: testLast.count)
                .withLanguageModelMetrics(objective)
            record.rocAUC = testLast.rocAUC
            record.checkpoint = .best
            try log.append(record)
        }

        let summary = TrainingSummary(
            steps: s.step, epochs: Double(s.samplesSeen) / Double(train.count), samplesSeen: s.samplesSeen,
            wallClockSeconds: elapsed(), trainingSeconds: s.trainingSeconds,
            trainSamplesPerSecond: Double(s.samplesSeen) / max(s.trainingSeconds, 1e-9),
            stoppedEarly: s.stoppedEarly, stopReason: stopReason, parameterCount: model.parameterCount,
            lastTrain: s.lastTrain, validation: finalValidation, test: testBest, testLast: testLast,
            bestStep: s.bestStep ?? s.step, bestValidation: s.best ?? finalValidation,
            bestValidationAccuracy: max(s.best?.accuracy ?? -.infinity, finalValidation.accuracy),
            lossName: objective.lossName, accuracyDefinition: objective.accuracyDescription,
            peakResidentBytes: ProcessMemory.peakResidentBytes())
        try runDirectory?.writeJSON(summary, to: "summary.json")
        reporter.report(.finished(summary, runDirectory: runDirectory?.url))
        return summary
    }

    /// Puts the newest intact periodic checkpoint (and the best one) into the model and optimizer;
    /// nil when the run has none yet. Damaged ones are reported and passed over; when every one is
    /// damaged, the error names the newest.
    func restore(from store: CheckpointStore) throws -> (last: LoadedCheckpoint, best: LoadedCheckpoint?)? {
        let task = weightsMetadata["task"], modelName = weightsMetadata["model"]
        func fits(_ c: LoadedCheckpoint) throws {
            if c.record.task != task || c.record.model != modelName {
                throw UserError(what: "checkpoint", value: c.url.path,
                                why: "holds a \(c.record.model ?? "?") model for the \(c.record.task ?? "?") task, not \(modelName ?? "?") for \(task ?? "?")",
                                remedy: "resume the run directory it came from")
            }
            // Same names and shapes can still be another model (positions, decay, activation): compare the configurations.
            if let stored = c.weightsMetadata[StoredConfiguration.metadataKey], let used = weightsMetadata[StoredConfiguration.metadataKey],
               stored != used {
                throw UserError(what: "checkpoint", value: c.url.path, why: "was written for another model configuration than config.json describes",
                                remedy: "resume the run directory it came from")
            }
        }
        let (last, refused) = store.newestIntact(.last) { c in
            try fits(c)
            try model.loadStateDictionary(c.weights)
            try optimizer.loadStateDictionary(c.optimizer ?? [:])
            try model.restoreRandomStreams(c.record.randomStreams)
        }
        for (url, error) in refused { reporter.report(.checkpointRefused(url: url, reason: "\(error)")) }
        guard let last else {
            if let (url, error) = refused.first {
                if let e = error as? UserError, e.what == "checkpoint" { throw e }
                throw UserError(what: "checkpoint", value: url.path, why: "does not fit this run (\(error))", remedy: CheckpointStore.damagedRemedy)
            }
            return nil
        }
        // The best checkpoint at or before the resumed step (a later one is written again).
        let (best, refusedBest) = store.newestIntact(.best) { c in
            try fits(c)
            guard c.record.step <= last.record.step else { throw CheckpointDamage("written after the resumed step") }
            guard c.record.step == last.record.progress.bestStep else {
                throw CheckpointDamage("step \(c.record.step) is not the best step \(last.record.progress.bestStep.map(String.init) ?? "none") the run recorded")
            }
        }
        for (url, error) in refusedBest where !(error is CheckpointDamage) {
            reporter.report(.checkpointRefused(url: url, reason: "\(error)"))
        }
        if last.record.progress.bestStep != nil && best == nil {
            throw UserError(what: "checkpoint", value: store.directory.path,
                            why: "the best checkpoint of step \(last.record.progress.bestStep!) is missing or damaged",
                            remedy: CheckpointStore.damagedRemedy)
        }
        return (last, best)
    }

    /// The length of the lines of `metrics.jsonl` up to the train and validation records of `step`
    /// (where a checkpoint of that step left the log, when its clock.json is lost).
    static func metricsBytes(_ url: URL, through step: Int) -> UInt64 {
        guard let data = FileManager.default.contents(atPath: url.path) else { return 0 }
        var kept: UInt64 = 0
        for line in data.split(separator: 0x0A, omittingEmptySubsequences: false).dropLast() {
            guard let r = try? JSONDecoder().decode(MetricsRecord.self, from: Data(line)), r.step <= step, r.split != .test else { break }
            kept += UInt64(line.count + 1)
        }
        return kept
    }

    /// A non-finite loss or gradient norm (turned into `TrainingError.diverged` by `run`).
    struct Divergence: Error { let what: String }

    /// One optimizer step, its bookkeeping and (when due) its train record.
    private func trainStep(_ s: inout TrainingProgress, parameters: [Parameter], batchesPerEpoch: Int, totalSteps: Int,
                           log: JSONLinesWriter?, elapsed: () -> Double, lastCheckpoint: URL?, store: CheckpointStore?) throws {
        let c = configuration
        let batchIndex = s.step % batchesPerEpoch
        let stepStart = Self.now()
        // The step's samples, in pieces of at most `microBatchSize` (one piece by default).
        let first = batchIndex * c.batchSize, end = min(first + c.batchSize, train.count)
        let pieceSize = c.microBatchSize ?? c.batchSize
        if case .shuffled(let seed) = trainingOrder, epochOrder == nil { epochOrder = EpochOrder(count: train.count, seed: seed) }
        let epochIndex = s.step / batchesPerEpoch
        let pieces = stride(from: first, to: end, by: pieceSize).map { start -> Batch in
            let positions = start..<min(start + pieceSize, end)
            guard epochOrder != nil else { return train.batch(indices: positions) }
            return train.batch(samples: epochOrder!.samples(epoch: epochIndex, positions: positions))
        }
        let pieceWeights = pieces.map { objective.weight($0.targets, batchSize: $0.size) }
        let batchWeight = pieceWeights.reduce(0, +)
        let batchSize = end - first
        if let schedule { optimizer.learningRate = schedule.learningRate(at: s.step) }
        optimizer.zeroGradients()
        var lossValue: Float = 0, correct = 0
        for (piece, pieceWeight) in zip(pieces, pieceWeights) where pieces.count == 1 || pieceWeight > 0 {
            // Loss of the whole batch = Σ over pieces of (piece weight / batch weight) · piece loss.
            let outputs = model(piece.input)
            var loss = try objective.loss(outputs, piece.targets)
            if pieces.count > 1 { loss = loss * (Float(pieceWeight) / Float(max(batchWeight, 1))) }
            let pieceLoss = loss.value.scalar
            do { try loss.backward() } catch AutodiffError.nonFiniteLoss(let v) {
                throw Divergence(what: "the loss is \(v)")
            }
            lossValue += pieceLoss
            correct += objective.correctCount(outputs.value, piece.targets)
        }
        // Measured without clipping too, so a non-finite gradient stops the run before it reaches the weights.
        let norm = clipGradientNorm(parameters, maxNorm: c.clipNorm ?? .greatestFiniteMagnitude)
        guard norm.isFinite else { throw Divergence(what: "the gradient norm is \(norm)") }
        optimizer.step()
        s.step += 1
        s.samplesSeen += batchSize
        let seconds = Self.now() - stepStart
        s.trainingSeconds += seconds
        s.windowSeconds += seconds
        s.windowLoss += Double(lossValue) * Double(batchWeight)
        s.windowCorrect += correct
        s.windowSamples += batchSize
        s.windowWeight += batchWeight
        s.windowSteps += 1
        if c.clipNorm != nil { s.windowNorm += Double(norm) }
        let epoch = (s.step - 1) / batchesPerEpoch
        let eta = Double(totalSteps - s.step) * s.trainingSeconds / Double(max(s.step, 1))
        let rate = Double(isLanguageModel ? s.windowWeight : s.windowSamples) / max(s.windowSeconds, 1e-9)
        reporter.report(.step(LiveStatus(step: s.step, totalSteps: totalSteps, epoch: epoch,
                                         loss: s.windowLoss / Double(max(s.windowWeight, 1)),
                                         accuracy: Double(s.windowCorrect) / Double(max(s.windowWeight, 1)),
                                         rate: rate, rateUnit: isLanguageModel ? "tok/s" : "seq/s",
                                         elapsedSeconds: elapsed(), etaSeconds: eta)))

        if s.step % c.logInterval == 0 || s.step == totalSteps {
            let result = EvaluationResult(loss: s.windowLoss / Double(max(s.windowWeight, 1)), accuracy: Double(s.windowCorrect) / Double(max(s.windowWeight, 1)),
                                          count: s.windowSamples, tokens: isLanguageModel ? s.windowWeight : nil)
            s.lastTrain = result
            let record = MetricsRecord(step: s.step, epoch: epoch, split: .train, loss: result.loss, accuracy: result.accuracy,
                                       elapsedSeconds: elapsed(), samplesSeen: s.samplesSeen,
                                       learningRate: Double(String(optimizer.learningRate)) ?? Double(optimizer.learningRate),   // 1e-3, not 0.0010000000475
                                       samplesPerSecond: Double(s.windowSamples) / max(s.windowSeconds, 1e-9),
                                       gradientNorm: c.clipNorm == nil ? nil : s.windowNorm / Double(s.windowSteps))
                .withLanguageModelMetrics(objective)
            try log?.append(record)
            reporter.report(.progress(record, totalSteps: totalSteps, etaSeconds: eta))
            s.windowLoss = 0; s.windowCorrect = 0; s.windowSamples = 0; s.windowWeight = 0; s.windowNorm = 0; s.windowSteps = 0; s.windowSeconds = 0
        }
    }
}

/// `count` sequences of `base` spread evenly over it (all of them when `count` ≥ its size): the
/// bounded validation sample of a run whose validation split is large (a language model's windows).
struct SampledBatches: BatchSource {
    let base: any BatchSource
    let count: Int
    var length: Int { base.length }
    var isSample: Bool { count < base.count }

    init(_ base: any BatchSource, count: Int) {
        self.base = base
        self.count = min(count, base.count)
    }

    func batch(indices: Range<Int>) -> Batch {
        guard isSample else { return base.batch(indices: indices) }
        return Batch.concatenating(indices.map { i in
            let j = i * base.count / count
            return base.batch(indices: j..<(j + 1))
        })
    }
}

extension Batch {
    /// The sequences of `batches` as one batch, in order (all of the same input and target kind).
    static func concatenating(_ batches: [Batch]) -> Batch {
        func rows(_ shapes: [[Int]]) -> [Int] { [shapes.reduce(0) { $0 + $1[0] }] + shapes[0].dropFirst() }
        func floats(_ ts: [Tensor?]) -> Tensor {
            let ts = ts.compactMap { $0 }
            check(ts.count == batches.count, "Batch.concatenating: batches of different kinds")
            return Tensor(shape: rows(ts.map(\.shape)), scalars: ts.flatMap(\.scalars))
        }
        func ints(_ ts: [IntTensor?]) -> IntTensor {
            let ts = ts.compactMap { $0 }
            check(ts.count == batches.count, "Batch.concatenating: batches of different kinds")
            return IntTensor(shape: rows(ts.map(\.shape)), scalars: ts.flatMap(\.scalars))
        }
        let input: SequenceInput
        switch batches[0].input {
        case .tokens: input = .tokens(ints(batches.map { if case .tokens(let t) = $0.input { t } else { nil } }))
        case .features: input = .features(floats(batches.map { if case .features(let t) = $0.input { t } else { nil } }))
        }
        let targets: Targets
        switch batches[0].targets {
        case .classes: targets = .classes(ints(batches.map { if case .classes(let t) = $0.targets { t } else { nil } }))
        case .tokens: targets = .tokens(ints(batches.map { if case .tokens(let t) = $0.targets { t } else { nil } }))
        case .values: targets = .values(floats(batches.map { if case .values(let t) = $0.targets { t } else { nil } }))
        }
        return Batch(input: input, targets: targets)
    }
}
