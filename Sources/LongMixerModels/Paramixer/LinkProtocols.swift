import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerData

// Sparse-factor link protocols of Paramixer (Yu et al., CVPR 2022; reference code
// `wiedersehne/Paramixer`, `get_chord_indices_assym` / `get_dil_indices_assym`).
//
// Each factor W^(m) has L non-zeros per row; row i, slot k links to column (i + off_k) mod N.
// A protocol is therefore fully described by one offset list per factor. Offsets are stored
// normalised to 0..<N; duplicate columns stay separate slots and their weights are summed
// (the reference's spmm is gather + scatter_add).

/// Which sparsity pattern the factors use.
public enum LinkProtocol: String, Codable, CaseIterable, Sendable {
    /// Self-link plus forward power-of-two links {0, 1, 2, 4, …, 2^(M−1)}; the same for every factor.
    case chord
    /// Circular dilated 9-tap kernel {0, +d, +2d, +3d, +4d, −d, −2d, −3d, −4d} with d = 2^m for factor m.
    case cdil

    /// Decodes like `init(parsing:)`, so a configuration file with an unknown protocol fails with
    /// `ParamixerError.unknownProtocol` naming it.
    public init(from decoder: Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        try self.init(parsing: name)
    }

    /// Parses a protocol name ("chord", "cdil"; the reference's "dil" is accepted for CDIL).
    public init(parsing name: String) throws {
        let lowered = name.lowercased()
        if lowered == "dil" { self = .cdil; return }
        guard let p = LinkProtocol(rawValue: lowered) else {
            throw ParamixerError.unknownProtocol(name)
        }
        self = p
    }
}

/// How the number of factors M is derived from N: the LRA/genome scripts use ceil(log2 N), the
/// synthetic and long-document scripts use int(log2 N) (floor). They agree for powers of two.
public enum FactorCountRule: String, Codable, CaseIterable, Sendable {
    case ceil, floor
}

/// Errors of the Paramixer configuration, protocols and inputs, each naming the offending values.
public enum ParamixerError: Error, CustomStringConvertible, Equatable {
    case lengthTooShort(Int)
    case unknownProtocol(String)
    case factorOutOfRange(factor: Int, factorCount: Int)
    case invalidConfiguration(String)
    case invalidInput(String)

    public var description: String {
        switch self {
        case .lengthTooShort(let n):
            return "Paramixer: sequence length N = \(n) is too short; sparse factors need N ≥ 2"
        case .unknownProtocol(let name):
            return "Paramixer: unknown link protocol '\(name)'; expected one of \(LinkProtocol.allCases.map(\.rawValue).joined(separator: ", "))"
        case .factorOutOfRange(let m, let count):
            return "Paramixer: factor index \(m) is outside 0..<\(count)"
        case .invalidConfiguration(let message):
            return "Paramixer configuration: \(message)"
        case .invalidInput(let message):
            return "Paramixer input: \(message)"
        }
    }
}

public enum LinkProtocols {
    /// M, the number of sparse factors per block: ceil(log2 N) or floor(log2 N), exactly in integers.
    public static func factorCount(length n: Int, rule: FactorCountRule = .ceil) throws -> Int {
        guard n >= 2 else { throw ParamixerError.lengthTooShort(n) }
        // floor(log2 n) = index of the highest set bit.
        let floorLog = Int.bitWidth - 1 - n.leadingZeroBitCount
        switch rule {
        case .floor: return floorLog
        case .ceil: return n.nonzeroBitCount == 1 ? floorLog : floorLog + 1
        }
    }

    /// L, the number of links (non-zeros) per row: M + 1 for CHORD, 9 for CDIL.
    public static func linkCount(_ linkProtocol: LinkProtocol, length n: Int, rule: FactorCountRule = .ceil) throws -> Int {
        let m = try factorCount(length: n, rule: rule)
        switch linkProtocol {
        case .chord: return m + 1
        case .cdil: return 9
        }
    }

    /// The L column offsets of factor `factor` (0-based; factor 0 is applied first), normalised to 0..<N.
    public static func offsets(_ linkProtocol: LinkProtocol, length n: Int, factor: Int, rule: FactorCountRule = .ceil) throws -> [Int] {
        let m = try factorCount(length: n, rule: rule)
        guard factor >= 0 && factor < m else { throw ParamixerError.factorOutOfRange(factor: factor, factorCount: m) }
        switch linkProtocol {
        case .chord:
            // Slot 0 is the self-link, slot k ≥ 1 links to i + 2^(k−1); 2^(M−1) < N always.
            return [0] + (0..<m).map { (1 << $0) % n }
        case .cdil:
            let d = 1 << factor
            let forward = (1...4).map { positiveModulo($0 * d, n) }
            let backward = (1...4).map { positiveModulo(-$0 * d, n) }
            return [0] + forward + backward
        }
    }

    /// One offset list per factor, in application order: M lists of L offsets each.
    public static func offsetTable(_ linkProtocol: LinkProtocol, length n: Int, rule: FactorCountRule = .ceil) throws -> [[Int]] {
        let m = try factorCount(length: n, rule: rule)
        return try (0..<m).map { try offsets(linkProtocol, length: n, factor: $0, rule: rule) }
    }

    /// Column indices of row `row` of factor `factor`: (row + off_k) mod N for each slot k.
    public static func columns(_ linkProtocol: LinkProtocol, length n: Int, factor: Int, row: Int, rule: FactorCountRule = .ceil) throws -> [Int] {
        guard row >= 0 && row < n else { throw ParamixerError.invalidInput("row \(row) is outside 0..<\(n)") }
        return try offsets(linkProtocol, length: n, factor: factor, rule: rule).map { (row + $0) % n }
    }

    static func positiveModulo(_ a: Int, _ n: Int) -> Int {
        let r = a % n
        return r < 0 ? r + n : r
    }
}
