import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerModels
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerTraining

/// Parity with the PyTorch reference (`Scripts/reference/paramixer_reference.py`, fixtures in
/// `Tests/Fixtures/paramixer_*.safetensors` + `.json`), read with `SafeTensors`. Weights are loaded
/// strictly by name, so this also checks that every Swift parameter name and shape matches the
/// reference module 1:1.
/// Tolerance: logits, loss and every parameter gradient within 1e-4 of the reference tensor's
/// max-abs (the reference runs in float64, LongMixer in float32).
@Suite("ParamixerParity")
struct ParamixerParityTests {
    static let cases = [
        "chord_n16_flatten_1block",
        "cdil_n16_cls_2blocks",
        "chord_n37_flatten_2blocks",
        "cdil_n37_cls_1block_floor",
        "cdil_n8_flatten_2blocks",
        "adding_n16_chord_flatten",
        "order_n32_blockinput_2blocks",     // residual: block-input
        "adding_n21_cdil_blockinput",
    ]

    @Test("logits, loss and every parameter gradient match PyTorch", arguments: cases)
    func parity(name: String) throws {
        // fixtureURL (TestSupport.swift) finds Tests/Fixtures from #filePath.
        let configuration = try JSONDecoder().decode(ParamixerConfiguration.self,
                                                     from: Data(contentsOf: fixtureURL("paramixer_\(name).json")))
        let fixture = try SafeTensors.load(from: fixtureURL("paramixer_\(name).safetensors"))
        func float(_ key: String) throws -> Tensor { try #require(fixture[key]?.floatTensor, "\(name): \(key) missing from the fixture") }
        var generator = RandomGenerator(seed: 0)
        let model = try Paramixer(configuration: configuration, generator: &generator)
        model.eval()

        // Strict 1:1 load: every Swift parameter name present with its shape, no extra names.
        var weights: [String: NamedTensor] = [:]
        for (key, tensor) in fixture where key.hasPrefix("param.") { weights[String(key.dropFirst(6))] = tensor }
        try model.loadStateDictionary(weights)
        #expect(Set(model.namedParameters().map(\.0)) == Set(weights.keys))

        let input: SequenceInput
        if let tokens = fixture["input.tokens"]?.intTensor { input = .tokens(tokens) } else { input = .features(try float("input.features")) }
        let logits = model(input)
        let referenceLogits = try float("logits")
        #expect(logits.shape == referenceLogits.shape)
        let logitError = relativeError(logits.value, referenceLogits)
        #expect(logitError <= 1e-4, "\(name): logits relative error \(logitError)")

        let loss: Variable
        if let classes = fixture["targets.classes"]?.intTensor {
            loss = crossEntropy(logits: logits, targets: classes)
        } else {
            loss = meanSquaredError(logits, Variable(try float("targets.values")))
        }
        let referenceLoss = try float("loss")
        #expect(abs(loss.value.scalar - referenceLoss[flat: 0]) <= 1e-4 * max(1, abs(referenceLoss[flat: 0])),
                "\(name): loss \(loss.value.scalar) vs \(referenceLoss[flat: 0])")

        try loss.backward()
        for (parameterName, parameter) in model.namedParameters() {
            let reference = try float("grad." + parameterName)
            let grad = try #require(parameter.grad, "\(parameterName) got no gradient")
            let error = relativeError(grad, reference)
            #expect(error <= 1e-4, "\(name): gradient of \(parameterName) relative error \(error)")
        }

        // The padding row's embedding gets exactly no gradient (the fixture's tails are padding).
        if let p = configuration.paddingIndex, let grad = model.namedParameters().first(where: { $0.0 == "embedding.weight" })?.1.grad {
            let d = configuration.embeddingSize
            #expect((0..<d).allSatisfy { grad[flat: p * d + $0] == 0 })
        }
    }
}
