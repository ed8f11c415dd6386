import LongMixerCore
/// Model input for a batch of sequences.
public enum SequenceInput {
    /// Token ids, [B, N].
    case tokens(IntTensor)
    /// Real-valued features per position, [B, N, F] (e.g. the Adding problem's (value, marker) pairs).
    case features(Tensor)

    public var batchSize: Int {
        switch self { case .tokens(let t): return t.shape[0]; case .features(let f): return f.shape[0] }
    }
    public var length: Int {
        switch self { case .tokens(let t): return t.shape[1]; case .features(let f): return f.shape[1] }
    }
}

/// Supervision for a batch.
public enum Targets {
    /// One class index per sequence, [B].
    case classes(IntTensor)
    /// Regression targets, [B, O].
    case values(Tensor)
    /// One target token per position, [B, N] (language modelling: the input shifted by one;
    /// positions holding the objective's ignore index, e.g. PAD, carry no loss).
    case tokens(IntTensor)
}

/// One mini-batch.
public struct Batch {
    public var input: SequenceInput
    public var targets: Targets
    public init(input: SequenceInput, targets: Targets) { self.input = input; self.targets = targets }
    public var size: Int { input.batchSize }
}
