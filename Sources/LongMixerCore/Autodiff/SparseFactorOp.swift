import Foundation

// Fused sparse-factor product (Paramixer). Composed from gathers it would store a (B, N, L, D)
// intermediate; fused, it keeps only its inputs and calls the kernels in
// Kernels/SparseFactorKernels.swift (derivation of the backward there). Shape and offset errors
// stop through `check` with the offending values.

/// out[b,i,:] = Σ_k weights[b,i,k] · values[b,(i + offsets[k]) mod N,:]  (+ residual[b,i,:])
///
/// weights: [B, N, L]; values: [B, N, D]; offsets: L integers in 0..<N (duplicates allowed, summed);
/// residual: [B, N, D] or nil, added inside the kernel (the sums start from it), which saves a Paramixer
/// block the separate add and its backward pass over [B, N, D]. Result: [B, N, D]. Differentiable in
/// weights, values and residual (which may be values itself).
public func sparseFactorProduct(weights: Variable, values: Variable, offsets: [Int], residual: Variable? = nil) -> Variable {
    if let residual {
        check(residual.shape == values.shape, "sparseFactorProduct: residual \(residual.shape) must have the values' shape \(values.shape)")
    }
    let (y, offsets) = sparseFactorProductValue(weights: weights.value, values: values.value, offsets: offsets,
                                                residual: residual?.value)
    let shape = values.shape
    let (b, n, l, d) = (shape[0], shape[1], offsets.count, shape[2])
    return makeResult(y, [weights, values] + (residual.map { [$0] } ?? [])) { g in
        // The backward kernel overwrites both: no zero fill.
        var dW: Tensor? = weights.requiresGradient ? Tensor(uninitializedShape: weights.shape) : nil
        var dV: Tensor? = values.requiresGradient ? Tensor(uninitializedShape: values.shape) : nil
        let w = weights.value, v = values.value
        offsets.withUnsafeBufferPointer { off in
            withOptionalMutablePointer(&dW) { dWp in
                withOptionalMutablePointer(&dV) { dVp in
                    sparseFactorBackward(dWeights: dWp, dValues: dVp, dOut: g.pointer, weights: w.pointer, values: v.pointer,
                                         offsets: off.baseAddress!, batch: b, length: n, links: l, dimensions: d)
                }
            }
        }
        return [dW, dV] + (residual == nil ? [] : [g])
    }
}

/// Forward value of `sparseFactorProduct` with its shape checks; returns the offsets as checked.
func sparseFactorProductValue(weights: Tensor, values: Tensor, offsets: [Int], residual: Tensor? = nil) -> (Tensor, [Int]) {
    check(values.rank == 3, "sparseFactorProduct: values must be [B, N, D], got \(values.shape)")
    let (b, n, d) = (values.shape[0], values.shape[1], values.shape[2])
    check(weights.rank == 3 && weights.shape[0] == b && weights.shape[1] == n,
                 "sparseFactorProduct: weights must be [B, N, L] = [\(b), \(n), L] for values \(values.shape), got \(weights.shape)")
    check(weights.shape[2] == offsets.count,
                 "sparseFactorProduct: weights have L = \(weights.shape[2]) links per row but \(offsets.count) offsets were given")
    check(!offsets.isEmpty, "sparseFactorProduct: at least one offset is needed")
    for (k, o) in offsets.enumerated() {
        check(o >= 0 && o < n, "sparseFactorProduct: offset \(o) in slot \(k) is outside 0..<\(n) (N); normalise offsets mod N")
    }
    var y = Tensor(uninitializedShape: [b, n, d])
    offsets.withUnsafeBufferPointer { off in
        y.withUnsafeMutablePointer { out in
            sparseFactorForward(out: out, weights: weights.pointer, values: values.pointer, offsets: off.baseAddress!,
                                batch: b, length: n, links: offsets.count, dimensions: d, residual: residual?.pointer)
        }
    }
    return (y, offsets)
}
