import Foundation

// Fused softmax attention op. Kernels and the derivation: Kernels/ScaledDotProductAttentionKernels.swift.

/// Checks q, k: [B, H, N, F], v: [B, H, N, Dv] and keyMask: [B, N] and returns the sizes.
func scaledDotProductAttentionSizes(_ q: Variable, _ k: Variable, _ v: Variable, keyMask: Tensor?,
                                    op: String) -> AttentionSizes {
    check(q.rank == 4, "\(op): queries must be [B, H, N, F], got shape \(q.shape)")
    check(k.shape == q.shape, "\(op): keys shape \(k.shape) ≠ queries shape \(q.shape)")
    check(v.rank == 4 && Array(v.shape.prefix(3)) == Array(q.shape.prefix(3)),
          "\(op): values must be [B, H, N, Dv] with B, H, N of the queries \(q.shape), got \(v.shape)")
    if let keyMask {
        check(keyMask.shape == [q.shape[0], q.shape[2]],
              "\(op): keyMask must be [B, N] = [\(q.shape[0]), \(q.shape[2])], got \(keyMask.shape)")
    }
    return AttentionSizes(batch: q.shape[0], heads: q.shape[1], length: q.shape[2], features: q.shape[3],
                          valueDimensions: v.shape[3])
}

/// Softmax attention, fused: out_i = Σ_j P_ij v_j with P_i = softmax_j(scale·q_i·k_j + bias_ij).
///
/// q, k: [B, H, N, F]; v: [B, H, N, Dv]; keyMask: [B, N] of 1 (keep) / 0 (padded) or nil; returns [B, H, N, Dv].
/// A padded key gets the additive bias (1 − m_j)·(−10000) (HF BERT; not −∞, so a row whose keys are all
/// padded is the softmax of its shifted scores, never NaN). `causal`: key j > i is hidden from query i
/// (−∞, fairseq's future mask). Equals `softmax(scale·matmul(q, k, transposeB: true) + bias)·v` without
/// ever holding the [B, H, N, N] scores: it saves only the output and two numbers per row, and the
/// backward recomputes the probabilities block by block (one extra Q·Kᵀ GEMM, O(N) extra memory).
public func scaledDotProductAttention(queries: Variable, keys: Variable, values: Variable, keyMask: Tensor? = nil,
                                      causal: Bool = false, scale: Float) -> Variable {
    let sizes = scaledDotProductAttentionSizes(queries, keys, values, keyMask: keyMask, op: "scaledDotProductAttention")
    check(scale.isFinite, "scaledDotProductAttention: scale must be finite, got \(scale)")
    var out = Tensor(uninitializedShape: values.shape)
    var statistics = Tensor(uninitializedShape: [sizes.batch, sizes.heads, sizes.length, 2])
    let q = queries.value, k = keys.value, v = values.value
    out.withUnsafeMutablePointer { o in
        statistics.withUnsafeMutablePointer { l in
            scaledDotProductAttentionForward(out: o, statistics: l, q: q.pointer, k: k.pointer, v: v.pointer,
                                             keyMask: keyMask?.pointer, causal: causal, scale: scale, sizes: sizes)
        }
    }
    let result = out, rowStatistics = statistics
    return makeResult(out, [queries, keys, values]) { g in
        accumulatedGradients(q, k, v) { dq, dk, dv in
            scaledDotProductAttentionBackward(dq: dq, dk: dk, dv: dv, gradOut: g.pointer, out: result.pointer,
                                              statistics: rowStatistics.pointer, q: q.pointer, k: k.pointer, v: v.pointer,
                                              keyMask: keyMask?.pointer, causal: causal, scale: scale, sizes: sizes)
        }
    }
}
