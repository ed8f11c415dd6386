import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerData

/// RoPE-Performer, the relative-position baseline of PermuteFormer: RoFormer (Su et al., "RoFormer:
/// Enhanced Transformer with Rotary Position Embedding", arXiv 2104.09864) eq. 19 for linear
/// attention, on the same Performer as `PerformerAttention` (φ = ReLU + 10⁻³, Q/K at
/// featureMultiplier × Dh):
///
///   out_m = Σ_n (R_m φ(q_m))ᵀ (R_n φ(k_n)) v_n  /  Σ_n φ(q_m)ᵀ φ(k_n)
///
/// The rotation acts on the **features after φ**, in the numerator only; the denominator stays
/// un-rotated (RoFormer: "to avoid the risk of dividing zero"), so the numerator weights can be
/// negative and need not sum to one. R_m rotates interleaved pairs (2i, 2i+1) by m·θ_i,
/// θ_i = base^(−2i/F) (`rotate_every_two`, base 10000). Padded keys leave both sums. F must be even.
/// Cost: two un-normalised linear attentions (the denominator one with Dh = 1).
public final class RoPEPerformerAttention: PerformerAttention {
    public let base: Float

    public init(dimensions: Int, heads: Int, featureMultiplier: Int = 4, kernelEpsilon: Float = 1e-3, base: Float = 10000,
                generator: inout RandomGenerator) {
        checkHeads(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, name: "RoPEPerformerAttention")
        let f = featureMultiplier * dimensions / heads
        check(f % 2 == 0, "RoPEPerformerAttention: feature width per head \(f) (= \(featureMultiplier) × \(dimensions / heads)) must be even")
        check(base > 1, "RoPEPerformerAttention: base must be > 1, got \(base)")
        self.base = base
        super.init(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, kernelEpsilon: kernelEpsilon,
                   generator: &generator)
    }

    /// The last cos/sin tables and the positions they were made for: an encoder calls every layer with the
    /// same positions, and N·F/2 angles with their cos and sin are not free at small N.
    private var cachedRotation: (positions: [Int], cosines: Tensor, sines: Tensor)?
    private let angleLock = NSLock()

    /// Angles m·θ_i mod 2π, [1, N, F/2] (reduced in Double, so long sequences keep float precision).
    func rotationAngles(positions: [Int], features f: Int) -> Tensor {
        let thetas = (0..<(f / 2)).map { pow(Double(base), -2 * Double($0) / Double(f)) }
        var t = Tensor(uninitializedShape: [1, positions.count, f / 2])
        t.withUnsafeMutablePointer { p in
            for (row, m) in positions.enumerated() {
                for (i, theta) in thetas.enumerated() {
                    p[row * (f / 2) + i] = Float((Double(m) * theta).truncatingRemainder(dividingBy: 2 * Double.pi))
                }
            }
        }
        return t
    }

    /// cos and sin of `rotationAngles`, [1, N, F/2] each (cached for the last positions).
    func rotationTables(positions: [Int], features f: Int) -> (cosines: Tensor, sines: Tensor) {
        angleLock.lock()
        defer { angleLock.unlock() }
        if let c = cachedRotation, c.cosines.shape[2] == f / 2, c.positions == positions { return (c.cosines, c.sines) }
        let tables = LongMixerModels.rotationTables(rotationAngles(positions: positions, features: f))
        cachedRotation = (positions, tables.cosines, tables.sines)
        return tables
    }

    override func attend(queries: Variable, keys: Variable, values: Variable, keyMask: Tensor?, positions: [Int]) -> Variable {
        let (cosines, sines) = rotationTables(positions: positions, features: queries.shape[3])
        let numerator = linearAttention(queries: rotatePairs(queries, cosines: cosines, sines: sines),
                                        keys: rotatePairs(keys, cosines: cosines, sines: sines),
                                        values: values, keyMask: keyMask, normalized: false)
        let ones = Variable(Tensor(ones: [values.shape[0], values.shape[1], values.shape[2], 1]))
        let denominator = linearAttention(queries: queries, keys: keys, values: ones, keyMask: keyMask, normalized: false)
        return numerator / denominator
    }
}
