import Foundation

/// Non-differentiable tensor operations (the forward and backward halves of the Variable ops).
extension Tensor {
    /// Normalises a possibly negative axis, naming the offending values.
    public func axis(_ a: Int, op: String) -> Int {
        let r = a < 0 ? a + rank : a
        check(r >= 0 && r < Swift.max(rank, 1), "\(op): axis \(a) is invalid for a tensor of rank \(rank) (shape \(shape))")
        return r
    }

    /// [outer, n, inner] view around `axis`.
    public func splitAround(axis a: Int) -> (outer: Int, n: Int, inner: Int) {
        let outer = shape[..<a].reduce(1, *), inner = shape[(a + 1)...].reduce(1, *)
        return (outer, shape[a], inner)
    }

    public func map<F: UnaryFunction>(_ f: F.Type) -> Tensor {
        var out = Tensor(uninitializedShape: shape)
        let n = count
        out.withUnsafeMutablePointer { o in mapKernel(f, out: o, x: pointer, count: n) }
        return out
    }

    /// F(self, other) with NumPy broadcasting.
    public func broadcast<F: BinaryFunction>(_ f: F.Type, _ other: Tensor, op: String) -> Tensor {
        guard let outShape = broadcastShape(shape, other.shape) else {
            fatalError("\(op): shapes \(shape) and \(other.shape) cannot be broadcast together")
        }
        var out = Tensor(uninitializedShape: outShape)
        out.withUnsafeMutablePointer { o in
            broadcastBinaryKernel(f, out: o, outShape: outShape, a: pointer, aShape: shape, b: other.pointer, bShape: other.shape)
        }
        return out
    }

    /// Sums a broadcast gradient back down to `target` (the inverse of broadcasting).
    public func sumToShape(_ target: [Int]) -> Tensor {
        if shape == target { return self }
        let lead = rank - target.count
        check(lead >= 0, "sumToShape: \(shape) cannot reduce to \(target)")
        var axes: [Int] = Array(0..<lead)
        for (i, d) in target.enumerated() where d == 1 && shape[lead + i] != 1 { axes.append(lead + i) }
        return sum(axes: axes, keepDims: false).reshaped(target)
    }

    /// Sum over `axes` (all when empty).
    public func sum(axes: [Int] = [], keepDims: Bool = false) -> Tensor {
        let normalized = Set((axes.isEmpty ? Array(0..<rank) : axes).map { axis($0, op: "sum") }).sorted(by: >)
        var result = self
        for a in normalized {
            let (outer, n, inner) = result.splitAround(axis: a)
            var newShape = result.shape
            newShape[a] = 1
            var out = Tensor(uninitializedShape: newShape)
            out.withUnsafeMutablePointer { o in sumAxisKernel(out: o, x: result.pointer, outer: outer, n: n, inner: inner) }
            result = out
        }
        if !keepDims { result = result.reshaped(shape.enumerated().filter { !normalized.contains($0.offset) }.map(\.element)) }
        return result
    }

    /// Maximum over one axis, with the index of the first maximum.
    public func max(axis a: Int, keepDims: Bool = false) -> (values: Tensor, indices: IntTensor) {
        let ax = axis(a, op: "max")
        check(shape[ax] > 0, "max: axis \(a) of shape \(shape) is empty")
        let (outer, n, inner) = splitAround(axis: ax)
        var keptShape = shape
        keptShape[ax] = 1
        var out = Tensor(uninitializedShape: keptShape)
        var idx = [Int32](repeating: 0, count: outer * inner)
        out.withUnsafeMutablePointer { o in
            idx.withUnsafeMutableBufferPointer { ip in maxAxisKernel(out: o, argmax: ip.baseAddress!, x: pointer, outer: outer, n: n, inner: inner) }
        }
        var finalShape = keptShape
        if !keepDims { finalShape.remove(at: ax) }
        return (out.reshaped(finalShape), IntTensor(shape: finalShape, scalars: idx))
    }

    /// Axes permuted: result.shape[i] = shape[permutation[i]]. Materialised.
    public func transposed(_ permutation: [Int]) -> Tensor {
        check(permutation.count == rank && Set(permutation) == Set(0..<rank),
                     "transpose: \(permutation) is not a permutation of the axes of shape \(shape)")
        if permutation == Array(0..<rank) { return self }
        let outShape = permutation.map { shape[$0] }
        var inStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
        let strides = permutation.map { inStrides[$0] }
        var out = Tensor(uninitializedShape: outShape)
        let inner = outShape.last ?? 1, innerStride = strides.last ?? 1
        let rows = inner == 0 ? 0 : count / inner
        let src = pointer
        out.withUnsafeMutablePointer { o in
            parallelFor(rows, grain: rowGrain(inner)) { r in
                for row in r {
                    var rem = row, off = 0
                    for axis in stride(from: rank - 2, through: 0, by: -1) {
                        off += (rem % outShape[axis]) * strides[axis]
                        rem /= outShape[axis]
                    }
                    let dst = o + row * inner
                    if innerStride == 1 { dst.update(from: src + off, count: inner) } else {
                        for j in 0..<inner { dst[j] = src[off + j * innerStride] }
                    }
                }
            }
        }
        return out
    }

    /// Swaps two axes.
    public func transposed(_ a: Int, _ b: Int) -> Tensor {
        var p = Array(0..<rank)
        p.swapAt(axis(a, op: "transpose"), axis(b, op: "transpose"))
        return transposed(p)
    }

    /// Elements `range` along `axis`.
    public func slice(axis a: Int, _ range: Range<Int>) -> Tensor {
        let ax = axis(a, op: "slice")
        check(range.lowerBound >= 0 && range.upperBound <= shape[ax],
                     "slice: range \(range) is out of bounds for axis \(a) of shape \(shape)")
        let (outer, n, inner) = splitAround(axis: ax)
        var outShape = shape
        outShape[ax] = range.count
        var out = Tensor(uninitializedShape: outShape)
        let w = range.count * inner
        let src = pointer
        out.withUnsafeMutablePointer { o in
            for i in 0..<outer { (o + i * w).update(from: src + i * n * inner + range.lowerBound * inner, count: w) }
        }
        return out
    }

    /// Concatenation along `axis`; all other extents must agree.
    public static func concatenate(_ tensors: [Tensor], axis a: Int) -> Tensor {
        check(!tensors.isEmpty, "concatenate: no tensors")
        let first = tensors[0]
        let ax = first.axis(a, op: "concatenate")
        for t in tensors {
            check(t.rank == first.rank && (0..<first.rank).allSatisfy { $0 == ax || t.shape[$0] == first.shape[$0] },
                         "concatenate: shapes \(tensors.map(\.shape)) differ outside axis \(a)")
        }
        var outShape = first.shape
        outShape[ax] = tensors.reduce(0) { $0 + $1.shape[ax] }
        let (outer, total, inner) = (first.shape[..<ax].reduce(1, *), outShape[ax], first.shape[(ax + 1)...].reduce(1, *))
        var out = Tensor(uninitializedShape: outShape)
        out.withUnsafeMutablePointer { o in
            var offset = 0
            for t in tensors {
                let w = t.shape[ax] * inner
                for i in 0..<outer { (o + i * total * inner + offset).update(from: t.pointer + i * w, count: w) }
                offset += w
            }
        }
        return out
    }

    /// Pads `before`/`after` elements of `value` along `axis`.
    public func padded(axis a: Int, before: Int, after: Int, value: Float = 0) -> Tensor {
        let ax = axis(a, op: "pad")
        check(before >= 0 && after >= 0, "pad: negative padding (\(before), \(after))")
        let (outer, n, inner) = splitAround(axis: ax)
        var outShape = shape
        outShape[ax] = n + before + after
        var out = Tensor(repeating: value, shape: outShape)
        let src = pointer
        out.withUnsafeMutablePointer { o in
            for i in 0..<outer { (o + (i * outShape[ax] + before) * inner).update(from: src + i * n * inner, count: n * inner) }
        }
        return out
    }

    /// Index select: result[..., j, ...] = self[..., indices[j], ...] along `axis`;
    /// result shape = shape[..<axis] + indices.shape + shape[(axis+1)...].
    public func gathered(axis a: Int, indices: IntTensor) -> Tensor {
        let ax = axis(a, op: "gather")
        let (outer, n, inner) = splitAround(axis: ax)
        indices.checkRange(n, what: "gather along axis \(a) of shape \(shape)")
        let outShape = Array(shape[..<ax]) + indices.shape + Array(shape[(ax + 1)...])
        var out = Tensor(uninitializedShape: outShape)
        let k = indices.count, src = pointer
        indices.scalars.withUnsafeBufferPointer { ip in
            out.withUnsafeMutablePointer { o in
                parallelFor(outer * k, grain: rowGrain(inner)) { r in
                    for row in r {
                        let i = row / k, j = row % k
                        (o + row * inner).update(from: src + (i * n + Int(ip[j])) * inner, count: inner)
                    }
                }
            }
        }
        return out
    }

    /// Scatter-add, the adjoint of `gathered`: result (shape `targetShape`) accumulates rows of self.
    /// Serial over the index list so that repeated indices add in a fixed order.
    public func scatterAdded(axis ax: Int, indices: IntTensor, targetShape: [Int], skipping skipIndex: Int32? = nil) -> Tensor {
        let outer = targetShape[..<ax].reduce(1, *), n = targetShape[ax], inner = targetShape[(ax + 1)...].reduce(1, *)
        var out = Tensor(zeros: targetShape)
        let k = indices.count, src = pointer
        indices.scalars.withUnsafeBufferPointer { ip in
            out.withUnsafeMutablePointer { o in
                parallelFor(outer, grain: 1) { r in
                    for i in r {
                        for j in 0..<k where ip[j] != skipIndex {
                            axpySerial(y: o + (i * n + Int(ip[j])) * inner, x: src + (i * k + j) * inner, count: inner)
                        }
                    }
                }
            }
        }
        return out
    }
}

/// y += x, single-threaded SIMD.
func axpySerial(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, count: Int) {
    var j = 0
    while j + 8 <= count { y.store8(y.load8(j) + x.load8(j), j); j += 8 }
    while j < count { y[j] += x[j]; j += 1 }
}

// MARK: - Matrix multiplication

extension Tensor {
    /// Matrix product with optional transposes (passed to BLAS as flags).
    /// 2-D: [M,K]·[K,N]. Batched: [B,M,K]·[B,K,N] (leading axes must agree), or [..., M, K]·[K, N]
    /// with a shared right-hand matrix.
    public static func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        check(a.rank >= 2 && b.rank >= 2, "matmul: operands need rank ≥ 2, got \(a.shape) and \(b.shape)")
        let (ar, ac) = (a.shape[a.rank - 2], a.shape[a.rank - 1])
        let (br, bc) = (b.shape[b.rank - 2], b.shape[b.rank - 1])
        let (m, k) = transposeA ? (ac, ar) : (ar, ac)
        let (kb, n) = transposeB ? (bc, br) : (br, bc)
        check(k == kb, "matmul: inner dimensions differ: \(a.shape)\(transposeA ? "ᵀ" : "") · \(b.shape)\(transposeB ? "ᵀ" : "")")
        let batchA = Array(a.shape.dropLast(2)), batchB = Array(b.shape.dropLast(2))
        if b.rank == 2 && !transposeA {
            // Shared right-hand side: one GEMM over all leading rows.
            var out = Tensor(uninitializedShape: batchA + [m, n])
            let rows = batchA.reduce(1, *) * m
            out.withUnsafeMutablePointer { c in
                BLAS.gemm(transposeB: transposeB, m: rows, n: n, k: k, a: a.pointer, b: b.pointer, c: c)
            }
            return out
        }
        check(batchA == batchB || batchB.isEmpty,
                     "matmul: batch dimensions differ: \(a.shape) · \(b.shape)")
        let batch = batchA.reduce(1, *)
        var out = Tensor(uninitializedShape: batchA + [m, n])
        out.withUnsafeMutablePointer { c in
            BLAS.batchedGemm(batch: batch, transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                             a: a.pointer, strideA: m * k, b: b.pointer, strideB: batchB.isEmpty ? 0 : k * n, c: c)
        }
        return out
    }
}
