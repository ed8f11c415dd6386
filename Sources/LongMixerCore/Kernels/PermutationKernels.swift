import Foundation

// Position-dependent feature permutation (PermuteFormer, permuteformer.md §1.3): row t of head h is
// gathered with π_h^{p_t}. Each π_h is given by its cycles laid end to end (cycle c of head h holds
// j, π(j), π²(j), …), so π^p on a cycle of length ℓ is a rotation by p mod ℓ: O(1) per element, no
// (H, N, F) index table and no limit on p.

/// The cycle tables of H permutations of size R.
/// elements: [H, R] (head h's cycles end to end); cycleEnds: every head's cycle end offsets (exclusive,
/// relative to the head's first element) concatenated; headCycles: [H + 1], head h's cycles are
/// cycleEnds[headCycles[h] ..< headCycles[h + 1]].
public struct PermutationCycleTables {
    public var elements: [Int32]
    public var cycleEnds: [Int32]
    public var headCycles: [Int32]
    public var size: Int
}

/// Rotates the features of one row along the cycles of one permutation:
/// dst[e[i]] (+)= src[e[(i ± p) mod ℓ]] for every cycle e of length ℓ (− when `inverse`).
/// dst, src: one row; elements, cycleEnds: one head's tables
@inline(__always)
func rotateAlongCycles(dst: UnsafeMutablePointer<Float>, src: UnsafePointer<Float>, elements: UnsafePointer<Int32>,
                       cycleEnds: UnsafePointer<Int32>, cycles: Int, power p: Int, inverse: Bool, accumulate: Bool) {
    var start = 0
    for c in 0..<cycles {
        let end = Int(cycleEnds[c]), len = end - start
        let e = elements + start
        var shift = p % len            // |shift| < len, so negating it cannot overflow
        if inverse { shift = -shift }
        if shift < 0 { shift += len }
        // i < len − shift reads e[i + shift]; the rest wraps to e[i + shift − len].
        let split = len - shift
        if accumulate {
            for i in 0..<split { dst[Int(e[i])] += src[Int(e[i + shift])] }
            for i in split..<len { dst[Int(e[i])] += src[Int(e[i - split])] }
        } else {
            for i in 0..<split { dst[Int(e[i])] = src[Int(e[i + shift])] }
            for i in split..<len { dst[Int(e[i])] = src[Int(e[i - split])] }
        }
        start = end
    }
}

/// Shared body of the forward (gather with π^p) and backward (gather with π^{−p}, accumulating).
func permuteFeatureRows(dst: UnsafeMutablePointer<Float>, src: UnsafePointer<Float>, tables: PermutationCycleTables,
                        positions: UnsafePointer<Int>, rows: Int, heads H: Int, length N: Int, features F: Int,
                        rangeStart lo: Int, inverse: Bool, accumulate: Bool) {
    let R = tables.size
    tables.elements.withUnsafeBufferPointer { elements in
        tables.cycleEnds.withUnsafeBufferPointer { ends in
            tables.headCycles.withUnsafeBufferPointer { headCycles in
                let elementBase = elements.baseAddress!, endBase = ends.baseAddress!, hc = headCycles.baseAddress!
                parallelFor(rows, grain: max(1, 16_384 / max(F, 1))) { range in
                    for r in range {
                        let t = r % N, h = (r / N) % H
                        let d = dst + r * F, s = src + r * F
                        // Features outside the permuted range pass through.
                        if accumulate {
                            for j in 0..<lo { d[j] += s[j] }
                            for j in (lo + R)..<F { d[j] += s[j] }
                        } else {
                            for j in 0..<lo { d[j] = s[j] }
                            for j in (lo + R)..<F { d[j] = s[j] }
                        }
                        let first = Int(hc[h]), cycles = Int(hc[h + 1]) - first
                        let p = positions[t]
                        rotateAlongCycles(dst: d + lo, src: s + lo, elements: elementBase + h * R, cycleEnds: endBase + first,
                                          cycles: cycles, power: p, inverse: inverse, accumulate: accumulate)
                    }
                }
            }
        }
    }
}

/// out[b,h,t,lo+j] = x[b,h,t,lo+π_h^{p_t}(j)] for j < R, other features copied.
/// out, x: [B, H, N, F]; tables: H permutations of size R; positions: [N]
public func permuteFeaturesForward(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, tables: PermutationCycleTables,
                                   positions: UnsafePointer<Int>, batch B: Int, heads H: Int, length N: Int, features F: Int,
                                   rangeStart lo: Int) {
    permuteFeatureRows(dst: out, src: x, tables: tables, positions: positions, rows: B * H * N, heads: H, length: N,
                       features: F, rangeStart: lo, inverse: false, accumulate: false)
}

/// Backward of `permuteFeaturesForward`: dx[b,h,t,lo+π^{p_t}(j)] += g[b,h,t,lo+j], written as the gather
/// dx[lo+j] += g[lo+π^{−p_t}(j)] (each dx element has exactly one source: no atomics, no races).
/// dx, gradOut: [B, H, N, F]; tables, positions as the forward
public func permuteFeaturesBackward(dx: UnsafeMutablePointer<Float>, gradOut: UnsafePointer<Float>, tables: PermutationCycleTables,
                                    positions: UnsafePointer<Int>, batch B: Int, heads H: Int, length N: Int, features F: Int,
                                    rangeStart lo: Int) {
    permuteFeatureRows(dst: dx, src: gradOut, tables: tables, positions: positions, rows: B * H * N, heads: H, length: N,
                       features: F, rangeStart: lo, inverse: true, accumulate: true)
}

/// Reference: out[b,h,t,lo+j] = x[b,h,t,lo+perm_h applied p_t times to j] by repeated application of the
/// index array (p_t ≥ 0) or of its inverse (p_t < 0), other features copied. O(|p|) per element.
/// out, x: [B, H, N, F]; permutations: H index arrays of size R; positions: [N]
public func permuteFeaturesReference(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, permutations: [[Int]],
                                     positions: [Int], batch B: Int, heads H: Int, length N: Int, features F: Int,
                                     rangeStart lo: Int) {
    let inverses = permutations.map { perm -> [Int] in
        var inv = [Int](repeating: 0, count: perm.count)
        for (i, p) in perm.enumerated() { inv[p] = i }
        return inv
    }
    for b in 0..<B {
        for h in 0..<H {
            let R = permutations[h].count
            for t in 0..<N {
                let row = ((b * H + h) * N + t) * F
                for j in 0..<F { out[row + j] = x[row + j] }
                let p = positions[t], step = p >= 0 ? permutations[h] : inverses[h]
                for j in 0..<R {
                    var idx = j
                    for _ in 0..<abs(p) { idx = step[idx] }
                    out[row + lo + j] = x[row + lo + idx]
                }
            }
        }
    }
}

// MARK: - Fused head split + ReLU features + permutation (Performer / PermuteFormer φ)

/// dst = ReLU(src) + ε on one row (bitwise the same as `relu` followed by `+ ε`); dst may be src.   dst, src: [n]
@inline(__always)
func reluPlusEpsilon(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, n: Int, epsilon: Float) {
    let e8 = Float8(repeating: epsilon)
    var j = 0
    while j + 8 <= n {
        dst.store8(ReLUFunction.apply(src.load8(j)) + e8, j)
        j += 8
    }
    while j < n { dst[j] = ReLUFunction.apply(src[j]) + epsilon; j += 1 }
}

/// Forward of the fused Performer feature map: head split, φ(v) = ReLU(v) + ε, and (PermuteFormer) the
/// position-dependent permutation, in one pass: out[b,h,t,j] = φ(x[b,t,h·F + σ(j)]), σ = π_h^{p_t}
/// (identity when `tables` is nil). Equals permuteFeatures(relu(splitHeads(x)) + ε) exactly (φ is
/// elementwise, so it commutes with the gather); it replaces four passes and four fresh [B,H,N,F]
/// tensors (transpose copy, ReLU, + ε, permutation) by one.
/// out: [B, H, N, F]; x: [B, N, H·F]; tables: H permutations of size F or nil; positions: [N] (with tables)
public func reluFeatureHeadsForward(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, tables: PermutationCycleTables?,
                                    positions: UnsafePointer<Int>?, batch B: Int, heads H: Int, length N: Int, features F: Int,
                                    epsilon: Float) {
    let rows = B * H * N
    if rows == 0 || F == 0 { return }
    if let tables { check(tables.size == F && positions != nil, "reluFeatureHeadsForward: tables of size \(tables.size) for \(F) features") }
    withCycleTables(tables) { elements, ends, headCycles in
        parallelFor(rows, grain: max(1, 16_384 / F)) { range in
            // The gather reads its row in random order; straight from memory every cache line of x would
            // be a demand miss the prefetcher cannot hide (perf: ~60 % of the kernel on that load). So
            // the row is first copied sequentially into L1 scratch, the gather runs between two L1 rows,
            // and φ writes the output row sequentially.
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 2 * F)
            defer { scratch.deallocate() }
            let staged = scratch + F
            for r in range {
                let t = r % N, h = (r / N) % H, b = r / (H * N)
                let d = out + r * F, s = x + ((b * N + t) * H + h) * F
                if let elements, let ends, let headCycles {
                    staged.update(from: s, count: F)
                    let first = Int(headCycles[h])
                    rotateAlongCycles(dst: scratch, src: staged, elements: elements + h * F, cycleEnds: ends + first,
                                      cycles: Int(headCycles[h + 1]) - first, power: positions![t], inverse: false, accumulate: false)
                    reluPlusEpsilon(d, scratch, n: F, epsilon: epsilon)
                } else {
                    reluPlusEpsilon(d, s, n: F, epsilon: epsilon)
                }
            }
        }
    }
}

/// Backward of `reluFeatureHeadsForward`; accumulates: dx[b,t,h·F + i] += [x[b,t,h·F + i] > 0] · g[b,h,t,σ⁻¹(i)]
/// (out[j] = φ(x[σ(j)]) ⇒ ∂L/∂x[σ(j)] = g[j]·φ'(x[σ(j)]); ReLU's subgradient is 0 at 0, as PyTorch).
/// The inverse permutation is a gather too (π^{−p}): every dx element has one source, no atomics.
/// dx, x: [B, N, H·F]; gradOut: [B, H, N, F]; tables, positions as the forward
public func reluFeatureHeadsBackward(dx: UnsafeMutablePointer<Float>, gradOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                     tables: PermutationCycleTables?, positions: UnsafePointer<Int>?, batch B: Int, heads H: Int,
                                     length N: Int, features F: Int) {
    let rows = B * H * N
    if rows == 0 || F == 0 { return }
    if let tables { check(tables.size == F && positions != nil, "reluFeatureHeadsBackward: tables of size \(tables.size) for \(F) features") }
    withCycleTables(tables) { elements, ends, headCycles in
        parallelFor(rows, grain: max(1, 16_384 / F)) { range in
            // As the forward: the gradient row is staged sequentially in L1 before the random-order gather.
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 2 * F)
            defer { scratch.deallocate() }
            let staged = scratch + F
            for r in range {
                let t = r % N, h = (r / N) % H, b = r / (H * N)
                let offset = ((b * N + t) * H + h) * F
                let g = gradOut + r * F, xs = x + offset, d = dx + offset
                let src: UnsafePointer<Float>
                if let elements, let ends, let headCycles {
                    staged.update(from: g, count: F)
                    let first = Int(headCycles[h])
                    rotateAlongCycles(dst: scratch, src: staged, elements: elements + h * F, cycleEnds: ends + first,
                                      cycles: Int(headCycles[h + 1]) - first, power: positions![t], inverse: true, accumulate: false)
                    src = UnsafePointer(scratch)
                } else {
                    src = g
                }
                var j = 0
                while j + 8 <= F {
                    d.store8(d.load8(j) + ReLUFunction.apply(x: xs.load8(j), y: Float8(), gradient: src.load8(j)), j)
                    j += 8
                }
                while j < F { d[j] += ReLUFunction.apply(x: xs[j], y: 0, gradient: src[j]); j += 1 }
            }
        }
    }
}

/// Reference of `reluFeatureHeadsForward`: split heads, φ, then `permuteFeaturesReference` (O(|p|) per element).
/// out: [B, H, N, F]; x: [B, N, H·F]; permutations: H index arrays of size F or nil; positions: [N]
public func reluFeatureHeadsReference(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, permutations: [[Int]]?,
                                      positions: [Int], batch B: Int, heads H: Int, length N: Int, features F: Int, epsilon: Float) {
    let count = B * H * N * F
    let split = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    defer { split.deallocate() }
    for b in 0..<B { for h in 0..<H { for t in 0..<N { for j in 0..<F {
        let v = x[((b * N + t) * H + h) * F + j]
        split[((b * H + h) * N + t) * F + j] = (v < 0 ? 0 : v) + epsilon
    } } } }
    if let permutations {
        permuteFeaturesReference(out: out, x: split, permutations: permutations, positions: positions,
                                 batch: B, heads: H, length: N, features: F, rangeStart: 0)
    } else {
        out.update(from: split, count: count)
    }
}

/// Calls `body` with base pointers of the cycle tables (all nil without tables).
@inline(__always)
func withCycleTables<R>(_ tables: PermutationCycleTables?,
                        _ body: (UnsafePointer<Int32>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?) -> R) -> R {
    guard let tables else { return body(nil, nil, nil) }
    return tables.elements.withUnsafeBufferPointer { e in
        tables.cycleEnds.withUnsafeBufferPointer { c in
            tables.headCycles.withUnsafeBufferPointer { h in body(e.baseAddress, c.baseAddress, h.baseAddress) }
        }
    }
}
