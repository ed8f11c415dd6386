import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerData

// The one place that maps a model name to a model: every mixer of both papers is built here for
// any task shape, so the trainer, the CLI and the benchmarks never switch over model kinds.
// Adding a mixer: its file (mixer + `MixerKind` case) and one `ModelEntry` in `ModelRegistry.entries`.

/// What a task feeds a model and what it expects back: the model side of a task.
public struct ModelTaskShape: Equatable, Sendable {
    public enum Input: Equatable, Sendable {
        /// Token ids [B, N] in 0..<vocabulary (`paddingIndex`: the PAD id, masked out of attention).
        case tokens(vocabulary: Int, paddingIndex: Int?)
        /// Real-valued features [B, N, F].
        case features(Int)
    }

    /// What the head produces per sequence (causal tasks: ignored, per-position logits).
    public enum Objective: Equatable, Sendable { case classes, binary, regression }

    public var input: Input
    public var objective: Objective
    /// N, the sequence length the task feeds.
    public var length: Int
    /// C: classes or regression outputs per sequence, or the vocabulary of a language model.
    public var outputs: Int
    /// Per-position next-token outputs [B, N, V] (language modelling): needs a causal mixer.
    public var causal: Bool
    /// The input is a W×H image grid (what the 2D mixers need).
    public var grid: ImageGrid?
    /// Each sample is two documents of `length` tokens side by side ([B, 2N]), classified as a pair
    /// by the two-tower matching head.
    public var pair: Bool

    public init(input: Input, objective: Objective = .classes, length: Int, outputs: Int, causal: Bool = false, grid: ImageGrid? = nil,
                pair: Bool = false) {
        self.input = input
        self.objective = objective
        self.length = length
        self.outputs = outputs
        self.causal = causal
        self.grid = grid
        self.pair = pair
    }
}

/// Where a sequence reaches the head: position 0, the mean over positions, or all N·D values.
public enum Pooling: String, Codable, CaseIterable, Sendable {
    case cls, mean, flatten
}

/// Absolute positions added to the embedded input.
public enum PositionEncoding: String, Codable, CaseIterable, Sendable {
    /// None: the mixer is position-aware by itself (Paramixer's factors, PermuteFormer, RoPE).
    case none
    /// A learned table of N rows (Paramixer's "APC", the LRA encoders' absolute positions).
    case learned
    /// Fixed sinusoids (the LM and `bert_prenorm_sin`).
    case sinusoidal
}

/// The block a model stacks: Paramixer's own, or the pre-LN encoder / decoder around a mixer.
public enum ModelFamily: String, Codable, Sendable {
    case paramixer, encoder, decoder
}

/// The resolved model options of a run (`config.json` records them); what a family does not use
/// stays nil, and a value given for the wrong family is refused before the model is built.
public struct ModelOptions: Codable, Equatable, Sendable {
    /// D.
    public var dimensions: Int?
    /// Blocks (Paramixer) or layers (encoder, decoder).
    public var layers: Int?
    /// Paramixer: hidden width H of the f and g MLPs.
    public var hidden: Int?
    /// Attention heads.
    public var heads: Int?
    /// Encoder/decoder feed-forward width.
    public var feedForward: Int?
    /// Encoder/decoder hidden dropout.
    public var dropout: Float?
    /// Paramixer: dropout on the embedded input and on each block's output.
    public var dropout1: Float?
    public var dropout2: Float?
    /// Paramixer: link protocol, factor count rule and residual.
    public var linkProtocol: LinkProtocol?
    public var factorRule: FactorCountRule?
    public var residual: ParamixerConfiguration.Residual?
    public var pooling: Pooling?
    public var positions: PositionEncoding?

    public init(dimensions: Int? = nil, layers: Int? = nil, hidden: Int? = nil, heads: Int? = nil, feedForward: Int? = nil,
                dropout: Float? = nil, dropout1: Float? = nil, dropout2: Float? = nil, linkProtocol: LinkProtocol? = nil,
                factorRule: FactorCountRule? = nil, residual: ParamixerConfiguration.Residual? = nil, pooling: Pooling? = nil,
                positions: PositionEncoding? = nil) {
        self.dimensions = dimensions
        self.layers = layers
        self.hidden = hidden
        self.heads = heads
        self.feedForward = feedForward
        self.dropout = dropout
        self.dropout1 = dropout1
        self.dropout2 = dropout2
        self.linkProtocol = linkProtocol
        self.factorRule = factorRule
        self.residual = residual
        self.pooling = pooling
        self.positions = positions
    }

    /// Each set value of `other` replaces this one's.
    public func overridden(by other: ModelOptions) -> ModelOptions {
        var r = self
        if let v = other.dimensions { r.dimensions = v }
        if let v = other.layers { r.layers = v }
        if let v = other.hidden { r.hidden = v }
        if let v = other.heads { r.heads = v }
        if let v = other.feedForward { r.feedForward = v }
        if let v = other.dropout { r.dropout = v }
        if let v = other.dropout1 { r.dropout1 = v }
        if let v = other.dropout2 { r.dropout2 = v }
        if let v = other.linkProtocol { r.linkProtocol = v }
        if let v = other.factorRule { r.factorRule = v }
        if let v = other.residual { r.residual = v }
        if let v = other.pooling { r.pooling = v }
        if let v = other.positions { r.positions = v }
        return r
    }

    /// The option names (as the CLI spells them) that hold a value.
    public var givenOptions: [String] {
        var names: [String] = []
        if dimensions != nil { names.append("--dimensions") }
        if layers != nil { names.append("--layers") }
        if hidden != nil { names.append("--hidden") }
        if heads != nil { names.append("--heads") }
        if feedForward != nil { names.append("--feed-forward") }
        if dropout != nil { names.append("--dropout") }
        if dropout1 != nil { names.append("--dropout1") }
        if dropout2 != nil { names.append("--dropout2") }
        if linkProtocol != nil { names.append("--protocol") }
        if factorRule != nil { names.append("--factor-rule") }
        if residual != nil { names.append("--residual") }
        if pooling != nil { names.append("--pooling") }
        if positions != nil { names.append("--positions") }
        return names
    }
}

/// A built model with the configuration that rebuilds it.
public struct BuiltModel {
    public let model: any SequenceModel
    /// The family's own configuration (`ParamixerConfiguration`, `EncoderConfiguration`,
    /// `LanguageModelConfiguration`), as written to `config.json` and the checkpoint metadata.
    public let configuration: any Codable & Sendable
    /// The output layer's parameters (what `--head-lr-scale` scales).
    public let headParameters: [Parameter]
}

/// One model name of the CLI and the configuration files.
public struct ModelEntry: Sendable {
    public let name: String
    public let summary: String
    public let family: ModelFamily
    /// The mixer of the bidirectional encoder (nil: Paramixer, or a causal-only ablation).
    public let mixer: MixerKind?
    /// The mixer of the language model (nil: no causal form).
    public let causalMixer: MixerKind?
    /// Needs a W×H grid (2D PermuteFormer).
    public let needsGrid: Bool

    /// Model options this model reads; any other given option is refused.
    public var options: Set<String> {
        switch family {
        case .paramixer:
            return ["--dimensions", "--layers", "--hidden", "--dropout1", "--dropout2", "--protocol", "--factor-rule", "--residual",
                    "--pooling", "--positions"]
        case .encoder, .decoder:
            return ["--dimensions", "--layers", "--heads", "--feed-forward", "--dropout", "--pooling", "--positions"]
        }
    }
}

public enum ModelRegistry {
    public static let entries: [ModelEntry] = [
        ModelEntry(name: "paramixer", summary: "Paramixer: sparse factors whose links come from MLPs (--protocol chord|cdil)",
                   family: .paramixer, mixer: nil, causalMixer: nil, needsGrid: false),
        ModelEntry(name: "transformer", summary: "softmax attention (pre-LN Transformer)", family: .encoder,
                   mixer: .softmax, causalMixer: .causalSoftmax, needsGrid: false),
        ModelEntry(name: "performer", summary: "Performer, ReLU kernel (linear attention)", family: .encoder,
                   mixer: .performer, causalMixer: .causalPerformer, needsGrid: false),
        ModelEntry(name: "favor", summary: "Performer with FAVOR+ positive random features", family: .encoder,
                   mixer: .favor, causalMixer: nil, needsGrid: false),
        ModelEntry(name: "permuteformer", summary: "PermuteFormer: position-wise permuted features (with decay r for LM)",
                   family: .encoder, mixer: .permuteFormer, causalMixer: .causalPermuteFormer, needsGrid: false),
        ModelEntry(name: "permuteformer-2d", summary: "2D PermuteFormer (row and column permutations; image grids)",
                   family: .encoder, mixer: .permuteFormer2D, causalMixer: nil, needsGrid: true),
        ModelEntry(name: "orthogonal", summary: "ablation: orthogonal rotations instead of permutations", family: .encoder,
                   mixer: .orthogonalFormer, causalMixer: nil, needsGrid: false),
        ModelEntry(name: "rope", summary: "RoPE-Performer (rotary positions on the features)", family: .encoder,
                   mixer: .ropePerformer, causalMixer: nil, needsGrid: false),
        ModelEntry(name: "permuteformer-no-decay", summary: "LM ablation: permutation without decay (w/o r)", family: .encoder,
                   mixer: nil, causalMixer: .causalPermuteFormerNoDecay, needsGrid: false),
        ModelEntry(name: "decay-only", summary: "LM ablation: decay without permutation (w/o P)", family: .encoder,
                   mixer: nil, causalMixer: .causalDecayPerformer, needsGrid: false),
    ]

    public static var names: [String] { entries.map(\.name) }

    /// The entry of `name`, or a usage error naming the valid models.
    public static func entry(_ name: String) throws -> ModelEntry {
        guard let e = entries.first(where: { $0.name == name.lowercased() }) else {
            throw UserError(what: "--model", value: name, why: "unknown model", remedy: "valid models: \(names.joined(separator: ", "))")
        }
        return e
    }

    /// The family that builds `entry` for a task of this shape (language modelling uses the decoder).
    public static func family(of entry: ModelEntry, causal: Bool) -> ModelFamily {
        entry.family == .paramixer ? .paramixer : (causal ? .decoder : .encoder)
    }

    /// Checks that `entry` can serve a task of `shape` and that every given option applies to it.
    public static func check(_ entry: ModelEntry, for shape: ModelTaskShape, taskName: String, options: ModelOptions) throws {
        if shape.causal {
            guard entry.causalMixer != nil else {
                let causal = entries.filter { $0.causalMixer != nil }.map(\.name)
                throw UserError(what: "--model", value: entry.name, why: "has no causal form for the language-model task \(taskName)",
                                remedy: "causal models: \(causal.joined(separator: ", "))")
            }
        } else {
            if entry.family != .paramixer && entry.mixer == nil {
                throw UserError(what: "--model", value: entry.name, why: "is a causal language-model ablation, not a model for the \(taskName) task",
                                remedy: "use it with --task lm")
            }
            if shape.pair {
                if entry.family == .paramixer {
                    throw UserError(what: "--model", value: entry.name, why: "has no matching head for the document pairs of the \(taskName) task",
                                    remedy: "use an attention model (e.g. permuteformer, transformer)")
                }
                guard case .tokens = shape.input, shape.objective == .binary else {
                    throw UserError(what: "--task", value: taskName, why: "document pairs must be token ids with a binary label")
                }
            }
            if entry.needsGrid && shape.grid == nil {
                throw UserError(what: "--model", value: entry.name, why: "needs an image grid and the \(taskName) task has none",
                                remedy: "use permuteformer for 1D sequences")
            }
        }
        let family = family(of: entry, causal: shape.causal)
        var allowed = entry.options
        if family == .decoder { allowed.subtract(["--pooling", "--positions"]) }
        if let flag = options.givenOptions.first(where: { !allowed.contains($0) }) {
            throw UserError(what: flag, why: "does not apply to --model \(entry.name)\(shape.causal ? " on a language-model task" : "")",
                            remedy: "options of this model: \(allowed.sorted().joined(separator: ", "))")
        }
        if family == .paramixer {
            if let p = options.pooling, p == .mean {
                throw UserError(what: "--pooling", value: p.rawValue, why: "Paramixer pools by flatten or cls", remedy: "use --pooling flatten or cls")
            }
            if let p = options.positions, p == .sinusoidal {
                throw UserError(what: "--positions", value: p.rawValue, why: "Paramixer adds learned positions (APC) or none",
                                remedy: "use --positions learned or none")
            }
        }
    }

    /// `options` with every unset size and switch the family reads set to the family's default: Paramixer
    /// D = H = 32, 1 block, CHORD, ⌈log₂N⌉ factors, per-factor residual, FLATTEN, no positions; the
    /// encoder a small CPU model (D 32, 1 layer, 2 heads, FFN 64, no dropout, CLS pooling; positions
    /// stay nil: each mixer has the reference's own); the decoder the `small` language model.
    public static func withDefaults(_ o: ModelOptions, family: ModelFamily) -> ModelOptions {
        var d = ModelOptions()
        switch family {
        case .paramixer:
            d = ModelOptions(dimensions: 32, layers: 1, hidden: 32, dropout1: 0, dropout2: 0, linkProtocol: .chord, factorRule: .ceil,
                             residual: .everyFactor, pooling: .flatten, positions: PositionEncoding.none)
        case .encoder:
            d = ModelOptions(dimensions: 32, layers: 1, heads: 2, feedForward: 64, dropout: 0, pooling: .cls)
        case .decoder:
            d = ModelOptions(dimensions: 256, layers: 4, heads: 4, feedForward: 1024, dropout: 0.1)
        }
        return d.overridden(by: o)
    }

    /// Builds `entry` for a task of `shape` from resolved options (nil fields take the family's defaults).
    public static func build(_ entry: ModelEntry, for shape: ModelTaskShape, taskName: String, options given: ModelOptions,
                             generator: inout RandomGenerator) throws -> BuiltModel {
        try check(entry, for: shape, taskName: taskName, options: given)
        let family = family(of: entry, causal: shape.causal)
        let o = withDefaults(given, family: family)
        switch family {
        case .paramixer:
            var vocabulary: Int? = nil, features: Int? = nil, padding: Int? = nil
            switch shape.input {
            case .tokens(let v, let p): vocabulary = v; padding = p
            case .features(let f): features = f
            }
            let c = ParamixerConfiguration(
                vocabularySize: vocabulary, inputFeatures: features, length: shape.length, embeddingSize: o.dimensions!,
                hiddenSize: o.hidden!, blocks: o.layers!, linkProtocol: o.linkProtocol!, factorCountRule: o.factorRule!,
                dropout1: o.dropout1!, dropout2: o.dropout2!, pooling: o.pooling! == .cls ? .cls : .flatten,
                positionalEmbedding: o.positions == .learned, paddingIndex: padding, outputCount: shape.outputs, residual: o.residual!)
            try rethrowingAsUsage { try c.validate() }
            let model = try Paramixer(configuration: c, generator: &generator)
            return BuiltModel(model: model, configuration: c, headParameters: model.final.parameters())
        case .decoder:
            guard case .tokens(let v, let p) = shape.input else {
                throw UserError(what: "--task", value: taskName, why: "a language model reads token ids")
            }
            var c = LanguageModelConfiguration(dimensions: o.dimensions!, heads: o.heads!, layers: o.layers!,
                                               feedForwardDimensions: o.feedForward!, dropout: o.dropout!,
                                               mixer: MixerConfiguration(kind: entry.causalMixer!))
            c.vocabularySize = v
            if let p { c.paddingIndex = p }
            try rethrowingAsUsage { try c.validate() }
            let model = try CausalLanguageModel(configuration: c, generator: &generator)
            return BuiltModel(model: model, configuration: c, headParameters: [])
        case .encoder:
            let c = try encoderConfiguration(entry, for: shape, options: o)
            try rethrowingAsUsage { try c.validate() }
            let model = try EncoderClassifier(configuration: c, generator: &generator)
            return BuiltModel(model: model, configuration: c, headParameters: model.head.parameters())
        }
    }

    /// The encoder of `entry` for `shape`; defaults are a small CPU model (D 32, 1 layer, 2 heads, FFN 64,
    /// no dropout), positions as the reference for the mixer (learned tables sized to N), and the
    /// reference's pooling (position 0 through the tanh pooler). FLATTEN is an option; its N·D-wide head
    /// moves the output by about lr·N·D per Adam step (the loss blew up within 10 steps at N = 1024 and
    /// lr 2e-3), so it wants a small --head-lr-scale.
    static func encoderConfiguration(_ entry: ModelEntry, for shape: ModelTaskShape, options o: ModelOptions) throws -> EncoderConfiguration {
        var mixer = MixerConfiguration(kind: entry.mixer!)
        if let grid = shape.grid { mixer.grid = grid }
        let positions: EncoderConfiguration.Positions
        switch o.positions {
        case nil: positions = EncoderConfiguration.defaultPositions(for: entry.mixer!)
        case .none?: positions = .none
        case .learned?: positions = .learned
        case .sinusoidal?: positions = .sinusoidal
        }
        var vocabulary = 259, features: Int? = nil, padding = 0
        switch shape.input {
        case .tokens(let v, let p?): vocabulary = v; padding = p
        case .tokens(let v, nil): vocabulary = v + 1; padding = v     // an id that never occurs: nothing is masked
        case .features(let f): features = f
        }
        let head: EncoderConfiguration.Head
        switch shape.objective {
        case .classes: head = .classification
        case .binary: head = shape.pair ? .retrieval : .binary
        case .regression: head = .regression
        }
        let o = withDefaults(o, family: .encoder)
        return EncoderConfiguration(vocabularySize: vocabulary, inputFeatures: features, dimensions: o.dimensions!,
                                    heads: o.heads!, layers: o.layers!, feedForwardDimensions: o.feedForward!,
                                    dropout: o.dropout!, mixer: mixer, positions: positions, maxPositions: max(shape.length, 1),
                                    head: head, classes: max(shape.outputs, 2), outputs: shape.outputs,
                                    pooling: o.pooling!, length: shape.length, paddingIndex: padding)
    }

    /// Runs `body`, turning a configuration error of a model family into a usage error.
    static func rethrowingAsUsage(_ body: () throws -> Void) throws {
        do { try body() } catch let e as UserError { throw e } catch {
            throw UserError(what: "model configuration", why: "\(error)", remedy: "change the model options")
        }
    }
}
