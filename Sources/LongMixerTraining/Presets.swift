import Foundation

/// Named training recipes. Each holds the values it sets; everything it leaves nil comes from
/// the caller's defaults, and explicit command-line flags override both.
public struct TrainingPreset: Equatable, Sendable {
    public var name: String
    public var summary: String
    public var task: SyntheticTask
    public var model: String
    /// Lengths the recipe was run at (the reference's 2^7 … 2^15); others are refused.
    public var lengths: [Int]
    public var embeddingSize: Int
    public var hiddenSize: Int
    public var blocks: Int
    public var linkProtocol: LinkProtocol
    public var factorCountRule: FactorCountRule
    public var pooling: ParamixerConfiguration.Pooling
    public var positionalEmbedding: Bool
    public var dropout1: Float
    public var dropout2: Float
    public var learningRate: Float
    public var batchSize: Int
    public var clipNorm: Float?
    public var epochs: Int
    public var splitSizes: SplitSizes
    public var seed: UInt64

    /// Paramixer, synthetic-task rows of the supplement's Table 1 / `Synthetic-data-tasks`
    /// (`synthetic_training_config.py`, `synth_training.py`): D = H = 32, 1 block, CHORD with
    /// M = int(log2 N), no dropout, FLATTEN, Adam lr 1e-3, batch 40, clip 1.0, seed 42,
    /// 100k / 1k / 1k sequences; Adding: no positional embedding, MSE, 50 epochs;
    /// Order: APC (learned absolute) positional embedding, cross-entropy, 30 epochs.
    public static let paramixerAdding = TrainingPreset(
        name: "paramixer-adding",
        summary: "Paramixer on the Adding problem as the reference (D=H=32, 1 block, CHORD, FLATTEN, no positional embedding, Adam 1e-3, batch 40, clip 1, 50 epochs of 100k)",
        task: .adding, model: "paramixer", lengths: (7...15).map { 1 << $0 },
        embeddingSize: 32, hiddenSize: 32, blocks: 1, linkProtocol: .chord, factorCountRule: .floor, pooling: .flatten,
        positionalEmbedding: false, dropout1: 0, dropout2: 0, learningRate: 1e-3, batchSize: 40, clipNorm: 1, epochs: 50,
        splitSizes: .reference, seed: 42)

    public static let paramixerOrder = TrainingPreset(
        name: "paramixer-order",
        summary: "Paramixer on Temporal Order as the reference (D=H=32, 1 block, CHORD, FLATTEN, APC positional embedding, Adam 1e-3, batch 40, clip 1, 30 epochs of 100k)",
        task: .order, model: "paramixer", lengths: (7...15).map { 1 << $0 },
        embeddingSize: 32, hiddenSize: 32, blocks: 1, linkProtocol: .chord, factorCountRule: .floor, pooling: .flatten,
        positionalEmbedding: true, dropout1: 0, dropout2: 0, learningRate: 1e-3, batchSize: 40, clipNorm: 1, epochs: 30,
        splitSizes: .reference, seed: 42)

    public static let all: [TrainingPreset] = [paramixerAdding, paramixerOrder]

    public static func named(_ name: String) throws -> TrainingPreset {
        guard let p = all.first(where: { $0.name == name.lowercased() }) else {
            throw TrainingError.invalidConfiguration("unknown preset '\(name)'; valid presets: \(all.map(\.name).joined(separator: ", "))")
        }
        return p
    }

    /// Throws unless the recipe was defined for this task and length.
    public func check(task: SyntheticTask, length: Int) throws {
        guard task == self.task else {
            throw TrainingError.invalidConfiguration("preset \(name) is for the \(self.task.rawValue) task, not \(task.rawValue)")
        }
        guard lengths.contains(length) else {
            let powers = lengths.map { "2^\(Int.bitWidth - 1 - $0.leadingZeroBitCount)" }
            throw TrainingError.invalidConfiguration(
                "preset \(name) reproduces the reference at N = \(powers.first!) … \(powers.last!) (powers of two, \(lengths.first!) to \(lengths.last!)), not N = \(length); drop --preset to train at other lengths")
        }
    }
}
