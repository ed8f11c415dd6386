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
    /// A data-parallel run: its processes, and the seconds rank 0 spent in the gradient all-reduce
    /// since it started or resumed (waiting for slower ranks included). nil for one process.
    public var processes: Int? = nil
    public var allReduceSeconds: Double? = nil
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
/// permutation instead. Step k + 1's batch is laid out on a background thread while step k trains
/// (`prefetchesBatches`, `BatchPrefetcher`); it is a pure function of the step either way. A run is
/// a pure function of the model's initial weights, the data seeds and the configuration (and the
/// thread count), so a resumed run ends with the weights of one that never stopped.
///
/// Data parallel (`communicator` of K processes): `batchSize` is the global batch; rank r takes the
/// r-th of K contiguous slices of each batch's positions, so the sample order does not depend on K.
/// Each rank's loss is weighted by its share of the global batch and the gradients are summed over
/// the ranks, which gives the gradients of the whole batch in one process up to float summation
/// order. Rank 0 restores checkpoints and writes; every rank starts from its weights and optimizer
/// state, scores its share of every validation and test (`evaluate`), and stop signals, early stops and
/// divergence are agreed before each step.
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
    /// so a resumed run takes the same samples). Used only by `stepBatch`, on one thread at a time.
    private var epochOrder: EpochOrder?
    /// Lay out the next step's batch on a background thread while the current step trains (when the
    /// training split's source allows it, `BatchSource.preparesBatchesInBackground`). The batches are
    /// the same either way.
    public var prefetchesBatches = true
    /// The processes of a data-parallel run (one by default).
    public var communicator: any Communicator = SingleProcess()
    /// Seconds in the gradient all-reduce so far (0 for one process).
    public private(set) var allReduceSeconds = 0.0
    /// The flattened gradients, their presence flags and the step's sums, reused every step.
    private var reduceBuffer: [Float] = []

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
        let isRoot = communicator.isRoot
        var restoredState = false
        if resume {
            // Rank 0 restores; the others take its state in `synchronize`.
            _ = try communicator.onRoot { () throws -> Void in
                guard let dir = runDirectory, let store else { throw TrainingError.invalidConfiguration("resuming needs a run directory") }
                let restored = try restore(from: store)
                restoredState = restored != nil
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
            }
        } else if let dir = runDirectory {
            if let resolvedConfiguration { try dir.writeJSON(resolvedConfiguration, to: "config.json") }
            log = try JSONLinesWriter(url: dir.metricsURL)
        }
        try synchronize(&s, optimizerState: restoredState)
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

        /// Reports evaluation progress and stops it when a stop signal arrived. With several processes
        /// (every one evaluates its share of the batches) they agree on the signal after every round, so
        /// all stop at the same batch; during training they stop the evaluation only, and the step loop's
        /// next agreement stops the run.
        var validatingInLoop = false
        func evaluationProgress(_ split: MetricsRecord.Kind) -> (Int, Int) throws -> Void {
            { [self] done, total in
                let signal = communicator.size > 1 ? try agree(signal: stopSignal(), stoppedEarly: false, weight: 0, afterWait: false).signal
                                                   : stopSignal()
                if signal != 0 && validatingInLoop && communicator.size > 1 { throw EvaluationStopped() }
                if signal != 0 { throw try interrupted(signal) }
                reporter.report(.evaluating(split: split, done: done, total: total))
            }
        }

        let validationDuringTraining = c.validationSample.map { SampledBatches(validation, count: $0) } ?? SampledBatches(validation, count: validation.count)

        /// Scores `source` as a validation record at the current step.
        func validate(_ source: any BatchSource) throws -> EvaluationResult {
            let r = try evaluate(model, on: source, objective: objective, batchSize: evaluationBatch, communicator: communicator,
                                 progress: evaluationProgress(.validation))
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
            // Rank 0 keeps the best weights (and passes them on for the final test).
            if isRoot { bestWeights = model.stateDictionary() }
            if let store {
                let record = CheckpointRecord(kind: .best, step: s.step, task: task, model: modelName, progress: s)
                let url = try store.write(record, model: model, weightsMetadata: weightsMetadata, optimizer: nil)
                reporter.report(.checkpoint(.best, step: s.step, url: url))
            }
        }

        func checkpointDue() -> Bool {
            s.step > 0 && (s.step >= totalSteps || s.stoppedEarly || s.step % (c.checkpointInterval ?? batchesPerEpoch) == 0)
        }

        // One batch ahead in the background; stopped (the thread joined) however the loop ends.
        let batches = BatchPrefetcher(endStep: totalSteps, background: prefetchesBatches && train.preparesBatchesInBackground) { [self] step in
            stepBatch(step: step, batchesPerEpoch: batchesPerEpoch)
        }
        defer { batches.stop() }
        model.train()
        do {
            while true {
                // Rank 0 may spend a while here (writing checkpoints): the others then wait without spinning.
                // Decided from the step alone, so every rank makes the same collective calls.
                let rootBusy = s.validationPending || (s.step > 0 && (s.step >= totalSteps || s.step % (c.checkpointInterval ?? batchesPerEpoch) == 0))
                if s.validationPending {
                    // Every rank validates its share of the batches and gets the same result.
                    validatingInLoop = true
                    defer { validatingInLoop = false }
                    do { try validateDuringTraining() } catch is EvaluationStopped {}
                }
                if checkpointDue() { try checkpointLast() }
                let stepStart = Self.now()
                let batch = s.step < totalSteps && !s.stoppedEarly ? try batches.value(step: s.step) : nil
                let agreed = try agree(signal: stopSignal(), stoppedEarly: s.stoppedEarly, weight: batch?.weight ?? 0, afterWait: rootBusy)
                if agreed.stoppedEarly { s.stoppedEarly = true }
                if agreed.signal != 0 { throw try interrupted(agreed.signal) }
                if s.step >= totalSteps || s.stoppedEarly { break }
                try trainStep(&s, batch!, globalWeight: agreed.weight, stepStart: stepStart, parameters: parameters,
                              batchesPerEpoch: batchesPerEpoch, totalSteps: totalSteps, log: log, elapsed: elapsed)
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
        // the best checkpoint is chosen among comparable scores), then test with the best and the last:
        // every rank scores its share of the batches, rank 0 writes.
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
            let r = try evaluate(model, on: test, objective: objective, batchSize: evaluationBatch, communicator: communicator,
                                 progress: evaluationProgress(.test))
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
        if let bestStep = s.bestStep, bestStep != s.step, let bestWeights = try sharedFromRoot(bestWeights) {
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
            peakResidentBytes: ProcessMemory.peakResidentBytes(),
            processes: communicator.size > 1 ? communicator.size : nil,
            allReduceSeconds: communicator.size > 1 ? allReduceSeconds : nil)
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

    /// A stop of the evaluation during training by a stop signal, with several processes: the
    /// ranks stop together after it.
    struct EvaluationStopped: Error {}

    /// This rank's part of a step's batch: pieces of at most `microBatchSize`, their loss weights.
    struct StepBatch {
        var pieces: [Batch]
        var pieceWeights: [Int]
        /// Sequences in the whole (global) batch.
        var size: Int
        /// Loss weight of this rank's pieces.
        var weight: Int { pieceWeights.reduce(0, +) }
    }

    /// The samples of `step` this rank takes: its slice of the global batch's positions.
    private func stepBatch(step: Int, batchesPerEpoch: Int) -> StepBatch {
        let c = configuration
        let batchIndex = step % batchesPerEpoch
        let first = batchIndex * c.batchSize, end = min(first + c.batchSize, train.count)
        let n = end - first, k = communicator.size, r = communicator.rank
        let low = first + n * r / k, high = first + n * (r + 1) / k
        let pieceSize = c.microBatchSize ?? c.batchSize
        if case .shuffled(let seed) = trainingOrder, epochOrder == nil { epochOrder = EpochOrder(count: train.count, seed: seed) }
        let epochIndex = step / batchesPerEpoch
        let pieces = stride(from: low, to: high, by: pieceSize).map { start -> Batch in
            let positions = start..<min(start + pieceSize, high)
            guard epochOrder != nil else { return train.batch(indices: positions) }
            return train.batch(samples: epochOrder!.samples(epoch: epochIndex, positions: positions))
        }
        return StepBatch(pieces: pieces, pieceWeights: pieces.map { objective.weight($0.targets, batchSize: $0.size) }, size: n)
    }

    /// Stop signal (SIGINT before SIGTERM), early stop and the step's loss weight, agreed by every
    /// process, so all of them stop at the same step and none waits in a collective for one that left.
    private func agree(signal: Int32, stoppedEarly: Bool, weight: Int, afterWait: Bool) throws -> (signal: Int32, stoppedEarly: Bool, weight: Int) {
        guard communicator.size > 1 else { return (signal, stoppedEarly, weight) }
        if afterWait { try communicator.barrier() }
        var v: [Double] = [signal == SIGINT ? 1 : 0, signal != 0 && signal != SIGINT ? 1 : 0, stoppedEarly ? 1 : 0, Double(weight)]
        try v.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
        let agreed: Int32 = v[0] > 0 ? SIGINT : v[1] > 0 ? (signal != 0 ? signal : SIGTERM) : 0
        return (agreed, v[2] > 0, Int(v[3].rounded()))
    }

    /// What every process of the run takes from rank 0 before the first step.
    private struct SharedStart: Codable {
        var progress: TrainingProgress
        var randomStreams: [String: RandomStreamState]
        var hasOptimizerState: Bool
    }

    /// Every rank takes rank 0's weights, random streams, progress and (resumed) optimizer state.
    private func synchronize(_ s: inout TrainingProgress, optimizerState: Bool) throws {
        guard communicator.size > 1 else { return }
        let isRoot = communicator.isRoot
        let encoder = JSONEncoder(), decoder = JSONDecoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let weights = try communicator.broadcast(isRoot ? SafeTensors.encode(model.stateDictionary()) : Data())
        let shared = try communicator.broadcast(isRoot ? encoder.encode(SharedStart(progress: s, randomStreams: model.randomStreamStates(),
                                                                                     hasOptimizerState: optimizerState)) : Data())
        let start = try decoder.decode(SharedStart.self, from: shared)
        let moments = start.hasOptimizerState ? try communicator.broadcast(isRoot ? SafeTensors.encode(optimizer.stateDictionary()) : Data()) : nil
        guard !isRoot else { return }
        try model.loadStateDictionary(SafeTensors.decode(weights).tensors)
        if let moments { try optimizer.loadStateDictionary(SafeTensors.decode(moments).tensors) }
        try model.restoreRandomStreams(start.randomStreams)
        s = start.progress
    }

    /// Sums the gradients (and the step's loss, correct count and non-finite losses) over the
    /// processes, as one buffer. A parameter no rank has a gradient for keeps none, as in one process.
    private func allReduceGradients(_ parameters: [Parameter], loss: inout Float, correct: inout Int, nonFinite: inout Int) throws {
        var seen = Set<ObjectIdentifier>()
        let unique = parameters.filter { seen.insert(ObjectIdentifier($0)).inserted }
        let total = unique.reduce(0) { $0 + $1.value.count }
        let count = total + unique.count + 3
        if reduceBuffer.count != count { reduceBuffer = [Float](repeating: 0, count: count) }
        reduceBuffer.withUnsafeMutableBufferPointer { buffer in
            var offset = 0
            for (i, p) in unique.enumerated() {
                let n = p.value.count
                if let g = p.grad {
                    g.withUnsafePointer { (buffer.baseAddress! + offset).update(from: $0, count: n) }
                    buffer[total + i] = 1
                } else {
                    (buffer.baseAddress! + offset).update(repeating: 0, count: n)
                    buffer[total + i] = 0
                }
                offset += n
            }
            buffer[count - 3] = loss
            buffer[count - 2] = Float(correct)
            buffer[count - 1] = Float(nonFinite)
        }
        let start = Self.now()
        try reduceBuffer.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
        allReduceSeconds += Self.now() - start
        reduceBuffer.withUnsafeBufferPointer { buffer in
            var offset = 0
            for (i, p) in unique.enumerated() {
                let n = p.value.count
                if buffer[total + i] > 0 {
                    if p.grad == nil { p.grad = Tensor(zeros: p.value.shape) }
                    p.grad!.withUnsafeMutablePointer { $0.update(from: buffer.baseAddress! + offset, count: n) }
                }
                offset += n
            }
            loss = buffer[count - 3]
            correct = Int(buffer[count - 2].rounded())
            nonFinite = Int(buffer[count - 1].rounded())
        }
    }

    /// Rank 0's `weights` on every rank (with one process, as they are).
    private func sharedFromRoot(_ weights: [String: NamedTensor]?) throws -> [String: NamedTensor]? {
        guard communicator.size > 1 else { return weights }
        let bytes = try communicator.broadcast(communicator.isRoot ? SafeTensors.encode(weights ?? [:]) : Data())
        if communicator.isRoot { return weights }
        let decoded = try SafeTensors.decode(bytes).tensors
        return decoded.isEmpty ? nil : decoded   // nil where rank 0 has none, so every rank takes the same branch
    }

    /// One optimizer step on this rank's part of the batch (gradients summed over the ranks), its
    /// bookkeeping and (when due) its train record.
    private func trainStep(_ s: inout TrainingProgress, _ batch: StepBatch, globalWeight: Int, stepStart: Double, parameters: [Parameter],
                           batchesPerEpoch: Int, totalSteps: Int, log: JSONLinesWriter?, elapsed: () -> Double) throws {
        let c = configuration
        let pieces = batch.pieces, pieceWeights = batch.pieceWeights
        let batchWeight = globalWeight
        let batchSize = batch.size
        // Each piece's loss is weighted by its share of the global batch (as the whole batch's loss).
        let weighted = pieces.count > 1 || communicator.size > 1
        if let schedule { optimizer.learningRate = schedule.learningRate(at: s.step) }
        optimizer.zeroGradients()
        var lossValue: Float = 0, correct = 0
        var nonFinite: Float? = nil
        for (piece, pieceWeight) in zip(pieces, pieceWeights) where pieces.count == 1 || pieceWeight > 0 {
            let outputs = model(piece.input)
            var loss = try objective.loss(outputs, piece.targets)
            if weighted { loss = loss * (Float(pieceWeight) / Float(max(batchWeight, 1))) }
            let pieceLoss = loss.value.scalar
            do { try loss.backward() } catch AutodiffError.nonFiniteLoss(let v) {
                nonFinite = v
                break
            }
            lossValue += pieceLoss
            correct += objective.correctCount(outputs.value, piece.targets)
        }
        if communicator.size > 1 {
            var nonFiniteCount = nonFinite == nil ? 0 : 1
            try allReduceGradients(parameters, loss: &lossValue, correct: &correct, nonFinite: &nonFiniteCount)
            if nonFinite == nil && nonFiniteCount > 0 { nonFinite = .nan }
        }
        if let v = nonFinite { throw Divergence(what: "the loss is \(v)") }
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
