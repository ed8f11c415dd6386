import Testing
import LongMixerTestSupport
import LongMixerCore
import LongMixerNN
import LongMixerData
@testable import LongMixerModels

/// The registry builds every model, bidirectional or causal, as one `SequenceStack` for any task shape,
/// and refuses the shapes a model cannot serve before building anything.
@Suite("Model registry and the one stack")
struct ModelRegistryTests {
    static func build(_ name: String, _ shape: ModelTaskShape, _ options: ModelOptions = ModelOptions()) throws -> BuiltModel {
        var generator = RandomGenerator(seed: 1)
        return try ModelRegistry.build(try ModelRegistry.entry(name), for: shape, taskName: "t", options: options, generator: &generator)
    }

    static func message(_ body: () throws -> Void) -> String {
        do { try body(); return "" } catch { return "\(error)" }
    }

    @Test("every bidirectional model is a SequenceStack with its family's block kind")
    func everyModelIsOneStack() throws {
        let shape = ModelTaskShape(input: .tokens(vocabulary: 10, paddingIndex: 0), objective: .classes, length: 16, outputs: 3)
        for entry in ModelRegistry.entries where entry.mixer != nil || entry.family == .paramixer {
            if entry.needsGrid { continue }
            let built = try Self.build(entry.name, shape)
            let stack = try #require(built.model as? SequenceStack, "\(entry.name)")
            let blockKinds = Set(stack.stackBlocks.map { "\(type(of: $0))" })
            #expect(blockKinds == [entry.family == .paramixer ? "ParamixerBlock" : "EncoderBlock"], "\(entry.name)")
            let out = stack(.tokens(IntTensor(shape: [2, 16], scalars: (0..<32).map { Int32($0 % 9 + 1) })))
            #expect(out.shape == [2, 3], "\(entry.name)")
            // Parameter names are the stages' own plus one prefix per block: nothing nested under a stage.
            let names = stack.namedParameters().map(\.0)
            #expect(Set(names).count == names.count, "\(entry.name): duplicate parameter names")
            let prefix = entry.family == .paramixer ? "attention.0." : "blocks.0."
            #expect(names.contains { $0.hasPrefix(prefix) }, "\(entry.name): \(names)")
        }
    }

    @Test("every causal model is the same SequenceStack: pre-LN EncoderBlocks around causal mixers, logits per position")
    func everyCausalModelIsOneStack() throws {
        let v = 259, n = 16
        let shape = ModelTaskShape(input: .tokens(vocabulary: v, paddingIndex: 0), length: n, outputs: v, causal: true)
        let options = ModelOptions(dimensions: 16, layers: 2, heads: 2, feedForward: 32, dropout: 0)
        let ids = IntTensor(shape: [2, n], scalars: (0..<(2 * n)).map { Int32(3 + ($0 * 37) % 256) })
        for entry in ModelRegistry.entries where entry.causalMixer != nil {
            let built = try Self.build(entry.name, shape, options)
            let lm = try #require(built.model as? CausalLanguageModel, "\(entry.name)")
            let stack: SequenceStack = lm
            #expect(Set(stack.stackBlocks.map { "\(type(of: $0))" }) == ["EncoderBlock"], "\(entry.name)")
            #expect(stack.stackBlocks.count == 2 && stack.blockPrefix == "blocks", "\(entry.name)")
            #expect(lm.blocks.allSatisfy { $0.mixer is any CausalSequenceMixer && $0.activation.kind == .relu }, "\(entry.name)")
            #expect(lm.blocks.allSatisfy { $0.attentionNorm.epsilon == 1e-5 }, "\(entry.name)")
            lm.eval()
            let logits = stack(.tokens(ids))
            #expect(logits.shape == [2, n, v], "\(entry.name)")
            // The stack's forward pass and the blocks' one-token steps are the same model.
            #expect(relativeError(lm.recurrentLogits(ids), logits.value) < 1e-4, "\(entry.name)")
            #expect(Self.message { try stack.check(.features(Tensor(zeros: [2, n, 3]))) }.contains("reads token ids"), "\(entry.name)")
            #expect(Self.message { try stack.check(.tokens(IntTensor(shape: [1, 2], scalars: [3, 259]))) }
                .contains("token id 259 at batch 0, position 1 is outside the vocabulary 0..<259"), "\(entry.name)")
        }
    }

    @Test("the language model's parameter names and order are those from before the stack (checkpoints and optimizer state load)")
    func languageModelParameterNames() throws {
        var g = RandomGenerator(seed: 1)
        let tied = try CausalLanguageModel(configuration: LanguageModelConfiguration(dimensions: 8, heads: 2, layers: 1, feedForwardDimensions: 16),
                                           generator: &g)
        let block = ["attentionNorm.weight", "attentionNorm.bias", "mixer.query.weight", "mixer.query.bias", "mixer.key.weight",
                     "mixer.key.bias", "mixer.value.weight", "mixer.value.bias", "mixer.output.weight", "mixer.output.bias",
                     "feedForwardNorm.weight", "feedForwardNorm.bias", "intermediate.weight", "intermediate.bias", "output.weight",
                     "output.bias"].map { "blocks.0." + $0 }
        #expect(tied.namedParameters().map(\.0) == ["embedding.weight"] + block + ["finalNorm.weight", "finalNorm.bias"])
        #expect(tied.namedBuffers().map(\.0) == ["blocks.0.mixer.permutation", "blocks.0.mixer.decay"])
        #expect(tied.namedRandomStreams().map(\.0) == ["embeddingDropout.random", "blocks.0.dropout.random"])
        let untied = try CausalLanguageModel(configuration: LanguageModelConfiguration(dimensions: 8, heads: 2, layers: 1, feedForwardDimensions: 16,
                                                                                       tiedOutput: false), generator: &g)
        #expect(untied.namedParameters().map(\.0) == ["embedding.weight"] + block + ["finalNorm.weight", "finalNorm.bias", "outputProjection.weight"])
    }

    @Test("document pairs: the encoder takes the two-tower head, Paramixer refuses")
    func pairs() throws {
        let shape = ModelTaskShape(input: .tokens(vocabulary: 20, paddingIndex: 0), objective: .binary, length: 8, outputs: 1, pair: true)
        let built = try Self.build("permuteformer", shape)
        let encoder = try #require(built.model as? EncoderClassifier)
        #expect(encoder.configuration.head == .retrieval)
        let ids = IntTensor(shape: [3, 16], scalars: (0..<48).map { Int32($0 % 19 + 1) })
        #expect(encoder(.tokens(ids)).shape == [3, 1])
        #expect(Self.message { _ = try Self.build("paramixer", shape) }.contains("no matching head"))
        let features = ModelTaskShape(input: .features(2), objective: .binary, length: 8, outputs: 1, pair: true)
        #expect(Self.message { _ = try Self.build("transformer", features) }.contains("token ids with a binary label"))
    }

    @Test("an image grid reaches the 2D mixer; without one the 2D model is refused")
    func grids() throws {
        let grid = ImageGrid(width: 4, height: 3, prefix: 1, suffix: 1)
        let shape = ModelTaskShape(input: .tokens(vocabulary: 259, paddingIndex: 0), objective: .classes, length: grid.length, outputs: 10,
                                   grid: grid)
        let built = try Self.build("permuteformer-2d", shape)
        let encoder = try #require(built.model as? EncoderClassifier)
        #expect(encoder.configuration.mixer.grid == grid)
        let flat = ModelTaskShape(input: .tokens(vocabulary: 259, paddingIndex: 0), objective: .classes, length: 14, outputs: 10)
        #expect(Self.message { _ = try Self.build("permuteformer-2d", flat) }.contains("needs an image grid"))
    }
}
