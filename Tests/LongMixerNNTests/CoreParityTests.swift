import Foundation
import Testing
import LongMixerTestSupport
import LongMixerNN
import LongMixerCore
import LongMixerData
import LongMixerModels
import LongMixerTraining

// Parity with PyTorch for the core layers, autodiff and cross-entropy. Fixtures are written by
// `python3 Scripts/reference/core_parity.py` (see that script for the network and data):
// Tests/Fixtures/core_parity_weights.safetensors (the torch state_dict) and core_parity.safetensors
// (inputs, logits, loss, every gradient, and the optimizer results used by CoreOptimizerParityTests).

/// Embedding(11, 16, padding 0) → Linear(16, 32) → GELU → LayerNorm(32) → Dropout(0.1) → Linear(32, 5),
/// with property names matching the PyTorch module's state_dict names.
final class CoreParityNet: Module {
    static let classes = 5
    let embedding: Embedding
    let hidden: Linear
    let activation = Activation(.gelu)
    let norm: LayerNorm
    let dropout: Dropout
    let output: Linear

    override init() {
        var generator = RandomGenerator(seed: 99)   // overwritten by loadWeights
        embedding = Embedding(count: 11, dimensions: 16, paddingIndex: 0, generator: &generator)
        hidden = Linear(inputDimensions: 16, outputDimensions: 32, generator: &generator)
        norm = LayerNorm(dimensions: 32)
        dropout = Dropout(probability: 0.1, generator: &generator)
        output = Linear(inputDimensions: 32, outputDimensions: CoreParityNet.classes, generator: &generator)
    }

    /// tokens [B, N] → logits [B, N, classes]
    func callAsFunction(_ tokens: IntTensor) -> Variable {
        output(dropout(norm(activation(hidden(embedding(tokens))))))
    }

    /// Mean per-token cross-entropy, skipping targets equal to −100.
    func loss(_ tokens: IntTensor, _ targets: IntTensor) -> (logits: Variable, loss: Variable) {
        let logits = self(tokens)
        let loss = crossEntropy(logits: reshape(logits, [-1, CoreParityNet.classes]), targets: targets.reshaped([-1]), ignoreIndex: -100)
        return (logits, loss)
    }

    /// The network with the fixture's initial weights, in eval mode (dropout is the identity).
    static func fromFixture() throws -> CoreParityNet {
        let net = CoreParityNet()
        try net.loadWeights(from: fixtureURL("core_parity_weights.safetensors"))
        net.eval()
        return net
    }
}

/// The reference tensors of core_parity.safetensors.
struct CoreParityFixture {
    let tensors: [String: NamedTensor]
    init() throws { tensors = try SafeTensors.load(from: fixtureURL("core_parity.safetensors")) }

    func float(_ name: String) throws -> Tensor {
        guard let t = tensors[name]?.floatTensor else { throw SafeTensorsError("core_parity.safetensors has no float tensor \"\(name)\"") }
        return t
    }

    func int(_ name: String) throws -> IntTensor {
        guard let t = tensors[name]?.intTensor else { throw SafeTensorsError("core_parity.safetensors has no int tensor \"\(name)\"") }
        return t
    }
}

@Suite struct CoreParityTests {
    @Test func parameterNamesMatchThePyTorchStateDict() throws {
        let net = CoreParityNet()
        let weights = try SafeTensors.load(from: fixtureURL("core_parity_weights.safetensors"))
        #expect(Set(net.stateDictionary().keys) == Set(weights.keys))
        #expect(Set(weights.keys) == ["embedding.weight", "hidden.weight", "hidden.bias", "norm.weight", "norm.bias", "output.weight", "output.bias"])
    }

    @Test func logitsLossAndGradientsMatchPyTorch() throws {
        let fixture = try CoreParityFixture()
        let net = try CoreParityNet.fromFixture()
        let tokens = try fixture.int("tokens"), targets = try fixture.int("targets")
        #expect(tokens.shape == [4, 7] && targets.shape == [4, 7])
        #expect(targets.scalars.contains(-100) && tokens.scalars.contains(0))

        let (logits, loss) = net.loss(tokens, targets)
        expectClose(logits.value, try fixture.float("logits"), "logits")
        expectClose(loss.value, try fixture.float("loss"), "loss")

        try loss.backward()
        for (name, p) in net.namedParameters() {
            let grad = try #require(p.grad, "no gradient for \(name)")
            expectClose(grad, try fixture.float("grad.\(name)"), "grad.\(name)")
        }
        // The padding row of the embedding gets exactly zero gradient.
        let embeddingGrad = try #require(net.embedding.weight.grad)
        #expect(Array(embeddingGrad.scalars[0..<16]) == [Float](repeating: 0, count: 16))
    }
}
