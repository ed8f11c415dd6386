import ArgumentParser
import Foundation
import LongMixerTraining

/// `longmixer train --task lm`: a byte-level causal LM on a text corpus, through the same Trainer,
/// run directory and progress lines as the synthetic tasks.
extension TrainCommand {
    /// Everything `config.json` records for a language-model run (`languageModel` rebuilds the model).
    struct LanguageModelRunConfiguration: Codable {
        var command: [String]
        var startedAt: String
        var task: String
        var model: String
        var preset: String
        var corpus: String
        var corpusBytes: Int
        var corpusFiles: Int
        var fractions: SplitFractions
        var splitBytes: [String: [Int]]
        var windows: [String: Int]
        var length: Int
        var seed: UInt64
        var optimizer: String
        var learningRate: Float
        var betas: [Float]
        var schedule: String
        var warmupSteps: Int
        var weightDecay: Float
        var training: TrainingConfiguration
        var languageModel: LanguageModelConfiguration
        var threads: Int
        var parameterCount: Int
    }

    static let languageModelDefaultSteps = 1000
    static let languageModelDefaultBatch = 16

    func runLanguageModel() throws {
        // Options of the synthetic tasks that mean nothing here: refuse them rather than ignore them.
        let unused: [(String, Bool)] = [
            ("--hidden", hidden != nil), ("--protocol", linkProtocol != nil), ("--factor-rule", factorRule != nil),
            ("--dropout1", dropout1 != nil), ("--dropout2", dropout2 != nil), ("--pooling", pooling != nil),
            ("--positional-embedding", positionalEmbedding != nil), ("--train-size", trainSize != nil),
            ("--target-accuracy", targetAccuracy != nil),
        ]
        if let (flag, _) = unused.first(where: { $0.1 }) { throw CommandError("\(flag) is not used with --task lm") }
        guard let corpusPath = corpus else { throw CommandError("--task lm needs --corpus PATH (a text file or a folder of .txt files; e.g. `longmixer data fetch shakespeare`, then --corpus data/shakespeare)") }
        let kind: LanguageModelKind
        do { kind = try LanguageModelKind(parsing: model ?? "permuteformer") } catch { throw CommandError("\(error)") }
        guard length >= 1 else { throw CommandError("--length must be ≥ 1, got \(length)") }

        // Model: preset ← flags.
        let presetName = (preset ?? "small").lowercased()
        guard ["small", "tiny", "wikitext"].contains(presetName) else {
            throw CommandError("unknown language-model --preset '\(preset!)'; valid presets: small, tiny, wikitext")
        }
        var lm = try LanguageModelConfiguration.preset(presetName)
        lm.mixer = MixerConfiguration(kind: kind.mixerKind)
        if let dimensions { lm.dimensions = dimensions }
        if let heads { lm.heads = heads }
        if let blocks { lm.layers = blocks }
        if let dropout { lm.dropout = dropout }
        do { try lm.validate() } catch { throw CommandError("model configuration: \(error)") }

        // Training.
        if epochs != nil && steps != nil { throw CommandError("give --epochs or --steps, not both") }
        let clip: Float?
        switch clipNorm ?? 1 {
        case 0: clip = nil
        case let c where c > 0 && c.isFinite: clip = c
        case let c: throw CommandError("--clip-norm must be > 0 (or 0 to disable), got \(c)")
        }
        let useSteps: Int? = steps ?? (epochs == nil ? Self.languageModelDefaultSteps : nil)
        let training = TrainingConfiguration(
            batchSize: batchSize ?? Self.languageModelDefaultBatch, evaluationBatchSize: microBatchSize, microBatchSize: microBatchSize, epochs: epochs ?? 1, steps: useSteps,
            clipNorm: clip, logInterval: logInterval ?? 50,
            evaluationInterval: evalInterval ?? (useSteps != nil ? Self.defaultEvaluationInterval : nil), targetAccuracy: nil)
        do { try training.validate() } catch { throw CommandError("\(error)") }
        let seed = self.seed ?? 42
        let optimizerName = (optimizer ?? "adamw").lowercased()
        guard ["adam", "adamw", "sgd"].contains(optimizerName) else {
            throw CommandError("unknown --optimizer '\(optimizer!)'; valid optimizers: adam, adamw, sgd")
        }
        let lr = learningRate ?? 5e-4
        guard lr.isFinite && lr > 0 else { throw CommandError("--learning-rate must be > 0, got \(lr)") }
        let decay = weightDecay ?? 0.01
        guard decay.isFinite && decay >= 0 else { throw CommandError("--weight-decay must be ≥ 0, got \(decay)") }
        let scheduleName = (schedule ?? "cosine").lowercased()
        guard ["constant", "cosine", "inverse-sqrt"].contains(scheduleName) else {
            throw CommandError("unknown --schedule '\(schedule!)'; valid schedules with --task lm: constant, cosine, inverse-sqrt")
        }

        // Data (before the run directory, so a bad corpus fails without leaving a folder behind).
        let corpus: ByteCorpus
        let data: (train: ByteWindows, validation: ByteWindows, test: ByteWindows)
        do {
            corpus = try ByteCorpus(path: corpusPath)
            // By --steps: one fresh random window per sample of the run (the Trainer never cycles back to
            // windows already seen); by --epochs: ⌊train bytes / N⌋ windows per epoch, repeated each epoch.
            let perEpoch = max(1, corpus.splitRanges().train.count / max(length, 1))
            let trainWindows = useSteps.map { max(perEpoch, $0 * training.batchSize) } ?? perEpoch
            data = try corpus.windows(length: length, seed: seed, trainWindows: trainWindows,
                                      validationWindows: valSize, testWindows: testSize)
        } catch let e as ByteCorpusError { throw CommandError("\(e)") }
        let totalSteps = training.totalSteps(trainCount: data.train.count)
        let warmup = warmupSteps ?? (scheduleName == "constant" ? 0 : max(1, totalSteps / 10))
        guard warmup >= 0 && (warmup == 0 || warmup < totalSteps) else {
            throw CommandError("--warmup-steps must be in 0..<\(totalSteps) (the run's steps), got \(warmup)")
        }
        let learningRateSchedule: (any LearningRateSchedule)?
        switch scheduleName {
        case "cosine": learningRateSchedule = WarmupCosineSchedule(peakLearningRate: lr, warmupSteps: warmup, totalSteps: totalSteps)
        case "inverse-sqrt": learningRateSchedule = WarmupInverseSqrtSchedule(peakLearningRate: lr, warmupSteps: max(warmup, 1))
        default: learningRateSchedule = nil
        }

        let directoryURL = output.map { URL(fileURLWithPath: $0) } ?? RunDirectory.defaultURL(task: "lm", model: kind.rawValue)
        let runDirectory = try RunDirectory.prepare(directoryURL, overwrite: overwrite, inputs: [URL(fileURLWithPath: corpusPath)])

        var generator = RandomGenerator(seed: seed ^ 0x6D6F_6465_6C00_0000)   // "model": independent of the data stream
        let model = try CausalLanguageModel(configuration: lm, generator: &generator)
        let betas: (Float, Float) = (0.9, 0.98)
        let optimizer: any Optimizer
        switch optimizerName {
        case "adam": optimizer = Adam(parameters: model.parameters(), learningRate: lr, beta1: betas.0, beta2: betas.1, weightDecay: decay)
        case "sgd": optimizer = SGD(parameters: model.parameters(), learningRate: lr, momentum: 0.9, weightDecay: decay)
        default: optimizer = AdamW(parameters: model.parameters(), learningRate: lr, beta1: betas.0, beta2: betas.1, weightDecay: decay)
        }

        let ranges = corpus.splitRanges()
        let resolved = LanguageModelRunConfiguration(
            command: CommandLine.arguments, startedAt: ISO8601DateFormatter().string(from: Date()), task: "lm", model: kind.rawValue,
            preset: presetName, corpus: corpusPath, corpusBytes: corpus.count, corpusFiles: corpus.files.count, fractions: .standard,
            splitBytes: ["train": [ranges.train.lowerBound, ranges.train.upperBound],
                         "validation": [ranges.validation.lowerBound, ranges.validation.upperBound],
                         "test": [ranges.test.lowerBound, ranges.test.upperBound]],
            windows: ["train": data.train.count, "validation": data.validation.count, "test": data.test.count],
            length: length, seed: seed, optimizer: optimizerName, learningRate: lr, betas: optimizerName == "sgd" ? [] : [betas.0, betas.1],
            schedule: scheduleName, warmupSteps: warmup, weightDecay: decay, training: training, languageModel: lm,
            threads: Parallel.threadCount, parameterCount: model.parameterCount)
        if !quiet {
            FileHandle.standardOutput.write(Data(("corpus \(corpusPath): \(corpus.count) bytes in \(corpus.files.count) file\(corpus.files.count == 1 ? "" : "s"); "
                  + "windows of \(length): \(data.train.count) train per epoch (random offsets), \(data.validation.count) validation, \(data.test.count) test\n").utf8))
        }
        let reporter: TrainingReporter = quiet ? FinalLineReporter() : ConsoleReporter()
        let trainer = try Trainer(model: model, optimizer: optimizer, objective: model.objective,
                                  train: data.train, validation: data.validation, test: data.test,
                                  configuration: training, runDirectory: runDirectory, reporter: reporter,
                                  schedule: learningRateSchedule)
        trainer.weightsMetadata = ["task": "lm", "model": kind.rawValue, "length": String(length),
                                   "configuration": String(decoding: try JSONEncoder().encode(lm), as: UTF8.self)]
        try runDirectory.finishing { try trainer.run(resolvedConfiguration: resolved) }
    }
}
