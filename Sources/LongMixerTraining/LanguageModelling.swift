import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

// Byte-level language modelling on top of the Trainer: the causal LM as a `SequenceModel`
// (logits [B, N, V] for `TaskObjective.languageModel`), the CLI's model names, loading a trained
// LM back from its run directory, and sampling with the recurrent state (O(1) memory per token).

extension CausalLanguageModel {
    /// The objective the LM trains with: token cross-entropy ignoring PAD.
    public var objective: TaskObjective {
        .languageModel(vocabulary: configuration.vocabularySize, ignoreIndex: configuration.paddingIndex)
    }
}

extension TaskObjective {
    /// The loss of a causal model's logits [B, N, V] of ids [B, N] against the ids themselves:
    /// positions 0..<N−1 predict ids[:, 1...] (the training windows arrive already shifted; this is
    /// the same loss for a batch of whole sequences).
    public func nextTokenLoss(logits: Variable, ids: IntTensor) throws -> Variable {
        let b = ids.shape[0], n = ids.shape[1]
        guard n >= 2 else { throw TrainingError.shapeMismatch("next-token loss needs at least 2 tokens per row, got \(n)") }
        var targets: [Int32] = []
        targets.reserveCapacity(b * (n - 1))
        for r in 0..<b { targets += ids.scalars[(r * n + 1)..<(r * n + n)] }
        return try loss(slice(logits, axis: 1, 0..<(n - 1)), .tokens(IntTensor(shape: [b, n - 1], scalars: targets)))
    }
}

/// Errors about language-model runs, one line each.
public struct LanguageModelRunError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The part of a run's `config.json` needed to rebuild its model.
public struct LanguageModelRunHeader: Codable, Sendable {
    public var task: String?
    public var model: String?
    public var languageModel: LanguageModelConfiguration?
}

extension CausalLanguageModel {
    /// Rebuilds the LM of a run directory (`config.json` + `model.safetensors`).
    public static func load(runDirectory: URL) throws -> CausalLanguageModel {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: runDirectory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw LanguageModelRunError("run directory '\(runDirectory.path)' does not exist")
        }
        return try load(weights: runDirectory.appendingPathComponent("model.safetensors"), config: runDirectory.appendingPathComponent("config.json"))
    }

    /// Rebuilds an LM from a weights file and a configuration file: a run's `config.json` (with a
    /// `languageModel` entry) or a bare `LanguageModelConfiguration` JSON.
    public static func load(weights: URL, config: URL) throws -> CausalLanguageModel {
        let fm = FileManager.default
        guard fm.fileExists(atPath: config.path) else { throw LanguageModelRunError("configuration file '\(config.path)' does not exist") }
        guard fm.fileExists(atPath: weights.path) else { throw LanguageModelRunError("weights file '\(weights.path)' does not exist") }
        let data: Data
        do { data = try Data(contentsOf: config) } catch { throw LanguageModelRunError("cannot read '\(config.path)': \(error.localizedDescription)") }
        let configuration: LanguageModelConfiguration
        if let header = try? JSONDecoder().decode(LanguageModelRunHeader.self, from: data), let lm = header.languageModel {
            configuration = lm
        } else if let lm = try? JSONDecoder().decode(LanguageModelConfiguration.self, from: data) {
            configuration = lm
        } else if let header = try? JSONDecoder().decode(LanguageModelRunHeader.self, from: data), header.task != nil || header.model != nil {
            throw LanguageModelRunError("'\(config.path)' describes a \(header.model ?? "?") model for task '\(header.task ?? "?")', not a causal language model (train one with --task lm)")
        } else {
            throw LanguageModelRunError("'\(config.path)' is not a language-model configuration (no 'languageModel' entry)")
        }
        try checkSize(configuration, source: config.path)
        do { try configuration.validate() } catch { throw LanguageModelRunError("'\(config.path)': \(error)") }
        var generator = RandomGenerator(seed: 0)
        let model = try CausalLanguageModel(configuration: configuration, generator: &generator)
        // Dropout changes nothing at inference, so a config.json that differs only there still loads.
        do { try model.loadWeights(from: weights, configuration: configuration, source: config.path, ignoring: ["dropout"]) }
        catch let e as UserError { throw e } catch { throw LanguageModelRunError("\(error)") }
        model.eval()
        return model
    }

    /// Refuses a configuration whose sizes are out of range or whose weights would not fit in memory,
    /// before anything is allocated (a hand-edited `config.json` must not hang or trap the loader).
    static func checkSize(_ c: LanguageModelConfiguration, source: String) throws {
        for (field, value, limit) in [("dimensions", c.dimensions, 1 << 16), ("layers", c.layers, 1024), ("heads", c.heads, 1024),
                                      ("feedForwardDimensions", c.feedForwardDimensions, 1 << 18), ("vocabularySize", c.vocabularySize, 1 << 24)]
            where !(1...limit).contains(value) {
            throw UserError(what: "\(source): \(field)", value: String(value), why: "must be in 1...\(limit)")
        }
        let d = Double(c.dimensions), ff = Double(c.feedForwardDimensions), v = Double(c.vocabularySize)
        let parameters = v * d * (c.tiedOutput ? 1 : 2) + Double(c.layers) * (4 * d * d + 2 * d * ff + 10 * d)
        let bytes = 4 * parameters + MemoryEstimate.fixedBytes
        if let available = MemoryEstimate.availableBytes(), bytes > available {
            throw UserError(what: "\(source)", value: String(format: "%.1f GiB of weights", bytes / Double(1 << 30)),
                            why: String(format: "does not fit the %.1f GiB available", available / Double(1 << 30)),
                            remedy: "check the model sizes in the configuration")
        }
    }

    /// Samples `count` tokens after `prompt` with the recurrent state (O(1) memory per token for the
    /// linear mixers), calling `emit` with each token as soon as it is drawn. Temperature 0 is greedy
    /// (the same tokens as `generate(…, temperature: 0)`); `topK` keeps the K most likely tokens
    /// (nil or 0: all). PAD/BOS/EOS are never sampled (the model is trained on bytes only).
    @discardableResult
    public func sampleBytes(prompt: [Int], count: Int, temperature: Float = 1, topK: Int? = nil, seed: UInt64 = 0,
                            emit: (Int) -> Void = { _ in }) throws -> [Int] {
        guard !prompt.isEmpty else { throw LanguageModelRunError("the prompt must hold at least one byte") }
        guard count >= 0 else { throw LanguageModelRunError("the number of tokens must be ≥ 0, got \(count)") }
        guard temperature >= 0, temperature.isFinite else { throw LanguageModelRunError("the temperature must be ≥ 0, got \(temperature)") }
        if let topK, topK < 0 { throw LanguageModelRunError("top-k must be ≥ 0, got \(topK)") }
        // A hand-written configuration may hold a vocabulary without the byte tokens: refuse it here
        // rather than trap in `step` or `draw`.
        let v = configuration.vocabularySize
        guard v > ByteCorpus.tokenOffset else {
            throw LanguageModelRunError("the model's vocabulary of \(v) tokens holds no byte tokens (ids ≥ \(ByteCorpus.tokenOffset))")
        }
        if let bad = prompt.first(where: { $0 < 0 || $0 >= v }) {
            throw LanguageModelRunError("prompt token \(bad) is outside the model's vocabulary 0..<\(v)")
        }
        let wasTraining = isTraining
        eval()
        defer { train(wasTraining) }
        var generator = RandomGenerator(seed: seed)
        var states = makeStates(batch: 1)
        var logits = Tensor(zeros: [1, configuration.vocabularySize])
        for (t, token) in prompt.enumerated() { logits = step([token], position: t, states: &states) }
        var out: [Int] = []
        for i in 0..<count {
            let next = Self.draw(logits.scalars, temperature: temperature, topK: topK, generator: &generator)
            out.append(next)
            emit(next)
            if i + 1 < count { logits = step([next], position: prompt.count + i, states: &states) }
        }
        return out
    }

    /// One token from logits over byte tokens (ids ≥ 3).
    static func draw(_ logits: [Float], temperature: Float, topK: Int?, generator: inout RandomGenerator) -> Int {
        let candidates = Array(ByteCorpus.tokenOffset..<logits.count)
        if temperature == 0 { return candidates.max { logits[$0] < logits[$1] || (logits[$0] == logits[$1] && $0 > $1) }! }
        var kept = candidates
        if let k = topK, k > 0, k < kept.count {
            kept.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
            kept = Array(kept.prefix(k))
        }
        let m = kept.map { logits[$0] }.max()!
        let weights = kept.map { Foundation.exp(Double((logits[$0] - m) / temperature)) }
        var u = generator.nextUniformDouble() * weights.reduce(0, +)
        for (i, w) in weights.enumerated() { u -= w; if u < 0 { return kept[i] } }
        return kept[kept.count - 1]
    }
}
