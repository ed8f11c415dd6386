import LongMixerCore
import LongMixerNN
import LongMixerData

// The one stack every model of both papers is:
//
//   input stage (embedding + positions)  →  L blocks  →  output stage (pooling + head, or a head per position)
//
// Block kinds: `ParamixerBlock` (g, sparse factors reading the embedded input) and `EncoderBlock`
// (pre-LN around any `SequenceMixer`: a bidirectional one in the encoder, a causal one in the
// language model, whose blocks also step one token at a time). A family (Paramixer, the encoder, the
// language model) is a choice of stages and block kind made from its configuration; the forward pass
// lives here only. Parameter names are the stages' own (flattened into the model's namespace) plus
// `<blockPrefix>.<l>` per block, which keeps the reference implementations' names, so their fixtures
// and older checkpoints load unchanged.

/// What a block may read besides its input stream.
public struct BlockContext {
    /// The embedded model input [B, N, D] (Paramixer's factor MLPs read it in every block).
    public var embedded: Variable
    /// 0/1 mask of non-padding positions [B, N] (nil: nothing padded).
    public var keyMask: Tensor?
    /// Forwards that record no graph may run fused inference kernels.
    public var fusedInference: Bool
    /// Set when `embedded` is made of table rows (see `TokenRows`).
    public var tokenRows: TokenRows?
    /// Set when `embedded` is a linear map of a narrower input (see `LinearInput`).
    public var linearInput: LinearInput? = nil
}

/// An embedded input made of table rows: embedded[b, i, :] = table[ids[b, i], :] (+ positions[i, :]) (token
/// input, no active dropout). A block may then compute a per-row function of the embedded input once per
/// table row and gather it per position (`embedding(ids, table: f(table))` equals f(embedded) without
/// positions), or split a linear map over the two tables.
public struct TokenRows {
    /// Token ids [B, N], each in 0..<table.shape[0] (checked with the input).
    public var ids: IntTensor
    /// The embedding table [V, D] (the parameter itself: gradients through f(table) reach it).
    public var table: Variable
    /// Learned positions [N, D] added at every position (nil: none); the parameter itself.
    public var positions: Variable?
    /// The row that receives no gradient through the input's own lookup: a block that trains through f(table)
    /// must not give it one either.
    public var paddingIndex: Int?
}

/// An embedded input that is a linear map of a narrower one: embedded[b, i, :] = W·x[b, i, :] + bias (real-valued
/// features, no positions, no active dropout). A block whose first layer on the embedded input is linear can fold
/// the two: A·(W x + bias) + c = (A·W) x + (A·bias + c), F multiply-adds per output instead of D, and that layer then
/// sends no gradient through the embedded input (W and bias get theirs through the fold).
public struct LinearInput {
    /// The input x [B, N, F].
    public var features: Tensor
    /// W [D, F], the parameter itself.
    public var weight: Variable
    /// bias [D] (nil: none), the parameter itself.
    public var bias: Variable?
}

/// One block of a stack: x [B, N, D] → [B, N, D].
public protocol SequenceBlock: Module {
    func callAsFunction(_ x: Variable, context: BlockContext) -> Variable
}

/// The input stage: model input → embedded input and the blocks' starting stream, both [B, N, D].
public protocol SequenceInputStage: Module {
    /// Throws a message naming the values when `input` does not fit the model (kind, shape, ids, N).
    func check(_ input: SequenceInput) throws
    func callAsFunction(_ input: SequenceInput) -> (embedded: Variable, stream: Variable, keyMask: Tensor?)
    /// The ids and tables when the embedded input of `input` is made of table rows (nil otherwise).
    func tokenRows(_ input: SequenceInput) -> TokenRows?
    /// The input and its linear map when the embedded input of `input` is one (nil otherwise).
    func linearInput(_ input: SequenceInput) -> LinearInput?
}

extension SequenceInputStage {
    public func tokenRows(_ input: SequenceInput) -> TokenRows? { nil }
    public func linearInput(_ input: SequenceInput) -> LinearInput? { nil }
}

/// The output stage: pooling and head (or the language model's head at every position), reading the
/// final hidden states through `encode` (a two-document head encodes each document).
public protocol SequenceOutputStage: Module {
    func callAsFunction(_ input: SequenceInput, encode: (SequenceInput) -> (hidden: Variable, keyMask: Tensor?)) -> Variable
}

/// Input stage → blocks → output stage; `callAsFunction` → outputs [B, C] (logits [B, N, V] for the
/// language model).
open class SequenceStack: Module, SequenceModel {
    public let inputStage: any SequenceInputStage
    public let stackBlocks: [any SequenceBlock]
    public let outputStage: any SequenceOutputStage
    /// Parameter-name prefix of the blocks (`attention` for Paramixer, `blocks` for the encoder and the LM).
    public let blockPrefix: String

    public init(inputStage: any SequenceInputStage, blocks: [any SequenceBlock], blockPrefix: String,
                outputStage: any SequenceOutputStage) {
        self.inputStage = inputStage
        self.stackBlocks = blocks
        self.blockPrefix = blockPrefix
        self.outputStage = outputStage
    }

    open override func namedChildren() -> [(String, Module)] {
        inputStage.namedChildren() + stackBlocks.enumerated().map { ("\(blockPrefix).\($0.offset)", $0.element as Module) }
            + outputStage.namedChildren()
    }

    /// Throws a message naming the values when `input` does not fit the model.
    public func check(_ input: SequenceInput) throws { try inputStage.check(input) }

    /// Final hidden states [B, N, D] and the key mask [B, N] (nil: nothing padded).
    public func hiddenStates(_ input: SequenceInput, fusedInference: Bool = ParamixerBlock.fusedInferenceDefault)
        -> (hidden: Variable, keyMask: Tensor?) {
        let (embedded, stream, keyMask) = inputStage(input)
        let context = BlockContext(embedded: embedded, keyMask: keyMask, fusedInference: fusedInference,
                                   tokenRows: inputStage.tokenRows(input), linearInput: inputStage.linearInput(input))
        var h = stream
        for block in stackBlocks { h = block(h, context: context) }
        return (h, keyMask)
    }

    /// Outputs [B, C] ([B, N, V] for the LM). Stops with the `check(_:)` message on bad input.
    public func callAsFunction(_ input: SequenceInput) -> Variable {
        callAsFunction(input, fusedInference: ParamixerBlock.fusedInferenceDefault)
    }

    /// Outputs [B, C] ([B, N, V] for the LM); `fusedInference` lets blocks use fused kernels when no graph is recorded.
    public func callAsFunction(_ input: SequenceInput, fusedInference: Bool) -> Variable {
        // fatalError keeps the message in optimised builds (precondition would drop it).
        do { try check(input) } catch { fatalError("\(type(of: self)): \(error)") }
        return outputStage(input) { hiddenStates($0, fusedInference: fusedInference) }
    }
}
