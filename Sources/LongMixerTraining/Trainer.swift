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
    case nonFiniteLoss(step: Int, value: Float)
    case nonFiniteGradient(step: Int)

    public var description: String {
        switch self {
        case .invalidConfiguration(let message): return "training configuration: \(message)"
        case .shapeMismatch(let message): return "training: \(message)"
        case .nonFiniteLoss(let step, let value):
            return "training diverged: the loss is \(value) at step \(step + 1); lower the learning rate or enable gradient clipping"
        case .nonFiniteGradient(let step):
            return "training diverged: the gradient norm is not finite at step \(step + 1); lower the learning rate"
        }
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

    public init(batchSize: Int = 40, evaluationBatchSize: Int? = nil, microBatchSize: Int? = nil, epochs: Int = 1, steps: Int? = nil,
                clipNorm: Float? = 1, logInterval: Int = 50, evaluationInterval: Int? = nil, targetAccuracy: Double? = nil) {
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
    public var validation: EvaluationResult
    public var test: EvaluationResult
    public var bestValidationAccuracy: Double
    public var lossName: String
    public var accuracyDefinition: String
    /// Peak resident memory of the process so far, in bytes (nil where /proc is unavailable).
    public var peakResidentBytes: Int? = nil
}

/// Events a training run reports while it goes.
public enum TrainingEvent {
    case started(totalSteps: Int, parameterCount: Int, trainSamples: Int, runDirectory: URL?)
    /// A train-metrics record with the estimated seconds remaining.
    case progress(MetricsRecord, totalSteps: Int, etaSeconds: Double?)
    case evaluation(MetricsRecord)
    case earlyStop(step: Int, accuracy: Double, target: Double)
    case finished(TrainingSummary, runDirectory: URL?)
}

/// Receives training events (console lines, a test's recorder, nothing).
public protocol TrainingReporter: AnyObject {
    func report(_ event: TrainingEvent)
}

/// Ignores everything.
public final class SilentReporter: TrainingReporter {
    public init() {}
    public func report(_ event: TrainingEvent) {}
}

/// Human-readable progress lines on standard output.
public final class ConsoleReporter: TrainingReporter {
    let write: (String) -> Void

    public init(write: @escaping (String) -> Void = { line in
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }) {
        self.write = write
    }

    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        let s = Int(seconds.rounded())
        if s >= 3600 { return String(format: "%dh%02dm%02ds", s / 3600, (s / 60) % 60, s % 60) }
        if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return String(format: "%.1fs", seconds)
    }

    /// "bpb 1.234  ppl 2.35  " for language-model records, "" otherwise.
    static func languageModelMetrics(_ bitsPerByte: Double?, _ perplexity: Double?, rocAUC: Double? = nil) -> String {
        let auc = rocAUC.map { String(format: "auc %.4f  ", $0) } ?? ""
        guard let bitsPerByte, let perplexity else { return auc }
        return String(format: "bpb %.4f  ppl %.3f  ", bitsPerByte, perplexity) + auc
    }

    public func report(_ event: TrainingEvent) {
        switch event {
        case .started(let total, let parameters, let samples, let dir):
            write("training: \(total) steps over \(samples) training sequences, \(parameters) parameters"
                  + (dir.map { ", run directory \($0.path)" } ?? ""))
        case .progress(let r, let total, let eta):
            let width = String(total).count
            let step = String(r.step).leftPadded(to: width)
            write(String(format: "step %@/%d  epoch %d  loss %.5f  acc %.4f  %@%@%.1f samples/s  elapsed %@  ETA %@",
                         step, total, r.epoch, r.loss, r.accuracy, Self.languageModelMetrics(r.bitsPerByte, r.perplexity),
                         r.gradientNorm.map { String(format: "|g| %.3f  ", $0) } ?? "",
                         r.samplesPerSecond ?? 0, Self.duration(r.elapsedSeconds), eta.map(Self.duration) ?? "?"))
        case .evaluation(let r):
            write(String(format: "%@ @ step %d: loss %.5f  acc %.4f  %@(%d sequences, elapsed %@)",
                         r.split.rawValue, r.step, r.loss, r.accuracy, Self.languageModelMetrics(r.bitsPerByte, r.perplexity, rocAUC: r.rocAUC),
                         r.evaluatedSamples ?? 0, Self.duration(r.elapsedSeconds)))
        case .earlyStop(let step, let accuracy, let target):
            write(String(format: "early stop at step %d: validation accuracy %.4f ≥ target %.4f", step, accuracy, target))
        case .finished(let s, let dir):
            write(String(format: "done: %d steps, %d samples in %@ (%.1f samples/s); test loss %.5f, test accuracy %.4f",
                         s.steps, s.samplesSeen, Self.duration(s.wallClockSeconds), s.trainSamplesPerSecond, s.test.loss, s.test.accuracy)
                  + (s.validation.bitsPerByte.map { String(format: "; validation bpb %.4f", $0) } ?? "")
                  + (s.test.bitsPerByte.map { String(format: ", test bpb %.4f", $0) } ?? "")
                  + (s.peakResidentBytes.map { String(format: "; peak RSS %.2f GiB", Double($0) / 1_073_741_824) } ?? "")
                  + (dir.map { "; results in \($0.path)" } ?? ""))
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}

/// The training loop: mini-batch steps over a streamed training split with one optimizer,
/// optional global-norm clipping, periodic validation (eval mode, no graph), optional early stop
/// on a target validation accuracy, a final validation and test evaluation, and the run directory's
/// files (`config.json`, `metrics.jsonl`, `model.safetensors`, `summary.json`).
///
/// Batches are taken in order (batch k of the epoch is samples k·B ..< (k+1)·B) by default: the
/// synthetic samples are i.i.d. by construction, as in the reference's `shuffle=False` loader. With
/// `trainingOrder` `.shuffled`, batch k takes positions k·B ..< (k+1)·B of the epoch's seeded
/// permutation instead. A run is a pure function of the model's initial weights, the data seeds and
/// the configuration.
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
    /// Key–value pairs stored in the safetensors header of the final weights.
    public var weightsMetadata: [String: String] = [:]
    /// The order of the training samples in each epoch (the task's `TaskData.trainingOrder`).
    public var trainingOrder: TrainingOrder = .sequential

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

    /// Runs the whole training. `resolvedConfiguration` is written as `config.json` before the first step.
    @discardableResult
    public func run(resolvedConfiguration: (any Encodable)? = nil) throws -> TrainingSummary {
        let c = configuration
        let start = Self.now()
        let parameters = model.parameters()
        let batchesPerEpoch = train.batchCount(size: c.batchSize)
        let totalSteps = c.totalSteps(trainCount: train.count)
        let evaluationBatch = c.evaluationBatchSize ?? c.batchSize

        var log: JSONLinesWriter? = nil
        if let dir = runDirectory {
            if let resolvedConfiguration { try dir.writeJSON(resolvedConfiguration, to: "config.json") }
            log = try JSONLinesWriter(url: dir.metricsURL)
        }
        reporter.report(.started(totalSteps: totalSteps, parameterCount: model.parameterCount, trainSamples: train.count,
                                 runDirectory: runDirectory?.url))

        var step = 0, samplesSeen = 0
        var trainingSeconds = 0.0
        // Running window since the last train record.
        // Loss and accuracy are averaged over the objective's weights (sequences, or counted tokens for a language model).
        var windowLoss = 0.0, windowCorrect = 0, windowSamples = 0, windowWeight = 0, windowNorm = 0.0, windowSteps = 0
        var windowSeconds = 0.0
        var lastTrain: EvaluationResult? = nil
        var lastValidation: (step: Int, result: EvaluationResult)? = nil
        var bestValidation = -Double.infinity
        var stoppedEarly = false
        var stopReason = c.steps != nil ? "completed \(totalSteps) steps" : "completed \(c.epochs) epochs"

        func epoch(ofStep s: Int) -> Int { (max(s, 1) - 1) / batchesPerEpoch }
        let isLanguageModel: Bool
        if case .languageModel = objective { isLanguageModel = true } else { isLanguageModel = false }

        func validate() throws -> EvaluationResult {
            let r = try evaluate(model, on: validation, objective: objective, batchSize: evaluationBatch)
            var record = MetricsRecord(step: step, epoch: epoch(ofStep: step), split: .validation, loss: r.loss, accuracy: r.accuracy,
                                       elapsedSeconds: Self.now() - start, samplesSeen: samplesSeen, evaluatedSamples: r.count)
                .withLanguageModelMetrics(objective)
            record.rocAUC = r.rocAUC
            try log?.append(record)
            reporter.report(.evaluation(record))
            lastValidation = (step, r)
            bestValidation = max(bestValidation, r.accuracy)
            return r
        }

        var shuffledOrder: EpochOrder? = nil
        if case .shuffled(let seed) = trainingOrder { shuffledOrder = EpochOrder(count: train.count, seed: seed) }
        model.train()
        training: while step < totalSteps {
            let batchIndex = step % batchesPerEpoch
            let stepStart = Self.now()
            // The step's samples, in pieces of at most `microBatchSize` (one piece by default).
            let first = batchIndex * c.batchSize, end = min(first + c.batchSize, train.count)
            let pieceSize = c.microBatchSize ?? c.batchSize
            let pieces = stride(from: first, to: end, by: pieceSize).map { start -> Batch in
                let positions = start..<min(start + pieceSize, end)
                guard shuffledOrder != nil else { return train.batch(indices: positions) }
                return train.batch(samples: shuffledOrder!.samples(epoch: step / batchesPerEpoch, positions: positions))
            }
            let pieceWeights = pieces.map { objective.weight($0.targets, batchSize: $0.size) }
            let batchWeight = pieceWeights.reduce(0, +)
            let batchSize = end - first
            if let schedule { optimizer.learningRate = schedule.learningRate(at: step) }
            optimizer.zeroGradients()
            var lossValue: Float = 0, correct = 0
            for (piece, pieceWeight) in zip(pieces, pieceWeights) where pieces.count == 1 || pieceWeight > 0 {
                // Loss of the whole batch = Σ over pieces of (piece weight / batch weight) · piece loss.
                let outputs = model(piece.input)
                var loss = try objective.loss(outputs, piece.targets)
                if pieces.count > 1 { loss = loss * (Float(pieceWeight) / Float(max(batchWeight, 1))) }
                let pieceLoss = loss.value.scalar
                do { try loss.backward() } catch AutodiffError.nonFiniteLoss(let v) {
                    throw TrainingError.nonFiniteLoss(step: step, value: v)
                }
                lossValue += pieceLoss
                correct += objective.correctCount(outputs.value, piece.targets)
            }
            var norm: Float = .nan
            if let maxNorm = c.clipNorm {
                norm = clipGradientNorm(parameters, maxNorm: maxNorm)
                guard norm.isFinite else { throw TrainingError.nonFiniteGradient(step: step) }
            }
            optimizer.step()
            step += 1
            samplesSeen += batchSize
            let seconds = Self.now() - stepStart
            trainingSeconds += seconds
            windowSeconds += seconds
            let weight = batchWeight
            windowLoss += Double(lossValue) * Double(weight)
            windowCorrect += correct
            windowSamples += batchSize
            windowWeight += weight
            windowSteps += 1
            if norm.isFinite { windowNorm += Double(norm) }

            if step % c.logInterval == 0 || step == totalSteps {
                let result = EvaluationResult(loss: windowLoss / Double(max(windowWeight, 1)), accuracy: Double(windowCorrect) / Double(max(windowWeight, 1)),
                                              count: windowSamples, tokens: isLanguageModel ? windowWeight : nil)
                lastTrain = result
                let record = MetricsRecord(step: step, epoch: epoch(ofStep: step), split: .train, loss: result.loss, accuracy: result.accuracy,
                                           elapsedSeconds: Self.now() - start, samplesSeen: samplesSeen,
                                           learningRate: Double(String(optimizer.learningRate)) ?? Double(optimizer.learningRate),   // 1e-3, not 0.0010000000475
                                           samplesPerSecond: Double(windowSamples) / max(windowSeconds, 1e-9),
                                           gradientNorm: c.clipNorm == nil ? nil : windowNorm / Double(windowSteps))
                    .withLanguageModelMetrics(objective)
                try log?.append(record)
                let eta = Double(totalSteps - step) * trainingSeconds / Double(step)
                reporter.report(.progress(record, totalSteps: totalSteps, etaSeconds: eta))
                windowLoss = 0; windowCorrect = 0; windowSamples = 0; windowWeight = 0; windowNorm = 0; windowSteps = 0; windowSeconds = 0
            }

            let evaluateNow: Bool
            if let interval = c.evaluationInterval { evaluateNow = step % interval == 0 } else { evaluateNow = step % batchesPerEpoch == 0 }
            if evaluateNow && step < totalSteps {
                let r = try validate()
                if let target = c.targetAccuracy, r.accuracy >= target {
                    stoppedEarly = true
                    stopReason = String(format: "validation accuracy %.4f reached the target %.4f at step %d", r.accuracy, target, step)
                    reporter.report(.earlyStop(step: step, accuracy: r.accuracy, target: target))
                    break training
                }
            }
        }

        // Final validation (unless it was just taken at this step) and test.
        let finalValidation: EvaluationResult
        if let last = lastValidation, last.step == step { finalValidation = last.result } else { finalValidation = try validate() }
        let testResult = try evaluate(model, on: test, objective: objective, batchSize: evaluationBatch)
        var testRecord = MetricsRecord(step: step, epoch: epoch(ofStep: step), split: .test, loss: testResult.loss,
                                       accuracy: testResult.accuracy, elapsedSeconds: Self.now() - start, samplesSeen: samplesSeen,
                                       evaluatedSamples: testResult.count).withLanguageModelMetrics(objective)
        testRecord.rocAUC = testResult.rocAUC
        try log?.append(testRecord)
        reporter.report(.evaluation(testRecord))

        if let dir = runDirectory {
            var metadata = weightsMetadata
            metadata["steps"] = String(step)
            metadata["samples_seen"] = String(samplesSeen)
            metadata["test_accuracy"] = String(testResult.accuracy)
            do { try model.saveWeights(to: dir.weightsURL, metadata: metadata) } catch {
                throw RunDirectoryError.notWritable(dir.weightsURL.path, "\(error)")
            }
        }
        let summary = TrainingSummary(
            steps: step, epochs: Double(samplesSeen) / Double(train.count), samplesSeen: samplesSeen,
            wallClockSeconds: Self.now() - start, trainingSeconds: trainingSeconds,
            trainSamplesPerSecond: Double(samplesSeen) / max(trainingSeconds, 1e-9),
            stoppedEarly: stoppedEarly, stopReason: stopReason, parameterCount: model.parameterCount,
            lastTrain: lastTrain, validation: finalValidation, test: testResult,
            bestValidationAccuracy: max(bestValidation, finalValidation.accuracy),
            lossName: objective.lossName, accuracyDefinition: objective.accuracyDescription,
            peakResidentBytes: ProcessMemory.peakResidentBytes())
        try runDirectory?.writeJSON(summary, to: "summary.json")
        reporter.report(.finished(summary, runDirectory: runDirectory?.url))
        return summary
    }
}
