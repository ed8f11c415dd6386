import LongMixerCore
/// Meaning checks for buffers that hold indices or rates, shared by the modules' `validateLoadedState`.
public enum LoadedStateChecks {
    /// `table` [H, F] holds, per row, a permutation of 0..<F stored as exact floats.
    public static func permutationTable(_ table: Tensor?, tensor: String) throws {
        guard let table else { return }
        guard table.rank == 2 else {
            throw LoadedStateViolation(tensor: tensor, value: "shape \(table.shape)", why: "must be [heads, features]")
        }
        let rows = table.shape[0], size = table.shape[1]
        let p = table.pointer
        var seen = [Bool](repeating: false, count: size)
        for r in 0..<rows {
            for i in seen.indices { seen[i] = false }
            for c in 0..<size {
                let v = p[r * size + c]
                guard v.rounded() == v, v >= 0, v < Float(size) else {
                    throw LoadedStateViolation(tensor: tensor, value: "\(v) at [\(r), \(c)]",
                                               why: "must be an integer in 0..<\(size) (a permutation of the \(size) features)")
                }
                let j = Int(v)
                guard !seen[j] else {
                    throw LoadedStateViolation(tensor: tensor, value: "\(j) again at [\(r), \(c)]",
                                               why: "row \(r) is not a permutation of 0..<\(size) (an index appears twice)")
                }
                seen[j] = true
            }
        }
    }

    /// Every rate in `rates` lies in (0, 1] (a decay r^(i−j) with r outside it grows or flips sign).
    public static func decayRates(_ rates: Tensor?, tensor: String) throws {
        guard let rates else { return }
        let p = rates.pointer
        for i in 0..<rates.count where !(p[i] > 0 && p[i] <= 1) {
            throw LoadedStateViolation(tensor: tensor, value: "\(p[i]) at [\(i)]", why: "must be a decay rate in (0, 1]")
        }
    }
}
