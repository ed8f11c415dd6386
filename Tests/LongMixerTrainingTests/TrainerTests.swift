import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels

/// A tiny sequence model for trainer tests: per-position input map (Embedding or Linear(F, D)),
/// GELU, flatten, Linear(N·D, C).
final class TinyModel: Module, SequenceModel {
    let embedding: Embedding?
    let inputLinear: Linear?
    let head: Linear
    let length: Int, width: Int

    init(task: SyntheticTask, length: Int, width: Int = 8, seed: UInt64) {
        var g = RandomGenerator(seed: seed)
        if let v = task.vocabularySize {
            embedding = Embedding(count: v, dimensions: width, generator: &g); inputLinear = nil
        } else {
            embedding = nil; inputLinear = Linear(inputDimensions: task.inputFeatures!, outputDimensions: width, generator: &g)
        }
        head = Linear(inputDimensions: length * width, outputDimensions: task.objective.outputCount, generator: &g)
        self.length = length
        self.width = width
    }

    func callAsFunction(_ input: SequenceInput) -> Variable {
        let h: Variable
        switch input {
        case .tokens(let ids): h = embedding!(ids)
        case .features(let x): h = inputLinear!(Variable(x))
        }
        return head(reshape(gelu(h), [input.batchSize, length * width]))
    }
}

/// Records every event.
final class RecordingReporter: TrainingReporter {
    var events: [TrainingEvent] = []
    func report(_ event: TrainingEvent) { events.append(event) }
    var progressRecords: [MetricsRecord] {
        events.compactMap { if case .progress(let r, _, _) = $0 { return r } else { return nil } }
    }
}

func temporaryDirectory(_ name: String) -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-trainer-tests-\(name)-\(UUID().uuidString)")
}

/// One training run of the tiny model on a small split.
func tinyRun(task: SyntheticTask, length: Int = 8, seed: UInt64 = 5, configuration: TrainingConfiguration,
             sizes: SplitSizes = SplitSizes(train: 2000, validation: 200, test: 200), directory: URL? = nil,
             reporter: TrainingReporter = SilentReporter(), learningRate: Float = 1e-2) throws -> (TrainingSummary, TinyModel) {
    let data = try SyntheticDataset.splits(task: task, length: length, sizes: sizes, seed: seed)
    let model = TinyModel(task: task, length: length, seed: seed)
    let optimizer = Adam(parameters: model.parameters(), learningRate: learningRate)
    let run = try directory.map { try RunDirectory.prepare($0, overwrite: false) }
    let trainer = try Trainer(model: model, optimizer: optimizer, objective: task.objective, train: data.train,
                              validation: data.validation, test: data.test, configuration: configuration,
                              runDirectory: run, reporter: reporter)
    let summary = try trainer.run(resolvedConfiguration: ["task": task.rawValue, "length": String(length)])
    return (summary, model)
}

@Suite("Trainer", .serialized)
struct TrainerTests {
    @Test("loss decreases and accuracy rises on an easy task (Temporal Order, N = 8)")
    func learnsOrder() throws {
        let data = try SyntheticDataset.splits(task: .order, length: 8, sizes: SplitSizes(train: 2000, validation: 200, test: 200), seed: 5)
        let untrained = try evaluate(TinyModel(task: .order, length: 8, seed: 5), on: data.test, objective: SyntheticTask.order.objective, batchSize: 50)
        let reporter = RecordingReporter()
        let (summary, _) = try tinyRun(task: .order, configuration: TrainingConfiguration(batchSize: 32, steps: 400, logInterval: 50,
                                                                                         evaluationInterval: 200), reporter: reporter)
        let records = reporter.progressRecords
        #expect(records.count == 8)
        #expect(records.last!.loss < 0.8 * records.first!.loss, "train loss \(records.map(\.loss))")
        #expect(summary.test.loss < 0.8 * untrained.loss)
        // Chance is 0.25; the tiny flatten model separates most orders at N = 8.
        #expect(summary.test.accuracy > 0.5, "test accuracy \(summary.test.accuracy)")
        // 63 batches per epoch, the last one of 2000 − 62·32 = 16 sequences: 400 steps = 6 epochs + 22 batches.
        #expect(summary.steps == 400 && summary.samplesSeen == 6 * 2000 + 22 * 32)
        #expect(abs(summary.epochs - Double(6 * 2000 + 22 * 32) / 2000) < 1e-9)
    }

    @Test("Adding: MSE decreases below the predict-the-mean level")
    func learnsAdding() throws {
        let (summary, _) = try tinyRun(task: .adding, configuration: TrainingConfiguration(batchSize: 32, steps: 600, logInterval: 100,
                                                                                          evaluationInterval: 300))
        // Var(0.5 + (x1 + x2)/4) = 2·(1/3)/16 ≈ 0.0417 is the loss of a constant prediction.
        #expect(summary.test.loss < 0.03, "test MSE \(summary.test.loss)")
        #expect(summary.lossName == "mse")
    }

    @Test("run directory: config.json, metrics.jsonl (parsable lines), model.safetensors, summary.json")
    func runDirectoryContents() throws {
        let dir = temporaryDirectory("contents")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (summary, model) = try tinyRun(task: .order, configuration: TrainingConfiguration(batchSize: 50, epochs: 2, logInterval: 10),
                                           sizes: SplitSizes(train: 500, validation: 100, test: 100), directory: dir)
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
        #expect(names == [RunDirectory.markerName, "config.json", "metrics.jsonl", "model.safetensors", "summary.json"])

        let records = try readJSONLines(MetricsRecord.self, from: dir.appendingPathComponent("metrics.jsonl"))
        let train = records.filter { $0.split == .train }, validation = records.filter { $0.split == .validation }
        #expect(train.map(\.step) == [10, 20])
        #expect(train.map(\.epoch) == [0, 1])
        #expect(train.allSatisfy { $0.learningRate == 1e-2 && ($0.samplesPerSecond ?? 0) > 0 && $0.gradientNorm != nil })
        // Evaluation at the end of epoch 1 (step 10); the final one at step 20; then test.
        #expect(validation.map(\.step) == [10, 20])
        #expect(records.last!.split == .test && records.last!.evaluatedSamples == 100)
        #expect(records.map(\.samplesSeen) == records.map { $0.step * 50 })
        #expect(zip(records, records.dropFirst()).allSatisfy { $0.elapsedSeconds <= $1.elapsedSeconds })
        // Every line is a self-contained JSON object with the documented keys.
        let firstLine = try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")[0]
        let object = try JSONSerialization.jsonObject(with: Data(firstLine.utf8)) as! [String: Any]
        for key in ["step", "epoch", "split", "loss", "accuracy", "elapsedSeconds", "samplesSeen"] { #expect(object[key] != nil, "\(key)") }

        let decoded = try JSONDecoder().decode(TrainingSummary.self, from: Data(contentsOf: dir.appendingPathComponent("summary.json")))
        #expect(decoded == summary)
        #expect((summary.peakResidentBytes ?? 0) > 1 << 20, "summary records the peak RSS")
        #expect(decoded.samplesSeen == 1000 && decoded.steps == 20 && decoded.test.count == 100 && decoded.wallClockSeconds > 0)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("config.json"))) as! [String: String]
        #expect(config == ["task": "order", "length": "8"])

        // model.safetensors holds the final weights: a fresh model loads them and matches exactly.
        let weightsURL = dir.appendingPathComponent("model.safetensors")
        let reloaded = TinyModel(task: .order, length: 8, seed: 99)
        #expect(reloaded.head.weight.value.scalars != model.head.weight.value.scalars)
        try reloaded.loadWeights(from: weightsURL)
        for ((name, a), (_, b)) in zip(model.namedParameters(), reloaded.namedParameters()) {
            #expect(a.value.scalars == b.value.scalars, "\(name)")
        }
        #expect(try SafeTensors.loadWithMetadata(from: weightsURL).metadata["steps"] == "20")
    }

    @Test("two runs with the same seed are identical (metrics and weights)")
    func determinism() throws {
        let config = TrainingConfiguration(batchSize: 16, steps: 60, logInterval: 10, evaluationInterval: 30)
        let r1 = RecordingReporter(), r2 = RecordingReporter()
        let (s1, m1) = try tinyRun(task: .adding, configuration: config, reporter: r1)
        let (s2, m2) = try tinyRun(task: .adding, configuration: config, reporter: r2)
        #expect(r1.progressRecords.map(\.loss) == r2.progressRecords.map(\.loss))
        #expect(r1.progressRecords.map(\.gradientNorm) == r2.progressRecords.map(\.gradientNorm))
        #expect(s1.test == s2.test && s1.validation == s2.validation)
        for (a, b) in zip(m1.parameters(), m2.parameters()) { #expect(a.value.scalars == b.value.scalars) }
        // A different seed changes the run.
        let (s3, _) = try tinyRun(task: .adding, seed: 6, configuration: config)
        #expect(s3.test != s1.test)
    }

    @Test("early stop when validation accuracy reaches the target")
    func earlyStop() throws {
        let reporter = RecordingReporter()
        let (summary, _) = try tinyRun(task: .order, configuration: TrainingConfiguration(batchSize: 20, steps: 1000, logInterval: 5,
                                                                                         evaluationInterval: 5, targetAccuracy: 0.05),
                                       reporter: reporter)
        #expect(summary.stoppedEarly && summary.steps == 5)
        #expect(summary.stopReason.contains("target"))
        #expect(reporter.events.contains { if case .earlyStop(5, _, 0.05) = $0 { return true } else { return false } })
        let (full, _) = try tinyRun(task: .order, configuration: TrainingConfiguration(batchSize: 20, steps: 10, logInterval: 5, evaluationInterval: 5))
        #expect(!full.stoppedEarly && full.steps == 10)
    }

    @Test("micro-batches accumulate the whole batch's gradients: same parameters, losses and accuracy")
    func microBatchesMatchWholeBatch() throws {
        for task in [SyntheticTask.order, .adding] {
            let whole = RecordingReporter(), pieces = RecordingReporter()
            let config = TrainingConfiguration(batchSize: 20, steps: 12, logInterval: 4, evaluationInterval: 6)
            var micro = config
            micro.microBatchSize = 6                                   // pieces of 6, 6, 6, 2
            let (a, modelA) = try tinyRun(task: task, configuration: config, reporter: whole)
            let (b, modelB) = try tinyRun(task: task, configuration: micro, reporter: pieces)
            #expect(a.samplesSeen == b.samplesSeen && a.steps == b.steps)
            for ((name, p), (_, q)) in zip(modelA.namedParameters(), modelB.namedParameters()) {
                let worst = zip(p.value.scalars, q.value.scalars).map { abs($0 - $1) / max(abs($0), 1e-2) }.max()!
                #expect(worst < 1e-4, "\(task) \(name): relative difference \(worst)")
            }
            for (r, s) in zip(whole.progressRecords, pieces.progressRecords) {
                #expect(abs(r.loss - s.loss) <= 1e-5 * max(abs(r.loss), 1), "\(task) step \(r.step): loss \(r.loss) vs \(s.loss)")
                #expect(r.accuracy == s.accuracy, "\(task) step \(r.step)")
            }
        }
        #expect(throws: TrainingError.self) { try TrainingConfiguration(batchSize: 8, microBatchSize: 9).validate() }
        #expect(throws: TrainingError.self) { try TrainingConfiguration(batchSize: 8, microBatchSize: 0).validate() }
    }

    @Test("a non-empty run directory is refused unless overwrite; files and unwritable paths are errors")
    func runDirectoryRules() throws {
        let dir = temporaryDirectory("rules")
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try RunDirectory.prepare(dir, overwrite: false)          // created
        try FileManager.default.removeItem(at: dir.appendingPathComponent(RunDirectory.markerName))
        _ = try RunDirectory.prepare(dir, overwrite: false)          // empty: reusable
        let keep = dir.appendingPathComponent("notes.txt")
        try Data("mine".utf8).write(to: keep)
        let notEmpty = #expect(throws: UserError.self) { try RunDirectory.prepare(dir, overwrite: false) }
        #expect(notEmpty?.description.contains("--overwrite") == true)
        #expect(FileManager.default.fileExists(atPath: keep.path))   // nothing lost
        try FileManager.default.removeItem(at: keep)
        let run = try RunDirectory.prepare(dir, overwrite: true)     // a run directory (marker only): replaced
        try run.commitReplacement()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == [RunDirectory.markerName])

        try Data("x".utf8).write(to: keep)
        #expect(throws: UserError.self) { try RunDirectory.prepare(keep, overwrite: true) }
        let underFile = keep.appendingPathComponent("run")
        #expect(throws: UserError.self) { try RunDirectory.prepare(underFile, overwrite: false) }

        let url = RunDirectory.defaultURL(task: "adding", model: "paramixer", root: dir,
                                          date: Date(timeIntervalSince1970: 1_800_000_000))
        #expect(url.lastPathComponent == "adding-paramixer-20270115-080000")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        #expect(RunDirectory.defaultURL(task: "adding", model: "paramixer", root: dir, date: Date(timeIntervalSince1970: 1_800_000_000))
            .lastPathComponent == "adding-paramixer-20270115-080000-2")
    }

    @Test("training configuration validation gives one-line errors")
    func validation() throws {
        #expect(throws: TrainingError.self) { try TrainingConfiguration(batchSize: 0).validate() }
        #expect(throws: TrainingError.self) { try TrainingConfiguration(steps: 0).validate() }
        #expect(throws: TrainingError.self) { try TrainingConfiguration(clipNorm: -1).validate() }
        #expect(throws: TrainingError.self) { try TrainingConfiguration(targetAccuracy: 1.5).validate() }
        #expect(TrainingConfiguration(batchSize: 40, epochs: 2).totalSteps(trainCount: 100) == 6)
        #expect(TrainingConfiguration(batchSize: 40, epochs: 2, steps: 7).totalSteps(trainCount: 100) == 7)

        let message = "\(TrainingError.invalidConfiguration("x"))"
        #expect(!message.contains("\n"))
    }

    @Test("a mismatched objective is an error, not a crash")
    func objectiveMismatch() throws {
        let data = try SyntheticDataset.splits(task: .adding, length: 8, sizes: SplitSizes(train: 10, validation: 10, test: 10), seed: 1)
        let model = TinyModel(task: .adding, length: 8, seed: 1)
        let trainer = try Trainer(model: model, optimizer: Adam(parameters: model.parameters(), learningRate: 1e-3),
                                  objective: .classification(classes: 4), train: data.train, validation: data.validation,
                                  test: data.test, configuration: TrainingConfiguration(batchSize: 5, steps: 2))
        #expect(throws: TrainingError.self) { try trainer.run() }
    }

    @Test("accuracy definitions: |error| < 0.04 for Adding, argmax for classes")
    func accuracy() {
        let regression = TaskObjective.regression(outputs: 1, tolerance: 0.04)
        let outputs = Tensor(shape: [4, 1], scalars: [0.5, 0.5, 0.5, 0.5])
        let targets = Targets.values(Tensor(shape: [4, 1], scalars: [0.53, 0.47, 0.55, 0.45]))
        #expect(regression.correctCount(outputs, targets) == 2)
        let logits = Tensor(shape: [3, 4], scalars: [0, 1, 0, 0, 5, 0, 0, 0, 0, 0, 0, 2])
        #expect(TaskObjective.classification(classes: 4).correctCount(logits, .classes(IntTensor([1, 1, 3]))) == 2)
    }
}

@Suite("Binary objective and ROC-AUC")
struct BinaryObjectiveTests {
    @Test func rocAUCCountsOrderedPairsAndTiesHalf() {
        #expect(rocAUC(scores: [0.1, 0.4, 0.35, 0.8], labels: [false, false, true, true]) == 0.75)
        #expect(rocAUC(scores: [1, 2, 3, 4], labels: [false, false, true, true]) == 1)
        #expect(rocAUC(scores: [4, 3, 2, 1], labels: [false, false, true, true]) == 0)
        #expect(rocAUC(scores: [0.5, 0.5], labels: [false, true]) == 0.5)
        #expect(rocAUC(scores: [1, 2], labels: [true, true]) == nil)
        // A monotone map of the scores (logits → probabilities) leaves it unchanged.
        let logits: [Float] = [-2, 0.3, 1.5, -0.7, 0.3, 2.2], labels = [false, true, true, false, false, true]
        #expect(rocAUC(scores: logits, labels: labels) == rocAUC(scores: logits.map { 1 / (1 + Foundation.exp(-$0)) }, labels: labels))
    }

    @Test func lossAndAccuracyOfOneLogit() throws {
        let objective = TaskObjective.binary
        let logits = Variable(Tensor(shape: [4, 1], scalars: [2, -1, 0.5, -3]))
        let targets = Targets.classes(IntTensor([1, 0, 0, 1]))
        let loss = try objective.loss(logits, targets).value.scalar
        var expected = 0.0
        for (z, y) in [(2.0, 1.0), (-1.0, 0.0), (0.5, 0.0), (-3.0, 1.0)] as [(Double, Double)] {
            let softplus: Double = Foundation.log(1 + Foundation.exp(-abs(z)))
            expected += (max(z, 0) - z * y + softplus) / 4
        }
        #expect(abs(Double(loss) - expected) < 1e-5)
        #expect(objective.correctCount(logits.value, targets) == 2)
        #expect(throws: TrainingError.self) { try objective.loss(logits, .classes(IntTensor([1, 0, 2, 1]))) }
        #expect(throws: TrainingError.self) { try objective.loss(Variable(Tensor(zeros: [4, 2])), targets) }
    }
}

/// A training split that records the samples of every batch it is asked for.
final class RecordingSource: BatchSource {
    let inner: SyntheticDataset
    var visited: [[Int]] = []
    init(_ inner: SyntheticDataset) { self.inner = inner }
    var count: Int { inner.count }
    var length: Int { inner.length }
    func batch(indices: Range<Int>) -> Batch { visited.append(Array(indices)); return inner.batch(indices: indices) }
    func batch(samples: [Int]) -> Batch { visited.append(samples); return inner.batch(samples: samples) }
}

@Suite("Trainer: training order")
struct TrainingOrderTests {
    func visits(_ order: TrainingOrder, steps: Int, microBatch: Int? = nil) throws -> [[Int]] {
        let data = try SyntheticDataset.splits(task: .order, length: 8, sizes: SplitSizes(train: 50, validation: 10, test: 10), seed: 3)
        let source = RecordingSource(data.train)
        let model = TinyModel(task: .order, length: 8, seed: 3)
        let trainer = try Trainer(model: model, optimizer: Adam(parameters: model.parameters(), learningRate: 1e-2), objective: SyntheticTask.order.objective,
                                  train: source, validation: data.validation, test: data.test,
                                  configuration: TrainingConfiguration(batchSize: 20, microBatchSize: microBatch, steps: steps, logInterval: 100))
        trainer.trainingOrder = order
        try trainer.run()
        return source.visited
    }

    @Test("sequential: batch k is samples k·B ..< (k+1)·B, as before")
    func sequential() throws {
        #expect(try visits(.sequential, steps: 4) == [Array(0..<20), Array(20..<40), Array(40..<50), Array(0..<20)])
    }

    @Test("shuffled: each epoch visits its seeded permutation once, in batches; micro-batches split the same order")
    func shuffled() throws {
        let v = try visits(.shuffled(seed: 11), steps: 6)
        let epoch0 = EpochOrder.permutation(count: 50, seed: 11, epoch: 0), epoch1 = EpochOrder.permutation(count: 50, seed: 11, epoch: 1)
        let ranges: [Range<Int>] = [0..<20, 20..<40, 40..<50]
        let expected: [[Int]] = ranges.map { Array(epoch0[$0]) } + ranges.map { Array(epoch1[$0]) }
        #expect(v == expected)
        #expect(epoch0 != epoch1 && epoch0.sorted() == Array(0..<50))
        #expect(try visits(.shuffled(seed: 11), steps: 3, microBatch: 10).flatMap { $0 } == epoch0)
    }
}
