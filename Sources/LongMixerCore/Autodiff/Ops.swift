import Foundation

// Differentiable ops. Each public op sits directly above the function computing its value and
// pullback. Pullbacks return fresh gradient tensors; fused kernels accumulate into them.

// MARK: - Elementwise unary

/// A unary op from a forward function and its derivative kernel.

func unaryOp<F: UnaryFunction & UnaryDerivative>(_ x: Variable, _ f: F.Type) -> Variable {
    let y = x.value.map(f)
    return makeResult(y, [x]) { g in
        // Both kernels overwrite: no zero fill.
        var dx = Tensor(uninitializedShape: x.shape)
        let n = dx.count
        dx.withUnsafeMutablePointer { d in
            if let wide = F.wideBackwardKernel {
                mapBackwardKernel(wide: wide, gradIn: d, x: x.value.pointer, gradOut: g.pointer, count: n)
            } else {
                mapBackwardKernel(f, gradIn: d, x: x.value.pointer, y: y.pointer, gradOut: g.pointer, count: n)
            }
        }
        return [dx]
    }
}

public func exp(_ x: Variable) -> Variable { unaryOp(x, ExpFunction.self) }
public func log(_ x: Variable) -> Variable { unaryOp(x, LogFunction.self) }
public func sqrt(_ x: Variable) -> Variable { unaryOp(x, SqrtFunction.self) }
public func tanh(_ x: Variable) -> Variable { unaryOp(x, TanhFunction.self) }
public func sigmoid(_ x: Variable) -> Variable { unaryOp(x, SigmoidFunction.self) }
public func relu(_ x: Variable) -> Variable { unaryOp(x, ReLUFunction.self) }
/// Exact GELU, x·Φ(x) (`torch.nn.GELU()` with approximate='none').
public func gelu(_ x: Variable) -> Variable { unaryOp(x, GELUFunction.self) }
public func softplus(_ x: Variable) -> Variable { unaryOp(x, SoftplusFunction.self) }
public prefix func - (x: Variable) -> Variable { unaryOp(x, NegateFunction.self) }

/// x^p for a scalar exponent.
public func pow(_ x: Variable, _ p: Float) -> Variable {
    var y = Tensor(uninitializedShape: x.shape)
    let n = y.count
    y.withUnsafeMutablePointer { o in powKernel(out: o, x: x.value.pointer, exponent: p, count: n) }
    return makeResult(y, [x]) { g in
        var dx = Tensor(zeros: x.shape)
        dx.withUnsafeMutablePointer { d in powBackwardKernel(gradIn: d, x: x.value.pointer, gradOut: g.pointer, exponent: p, count: n) }
        return [dx]
    }
}

// MARK: - Elementwise binary with broadcasting

public func + (a: Variable, b: Variable) -> Variable {
    let y = a.value.broadcast(AddFunction.self, b.value, op: "add")
    return makeResult(y, [a, b]) { g in [g.sumToShape(a.shape), g.sumToShape(b.shape)] }
}

public func - (a: Variable, b: Variable) -> Variable {
    let y = a.value.broadcast(SubtractFunction.self, b.value, op: "subtract")
    return makeResult(y, [a, b]) { g in [g.sumToShape(a.shape), g.map(NegateFunction.self).sumToShape(b.shape)] }
}

public func * (a: Variable, b: Variable) -> Variable {
    let y = a.value.broadcast(MultiplyFunction.self, b.value, op: "multiply")
    return makeResult(y, [a, b]) { g in
        [a.requiresGradient ? g.broadcast(MultiplyFunction.self, b.value, op: "multiply").sumToShape(a.shape) : nil,
         b.requiresGradient ? g.broadcast(MultiplyFunction.self, a.value, op: "multiply").sumToShape(b.shape) : nil]
    }
}

public func / (a: Variable, b: Variable) -> Variable {
    let y = a.value.broadcast(DivideFunction.self, b.value, op: "divide")
    return makeResult(y, [a, b]) { g in
        let ga = g.broadcast(DivideFunction.self, b.value, op: "divide")   // g / b
        // d(a/b)/db = −a/b² = −y/b
        let gb = b.requiresGradient
            ? ga.broadcast(MultiplyFunction.self, y, op: "multiply").map(NegateFunction.self).sumToShape(b.shape) : nil
        return [a.requiresGradient ? ga.sumToShape(a.shape) : nil, gb]
    }
}

public func + (a: Variable, s: Float) -> Variable { a + Variable(Tensor(scalar: s)) }
public func - (a: Variable, s: Float) -> Variable { a - Variable(Tensor(scalar: s)) }
public func * (a: Variable, s: Float) -> Variable { a * Variable(Tensor(scalar: s)) }
public func / (a: Variable, s: Float) -> Variable { a * Variable(Tensor(scalar: 1 / s)) }
public func + (s: Float, a: Variable) -> Variable { Variable(Tensor(scalar: s)) + a }
public func - (s: Float, a: Variable) -> Variable { Variable(Tensor(scalar: s)) - a }
public func * (s: Float, a: Variable) -> Variable { Variable(Tensor(scalar: s)) * a }
public func / (s: Float, a: Variable) -> Variable { Variable(Tensor(scalar: s)) / a }

// MARK: - Reductions

/// Sum over `axes` (all when empty).
public func sum(_ x: Variable, axes: [Int] = [], keepDims: Bool = false) -> Variable {
    let y = x.value.sum(axes: axes, keepDims: keepDims)
    let normalized = (axes.isEmpty ? Array(0..<x.rank) : axes).map { x.value.axis($0, op: "sum") }
    return makeResult(y, [x]) { g in
        // Re-insert the reduced axes as 1s, then broadcast back to x's shape.
        var kept = x.shape
        for a in normalized { kept[a] = 1 }
        let expanded = g.reshaped(kept).broadcast(AddFunction.self, Tensor(zeros: x.shape), op: "sum backward")
        return [expanded]
    }
}

/// Mean over `axes` (all when empty).
public func mean(_ x: Variable, axes: [Int] = [], keepDims: Bool = false) -> Variable {
    let normalized = (axes.isEmpty ? Array(0..<x.rank) : axes).map { x.value.axis($0, op: "mean") }
    let n = Set(normalized).reduce(1) { $0 * x.shape[$1] }
    check(n > 0, "mean: reducing over empty axes \(axes) of shape \(x.shape)")
    return sum(x, axes: axes, keepDims: keepDims) * (1 / Float(n))
}

/// Maximum over one axis; the gradient flows to the first maximal element of each slice.
public func max(_ x: Variable, axis: Int, keepDims: Bool = false) -> Variable {
    let (y, idx) = x.value.max(axis: axis, keepDims: keepDims)
    let ax = x.value.axis(axis, op: "max")
    return makeResult(y, [x]) { g in
        let (outer, n, inner) = x.value.splitAround(axis: ax)
        var dx = Tensor(zeros: x.shape)
        dx.withUnsafeMutablePointer { d in
            for o in 0..<outer {
                for i in 0..<inner {
                    let k = Int(idx.scalars[o * inner + i])
                    d[(o * n + k) * inner + i] += g.pointer[o * inner + i]
                }
            }
        }
        return [dx]
    }
}

// MARK: - Shape ops

public func reshape(_ x: Variable, _ shape: [Int]) -> Variable {
    let y = x.value.reshaped(shape)
    return makeResult(y, [x]) { g in [g.reshaped(x.shape)] }
}

/// Axes permuted: result.shape[i] = x.shape[permutation[i]].
public func transpose(_ x: Variable, _ permutation: [Int]) -> Variable {
    let y = x.value.transposed(permutation)
    var inverse = [Int](repeating: 0, count: permutation.count)
    for (i, p) in permutation.enumerated() { inverse[p] = i }
    return makeResult(y, [x]) { g in [g.transposed(inverse)] }
}

public func transpose(_ x: Variable, _ a: Int, _ b: Int) -> Variable {
    var p = Array(0..<x.rank)
    p.swapAt(x.value.axis(a, op: "transpose"), x.value.axis(b, op: "transpose"))
    return transpose(x, p)
}

public func slice(_ x: Variable, axis: Int, _ range: Range<Int>) -> Variable {
    let y = x.value.slice(axis: axis, range)
    let ax = x.value.axis(axis, op: "slice")
    return makeResult(y, [x]) { g in
        [g.padded(axis: ax, before: range.lowerBound, after: x.shape[ax] - range.upperBound)]
    }
}

public func concatenate(_ xs: [Variable], axis: Int) -> Variable {
    let y = Tensor.concatenate(xs.map(\.value), axis: axis)
    let ax = xs[0].value.axis(axis, op: "concatenate")
    return makeResult(y, xs) { g in
        var offset = 0
        return xs.map { x in
            defer { offset += x.shape[ax] }
            return g.slice(axis: ax, offset..<(offset + x.shape[ax]))
        }
    }
}

public func pad(_ x: Variable, axis: Int, before: Int, after: Int, value: Float = 0) -> Variable {
    let y = x.value.padded(axis: axis, before: before, after: after, value: value)
    let ax = x.value.axis(axis, op: "pad")
    return makeResult(y, [x]) { g in [g.slice(axis: ax, before..<(before + x.shape[ax]))] }
}

/// Index select along `axis` (result shape = x.shape[..<axis] + indices.shape + x.shape[axis+1...]).
public func gather(_ x: Variable, axis: Int, indices: IntTensor) -> Variable {
    let y = x.value.gathered(axis: axis, indices: indices)
    let ax = x.value.axis(axis, op: "gather")
    return makeResult(y, [x]) { g in [g.scatterAdded(axis: ax, indices: indices, targetShape: x.shape)] }
}

// MARK: - Matrix products

/// Matrix product (see `Tensor.matmul` for the accepted shapes). Transposes are BLAS flags.
public func matmul(_ a: Variable, _ b: Variable, transposeA: Bool = false, transposeB: Bool = false) -> Variable {
    check(!(transposeA && b.rank == 2 && a.rank > 2),
                 "matmul: transposeA with a shared 2-D right operand is not supported (\(a.shape)ᵀ · \(b.shape)); transpose A first")
    let y = Tensor.matmul(a.value, b.value, transposeA: transposeA, transposeB: transposeB)
    return makeResult(y, [a, b]) { g in
        // C = op(A)·op(B):  d op(A) = G·op(B)ᵀ,  d op(B) = op(A)ᵀ·G.
        var da: Tensor? = nil, db: Tensor? = nil
        if a.requiresGradient {
            da = transposeA ? Tensor.matmul(b.value, g, transposeA: transposeB, transposeB: true)
                            : Tensor.matmul(g, b.value, transposeB: !transposeB)
        }
        if b.requiresGradient {
            if b.rank == 2 && a.rank > 2 {
                // Shared right-hand side: flatten the batch into rows and do one GEMM.
                let a2 = a.value.reshaped([-1, a.shape[a.rank - 1]]), g2 = g.reshaped([-1, g.shape[g.rank - 1]])
                db = transposeB ? Tensor.matmul(g2, a2, transposeA: true, transposeB: transposeA)
                                : Tensor.matmul(a2, g2, transposeA: !transposeA)
            } else {
                db = transposeB ? Tensor.matmul(g, a.value, transposeA: true, transposeB: transposeA)
                                : Tensor.matmul(a.value, g, transposeA: !transposeA)
            }
        }
        return [da, db]
    }
}

/// y = x·Wᵀ + b (PyTorch `nn.Linear` layout). x: [..., in]; weight: [out, in]; bias: [out].
/// One GEMM with the transpose as a flag; the bias is added in the same pass over y.
public func linear(_ x: Variable, weight: Variable, bias: Variable?) -> Variable {
    check(weight.rank == 2, "linear: weight must be [out, in], got \(weight.shape)")
    let inFeatures = weight.shape[1], outFeatures = weight.shape[0]
    check(x.rank >= 1 && x.shape[x.rank - 1] == inFeatures,
                 "linear: input \(x.shape) does not end in \(inFeatures) features (weight \(weight.shape))")
    if let bias { check(bias.shape == [outFeatures], "linear: bias \(bias.shape) ≠ [\(outFeatures)]") }
    let rows = x.value.count / max(inFeatures, 1)
    var y = Tensor(uninitializedShape: Array(x.shape.dropLast()) + [outFeatures])
    y.withUnsafeMutablePointer { c in
        BLAS.rowSplitGemm(transposeB: true, m: rows, n: outFeatures, k: inFeatures,
                          a: x.value.pointer, b: weight.value.pointer, bias: bias?.value.pointer, c: c)
    }
    let inputs = bias.map { [x, weight, $0] } ?? [x, weight]
    return makeResult(y, inputs) { g in
        var dx: Tensor? = nil, dw: Tensor? = nil
        if x.requiresGradient {
            var t = Tensor(uninitializedShape: x.shape)
            t.withUnsafeMutablePointer { d in
                BLAS.rowSplitGemm(transposeB: false, m: rows, n: inFeatures, k: outFeatures, a: g.pointer, b: weight.value.pointer, c: d)
            }
            dx = t
        }
        var db: Tensor? = nil
        if weight.requiresGradient {
            var t = Tensor(uninitializedShape: weight.shape)
            // The skinny kernel sums dY's columns (the bias gradient) in the same pass over dY.
            let fuseBias = bias?.requiresGradient == true && BLAS.usesSkinnyGemm(m: rows, n: outFeatures, k: inFeatures)
            var sums = fuseBias ? Tensor(uninitializedShape: [outFeatures]) : nil
            t.withUnsafeMutablePointer { d in
                if fuseBias {
                    sums!.withUnsafeMutablePointer { s in
                        BLAS.rowReducedGemm(m: rows, n: outFeatures, k: inFeatures, a: g.pointer, b: x.value.pointer, c: d, columnSumsOfA: s)
                    }
                } else {
                    BLAS.rowReducedGemm(m: rows, n: outFeatures, k: inFeatures, a: g.pointer, b: x.value.pointer, c: d)
                }
            }
            dw = t
            db = sums
        }
        var result: [Tensor?] = [dx, dw]
        if let bias { result.append(bias.requiresGradient ? db ?? g.reshaped([rows, outFeatures]).sum(axes: [0]) : nil) }
        return result
    }
}

// MARK: - Fused normalisations

/// Softmax along `axis` (fused; other axes are moved last and back).
public func softmax(_ x: Variable, axis: Int = -1) -> Variable {
    lastAxisOp(x, axis: axis, forward: softmaxForward, backward: softmaxBackward)
}

/// Log-softmax along `axis` (fused, max-shifted).
public func logSoftmax(_ x: Variable, axis: Int = -1) -> Variable {
    lastAxisOp(x, axis: axis, forward: logSoftmaxForward, backward: logSoftmaxBackward)
}

/// Runs a row kernel over the last axis, transposing another axis into last place if needed.
func lastAxisOp(_ x: Variable, axis: Int,
                forward: @escaping (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int, Int) -> Void,
                backward: @escaping (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int, Int) -> Void) -> Variable {
    let ax = x.value.axis(axis, op: "softmax")
    if ax != x.rank - 1 {
        return transpose(lastAxisOp(transpose(x, ax, x.rank - 1), axis: -1, forward: forward, backward: backward), ax, x.rank - 1)
    }
    let n = x.shape.last ?? 1, rows = x.value.count / max(n, 1)
    var y = Tensor(uninitializedShape: x.shape)
    y.withUnsafeMutablePointer { o in forward(o, x.value.pointer, rows, n) }
    return makeResult(y, [x]) { g in
        var dx = Tensor(zeros: x.shape)
        dx.withUnsafeMutablePointer { d in backward(d, y.pointer, g.pointer, rows, n) }
        return [dx]
    }
}

/// Layer norm over the last axis with affine γ, β (biased variance, ε inside the root, as PyTorch).
/// x: [..., n]; gamma, beta: [n]
public func layerNorm(_ x: Variable, gamma: Variable, beta: Variable, epsilon: Float = 1e-5) -> Variable {
    let n = x.shape.last ?? 0
    check(gamma.shape == [n] && beta.shape == [n],
                 "layerNorm: γ \(gamma.shape) and β \(beta.shape) must be [\(n)] for input \(x.shape)")
    let rows = x.value.count / max(n, 1)
    var y = Tensor(uninitializedShape: x.shape)
    var mean = Tensor(uninitializedShape: [rows]), rstd = Tensor(uninitializedShape: [rows])
    y.withUnsafeMutablePointer { yp in
        mean.withUnsafeMutablePointer { mp in
            rstd.withUnsafeMutablePointer { rp in
                layerNormForward(y: yp, mean: mp, rstd: rp, x: x.value.pointer, gamma: gamma.value.pointer,
                                 beta: beta.value.pointer, rows: rows, n: n, epsilon: epsilon)
            }
        }
    }
    return makeResult(y, [x, gamma, beta]) { g in
        var dx = Tensor(zeros: x.shape), dg = Tensor(zeros: [n]), db = Tensor(zeros: [n])
        dx.withUnsafeMutablePointer { dxp in
            dg.withUnsafeMutablePointer { dgp in
                db.withUnsafeMutablePointer { dbp in
                    layerNormBackward(dx: dxp, dGamma: dgp, dBeta: dbp, x: x.value.pointer, mean: mean.pointer, rstd: rstd.pointer,
                                      gamma: gamma.value.pointer, dy: g.pointer, rows: rows, n: n)
                }
            }
        }
        return [dx, dg, db]
    }
}

// MARK: - Embedding and dropout

/// Rows of `table` [V, D] for each id; result [ids.shape..., D]. The `paddingIndex` row gets
/// no gradient (as `nn.Embedding(padding_idx:)`).
public func embedding(_ ids: IntTensor, table: Variable, paddingIndex: Int? = nil) -> Variable {
    check(table.rank == 2, "embedding: table must be [vocabulary, dimensions], got \(table.shape)")
    ids.checkRange(table.shape[0], what: "embedding lookup (vocabulary \(table.shape[0]))")
    let y = table.value.gathered(axis: 0, indices: ids)
    return makeResult(y, [table]) { g in
        [g.scatterAdded(axis: 0, indices: ids, targetShape: table.shape, skipping: paddingIndex.map { Int32($0) })]
    }
}

/// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1−p).
/// Identity when not training or p = 0. The mask comes from `generator` (seeded, reproducible).
public func dropout(_ x: Variable, probability p: Float, training: Bool, generator: inout RandomGenerator) -> Variable {
    check(p >= 0 && p <= 1, "dropout: probability \(p) outside [0, 1]")
    if !training || p == 0 { return x }
    if p == 1 { return x * 0 }
    var mask = Tensor.bernoulli(x.shape, probability: 1 - p, generator: &generator)
    let n = mask.count
    mask.withUnsafeMutablePointer { m in scaleKernel(m, alpha: 1 / (1 - p), count: n) }
    return x * Variable(mask)
}

// MARK: - Losses

/// Mean cross-entropy of logits [R, C] against class indices [R]; rows whose target equals
/// `ignoreIndex` are skipped and excluded from the mean (PyTorch semantics; NaN if all ignored).
public func crossEntropy(logits: Variable, targets: IntTensor, ignoreIndex: Int = -100) -> Variable {
    check(logits.rank == 2, "crossEntropy: logits must be [rows, classes], got \(logits.shape)")
    let rows = logits.shape[0], classes = logits.shape[1]
    check(targets.shape == [rows], "crossEntropy: targets \(targets.shape) must be [\(rows)] for logits \(logits.shape)")
    targets.checkRange(classes, what: "crossEntropy target (\(classes) classes)", allowing: ignoreIndex)
    let counted = targets.scalars.reduce(0) { $0 + ($1 == Int32(ignoreIndex) ? 0 : 1) }
    var losses = Tensor(uninitializedShape: [rows]), lse = Tensor(uninitializedShape: [rows])
    targets.scalars.withUnsafeBufferPointer { tp in
        losses.withUnsafeMutablePointer { lp in
            lse.withUnsafeMutablePointer { sp in
                crossEntropyForward(loss: lp, logSumExp: sp, logits: logits.value.pointer, targets: tp.baseAddress!,
                                    rows: rows, classes: classes, ignoreIndex: Int32(ignoreIndex))
            }
        }
    }
    var total: Double = 0
    for i in 0..<rows { total += Double(losses.pointer[i]) }
    let value = Tensor(scalar: Float(total / Double(counted)))
    return makeResult(value, [logits]) { g in
        var dx = Tensor(zeros: logits.shape)
        let scale = g.scalar / Float(counted)
        targets.scalars.withUnsafeBufferPointer { tp in
            dx.withUnsafeMutablePointer { d in
                crossEntropyBackward(dLogits: d, logits: logits.value.pointer, logSumExp: lse.pointer, targets: tp.baseAddress!,
                                     rowScale: { _ in scale }, rows: rows, classes: classes, ignoreIndex: Int32(ignoreIndex))
            }
        }
        return [dx]
    }
}

/// Mean binary cross-entropy on logits: mean(max(x,0) − x·y + log(1 + e^{−|x|})), stable for any x.
/// logits and targets (in [0, 1]) have the same shape.
public func binaryCrossEntropy(logits: Variable, targets: Tensor) -> Variable {
    check(logits.shape == targets.shape, "binaryCrossEntropy: logits \(logits.shape) and targets \(targets.shape) differ")
    let n = logits.value.count
    // The pullback keeps both tensors (not raw pointers into them): the caller's targets are often a
    // temporary freed before backward runs.
    let xv = logits.value
    var total: Double = 0
    let x = xv.pointer, t = targets.pointer
    for i in 0..<n { total += Double(max(x[i], 0) - x[i] * t[i] + Foundation.log1p(Foundation.exp(-abs(x[i])))) }
    return makeResult(Tensor(scalar: Float(total / Double(n))), [logits]) { g in
        var dx = Tensor(uninitializedShape: xv.shape)
        let s = g.scalar / Float(n)
        let x = xv.pointer, t = targets.pointer
        dx.withUnsafeMutablePointer { d in
            for i in 0..<n { d[i] = s * (SigmoidFunction.apply(x[i]) - t[i]) }
        }
        return [dx]
    }
}

/// Mean squared error between same-shaped prediction and target.
public func meanSquaredError(_ prediction: Variable, _ target: Variable) -> Variable {
    check(prediction.shape == target.shape, "meanSquaredError: prediction \(prediction.shape) and target \(target.shape) differ")
    let d = prediction - target
    return mean(d * d)
}
