import Foundation

/// A permutation π of 0..<F with O(1) powers via its cycle decomposition: index(j, power: t) = π^t(j), any t ∈ Z (negative = inverse).
///
/// π is the index array itself: π(j) = permutation[j], so π^t(j) applies the array t times — the powers of
/// PermuteFormer's `expand_permutation` (expanded[t][j] = expanded[t−1][perm[j]]). Encodes as
/// `{"permutation": [...]}`; the cycle tables are rebuilt on decoding and whenever `permutation` is set.
public struct CyclePermutation: Codable, Equatable, Sendable {
    private var storage: [Int]
    /// The cycles end to end: a cycle starting at s lists s, π(s), π²(s), … (each cycle starts at its
    /// smallest element; cycles in increasing order of it).
    public private(set) var cycleElements: [Int32] = []
    /// End offset (exclusive) of each cycle in `cycleElements`.
    public private(set) var cycleEnds: [Int32] = []
    private var slot: [Int32] = []       // where j sits in cycleElements
    private var cycleOf: [Int32] = []    // which cycle j belongs to

    public init(_ permutation: [Int]) {
        var seen = [Bool](repeating: false, count: permutation.count)
        for (i, p) in permutation.enumerated() {
            check(p >= 0 && p < permutation.count, "CyclePermutation: entry \(p) at \(i) is outside 0..<\(permutation.count)")
            check(!seen[p], "CyclePermutation: \(p) appears twice, so \(permutation) is not a permutation")
            seen[p] = true
        }
        check(permutation.count <= Int(Int32.max), "CyclePermutation: size \(permutation.count) is too large")
        storage = permutation
        decompose()
    }

    private mutating func decompose() {
        let n = storage.count
        cycleElements = []; cycleEnds = []
        cycleElements.reserveCapacity(n)
        slot = [Int32](repeating: -1, count: n)
        cycleOf = [Int32](repeating: -1, count: n)
        for start in 0..<n where slot[start] < 0 {
            var j = start
            repeat {
                slot[j] = Int32(cycleElements.count)
                cycleOf[j] = Int32(cycleEnds.count)
                cycleElements.append(Int32(j))
                j = storage[j]
            } while j != start
            cycleEnds.append(Int32(cycleElements.count))
        }
    }

    /// Identity of size `size`.
    public static func identity(size: Int) -> CyclePermutation { CyclePermutation(Array(0..<size)) }

    /// A uniformly random permutation by a seeded Fisher–Yates shuffle.
    public static func random(size: Int, generator: inout RandomGenerator) -> CyclePermutation {
        check(size >= 0, "CyclePermutation.random: negative size \(size)")
        var p = Array(0..<size)
        var i = size - 1
        while i > 0 {
            p.swapAt(i, generator.nextInt(below: i + 1))
            i -= 1
        }
        return CyclePermutation(p)
    }

    /// The index array; setting it re-validates and rebuilds the cycles.
    public var permutation: [Int] {
        get { storage }
        set { self = CyclePermutation(newValue) }
    }

    public var size: Int { storage.count }

    /// Lengths of the cycles (fixed points included), in the order of `cycleElements`.
    public var cycleLengths: [Int] {
        var previous = 0
        return cycleEnds.map { e in defer { previous = Int(e) }; return Int(e) - previous }
    }

    /// π^t(j) for any t ∈ Z in O(1): j at offset p of a cycle c of length ℓ maps to c[(p + t) mod ℓ].
    public func index(_ j: Int, power t: Int) -> Int {
        check(j >= 0 && j < storage.count, "CyclePermutation.index: \(j) is outside 0..<\(storage.count)")
        let c = Int(cycleOf[j])
        let start = c == 0 ? 0 : Int(cycleEnds[c - 1]), length = Int(cycleEnds[c]) - start
        var shift = t % length
        if shift < 0 { shift += length }
        var offset = Int(slot[j]) - start + shift
        if offset >= length { offset -= length }
        return Int(cycleElements[start + offset])
    }

    /// The order of π (smallest t ≥ 1 with π^t = identity): the lcm of the cycle lengths; Int.max if that overflows.
    public var order: Int {
        var result = 1
        for length in Set(cycleLengths) {
            var a = result, b = length
            while b != 0 { (a, b) = (b, a % b) }
            let (product, overflow) = (result / a).multipliedReportingOverflow(by: length)
            if overflow { return Int.max }
            result = product
        }
        return result
    }

    public static func == (lhs: CyclePermutation, rhs: CyclePermutation) -> Bool { lhs.storage == rhs.storage }

    private enum CodingKeys: String, CodingKey { case permutation }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let p = try container.decode([Int].self, forKey: .permutation)
        var seen = [Bool](repeating: false, count: p.count)
        for v in p {
            guard v >= 0 && v < p.count && !seen[v] else {
                throw DecodingError.dataCorruptedError(forKey: .permutation, in: container,
                                                       debugDescription: "\(p) is not a permutation of 0..<\(p.count)")
            }
            seen[v] = true
        }
        self.init(p)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(storage, forKey: .permutation)
    }
}

extension PermutationCycleTables {
    /// The flat cycle tables of one permutation per head (all of the same size).
    public init(_ permutations: [CyclePermutation]) {
        size = permutations.first?.size ?? 0
        elements = []; cycleEnds = []; headCycles = [0]
        elements.reserveCapacity(size * permutations.count)
        for p in permutations {
            check(p.size == size, "PermutationCycleTables: permutations of sizes \(size) and \(p.size)")
            elements += p.cycleElements
            cycleEnds += p.cycleEnds
            headCycles.append(Int32(cycleEnds.count))
        }
    }
}

/// out[b,h,t,j] = x[b,h,t,π_h^{p_t}(j)] on features j in `featureRange` (others copied), p_t = positions[t]; gather forward, inverse-gather backward (no atomics).
/// x: [B, H, N, F]; permutations: one per head (size = featureRange.count); positions: [N].
///
/// Indices are relative to the range: feature lo + j takes x[lo + π^{p_t}(j)]. 2D PermuteFormer = two calls,
/// on [0, F/2) with x-positions and on [F/2, F) with y-positions.
public func permuteFeatures(_ x: Variable, permutations: [CyclePermutation], positions: [Int],
                            featureRange: Range<Int>? = nil) -> Variable {
    check(x.rank == 4, "permuteFeatures: x must be [B, H, N, F], got shape \(x.shape)")
    let (B, H, N, F) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let range = featureRange ?? 0..<F
    check(range.lowerBound >= 0 && range.upperBound <= F,
                 "permuteFeatures: featureRange \(range) is outside the \(F) features")
    check(permutations.count == H, "permuteFeatures: need one permutation per head (\(H)), got \(permutations.count)")
    for (h, p) in permutations.enumerated() {
        check(p.size == range.count,
                     "permuteFeatures: permutation of head \(h) has size \(p.size), featureRange \(range) has \(range.count) features")
    }
    check(positions.count == N, "permuteFeatures: need one position per row (\(N)), got \(positions.count)")
    if x.value.count == 0 { return makeResult(x.value, [x]) { g in [g] } }
    let tables = PermutationCycleTables(permutations)
    let lo = range.lowerBound
    var out = Tensor(uninitializedShape: x.shape)
    let xv = x.value
    out.withUnsafeMutablePointer { o in
        positions.withUnsafeBufferPointer { pos in
            permuteFeaturesForward(out: o, x: xv.pointer, tables: tables, positions: pos.baseAddress!,
                                   batch: B, heads: H, length: N, features: F, rangeStart: lo)
        }
    }
    return makeResult(out, [x]) { g in
        var dx = Tensor(zeros: xv.shape)
        dx.withUnsafeMutablePointer { d in
            positions.withUnsafeBufferPointer { pos in
                permuteFeaturesBackward(dx: d, gradOut: g.pointer, tables: tables, positions: pos.baseAddress!,
                                        batch: B, heads: H, length: N, features: F, rangeStart: lo)
            }
        }
        return [dx]
    }
}

/// The Performer feature map of projected queries or keys, fused: split heads, φ(v) = ReLU(v) + ε, and
/// (PermuteFormer, when `permutations` is given) the gather with π_h^{positions[t]}.
/// x: [B, N, H·F] → [B, H, N, F]; permutations: one per head of size F, or nil; positions: [N] (with permutations).
///
/// Without permutations: relu(splitHeads(x)) + ε. With them, the features of head h come out in **cycle
/// order** of π_h: slot s holds feature `permutations[h].cycleElements[s]` of
/// y = permuteFeatures(relu(splitHeads(x)) + ε, permutations, positions), bitwise, values and gradients.
/// That relabeling is fixed per head (the same for every position and batch item), so it leaves
/// ⟨φ(q_i), φ(k_j)⟩ and every linear-attention output unchanged (up to the order of float sums) as long
/// as queries and keys of the same head both go through this op with the same permutations; anything
/// that needs PermuteFormer's own feature order must use `permuteFeatures` instead. Cycle order makes the
/// permuted row a vector gather (see `reluFeatureHeadsForward`).
public func reluFeatureHeads(_ x: Variable, heads: Int, epsilon: Float, permutations: [CyclePermutation]? = nil,
                             positions: [Int]? = nil) -> Variable {
    check(x.rank == 3, "reluFeatureHeads: x must be [B, N, H·F], got shape \(x.shape)")
    let (B, N, width) = (x.shape[0], x.shape[1], x.shape[2])
    check(heads >= 1 && width % heads == 0, "reluFeatureHeads: width \(width) is not divisible by \(heads) heads")
    let F = width / heads
    var tables: PermutationCycleTables? = nil
    var rowPositions: [Int] = []
    if let permutations {
        check(permutations.count == heads, "reluFeatureHeads: need one permutation per head (\(heads)), got \(permutations.count)")
        for (h, p) in permutations.enumerated() {
            check(p.size == F, "reluFeatureHeads: permutation of head \(h) has size \(p.size), the heads have \(F) features")
        }
        guard let positions else { fatalError("reluFeatureHeads: permutations need positions") }
        check(positions.count == N, "reluFeatureHeads: need one position per row (\(N)), got \(positions.count)")
        tables = PermutationCycleTables(permutations)
        rowPositions = positions
    }
    var out = Tensor(uninitializedShape: [B, heads, N, F])
    let xv = x.value
    out.withUnsafeMutablePointer { o in
        rowPositions.withUnsafeBufferPointer { pos in
            reluFeatureHeadsForward(out: o, x: xv.pointer, tables: tables, positions: pos.baseAddress, batch: B, heads: heads,
                                    length: N, features: F, epsilon: epsilon)
        }
    }
    return makeResult(out, [x]) { g in
        var dx = Tensor(zeros: xv.shape)
        dx.withUnsafeMutablePointer { d in
            rowPositions.withUnsafeBufferPointer { pos in
                reluFeatureHeadsBackward(dx: d, gradOut: g.pointer, x: xv.pointer, tables: tables, positions: pos.baseAddress,
                                         batch: B, heads: heads, length: N, features: F)
            }
        }
        return [dx]
    }
}

// MARK: - Pairwise rotation (RoPE)

/// Rotates interleaved feature pairs (2i, 2i+1) of every row by a per-(row, pair) angle given as its
/// cosine and sine: out[2i] = x[2i]·c − x[2i+1]·s, out[2i+1] = x[2i]·s + x[2i+1]·c. One pass forward
/// and one backward (the transpose rotation: dx[2i] = g[2i]·c + g[2i+1]·s, dx[2i+1] = −g[2i]·s + g[2i+1]·c)
/// instead of slices, broadcast products and a concatenation. The angles are constants (no gradient).
/// x: [B, H, N, F] (F even); cosines, sines: [1 or H, N, F/2].
public func rotatePairs(_ x: Variable, cosines: Tensor, sines: Tensor) -> Variable {
    check(x.rank == 4, "rotatePairs: x must be [B, H, N, F], got \(x.shape)")
    let (B, H, N, F) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    check(F % 2 == 0, "rotatePairs: feature width \(F) must be even")
    check(cosines.shape == sines.shape && cosines.rank == 3 && (cosines.shape[0] == 1 || cosines.shape[0] == H)
          && cosines.shape[1] == N && cosines.shape[2] == F / 2,
          "rotatePairs: cosines \(cosines.shape) and sines \(sines.shape) must both be [1 or \(H), \(N), \(F / 2)] for x \(x.shape)")
    let angleHeads = cosines.shape[0]
    func rotate(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, transpose: Bool) {
        let rows = B * H * N, half = F / 2
        let cp = cosines.pointer, sp = sines.pointer
        parallelFor(rows, grain: max(1, 16_384 / F)) { range in
            for r in range {
                let t = r % N, h = (r / N) % H
                let angleRow = ((angleHeads == 1 ? 0 : h) * N + t) * half
                let c = cp + angleRow, s = sp + angleRow, x = src + r * F, y = dst + r * F
                for i in 0..<half {
                    let e = x[2 * i], o = x[2 * i + 1], ci = c[i], si = transpose ? -s[i] : s[i]
                    y[2 * i] = e * ci - o * si
                    y[2 * i + 1] = e * si + o * ci
                }
            }
        }
    }
    var out = Tensor(uninitializedShape: x.shape)
    let xv = x.value
    out.withUnsafeMutablePointer { rotate(xv.pointer, $0, transpose: false) }
    return makeResult(out, [x]) { g in
        var dx = Tensor(uninitializedShape: xv.shape)
        dx.withUnsafeMutablePointer { rotate(g.pointer, $0, transpose: true) }
        return [dx]
    }
}
