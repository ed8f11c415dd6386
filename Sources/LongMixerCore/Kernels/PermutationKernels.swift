import Foundation
import CLongMixerGather
import LongMixerWideKernels

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
func permuteFeaturesReference(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, permutations: [[Int]],
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

/// Per-thread rotations of the cycles of one head at the current row's position p (shift = p mod ℓ per
/// cycle of length ℓ), for `lm_rotate_cycles`. Consecutive rows of a head usually have consecutive
/// positions, so the shifts then advance by one step instead of costing one division per cycle.
struct CycleShifts {
    let ends: UnsafePointer<Int32>, headCycles: UnsafePointer<Int32>
    let shifts: UnsafeMutablePointer<Int32>   // [F]: one per cycle of the current head
    var head = -1, position = 0

    init(ends: UnsafePointer<Int32>, headCycles: UnsafePointer<Int32>, features: Int) {
        self.ends = ends; self.headCycles = headCycles
        shifts = .allocate(capacity: max(features, 1))
    }

    func deallocate() { shifts.deallocate() }

    /// Sets `shifts` for position p of head h; returns h's cycle ends and cycle count.
    mutating func update(head h: Int, position p: Int) -> (ends: UnsafePointer<Int32>, cycles: Int) {
        let first = Int(headCycles[h]), cycles = Int(headCycles[h + 1]) - first
        let e = ends + first
        if h == head && position < Int.max && p == position + 1 {
            var start: Int32 = 0
            for c in 0..<cycles {
                let next = shifts[c] + 1
                shifts[c] = next == e[c] - start ? 0 : next
                start = e[c]
            }
        } else {
            var start = 0
            for c in 0..<cycles {
                let length = Int(e[c]) - start
                var shift = p % length
                if shift < 0 { shift += length }
                shifts[c] = Int32(shift)
                start = Int(e[c])
            }
        }
        head = h; position = p
        return (e, cycles)
    }
}

/// Calls `body` with base pointers of the cycle tables, the elements padded by LM_GATHER_PAD zeros for the
/// rotation's overshoot (all nil without tables).
@inline(__always)
func withCycleOrderTables<R>(_ tables: PermutationCycleTables?,
                             _ body: (UnsafePointer<Int32>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?) -> R) -> R {
    guard let tables else { return body(nil, nil, nil) }
    let padded = tables.elements + [Int32](repeating: 0, count: Int(LM_GATHER_PAD))
    return padded.withUnsafeBufferPointer { e in
        tables.cycleEnds.withUnsafeBufferPointer { c in
            tables.headCycles.withUnsafeBufferPointer { h in body(e.baseAddress, c.baseAddress, h.baseAddress) }
        }
    }
}

/// Forward of the fused Performer feature map: head split, φ(v) = ReLU(v) + ε, and (PermuteFormer) the
/// position-dependent permutation, in one pass. Without `tables`: out[b,h,t,j] = φ(x[b,t,h·F + j]).
/// With them, the features come out in **cycle order** of π_h: slot s = start + i of a cycle
/// e[start ..< start + ℓ] of head h (e = h's `elements`) holds
///   out[b,h,t,s] = φ(x[b,t,h·F + e[start + (i + p_t) mod ℓ]]) = φ(x[…, π_h^{p_t}(e[s])]),
/// i.e. PermuteFormer's feature j = e[s] (in original order out'[j] = φ(x[π^{p_t}(j)])) sits at slot s.
/// That is one fixed relabeling of the F features per head, the same at every position, so queries and
/// keys of the same head both fed through it give the same linear-attention outputs (up to the order of
/// float sums). Why: the index list of a row is then `elements` rotated within each cycle (two contiguous
/// copies per cycle, `lm_rotate_cycles`), and the row is one vector gather (16 lanes on AVX-512) from an
/// L1 copy with φ and sequential stores (`lm_gather_relu_epsilon`), where the original order needs a
/// scalar scatter with two index loads per element (in L1: ≈ 125 instead of ≈ 230 ns per row of 256).
/// out: [B, H, N, F]; x: [B, N, H·F]; tables: H permutations of size F or nil; positions: [N] (with tables)
public func reluFeatureHeadsForward(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, tables: PermutationCycleTables?,
                                    positions: UnsafePointer<Int>?, batch B: Int, heads H: Int, length N: Int, features F: Int,
                                    epsilon: Float) {
    reluFeatureHeadsForward(out: out, x: x, tables: tables, positions: positions, batch: B, heads: H, length: N, features: F,
                            epsilon: epsilon, wide: CPUFeatures.avx512)
}

/// `reluFeatureHeadsForward` with the 16-lane (AVX-512) gather chosen by the caller (tests run both).
func reluFeatureHeadsForward(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, tables: PermutationCycleTables?,
                             positions: UnsafePointer<Int>?, batch B: Int, heads H: Int, length N: Int, features F: Int,
                             epsilon: Float, wide: Bool) {
    let rows = B * H * N
    if rows == 0 || F == 0 { return }
    if let tables { check(tables.size == F && positions != nil, "reluFeatureHeadsForward: tables of size \(tables.size) for \(F) features") }
    withCycleOrderTables(tables) { elements, ends, headCycles in
        parallelFor(rows, grain: max(1, 16_384 / F)) { range in
            guard let elements, let ends, let headCycles, let positions else {
                for r in range {
                    let t = r % N, h = (r / N) % H, b = r / (H * N)
                    reluPlusEpsilon(out + r * F, x + ((b * N + t) * H + h) * F, n: F, epsilon: epsilon)
                }
                return
            }
            // The gather reads its row in random order; straight from memory every cache line of x would
            // be a demand miss the prefetcher cannot hide. So the row is first copied sequentially into L1
            // (`staged`); the gather then runs from there, and φ writes the output row sequentially.
            var shifts = CycleShifts(ends: ends, headCycles: headCycles, features: F)
            let staged = UnsafeMutablePointer<Float>.allocate(capacity: F)
            let index = UnsafeMutablePointer<Int32>.allocate(capacity: F + Int(LM_GATHER_PAD))   // pad: the rotation's overshoot
            defer { staged.deallocate(); index.deallocate(); shifts.deallocate() }
            for r in range {
                let t = r % N, h = (r / N) % H, b = r / (H * N)
                let (e, cycles) = shifts.update(head: h, position: positions[t])
                lm_rotate_cycles(index, elements + h * F, e, shifts.shifts, cycles, 0)   // index[s]: the feature slot s reads
                staged.update(from: x + ((b * N + t) * H + h) * F, count: F)
                if wide {
                    WideKernels.gatherReLUPlusEpsilon(dst: out + r * F, base: staged, index: index, count: F, epsilon: epsilon)
                } else {
                    lm_gather_relu_epsilon(out + r * F, staged, index, F, epsilon)
                }
            }
        }
    }
}

/// Backward of `reluFeatureHeadsForward`; accumulates: dx[b,t,h·F + i] += [x[b,t,h·F + i] > 0] · g[b,h,t,s]
/// for the slot s that read feature i (s = i without tables), ReLU's subgradient 0 at 0 as PyTorch.
/// With tables, every dx element still has one source, so this is a gather too: the gradient row is
/// rotated back along the cycles (gc[start + k] = g[start + (k − p_t) mod ℓ], the gradient of feature
/// e[start + k]; two copies per cycle) and gathered into x's order by the fixed inverse of `elements`.
/// dx, x: [B, N, H·F]; gradOut: [B, H, N, F] (in the forward's order); tables, positions as the forward
public func reluFeatureHeadsBackward(dx: UnsafeMutablePointer<Float>, gradOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                     tables: PermutationCycleTables?, positions: UnsafePointer<Int>?, batch B: Int, heads H: Int,
                                     length N: Int, features F: Int) {
    reluFeatureHeadsBackward(dx: dx, gradOut: gradOut, x: x, tables: tables, positions: positions, batch: B, heads: H,
                             length: N, features: F, wide: CPUFeatures.avx512)
}

/// `reluFeatureHeadsBackward` with the 16-lane (AVX-512) gather chosen by the caller (tests run both).
func reluFeatureHeadsBackward(dx: UnsafeMutablePointer<Float>, gradOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
                              tables: PermutationCycleTables?, positions: UnsafePointer<Int>?, batch B: Int, heads H: Int,
                              length N: Int, features F: Int, wide: Bool) {
    let rows = B * H * N
    if rows == 0 || F == 0 { return }
    if let tables { check(tables.size == F && positions != nil, "reluFeatureHeadsBackward: tables of size \(tables.size) for \(F) features") }
    let pad = Int(LM_GATHER_PAD)
    // slots[h·F + i] = where feature i sits in head h's cycles (the inverse of `elements`).
    var slots = [Int32](repeating: 0, count: tables == nil ? 0 : H * F)
    if let tables {
        for h in 0..<H { for k in 0..<F { slots[h * F + Int(tables.elements[h * F + k])] = Int32(k) } }
    }
    withCycleOrderTables(tables) { _, ends, headCycles in
        slots.withUnsafeBufferPointer { slotBuffer in
            parallelFor(rows, grain: max(1, 16_384 / F)) { range in
                var shifts: CycleShifts? = nil
                var scratch: UnsafeMutablePointer<Float>? = nil
                if let ends, let headCycles {
                    shifts = CycleShifts(ends: ends, headCycles: headCycles, features: F)
                    scratch = .allocate(capacity: 2 * (F + pad))
                }
                defer { scratch?.deallocate(); shifts?.deallocate() }
                for r in range {
                    let t = r % N, h = (r / N) % H, b = r / (H * N)
                    let offset = ((b * N + t) * H + h) * F
                    let g = gradOut + r * F, xs = x + offset, d = dx + offset
                    if let scratch, let positions {
                        // rotated[start + k]: the gradient of feature e[start + k], read straight from g (the
                        // copies read up to LM_GATHER_PAD − 1 floats into the next row; the tensor's last row
                        // has none, so it goes through `staged`). Then gathered into x's order.
                        let staged = scratch, rotated = scratch + (F + pad)
                        var source = g
                        if r == rows - 1 { staged.update(from: g, count: F); source = UnsafePointer(staged) }
                        let (e, cycles) = shifts!.update(head: h, position: positions[t])
                        lm_rotate_cycles(rotated, source, e, shifts!.shifts, cycles, 1)
                        let slotIndex = slotBuffer.baseAddress! + h * F
                        if wide {
                            WideKernels.gatherReLUGradientAdd(dst: d, x: xs, base: rotated, index: slotIndex, count: F)
                        } else {
                            lm_gather_relu_gradient_add(d, xs, rotated, slotIndex, F)
                        }
                        continue
                    }
                    var j = 0
                    while j + 8 <= F {
                        d.store8(d.load8(j) + ReLUFunction.apply(x: xs.load8(j), y: Float8(), gradient: g.load8(j)), j)
                        j += 8
                    }
                    while j < F { d[j] += ReLUFunction.apply(x: xs[j], y: 0, gradient: g[j]); j += 1 }
                }
            }
        }
    }
}

/// Reference of `reluFeatureHeadsForward`: split heads, φ, then `permuteFeaturesReference` (O(|p|) per element).
/// out: [B, H, N, F]; x: [B, N, H·F]; permutations: H index arrays of size F or nil; positions: [N]
func reluFeatureHeadsReference(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, permutations: [[Int]]?,
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
