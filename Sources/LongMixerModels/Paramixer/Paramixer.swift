import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerData

/// Paramixer: parameterised sparse mixing factors instead of dot-product attention.
///
/// Tong Yu, Ruslan Khalitov, Lei Cheng, Zhirong Yang, "Paramixer: Parameterizing Mixing Links in
/// Sparse Factors Works Better than Dot-Product Self-Attention", CVPR 2022 (arXiv 2204.10670).
/// This file matches the semantics of the authors' code, `wiedersehne/Paramixer` (`LRA/paramixer.py`,
/// `Synthetic-data-tasks/paramixer.py`), which is followed where it differs from the paper:
///
/// - block: V ← g(V); for each factor m: V ← W^(m)·V + V (residual after every factor); dropout2.
///   Option `Residual.blockInput`: V ← W^(m)·V + g(V_in) instead ("move res_conn=V outside this for
///   loop", which the reference's synthetic code recommends for Temporal Order at N ≥ 16384, and which
///   an earlier commit of the reference used): the per-factor residual multiplies the activation scale
///   by about (1 + Σ_k w_k²) per factor at initialisation (std ≈ 60 after M = 10 factors), the
///   block-input form keeps it bounded.
///   g = Linear(D,H)→GELU→Linear(H,D); f_m = Linear(D,H)→GELU→Linear(H,L) gives the L link
///   weights of every row directly (no softmax), read from the embedded input `data` of the model
///   (not the evolving V), in every block.
/// - model: data = Embedding(tokens) (or Linear(F, D) for real-valued inputs) [+ learned positions];
///   data = dropout1(data); V = dropout1(data) (a second, independent mask); blocks; FLATTEN
///   (Linear(N·D, C)) or CLS (V[:, 0, :] → Linear(D, C)); a single Linear head.
///
/// Parameter names follow `Scripts/reference/paramixer_reference.py` (and the original code's
/// attribute names: `embedding`, `init_linear`, `apc_embedding`, `attention.<l>.g`, `attention.<l>.fs.<m>`,
/// `final`), so safetensors checkpoints map 1:1.

// MARK: - Block

/// One Paramixer block: g, then M sparse factors with a residual after each, then dropout2.
public final class ParamixerBlock: Module, SequenceBlock {
    /// Channel mixing of the block input: Linear(D, H) → GELU → Linear(H, D).
    public let g: Sequential
    /// Factor weight networks f_m: Linear(D, H) → GELU → Linear(H, L_m), one per factor.
    public let fs: [Sequential]
    let dropout2: Dropout
    /// Link offsets of each factor (M lists of L offsets in 0..<N), in application order.
    public let offsets: [[Int]]
    public let residual: ParamixerConfiguration.Residual
    /// Forwards without a graph keep each factor's W1·p_i + b1 (`fusedFactors`).
    let keptPositionPreActivations = ParameterDerivedTables()

    public init(embeddingSize: Int, hiddenSize: Int, offsets: [[Int]], dropout2: Float,
                residual: ParamixerConfiguration.Residual = .everyFactor, generator: inout RandomGenerator) {
        check(!offsets.isEmpty, "ParamixerBlock: needs at least one factor")
        g = makeMLP(inputDimensions: embeddingSize, hiddenDimensions: hiddenSize, outputDimensions: embeddingSize,
                    activation: .gelu, generator: &generator)
        var fs: [Sequential] = []
        for factorOffsets in offsets {
            fs.append(makeMLP(inputDimensions: embeddingSize, hiddenDimensions: hiddenSize, outputDimensions: factorOffsets.count,
                              activation: .gelu, generator: &generator))
        }
        self.fs = fs
        self.dropout2 = Dropout(probability: dropout2, generator: &generator)
        self.offsets = offsets
        self.residual = residual
    }

    public override func namedChildren() -> [(String, Module)] {
        [("g", g)] + fs.enumerated().map { ("fs.\($0.offset)", $0.element as Module) } + [("dropout2", dropout2)]
    }

    /// Whether forwards that record no graph run the factors on the fused kernel (`sparseFactorMLPForward`):
    /// on AVX2 machines by default (there it is faster than the composed ops; the AVX-512 path keeps the
    /// composed ops on its 16-lane kernels until measured there). `LONGMIXER_FUSED_FACTOR=1` or `0` forces it.
    public static let fusedInferenceDefault: Bool = {
        RuntimeOptions.environment.fusedFactor ?? !CPUFeatures.avx512
    }()

    /// The block in a stack: the factors read the embedded model input.
    public func callAsFunction(_ x: Variable, context: BlockContext) -> Variable {
        callAsFunction(x, data: context.embedded, fusedInference: context.fusedInference, tokenRows: context.tokenRows,
                       linearInput: context.linearInput)
    }

    /// v: [B, N, D] block input; data: [B, N, D] the embedded model input read by every f_m.
    public func callAsFunction(_ v: Variable, data: Variable) -> Variable {
        callAsFunction(v, data: data, fusedInference: Self.fusedInferenceDefault)
    }

    /// The block; with `fusedInference` and no graph being recorded (`withoutGradient`), each factor's f-MLP
    /// and sparse product run as one kernel that never stores the link weights (`fusedFactors`). tokenRows:
    /// `data` as table rows (see `TokenRows`), when it is; linearInput: `data` as a linear map of a narrower
    /// input (see `LinearInput`), when it is.
    public func callAsFunction(_ v: Variable, data: Variable, fusedInference: Bool, tokenRows: TokenRows? = nil,
                               linearInput: LinearInput? = nil) -> Variable {
        var v = g(v)
        let blockInput = v
        let folded = linearInput.flatMap { foldsInput($0, data: data.value) ? $0 : nil }
        if fusedInference, !GradientMode.isEnabled,
           let fused = fusedFactors(v.value, data: data.value, blockInput: blockInput.value, tokenRows: tokenRows,
                                    linearInput: folded) {
            return dropout2(Variable(fused))
        }
        // The padding row's gradient is blocked once, for every factor (see `withoutPaddingGradient`).
        let rows = tokenRows.flatMap { usesTable($0, data: data.value) ? $0 : nil }.map { rows in
            var blocked = rows
            blocked.table = Self.withoutPaddingGradient(rows.table, paddingIndex: rows.paddingIndex)
            return blocked
        }
        for (f, factorOffsets) in zip(fs, offsets) {
            let w = linkWeights(f, data: data, tokenRows: rows, linearInput: folded)    // [B, N, L]
            v = sparseFactorProduct(weights: w, values: v, offsets: factorOffsets, residual: residual == .everyFactor ? v : blockInput)
        }
        return dropout2(v)
    }

    /// f(data) [B, N, L]. When data is token rows (`tokenRows`, accepted by `usesTable`, the padding row's gradient
    /// blocked), the layers that see data run on the tables' rows and are gathered per position, forward and
    /// backward: without positions all of f (f(e_t) per token t), with positions its first layer (W1·e_t per token,
    /// W1·p_i + b1 per position).
    /// With a linear input (`LinearInput`, accepted by `foldsInput`) the first layer folds into it and reads x.
    func linkWeights(_ f: Sequential, data: Variable, tokenRows rows: TokenRows?, linearInput: LinearInput? = nil) -> Variable {
        if rows == nil, let input = linearInput, let (l1, activation, l2) = Self.mlpLayers(f) {
            let (weight, bias) = Self.folded(l1, into: input)
            return l2(activation(linear(Variable(input.features), weight: weight, bias: bias)))
        }
        guard let rows else { return f(data) }
        guard let positions = rows.positions else { return embedding(rows.ids, table: f(rows.table)) }
        guard let (l1, activation, l2) = Self.mlpLayers(f) else { return f(data) }
        let pre = embedding(rows.ids, table: linear(rows.table, weight: l1.weight, bias: nil))   // [B, N, H]
            + linear(positions, weight: l1.weight, bias: l1.bias)                                 // [N, H]
        return l2(activation(pre))
    }

    /// The table [V, D] with its values (bit for bit) and no gradient into the padding row: the per-position lookup
    /// gives that row none, while the weights of f still learn from the padded positions through it.
    static func withoutPaddingGradient(_ table: Variable, paddingIndex: Int?) -> Variable {
        guard let p = paddingIndex, GradientMode.isEnabled else { return table }
        var learned = Tensor(repeating: 1, shape: [table.shape[0], 1]), fixed = Tensor(zeros: [table.shape[0], 1])
        learned.withUnsafeMutablePointer { $0[p] = 0 }
        fixed.withUnsafeMutablePointer { $0[p] = 1 }
        return table * Variable(learned) + Variable(table.value) * Variable(fixed)
    }

    /// The first layer A·data + c folded into data = W·x + b: (A·W [H, F], A·b + c [H]).
    static func folded(_ first: Linear, into input: LinearInput) -> (weight: Variable, bias: Variable?) {
        let weight = matmul(first.weight, input.weight)                                              // [H, D]·[D, F]
        guard let inputBias = input.bias else { return (weight, first.bias) }
        let bias = linear(reshape(inputBias, [1, inputBias.shape[0]]), weight: first.weight, bias: first.bias)   // [1, H]
        return (weight, reshape(bias, [first.outputDimensions]))
    }

    /// Whether f's first layer folds into the linear input: it is data's (shapes) and narrower than data.
    func foldsInput(_ input: LinearInput, data: Tensor) -> Bool {
        let x = input.features, w = input.weight.value
        return x.rank == 3 && data.rank == 3 && Array(x.shape[0..<2]) == Array(data.shape[0..<2]) && w.shape == [data.shape[2], x.shape[2]]
            && (input.bias == nil || input.bias!.shape == [data.shape[2]]) && x.shape[2] < data.shape[2]
    }

    /// f's Linear → activation → Linear (nil for another shape of f).
    static func mlpLayers(_ f: Sequential) -> (Linear, Activation, Linear)? {
        guard f.layers.count == 3, let l1 = f.layers[0] as? Linear, let act = f.layers[1] as? Activation,
              let l2 = f.layers[2] as? Linear else { return nil }
        return (l1, act, l2)
    }

    /// Whether f reads the token rows: they are data's (shapes) and the tables have at most half as many rows as
    /// the batch has positions (so the split saves work). `keptPositions`: the position rows' first layer is kept
    /// between calls (`fusedFactors`), so only the token table counts.
    func usesTable(_ rows: TokenRows, data: Tensor, keptPositions: Bool = false) -> Bool {
        let t = rows.table.value, (b, n, d) = (data.shape[0], data.shape[1], data.shape[2])
        if let positions = rows.positions, positions.shape != [n, d] { return false }
        let tableRows = t.shape[0] + (rows.positions == nil || keptPositions ? 0 : n)
        return rows.ids.shape == [b, n] && t.rank == 2 && t.shape[1] == d && 2 * tableRows <= b * n
    }

    /// The factors of `callAsFunction` on plain tensors: per factor one `sparseFactorMLPForward` (f-MLP,
    /// sparse product and residual). With token rows (see `usesTable`) and no positions, each f-MLP runs on
    /// the table rows (`sparseFactorLinkTable`) and the product reads each position's weights by its token
    /// (`sparseFactorTableForward`): the same results bit for bit, at the cost of the product alone per
    /// position. With positions, the first layer runs on the token and position rows
    /// (`sparseFactorPreActivations`) and each position adds its two rows (`sparseFactorSplitForward`). The
    /// position rows' part, W1·p_i + b1, depends on the parameters alone: it is kept between calls
    /// (`keptPositionPreActivations`) and recomputed only when the positions, a W1 or a b1 changed, so a
    /// deployed model pays the first layer per token row only, whatever its batch size.
    /// nil when an f is not Linear → GELU → Linear with biases (then the composed ops run).
    func fusedFactors(_ v: Tensor, data: Tensor, blockInput: Tensor, tokenRows: TokenRows? = nil,
                      linearInput: LinearInput? = nil) -> Tensor? {
        var mlps: [SparseFactorMLPWeights] = []
        for (f, factorOffsets) in zip(fs, offsets) {
            guard let (l1, act, l2) = Self.mlpLayers(f), act.kind == .gelu, let b1 = l1.bias, let b2 = l2.bias,
                  l2.outputDimensions == factorOffsets.count, l1.inputDimensions == data.shape[2],
                  l2.inputDimensions == l1.outputDimensions
            else { return nil }
            // With a linear input the first layer reads x through its fold (tensors the MLP weights copy).
            let (w1, bias1) = linearInput.map { Self.folded(l1, into: $0) } ?? (l1.weight, b1)
            mlps.append(SparseFactorMLPWeights(w1: w1.value.pointer, b1: bias1!.value.pointer, w2: l2.weight.value.pointer,
                                               b2: b2.value.pointer, inputs: w1.shape[1], hidden: l1.outputDimensions,
                                               links: l2.outputDimensions))
        }
        let (b, n, d) = (v.shape[0], v.shape[1], v.shape[2])
        let factorInput = linearInput?.features ?? data, di = factorInput.shape[2]
        check(data.shape[0] == b && data.shape[1] == n, "ParamixerBlock: data \(data.shape) does not match values \(v.shape)")
        // Two output buffers taken in turn (a factor reads the previous factor's output while it writes its
        // own): M factors allocate two tensors, not M.
        var buffers = [Tensor(uninitializedShape: [b, n, d])] + (mlps.count > 1 ? [Tensor(uninitializedShape: [b, n, d])] : [])
        let rows = tokenRows.flatMap { usesTable($0, data: data, keptPositions: true) ? $0 : nil }
        let group = EightLaneSkinnyGemm.tileRows
        func roundedRows(_ count: Int) -> Int { (count + group - 1) / group * group }
        // One factor at a time: the link weights per token [V (rounded up to the tile's 6 rows), Lp] without
        // positions; with them, the first layer's pre-activations per token [V, Hp], and per position
        // [N rounded up, Hp] for every factor, kept.
        let vocabulary = rows?.table.value.shape[0] ?? 0
        let tableWidth = rows?.positions == nil ? mlps.map(\.paddedLinks).max()! : mlps.map(\.paddedHidden).max()!
        var tokenTable = rows.map { _ in Tensor(uninitializedShape: [roundedRows(vocabulary), tableWidth]) }
        let positionTables: [Tensor]? = rows?.positions.map { positions in
            let sources = [positions.value] + fs.flatMap { f -> [Tensor] in
                let l1 = Self.mlpLayers(f)!.0
                return [l1.weight.value, l1.bias!.value]
            }
            return keptPositionPreActivations.tables(derivedFrom: sources) {
                mlps.map { mlp in
                    var table = Tensor(uninitializedShape: [roundedRows(n), mlp.paddedHidden])
                    table.withUnsafeMutablePointer { p in
                        sparseFactorPreActivations(p, rows: positions.value.pointer, count: n, dataDimensions: di, bias: true, mlp: mlp)
                    }
                    return table
                }
            }
        }
        var current = v.pointer, written = 0
        for (m, (mlp, factorOffsets)) in zip(mlps, offsets).enumerated() {
            for (k, o) in factorOffsets.enumerated() {
                check(o >= 0 && o < n, "ParamixerBlock: offset \(o) in slot \(k) is outside 0..<\(n)")
            }
            written = m % buffers.count
            let added = residual == .everyFactor ? current : blockInput.pointer
            factorOffsets.withUnsafeBufferPointer { off in
                buffers[written].withUnsafeMutablePointer { out in
                    guard let rows, tokenTable != nil else {
                        sparseFactorMLPForward(out: out, values: current, residual: added, data: factorInput.pointer, dataDimensions: di,
                                               mlp: mlp, offsets: off.baseAddress!, batch: b, length: n, dimensions: d)
                        return
                    }
                    rows.ids.scalars.withUnsafeBufferPointer { ids in
                        if let positionTables {
                            tokenTable!.withUnsafeMutablePointer { t in
                                sparseFactorPreActivations(t, rows: rows.table.value.pointer, count: vocabulary, dataDimensions: di,
                                                           bias: false, mlp: mlp)
                            }
                            sparseFactorSplitForward(out: out, values: current, residual: added, tokens: ids.baseAddress!,
                                                     tokenPre: tokenTable!.pointer, positionPre: positionTables[m].pointer, mlp: mlp,
                                                     offsets: off.baseAddress!, batch: b, length: n, dimensions: d)
                        } else {
                            tokenTable!.withUnsafeMutablePointer { t in
                                sparseFactorLinkTable(t, rows: rows.table.value.pointer, count: vocabulary, dataDimensions: di, mlp: mlp)
                            }
                            sparseFactorTableForward(out: out, values: current, residual: added, tokens: ids.baseAddress!,
                                                     table: tokenTable!.pointer, tableStride: mlp.paddedLinks, offsets: off.baseAddress!,
                                                     links: mlp.links, batch: b, length: n, dimensions: d)
                        }
                    }
                }
            }
            current = buffers[written].pointer
        }
        return buffers[written]
    }
}

// MARK: - Model

/// Paramixer's input stage: data = Embedding(tokens) or Linear(F, D) [+ learned positions (APC)];
/// data = dropout1(data); the stream V = dropout1(data), a second, independent mask (as the reference).
final class ParamixerInput: Module, SequenceInputStage {
    let configuration: ParamixerConfiguration
    /// Token embedding [V, D] (token inputs).
    let embedding: Embedding?
    /// Linear(F, D) with bias (real-valued inputs, e.g. the Adding problem).
    let initLinear: Linear?
    /// Learned absolute positions [N, D] ("APC").
    let apcEmbedding: Embedding?
    let dropout1: Dropout
    private let positions: IntTensor

    init(configuration c: ParamixerConfiguration, generator: inout RandomGenerator) {
        configuration = c
        let d = c.embeddingSize, n = c.length
        if let vocabulary = c.vocabularySize {
            embedding = Embedding(count: vocabulary, dimensions: d, paddingIndex: c.paddingIndex, generator: &generator)
            initLinear = nil
        } else {
            embedding = nil
            initLinear = Linear(inputDimensions: c.inputFeatures!, outputDimensions: d, generator: &generator)
        }
        apcEmbedding = c.positionalEmbedding ? Embedding(count: n, dimensions: d, generator: &generator) : nil
        dropout1 = Dropout(probability: c.dropout1, generator: &generator)
        positions = IntTensor(Array(0..<n))
    }

    override func namedChildren() -> [(String, Module)] {
        var out: [(String, Module)] = []
        if let embedding { out.append(("embedding", embedding)) }
        if let initLinear { out.append(("init_linear", initLinear)) }
        if let apcEmbedding { out.append(("apc_embedding", apcEmbedding)) }
        out.append(("dropout1", dropout1))
        return out
    }

    /// Length N, token ids inside the vocabulary, or F features.
    func check(_ input: SequenceInput) throws {
        let c = configuration
        switch input {
        case .tokens(let ids):
            guard let vocabulary = c.vocabularySize else {
                throw ParamixerError.invalidInput("this model reads \(c.inputFeatures!) real-valued features per position, got token ids \(ids.shape)")
            }
            guard ids.rank == 2 else { throw ParamixerError.invalidInput("token ids must be [B, N], got shape \(ids.shape)") }
            guard ids.shape[1] == c.length else {
                throw ParamixerError.invalidInput("sequence length \(ids.shape[1]) ≠ the model's N = \(c.length)")
            }
            for (position, id) in ids.scalars.enumerated() where id < 0 || Int(id) >= vocabulary {
                throw ParamixerError.invalidInput("token id \(id) at batch \(position / c.length), position \(position % c.length) is outside the vocabulary 0..<\(vocabulary)")
            }
        case .features(let x):
            guard let features = c.inputFeatures else {
                throw ParamixerError.invalidInput("this model reads token ids (vocabulary \(c.vocabularySize!)), got real-valued features \(x.shape)")
            }
            guard x.rank == 3 else { throw ParamixerError.invalidInput("features must be [B, N, F], got shape \(x.shape)") }
            guard x.shape[1] == c.length else {
                throw ParamixerError.invalidInput("sequence length \(x.shape[1]) ≠ the model's N = \(c.length)")
            }
            guard x.shape[2] == features else {
                throw ParamixerError.invalidInput("\(x.shape[2]) features per position ≠ the model's F = \(features)")
            }
        }
    }

    /// Real-valued features without positions and with dropout1 inactive: data = init_linear(x).
    func linearInput(_ input: SequenceInput) -> LinearInput? {
        guard case .features(let x) = input, let initLinear, apcEmbedding == nil,
              !dropout1.isTraining || dropout1.probability == 0 else { return nil }
        return LinearInput(features: x, weight: initLinear.weight, bias: initLinear.bias)
    }

    /// Token input with dropout1 inactive: data is the embedding table's rows plus, with APC, the position rows.
    func tokenRows(_ input: SequenceInput) -> TokenRows? {
        guard case .tokens(let ids) = input, let embedding,
              !dropout1.isTraining || dropout1.probability == 0 else { return nil }
        return TokenRows(ids: ids, table: embedding.weight, positions: apcEmbedding?.weight, paddingIndex: embedding.paddingIndex)
    }

    func callAsFunction(_ input: SequenceInput) -> (embedded: Variable, stream: Variable, keyMask: Tensor?) {
        var data: Variable
        switch input {
        case .tokens(let ids): data = embedding!(ids)
        case .features(let x): data = initLinear!(Variable(x))
        }
        if let apcEmbedding { data = data + apcEmbedding(positions) }      // [B, N, D] + [N, D]
        data = dropout1(data)
        return (data, dropout1(data), nil)
    }
}

/// Paramixer's output stage: FLATTEN (Linear(N·D, C)) or CLS (V[:, 0, :] → Linear(D, C)).
final class ParamixerOutput: Module, SequenceOutputStage {
    let configuration: ParamixerConfiguration
    let final: Linear

    init(configuration c: ParamixerConfiguration, generator: inout RandomGenerator) {
        configuration = c
        final = Linear(inputDimensions: c.pooling == .flatten ? c.length * c.embeddingSize : c.embeddingSize,
                       outputDimensions: c.outputCount, generator: &generator)
    }

    override func namedChildren() -> [(String, Module)] { [("final", final)] }

    func callAsFunction(_ input: SequenceInput, encode: (SequenceInput) -> (hidden: Variable, keyMask: Tensor?)) -> Variable {
        let c = configuration, v = encode(input).hidden, b = input.batchSize
        switch c.pooling {
        case .flatten: return final(reshape(v, [b, c.length * c.embeddingSize]))
        case .cls: return final(reshape(slice(v, axis: 1, 0..<1), [b, c.embeddingSize]))
        }
    }
}

/// The Paramixer sequence classifier / regressor: the stack of `SequenceStack` with Paramixer's input
/// stage, `ParamixerBlock`s and a single Linear head.
public final class Paramixer: SequenceStack {
    public let configuration: ParamixerConfiguration
    public let attention: [ParamixerBlock]
    /// The output Linear (pooled width → outputs).
    public let final: Linear

    public init(configuration: ParamixerConfiguration, generator: inout RandomGenerator) throws {
        try configuration.validate()
        self.configuration = configuration
        let c = configuration
        let input = ParamixerInput(configuration: c, generator: &generator)
        let table = try LinkProtocols.offsetTable(c.linkProtocol, length: c.length, rule: c.factorCountRule)
        var blocks: [ParamixerBlock] = []
        for _ in 0..<c.blocks {
            blocks.append(ParamixerBlock(embeddingSize: c.embeddingSize, hiddenSize: c.hiddenSize, offsets: table, dropout2: c.dropout2,
                                         residual: c.residual, generator: &generator))
        }
        attention = blocks
        let output = ParamixerOutput(configuration: c, generator: &generator)
        final = output.final
        super.init(inputStage: input, blocks: blocks, blockPrefix: "attention", outputStage: output)
    }

    /// Number of sparse factors per block (M) and links per row (L).
    public var factorCount: Int { attention[0].offsets.count }
    public var linkCount: Int { attention[0].offsets[0].count }
}

// MARK: - Configuration

/// Hyper-parameters of `Paramixer`. Exactly one of `vocabularySize` (token input) and
/// `inputFeatures` (real-valued input, Linear(F, D)) is set.
public struct ParamixerConfiguration: Codable, Equatable, Sendable {
    public enum Pooling: String, Codable, CaseIterable, Sendable {
        /// Flatten all N·D values into Linear(N·D, C).
        case flatten
        /// Position 0 (a prepended CLS token) into Linear(D, C).
        case cls
    }

    /// What each sparse factor adds back (see the file comment).
    public enum Residual: String, Codable, CaseIterable, Sendable {
        /// V ← W^(m)·V + V: the released reference code (default).
        case everyFactor = "every-factor"
        /// V ← W^(m)·V + g(V_in): the reference's advice for Temporal Order at long N.
        case blockInput = "block-input"
    }

    public var vocabularySize: Int?
    public var inputFeatures: Int?
    /// N, the fixed sequence length.
    public var length: Int
    /// D.
    public var embeddingSize: Int
    /// H, the hidden width of g and of every f_m.
    public var hiddenSize: Int
    /// Number of Paramixer blocks.
    public var blocks: Int
    public var linkProtocol: LinkProtocol
    public var factorCountRule: FactorCountRule
    /// Dropout on the embedded input (applied to data, and again to V).
    public var dropout1: Float
    /// Dropout on each block's output.
    public var dropout2: Float
    public var pooling: Pooling
    /// Learned absolute positional embedding Embedding(N, D) ("APC").
    public var positionalEmbedding: Bool
    /// Token id whose embedding row stays zero and gets no gradient.
    public var paddingIndex: Int?
    /// C: classes, or regression outputs.
    public var outputCount: Int
    public var residual: Residual

    public init(vocabularySize: Int? = nil, inputFeatures: Int? = nil, length: Int, embeddingSize: Int = 32, hiddenSize: Int = 32,
                blocks: Int = 1, linkProtocol: LinkProtocol = .chord, factorCountRule: FactorCountRule = .ceil,
                dropout1: Float = 0, dropout2: Float = 0, pooling: Pooling = .flatten, positionalEmbedding: Bool = false,
                paddingIndex: Int? = nil, outputCount: Int, residual: Residual = .everyFactor) {
        self.vocabularySize = vocabularySize
        self.inputFeatures = inputFeatures
        self.length = length
        self.embeddingSize = embeddingSize
        self.hiddenSize = hiddenSize
        self.blocks = blocks
        self.linkProtocol = linkProtocol
        self.factorCountRule = factorCountRule
        self.dropout1 = dropout1
        self.dropout2 = dropout2
        self.pooling = pooling
        self.positionalEmbedding = positionalEmbedding
        self.paddingIndex = paddingIndex
        self.outputCount = outputCount
        self.residual = residual
    }

    /// Throws `ParamixerError.invalidConfiguration` / `.lengthTooShort` naming the offending values.
    public func validate() throws {
        func fail(_ message: String) -> ParamixerError { .invalidConfiguration(message) }
        switch (vocabularySize, inputFeatures) {
        case (nil, nil): throw fail("set either vocabularySize (token input) or inputFeatures (real-valued input)")
        case (.some(let v), .some(let f)): throw fail("vocabularySize (\(v)) and inputFeatures (\(f)) are both set; choose one")
        case (.some(let v), nil): if v < 1 { throw fail("vocabularySize must be ≥ 1, got \(v)") }
        case (nil, .some(let f)): if f < 1 { throw fail("inputFeatures must be ≥ 1, got \(f)") }
        }
        if length < 2 { throw ParamixerError.lengthTooShort(length) }
        if embeddingSize < 1 { throw fail("embeddingSize (D) must be ≥ 1, got \(embeddingSize)") }
        if hiddenSize < 1 { throw fail("hiddenSize (H) must be ≥ 1, got \(hiddenSize)") }
        if blocks < 1 { throw fail("blocks must be ≥ 1, got \(blocks)") }
        if outputCount < 1 { throw fail("outputCount must be ≥ 1, got \(outputCount)") }
        for (name, p) in [("dropout1", dropout1), ("dropout2", dropout2)] where !(p >= 0 && p < 1) {
            throw fail("\(name) must be in [0, 1), got \(p)")
        }
        if let p = paddingIndex {
            guard let v = vocabularySize else { throw fail("paddingIndex \(p) needs token input (vocabularySize)") }
            if p < 0 || p >= v { throw fail("paddingIndex \(p) is outside the vocabulary 0..<\(v)") }
        }
    }
}
