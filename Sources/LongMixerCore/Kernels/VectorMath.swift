import Foundation

/// SIMD8 transcendental functions used by the hot kernels. Each has a scalar twin used for tails
/// and by the reference kernels; tests compare both against libm in double precision.
///
/// Avoid `clamped`/`pointwiseMin`/`pointwiseMax` here: they are not inlined;
/// `replacing(with:where:)` is.
public typealias Float8 = SIMD8<Float>

public enum VectorMath {
    /// a·b + c. One fused multiply-add (`vfmadd`) in the default build (`-target-cpu haswell`), where
    /// it halves the instructions and the latency of every polynomial step. With
    /// LONGMIXER_PORTABLE=1 the package defines LONGMIXER_NO_FMA and this is a multiply and an add:
    /// `addingProduct` without FMA in the target would be an `fmaf` library call.
    @_transparent
    public static func multiplyAdd(_ a: Float8, _ b: Float8, _ c: Float8) -> Float8 {
        #if LONGMIXER_NO_FMA
        return a * b + c
        #else
        return c.addingProduct(a, b)
        #endif
    }

    /// a·b + c with a scalar c (polynomial coefficients).
    @_transparent
    public static func multiplyAdd(_ a: Float8, _ b: Float8, _ c: Float) -> Float8 {
        multiplyAdd(a, b, Float8(repeating: c))
    }

    // exp: x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite: ln2 split in two so r is exact to float
    // precision for every n), exp(r) by a degree-5 polynomial, 2^n by building the exponent bits.
    // The polynomial is a relative-error minimax fit of e^r on [−ln2/2, ln2/2] (Remez in double,
    // fitted error 7.5e-8; coefficients rounded to float). Measured over [−87, 88]: relative error
    // ≤ 2.0e-7 (≈ 1.7 ulp); Cephes' degree-6 form is ≈ 1 ulp but costs two more FMAs per vector,
    // and exp bounds softmax, log-softmax and cross-entropy.
    @usableFromInline static let log2e: Float = 1.442_695_04
    @usableFromInline static let ln2High: Float = 0.693_359_375
    @usableFromInline static let ln2Low: Float = -2.121_944_4e-4

    @_transparent
    public static func exp(_ x: Float8) -> Float8 {
        let overflow = x .> 88.72
        let result = expNonPositive(x.replacing(with: 88.72, where: overflow))
            .replacing(with: .infinity, where: overflow)
        return result.replacing(with: x, where: x .!= x)   // NaN in, NaN out
    }

    @inlinable @inline(__always)
    public static func exp(_ x: Float) -> Float { exp(Float8(repeating: x))[0] }

    /// `exp` without overflow handling, for arguments known to be ≤ 88.72 or NaN (softmax's x − max
    /// and GELU's tail are ≤ 0): the same polynomial and results as `exp` there, without its overflow
    /// clamp and +∞/NaN blends (NaN still propagates through the arithmetic). `exp` wraps it.
    @_transparent
    public static func expNonPositive(_ x: Float8) -> Float8 {
        let underflow = x .< -87.33
        let xc = x.replacing(with: -87.33, where: underflow)
        let shifter = Float8(repeating: 12_582_912.0)
        let nShifted = multiplyAdd(xc, Float8(repeating: log2e), shifter)
        let n = nShifted - shifter
        let r = multiplyAdd(n, Float8(repeating: -ln2Low), multiplyAdd(n, Float8(repeating: -ln2High), xc))
        var p = Float8(repeating: 8.297_654_8e-3)
        p = multiplyAdd(p, r, 4.191_538_3e-2)
        p = multiplyAdd(p, r, 1.666_757_46e-1)
        p = multiplyAdd(p, r, 4.999_889_43e-1)
        p = multiplyAdd(p, r, 9.999_997_02e-1)
        p = multiplyAdd(p, r, 1.000_000_12)
        // 2^n: nShifted's bits are 0x4B40_0000 + n (the shifter is 1.5·2^23), so the exponent field is
        // (bits − 0x4B40_0000 + 127) << 23, which modulo 2^32 is (bits << 23) + 0x3F80_0000 (the bits of
        // 1.0): the same value with one integer operation fewer.
        let bits = unsafeBitCast(nShifted, to: SIMD8<Int32>.self)
        let scale = unsafeBitCast((bits &<< 23) &+ 0x3F80_0000, to: Float8.self)
        return (p * scale).replacing(with: 0, where: underflow)
    }

    /// Exact (erf-form) GELU, x·Φ(x), as `torch.nn.GELU()`, with Φ(x) = ½ + x·P(x²)/Q(x²) on
    /// |x| ≤ 5.25 and saturation beyond (GELU = x above, 0 below): no exp, 10 FMAs and one division
    /// per 8 floats (an erfc fit would cost an exp, a 10-term polynomial and a division).
    ///
    /// P (degree 6 in s = x²) / Q (degree 4) is a weighted minimax fit of (Φ(x) − ½)/x on [0, 5.25]
    /// (Loeb/Lawson iteration in double; error weight max(x, 0.3), fitted error 1.2e-8). Measured in
    /// float over every float in [−10, 10]: |GELU − x·Φ(x)| ≤ 2e-7·max(1, |x|) + 1e-7 (see the tests).
    /// Accuracy is absolute, like PyTorch's float GELU (½·x·(1 + erf(x/√2))): in the negative tail
    /// the result is not relatively accurate, and it is exactly 0 for x < −5.25 (true |GELU| < 4e-7).
    /// For |x| large, x² overflows and P/Q is NaN, but the saturation blends replace it; NaN inputs
    /// fail both comparisons and propagate.
    ///
    /// Every helper here is `@_transparent`: with `@inline(__always)` the optimiser left parts of the
    /// composed form as out-of-line calls that pass SIMD8 in xmm halves and end in `vzeroupper`
    /// (about 2× slower).
    @_transparent
    public static func gelu(_ x: Float8) -> Float8 {
        let phi = normalCDFNearZero(x, square: x * x)
        // Saturation at |x| > 5.25 (1 − Φ(5.25) = 7.6e-8); literals, not a static let, which
        // would be a lazily initialised global in the loop.
        return (x * phi).replacing(with: x, where: x .> 5.25).replacing(with: 0, where: x .< -5.25)
    }

    /// Φ(x) = ½ + x·P(x²)/Q(x²), `gelu`'s fit, unsaturated (meaningful for |x| ≤ 5.25); `square` is x·x.
    @_transparent
    public static func normalCDFNearZero(_ x: Float8, square s: Float8) -> Float8 {
        // Two independent chains (numerator and denominator) for the FMA pipes.
        var p = Float8(repeating: 1.241_390_2e-10)
        var q = Float8(repeating: 5.289_464_1e-05)
        p = multiplyAdd(p, s, -2.264_697_6e-08)
        q = multiplyAdd(q, s, 1.656_908_1e-03)
        p = multiplyAdd(p, s, 2.967_638_6e-06)
        q = multiplyAdd(q, s, 2.737_140_5e-02)
        p = multiplyAdd(p, s, 1.407_543_9e-04)
        q = multiplyAdd(q, s, 2.492_817_2e-01)
        p = multiplyAdd(p, s, 4.317_511_3e-03)
        q = multiplyAdd(q, s, 1)
        p = multiplyAdd(p, s, 3.295_901_1e-02)
        p = multiplyAdd(p, s, 3.989_422_4e-01)
        return multiplyAdd(x, p / q, 0.5)
    }

    /// Plain scalar GELU in double precision from libm's `erfc`: the reference for tests.
    public static func geluReference(_ x: Float) -> Float {
        let d = Double(x)
        return Float(d * 0.5 * Foundation.erfc(-d / 2.0.squareRoot()))
    }

    /// d GELU / dx = Φ(x) + x·φ(x): Φ from `gelu`'s rational fit (saturated to 1 and 0 beyond |x| = 5.25,
    /// an absolute error below 1e-7 there), φ(x) = exp(−x²/2)/√(2π) from one exp. One exp and one division
    /// per 8 floats; an erfc fit for Φ would add a second exp and a 10-term polynomial, and the derivative's
    /// accuracy is absolute either way (x·φ(x) carries the rounding of x²).
    @_transparent
    public static func geluDerivative(_ x: Float8) -> Float8 {
        let s = x * x
        let cdf = normalCDFNearZero(x, square: s).replacing(with: 1, where: x .> 5.25).replacing(with: 0, where: x .< -5.25)
        let e = -0.5 * s
        let pdf = 0.398_942_28 * expNonPositive(e).replacing(with: e, where: e .!= e)
        return cdf + x * pdf
    }

    @_transparent
    public static func sigmoid(_ x: Float8) -> Float8 { 1 / (1 + exp(-x)) }
}

extension UnsafePointer where Pointee == Float {
    @inlinable @inline(__always) public func load8(_ i: Int) -> Float8 {
        UnsafeRawPointer(self + i).loadUnaligned(as: Float8.self)
    }
}

extension UnsafeMutablePointer where Pointee == Float {
    @inlinable @inline(__always) public func load8(_ i: Int) -> Float8 {
        UnsafeRawPointer(self + i).loadUnaligned(as: Float8.self)
    }
    @inlinable @inline(__always) public func store8(_ v: Float8, _ i: Int) {
        UnsafeMutableRawPointer(self + i).storeBytes(of: v, as: Float8.self)
    }
}

/// Horizontal sum of a SIMD8.
@inlinable @inline(__always)
public func horizontalSum(_ v: Float8) -> Float {
    let h = v.lowHalf + v.highHalf
    let q = h.lowHalf + h.highHalf
    return q[0] + q[1]
}

@inlinable @inline(__always)
public func horizontalMax(_ v: Float8) -> Float {
    var m = v[0]
    for i in 1..<8 where v[i] > m { m = v[i] }
    return m
}
