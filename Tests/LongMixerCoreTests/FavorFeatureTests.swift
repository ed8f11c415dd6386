import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerCore

/// The fused FAVOR+ feature op against its Double reference, against the composed tensor ops it replaces,
/// and by finite differences.
@Suite("FAVOR+ feature op")
struct FavorFeatureTests {
    /// The composed form (what `FavorAttention.featureMap` computed before the fused op).
    func composed(_ x: Variable, _ omega: Tensor, isQuery: Bool, stabilizer: Float) -> Variable {
        let b = x.shape[0], h = x.shape[1], n = x.shape[2], f = x.shape[3], m = omega.shape[0]
        let scaled = x * Float(pow(Double(f), -0.25))
        let projected = matmul(scaled, Variable(omega), transposeB: true)
        let halfSquaredNorm = sum(scaled * scaled, axes: [3], keepDims: true) * 0.5
        let groups = isQuery ? b * h * n : b * h, groupSize = isQuery ? m : n * m
        var maxima = Tensor(uninitializedShape: isQuery ? [b, h, n, 1] : [b, h, 1, 1])
        maxima.withUnsafeMutablePointer { out in
            let p = projected.value.pointer
            for g in 0..<groups {
                var best = -Float.infinity
                for i in 0..<groupSize { best = max(best, p[g * groupSize + i]) }
                out[g] = best
            }
        }
        let features = exp(projected - halfSquaredNorm - Variable(maxima)) + stabilizer
        return features * Float(1 / Double(m).squareRoot())
    }

    /// Max |a − b| / max(1e-3, max |b|).
    func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
        var worst: Float = 0, scale: Float = 1e-3
        for i in 0..<b.count { scale = max(scale, abs(b[flat: i])) }
        for i in 0..<a.count { worst = max(worst, abs(a[flat: i] - b[flat: i])) }
        return worst / scale
    }

    /// (B, H, N, F, m): vector tails in F and m, and the benchmark's F = m = 64.
    static let shapes = [(1, 2, 3, 5, 7), (2, 2, 9, 16, 24), (1, 3, 40, 64, 64)]

    @Test("kernels equal the Double reference (queries and keys, 1 and 2 threads)", arguments: shapes)
    func kernelsMatchReference(_ shape: (Int, Int, Int, Int, Int)) {
        let (b, h, n, f, m) = shape
        var g = RandomGenerator(seed: UInt64(n * 7 + f))
        let x = Tensor.normal([b, h, n, f], generator: &g), omega = Tensor.normal([m, f], generator: &g)
        let gradOut = Tensor.normal([b, h, n, m], generator: &g)
        let rows = b * h * n, c = Float(pow(Double(f), -0.25)), s = Float(1 / Double(m).squareRoot())
        for isQuery in [true, false] {
            let group = isQuery ? 1 : n
            var reference = Tensor(zeros: [rows, m]), dxReference = Tensor(zeros: [rows, f])
            reference.withUnsafeMutablePointer { out in
                favorFeaturesForwardReference(out: out, x: x.pointer, omega: omega.pointer, rows: rows, features: f, randomFeatures: m,
                                              rowsPerGroup: group, inputScale: c, outputScale: s, stabilizer: 1e-6)
            }
            dxReference.withUnsafeMutablePointer { dx in
                favorFeaturesBackwardReference(dx: dx, gradOut: gradOut.pointer, x: x.pointer, omega: omega.pointer, rows: rows,
                                               features: f, randomFeatures: m, rowsPerGroup: group, inputScale: c, outputScale: s)
            }
            withEachThreadCount { t in
                var phi = Tensor(zeros: [rows, m]), scaled = Tensor(zeros: [rows, f])
                var dx = Tensor(zeros: [rows, f]), dP = Tensor(zeros: [rows, m])
                phi.withUnsafeMutablePointer { out in
                    scaled.withUnsafeMutablePointer { sc in
                        favorFeaturesForward(out: out, scaled: sc, x: x.pointer, omega: omega.pointer, rows: rows, features: f,
                                             randomFeatures: m, rowsPerGroup: group, inputScale: c, outputScale: s, stabilizer: 1e-6)
                    }
                }
                dx.withUnsafeMutablePointer { dxp in
                    dP.withUnsafeMutablePointer { dpp in
                        favorFeaturesBackward(dx: dxp, dP: dpp, gradOut: gradOut.pointer, phi: phi.pointer, x: x.pointer,
                                              omega: omega.pointer, rows: rows, features: f, randomFeatures: m,
                                              inputScale: c, outputScale: s, stabilizer: 1e-6)
                    }
                }
                let context = "\(shape) query \(isQuery), \(t) threads"
                #expect(relativeError(phi, reference) < 2e-5, "forward \(context)")
                #expect(relativeError(dx, dxReference) < 1e-4, "backward \(context)")
            }
        }
    }

    @Test("the op equals the composed ops: forward bit for bit, backward to rounding", arguments: shapes)
    func opMatchesComposed(_ shape: (Int, Int, Int, Int, Int)) throws {
        try withSteadyThreadCount { try opMatchesComposedSteady(shape) }
    }

    func opMatchesComposedSteady(_ shape: (Int, Int, Int, Int, Int)) throws {
        let (b, h, n, f, m) = shape
        var g = RandomGenerator(seed: UInt64(n * 13 + m))
        let omega = Tensor.normal([m, f], generator: &g)
        let projection = Tensor.normal([b, h, n, m], generator: &g)
        for isQuery in [true, false] {
            let x = Variable(.normal([b, h, n, f], generator: &g), requiresGradient: true)
            let fused = favorFeatures(x, projection: omega, isQuery: isQuery, stabilizer: 1e-6)
            try sum(fused * Variable(projection)).backward()
            let fusedGradient = try #require(x.grad)
            x.zeroGradient()
            let reference = composed(x, omega, isQuery: isQuery, stabilizer: 1e-6)
            try sum(reference * Variable(projection)).backward()
            let referenceGradient = try #require(x.grad)
            #expect((0..<reference.value.count).allSatisfy { fused.value[flat: $0] == reference.value[flat: $0] },
                    "forward \(shape) query \(isQuery)")
            #expect(relativeError(fusedGradient, referenceGradient) < 1e-5, "backward \(shape) query \(isQuery)")
        }
    }

    /// M is detached, so the features alone do not have the gradient finite differences see; in normalised
    /// linear attention M cancels between numerator and denominator (up to the 10⁻⁶ stabiliser), which is
    /// how FAVOR+ uses them.
    @Test("finite differences through normalised linear attention")
    func gradientCheck() {
        var g = RandomGenerator(seed: 77)
        let omega = Tensor.normal([6, 4], generator: &g)
        let q = randomVariable([1, 2, 5, 4], seed: 78), k = randomVariable([1, 2, 5, 4], seed: 79)
        let v = randomVariable([1, 2, 5, 3], seed: 80)
        expectGradients([q, k, v]) { x in
            linearAttention(queries: favorFeatures(x[0], projection: omega, isQuery: true, stabilizer: 1e-6),
                            keys: favorFeatures(x[1], projection: omega, isQuery: false, stabilizer: 1e-6),
                            values: x[2], normalized: true)
        }
    }
}
