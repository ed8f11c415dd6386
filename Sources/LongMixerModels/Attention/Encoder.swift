import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerData

/// The pre-LN encoder classifier of the PermuteFormer LRA code (`cpcp1998/PermuteFormer`,
/// `long_range_arena/models/performer_prenorm.py` / `bert_prenorm.py`, HF-BERT derived, and the
/// task LightningModules `listops.py`, `text_classification.py`, `matching.py`, `image.py`,
/// `pathfinder.py`), for any `SequenceMixer`:
///
/// - embeddings: word (pad id 0, row zero, no gradient) + token type (type vocabulary 1, i.e. one
///   learned vector) [+ learned absolute positions | + sinusoidal positions] → LayerNorm(ε 1e-12)
///   → dropout;
/// - block: x = x + Drop(Out(Attn(LN x))); x = x + Drop(Dense₂(GELU(Dense₁(LN x)))), exact GELU;
///   **no final LayerNorm** after the last block (as the reference);
/// - pooler tanh(Dense(h[:, 0])) (position 0 = CLS);
/// - heads on the pooled vector: classification Linear(D, C) (cross-entropy), binary Linear(D, 1)
///   (BCE with logits), retrieval: one shared encoder on both documents, MLP(cat[p₁, p₂]) =
///   Linear(2D, 4D)–ReLU–Linear(4D, 2D)–ReLU–Linear(2D, 1) (BCE). No p₁·p₂ / p₁ − p₂ features
///   (that is the LRA paper's head, not this reference's).
/// - init (`_init_weights`): Linear and embedding weights N(0, 0.02), biases 0, padding row 0,
///   LayerNorm 1/0; the task heads keep PyTorch's default `nn.Linear` init (they live outside the
///   HF model in the reference).
///
/// Extensions beyond the reference, so that the attention baselines run the synthetic tasks the way
/// Paramixer does (all off by default: a configuration without them is the model above):
///
/// - real-valued input (`inputFeatures` = F): x [B, N, F] → `inputProjection` Linear(F, D) in place
///   of the word embedding; the token-type vector, positions, LayerNorm and dropout stay, so both
///   inputs share one embedding stage (the type vector is then redundant with the projection bias,
///   which costs D parameters and keeps one code path). It is initialised like every Linear of the
///   embedding stage, N(0, 0.02) and bias 0. Features have no padding: no key mask.
/// - regression head Linear(·, `outputs`) (its loss is the caller's, e.g. MSE).
/// - pooling: `cls` (above), `mean` (mean of the hidden states over non-padding positions, then the
///   same tanh(Dense) pooler) or `flatten` (Paramixer's FLATTEN: the final hidden states [B, N·D]
///   straight into the head Linear(N·D, C), no pooler; needs the fixed `length` N). Padded
///   positions take part in `flatten` as in Paramixer.
/// - valid combinations: every head with `cls` and `mean`; `flatten` with the classification,
///   binary and regression heads (not retrieval, whose MLP reads two pooled D-vectors); token
///   input with every head, feature input with every head but retrieval (its two documents are
///   token rows side by side). `validate()` refuses the rest.
/// - tasks without a PAD token (Temporal Order uses ids 0..<6, all real) need a padding id that
///   never occurs, e.g. vocabularySize 7 and paddingIndex 6; otherwise id 0 is treated as PAD.
///
/// Parameter names follow `Scripts/reference/attention_reference.py` (same names there).

// MARK: - Block

/// One pre-LN block around a mixer: x + Drop(Mix(LN x)), then x + Drop(Dense₂(act(Dense₁(LN x)))).
/// The encoder's (bidirectional mixer, exact GELU, LayerNorm ε 1e-12) and the language model's
/// (causal mixer, fairseq's `decoder_normalize_before` layer: ReLU, ε 1e-5) are this one block; a
/// block around a `CausalSequenceMixer` also runs one position at a time (`step`).
public final class EncoderBlock: Module, SequenceBlock {
    public let attentionNorm: LayerNorm
    public let mixer: any SequenceMixer
    public let feedForwardNorm: LayerNorm
    public let intermediate: Linear
    public let output: Linear
    public let activation: Activation
    let dropout: Dropout

    public init(dimensions: Int, feedForwardDimensions: Int, mixer: any SequenceMixer, dropout: Float, layerNormEpsilon: Float,
                activation: Activation.Kind = .gelu, generator: inout RandomGenerator) {
        attentionNorm = LayerNorm(dimensions: dimensions, epsilon: layerNormEpsilon)
        self.mixer = mixer
        feedForwardNorm = LayerNorm(dimensions: dimensions, epsilon: layerNormEpsilon)
        intermediate = referenceLinear(dimensions, feedForwardDimensions, generator: &generator)
        output = referenceLinear(feedForwardDimensions, dimensions, generator: &generator)
        self.activation = Activation(activation)
        self.dropout = Dropout(probability: dropout, generator: &generator)
    }

    public override func namedChildren() -> [(String, Module)] {
        [("attentionNorm", attentionNorm), ("mixer", mixer), ("feedForwardNorm", feedForwardNorm),
         ("intermediate", intermediate), ("output", output), ("activation", activation), ("dropout", dropout)]
    }

    /// `layers` blocks, each around its own mixer of `configuration`, drawn mixer first, then the block.
    static func layers(_ layers: Int, dimensions d: Int, heads: Int, feedForwardDimensions: Int, mixer configuration: MixerConfiguration,
                       dropout: Float, layerNormEpsilon: Float, activation: Activation.Kind = .gelu,
                       generator: inout RandomGenerator) -> [EncoderBlock] {
        (0..<layers).map { _ in
            let mixer = configuration.kind.makeMixer(dimensions: d, heads: heads, configuration: configuration, generator: &generator)
            return EncoderBlock(dimensions: d, feedForwardDimensions: feedForwardDimensions, mixer: mixer, dropout: dropout,
                                layerNormEpsilon: layerNormEpsilon, activation: activation, generator: &generator)
        }
    }

    /// The block in a stack: the mixer sees the key mask.
    public func callAsFunction(_ x: Variable, context: BlockContext) -> Variable { callAsFunction(x, keyMask: context.keyMask) }

    /// x [B, N, D]; the mixer sees `keyMask` [B, N].
    public func callAsFunction(_ x: Variable, keyMask: Tensor?) -> Variable {
        feedForward(x + dropout(mixer(attentionNorm(x), keyMask: keyMask)))
    }

    /// The feed-forward half with its residual, x [B, N, D] → [B, N, D].
    func feedForward(_ x: Variable) -> Variable { x + dropout(output(activation(intermediate(feedForwardNorm(x))))) }

    /// The mixer's token-by-token form. Only the language model steps, and it builds its blocks
    /// around causal mixers, so the failure is a programming error.
    var causalMixer: any CausalSequenceMixer {
        guard let causal = mixer as? any CausalSequenceMixer else {
            fatalError("EncoderBlock: \(type(of: mixer)) has no token-by-token form")
        }
        return causal
    }

    /// A fresh recurrent state of the (causal) mixer for `batch` sequences.
    public func makeState(batch: Int) -> CausalMixerState { causalMixer.makeState(batch: batch) }

    /// One position x [B, 1, D] at absolute token index `position` (causal mixer): the parallel
    /// form's row at that position; advances `state`.
    public func step(_ x: Variable, position: Int, state: inout CausalMixerState) -> Variable {
        feedForward(x + dropout(causalMixer.step(attentionNorm(x), position: position, state: &state)))
    }
}

// MARK: - Model

/// The encoder's input stage: word embedding (or Linear(F, D)) + token type [+ positions] → LayerNorm
/// → dropout; the key mask of PAD tokens.
final class EncoderInput: Module, SequenceInputStage {
    let configuration: EncoderConfiguration
    /// Word embedding (token input); nil with `inputFeatures`.
    let embedding: Embedding?
    /// Linear(F, D) (real-valued input); nil for token input.
    let inputProjection: Linear?
    let tokenTypeEmbedding: Embedding
    let positionEmbedding: Embedding?
    let embeddingNorm: LayerNorm
    let embeddingDropout: Dropout

    init(configuration c: EncoderConfiguration, generator: inout RandomGenerator) {
        configuration = c
        let d = c.dimensions
        // Draw order as before the optional parts existed, so a seed builds the same token model.
        if let features = c.inputFeatures {
            embedding = nil
            inputProjection = referenceLinear(features, d, generator: &generator)
        } else {
            embedding = Embedding(count: c.vocabularySize, dimensions: d, paddingIndex: c.paddingIndex,
                                  standardDeviation: c.initializerRange, generator: &generator)
            inputProjection = nil
        }
        tokenTypeEmbedding = Embedding(count: 1, dimensions: d, standardDeviation: c.initializerRange, generator: &generator)
        positionEmbedding = c.positions == .learned
            ? Embedding(count: c.maxPositions, dimensions: d, standardDeviation: c.initializerRange, generator: &generator) : nil
        embeddingNorm = LayerNorm(dimensions: d, epsilon: c.layerNormEpsilon)
        embeddingDropout = Dropout(probability: c.dropout, generator: &generator)
    }

    override func namedChildren() -> [(String, Module)] {
        var out: [(String, Module)] = []
        if let embedding { out.append(("embedding", embedding)) }
        if let inputProjection { out.append(("inputProjection", inputProjection)) }
        out.append(("tokenTypeEmbedding", tokenTypeEmbedding))
        if let positionEmbedding { out.append(("positionEmbedding", positionEmbedding)) }
        return out + [("embeddingNorm", embeddingNorm), ("embeddingDropout", embeddingDropout)]
    }

    /// Token ids [B, N] (or features [B, N, F]): the input kind, rank, ids inside the vocabulary, F,
    /// the fixed length, the learned position table, the retrieval pair layout, the 2D grid.
    func check(_ input: SequenceInput) throws {
        let c = configuration
        let n: Int
        switch input {
        case .tokens(let ids):
            if let f = c.inputFeatures {
                throw AttentionConfigurationError(message: "this encoder reads real-valued features [B, N, \(f)]; got token ids \(ids.shape)")
            }
            guard ids.rank == 2, ids.shape[0] > 0, ids.shape[1] > 0 else {
                throw AttentionConfigurationError(message: "token ids must be a non-empty [B, N], got shape \(ids.shape)")
            }
            n = c.head == .retrieval ? ids.shape[1] / 2 : ids.shape[1]
            if c.head == .retrieval && ids.shape[1] % 2 != 0 {
                throw AttentionConfigurationError(message: "retrieval input must be two documents of equal length side by side; got odd length \(ids.shape[1])")
            }
            for (i, id) in ids.scalars.enumerated() where id < 0 || Int(id) >= c.vocabularySize {
                throw AttentionConfigurationError(message: "token id \(id) at batch \(i / ids.shape[1]), position \(i % ids.shape[1]) is outside the vocabulary 0..<\(c.vocabularySize)")
            }
        case .features(let x):
            guard let f = c.inputFeatures else {
                throw AttentionConfigurationError(message: "EncoderClassifier reads token ids [B, N]; got real-valued features \(x.shape) (set inputFeatures for real-valued input)")
            }
            guard x.rank == 3, x.shape[0] > 0, x.shape[1] > 0 else {
                throw AttentionConfigurationError(message: "features must be a non-empty [B, N, \(f)], got shape \(x.shape)")
            }
            if x.shape[2] != f {
                throw AttentionConfigurationError(message: "\(x.shape[2]) features per position ≠ the encoder's inputFeatures \(f)")
            }
            n = x.shape[1]
        }
        if let length = c.length, n != length {
            throw AttentionConfigurationError(message: "sequence length \(n) ≠ the encoder's fixed length \(length)\(c.pooling == .flatten ? " (flatten pooling)" : "")")
        }
        if c.positions == .learned && n > c.maxPositions {
            throw AttentionConfigurationError(message: "sequence length \(n) exceeds the learned position table of \(c.maxPositions) positions")
        }
        if c.mixer.kind == .permuteFormer2D {
            let g = c.mixer.grid ?? ImageGrid(width: 32, height: 32)
            if n != g.length {
                throw AttentionConfigurationError(message: "2D PermuteFormer: sequence length \(n) ≠ prefix \(g.prefix) + width \(g.width) × height \(g.height) + suffix \(g.suffix) = \(g.length)")
            }
        }
    }

    /// 0/1 mask of non-padding tokens, or nil when nothing is padded.
    func keyMask(_ ids: IntTensor) -> Tensor? {
        let pad = Int32(configuration.paddingIndex)
        guard ids.scalars.contains(pad) else { return nil }
        return Tensor(shape: ids.shape, scalars: ids.scalars.map { $0 == pad ? 0 : 1 })
    }

    func callAsFunction(_ input: SequenceInput) -> (embedded: Variable, stream: Variable, keyMask: Tensor?) {
        let c = configuration, n = input.length
        var h: Variable, mask: Tensor?
        switch input {
        case .tokens(let ids):
            LongMixerCore.check(embedding != nil, "EncoderClassifier: this encoder reads real-valued features, got token ids \(ids.shape)")
            h = embedding!(ids)
            mask = keyMask(ids)
        case .features(let x):
            LongMixerCore.check(inputProjection != nil, "EncoderClassifier: this encoder reads token ids, got real-valued features \(x.shape)")
            h = inputProjection!(Variable(x))
            mask = nil
        }
        h = h + tokenTypeEmbedding.weight                                       // [B, N, D] + [1, D]
        switch c.positions {
        case .none: break
        case .learned:
            LongMixerCore.check(n <= c.maxPositions, "EncoderClassifier: sequence length \(n) exceeds the learned position table of \(c.maxPositions) positions")
            h = h + positionEmbedding!(IntTensor(Array(0..<n)))
        case .sinusoidal:
            h = h + Variable(sinusoidalPositions(Array(0..<n), dimensions: c.dimensions))
        }
        h = embeddingDropout(embeddingNorm(h))
        return (h, h, mask)
    }
}

/// The encoder's output stage: pooling (`cls`, `mean` through the tanh pooler, or `flatten`) and the
/// head; the retrieval head encodes both documents in one batch and classifies the pair.
final class EncoderOutput: Module, SequenceOutputStage {
    let configuration: EncoderConfiguration
    /// tanh(Dense) after `cls` / `mean` pooling; nil with `flatten` (the head reads the hidden states).
    let pooler: Linear?
    /// Linear(D or N·D, C) for classification / binary / regression; the retrieval MLP (names head.0, head.2, head.4).
    let head: Module

    init(configuration c: EncoderConfiguration, generator: inout RandomGenerator) {
        configuration = c
        let d = c.dimensions
        pooler = c.pooling == .flatten ? nil : referenceLinear(d, d, generator: &generator)
        switch c.head {
        case .classification, .binary, .regression:
            head = Linear(inputDimensions: c.headInputWidth, outputDimensions: c.outputCount, generator: &generator)
        case .retrieval:
            head = Sequential([
                Linear(inputDimensions: 2 * d, outputDimensions: 4 * d, generator: &generator), Activation(.relu),
                Linear(inputDimensions: 4 * d, outputDimensions: 2 * d, generator: &generator), Activation(.relu),
                Linear(inputDimensions: 2 * d, outputDimensions: 1, generator: &generator),
            ])
        }
    }

    override func namedChildren() -> [(String, Module)] {
        (pooler.map { [("pooler", $0 as Module)] } ?? []) + [("head", head)]
    }

    /// The head's input from hidden states h [B, N, D]: tanh(Dense(h[:, 0])) (`cls`) or tanh(Dense(mean
    /// over non-padding positions)) (`mean`), [B, D]; h as [B, N·D] (`flatten`).
    func pooled(_ h: Variable, keyMask mask: Tensor?) -> Variable {
        let b = h.shape[0], n = h.shape[1], d = configuration.dimensions
        let summary: Variable
        switch configuration.pooling {
        case .flatten:
            return reshape(h, [b, n * d])
        case .cls:
            summary = reshape(slice(h, axis: 1, 0..<1), [b, d])
        case .mean:
            if let mask {
                // Σ_t m_t h_t / Σ_t m_t; an all-padding row (count 0) pools to zeros instead of NaN.
                let counts = (0..<b).map { r in max(1, (0..<n).reduce(Float(0)) { $0 + mask[flat: r * n + $1] }) }
                let weights = Tensor(shape: [b, n, 1], scalars: mask.scalars)
                summary = sum(h * Variable(weights), axes: [1]) / Variable(Tensor(shape: [b, 1], scalars: counts))
            } else {
                summary = mean(h, axes: [1])
            }
        }
        return tanh(pooler!(summary))
    }

    func callAsFunction(_ input: SequenceInput, encode: (SequenceInput) -> (hidden: Variable, keyMask: Tensor?)) -> Variable {
        switch configuration.head {
        case .classification, .binary, .regression:
            let (h, mask) = encode(input)
            return (head as! Linear)(pooled(h, keyMask: mask))
        case .retrieval:
            guard case .tokens(let ids) = input else { fatalError("unreachable: check(_:) admits only token ids for retrieval") }
            // Both documents through the shared encoder in one batch: rows 0..<B doc 1, B..<2B doc 2.
            let b = ids.shape[0], n = ids.shape[1] / 2
            var stacked = [Int32](); stacked.reserveCapacity(ids.count)
            for part in 0..<2 {
                for r in 0..<b {
                    let start: Int = (2 * r + part) * n
                    stacked.append(contentsOf: ids.scalars[start..<(start + n)])
                }
            }
            let (h, mask) = encode(.tokens(IntTensor(shape: [2 * b, n], scalars: stacked)))
            let p = pooled(h, keyMask: mask)                                     // [2B, D]
            let pair = concatenate([slice(p, axis: 0, 0..<b), slice(p, axis: 0, b..<(2 * b))], axis: 1)
            return (head as! Sequential)(pair)
        }
    }
}

/// Encoder + pooling + task head: the stack of `SequenceStack` with the encoder's input stage,
/// pre-LN `EncoderBlock`s and the pooler/head. `callAsFunction(.tokens(ids))` (or `.features(x)`
/// [B, N, F] with `inputFeatures`) → logits [B, C] (C = 1 for the binary and retrieval heads,
/// `outputs` for regression). Retrieval input: ids [B, 2L], the two documents side by side (each
/// padded to L, each starting with its CLS); both go through the same encoder.
public final class EncoderClassifier: SequenceStack {
    public let configuration: EncoderConfiguration
    public let blocks: [EncoderBlock]
    let output: EncoderOutput

    public init(configuration: EncoderConfiguration, generator: inout RandomGenerator) throws {
        try configuration.validate()
        self.configuration = configuration
        let c = configuration
        let input = EncoderInput(configuration: c, generator: &generator)
        let blocks = EncoderBlock.layers(c.layers, dimensions: c.dimensions, heads: c.heads, feedForwardDimensions: c.feedForwardDimensions,
                                         mixer: c.mixer, dropout: c.dropout, layerNormEpsilon: c.layerNormEpsilon, generator: &generator)
        self.blocks = blocks
        output = EncoderOutput(configuration: c, generator: &generator)
        super.init(inputStage: input, blocks: blocks, blockPrefix: "blocks", outputStage: output)
    }

    /// The head (Linear, or the retrieval MLP).
    public var head: Module { output.head }

    /// Number of outputs C.
    public var outputCount: Int { configuration.outputCount }

    /// The tanh(Dense) pooler (nil with `flatten`).
    public var pooler: Linear? { output.pooler }

    /// Final hidden states [B, N, D] of token ids (no pooler, no head).
    public func encode(_ ids: IntTensor) -> Variable { hiddenStates(.tokens(ids)).hidden }

    /// The head's input for one document per row (see `EncoderOutput.pooled`).
    public func pooled(_ ids: IntTensor) -> Variable {
        let (h, mask) = hiddenStates(.tokens(ids))
        return output.pooled(h, keyMask: mask)
    }
}

// MARK: - Configuration

/// Hyper-parameters of `EncoderClassifier`. Presets: `EncoderConfiguration.preset("text")` etc.
public struct EncoderConfiguration: Codable, Equatable, Sendable {
    public enum Positions: String, Codable, CaseIterable, Sendable {
        /// No absolute positions (PermuteFormer / RoPE: relative only).
        case none
        /// Learned absolute table of `maxPositions` rows (HF "absolute"; the reference's default).
        case learned
        /// Fixed sinusoidal positions (`bert_prenorm_sin`), no length limit.
        case sinusoidal
    }

    public enum Head: String, Codable, CaseIterable, Sendable {
        /// Linear(·, classes), cross-entropy.
        case classification
        /// Linear(·, 1), BCE with logits.
        case binary
        /// The two-document MLP on cat[p₁, p₂] (token input, `cls` or `mean` pooling only).
        case retrieval
        /// Linear(·, outputs), real-valued outputs (e.g. MSE for the Adding problem).
        case regression
    }

    /// What the head reads from the final hidden states h [B, N, D]: `cls` = tanh(Dense(h[:, 0])), the
    /// reference's pooler (position 0, a CLS token or not); `mean` = tanh(Dense(mean of h over
    /// non-padding positions)); `flatten` = h as [B, N·D] straight into the head (Paramixer's FLATTEN;
    /// needs `length`, no pooler).
    public typealias Pooling = LongMixerModels.Pooling

    /// Token ids 0..<V; the reference byte/pixel tasks use PAD 0, CLS 1, SEP 2, content + 3 (V = 259).
    /// Ignored with `inputFeatures`.
    public var vocabularySize: Int
    /// nil: token ids [B, N] through the word embedding. F: real-valued features [B, N, F] through
    /// Linear(F, D) (`inputProjection`) instead.
    public var inputFeatures: Int?
    public var dimensions: Int
    public var heads: Int
    public var layers: Int
    public var feedForwardDimensions: Int
    /// Hidden dropout (embeddings, attention output, FFN output).
    public var dropout: Float
    public var mixer: MixerConfiguration
    public var positions: Positions
    /// Rows of the learned position table (LRA reference: 4000 text/retrieval, 1026 image/pathfinder).
    public var maxPositions: Int
    public var head: Head
    /// Classes of the classification head (ignored by the other heads).
    public var classes: Int
    /// Outputs of the regression head (ignored by the other heads).
    public var outputs: Int
    public var pooling: Pooling
    /// Fixed sequence length N (per document for retrieval): required by `flatten` (the head is
    /// Linear(N·D, C)); when set, every input must have exactly N positions.
    public var length: Int?
    /// Token id of PAD (masked keys, zero embedding row); ignored with `inputFeatures`.
    public var paddingIndex: Int
    public var layerNormEpsilon: Float
    /// σ of the N(0, σ) initialisation of linear and embedding weights.
    public var initializerRange: Float

    public init(vocabularySize: Int = 259, inputFeatures: Int? = nil, dimensions: Int, heads: Int, layers: Int, feedForwardDimensions: Int,
                dropout: Float = 0.1, mixer: MixerConfiguration, positions: Positions? = nil, maxPositions: Int = 4000,
                head: Head = .classification, classes: Int = 2, outputs: Int = 1, pooling: Pooling = .cls, length: Int? = nil,
                paddingIndex: Int = 0, layerNormEpsilon: Float = 1e-12, initializerRange: Float = 0.02) {
        self.vocabularySize = vocabularySize
        self.inputFeatures = inputFeatures
        self.dimensions = dimensions
        self.heads = heads
        self.layers = layers
        self.feedForwardDimensions = feedForwardDimensions
        self.dropout = dropout
        self.mixer = mixer
        self.positions = positions ?? Self.defaultPositions(for: mixer.kind)
        self.maxPositions = maxPositions
        self.head = head
        self.classes = classes
        self.outputs = outputs
        self.pooling = pooling
        self.length = length
        self.paddingIndex = paddingIndex
        self.layerNormEpsilon = layerNormEpsilon
        self.initializerRange = initializerRange
    }

    /// The reference's choice: learned absolute positions for softmax / Performer baselines, none for
    /// the relative encodings (PermuteFormer 1D/2D, its orthogonal ablation, RoPE).
    public static func defaultPositions(for kind: MixerKind) -> Positions {
        switch kind {
        case .softmax, .performer, .favor: return .learned
        default: return .none
        }
    }

    /// Per-task dimensions of the PermuteFormer LRA configs (`configs/performer_relative_*.json`, the
    /// same for `bert_prenorm_*` and `performer_prenorm_*`): layers / hidden / heads / FFN / dropout.
    /// `name` is a task — `listops`, `text`, `retrieval`, `image`, `pathfinder` — or `tiny` (a
    /// 2-layer, 32-wide CPU model), optionally followed by `-` and a `MixerKind` raw value
    /// (`image-permuteFormer2D`, `text-softmax`); the default mixer is `permuteFormer`
    /// (`permuteFormer2D` for image and pathfinder).
    public static func preset(_ name: String) throws -> EncoderConfiguration {
        let parts = name.split(separator: "-", maxSplits: 1).map(String.init)
        let task = parts.first ?? ""
        var kind: MixerKind? = nil
        if parts.count == 2 {
            guard let k = MixerKind(rawValue: parts[1]) else {
                throw AttentionConfigurationError(message: "unknown mixer '\(parts[1])' in preset '\(name)'; mixers: \(MixerKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            kind = k
        }
        let grid = ImageGrid(width: 32, height: 32, prefix: 1, suffix: 1)
        func make(_ layers: Int, _ d: Int, _ heads: Int, _ ffn: Int, _ dropout: Float, _ attentionDropout: Float, head: Head, classes: Int,
                  maxPositions: Int, vocabulary: Int = 259, image: Bool = false) throws -> EncoderConfiguration {
            let k = kind ?? (image ? .permuteFormer2D : .permuteFormer)
            if k.isCausal { throw AttentionConfigurationError(message: "preset '\(name)': \(k.rawValue) is causal; the encoder needs a bidirectional mixer") }
            return EncoderConfiguration(vocabularySize: vocabulary, dimensions: d, heads: heads, layers: layers, feedForwardDimensions: ffn,
                                        dropout: dropout,
                                        mixer: MixerConfiguration(kind: k, attentionDropout: attentionDropout, grid: image ? grid : nil),
                                        maxPositions: maxPositions, head: head, classes: classes)
        }
        // (layers, D, H, FFN, hidden dropout, attention-probability dropout — read by softmax attention only)
        switch task {
        case "listops": return try make(6, 512, 8, 2048, 0.1, 0.1, head: .classification, classes: 10, maxPositions: 2002, vocabulary: 18)
        case "text": return try make(6, 512, 8, 2048, 0.1, 0.1, head: .binary, classes: 1, maxPositions: 4000)
        case "retrieval": return try make(4, 128, 4, 512, 0.1, 0.1, head: .retrieval, classes: 1, maxPositions: 4000)
        case "image": return try make(3, 64, 4, 128, 0.3, 0.2, head: .classification, classes: 10, maxPositions: 1026, image: true)
        case "pathfinder": return try make(4, 128, 8, 128, 0.1, 0.1, head: .binary, classes: 1, maxPositions: 1026, image: true)
        case "tiny": return try make(2, 32, 2, 64, 0.1, 0.1, head: .classification, classes: 2, maxPositions: 512)
        default:
            throw AttentionConfigurationError(message: "unknown encoder preset '\(name)'; presets: listops, text, retrieval, image, pathfinder, tiny (optionally -<mixer>)")
        }
    }

    enum CodingKeys: String, CodingKey {
        case vocabularySize, dimensions, heads, layers, feedForwardDimensions, dropout, mixer, positions, maxPositions, head, classes
        case paddingIndex, layerNormEpsilon, initializerRange
        case inputFeatures, outputs, pooling, length
    }

    /// Decodes any subset of the keys beyond dimensions, heads, layers, feedForwardDimensions and
    /// mixer; the rest take the `init` defaults (so a configuration written before `inputFeatures`,
    /// `outputs`, `pooling` and `length` existed decodes to the same token/CLS model).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let mixer = try c.decode(MixerConfiguration.self, forKey: .mixer)
        self.init(vocabularySize: try c.decodeIfPresent(Int.self, forKey: .vocabularySize) ?? 259,
                  inputFeatures: try c.decodeIfPresent(Int.self, forKey: .inputFeatures),
                  dimensions: try c.decode(Int.self, forKey: .dimensions), heads: try c.decode(Int.self, forKey: .heads),
                  layers: try c.decode(Int.self, forKey: .layers),
                  feedForwardDimensions: try c.decode(Int.self, forKey: .feedForwardDimensions),
                  dropout: try c.decodeIfPresent(Float.self, forKey: .dropout) ?? 0.1, mixer: mixer,
                  positions: try c.decodeIfPresent(Positions.self, forKey: .positions),
                  maxPositions: try c.decodeIfPresent(Int.self, forKey: .maxPositions) ?? 4000,
                  head: try c.decodeIfPresent(Head.self, forKey: .head) ?? .classification,
                  classes: try c.decodeIfPresent(Int.self, forKey: .classes) ?? 2,
                  outputs: try c.decodeIfPresent(Int.self, forKey: .outputs) ?? 1,
                  pooling: try c.decodeIfPresent(Pooling.self, forKey: .pooling) ?? .cls,
                  length: try c.decodeIfPresent(Int.self, forKey: .length),
                  paddingIndex: try c.decodeIfPresent(Int.self, forKey: .paddingIndex) ?? 0,
                  layerNormEpsilon: try c.decodeIfPresent(Float.self, forKey: .layerNormEpsilon) ?? 1e-12,
                  initializerRange: try c.decodeIfPresent(Float.self, forKey: .initializerRange) ?? 0.02)
    }

    /// Outputs C of the head: classes, regression outputs, or 1 (binary, retrieval).
    public var outputCount: Int {
        switch head {
        case .classification: return classes
        case .regression: return outputs
        case .binary, .retrieval: return 1
        }
    }

    /// Width of the head's input: D after the `cls` / `mean` pooler, N·D with `flatten`, 2D for retrieval.
    public var headInputWidth: Int {
        if head == .retrieval { return 2 * dimensions }
        return pooling == .flatten ? (length ?? 0) * dimensions : dimensions
    }

    /// Throws naming the offending values (see the file comment for the valid combinations).
    public func validate() throws {
        func fail(_ m: String) -> AttentionConfigurationError { AttentionConfigurationError(message: m) }
        if let f = inputFeatures {
            if f < 1 { throw fail("inputFeatures must be ≥ 1 (or absent for token ids), got \(f)") }
            if head == .retrieval { throw fail("the retrieval head reads two token documents side by side; it cannot take real-valued features (inputFeatures \(f))") }
        } else {
            if vocabularySize < 1 { throw fail("vocabularySize must be ≥ 1, got \(vocabularySize)") }
            if paddingIndex < 0 || paddingIndex >= vocabularySize { throw fail("paddingIndex \(paddingIndex) is outside the vocabulary 0..<\(vocabularySize)") }
        }
        if layers < 1 { throw fail("layers must be ≥ 1, got \(layers)") }
        if feedForwardDimensions < 1 { throw fail("feedForwardDimensions must be ≥ 1, got \(feedForwardDimensions)") }
        if !(dropout >= 0 && dropout < 1) { throw fail("dropout must be in [0, 1), got \(dropout)") }
        try mixer.validate(dimensions: dimensions, heads: heads)
        if mixer.kind.isCausal { throw fail("the encoder needs a bidirectional mixer, got causal \(mixer.kind.rawValue)") }
        if positions == .learned && maxPositions < 1 { throw fail("maxPositions must be ≥ 1 for learned positions, got \(maxPositions)") }
        if positions == .sinusoidal && (dimensions % 2 != 0 || dimensions < 4) {
            throw fail("sinusoidal positions need an even width ≥ 4, got \(dimensions)")
        }
        if head == .classification && classes < 2 { throw fail("classification needs ≥ 2 classes, got \(classes)") }
        if head == .regression && outputs < 1 { throw fail("the regression head needs ≥ 1 outputs, got \(outputs)") }
        if let n = length {
            if n < 1 { throw fail("length must be ≥ 1 (or absent for any length), got \(n)") }
            if positions == .learned && n > maxPositions { throw fail("length \(n) exceeds the learned position table of \(maxPositions) positions") }
            if mixer.kind == .permuteFormer2D {
                let g = mixer.grid ?? ImageGrid(width: 32, height: 32)
                if n != g.length { throw fail("length \(n) ≠ the 2D PermuteFormer grid's prefix \(g.prefix) + width \(g.width) × height \(g.height) + suffix \(g.suffix) = \(g.length)") }
            }
        }
        if pooling == .flatten {
            if head == .retrieval { throw fail("flatten pooling works with the classification, binary and regression heads; the retrieval head needs cls or mean pooling") }
            if length == nil { throw fail("flatten pooling feeds the N·D hidden states to Linear(N·D, C), so it needs a fixed length N; set length") }
        }
        if !(layerNormEpsilon > 0) { throw fail("layerNormEpsilon must be > 0, got \(layerNormEpsilon)") }
    }
}
