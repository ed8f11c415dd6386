import Foundation
import Testing
import LongMixerTestSupport
import LongMixerTraining
@testable import LongMixerModels
import LongMixerCore
import LongMixerNN
import LongMixerData

/// Parity with the PyTorch reference (`Scripts/reference/attention_reference.py`; fixtures
/// `Tests/Fixtures/attention_*.safetensors` + `.json`): every mixer inside the pre-LN encoder (and
/// the causal mixers inside the LM). Parameters and buffers are loaded by name, so this also
/// checks that every Swift parameter/buffer name and shape matches the reference 1:1. Logits, loss
/// and every parameter gradient within 1e-4 of the reference tensor's max-abs (the reference runs
/// in float64, LongMixer in float32). The reference uses the naive forms (expanded permutation
/// tables, explicit R^t matrix powers, N×N causal decay matrices), so the fused ops are checked too.
@Suite("AttentionParity")
struct AttentionParityTests {
    static let encoderCases = [
        "softmax_learned", "softmax_sinusoidal_binary", "performer", "permuteformer", "permuteformer2d_binary",
        "ropeperformer", "favor", "orthogonalformer", "permuteformer_retrieval",
        // Real-valued input, regression head, mean / flatten pooling.
        "permuteformer_features_flatten_regression", "softmax_sinusoidal_mean", "performer_features_learned_mean_regression",
    ]
    static let languageModelCases = [
        "lm_causalpermuteformer", "lm_causalpermuteformer_normalized_untied", "lm_causalpermuteformer_nodecay",
        "lm_causaldecayperformer", "lm_causalperformer", "lm_causalsoftmax",
    ]

    static var fixturesDirectory: URL {
        // …/Tests/LongMixerNNTests/AttentionParityTests.swift → package root → Tests/Fixtures
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tests/Fixtures")
    }

    /// The fixture's float tensors by name.
    struct Fixture {
        let tensors: [String: NamedTensor]
        init(_ url: URL) throws { tensors = try SafeTensors.load(from: url) }
        func float(_ name: String) throws -> Tensor { try #require(tensors[name]?.floatTensor, "\(name) missing from the fixture") }
        func int(_ name: String) -> IntTensor? { tensors[name]?.intTensor }
        /// `param.<name>` and `buffer.<name>` with the prefixes dropped: a state dictionary.
        var stateDictionary: [String: NamedTensor] {
            var out: [String: NamedTensor] = [:]
            for (key, value) in tensors {
                if key.hasPrefix("param.") { out[String(key.dropFirst(6))] = value }
                if key.hasPrefix("buffer.") { out[String(key.dropFirst(7))] = value }
            }
            return out
        }
    }

    /// Loads parameters and buffers by name with the strict loader (every name present, same
    /// shapes, nothing extra), so Swift and PyTorch names agree 1:1.
    static func load(_ fixture: Fixture, into model: Module) throws {
        try model.loadStateDictionary(fixture.stateDictionary)
    }

    static func checkGradients(_ fixture: Fixture, model: Module, name: String) throws {
        for (parameterName, parameter) in model.namedParameters() {
            let reference = try fixture.float("grad." + parameterName)
            let grad = try #require(parameter.grad, "\(name): \(parameterName) got no gradient")
            var scale: Float = 0
            for i in 0..<reference.count { scale = max(scale, abs(reference[flat: i])) }
            if scale < 1e-7 {
                // Mathematically zero (softmax attention's key bias: a constant shift of every score of a
                // query): float64 gives ~1e-17, float32 rounding ~1e-8, so compare absolutely.
                let values = grad.scalars
                #expect(values.allSatisfy { abs($0) <= 1e-5 }, "\(name): gradient of \(parameterName) should vanish, got \(values.prefix(4))…")
                continue
            }
            expectClose(grad, reference, tolerance: 1e-4, "\(name): gradient of \(parameterName)")
        }
    }

    @Test("encoder: logits, loss and every parameter gradient match PyTorch", arguments: encoderCases)
    func encoderParity(name: String) throws {
        let base = Self.fixturesDirectory.appendingPathComponent("attention_\(name)")
        let configuration = try JSONDecoder().decode(EncoderConfiguration.self, from: Data(contentsOf: base.appendingPathExtension("json")))
        let fixture = try Fixture(base.appendingPathExtension("safetensors"))
        var generator = RandomGenerator(seed: 0)
        let model = try EncoderClassifier(configuration: configuration, generator: &generator)
        model.eval()
        try Self.load(fixture, into: model)

        let input: SequenceInput
        if let features = fixture.tensors["input.features"] {
            input = .features(try #require(features.floatTensor))
        } else {
            input = .tokens(try #require(fixture.int("input.tokens")))
        }
        let logits = model(input)
        expectClose(logits.value, try fixture.float("logits"), tolerance: 1e-4, "\(name): logits")

        let loss: Variable
        if let classes = fixture.int("targets.classes") {
            loss = crossEntropy(logits: logits, targets: classes)
        } else if configuration.head == .regression {
            loss = meanSquaredError(logits, Variable(try fixture.float("targets.values")))
        } else {
            loss = binaryCrossEntropy(logits: logits, targets: try fixture.float("targets.values"))
        }
        let referenceLoss = try fixture.float("loss")[flat: 0]
        #expect(abs(loss.value.scalar - referenceLoss) <= 1e-4 * max(1, abs(referenceLoss)), "\(name): loss \(loss.value.scalar) vs \(referenceLoss)")
        try loss.backward()
        try Self.checkGradients(fixture, model: model, name: name)
    }

    @Test("language model: logits (parallel and recurrent), loss and every parameter gradient match PyTorch", arguments: languageModelCases)
    func languageModelParity(name: String) throws {
        let base = Self.fixturesDirectory.appendingPathComponent("attention_\(name)")
        let configuration = try JSONDecoder().decode(LanguageModelConfiguration.self, from: Data(contentsOf: base.appendingPathExtension("json")))
        let fixture = try Fixture(base.appendingPathExtension("safetensors"))
        var generator = RandomGenerator(seed: 0)
        let model = try CausalLanguageModel(configuration: configuration, generator: &generator)
        model.eval()
        try Self.load(fixture, into: model)

        let ids = try #require(fixture.int("input.tokens"))
        let referenceLogits = try fixture.float("logits")
        expectClose(model(ids).value, referenceLogits, tolerance: 1e-4, "\(name): logits")
        expectClose(model.recurrentLogits(ids), referenceLogits, tolerance: 1e-4, "\(name): recurrent logits")

        let loss = try model.objective.nextTokenLoss(logits: model(ids), ids: ids)
        let referenceLoss = try fixture.float("loss")[flat: 0]
        #expect(abs(loss.value.scalar - referenceLoss) <= 1e-4 * max(1, abs(referenceLoss)), "\(name): loss \(loss.value.scalar) vs \(referenceLoss)")
        try loss.backward()
        try Self.checkGradients(fixture, model: model, name: name)
    }
}
