import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels

/// A well-formed checkpoint with values that mean nothing (a permutation entry outside 0..<F, a decay
/// outside (0, 1], NaN where an index or a weight belongs) is one error naming the tensor at load,
/// never a trap on first use and never silent garbage; nothing is assigned when it is refused.
@Suite("Loaded state validation")
struct LoadValidationTests {
    static func tinyLanguageModel(_ kind: MixerKind = .causalPermuteFormer, sinusoidal: Bool = true) throws -> CausalLanguageModel {
        let c = LanguageModelConfiguration(dimensions: 16, heads: 2, layers: 2, feedForwardDimensions: 24, dropout: 0,
                                           mixer: MixerConfiguration(kind: kind), sinusoidalPositions: sinusoidal)
        var g = RandomGenerator(seed: 3)
        return try CausalLanguageModel(configuration: c, generator: &g)
    }

    /// The state dictionary with `transform` applied to the float tensor `name`.
    static func mutated(_ model: Module, _ name: String, _ transform: (inout [Float]) -> Void) -> [String: NamedTensor] {
        var state = model.stateDictionary()
        let t = state[name]!.floatTensor!
        var scalars = t.scalars
        transform(&scalars)
        state[name] = .float(Tensor(shape: t.shape, scalars: scalars))
        return state
    }

    func expectRefused(_ model: Module, _ state: [String: NamedTensor], naming tensor: String, _ needle: String,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        let before = model.stateDictionary().mapValues { $0.floatTensor!.scalars }
        let e = #expect(throws: UserError.self, sourceLocation: sourceLocation) { try model.loadStateDictionary(state) }
        #expect(e?.what == "tensor \"\(tensor)\"", "\(String(describing: e))", sourceLocation: sourceLocation)
        #expect(e?.description.contains(needle) == true, "\(String(describing: e))", sourceLocation: sourceLocation)
        #expect(model.stateDictionary().mapValues { $0.floatTensor!.scalars } == before, "partially loaded", sourceLocation: sourceLocation)
    }

    @Test("permutation tables: out of range (a flipped sign bit), fractional, NaN, repeated")
    func permutations() throws {
        let model = try Self.tinyLanguageModel()
        let name = "blocks.0.mixer.permutation"
        expectRefused(model, Self.mutated(model, name) { $0[3] = -$0[3] - 1 }, naming: name, "[0, 3]")
        expectRefused(model, Self.mutated(model, name) { $0[2] = 31 }, naming: name, "0..<8")
        expectRefused(model, Self.mutated(model, name) { $0[9] = 1.5 }, naming: name, "[1, 1]")
        expectRefused(model, Self.mutated(model, name) { $0[0] = .nan }, naming: name, "not a finite number")
        expectRefused(model, Self.mutated(model, name) { $0[1] = $0[0] }, naming: name, "appears twice")
        // After the refusals the model still generates (on the unvalidated loader, this trapped in CyclePermutation).
        var g = RandomGenerator(seed: 1)
        #expect(model.generate(prompt: [1, 70], count: 4, temperature: 0, generator: &g).count == 4)
    }

    @Test("decay rates outside (0, 1]")
    func decays() throws {
        let model = try Self.tinyLanguageModel()
        let name = "blocks.1.mixer.decay"
        for bad: Float in [1.5, 0, -0.5, .infinity] {
            expectRefused(model, Self.mutated(model, name) { $0[1] = bad }, naming: name, bad.isFinite ? "(0, 1]" : "finite")
        }
        try model.loadStateDictionary(Self.mutated(model, name) { $0[1] = 1 })     // 1: no decay, valid
    }

    @Test("non-finite weights anywhere")
    func weights() throws {
        let model = try Self.tinyLanguageModel()
        for (name, value) in [("embedding.weight", Float.nan), ("blocks.0.intermediate.bias", -.infinity), ("finalNorm.weight", .infinity)] {
            expectRefused(model, Self.mutated(model, name) { $0[$0.count - 1] = value }, naming: name, "not a finite number")
        }
    }

    @Test("the encoders' buffers: PermuteFormer permutations, the orthogonal basis")
    func encoders() throws {
        func encoder(_ kind: MixerKind) throws -> EncoderClassifier {
            let c = EncoderConfiguration(vocabularySize: 20, dimensions: 16, heads: 2, layers: 1, feedForwardDimensions: 24, dropout: 0,
                                         mixer: MixerConfiguration(kind: kind), classes: 3)
            var g = RandomGenerator(seed: 4)
            return try EncoderClassifier(configuration: c, generator: &g)
        }
        let permute = try encoder(.permuteFormer)
        let p = try #require(permute.namedBuffers().first { $0.0.hasSuffix("permutation") }?.0)
        expectRefused(permute, Self.mutated(permute, p) { $0[5] = -1 }, naming: p, "permutation")
        let orthogonal = try encoder(.orthogonalFormer)
        let basis = try #require(orthogonal.namedBuffers().first { $0.0.hasSuffix("basis") }?.0)
        expectRefused(orthogonal, Self.mutated(orthogonal, basis) { for k in 0..<8 { $0[k] *= 1.1 } }, naming: basis, "orthogonal")
    }

    @Test("a saved file whose tensors changed afterwards fails its checksum")
    func checksum() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-checksum-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        let model = try Self.tinyLanguageModel()
        try model.saveWeights(to: url)
        try model.loadWeights(from: url)
        var bytes = [UInt8](try Data(contentsOf: url))
        bytes[bytes.count - 3] ^= 0x01          // the low mantissa bit of a weight: still a finite, plausible value
        try Data(bytes).write(to: url)
        let e = #expect(throws: UserError.self) { try model.loadWeights(from: url) }
        #expect(e?.description.contains("checksum") == true, "\(String(describing: e))")
    }

    @Test("the configuration recorded in the weights must match config.json (sinusoidalPositions, normalized)")
    func storedConfiguration() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try Self.tinyLanguageModel()
        let weights = folder.appendingPathComponent("model.safetensors")
        let trained = model.configuration
        try model.saveWeights(to: weights, metadata: [StoredConfiguration.metadataKey: String(decoding: try JSONEncoder().encode(trained), as: UTF8.self)])
        func config(_ transform: (inout LanguageModelConfiguration) -> Void) throws -> URL {
            var c = trained
            transform(&c)
            let url = folder.appendingPathComponent("config-\(UUID().uuidString).json")
            try JSONEncoder().encode(c).write(to: url)
            return url
        }
        // Same configuration, or one that differs only in dropout: loads.
        _ = try CausalLanguageModel.load(weights: weights, config: try config { _ in })
        _ = try CausalLanguageModel.load(weights: weights, config: try config { $0.dropout = 0.3 })
        // Same names and shapes, different model: refused, naming the field.
        for (field, transform) in [("sinusoidalPositions", { (c: inout LanguageModelConfiguration) in c.sinusoidalPositions = false }),
                                   ("mixer.normalized", { (c: inout LanguageModelConfiguration) in c.mixer.normalized = true })] {
            let url = try config(transform)
            let e = #expect(throws: UserError.self) { try CausalLanguageModel.load(weights: weights, config: url) }
            #expect(e?.what == "\(url.path): \(field)", "\(String(describing: e))")
            #expect(e?.exitCode == 2)
        }
        // Weights without a recorded configuration (older runs, other writers) load as before.
        try model.saveWeights(to: weights)
        _ = try CausalLanguageModel.load(weights: weights, config: try config { $0.sinusoidalPositions = false })
    }
}
