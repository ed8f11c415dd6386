import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels

/// A repetitive text (a 45-byte sentence with a rotating word), written by the test itself.
private func writeRepetitiveCorpus(_ folder: URL) throws -> URL {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let animals = ["dog", "cat", "fox", "owl"]
    var text = ""
    for i in 0..<400 { text += "the quick brown \(animals[i % 4]) jumps over the lazy \(animals[(i + 1) % 4]).\n" }
    let url = folder.appendingPathComponent("corpus.txt")
    try Data(text.utf8).write(to: url)
    return url
}

private func tinyLanguageModel(_ model: String = "permuteformer", seed: UInt64 = 7) throws -> CausalLanguageModel {
    var configuration = try LanguageModelConfiguration.preset("tiny")
    configuration.mixer = MixerConfiguration(kind: try ModelRegistry.entry(model).causalMixer!)
    configuration.dropout = 0
    var generator = RandomGenerator(seed: seed)
    return try CausalLanguageModel(configuration: configuration, generator: &generator)
}

/// What the CLI writes as config.json, reduced to what `load` reads.
private struct TestRunConfiguration: Codable {
    var task = "lm"
    var model: String
    var languageModel: LanguageModelConfiguration
}

@Suite(.serialized) struct LanguageModelTrainingTests {
    @Test func bitsPerByteAndTokenWeightedLoss() throws {
        #expect(abs(bitsPerByteFromNats(3 * Foundation.log(2.0)) - 3) < 1e-12)
        let r = EvaluationResult(loss: Foundation.log(256.0), accuracy: 0, count: 1, tokens: 10)
        #expect(abs(r.bitsPerByte! - 8) < 1e-12 && abs(r.perplexity! - 256) < 1e-9)
        #expect(EvaluationResult(loss: 1, accuracy: 0, count: 1).bitsPerByte == nil)

        // Uniform logits over V: the loss is ln V per counted token; PAD targets carry no weight.
        let v = 259
        let objective = TaskObjective.languageModel(vocabulary: v, ignoreIndex: 0)
        let targets = Targets.tokens(IntTensor(shape: [2, 3], scalars: [5, 0, 7, 9, 0, 0]))
        let uniform = try objective.loss(Variable(Tensor(zeros: [2, 3, v])), targets)
        #expect(abs(Double(uniform.value.scalar) - Foundation.log(Double(v))) < 1e-5)
        #expect(objective.weight(targets, batchSize: 2) == 3)
        // A logit of +10 on every counted target: all three are correct; the PAD positions do not count.
        var logits = Tensor(zeros: [2, 3, v])
        for (i, t) in [5, 0, 7, 9, 0, 0].enumerated() where t != 0 { logits[flat: i * v + t] = 10 }
        #expect(objective.correctCount(logits, targets) == 3)
        let confident = try objective.loss(Variable(logits), targets).value.scalar
        let expected = -(10 - Foundation.log(Foundation.exp(10) + Double(v - 1)))
        #expect(abs(Double(confident) - expected) < 1e-4)
        #expect(throws: TrainingError.self) { try objective.loss(Variable(Tensor(zeros: [2, 3, 4])), targets) }
        #expect(throws: TrainingError.self) {
            try objective.loss(Variable(Tensor(zeros: [1, 2, v])), .tokens(IntTensor(shape: [1, 2], scalars: [0, 0])))
        }
    }

    @Test func tinyLanguageModelLearnsAndGeneratesFromItsRunDirectory() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-lm-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let corpus = try ByteCorpus(path: try writeRepetitiveCorpus(folder).path)
        let data = try corpus.windows(length: 32, seed: 11, validationWindows: 24, testWindows: 24)
        let model = try tinyLanguageModel()
        let before = try evaluate(model, on: data.validation, objective: model.objective, batchSize: 8)
        #expect(before.bitsPerByte! > 6)                    // untrained: close to log2(259) ≈ 8

        let run = try RunDirectory.prepare(folder.appendingPathComponent("run"), overwrite: false)
        let trainer = try Trainer(model: model, optimizer: AdamW(parameters: model.parameters(), learningRate: 3e-3, beta2: 0.98),
                                  objective: model.objective, train: data.train, validation: data.validation, test: data.test,
                                  configuration: TrainingConfiguration(batchSize: 8, steps: 150, logInterval: 50, evaluationInterval: 75),
                                  runDirectory: run)
        let summary = try trainer.run(resolvedConfiguration: TestRunConfiguration(model: "permuteformer", languageModel: model.configuration))
        let after = try #require(summary.validation.bitsPerByte)
        #expect(after < 0.5 * before.bitsPerByte!, "validation bpb \(before.bitsPerByte!) → \(after)")
        #expect(summary.validation.tokens == 24 * 32)
        #expect(abs(summary.validation.perplexity! - Foundation.exp(summary.validation.loss)) < 1e-9)
        let records = try readJSONLines(MetricsRecord.self, from: run.metricsURL)
        #expect(records.filter { $0.split == .validation }.count == 2)
        #expect(records.allSatisfy { $0.bitsPerByte != nil && $0.perplexity != nil })

        // Round trip: the model rebuilt from the run directory continues greedily like the in-memory one.
        let loaded = try CausalLanguageModel.load(runDirectory: run.url)
        #expect(loaded.namedBuffers().contains { $0.0.hasSuffix("mixer.permutation") })
        let prompt = ByteCorpus.tokens("the quick brown ")
        var streamed: [Int] = []
        let fromRun = try loaded.sampleBytes(prompt: prompt, count: 40, temperature: 0) { streamed.append($0) }
        let inMemory = try model.sampleBytes(prompt: prompt, count: 40, temperature: 0)
        var g = RandomGenerator(seed: 1)
        #expect(fromRun == inMemory)
        #expect(streamed == fromRun)
        #expect(fromRun == model.generate(prompt: prompt, count: 40, temperature: 0, generator: &g))
        #expect(try loaded.sampleBytes(prompt: prompt, count: 40, temperature: 1, topK: 1, seed: 5) == fromRun)
        let text = String(decoding: fromRun.map { UInt8($0 - ByteCorpus.tokenOffset) }, as: UTF8.self)
        #expect(text.contains("jumps over the lazy"), "greedy continuation: \(text)")
        // Same seed, same sample; the recurrent logits equal the parallel ones after reloading.
        #expect(try loaded.sampleBytes(prompt: prompt, count: 30, seed: 9) == (try loaded.sampleBytes(prompt: prompt, count: 30, seed: 9)))
        let ids = IntTensor(shape: [1, prompt.count], scalars: prompt.map { Int32($0) })
        let parallel = withoutGradient { loaded(ids).value }
        let recurrent = loaded.recurrentLogits(ids)
        #expect(zip(parallel.scalars, recurrent.scalars).allSatisfy { abs($0 - $1) < 1e-3 })
        // --weights/--config with the run's files.
        let viaFiles = try CausalLanguageModel.load(weights: run.weightsURL, config: run.configURL)
        #expect(try viaFiles.sampleBytes(prompt: prompt, count: 40, temperature: 0) == fromRun)
    }

    /// `lm_run_before_stack.{json,safetensors}`: a 1-layer, 16-wide causal PermuteFormer trained for 30
    /// steps by `longmixer train --task lm` before the language model became a `SequenceStack`, with
    /// its configuration; the tokens are what `longmixer generate` of that build drew from it.
    @Test func aCheckpointWrittenBeforeTheStackLoadsAndContinuesAsBefore() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures")
        let model = try CausalLanguageModel.load(weights: fixtures.appendingPathComponent("lm_run_before_stack.safetensors"),
                                                 config: fixtures.appendingPathComponent("lm_run_before_stack.json"))
        let prompt = ByteCorpus.tokens("the quick ")
        let sampled = [107, 165, 171, 221, 156, 221, 179, 221, 124, 103, 258, 70, 83, 209, 153, 229, 178, 219, 139, 179,
                       105, 127, 22, 223, 171, 221, 77, 35, 155, 219, 184, 102, 193, 103, 156, 171, 113, 176, 88, 176]
        #expect(try model.sampleBytes(prompt: prompt, count: 40, temperature: 1, seed: 5) == sampled)
        let greedy = try model.sampleBytes(prompt: prompt, count: 40, temperature: 0)
        #expect(greedy == [221, 221, 221, 221, 221, 221, 221, 221, 221, 191] + [Int](repeating: 178, count: 14)
                + [156, 221, 221, 221] + [Int](repeating: 178, count: 12))
        // The stack's parallel forward pass agrees: each greedy token is the argmax over byte tokens at its position.
        let sequence = prompt + greedy
        let logits = withoutGradient { model(IntTensor(shape: [1, sequence.count], scalars: sequence.map { Int32($0) })).value }
        let v = model.configuration.vocabularySize
        for (i, token) in greedy.enumerated() {
            let row = Array(logits.scalars[((prompt.count + i - 1) * v)..<((prompt.count + i) * v)])
            let best = (ByteCorpus.tokenOffset..<v).max { row[$0] < row[$1] }!
            #expect(best == token, "position \(prompt.count + i)")
        }
    }

    @Test func loadingBadRunsIsAClearError() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-lm-bad-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect(throws: LanguageModelRunError("run directory '\(folder.path)' does not exist")) {
            try CausalLanguageModel.load(runDirectory: folder)
        }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data(#"{"task": "adding", "model": "paramixer", "paramixer": {}}"#.utf8).write(to: folder.appendingPathComponent("config.json"))
        try Data([1, 2, 3]).write(to: folder.appendingPathComponent("model.safetensors"))
        do {
            _ = try CausalLanguageModel.load(runDirectory: folder)
            Issue.record("a paramixer run loaded as a language model")
        } catch let e as LanguageModelRunError {
            #expect(e.message.contains("not a causal language model"), "\(e.message)")
        }
        // A model of another size: the strict weight loader names the mismatch.
        let model = try tinyLanguageModel()
        try model.saveWeights(to: folder.appendingPathComponent("model.safetensors"))
        var other = model.configuration
        other.layers = 3
        try JSONEncoder().encode(TestRunConfiguration(model: "permuteformer", languageModel: other)).write(to: folder.appendingPathComponent("config.json"))
        #expect(throws: LanguageModelRunError.self) { try CausalLanguageModel.load(runDirectory: folder) }
        #expect(throws: LanguageModelRunError.self) { try model.sampleBytes(prompt: [], count: 3) }
        // A hand-written configuration whose vocabulary lacks the prompt's bytes (or every byte) is refused, not a trap.
        var narrow = try LanguageModelConfiguration.preset("tiny")
        narrow.vocabularySize = 50
        var g = RandomGenerator(seed: 2)
        #expect(throws: LanguageModelRunError("prompt token 119 is outside the model's vocabulary 0..<50")) {
            try CausalLanguageModel(configuration: narrow, generator: &g).sampleBytes(prompt: ByteCorpus.tokens("the"), count: 3)
        }
        narrow.vocabularySize = 3
        #expect(throws: LanguageModelRunError.self) {
            try CausalLanguageModel(configuration: narrow, generator: &g).sampleBytes(prompt: [1], count: 3)
        }
        #expect(try ModelRegistry.entry("paramixer").causalMixer == nil)
        #expect(try ModelRegistry.entry("Decay-Only").causalMixer == .causalDecayPerformer)
    }
}
