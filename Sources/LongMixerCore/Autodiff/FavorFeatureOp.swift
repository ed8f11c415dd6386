import Foundation

/// FAVOR+ positive random features of queries or keys (`FavorAttention`), one fused op
/// (Kernels/FavorFeatureKernels.swift):
///
///   φ(x) = m^(−1/2)·(exp(Ω·x' − |x'|²/2 − M) + stabilizer),  x' = x·F^(−1/4),
///
/// M detached: the row maximum of Ω·x' for queries, the maximum over all positions and features of one
/// (batch, head) for keys. x: [B, H, N, F]; projection Ω: [m, F] (not differentiated). Result [B, H, N, m];
/// the same values as the composed tensor ops, bit for bit.
public func favorFeatures(_ x: Variable, projection: Tensor, isQuery: Bool, stabilizer: Float) -> Variable {
    check(x.rank == 4, "favorFeatures: x must be [B, H, N, F], got \(x.shape)")
    check(projection.rank == 2 && projection.shape[1] == x.shape[3],
          "favorFeatures: projection must be [m, F] with F = \(x.shape[3]), got \(projection.shape)")
    let (b, h, n, f) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let m = projection.shape[0], rows = b * h * n
    let c = Float(pow(Double(f), -0.25)), s = Float(1 / Double(m).squareRoot())
    var phi = Tensor(uninitializedShape: [b, h, n, m])
    var scaled = Tensor(uninitializedShape: [rows, f])
    phi.withUnsafeMutablePointer { out in
        scaled.withUnsafeMutablePointer { sc in
            favorFeaturesForward(out: out, scaled: sc, x: x.value.pointer, omega: projection.pointer, rows: rows, features: f,
                                 randomFeatures: m, rowsPerGroup: isQuery ? 1 : n, inputScale: c, outputScale: s,
                                 stabilizer: stabilizer)
        }
    }
    let value = phi, input = x.value
    return makeResult(phi, [x]) { g in
        var dx = Tensor(uninitializedShape: input.shape)
        var dP = Tensor(uninitializedShape: [rows, m])
        dx.withUnsafeMutablePointer { dxp in
            dP.withUnsafeMutablePointer { dpp in
                favorFeaturesBackward(dx: dxp, dP: dpp, gradOut: g.pointer, phi: value.pointer, x: input.pointer,
                                      omega: projection.pointer, rows: rows, features: f, randomFeatures: m,
                                      inputScale: c, outputScale: s, stabilizer: stabilizer)
            }
        }
        return [dx]
    }
}
