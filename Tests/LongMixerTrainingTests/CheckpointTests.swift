import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels
import LongMixerTestSupport

/// The tiny model with dropout on its features, so a resumed run must restore a random stream too.
final class DropoutTinyModel: Module, SequenceModel {
    let inner: TinyModel
    let dropout: Dropout

    init(seed: UInt64) {
        inner = TinyModel(task: .order, length: 8, seed: seed)
        var g = RandomGenerator(seed: seed ^ 0xD0)
        dropout = Dropout(probability: 0.25, generator: &g)
    }

    func callAsFunction(_ input: SequenceInput) -> Variable {
        let h: Variable
        switch input {
        case .tokens(let ids): h = inner.embedding!(ids)
        case .features(let x): h = inner.inputLinear!(Variable(x))
        }
        return inner.head(reshape(dropout(gelu(h)), [input.batchSize, inner.length * inner.width]))
    }
}

/// Stops the run (as SIGINT would) once `step` steps are done, and records every event.
final class StopAtStep: TrainingReporter {
    let step: Int
    var done = 0
    var events: [TrainingEvent] = []
    init(_ step: Int) { self.step = step }
    func report(_ event: TrainingEvent) {
        events.append(event)
        if case .step(let s) = event { done = s.step }
    }
    var signal: Int32 { done >= step ? SIGINT : 0 }
    var refused: [String] {
        events.compactMap { if case .checkpointRefused(let url, let reason) = $0 { return "\(url.lastPathComponent): \(reason)" } else { return nil } }
    }
}

@Suite("Checkpoints and resume", .serialized)
struct CheckpointTests {
    let sizes = SplitSizes(train: 200, validation: 40, test: 40)
    let configuration = TrainingConfiguration(batchSize: 16, steps: 40, logInterval: 5, evaluationInterval: 10, checkpointInterval: 10)

    /// The training split of a run: the generated Order samples (laid out on the training thread), or
    /// the same samples stored as labelled sequences and visited shuffled, as real data are (laid out
    /// in the background unless `prefetch` is off).
    enum TrainSplit { case generated, stored(prefetch: Bool) }

    func trainer(_ dir: RunDirectory, reporter: TrainingReporter, split: TrainSplit = .generated) throws -> (Trainer, DropoutTinyModel) {
        let data = try SyntheticDataset.splits(task: .order, length: 8, sizes: sizes, seed: 5)
        var train: any BatchSource = data.train
        if case .stored = split {
            var documents = TokenSequences()
            guard case .tokens(let t) = data.train.batch(indices: 0..<data.train.count).input,
                  case .classes(let labels) = data.train.batch(indices: 0..<data.train.count).targets else { throw UserError(what: "fixture", why: "not tokens") }
            for i in 0..<data.train.count { documents.append(t.scalars[(i * 8)..<((i + 1) * 8)].map { UInt16($0) }) }
            train = LabelledSequences(documents: documents, labels: labels.scalars, format: SequenceFormat(length: 8))
        }
        let model = DropoutTinyModel(seed: 5)
        let optimizer = Adam(parameters: model.parameters(), learningRate: 1e-2)
        let schedule = WarmupCosineSchedule(peakLearningRate: 1e-2, warmupSteps: 5, totalSteps: 40)
        let trainer = try Trainer(model: model, optimizer: optimizer, objective: SyntheticTask.order.objective, train: train,
                                  validation: data.validation, test: data.test, configuration: configuration, runDirectory: dir,
                                  reporter: reporter, schedule: schedule)
        trainer.weightsMetadata = ["task": "order", "model": "tiny", StoredConfiguration.metadataKey: "{\"positions\":\"none\"}"]
        if case .stored(let prefetch) = split {
            trainer.trainingOrder = .shuffled(seed: 5)
            trainer.prefetchesBatches = prefetch
        }
        return (trainer, model)
    }

    /// A run that never stops, in its own directory.
    func uninterrupted(_ split: TrainSplit = .generated) throws -> (URL, TrainingSummary) {
        let url = temporaryDirectory("uninterrupted")
        let (t, _) = try trainer(try RunDirectory.prepare(url, overwrite: false), reporter: SilentReporter(), split: split)
        return (url, try t.run(resolvedConfiguration: ["task": "order"]))
    }

    /// Runs until `stop` steps are done; returns the run directory.
    func interrupted(at stop: Int, _ split: TrainSplit = .generated) throws -> URL {
        let url = temporaryDirectory("interrupted")
        let reporter = StopAtStep(stop)
        let (t, _) = try trainer(try RunDirectory.prepare(url, overwrite: false), reporter: reporter, split: split)
        t.stopSignal = { reporter.signal }
        let error = #expect(throws: TrainingInterrupted.self) { try t.run(resolvedConfiguration: ["task": "order"]) }
        #expect(error?.step == stop && error?.checkpoint?.lastPathComponent == "step-\(stop)")
        return url
    }

    func resume(_ url: URL, reporter: StopAtStep = StopAtStep(.max), _ split: TrainSplit = .generated) throws -> TrainingSummary {
        let (t, _) = try trainer(RunDirectory(url: url), reporter: reporter, split: split)
        return try t.run(resume: true)
    }

    func bytes(_ url: URL, _ path: String) throws -> Data { try Data(contentsOf: url.appendingPathComponent(path)) }

    /// The metrics without times and throughput: what a resumed run must reproduce exactly.
    func metrics(_ url: URL) throws -> [MetricsRecord] {
        try readJSONLines(MetricsRecord.self, from: url.appendingPathComponent("metrics.jsonl")).map {
            var r = $0
            r.elapsedSeconds = 0
            r.samplesPerSecond = nil
            return r
        }
    }

    @Test("a run stopped at any step and resumed ends with byte-identical weights, optimizer state and metrics")
    func resumeIsBitwiseIdentical() throws {
        try withSteadyThreadCount { try resumeIsBitwiseIdenticalSteady() }
    }

    func resumeIsBitwiseIdenticalSteady() throws {
        let (reference, summary) = try uninterrupted()
        defer { try? FileManager.default.removeItem(at: reference) }
        for stop in [3, 10, 27] {
            let url = try interrupted(at: stop)
            defer { try? FileManager.default.removeItem(at: url) }
            let resumed = try resume(url)
            #expect(try bytes(url, "model.safetensors") == bytes(reference, "model.safetensors"), "stopped at \(stop)")
            for file in ["model.safetensors", "optimizer.safetensors", "state.json"] {
                #expect(try bytes(url, "checkpoints/step-40/\(file)") == bytes(reference, "checkpoints/step-40/\(file)"), "\(file)")
            }
            #expect(try metrics(url) == metrics(reference), "stopped at \(stop)")
            #expect(resumed.test == summary.test && resumed.testLast == summary.testLast && resumed.bestStep == summary.bestStep)
        }
    }

    @Test("batches laid out in the background: the run is the one without, and a run stopped and resumed ends bit for bit the same")
    func prefetchedRunsAreBitwiseIdentical() throws {
        try withSteadyThreadCount { try prefetchedRunsAreBitwiseIdenticalSteady() }
    }

    func prefetchedRunsAreBitwiseIdenticalSteady() throws {
        let (reference, summary) = try uninterrupted(.stored(prefetch: false))
        defer { try? FileManager.default.removeItem(at: reference) }
        let (prefetched, prefetchedSummary) = try uninterrupted(.stored(prefetch: true))
        defer { try? FileManager.default.removeItem(at: prefetched) }
        #expect(try bytes(prefetched, "model.safetensors") == bytes(reference, "model.safetensors"))
        #expect(try metrics(prefetched) == metrics(reference) && prefetchedSummary.test == summary.test)
        // The shuffled order is not the generated one's: this run is not the other tests' run.
        let (generated, _) = try uninterrupted()
        defer { try? FileManager.default.removeItem(at: generated) }
        #expect(try bytes(generated, "model.safetensors") != bytes(reference, "model.safetensors"))
        for stop in [3, 27] {
            let url = try interrupted(at: stop, .stored(prefetch: true))
            defer { try? FileManager.default.removeItem(at: url) }
            let resumed = try resume(url, .stored(prefetch: true))
            #expect(try bytes(url, "model.safetensors") == bytes(reference, "model.safetensors"), "stopped at \(stop)")
            #expect(try metrics(url) == metrics(reference), "stopped at \(stop)")
            #expect(resumed.test == summary.test && resumed.bestStep == summary.bestStep)
        }
    }

    @Test("the run directory after a run: newest two periodic checkpoints, the best one, no partial folders")
    func checkpointFolders() throws {
        let (url, summary) = try uninterrupted()
        defer { try? FileManager.default.removeItem(at: url) }
        let store = CheckpointStore(runDirectory: url)
        #expect(store.list(.last).map(\.step) == [40, 30])
        // The newest best checkpoint is the run's best; an older one stays while a kept periodic checkpoint refers to it.
        #expect(store.list(.best).first?.step == summary.bestStep && store.list(.best).count <= 2)
        let names = try FileManager.default.contentsOfDirectory(atPath: store.directory.path)
        #expect(!names.contains { $0.hasPrefix(".") }, "\(names)")
        let best = try store.read(store.list(.best)[0].url)
        #expect(best.optimizer == nil && best.record.kind == .best)
        // The test split is scored with the best and the last weights, labelled.
        let tests = try metrics(url).filter { $0.split == .test }
        #expect(Set(tests.compactMap(\.checkpoint)) == [.best, .last])
        #expect(tests.first { $0.checkpoint == .best }!.step == summary.bestStep)
        #expect(summary.test.accuracy == tests.first { $0.checkpoint == .best }!.accuracy)
    }

    @Test("what a killed run leaves (log lines after the checkpoint, a partial line, a partial checkpoint) does not change the resumed run")
    func leftoversOfAKill() throws {
        try withSteadyThreadCount { try leftoversOfAKillSteady() }
    }

    func leftoversOfAKillSteady() throws {
        let (reference, _) = try uninterrupted()
        defer { try? FileManager.default.removeItem(at: reference) }
        let url = try interrupted(at: 20)
        defer { try? FileManager.default.removeItem(at: url) }
        let log = try FileHandle(forWritingTo: url.appendingPathComponent("metrics.jsonl"))
        try log.seekToEnd()
        try log.write(contentsOf: Data("{\"step\":21,\"split\":\"train\"}\n{\"step\":22,\"spl".utf8))
        try log.close()
        try FileManager.default.removeItem(at: url.appendingPathComponent("checkpoints/step-20/clock.json"))   // the log is cut by its steps
        let partial = url.appendingPathComponent("checkpoints/.partial-last-30-99999")
        try FileManager.default.createDirectory(at: partial, withIntermediateDirectories: true)
        try Data("half".utf8).write(to: partial.appendingPathComponent("model.safetensors"))
        _ = try resume(url)
        #expect(try bytes(url, "model.safetensors") == bytes(reference, "model.safetensors"))
        #expect(try metrics(url) == metrics(reference))
        #expect(!FileManager.default.fileExists(atPath: partial.path))
    }

    @Test("a damaged newest checkpoint is passed over with a warning; with none intact, one clear error")
    func damagedCheckpoints() throws {
        let (reference, _) = try uninterrupted()
        defer { try? FileManager.default.removeItem(at: reference) }
        // Each damage, to the newest checkpoint: the run goes on from the previous one and still ends identical.
        let damages: [(String, String, (inout Data) -> Void)] = [
            ("model.safetensors", "checksum", { $0[$0.count - 3] ^= 0x10 }),
            ("model.safetensors", "model.safetensors", { $0 = $0.prefix($0.count / 2) }),
            ("optimizer.safetensors", "checksum", { $0[$0.count - 1] ^= 0x01 }),
            ("state.json", "digest", { data in
                // A plausible edit: one more sample seen.
                var text = String(decoding: data, as: UTF8.self)
                let range = text.range(of: #""samplesSeen" : \d+"#, options: .regularExpression)!
                text.replaceSubrange(range, with: "\"samplesSeen\" : 999")
                data = Data(text.utf8)
            }),
            ("state.json", "not a checkpoint record", { $0 = $0.prefix(40) }),
        ]
        for (file, needle, damage) in damages {
            let url = try interrupted(at: 20)   // checkpoints step-20 and step-10
            defer { try? FileManager.default.removeItem(at: url) }
            let target = url.appendingPathComponent("checkpoints/step-20/\(file)")
            var data = try Data(contentsOf: target)
            damage(&data)
            try data.write(to: target)
            let reporter = StopAtStep(.max)
            _ = try resume(url, reporter: reporter)
            #expect(reporter.refused.count == 1 && reporter.refused[0].contains("step-20") && reporter.refused[0].contains(needle),
                    "\(file): \(reporter.refused)")
            #expect(reporter.events.contains { if case .resumed(10, _) = $0 { return true } else { return false } })
            #expect(try bytes(url, "model.safetensors") == bytes(reference, "model.safetensors"), "\(file)")
        }
        // Both damaged: one error naming the newest, nothing trained.
        let url = try interrupted(at: 20)
        defer { try? FileManager.default.removeItem(at: url) }
        for step in [10, 20] {
            let target = url.appendingPathComponent("checkpoints/step-\(step)/model.safetensors")
            try Data(contentsOf: target).prefix(100).write(to: target)
        }
        let error = #expect(throws: UserError.self) { try resume(url) }
        #expect(error?.description.contains("step-20") == true && error?.description.contains("damaged") == true, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: url.appendingPathComponent("summary.json").path))
    }

    @Test("a checkpoint of another model or task is refused on resume")
    func anotherModelsCheckpoint() throws {
        let url = try interrupted(at: 10)
        defer { try? FileManager.default.removeItem(at: url) }
        let (t, _) = try trainer(RunDirectory(url: url), reporter: SilentReporter())
        t.weightsMetadata["task"] = "adding"
        let error = #expect(throws: UserError.self) { try t.run(resume: true) }
        #expect(error?.description.contains("for the order task") == true, "\(String(describing: error))")
        // The same names and shapes from another configuration.
        let (u, _) = try trainer(RunDirectory(url: url), reporter: SilentReporter())
        u.weightsMetadata[StoredConfiguration.metadataKey] = "{\"positions\":\"learned\"}"
        let other = #expect(throws: UserError.self) { try u.run(resume: true) }
        #expect(other?.description.contains("another model configuration") == true, "\(String(describing: other))")
    }

    @Test("a diverged run stops with one message naming the step and the checkpoint it kept")
    func divergence() throws {
        let url = temporaryDirectory("diverged")
        defer { try? FileManager.default.removeItem(at: url) }
        let data = try SyntheticDataset.splits(task: .adding, length: 8, sizes: sizes, seed: 5)
        let model = TinyModel(task: .adding, length: 8, seed: 5)
        let trainer = try Trainer(model: model, optimizer: SGD(parameters: model.parameters(), learningRate: 5),
                                  objective: SyntheticTask.adding.objective, train: data.train, validation: data.validation, test: data.test,
                                  configuration: TrainingConfiguration(batchSize: 16, steps: 200, clipNorm: nil, logInterval: 5,
                                                                       evaluationInterval: 100, checkpointInterval: 100),
                                  runDirectory: try RunDirectory.prepare(url, overwrite: false))
        trainer.divergenceAdvice = "advice for this run"
        let error = #expect(throws: TrainingError.self) { try trainer.run() }
        guard case .diverged(let step, 200, let what, let checkpoint?, "advice for this run") = error else {
            Issue.record("not a divergence with a checkpoint: \(String(describing: error))"); return
        }
        #expect(checkpoint.hasSuffix("checkpoints/step-\(step - 1)") && (what.contains("loss") || what.contains("gradient")))
        let message = error!.description
        #expect(!message.contains("\n") && message.contains("at step \(step) of 200") && message.contains(checkpoint), "\(message)")
        _ = try CheckpointStore(runDirectory: url).read(URL(fileURLWithPath: checkpoint))
    }

    @Test("the bounded validation sample spreads over the split and the final validation scores all of it")
    func validationSample() throws {
        let data = try SyntheticDataset.splits(task: .order, length: 8, sizes: sizes, seed: 5)
        let sample = SampledBatches(data.validation, count: 7)
        #expect(sample.count == 7 && sample.isSample)
        let batch = sample.batch(indices: 0..<7)
        let whole = data.validation.batch(indices: 0..<40)
        guard case .tokens(let picked) = batch.input, case .tokens(let all) = whole.input else { Issue.record("token inputs"); return }
        let rows = (0..<7).map { Array(picked.scalars[($0 * 8)..<($0 * 8 + 8)]) }
        #expect(rows == [0, 5, 11, 17, 22, 28, 34].map { Array(all.scalars[($0 * 8)..<($0 * 8 + 8)]) })
        #expect(!SampledBatches(data.validation, count: 100).isSample)

        let reporter = RecordingReporter()
        var c = configuration
        c.validationSample = 7
        _ = try tinyRun(task: .order, configuration: c, sizes: sizes, reporter: reporter)
        let validations = reporter.events.compactMap { if case .evaluation(let r) = $0, r.split == .validation { return r } else { return nil } }
        #expect(validations.map(\.evaluatedSamples) == [7, 7, 7, 7, 40], "\(validations.map(\.evaluatedSamples))")
    }
}
