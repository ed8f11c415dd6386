import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerData

/// Causal PermuteFormer and its byte-level language model, following the released WikiText-103
/// LM of PermuteFormer (`cpcp1998/PermuteFormer`, `language_model/{permute,permute-r,permute-p,
/// performer}/__init__.py` on fairseq's `transformer_lm`, `run_permute.sh`):
///
/// - mixer: q, k, v projections of width D (feature width = head width, `featureMultiplier` 1),
///   no 1/√d scaling, φ = ReLU + 10⁻³, permutation π_h^t on q and k (shared by all layers), per-head
///   decay r_h = sigmoid(2 + 3h/H) giving scores r_h^(i−j) (i ≥ j), causal linear attention,
///   output projection. **Un-normalised by default**: the released LM calls fast-transformers'
///   `causal_dot_product`, which has no denominator (the paper presumably normalises; set
///   `normalized: true` for that). The decay is computed by the fused chunked op (never r^−j), so it
///   does not overflow for long sequences as the reference's `r^i`/`r^−j` scaling does beyond ~700
///   tokens. Ablations: `causalPermuteFormerNoDecay` (w/o r), `causalDecayPerformer` (w/o P),
///   `causalPerformer` (neither; the Performer LM baseline); `causalSoftmax` is the Transformer baseline.
/// - block (fairseq decoder layer, `decoder_normalize_before = True`): x + Drop(Out(Attn(LN x))),
///   x + Drop(FC₂(ReLU(FC₁(LN x)))), the encoder's pre-LN `EncoderBlock` around a causal mixer
///   (LayerNorm ε 1e-5, ReLU); a final LayerNorm after the last block.
/// - model: embeddings scaled by √D (fairseq `embed_scale`) + sinusoidal positions (fairseq's
///   half-sin/half-cos layout; positions counted from 0 here, fairseq starts at padding_idx + 1 —
///   irrelevant for the relative mixers, a constant shift for the absolute table), dropout; output
///   projection tied to the input embedding (`--share-decoder-input-output-embed`) or untied.
/// - init (fairseq): embedding N(0, D^(−1/2)) with the padding row zero; q/k/v weights Xavier-uniform
///   with gain 1/√2 and PyTorch-default biases, output projection Xavier-uniform with zero bias
///   (`MultiheadAttention.reset_parameters`); FFN Linear layers PyTorch's default; untied output
///   projection N(0, D^(−1/2)).
/// - vocabulary: bytes, PAD 0, BOS 1, EOS 2, byte b ↦ b + 3 (V = 259), as the LRA byte tasks.
/// - the model is a `SequenceStack`: input stage (embedding, positions), the blocks, output stage
///   (final LayerNorm, projection to the vocabulary at every position). Parameter names are those of
///   `Scripts/reference/attention_reference.py` (`embedding`, `blocks.<l>.…`, `finalNorm`,
///   `outputProjection`), so its fixtures and every LM checkpoint load as they are.
///
/// `generate` and `recurrentLogits` run one token at a time with one `CausalLinearAttentionState`
/// per layer: O(1) memory per token (H·F·Dh floats per layer), logits equal to the parallel form
/// (the `causalSoftmax` baseline keeps a key/value cache instead).

// MARK: - Mixer

public final class CausalPermuteFormerAttention: PerformerAttention, CausalSequenceMixer {
    /// π_h as index arrays [H, F] (nil without permutation).
    public let permutation: Buffer?
    /// r_h [H] (nil without decay).
    public let decay: Buffer?
    public let normalized: Bool
    public let chunkSize: Int

    /// The reference per-head decay, r_h = sigmoid(2 + 3h/H).
    public static func referenceDecay(heads: Int) -> [Float] {
        (0..<heads).map { h in Float(1 / (1 + Foundation.exp(-(2 + 3 * Double(h) / Double(heads))))) }
    }

    public init(dimensions: Int, heads: Int, featureMultiplier: Int = 1, kernelEpsilon: Float = 1e-3, permute: Bool = true,
                decay: [Float]? = nil, normalized: Bool = false,
                permutationSeed: UInt64 = MixerConfiguration.referencePermutationSeed, chunkSize: Int = 64,
                generator: inout RandomGenerator) {
        checkHeads(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, name: "CausalPermuteFormerAttention")
        if let decay {
            check(decay.count == heads, "CausalPermuteFormerAttention: \(decay.count) decay rates for \(heads) heads")
            for (h, r) in decay.enumerated() {
                check(r > 0 && r <= 1, "CausalPermuteFormerAttention: decay r_\(h) = \(r) is outside (0, 1]")
            }
        }
        check(chunkSize >= 1, "CausalPermuteFormerAttention: chunkSize must be ≥ 1, got \(chunkSize)")
        if permute {
            var g = RandomGenerator(seed: permutationSeed)
            let size = featureMultiplier * dimensions / heads
            let permutations = (0..<heads).map { _ in CyclePermutation.random(size: size, generator: &g) }
            permutation = Buffer(PermuteFormerAttention.table(permutations))
        } else {
            permutation = nil
        }
        self.decay = decay.map { Buffer(Tensor(shape: [heads], scalars: $0)) }
        self.normalized = normalized
        self.chunkSize = chunkSize
        super.init(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, kernelEpsilon: kernelEpsilon,
                   generator: &generator)
    }

    /// The per-head permutations (from the buffer), or nil.
    public var permutations: [CyclePermutation]? {
        guard let t = permutation?.value else { return nil }
        let h = t.shape[0], size = t.shape[1]
        return (0..<h).map { head in CyclePermutation((0..<size).map { Int(t[flat: head * size + $0]) }) }
    }

    public var decayRates: [Float]? { decay?.value.scalars }

    public override func validateLoadedState(_ local: [String: Tensor]) throws {
        try super.validateLoadedState(local)
        try LoadedStateChecks.permutationTable(local["permutation"], tensor: "permutation")
        try LoadedStateChecks.decayRates(local["decay"], tensor: "decay")
    }

    override func encodePositions(queries: Variable, keys: Variable, positions: [Int]) -> (Variable, Variable) {
        guard let p = permutations else { return (queries, keys) }
        return (permuteFeatures(queries, permutations: p, positions: positions), permuteFeatures(keys, permutations: p, positions: positions))
    }

    override func attend(queries: Variable, keys: Variable, values: Variable, keyMask: Tensor?, positions: [Int]) -> Variable {
        check(keyMask == nil, "CausalPermuteFormerAttention: key padding masks are not supported by the causal mixer (pad at the end instead)")
        let (q, k) = encodePositions(queries: queries, keys: keys, positions: positions)
        return causalLinearAttention(queries: q, keys: k, values: values, decay: decayRates, normalized: normalized, chunkSize: chunkSize)
    }

    public func makeState(batch: Int) -> CausalMixerState {
        .linear(CausalLinearAttentionState(batch: batch, heads: heads, features: featuresPerHead, valueDimensions: headDimensions,
                                           decay: decayRates, normalized: normalized))
    }

    public func step(_ x: Variable, position: Int, state: inout CausalMixerState) -> Variable {
        guard case .linear(var linearState) = state else {
            fatalError("CausalPermuteFormerAttention.step: expected a linear-attention state, got \(state)")
        }
        defer { state = .linear(linearState) }
        check(x.rank == 3 && x.shape[1] == 1 && x.shape[2] == dimensions,
                     "CausalPermuteFormerAttention.step: input must be [B, 1, \(dimensions)], got \(x.shape)")
        let b = x.shape[0]
        let (q0, k0, v) = projectedFeatures(x)                                  // [B, H, 1, F], [B, H, 1, Dh]
        let (q, k) = encodePositions(queries: q0, keys: k0, positions: [position])
        let out = linearState.step(query: q.value.reshaped([b, heads, featuresPerHead]), key: k.value.reshaped([b, heads, featuresPerHead]),
                             value: v.value.reshaped([b, heads, headDimensions]))
        return output(Variable(out.reshaped([b, 1, dimensions])))
    }
}

// MARK: - Stages

/// The LM's input stage: token embeddings scaled by √D [+ sinusoidal positions] → dropout. No key
/// mask: the causal mixers take none (padding sits at the end, where no earlier position reads it).
final class LanguageModelInput: Module, SequenceInputStage {
    let configuration: LanguageModelConfiguration
    let embedding: Embedding
    let embeddingDropout: Dropout

    init(configuration c: LanguageModelConfiguration, generator: inout RandomGenerator) {
        configuration = c
        embedding = Embedding(count: c.vocabularySize, dimensions: c.dimensions, paddingIndex: c.paddingIndex,
                              standardDeviation: Float(1 / Double(c.dimensions).squareRoot()), generator: &generator)
        embeddingDropout = Dropout(probability: c.dropout, generator: &generator)
    }

    override func namedChildren() -> [(String, Module)] { [("embedding", embedding), ("embeddingDropout", embeddingDropout)] }

    /// Token ids [B, N], non-empty, inside the vocabulary.
    func check(_ input: SequenceInput) throws {
        let v = configuration.vocabularySize
        let ids: IntTensor
        switch input {
        case .tokens(let t): ids = t
        case .features(let x): throw AttentionConfigurationError(message: "a language model reads token ids [B, N], got real-valued features \(x.shape)")
        }
        guard ids.rank == 2, ids.shape[0] > 0, ids.shape[1] > 0 else {
            throw AttentionConfigurationError(message: "token ids must be a non-empty [B, N], got shape \(ids.shape)")
        }
        for (i, id) in ids.scalars.enumerated() where id < 0 || Int(id) >= v {
            throw AttentionConfigurationError(message: "token id \(id) at batch \(i / ids.shape[1]), position \(i % ids.shape[1]) is outside the vocabulary 0..<\(v)")
        }
    }

    /// Scaled embeddings + positions [B, N, D] of ids [B, N] at absolute `positions` (N of them).
    func embed(_ ids: IntTensor, positions: [Int]) -> Variable {
        let d = configuration.dimensions
        var h = embedding(ids) * Float(Double(d).squareRoot())
        if configuration.sinusoidalPositions { h = h + Variable(sinusoidalPositions(positions, dimensions: d)) }   // + [N, D]
        return embeddingDropout(h)
    }

    func callAsFunction(_ input: SequenceInput) -> (embedded: Variable, stream: Variable, keyMask: Tensor?) {
        guard case .tokens(let ids) = input else { fatalError("unreachable: check(_:) admits only token ids") }
        let h = embed(ids, positions: Array(0..<ids.shape[1]))
        return (h, h, nil)
    }
}

/// The LM's output stage: the final LayerNorm and the output projection at every position (no
/// pooling): hidden states [B, N, D] → logits [B, N, V].
final class LanguageModelOutput: Module, SequenceOutputStage {
    let finalNorm: LayerNorm
    /// Untied output projection Linear(D, V, no bias) (nil when tied to `embedding`).
    let outputProjection: Linear?
    /// The input stage's embedding [V, D], read by the tied projection; its weight is named (and
    /// saved) by the input stage only, so it is no child here.
    let embedding: Embedding

    init(configuration c: LanguageModelConfiguration, embedding: Embedding, generator: inout RandomGenerator) {
        finalNorm = LayerNorm(dimensions: c.dimensions)
        outputProjection = c.tiedOutput ? nil
            : Linear(inputDimensions: c.dimensions, outputDimensions: c.vocabularySize, bias: false,
                     standardDeviation: Float(1 / Double(c.dimensions).squareRoot()), generator: &generator)
        self.embedding = embedding
    }

    override func namedChildren() -> [(String, Module)] {
        [("finalNorm", finalNorm as Module)] + (outputProjection.map { [("outputProjection", $0 as Module)] } ?? [])
    }

    /// Logits [B, N, V] of hidden states h [B, N, D].
    func logits(_ h: Variable) -> Variable {
        let normed = finalNorm(h)
        if let outputProjection { return outputProjection(normed) }
        return matmul(normed, embedding.weight, transposeB: true)
    }

    func callAsFunction(_ input: SequenceInput, encode: (SequenceInput) -> (hidden: Variable, keyMask: Tensor?)) -> Variable {
        logits(encode(input).hidden)
    }
}

// MARK: - Model

/// Decoder-only byte-level LM: the `SequenceStack` with the LM's input stage, pre-LN `EncoderBlock`s
/// around causal mixers (fairseq's decoder layer) and the final norm + output projection.
/// `callAsFunction(ids)` → logits [B, N, V] (position t predicts token t + 1).
public final class CausalLanguageModel: SequenceStack {
    public let configuration: LanguageModelConfiguration
    public let blocks: [EncoderBlock]
    let input: LanguageModelInput
    let output: LanguageModelOutput

    public init(configuration: LanguageModelConfiguration, generator: inout RandomGenerator) throws {
        try configuration.validate()
        self.configuration = configuration
        let c = configuration
        // Draw order: embedding, its dropout, the blocks, their fairseq re-initialisation, the untied projection.
        let input = LanguageModelInput(configuration: c, generator: &generator)
        let blocks = EncoderBlock.layers(c.layers, dimensions: c.dimensions, heads: c.heads, feedForwardDimensions: c.feedForwardDimensions,
                                         mixer: c.mixer, dropout: c.dropout, layerNormEpsilon: Self.layerNormEpsilon,
                                         activation: c.activation, generator: &generator)
        guard blocks.allSatisfy({ $0.mixer is any CausalSequenceMixer }) else {
            throw AttentionConfigurationError(message: "the language model needs a causal mixer, got \(c.mixer.kind.rawValue)")
        }
        for block in blocks { Self.fairseqInitialize(block, generator: &generator) }
        self.blocks = blocks
        self.input = input
        output = LanguageModelOutput(configuration: c, embedding: input.embedding, generator: &generator)
        super.init(inputStage: input, blocks: blocks, blockPrefix: "blocks", outputStage: output)
    }

    /// fairseq's (and PyTorch's) LayerNorm ε.
    static let layerNormEpsilon: Float = 1e-5

    /// Token embedding [V, D] (also the output projection when tied).
    public var embedding: Embedding { input.embedding }
    public var finalNorm: LayerNorm { output.finalNorm }
    /// Untied output projection Linear(D, V, no bias) (nil when tied to `embedding`).
    public var outputProjection: Linear? { output.outputProjection }

    /// Re-draws a block's weights with fairseq's initialisation (see the file comment).
    static func fairseqInitialize(_ block: EncoderBlock, generator: inout RandomGenerator) {
        func xavier(_ linear: Linear, gain: Double) -> Tensor {
            let fanOut = linear.weight.shape[0], fanIn = linear.weight.shape[1]
            let bound = Float(gain * (6 / Double(fanIn + fanOut)).squareRoot())
            return .uniform(linear.weight.shape, low: -bound, high: bound, generator: &generator)
        }
        func defaultInit(_ linear: Linear) {
            let fanIn = linear.weight.shape[1]
            linear.weight.value = Initializer.linearUniform(linear.weight.shape, fanIn: fanIn, generator: &generator)
            if let bias = linear.bias { bias.value = Initializer.linearUniform(bias.shape, fanIn: fanIn, generator: &generator) }
        }
        if let attention = block.mixer as? any ProjectedAttention {
            for projection in [attention.query, attention.key, attention.value] {
                defaultInit(projection)
                projection.weight.value = xavier(projection, gain: 1 / 2.0.squareRoot())
            }
            attention.output.weight.value = xavier(attention.output, gain: 1)
            if let bias = attention.output.bias { bias.value = Tensor(zeros: bias.shape) }
        }
        defaultInit(block.intermediate)
        defaultInit(block.output)
    }

    /// Stops with the input stage's message when `ids` is not a non-empty [B, N] inside the vocabulary.
    func checkTokens(_ ids: IntTensor) {
        // fatalError keeps the message in optimised builds (precondition would drop it).
        do { try check(.tokens(ids)) } catch { fatalError("CausalLanguageModel: \(error)") }
    }

    /// Parallel (training) form: logits [B, N, V] of ids [B, N]; the stack's forward pass.
    public func callAsFunction(_ ids: IntTensor) -> Variable { self(.tokens(ids)) }

    /// Fresh per-layer recurrent states.
    public func makeStates(batch: Int) -> [CausalMixerState] { blocks.map { $0.makeState(batch: batch) } }

    /// One token per row: ids [B] at absolute `position`; returns logits [B, V] and advances `states`.
    /// The stack's stages and blocks, one position at a time.
    public func step(_ ids: [Int], position: Int, states: inout [CausalMixerState]) -> Tensor {
        LongMixerCore.check(states.count == blocks.count, "CausalLanguageModel.step: \(states.count) states for \(blocks.count) layers")
        let v = configuration.vocabularySize
        if let bad = ids.first(where: { $0 < 0 || $0 >= v }) {
            fatalError("CausalLanguageModel.step: token id \(bad) is outside the vocabulary 0..<\(v)")
        }
        let tokens = IntTensor(shape: [ids.count, 1], scalars: ids.map { Int32($0) })
        checkTokens(tokens)
        return withoutGradient {
            var h = input.embed(tokens, positions: [position])                   // [B, 1, D]
            for (l, block) in blocks.enumerated() { h = block.step(h, position: position, state: &states[l]) }
            return output.logits(h).value.reshaped([ids.count, v])
        }
    }

    /// The logits of the parallel form, computed token by token with the recurrent states: [B, N, V].
    /// Runs in evaluation mode (no dropout), restoring the training flag afterwards.
    public func recurrentLogits(_ ids: IntTensor) -> Tensor {
        checkTokens(ids)
        let wasTraining = isTraining
        eval()
        defer { train(wasTraining) }
        let b = ids.shape[0], n = ids.shape[1], v = configuration.vocabularySize
        var states = makeStates(batch: b)
        var out = Tensor(uninitializedShape: [b, n, v])
        for t in 0..<n {
            let column = (0..<b).map { Int(ids.scalars[$0 * n + t]) }
            let logits = step(column, position: t, states: &states)
            out.withUnsafeMutablePointer { o in
                for r in 0..<b { (o + (r * n + t) * v).update(from: logits.pointer + r * v, count: v) }
            }
        }
        return out
    }

    /// Continues `prompt` (token ids, at least one) by `count` tokens, sampling from softmax(logits /
    /// temperature) (temperature 0: greedy). O(1) memory per generated token. Runs in evaluation mode
    /// (no dropout), restoring the training flag afterwards.
    public func generate(prompt: [Int], count: Int, temperature: Float = 1, generator: inout RandomGenerator) -> [Int] {
        LongMixerCore.check(!prompt.isEmpty, "CausalLanguageModel.generate: the prompt must hold at least one token (e.g. BOS = 1)")
        LongMixerCore.check(count >= 0 && temperature >= 0, "CausalLanguageModel.generate: count \(count) and temperature \(temperature) must be ≥ 0")
        let wasTraining = isTraining
        eval()
        defer { train(wasTraining) }
        var states = makeStates(batch: 1)
        var logits = Tensor(zeros: [1, configuration.vocabularySize])
        for (t, token) in prompt.enumerated() { logits = step([token], position: t, states: &states) }
        var out: [Int] = []
        for i in 0..<count {
            let next = Self.sample(logits.scalars, temperature: temperature, generator: &generator)
            out.append(next)
            if i + 1 < count { logits = step([next], position: prompt.count + i, states: &states) }
        }
        return out
    }

    static func sample(_ logits: [Float], temperature: Float, generator: inout RandomGenerator) -> Int {
        if temperature == 0 { return logits.indices.max { logits[$0] < logits[$1] }! }
        let m = logits.max()!
        let weights = logits.map { Foundation.exp(Double(($0 - m) / temperature)) }
        var u = generator.nextUniformDouble() * weights.reduce(0, +)
        for (i, w) in weights.enumerated() { u -= w; if u < 0 { return i } }
        return logits.count - 1
    }
}

/// Byte vocabulary of the LM: PAD 0, BOS 1, EOS 2, byte b ↦ b + 3.
public enum ByteVocabulary {
    public static let pad = 0, bos = 1, eos = 2, size = 259
    public static func encode(_ text: String) -> [Int] { [bos] + text.utf8.map { Int($0) + 3 } }
    public static func decode(_ ids: [Int]) -> String {
        String(decoding: ids.filter { $0 >= 3 && $0 < size }.map { UInt8($0 - 3) }, as: UTF8.self)
    }
}

// MARK: - Configuration

public struct LanguageModelConfiguration: Codable, Equatable, Sendable {
    public var vocabularySize: Int
    public var dimensions: Int
    public var heads: Int
    public var layers: Int
    public var feedForwardDimensions: Int
    public var dropout: Float
    /// A causal mixer kind (default `causalPermuteFormer`, un-normalised, featureMultiplier 1).
    public var mixer: MixerConfiguration
    /// Add fairseq sinusoidal absolute positions (the reference LM keeps them).
    public var sinusoidalPositions: Bool
    /// Output projection = input embedding (`--share-decoder-input-output-embed`).
    public var tiedOutput: Bool
    public var activation: Activation.Kind
    public var paddingIndex: Int

    public init(vocabularySize: Int = ByteVocabulary.size, dimensions: Int, heads: Int, layers: Int, feedForwardDimensions: Int,
                dropout: Float = 0.1, mixer: MixerConfiguration = MixerConfiguration(kind: .causalPermuteFormer),
                sinusoidalPositions: Bool = true, tiedOutput: Bool = true, activation: Activation.Kind = .relu, paddingIndex: Int = 0) {
        self.vocabularySize = vocabularySize
        self.dimensions = dimensions
        self.heads = heads
        self.layers = layers
        self.feedForwardDimensions = feedForwardDimensions
        self.dropout = dropout
        self.mixer = mixer
        self.sinusoidalPositions = sinusoidalPositions
        self.tiedOutput = tiedOutput
        self.activation = activation
        self.paddingIndex = paddingIndex
    }

    enum CodingKeys: String, CodingKey {
        case vocabularySize, dimensions, heads, layers, feedForwardDimensions, dropout, mixer, sinusoidalPositions, tiedOutput
        case activation, paddingIndex
    }

    /// Decodes any subset of the keys beyond dimensions, heads, layers and feedForwardDimensions.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(vocabularySize: try c.decodeIfPresent(Int.self, forKey: .vocabularySize) ?? ByteVocabulary.size,
                  dimensions: try c.decode(Int.self, forKey: .dimensions), heads: try c.decode(Int.self, forKey: .heads),
                  layers: try c.decode(Int.self, forKey: .layers),
                  feedForwardDimensions: try c.decode(Int.self, forKey: .feedForwardDimensions),
                  dropout: try c.decodeIfPresent(Float.self, forKey: .dropout) ?? 0.1,
                  mixer: try c.decodeIfPresent(MixerConfiguration.self, forKey: .mixer) ?? MixerConfiguration(kind: .causalPermuteFormer),
                  sinusoidalPositions: try c.decodeIfPresent(Bool.self, forKey: .sinusoidalPositions) ?? true,
                  tiedOutput: try c.decodeIfPresent(Bool.self, forKey: .tiedOutput) ?? true,
                  activation: try c.decodeIfPresent(Activation.Kind.self, forKey: .activation) ?? .relu,
                  paddingIndex: try c.decodeIfPresent(Int.self, forKey: .paddingIndex) ?? 0)
    }

    /// `wikitext` (the reference `transformer_lm`: 6 layers, 512 wide, 8 heads, FFN 2048, dropout
    /// 0.1), `small` (4 × 256, 4 heads, FFN 1024) and `tiny` (2 × 64, 2 heads, FFN 128) for CPU runs;
    /// optionally `-<causal mixer kind>` (e.g. `small-causalPerformer`).
    public static func preset(_ name: String) throws -> LanguageModelConfiguration {
        let parts = name.split(separator: "-", maxSplits: 1).map(String.init)
        var kind = MixerKind.causalPermuteFormer
        if parts.count == 2 {
            guard let k = MixerKind(rawValue: parts[1]), k.isCausal else {
                throw AttentionConfigurationError(message: "'\(parts[1])' in preset '\(name)' is not a causal mixer; causal mixers: \(MixerKind.allCases.filter(\.isCausal).map(\.rawValue).joined(separator: ", "))")
            }
            kind = k
        }
        let mixer = MixerConfiguration(kind: kind)
        switch parts.first ?? "" {
        case "wikitext": return LanguageModelConfiguration(dimensions: 512, heads: 8, layers: 6, feedForwardDimensions: 2048, dropout: 0.1, mixer: mixer)
        case "small": return LanguageModelConfiguration(dimensions: 256, heads: 4, layers: 4, feedForwardDimensions: 1024, dropout: 0.1, mixer: mixer)
        case "tiny": return LanguageModelConfiguration(dimensions: 64, heads: 2, layers: 2, feedForwardDimensions: 128, dropout: 0.1, mixer: mixer)
        default: throw AttentionConfigurationError(message: "unknown language-model preset '\(name)'; presets: wikitext, small, tiny (optionally -<causal mixer>)")
        }
    }

    public func validate() throws {
        func fail(_ m: String) -> AttentionConfigurationError { AttentionConfigurationError(message: m) }
        if vocabularySize < 1 { throw fail("vocabularySize must be ≥ 1, got \(vocabularySize)") }
        if layers < 1 { throw fail("layers must be ≥ 1, got \(layers)") }
        if feedForwardDimensions < 1 { throw fail("feedForwardDimensions must be ≥ 1, got \(feedForwardDimensions)") }
        if !(dropout >= 0 && dropout < 1) { throw fail("dropout must be in [0, 1), got \(dropout)") }
        try mixer.validate(dimensions: dimensions, heads: heads)
        if !mixer.kind.isCausal { throw fail("the language model needs a causal mixer, got \(mixer.kind.rawValue)") }
        if sinusoidalPositions && (dimensions % 2 != 0 || dimensions < 4) { throw fail("sinusoidal positions need an even width ≥ 4, got \(dimensions)") }
        if paddingIndex < 0 || paddingIndex >= vocabularySize { throw fail("paddingIndex \(paddingIndex) is outside the vocabulary 0..<\(vocabularySize)") }
    }
}
