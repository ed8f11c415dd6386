import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerData

/// Performer attention as in the PermuteFormer LRA code (`cpcp1998/PermuteFormer`,
/// `long_range_arena/models/performer_prenorm.py` + `performer_attention.py`), i.e. Performer's
/// "generalized attention" with the ReLU kernel and deterministic features (Choromanski et al.,
/// "Rethinking Attention with Performers", ICLR 2021; `make_fast_generalized_attention` defaults):
///
/// - Q and K are projected to `featureMultiplier`·Dh features per head by the projections
///   themselves (reference: 4×), V to Dh; no 1/√d scaling;
/// - φ(x) = ReLU(x) + ε (ε = 1e-3), padded keys zeroed after φ (`keyMask`);
/// - out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / φ(q_i)·Σ_j φ(k_j) (no ε in the denominator; φ ≥ ε keeps it
///   positive), through the fused `linearAttention` op; then the output projection.
///
/// Subclasses change one step: the feature map (`FavorAttention`), the position encoding of the
/// features (`PermuteFormerAttention`, `OrthogonalFormerAttention`) or the whole attention
/// (`RoPEPerformerAttention`, causal mixers). Parameter names: `query`, `key`, `value`, `output`.
public class PerformerAttention: Module, SequenceMixer, ProjectedAttention {
    public let query: Linear
    public let key: Linear
    public let value: Linear
    public let output: Linear
    public let heads: Int
    public let dimensions: Int
    public let featureMultiplier: Int
    public let kernelEpsilon: Float

    public init(dimensions: Int, heads: Int, featureMultiplier: Int = 4, kernelEpsilon: Float = 1e-3, generator: inout RandomGenerator) {
        checkHeads(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, name: "\(Self.self)")
        check(kernelEpsilon >= 0, "\(Self.self): kernel ε must be ≥ 0, got \(kernelEpsilon)")
        query = referenceLinear(dimensions, dimensions * featureMultiplier, generator: &generator)
        key = referenceLinear(dimensions, dimensions * featureMultiplier, generator: &generator)
        value = referenceLinear(dimensions, dimensions, generator: &generator)
        output = referenceLinear(dimensions, dimensions, generator: &generator)
        self.heads = heads
        self.dimensions = dimensions
        self.featureMultiplier = featureMultiplier
        self.kernelEpsilon = kernelEpsilon
    }

    /// Dh.
    public var headDimensions: Int { dimensions / heads }
    /// Q/K width per head after the projection (F = featureMultiplier × Dh).
    public var featuresPerHead: Int { featureMultiplier * headDimensions }

    /// φ applied to projected, head-split queries or keys [B, H, N, F] (default ReLU + ε).
    func featureMap(_ x: Variable, isQuery: Bool) -> Variable { reluFeatures(x, epsilon: kernelEpsilon) }

    /// Relative position encoding of the features (default: none). `positions[t]` is token t's index.
    func encodePositions(queries: Variable, keys: Variable, positions: [Int]) -> (Variable, Variable) { (queries, keys) }

    /// The attention of φ-features [B, H, N, F] and values [B, H, N, Dh] → [B, H, N, Dh].
    func attend(queries: Variable, keys: Variable, values: Variable, keyMask: Tensor?, positions: [Int]) -> Variable {
        let (q, k) = encodePositions(queries: queries, keys: keys, positions: positions)
        return linearAttention(queries: q, keys: k, values: values, keyMask: keyMask, normalized: true)
    }

    /// φ of a projection [B, N, H·F] as heads [B, H, N, F]. The default (ReLU + ε) runs as one fused op
    /// (head split + φ in one pass, `reluFeatureHeads`), the same values as featureMap(splitHeads(·));
    /// FAVOR+ overrides it with its own feature map.
    func headFeatures(_ projected: Variable, isQuery: Bool) -> Variable {
        reluFeatureHeads(projected, heads: heads, epsilon: kernelEpsilon)
    }

    /// φ(Q), φ(K) [B, H, N, F] and V [B, H, N, Dh] of x [B, N, D].
    func projectedFeatures(_ x: Variable) -> (queries: Variable, keys: Variable, values: Variable) {
        let q = headFeatures(query(x), isQuery: true)
        let k = headFeatures(key(x), isQuery: false)
        return (q, k, splitHeads(value(x), heads: heads))
    }

    /// The mixer with explicit token indices (`positions.count` = N); the protocol call uses 0..<N.
    public func callAsFunction(_ x: Variable, keyMask: Tensor?, positions: [Int]) -> Variable {
        checkMixerInput(x, keyMask: keyMask, dimensions: dimensions, name: "\(Self.self)")
        check(positions.count == x.shape[1], "\(Self.self): \(positions.count) positions for a sequence of \(x.shape[1])")
        let (q, k, v) = projectedFeatures(x)
        return output(mergeHeads(attend(queries: q, keys: k, values: v, keyMask: keyMask, positions: positions)))
    }

    public func callAsFunction(_ x: Variable, keyMask: Tensor?) -> Variable {
        callAsFunction(x, keyMask: keyMask, positions: Array(0..<x.shape[1]))
    }
}

/// Performer with FAVOR+ (positive orthogonal random features for the softmax kernel), as the
/// official `google-research/performer` `nonnegative_softmax_kernel_feature_creator`:
///
///   x' = x·F^(−1/4),  φ(x) = m^(−1/2)·(exp(Ωx' − |x'|²/2 − M) + 10⁻⁶),
///
/// so E[φ(q)·φ(k)] ∝ exp(q·k/√F). M (detached, cancels between numerator and denominator up to the
/// 10⁻⁶) is the row maximum of Ωx' for queries and the maximum over all positions and features
/// of a sequence's head for keys (bidirectional only: it mixes information across positions).
/// Ω [m, F] stacks Q factors of Gaussian d×d matrices (orthogonal blocks), rows rescaled by the
/// norms of fresh Gaussian vectors (`ortho_scaling = 0`). It is a `Buffer` (checkpointed); the
/// redraw policy is fixed (`redrawInterval` nil) or a fresh Ω every k training forward passes,
/// from the mixer's own seeded stream. Q/K projected to featureMultiplier × Dh (default 1).
public final class FavorAttention: PerformerAttention {
    /// Ω [m, F].
    public let projection: Buffer
    public let randomFeatures: Int
    public let redrawInterval: Int?
    /// The stream Ω is redrawn from; its `count` is the training forward passes since Ω was drawn.
    let featureStream: RandomStream
    public var passesSinceRedraw: Int { featureStream.count }
    public static let stabilizer: Float = 1e-6

    public init(dimensions: Int, heads: Int, featureMultiplier: Int = 1, randomFeatures: Int? = nil, redrawInterval: Int? = nil,
                featureSeed: UInt64 = 0xFA_0001, generator: inout RandomGenerator) {
        let f = featureMultiplier * (dimensions / max(heads, 1))
        let m = randomFeatures ?? f
        check(m >= 1, "FavorAttention: randomFeatures must be ≥ 1, got \(m)")
        if let k = redrawInterval { check(k >= 1, "FavorAttention: redrawInterval must be ≥ 1 (nil = fixed), got \(k)") }
        self.randomFeatures = m
        self.redrawInterval = redrawInterval
        var features = RandomGenerator(seed: featureSeed)
        projection = Buffer(Self.drawProjection(features: m, dimensions: f, generator: &features))
        featureStream = RandomStream(features)
        super.init(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, kernelEpsilon: 0, generator: &generator)
    }

    /// Gaussian orthogonal random matrix [m, d] with χ_d row norms.
    public static func drawProjection(features m: Int, dimensions d: Int, generator: inout RandomGenerator) -> Tensor {
        let rows = orthogonalRows(rows: m, columns: d, generator: &generator)
        var t = Tensor(uninitializedShape: [m, d])
        t.withUnsafeMutablePointer { p in
            for r in 0..<m {
                let norm = (0..<d).reduce(0.0) { s, _ in let g = Double(generator.nextNormal()); return s + g * g }.squareRoot()
                for c in 0..<d { p[r * d + c] = Float(rows[r][c] * norm) }
            }
        }
        return t
    }

    /// Draws a new Ω now (also what the redraw policy calls).
    public func redrawFeatures() {
        projection.value = Self.drawProjection(features: randomFeatures, dimensions: featuresPerHead, generator: &featureStream.generator)
        featureStream.count = 0
    }

    public override func callAsFunction(_ x: Variable, keyMask: Tensor?, positions: [Int]) -> Variable {
        if isTraining, let k = redrawInterval {
            if passesSinceRedraw >= k { redrawFeatures() }
            featureStream.count += 1
        }
        return super.callAsFunction(x, keyMask: keyMask, positions: positions)
    }

    override func headFeatures(_ projected: Variable, isQuery: Bool) -> Variable {
        featureMap(splitHeads(projected, heads: heads), isQuery: isQuery)
    }

    /// φ as one fused op (`favorFeatures`): the same values as the composed
    /// exp(matmul(x·F^(−1/4), Ωᵀ) − |x'|²/2 − M) + 10⁻⁶, times m^(−1/2), with M detached (row maximum for
    /// queries, per (batch, head) for keys).
    override func featureMap(_ x: Variable, isQuery: Bool) -> Variable {
        favorFeatures(x, projection: projection.value, isQuery: isQuery, stabilizer: Self.stabilizer)
    }
}
