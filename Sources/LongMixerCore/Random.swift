import Foundation

/// Seeded pseudo-random generator (xoshiro256**, seeded through SplitMix64). Pure integer
/// arithmetic plus IEEE-754 double `log`/`cos`, so a seed gives the same stream on every run and
/// every x86-64/arm64 machine. Value type: copy it to fork a stream; `split()` for child streams.
public struct RandomGenerator: RandomNumberGenerator, Sendable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    public init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitMix(); s1 = splitMix(); s2 = splitMix(); s3 = splitMix()
    }

    /// Where the stream stands (the four state words), for a checkpoint to save and restore.
    public var state: [UInt64] {
        get { [s0, s1, s2, s3] }
        set {
            check(newValue.count == 4 && newValue != [0, 0, 0, 0], "RandomGenerator.state: four words, not all zero, got \(newValue)")
            s0 = newValue[0]; s1 = newValue[1]; s2 = newValue[2]; s3 = newValue[3]
        }
    }

    func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public mutating func next() -> UInt64 {
        let result = rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = rotl(s3, 45)
        return result
    }

    /// A new generator whose stream is independent of this one's continuation.
    public mutating func split() -> RandomGenerator { RandomGenerator(seed: next()) }

    /// Uniform in [0, 1) with 24 random bits (every float of the form k·2⁻²⁴).
    public mutating func nextUniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUniformDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// Standard normal (Box–Muller in double precision; one value per call for a simple stream).
    public mutating func nextNormal() -> Float {
        let u1 = 1.0 - nextUniformDouble()   // (0, 1]
        let u2 = nextUniformDouble()
        return Float((-2.0 * Foundation.log(u1)).squareRoot() * Foundation.cos(2.0 * Double.pi * u2))
    }

    /// Uniform integer in 0..<bound without modulo bias.
    public mutating func nextInt(below bound: Int) -> Int {
        check(bound > 0, "nextInt(below: \(bound))")
        return Int(next(upperBound: UInt64(bound)))
    }
}

extension Tensor {
    /// Uniform in [low, high).
    public static func uniform(_ shape: [Int], low: Float = 0, high: Float = 1, generator: inout RandomGenerator) -> Tensor {
        check(high >= low, "uniform: high \(high) < low \(low)")
        var t = Tensor(uninitializedShape: shape)
        let n = t.count
        t.withUnsafeMutablePointer { p in for i in 0..<n { p[i] = low + (high - low) * generator.nextUniform() } }
        return t
    }

    /// Normal with the given mean and standard deviation.
    public static func normal(_ shape: [Int], mean: Float = 0, standardDeviation: Float = 1, generator: inout RandomGenerator) -> Tensor {
        check(standardDeviation >= 0, "normal: negative standard deviation \(standardDeviation)")
        var t = Tensor(uninitializedShape: shape)
        let n = t.count
        t.withUnsafeMutablePointer { p in for i in 0..<n { p[i] = mean + standardDeviation * generator.nextNormal() } }
        return t
    }

    /// 1 with probability `probability`, else 0.
    public static func bernoulli(_ shape: [Int], probability: Float, generator: inout RandomGenerator) -> Tensor {
        check(probability >= 0 && probability <= 1, "bernoulli: probability \(probability) outside [0, 1]")
        var t = Tensor(uninitializedShape: shape)
        let n = t.count
        t.withUnsafeMutablePointer { p in for i in 0..<n { p[i] = generator.nextUniform() < probability ? 1 : 0 } }
        return t
    }
}
