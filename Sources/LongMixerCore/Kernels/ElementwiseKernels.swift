import Foundation
import LongMixerWideKernels

/// Elementwise kernels, multi-threaded over contiguous chunks with SIMD8 inner loops.
/// `grain` keeps small tensors on one thread (a dispatch costs a few microseconds).
public let elementwiseGrain = 1 << 15

// MARK: - Unary maps

/// A pointwise function with a vector and a scalar form (the scalar handles tails).
public protocol UnaryFunction {
    static func apply(_ x: Float8) -> Float8
    static func apply(_ x: Float) -> Float
    /// A 16-lane (AVX-512) kernel for a range of elements, taking (out, x, range, streaming), when
    /// this function has one and the CPU can run it (`CPUFeatures.avx512`); nil otherwise (default).
    static var wideKernel: WideUnaryKernel? { get }
}

public typealias WideUnaryKernel = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Range<Int>, Bool) -> Void

extension UnaryFunction {
    public static var wideKernel: WideUnaryKernel? { nil }
}

/// out[i] = F(x[i]).   out, x: [count] (out may alias x)
///
/// `@inlinable` so that callers in other modules get a loop specialised for F (otherwise they run
/// the unspecialised generic with a witness-table call per vector). Four vectors per iteration give
/// the out-of-order core independent polynomial chains. F's 16-lane kernel runs instead where it has
/// one (GELU on AVX-512 CPUs). Outputs larger than the last-level cache are written with streaming
/// stores (`StreamingStores`).
@inlinable
public func mapKernel<F: UnaryFunction>(_ f: F.Type, out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, count: Int) {
    mapKernel(f, out: out, x: x, count: count, streaming: StreamingStores.shouldStream(bytes: count * 4),
              wide: F.wideKernel)
}

/// `mapKernel` with the store kind and the 16-lane kernel chosen by the caller (tests run every path).
@inlinable
public func mapKernel<F: UnaryFunction>(_ f: F.Type, out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, count: Int,
                                        streaming: Bool, wide: WideUnaryKernel?) {
    if let wide {
        parallelFor(count, grain: elementwiseGrain) { range in wide(out, x, range, streaming) }
        return
    }
    parallelFor(count, grain: elementwiseGrain) { range in
        var i = range.lowerBound
        let end = range.upperBound
        if streaming {
            // Ordinary stores up to the first 32-byte boundary of `out`, then streaming stores.
            let head = min(end - i, StreamingStores.floatsToAlignment32(out + i))
            for _ in 0..<head { out[i] = F.apply(x[i]); i += 1 }
            while i + 32 <= end {
                // 8 KiB ahead: the hardware prefetcher stops at 4 KiB page boundaries (a prefetch never faults).
                StreamingStores.prefetch(x + i + 2048); StreamingStores.prefetch(x + i + 2064)
                let v0 = x.load8(i), v1 = x.load8(i + 8), v2 = x.load8(i + 16), v3 = x.load8(i + 24)
                let y0 = F.apply(v0), y1 = F.apply(v1), y2 = F.apply(v2), y3 = F.apply(v3)
                StreamingStores.store8(y0, out + i); StreamingStores.store8(y1, out + i + 8)
                StreamingStores.store8(y2, out + i + 16); StreamingStores.store8(y3, out + i + 24)
                i += 32
            }
            while i + 8 <= end { StreamingStores.store8(F.apply(x.load8(i)), out + i); i += 8 }
            while i < end { out[i] = F.apply(x[i]); i += 1 }
            StreamingStores.fence()
            return
        }
        while i + 32 <= end {
            let v0 = x.load8(i), v1 = x.load8(i + 8), v2 = x.load8(i + 16), v3 = x.load8(i + 24)
            let y0 = F.apply(v0), y1 = F.apply(v1), y2 = F.apply(v2), y3 = F.apply(v3)
            out.store8(y0, i); out.store8(y1, i + 8); out.store8(y2, i + 16); out.store8(y3, i + 24)
            i += 32
        }
        while i + 8 <= end {
            out.store8(F.apply(x.load8(i)), i)
            i += 8
        }
        while i < end { out[i] = F.apply(x[i]); i += 1 }
    }
}

/// Plain reference for `mapKernel`: one scalar at a time, single-threaded, through F's scalar form.
func mapReference<F: UnaryFunction>(_ f: F.Type, out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { out[i] = F.apply(x[i]) }
}

/// A pointwise derivative: grad_in = G(x, y, grad_out), y = forward output.
public protocol UnaryDerivative {
    static func apply(x: Float8, y: Float8, gradient: Float8) -> Float8
    static func apply(x: Float, y: Float, gradient: Float) -> Float
    /// A 16-lane (AVX-512) kernel taking (gradIn, x, gradOut, range) that *overwrites* gradIn[range] with
    /// G(x, _, gradOut), when this derivative has one and the CPU can run it; nil otherwise (default).
    static var wideBackwardKernel: WideUnaryBackwardKernel? { get }
}

public typealias WideUnaryBackwardKernel = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Range<Int>) -> Void

extension UnaryDerivative {
    public static var wideBackwardKernel: WideUnaryBackwardKernel? { nil }
}

/// gradIn[i] = G(x[i], _, gradOut[i]) through a 16-lane kernel (see `UnaryDerivative.wideBackwardKernel`).
public func mapBackwardKernel(wide: WideUnaryBackwardKernel, gradIn: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                              gradOut: UnsafePointer<Float>, count: Int) {
    parallelFor(count, grain: elementwiseGrain) { range in wide(gradIn, x, gradOut, range) }
}

/// gradIn[i] = G(x[i], y[i], gradOut[i]), overwriting gradIn (no zero fill needed).   all: [count]

public func mapBackwardKernel<G: UnaryDerivative>(_ g: G.Type, gradIn: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                                                   y: UnsafePointer<Float>, gradOut: UnsafePointer<Float>, count: Int) {
    parallelFor(count, grain: elementwiseGrain) { range in
        var i = range.lowerBound
        while i + 8 <= range.upperBound {
            gradIn.store8(G.apply(x: x.load8(i), y: y.load8(i), gradient: gradOut.load8(i)), i)
            i += 8
        }
        while i < range.upperBound { gradIn[i] = G.apply(x: x[i], y: y[i], gradient: gradOut[i]); i += 1 }
    }
}

/// Plain reference for `mapBackwardKernel`: gradIn[i] = G(x[i], y[i], gradOut[i]), scalar, single-threaded.
func mapBackwardReference<G: UnaryDerivative>(_ g: G.Type, gradIn: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                                                     y: UnsafePointer<Float>, gradOut: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { gradIn[i] = G.apply(x: x[i], y: y[i], gradient: gradOut[i]) }
}

public enum GELUFunction: UnaryFunction, UnaryDerivative {
    // @_transparent: with @inline(__always) only the first of mapKernel's call sites was inlined.
    @_transparent
    public static func apply(_ x: Float8) -> Float8 { VectorMath.gelu(x) }
    @inlinable
    public static func apply(_ x: Float) -> Float { VectorMath.gelu(Float8(repeating: x))[0] }
    // @_transparent: not inlined, every vector paid a call that split it into halves and loaded the constants again.
    @_transparent
    public static func apply(x: Float8, y: Float8, gradient: Float8) -> Float8 { gradient * VectorMath.geluDerivative(x) }
    public static func apply(x: Float, y: Float, gradient: Float) -> Float {
        gradient * VectorMath.geluDerivative(Float8(repeating: x))[0]
    }
    /// `WideKernels.gelu` (bitwise the same results) on AVX-512 CPUs: GELU is bound by instruction
    /// throughput on 8 lanes.
    public static var wideKernel: WideUnaryKernel? {
        CPUFeatures.avx512 ? { WideKernels.gelu(out: $0, x: $1, range: $2, streaming: $3) } : nil
    }
    /// `WideKernels.geluBackward` on AVX-512 CPUs: the derivative (an exp and a division per vector) took
    /// 4× the forward's time on 8 lanes.
    public static var wideBackwardKernel: WideUnaryBackwardKernel? {
        CPUFeatures.avx512 ? { WideKernels.geluBackward(gradIn: $0, x: $1, gradOut: $2, range: $3) } : nil
    }
}

public enum ExpFunction: UnaryFunction, UnaryDerivative {
    public static func apply(_ x: Float8) -> Float8 { VectorMath.exp(x) }
    public static func apply(_ x: Float) -> Float { VectorMath.exp(x) }
    public static func apply(x: Float8, y: Float8, gradient: Float8) -> Float8 { gradient * y }
    public static func apply(x: Float, y: Float, gradient: Float) -> Float { gradient * y }
}

public enum SigmoidFunction: UnaryFunction, UnaryDerivative {
    public static func apply(_ x: Float8) -> Float8 { VectorMath.sigmoid(x) }
    public static func apply(_ x: Float) -> Float { VectorMath.sigmoid(Float8(repeating: x))[0] }
    public static func apply(x: Float8, y: Float8, gradient: Float8) -> Float8 { gradient * y * (1 - y) }
    public static func apply(x: Float, y: Float, gradient: Float) -> Float { gradient * y * (1 - y) }
}

public enum ReLUFunction: UnaryFunction, UnaryDerivative {
    public static func apply(_ x: Float8) -> Float8 { x.replacing(with: 0, where: x .< 0) }
    public static func apply(_ x: Float) -> Float { x < 0 ? 0 : x }
    // Subgradient 0 at x = 0, as PyTorch.
    public static func apply(x: Float8, y: Float8, gradient: Float8) -> Float8 { gradient.replacing(with: 0, where: x .<= 0) }
    public static func apply(x: Float, y: Float, gradient: Float) -> Float { x > 0 ? gradient : 0 }
}

public enum TanhFunction: UnaryFunction, UnaryDerivative {
    // libm's tanhf keeps full relative accuracy near 0, where 1 − 2/(e^{2x}+1) cancels.
    public static func apply(_ x: Float8) -> Float8 { var r = x; for i in 0..<8 { r[i] = Foundation.tanh(x[i]) }; return r }
    public static func apply(_ x: Float) -> Float { Foundation.tanh(x) }
    public static func apply(x: Float8, y: Float8, gradient: Float8) -> Float8 { gradient * (1 - y * y) }
    public static func apply(x: Float, y: Float, gradient: Float) -> Float { gradient * (1 - y * y) }
}

public enum LogFunction: UnaryFunction, UnaryDerivative {
    public static func apply(_ x: Float8) -> Float8 { var r = x; for i in 0..<8 { r[i] = Foundation.log(x[i]) }; return r }
    public static func apply(_ x: Float) -> Float { Foundation.log(x) }
    public static func apply(x: Float8, y: Float8, gradient: Float8) -> Float8 { gradient / x }
    public static func apply(x: Float, y: Float, gradient: Float) -> Float { gradient / x }
}

public enum SqrtFunction: UnaryFunction, UnaryDerivative {
    public static func apply(_ x: Float8) -> Float8 { x.squareRoot() }
    public static func apply(_ x: Float) -> Float { x.squareRoot() }
    public static func apply(x: Float8, y: Float8, gradient: Float8) -> Float8 { gradient * 0.5 / y }
    public static func apply(x: Float, y: Float, gradient: Float) -> Float { gradient * 0.5 / y }
}

public enum NegateFunction: UnaryFunction, UnaryDerivative {
    public static func apply(_ x: Float8) -> Float8 { -x }
    public static func apply(_ x: Float) -> Float { -x }
    public static func apply(x: Float8, y: Float8, gradient: Float8) -> Float8 { -gradient }
    public static func apply(x: Float, y: Float, gradient: Float) -> Float { -gradient }
}

public enum SoftplusFunction: UnaryFunction, UnaryDerivative {
    // log(1 + e^x) = max(x, 0) + log1p(e^{−|x|}): no overflow for large x, no loss for small.
    public static func apply(_ x: Float8) -> Float8 { var r = x; for i in 0..<8 { r[i] = apply(x[i]) }; return r }
    public static func apply(_ x: Float) -> Float { max(x, 0) + Foundation.log1p(Foundation.exp(-abs(x))) }
    public static func apply(x: Float8, y: Float8, gradient: Float8) -> Float8 { gradient * VectorMath.sigmoid(x) }
    public static func apply(x: Float, y: Float, gradient: Float) -> Float { gradient * VectorMath.sigmoid(Float8(repeating: x))[0] }
}

/// out[i] = x[i]^p and its derivative p·x^(p−1), for a scalar exponent.
/// out, x: [count]
public func powKernel(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, exponent p: Float, count: Int) {
    parallelFor(count, grain: elementwiseGrain) { range in
        if p == 2 { for i in range { out[i] = x[i] * x[i] } } else { for i in range { out[i] = Foundation.pow(x[i], p) } }
    }
}

/// gradIn[i] += gradOut[i] · p · x[i]^(p−1).   all: [count]
public func powBackwardKernel(gradIn: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, gradOut: UnsafePointer<Float>,
                              exponent p: Float, count: Int) {
    parallelFor(count, grain: elementwiseGrain) { range in
        if p == 2 { for i in range { gradIn[i] += gradOut[i] * 2 * x[i] } } else {
            for i in range { gradIn[i] += gradOut[i] * p * Foundation.pow(x[i], p - 1) }
        }
    }
}

// MARK: - Binary maps with broadcasting

public protocol BinaryFunction {
    static func apply(_ a: Float8, _ b: Float8) -> Float8
    static func apply(_ a: Float, _ b: Float) -> Float
}
public enum AddFunction: BinaryFunction {
    public static func apply(_ a: Float8, _ b: Float8) -> Float8 { a + b }
    public static func apply(_ a: Float, _ b: Float) -> Float { a + b }
}
public enum SubtractFunction: BinaryFunction {
    public static func apply(_ a: Float8, _ b: Float8) -> Float8 { a - b }
    public static func apply(_ a: Float, _ b: Float) -> Float { a - b }
}
public enum MultiplyFunction: BinaryFunction {
    public static func apply(_ a: Float8, _ b: Float8) -> Float8 { a * b }
    public static func apply(_ a: Float, _ b: Float) -> Float { a * b }
}
public enum DivideFunction: BinaryFunction {
    public static func apply(_ a: Float8, _ b: Float8) -> Float8 { a / b }
    public static func apply(_ a: Float, _ b: Float) -> Float { a / b }
}

/// NumPy broadcasting of two shapes; nil when incompatible.
public func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
    let rank = max(a.count, b.count)
    var out = [Int](repeating: 1, count: rank)
    for i in 0..<rank {
        let da = i < rank - a.count ? 1 : a[i - (rank - a.count)]
        let db = i < rank - b.count ? 1 : b[i - (rank - b.count)]
        if da == db || db == 1 { out[i] = da } else if da == 1 { out[i] = db } else { return nil }
    }
    return out
}

/// Element strides of `shape` seen through the broadcast `outShape` (0 on broadcast axes).
func broadcastStrides(_ shape: [Int], to outShape: [Int]) -> [Int] {
    let rank = outShape.count
    var strides = [Int](repeating: 0, count: rank)
    var step = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        let o = i + rank - shape.count
        strides[o] = shape[i] == 1 ? 0 : step
        step *= shape[i]
    }
    return strides
}

/// out = F(a, b) with NumPy broadcasting.   out: [outShape]; a: [aShape]; b: [bShape]
/// Fast paths: equal shapes, a scalar operand, and "b repeats along leading axes" (a bias row).

public func broadcastBinaryKernel<F: BinaryFunction>(_ f: F.Type, out: UnsafeMutablePointer<Float>, outShape: [Int],
                                                     a: UnsafePointer<Float>, aShape: [Int],
                                                     b: UnsafePointer<Float>, bShape: [Int]) {
    let count = elementCount(outShape)
    let aCount = elementCount(aShape), bCount = elementCount(bShape)
    if aCount == count && bCount == count {
        parallelFor(count, grain: elementwiseGrain) { r in
            var i = r.lowerBound
            while i + 8 <= r.upperBound { out.store8(F.apply(a.load8(i), b.load8(i)), i); i += 8 }
            while i < r.upperBound { out[i] = F.apply(a[i], b[i]); i += 1 }
        }
        return
    }
    if bCount == 1 || aCount == 1 {
        let bScalar = bCount == 1
        let s = bScalar ? b[0] : a[0]
        let s8 = Float8(repeating: s)
        let v = bScalar ? a : b
        parallelFor(count, grain: elementwiseGrain) { r in
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                out.store8(bScalar ? F.apply(v.load8(i), s8) : F.apply(s8, v.load8(i)), i); i += 8
            }
            while i < r.upperBound { out[i] = bScalar ? F.apply(v[i], s) : F.apply(s, v[i]); i += 1 }
        }
        return
    }
    // b's shape is a suffix of out's (after dropping its leading 1s) and a is full-size: row broadcast.
    let bTrimmed = Array(bShape.drop(while: { $0 == 1 }))
    if aCount == count && !bTrimmed.isEmpty && Array(outShape.suffix(bTrimmed.count)) == bTrimmed {
        let rows = count / bCount
        parallelFor(rows, grain: max(1, elementwiseGrain / max(bCount, 1))) { r in
            for row in r {
                let o = out + row * bCount, x = a + row * bCount
                var j = 0
                while j + 8 <= bCount { o.store8(F.apply(x.load8(j), b.load8(j)), j); j += 8 }
                while j < bCount { o[j] = F.apply(x[j], b[j]); j += 1 }
            }
        }
        return
    }
    // General case: walk rows of the last axis, operands stepping with their broadcast strides.
    let rank = outShape.count
    let sa = broadcastStrides(aShape, to: outShape), sb = broadcastStrides(bShape, to: outShape)
    let inner = rank == 0 ? 1 : outShape[rank - 1]
    let rows = inner == 0 ? 0 : count / inner
    let ia = rank == 0 ? 0 : sa[rank - 1], ib = rank == 0 ? 0 : sb[rank - 1]
    parallelFor(rows, grain: max(1, elementwiseGrain / max(inner, 1))) { r in
        for row in r {
            var rem = row, offA = 0, offB = 0
            if rank >= 2 {
                for axis in stride(from: rank - 2, through: 0, by: -1) {
                    let c = rem % outShape[axis]
                    rem /= outShape[axis]
                    offA += c * sa[axis]; offB += c * sb[axis]
                }
            }
            let o = out + row * inner
            for j in 0..<inner { o[j] = F.apply(a[offA + j * ia], b[offB + j * ib]) }
        }
    }
}

/// Reference (plain, single-threaded) broadcast kernel, for tests.
func broadcastBinaryReference(_ op: (Float, Float) -> Float, outShape: [Int], a: [Float], aShape: [Int],
                                     b: [Float], bShape: [Int]) -> [Float] {
    let sa = broadcastStrides(aShape, to: outShape), sb = broadcastStrides(bShape, to: outShape)
    let count = elementCount(outShape)
    var out = [Float](repeating: 0, count: count)
    for flat in 0..<count {
        var rem = flat, offA = 0, offB = 0
        for axis in stride(from: outShape.count - 1, through: 0, by: -1) {
            let c = rem % outShape[axis]
            rem /= outShape[axis]
            offA += c * sa[axis]; offB += c * sb[axis]
        }
        out[flat] = op(a[offA], b[offB])
    }
    return out
}

// MARK: - Fills and accumulation

/// y[i] += alpha · x[i].   x, y: [count]
public func axpyKernel(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, alpha: Float = 1, count: Int) {
    let a8 = Float8(repeating: alpha)
    parallelFor(count, grain: elementwiseGrain) { r in
        var i = r.lowerBound
        while i + 8 <= r.upperBound { y.store8(y.load8(i) + a8 * x.load8(i), i); i += 8 }
        while i < r.upperBound { y[i] += alpha * x[i]; i += 1 }
    }
}

/// out[i] = y[i] + alpha·x[i], the bits of `axpyKernel(y:x:alpha:count:)`.   out, y, x: [count]
public func axpyKernel(out: UnsafeMutablePointer<Float>, y: UnsafePointer<Float>, x: UnsafePointer<Float>, alpha: Float = 1, count: Int) {
    let a8 = Float8(repeating: alpha)
    parallelFor(count, grain: elementwiseGrain) { r in
        var i = r.lowerBound
        while i + 8 <= r.upperBound { out.store8(y.load8(i) + a8 * x.load8(i), i); i += 8 }
        while i < r.upperBound { out[i] = y[i] + alpha * x[i]; i += 1 }
    }
}

/// x[i] *= alpha.   x: [count]
public func scaleKernel(_ x: UnsafeMutablePointer<Float>, alpha: Float, count: Int) {
    parallelFor(count, grain: elementwiseGrain) { r in
        for i in r { x[i] *= alpha }
    }
}
