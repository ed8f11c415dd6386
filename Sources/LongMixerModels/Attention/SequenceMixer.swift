import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerData

/// The seam between attention-like token mixers and the blocks that use them.
///
/// A mixer maps x [B, N, D] (already layer-normed by the block) to [B, N, D], including its own
/// output projection; `keyMask` [B, N] (1 = real token, 0 = padding) removes padded keys. Adding a
/// mixer = one file with a `SequenceMixer` class + one case in `MixerKind` and one line in
/// `MixerKind.makeMixer`.
public protocol SequenceMixer: Module {
    func callAsFunction(_ x: Variable, keyMask: Tensor?) -> Variable
}

/// A causal mixer that can also run one token at a time (generation).
public protocol CausalSequenceMixer: SequenceMixer {
    /// Fresh recurrent state for a batch of `batch` sequences.
    func makeState(batch: Int) -> CausalMixerState
    /// One position: x [B, 1, D] at absolute token index `position`; returns [B, 1, D] and advances `state`.
    func step(_ x: Variable, position: Int, state: inout CausalMixerState) -> Variable
}

/// The per-layer state of token-by-token generation.
public enum CausalMixerState {
    /// Linear attention: S (+ z), O(1) memory per token.
    case linear(CausalLinearAttentionState)
    /// Softmax attention: the keys and values so far, [B, H, t, Dh] (nil before the first token), O(t) memory.
    case keyValueCache(keys: Tensor?, values: Tensor?)

    /// Positions consumed so far.
    public var length: Int {
        switch self {
        case .linear(let s): return s.length
        case .keyValueCache(let keys, _): return keys?.shape[2] ?? 0
        }
    }
}

/// A mixer with the four projections `query`, `key`, `value`, `output` (initialisers reach them through this).
public protocol ProjectedAttention: AnyObject {
    var query: Linear { get }
    var key: Linear { get }
    var value: Linear { get }
    var output: Linear { get }
}

/// Every mixer of the attention family. Raw values are the names used in configurations.
public enum MixerKind: String, Codable, CaseIterable, Sendable {
    /// Exact softmax attention, O(N²), masked (the Transformer baseline, `bert_prenorm`).
    case softmax
    /// Performer, generalized ReLU kernel φ = ReLU(x) + ε, Q/K projected to `featureMultiplier`×Dh.
    case performer
    /// Performer with FAVOR+ positive random features for the softmax kernel.
    case favor
    /// PermuteFormer: Performer + a per-head random permutation applied as π^t at token index t.
    case permuteFormer
    /// 2D PermuteFormer: first half of the features permuted by π^x, second half by π^y.
    case permuteFormer2D
    /// Ablation "w/o Property 3": a random orthogonal matrix R^t instead of the permutation.
    case orthogonalFormer
    /// Performer with RoPE in the numerator only (RoFormer eq. 19).
    case ropePerformer
    /// Causal PermuteFormer (LM): permutation + per-head decay r_h = sigmoid(2 + 3h/H).
    case causalPermuteFormer
    /// Ablation "w/o r": causal PermuteFormer without decay.
    case causalPermuteFormerNoDecay
    /// Ablation "w/o P": causal decay without permutation.
    case causalDecayPerformer
    /// Causal Performer (no permutation, no decay): the LM baseline.
    case causalPerformer
    /// Causal softmax attention (the Transformer LM baseline), O(N²); generation keeps a key/value cache.
    case causalSoftmax

    /// Whether the mixer is causal (`CausalSequenceMixer`, usable in the LM).
    public var isCausal: Bool {
        switch self {
        case .causalPermuteFormer, .causalPermuteFormerNoDecay, .causalDecayPerformer, .causalPerformer, .causalSoftmax: return true
        default: return false
        }
    }

    /// The registry: one entry per kind.
    public func makeMixer(dimensions: Int, heads: Int, configuration: MixerConfiguration,
                          generator: inout RandomGenerator) -> any SequenceMixer {
        let c = configuration
        switch self {
        case .softmax:
            return SoftmaxAttention(dimensions: dimensions, heads: heads, attentionDropout: c.attentionDropout, generator: &generator)
        case .causalSoftmax:
            return CausalSoftmaxAttention(dimensions: dimensions, heads: heads, attentionDropout: c.attentionDropout, generator: &generator)
        case .performer:
            return PerformerAttention(dimensions: dimensions, heads: heads, featureMultiplier: c.featureMultiplier,
                                      kernelEpsilon: c.kernelEpsilon, generator: &generator)
        case .favor:
            return FavorAttention(dimensions: dimensions, heads: heads, featureMultiplier: c.featureMultiplier,
                                  randomFeatures: c.randomFeatures, redrawInterval: c.redrawInterval,
                                  featureSeed: c.featureSeed, generator: &generator)
        case .permuteFormer:
            return PermuteFormerAttention(dimensions: dimensions, heads: heads, featureMultiplier: c.featureMultiplier,
                                          kernelEpsilon: c.kernelEpsilon, permutationSeed: c.permutationSeed, generator: &generator)
        case .permuteFormer2D:
            return PermuteFormer2DAttention(dimensions: dimensions, heads: heads, featureMultiplier: c.featureMultiplier,
                                            kernelEpsilon: c.kernelEpsilon, permutationSeed: c.permutationSeed,
                                            grid: c.grid ?? ImageGrid(width: 32, height: 32), generator: &generator)
        case .orthogonalFormer:
            return OrthogonalFormerAttention(dimensions: dimensions, heads: heads, featureMultiplier: c.featureMultiplier,
                                             kernelEpsilon: c.kernelEpsilon, seed: c.permutationSeed, generator: &generator)
        case .ropePerformer:
            return RoPEPerformerAttention(dimensions: dimensions, heads: heads, featureMultiplier: c.featureMultiplier,
                                          kernelEpsilon: c.kernelEpsilon, base: c.ropeBase, generator: &generator)
        case .causalPermuteFormer, .causalPermuteFormerNoDecay, .causalDecayPerformer, .causalPerformer:
            let permute = self == .causalPermuteFormer || self == .causalPermuteFormerNoDecay
            let decay = self == .causalPermuteFormer || self == .causalDecayPerformer
            return CausalPermuteFormerAttention(dimensions: dimensions, heads: heads, featureMultiplier: c.featureMultiplier,
                                                kernelEpsilon: c.kernelEpsilon, permute: permute,
                                                decay: decay ? (c.decayRates ?? CausalPermuteFormerAttention.referenceDecay(heads: heads)) : nil,
                                                normalized: c.normalized, permutationSeed: c.permutationSeed,
                                                chunkSize: c.chunkSize, generator: &generator)
        }
    }
}

/// Image layout for the 2D PermuteFormer: `prefix` tokens (CLS) at (0, 0), W×H pixels in raster
/// order (x fastest), `suffix` tokens (SEP) at (W−1, H−1), as `performer_2d_prenorm.py`.
public struct ImageGrid: Codable, Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var prefix: Int
    public var suffix: Int

    public init(width: Int, height: Int, prefix: Int = 1, suffix: Int = 1) {
        self.width = width; self.height = height; self.prefix = prefix; self.suffix = suffix
    }

    public var length: Int { prefix + width * height + suffix }

    /// (x, y) of every token of a length-`length` row; stops with a message if the length does not fit.
    public func positions(length n: Int) -> (x: [Int], y: [Int]) {
        check(width > 0 && height > 0 && prefix >= 0 && suffix >= 0,
                     "ImageGrid: width \(width) and height \(height) must be positive, prefix \(prefix) and suffix \(suffix) non-negative")
        check(n == length,
                     "2D PermuteFormer: sequence length \(n) ≠ prefix \(prefix) + width \(width) × height \(height) + suffix \(suffix) = \(length)")
        var xs = [Int](repeating: 0, count: prefix), ys = [Int](repeating: 0, count: prefix)
        for y in 0..<height { for x in 0..<width { xs.append(x); ys.append(y) } }
        xs += [Int](repeating: width - 1, count: suffix)
        ys += [Int](repeating: height - 1, count: suffix)
        return (xs, ys)
    }
}

/// Options of the mixers (each reads the fields it needs). Every field has a default, and
/// decoding accepts any subset of them.
public struct MixerConfiguration: Codable, Equatable, Sendable {
    public var kind: MixerKind
    /// Q/K width per head = featureMultiplier × Dh (LRA reference: 4; LM reference: 1). Linear kernels only.
    public var featureMultiplier: Int
    /// ε of φ(x) = ReLU(x) + ε.
    public var kernelEpsilon: Float
    /// Seed of the per-head permutations (or orthogonal matrices), shared by all layers.
    public var permutationSeed: UInt64
    /// Dropout on the softmax attention probabilities (softmax only; the reference Performers ignore it).
    public var attentionDropout: Float
    /// 2D PermuteFormer image layout.
    public var grid: ImageGrid?
    /// FAVOR+: number of random features m (nil: featureMultiplier × Dh).
    public var randomFeatures: Int?
    /// FAVOR+: redraw the random features every k training forward passes (nil: fixed).
    public var redrawInterval: Int?
    /// FAVOR+: seed of the random features.
    public var featureSeed: UInt64
    /// Causal mixers: divide by the running normaliser (false = the released LM, un-normalised).
    public var normalized: Bool
    /// Causal mixers with decay: per-head r_h in (0, 1] (nil: the reference sigmoid(2 + 3h/H)).
    public var decayRates: [Float]?
    /// Causal mixers: chunk length of the parallel (training) form.
    public var chunkSize: Int
    /// RoPE base (θ_i = base^(−2i/F)).
    public var ropeBase: Float

    public static let referencePermutationSeed: UInt64 = 0xdead_beef_dead_beef

    public init(kind: MixerKind, featureMultiplier: Int? = nil, kernelEpsilon: Float = 1e-3,
                permutationSeed: UInt64 = MixerConfiguration.referencePermutationSeed, attentionDropout: Float = 0,
                grid: ImageGrid? = nil, randomFeatures: Int? = nil, redrawInterval: Int? = nil, featureSeed: UInt64 = 0xFA_0001,
                normalized: Bool = false, decayRates: [Float]? = nil, chunkSize: Int = 64, ropeBase: Float = 10000) {
        self.kind = kind
        self.featureMultiplier = featureMultiplier ?? (kind.isCausal || kind == .favor ? 1 : 4)
        self.kernelEpsilon = kernelEpsilon
        self.permutationSeed = permutationSeed
        self.attentionDropout = attentionDropout
        self.grid = grid
        self.randomFeatures = randomFeatures
        self.redrawInterval = redrawInterval
        self.featureSeed = featureSeed
        self.normalized = normalized
        self.decayRates = decayRates
        self.chunkSize = chunkSize
        self.ropeBase = ropeBase
    }

    enum CodingKeys: String, CodingKey {
        case kind, featureMultiplier, kernelEpsilon, permutationSeed, attentionDropout, grid, randomFeatures, redrawInterval
        case featureSeed, normalized, decayRates, chunkSize, ropeBase
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = MixerConfiguration(kind: try c.decode(MixerKind.self, forKey: .kind),
                                   featureMultiplier: try c.decodeIfPresent(Int.self, forKey: .featureMultiplier))
        self = d
        kernelEpsilon = try c.decodeIfPresent(Float.self, forKey: .kernelEpsilon) ?? d.kernelEpsilon
        permutationSeed = try c.decodeIfPresent(UInt64.self, forKey: .permutationSeed) ?? d.permutationSeed
        attentionDropout = try c.decodeIfPresent(Float.self, forKey: .attentionDropout) ?? d.attentionDropout
        grid = try c.decodeIfPresent(ImageGrid.self, forKey: .grid)
        randomFeatures = try c.decodeIfPresent(Int.self, forKey: .randomFeatures)
        redrawInterval = try c.decodeIfPresent(Int.self, forKey: .redrawInterval)
        featureSeed = try c.decodeIfPresent(UInt64.self, forKey: .featureSeed) ?? d.featureSeed
        normalized = try c.decodeIfPresent(Bool.self, forKey: .normalized) ?? d.normalized
        decayRates = try c.decodeIfPresent([Float].self, forKey: .decayRates)
        chunkSize = try c.decodeIfPresent(Int.self, forKey: .chunkSize) ?? d.chunkSize
        ropeBase = try c.decodeIfPresent(Float.self, forKey: .ropeBase) ?? d.ropeBase
    }

    /// Checks the options against the model width D and head count H; the message names the values.
    public func validate(dimensions: Int, heads: Int) throws {
        func fail(_ m: String) -> AttentionConfigurationError { AttentionConfigurationError(message: m) }
        if dimensions < 1 || heads < 1 { throw fail("dimensions (\(dimensions)) and heads (\(heads)) must be positive") }
        if dimensions % heads != 0 { throw fail("width \(dimensions) is not divisible by \(heads) heads") }
        if dimensions > 1 << 20 { throw fail("dimensions must be at most \(1 << 20), got \(dimensions)") }
        if !(1...64).contains(featureMultiplier) { throw fail("featureMultiplier must be in 1...64, got \(featureMultiplier)") }
        if !(kernelEpsilon >= 0) { throw fail("kernelEpsilon must be ≥ 0, got \(kernelEpsilon)") }
        if !(attentionDropout >= 0 && attentionDropout < 1) { throw fail("attentionDropout must be in [0, 1), got \(attentionDropout)") }
        let features = featureMultiplier * dimensions / heads
        switch kind {
        case .permuteFormer2D, .ropePerformer, .orthogonalFormer:
            if features % 2 != 0 {
                throw fail("\(kind.rawValue) needs an even feature width per head, got \(features) (= \(featureMultiplier) × \(dimensions / heads))")
            }
        default: break
        }
        if kind == .permuteFormer2D, let g = grid, !(1...(1 << 12)).contains(g.width) || !(1...(1 << 12)).contains(g.height) || !(0...16).contains(g.prefix) || !(0...16).contains(g.suffix) {
            throw fail("image grid width \(g.width) and height \(g.height) must be positive, prefix \(g.prefix) and suffix \(g.suffix) non-negative")
        }
        if let m = randomFeatures, !(1...(1 << 20)).contains(m) { throw fail("randomFeatures must be in 1...\(1 << 20), got \(m)") }
        if let k = redrawInterval, k < 1 { throw fail("redrawInterval must be ≥ 1 (or nil for fixed features), got \(k)") }
        if let rates = decayRates {
            if rates.count != heads { throw fail("decayRates has \(rates.count) values for \(heads) heads") }
            for (h, r) in rates.enumerated() where !(r > 0 && r <= 1) { throw fail("decay r_\(h) = \(r) is outside (0, 1]") }
        }
        if !(1...(1 << 20)).contains(chunkSize) { throw fail("chunkSize must be in 1...\(1 << 20), got \(chunkSize)") }
        if !(ropeBase > 1) { throw fail("ropeBase must be > 1, got \(ropeBase)") }
    }
}

/// A configuration that cannot build a model; the message names the offending values.
public struct AttentionConfigurationError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

// MARK: - Shared helpers

/// [B, N, H·E] → [B, H, N, E].
func splitHeads(_ x: Variable, heads: Int) -> Variable {
    let b = x.shape[0], n = x.shape[1], width = x.shape[2]
    return transpose(reshape(x, [b, n, heads, width / heads]), [0, 2, 1, 3])
}

/// [B, H, N, E] → [B, N, H·E].
func mergeHeads(_ x: Variable) -> Variable {
    let b = x.shape[0], h = x.shape[1], n = x.shape[2], e = x.shape[3]
    return reshape(transpose(x, [0, 2, 1, 3]), [b, n, h * e])
}

/// The generalized-kernel feature map of the reference: φ(x) = ReLU(x) + ε.
func reluFeatures(_ x: Variable, epsilon: Float) -> Variable { relu(x) + epsilon }

/// Checks the common shape contract of a mixer input.
func checkMixerInput(_ x: Variable, keyMask: Tensor?, dimensions: Int, name: String) {
    check(x.rank == 3 && x.shape[2] == dimensions, "\(name): input must be [B, N, \(dimensions)], got \(x.shape)")
    if let m = keyMask {
        check(m.shape == [x.shape[0], x.shape[1]], "\(name): key mask \(m.shape) must be [B, N] = [\(x.shape[0]), \(x.shape[1])]")
    }
}

/// Checks the width/head split shared by every mixer (`check`, naming the values).
func checkHeads(dimensions: Int, heads: Int, featureMultiplier: Int = 1, name: String) {
    check(dimensions > 0 && heads > 0, "\(name): dimensions \(dimensions) and heads \(heads) must be positive")
    check(dimensions % heads == 0, "\(name): width \(dimensions) is not divisible by \(heads) heads")
    check(featureMultiplier >= 1, "\(name): featureMultiplier must be ≥ 1, got \(featureMultiplier)")
}

/// The reference initialisation for the projections of every mixer: N(0, 0.02) weights, zero bias.
func referenceLinear(_ input: Int, _ output: Int, generator: inout RandomGenerator) -> Linear {
    Linear(inputDimensions: input, outputDimensions: output, standardDeviation: 0.02, generator: &generator)
}

/// Sinusoidal positions as `SinusoidalPositionalEmbedding` of the reference (`bert_prenorm_sin.py`,
/// also fairseq's): with h = D/2 and f_i = exp(−i·ln(10000)/(h − 1)), PE[p] = [sin(p·f), cos(p·f)]
/// (halves, not interleaved). Rows for `positions`; [count, D]. D must be even and ≥ 4.
public func sinusoidalPositions(_ positions: [Int], dimensions: Int) -> Tensor {
    check(dimensions % 2 == 0 && dimensions >= 4, "sinusoidal positions need an even width ≥ 4, got \(dimensions)")
    let half = dimensions / 2
    let scale = Foundation.log(10000.0) / Double(half - 1)
    var t = Tensor(uninitializedShape: [positions.count, dimensions])
    t.withUnsafeMutablePointer { p in
        for (r, pos) in positions.enumerated() {
            for i in 0..<half {
                // Same float32 rounding order as torch: f_i in float, then p·f_i in float.
                let f = Float(Foundation.exp(Double(Float(i)) * -Double(Float(scale))))
                let a = Float(pos) * f
                p[r * dimensions + i] = Foundation.sin(a)
                p[r * dimensions + half + i] = Foundation.cos(a)
            }
        }
    }
    return t
}

/// Rotates consecutive feature pairs (2i, 2i+1) of x [B, H, N, F] by angles [H or 1, N, F/2]
/// (interleaved pairs, `rotate_every_two` / RoFormer): (a, b) ↦ (a cos − b sin, a sin + b cos).
func rotatePairs(_ x: Variable, angles: Tensor) -> Variable {
    let h = x.shape.count == 4 ? x.shape[1] : 0, n = x.shape.count == 4 ? x.shape[2] : 0
    check(angles.rank == 3 && (angles.shape[0] == h || angles.shape[0] == 1) && angles.shape[1] == n,
          "rotatePairs: angles \(angles.shape) must be [\(h) or 1, \(n), F/2] for input \(x.shape)")
    let (cosines, sines) = rotationTables(angles)
    return rotatePairs(x, cosines: cosines, sines: sines)
}

/// cos and sin of every angle (same shape).
func rotationTables(_ angles: Tensor) -> (cosines: Tensor, sines: Tensor) {
    var cosT = Tensor(uninitializedShape: angles.shape), sinT = Tensor(uninitializedShape: angles.shape)
    let count = angles.count
    cosT.withUnsafeMutablePointer { c in
        sinT.withUnsafeMutablePointer { s in
            for i in 0..<count { c[i] = Foundation.cos(angles.pointer[i]); s[i] = Foundation.sin(angles.pointer[i]) }
        }
    }
    return (cosT, sinT)
}

/// Random orthogonal rows: ⌈rows/d⌉ blocks, each the Q of a QR (modified Gram–Schmidt, in
/// Double) of a d×d Gaussian matrix, stacked and truncated to `rows` ([rows, d]).
func orthogonalRows(rows: Int, columns d: Int, generator: inout RandomGenerator) -> [[Double]] {
    var out: [[Double]] = []
    while out.count < rows {
        var block: [[Double]] = []
        while block.count < d {
            var v = (0..<d).map { _ in Double(generator.nextNormal()) }
            for u in block {
                let dot = zip(u, v).reduce(0) { $0 + $1.0 * $1.1 }
                for i in 0..<d { v[i] -= dot * u[i] }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm < 1e-6 { continue }     // (practically never) a degenerate draw: draw again
            block.append(v.map { $0 / norm })
        }
        out += block
    }
    return Array(out.prefix(rows))
}
