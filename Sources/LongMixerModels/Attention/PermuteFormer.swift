import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerData

/// PermuteFormer (Peng Chen, "PermuteFormer: Efficient Relative Position Encoding for Long
/// Sequences", EMNLP 2021), bidirectional, as the released LRA code (`cpcp1998/PermuteFormer`,
/// `long_range_arena/models/performer_prenorm.py` with `position_embedding_type =
/// relative_key_query`, and `performer_2d_prenorm.py`):
///
/// - Performer (ReLU + 10⁻³ features, Q/K at 4× the head width) whose query and key features of
///   token t are permuted by π_h^t, q'_t[j] = q_t[π_h^t(j)], t = the token's index in the row from 0
///   (CLS = 0). ⟨P^i a, P^j b⟩ = ⟨P^(i−j) a, b⟩, so scores depend only on i − j; features stay
///   non-negative, so the normaliser stays valid. The permutation is applied after φ (φ is
///   elementwise, so the order does not matter).
/// - One uniformly random permutation per head (seeded Fisher–Yates, `CyclePermutation.random`),
///   re-drawn from the same seed in every layer, so **all layers share the per-head permutations**
///   (as the reference, which re-seeds with 0xdeadbeefdeadbeef per layer). π^t comes from the cycle
///   decomposition (no position table, no length limit). The permutations are a non-trainable
///   `Buffer` `permutation` [H, F] (indices stored as exact floats), so a checkpoint reproduces outputs.
public class PermuteFormerAttention: PerformerAttention {
    /// π_h as index arrays, [H, size] (size F for 1D, F/2 for 2D).
    public let permutation: Buffer

    public init(dimensions: Int, heads: Int, featureMultiplier: Int = 4, kernelEpsilon: Float = 1e-3,
                permutationSeed: UInt64 = MixerConfiguration.referencePermutationSeed, permutationSize: Int? = nil,
                generator: inout RandomGenerator) {
        checkHeads(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, name: "\(Self.self)")
        let size = permutationSize ?? featureMultiplier * dimensions / heads
        var permutationGenerator = RandomGenerator(seed: permutationSeed)
        let permutations = (0..<heads).map { _ in CyclePermutation.random(size: size, generator: &permutationGenerator) }
        permutation = Buffer(Self.table(permutations))
        super.init(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, kernelEpsilon: kernelEpsilon,
                   generator: &generator)
    }

    static func table(_ permutations: [CyclePermutation]) -> Tensor {
        let size = permutations.first?.permutation.count ?? 0
        return Tensor(shape: [permutations.count, size], scalars: permutations.flatMap { $0.permutation.map(Float.init) })
    }

    /// The per-head permutations (read from the buffer, so loaded checkpoints take effect).
    public var permutations: [CyclePermutation] {
        get {
            let t = permutation.value, h = t.shape[0], size = t.shape[1]
            return (0..<h).map { head in CyclePermutation((0..<size).map { Int(t[flat: head * size + $0]) }) }
        }
        set {
            let current = permutation.value.shape
            check(newValue.count == current[0] && newValue.allSatisfy { $0.permutation.count == current[1] },
                         "\(Self.self): need \(current[0]) permutations of size \(current[1]), got sizes \(newValue.map { $0.permutation.count })")
            permutation.value = Self.table(newValue)
        }
    }

    override func encodePositions(queries: Variable, keys: Variable, positions: [Int]) -> (Variable, Variable) {
        let p = permutations
        return (permuteFeatures(queries, permutations: p, positions: positions),
                permuteFeatures(keys, permutations: p, positions: positions))
    }

    public override func validateLoadedState(_ local: [String: Tensor]) throws {
        try super.validateLoadedState(local)
        try LoadedStateChecks.permutationTable(local["permutation"], tensor: "permutation")
    }

    /// The same as Performer's path with `encodePositions`, but the permutation runs inside the fused
    /// feature op (head split + φ + π^t in one pass, `reluFeatureHeads`): no extra pass over Q and K
    /// and no extra [B, H, N, F] tensors, so PermuteFormer costs about what Performer costs. That op
    /// returns the features of each head in the cycle order of π_h (a fixed relabeling per head); q and
    /// k both go through it with the same permutations, so the attention output is the same as with
    /// `encodePositions` up to the order of float sums over the features.
    public override func callAsFunction(_ x: Variable, keyMask: Tensor?, positions: [Int]) -> Variable {
        checkMixerInput(x, keyMask: keyMask, dimensions: dimensions, name: "\(Self.self)")
        check(positions.count == x.shape[1], "\(Self.self): \(positions.count) positions for a sequence of \(x.shape[1])")
        let p = permutations
        let q = reluFeatureHeads(query(x), heads: heads, epsilon: kernelEpsilon, permutations: p, positions: positions)
        let k = reluFeatureHeads(key(x), heads: heads, epsilon: kernelEpsilon, permutations: p, positions: positions)
        let v = splitHeads(value(x), heads: heads)
        return output(mergeHeads(linearAttention(queries: q, keys: k, values: v, keyMask: keyMask, normalized: true)))
    }
}

/// 2D PermuteFormer for images (`performer_2d_prenorm.py`): one random permutation π_h of size F/2
/// per head; features [0, F/2) of a token at (x, y) are permuted by π_h^x and features [F/2, F)
/// by π_h^y (the same π acting on disjoint halves, so the score is s_x(Δx) + s_y(Δy)). The token
/// layout is an `ImageGrid`: CLS at (0, 0), pixels in raster order, SEP at (W − 1, H − 1); any W×H
/// (the reference hard-codes 32×32).
public final class PermuteFormer2DAttention: PermuteFormerAttention {
    public let grid: ImageGrid

    public init(dimensions: Int, heads: Int, featureMultiplier: Int = 4, kernelEpsilon: Float = 1e-3,
                permutationSeed: UInt64 = MixerConfiguration.referencePermutationSeed, grid: ImageGrid,
                generator: inout RandomGenerator) {
        checkHeads(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, name: "PermuteFormer2DAttention")
        let features = featureMultiplier * dimensions / heads
        check(features % 2 == 0,
                     "PermuteFormer2DAttention: feature width per head \(features) (= \(featureMultiplier) × \(dimensions / heads)) must be even")
        check(grid.width > 0 && grid.height > 0 && grid.prefix >= 0 && grid.suffix >= 0,
                     "PermuteFormer2DAttention: grid width \(grid.width), height \(grid.height) must be positive, prefix \(grid.prefix), suffix \(grid.suffix) non-negative")
        self.grid = grid
        super.init(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, kernelEpsilon: kernelEpsilon,
                   permutationSeed: permutationSeed, permutationSize: features / 2, generator: &generator)
    }

    /// Explicit (x, y) per token.
    public func callAsFunction(_ x: Variable, keyMask: Tensor?, xPositions: [Int], yPositions: [Int]) -> Variable {
        checkMixerInput(x, keyMask: keyMask, dimensions: dimensions, name: "PermuteFormer2DAttention")
        check(xPositions.count == x.shape[1] && yPositions.count == x.shape[1],
                     "PermuteFormer2DAttention: \(xPositions.count) x- and \(yPositions.count) y-positions for a sequence of \(x.shape[1])")
        let (q, k, v) = projectedFeatures(x)
        let p = permutations, half = featuresPerHead / 2
        func encode(_ t: Variable) -> Variable {
            let shiftedX = permuteFeatures(t, permutations: p, positions: xPositions, featureRange: 0..<half)
            return permuteFeatures(shiftedX, permutations: p, positions: yPositions, featureRange: half..<(2 * half))
        }
        let attended = linearAttention(queries: encode(q), keys: encode(k), values: v, keyMask: keyMask, normalized: true)
        return output(mergeHeads(attended))
    }

    /// Positions from the grid; the sequence length must be prefix + W·H + suffix.
    public override func callAsFunction(_ x: Variable, keyMask: Tensor?) -> Variable {
        check(x.rank == 3, "PermuteFormer2DAttention: input must be [B, N, D], got \(x.shape)")
        let (xs, ys) = grid.positions(length: x.shape[1])
        return callAsFunction(x, keyMask: keyMask, xPositions: xs, yPositions: ys)
    }

    /// Token indices have no meaning here; use the grid (or explicit x/y positions).
    public override func callAsFunction(_ x: Variable, keyMask: Tensor?, positions: [Int]) -> Variable {
        fatalError("PermuteFormer2DAttention takes (x, y) positions: call it with xPositions:yPositions: or without positions")
    }
}

/// Ablation "w/o Property 3" of the paper: a random orthogonal matrix R_h per head instead of the
/// permutation, applied as R_h^t to the query and key features of token t. Relative scores still
/// hold (⟨R^i a, R^j b⟩ = ⟨R^(i−j) a, b⟩) but features can turn negative, so the normaliser
/// Σ⟨·,·⟩ can approach zero or change sign — the property a permutation preserves.
///
/// R_h = U_h · blockdiag(rot(θ_1), …, rot(θ_{F/2})) · U_hᵀ with U_h a random orthogonal matrix (QR of a
/// Gaussian) and θ_i uniform in [0, 2π), so R_h^t = U_h · blockdiag(rot(tθ_i)) · U_hᵀ exactly for
/// any t: two F×F GEMMs per token row and a pairwise rotation, O(N·F²) per head (like a
/// projection) instead of O(t·F²) repeated multiplication or an [N, F, F] table of powers. (This is
/// a random element of SO(F); its eigen-angles are uniform rather than Haar-distributed.)
/// Buffers: `basis` [H, F, F] (U) and `angles` [H, F/2] (θ). F must be even.
public final class OrthogonalFormerAttention: PerformerAttention {
    public let basis: Buffer
    public let angles: Buffer

    public init(dimensions: Int, heads: Int, featureMultiplier: Int = 4, kernelEpsilon: Float = 1e-3,
                seed: UInt64 = MixerConfiguration.referencePermutationSeed, generator: inout RandomGenerator) {
        checkHeads(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, name: "OrthogonalFormerAttention")
        let f = featureMultiplier * dimensions / heads
        check(f % 2 == 0, "OrthogonalFormerAttention: feature width per head \(f) (= \(featureMultiplier) × \(dimensions / heads)) must be even")
        var g = RandomGenerator(seed: seed)
        var u: [Float] = [], theta: [Float] = []
        for _ in 0..<heads {
            u += orthogonalRows(rows: f, columns: f, generator: &g).flatMap { $0.map(Float.init) }
            theta += (0..<(f / 2)).map { _ in Float(2 * Double.pi * g.nextUniformDouble()) }
        }
        basis = Buffer(Tensor(shape: [heads, f, f], scalars: u))
        angles = Buffer(Tensor(shape: [heads, f / 2], scalars: theta))
        super.init(dimensions: dimensions, heads: heads, featureMultiplier: featureMultiplier, kernelEpsilon: kernelEpsilon,
                   generator: &generator)
    }

    /// U_h must be orthogonal (R_h^t = U·rot(tθ)·Uᵀ is a rotation only then; a corrupt basis would
    /// scale the features by its t-th power's norm instead).
    public override func validateLoadedState(_ local: [String: Tensor]) throws {
        try super.validateLoadedState(local)
        guard let u = local["basis"], u.rank == 3, u.shape[1] == u.shape[2] else { return }
        let h = u.shape[0], f = u.shape[1], p = u.pointer
        for head in 0..<h {
            let base = head * f * f
            for i in 0..<f {
                for j in i..<f {
                    var dot: Double = 0
                    for k in 0..<f { dot += Double(p[base + i * f + k]) * Double(p[base + j * f + k]) }
                    if abs(dot - (i == j ? 1 : 0)) > 1e-3 {
                        throw LoadedStateViolation(tensor: "basis", value: "row dot product \(dot) at head \(head), rows \(i), \(j)",
                                                   why: "must be orthogonal (U·Uᵀ = I within 1e-3)")
                    }
                }
            }
        }
    }

    /// R_h^{positions[t]} applied to the features of token t; x [B, H, N, F].
    func applyPowers(_ x: Variable, positions: [Int]) -> Variable {
        let b = x.shape[0], h = x.shape[1], n = x.shape[2], f = x.shape[3]
        let u = Variable(basis.value)
        var tableAngles = Tensor(uninitializedShape: [h, n, f / 2])
        tableAngles.withUnsafeMutablePointer { p in
            let theta = angles.value.pointer
            for head in 0..<h {
                for (t, position) in positions.enumerated() {
                    for i in 0..<(f / 2) {
                        // Reduce tθ mod 2π in Double so long sequences keep float precision.
                        let a = (Double(position) * Double(theta[head * f / 2 + i])).truncatingRemainder(dividingBy: 2 * Double.pi)
                        p[(head * n + t) * (f / 2) + i] = Float(a)
                    }
                }
            }
        }
        let rows = reshape(transpose(x, [1, 0, 2, 3]), [h, b * n, f])                       // [H, B·N, F]
        let inBasis = transpose(reshape(matmul(rows, u), [h, b, n, f]), [1, 0, 2, 3])       // Uᵀx, [B, H, N, F]
        let rotated = rotatePairs(inBasis, angles: tableAngles)
        let back = matmul(reshape(transpose(rotated, [1, 0, 2, 3]), [h, b * n, f]), u, transposeB: true)   // U·(…)
        return transpose(reshape(back, [h, b, n, f]), [1, 0, 2, 3])
    }

    override func encodePositions(queries: Variable, keys: Variable, positions: [Int]) -> (Variable, Variable) {
        (applyPowers(queries, positions: positions), applyPowers(keys, positions: positions))
    }
}
