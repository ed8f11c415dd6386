/// SIMD8 transcendental functions used by the hot kernels. Each has a scalar twin used for tails
/// and by the reference kernels; tests compare both against libm in double precision.
///
/// Avoid `clamped`/`pointwiseMin`/`pointwiseMax` here: they are not inlined (perf-probe §2.4);
/// `replacing(with:where:)` is.
public typealias Float8 = SIMD8<Float>

public enum VectorMath {
    // Cephes expf: x = n·ln2 + r, |r| ≤ ln2/2, exp(r) by a degree-6 polynomial; max rel. error ≈ 2 ulp.
    @usableFromInline static let log2e: Float = 1.442_695_04
    @usableFromInline static let ln2High: Float = 0.693_359_375
    @usableFromInline static let ln2Low: Float = -2.121_944_4e-4

    @inlinable @inline(__always)
    public static func exp(_ x: Float8) -> Float8 {
        var xc = x.replacing(with: 88.72, where: x .> 88.72)
        xc = xc.replacing(with: -87.33, where: xc .< -87.33)
        // round(x·log2e) with the 1.5·2²³ trick; its low mantissa bits are the integer.
        let shifter = Float8(repeating: 12_582_912.0)
        let nShifted = xc * log2e + shifter
        let n = nShifted - shifter
        let r = xc - n * ln2High - n * ln2Low
        var p = Float8(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_950_7e-3
        p = p * r + 8.333_451_907_3e-3
        p = p * r + 4.166_579_589_4e-2
        p = p * r + 1.666_666_545_9e-1
        p = p * r + 5.000_000_120_1e-1
        p = p * (r * r) + r + 1
        let nInt = unsafeBitCast(nShifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        let scale = unsafeBitCast((nInt &+ 127) &<< 23, to: Float8.self)
        var result = p * scale
        result = result.replacing(with: 0, where: x .< -87.33)
        result = result.replacing(with: .infinity, where: x .> 88.72)
        return result.replacing(with: x, where: x .!= x)   // NaN in, NaN out
    }

    @inlinable @inline(__always)
    public static func exp(_ x: Float) -> Float { exp(Float8(repeating: x))[0] }

    /// ½·erfc(z) for z ≥ 0, from the Chebyshev fit of Numerical Recipes' `erfcc`
    /// (fractional error < 1.2e-7 in exact arithmetic): relative accuracy is kept in the tail,
    /// so GELU and its derivative stay accurate for large negative inputs.
    @inlinable @inline(__always)
    public static func halfErfc(nonNegative z: Float8) -> Float8 {
        let t = 1 / (1 + 0.5 * z)
        var p = Float8(repeating: 0.170_872_77)
        p = p * t - 0.822_152_23
        p = p * t + 1.488_515_87
        p = p * t - 1.135_203_98
        p = p * t + 0.278_868_07
        p = p * t - 0.186_288_06
        p = p * t + 0.096_784_18
        p = p * t + 0.374_091_96
        p = p * t + 1.000_023_68
        p = p * t - 1.265_512_23
        return 0.5 * t * exp(p - z * z)
    }

    /// Φ(x), the standard normal CDF, = ½·erfc(−x/√2).
    @inlinable @inline(__always)
    public static func normalCDF(_ x: Float8) -> Float8 {
        let z = x * -0.707_106_77
        let absZ = z.replacing(with: -z, where: z .< 0)
        let tail = halfErfc(nonNegative: absZ)
        return tail.replacing(with: 1 - tail, where: x .> 0)
    }

    /// φ(x) = exp(−x²/2)/√(2π).
    @inlinable @inline(__always)
    public static func normalPDF(_ x: Float8) -> Float8 { 0.398_942_28 * exp(-0.5 * x * x) }

    /// Exact (erf-form) GELU, x·Φ(x), as `torch.nn.GELU()`.
    @inlinable @inline(__always)
    public static func gelu(_ x: Float8) -> Float8 { x * normalCDF(x) }

    /// d GELU / dx = Φ(x) + x·φ(x).
    @inlinable @inline(__always)
    public static func geluDerivative(_ x: Float8) -> Float8 { normalCDF(x) + x * normalPDF(x) }

    @inlinable @inline(__always)
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
