import Foundation

// Fused linear-attention ops. Kernels and their derivations: Kernels/LinearAttentionKernels.swift.

/// Checks q, k: [B, H, N, F] and v: [B, H, N, Dh] and returns the sizes.
func linearAttentionSizes(_ q: Variable, _ k: Variable, _ v: Variable, op: String) -> LinearAttentionSizes {
    check(q.rank == 4, "\(op): queries must be [B, H, N, F], got shape \(q.shape)")
    check(k.shape == q.shape, "\(op): keys shape \(k.shape) ≠ queries shape \(q.shape)")
    check(v.rank == 4 && Array(v.shape.prefix(3)) == Array(q.shape.prefix(3)),
                 "\(op): values must be [B, H, N, Dh] with B, H, N of the queries \(q.shape), got \(v.shape)")
    return LinearAttentionSizes(batch: q.shape[0], heads: q.shape[1], length: q.shape[2],
                                features: q.shape[3], valueDimensions: v.shape[3])
}

/// Bidirectional linear attention on feature-mapped queries/keys (φ already applied, non-negative when normalized).
/// q, k: [B, H, N, F]; v: [B, H, N, Dh]; keyMask: [B, N] of 0/1 (padded keys contribute nothing) or nil.
/// normalized: out_i = Σ_j (q_i·k_j) v_j / Σ_j q_i·k_j ; else numerator only. Returns [B, H, N, Dh].
/// A row whose keys are all masked has a zero denominator (NaN output when normalized), as in the reference.
/// Cost O(B·H·N·F·Dh); saves KV ([B, H, F, Dh(+1)]) and the denominators for the backward pass.
public func linearAttention(queries: Variable, keys: Variable, values: Variable, keyMask: Tensor? = nil,
                            normalized: Bool = true) -> Variable {
    let sizes = linearAttentionSizes(queries, keys, values, op: "linearAttention")
    if let keyMask {
        check(keyMask.shape == [sizes.batch, sizes.length],
                     "linearAttention: keyMask must be [B, N] = [\(sizes.batch), \(sizes.length)], got \(keyMask.shape)")
    }
    let E = normalized ? sizes.valueDimensions + 1 : sizes.valueDimensions
    var out = Tensor(uninitializedShape: values.shape)
    var kv = Tensor(uninitializedShape: [sizes.batch, sizes.heads, sizes.features, E])
    var denominator: Tensor? = normalized ? Tensor(uninitializedShape: [sizes.batch, sizes.heads, sizes.length]) : nil
    let q = queries.value, k = keys.value, v = values.value
    out.withUnsafeMutablePointer { o in
        kv.withUnsafeMutablePointer { kvp in
            withOptionalMutablePointer(&denominator) { d in
                linearAttentionForward(out: o, kv: kvp, denominator: d, q: q.pointer, k: k.pointer, v: v.pointer,
                                       keyMask: keyMask?.pointer, sizes: sizes, normalized: normalized)
            }
        }
    }
    let result = out
    return makeResult(out, [queries, keys, values]) { g in
        accumulatedGradients(q, k, v) { dq, dk, dv in
            linearAttentionBackward(dq: dq, dk: dk, dv: dv, gradOut: g.pointer, out: result.pointer,
                                    kv: kv.pointer, denominator: denominator?.pointer,
                                    q: q.pointer, k: k.pointer, v: v.pointer, keyMask: keyMask?.pointer,
                                    sizes: sizes, normalized: normalized)
        }
    }
}

/// Checks a per-head decay list: H values in (0, 1].
func validateDecay(_ decay: [Float]?, heads: Int, op: String) {
    guard let decay else { return }
    check(decay.count == heads, "\(op): decay needs one value per head (\(heads)), got \(decay.count)")
    for (h, r) in decay.enumerated() {
        check(r > 0 && r <= 1, "\(op): decay of head \(h) is \(r); it must lie in (0, 1]")
    }
}

/// Causal linear attention with optional per-head decay r_h ∈ (0, 1]: out_i = Σ_{j≤i} r^{i−j} (q_i·k_j) v_j (÷ Σ_{j≤i} r^{i−j} q_i·k_j when normalized).
/// Numerically stable for any N (chunked form; never forms r^{−j}); decay: [H] or nil (= no decay). chunkSize default 64.
/// q, k: [B, H, N, F]; v: [B, H, N, Dh]; returns [B, H, N, Dh]. Saves only the denominators; the backward
/// recomputes the chunk states (two passes, O(F·Dh) extra memory per slice).
public func causalLinearAttention(queries: Variable, keys: Variable, values: Variable, decay: [Float]? = nil,
                                  normalized: Bool, chunkSize: Int = 64) -> Variable {
    let sizes = linearAttentionSizes(queries, keys, values, op: "causalLinearAttention")
    validateDecay(decay, heads: sizes.heads, op: "causalLinearAttention")
    check(chunkSize >= 1, "causalLinearAttention: chunkSize must be ≥ 1, got \(chunkSize)")
    var out = Tensor(uninitializedShape: values.shape)
    var denominator: Tensor? = normalized ? Tensor(uninitializedShape: [sizes.batch, sizes.heads, sizes.length]) : nil
    let q = queries.value, k = keys.value, v = values.value
    out.withUnsafeMutablePointer { o in
        withOptionalMutablePointer(&denominator) { d in
            causalLinearAttentionForward(out: o, denominator: d, q: q.pointer, k: k.pointer, v: v.pointer,
                                         decay: decay, sizes: sizes, normalized: normalized, chunkSize: chunkSize)
        }
    }
    let result = out
    return makeResult(out, [queries, keys, values]) { g in
        accumulatedGradients(q, k, v) { dq, dk, dv in
            causalLinearAttentionBackward(dq: dq, dk: dk, dv: dv, gradOut: g.pointer, out: result.pointer,
                                          denominator: denominator?.pointer, q: q.pointer, k: k.pointer,
                                          v: v.pointer, decay: decay, sizes: sizes, normalized: normalized,
                                          chunkSize: chunkSize)
        }
    }
}

/// Zero gradients shaped like q, k, v, filled by an accumulating backward kernel.
func accumulatedGradients(_ q: Tensor, _ k: Tensor, _ v: Tensor,
                          _ kernel: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> [Tensor?] {
    var dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
    dq.withUnsafeMutablePointer { a in dk.withUnsafeMutablePointer { b in dv.withUnsafeMutablePointer { c in kernel(a, b, c) } } }
    return [dq, dk, dv]
}

/// Calls `body` with the mutable base pointer of an optional tensor (nil when there is none).
func withOptionalMutablePointer<R>(_ t: inout Tensor?, _ body: (UnsafeMutablePointer<Float>?) -> R) -> R {
    if t == nil { return body(nil) }
    return t!.withUnsafeMutablePointer { body($0) }
}

/// Recurrent state for O(1)-memory-per-token generation; step(q,k,v) for one new position per (b,h) returns [B,H,Dh]; must equal the parallel form's row t.
///
/// Holds S = Σ_{j≤t} r^{t−j} k_j v_jᵀ ([B, H, F, Dh]) and, when normalized, z = Σ_{j≤t} r^{t−j} k_j ([B, H, F]).
/// Queries/keys are given after φ (and after any position-dependent permutation for position `length`).
public struct CausalLinearAttentionState {
    public let batch: Int, heads: Int, features: Int, valueDimensions: Int
    public let decay: [Float]?
    public let normalized: Bool
    /// Positions consumed so far (the next `step` is position `length`).
    public private(set) var length = 0
    var state: Tensor
    var normalizer: Tensor?

    public init(batch: Int, heads: Int, features: Int, valueDimensions: Int, decay: [Float]?, normalized: Bool) {
        check(batch >= 1 && heads >= 1 && features >= 1 && valueDimensions >= 1,
                     "CausalLinearAttentionState: sizes must be ≥ 1, got batch \(batch), heads \(heads), features \(features), valueDimensions \(valueDimensions)")
        validateDecay(decay, heads: heads, op: "CausalLinearAttentionState")
        self.batch = batch; self.heads = heads; self.features = features; self.valueDimensions = valueDimensions
        self.decay = decay; self.normalized = normalized
        state = Tensor(zeros: [batch, heads, features, valueDimensions])
        normalizer = normalized ? Tensor(zeros: [batch, heads, features]) : nil
    }

    /// Consumes one position: query, key [B, H, F], value [B, H, Dh]; returns the output [B, H, Dh].
    public mutating func step(query: Tensor, key: Tensor, value: Tensor) -> Tensor {
        check(query.shape == [batch, heads, features] && key.shape == query.shape,
                     "CausalLinearAttentionState.step: query and key must be [B, H, F] = \([batch, heads, features]), got \(query.shape) and \(key.shape)")
        check(value.shape == [batch, heads, valueDimensions],
                     "CausalLinearAttentionState.step: value must be [B, H, Dh] = \([batch, heads, valueDimensions]), got \(value.shape)")
        var out = Tensor(uninitializedShape: [batch, heads, valueDimensions])
        let (b, h, f, dh, r) = (batch, heads, features, valueDimensions, decay)
        out.withUnsafeMutablePointer { o in
            state.withUnsafeMutablePointer { s in
                withOptionalMutablePointer(&normalizer) { z in
                    causalLinearAttentionStep(out: o, state: s, normalizer: z, q: query.pointer, k: key.pointer,
                                              v: value.pointer, decay: r, slices: b * h, heads: h, features: f,
                                              valueDimensions: dh)
                }
            }
        }
        length += 1
        return out
    }
}
