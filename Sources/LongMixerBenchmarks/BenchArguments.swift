import Foundation
import LongMixerCore

/// The option values every `longmixer bench` subcommand shares, parsed into one-line usage errors
/// (`UserError`, exit 2). The CLI declares the options; parsing lives here so that it is tested once.
public enum BenchArguments {
    /// Comma-separated sequence lengths, each ≥ `minimum`, no repeats (`--lengths 1024,4096`).
    public static func lengths(_ text: String, option: String = "--lengths", minimum: Int = 2) throws -> [Int] {
        let values = try integers(text, option: option, minimum: minimum, what: "sequence lengths")
        guard Set(values).count == values.count else {
            throw UserError(what: option, value: text, why: "repeats a length", remedy: "give each length once")
        }
        return values
    }

    /// Comma-separated thread counts, each valid for this machine (`--threads 1,2`); nil or empty: all cores.
    /// `single`: the benchmark runs at one thread count and refuses a list.
    public static func threads(_ text: String?, single: Bool, cores: Int = ProcessInfo.processInfo.activeProcessorCount) throws -> [Int] {
        guard let text, !text.trimmingCharacters(in: .whitespaces).isEmpty else { return [max(1, cores)] }
        let values = try integers(text, option: "--threads", minimum: 1, what: "thread counts")
        if single && values.count > 1 {
            throw UserError(what: "--threads", value: text, why: "this benchmark runs at one thread count",
                            remedy: "give one number, and run the command once per count")
        }
        return try values.map { try RuntimeOptions.validatedThreadCount($0, what: "--threads", cores: cores) }
    }

    /// `value` if it is at least `minimum`, else a usage error naming `option`.
    @discardableResult
    public static func atLeast(_ minimum: Int, _ value: Int, _ option: String) throws -> Int {
        guard value >= minimum else {
            throw UserError(what: option, value: String(value), why: "must be at least \(minimum)")
        }
        return value
    }

    /// Comma-separated names, each one of `valid` (case-insensitive), in the order given.
    public static func names(_ text: String, option: String, valid: [String]) throws -> [String] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard !parts.isEmpty, !parts.contains("") else {
            throw UserError(what: option, value: text, why: "must be comma-separated names", remedy: "choose from \(valid.joined(separator: ", "))")
        }
        for p in parts where !valid.contains(p) {
            throw UserError(what: option, value: p, why: "unknown name", remedy: "choose from \(valid.joined(separator: ", "))")
        }
        guard Set(parts).count == parts.count else {
            throw UserError(what: option, value: text, why: "repeats a name", remedy: "give each name once")
        }
        return parts
    }

    static func integers(_ text: String, option: String, minimum: Int, what: String) throws -> [Int] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        var values: [Int] = []
        for p in parts {
            guard let v = Int(p), v >= minimum else {
                throw UserError(what: option, value: text, why: "must be comma-separated \(what), each an integer ≥ \(minimum)",
                                remedy: "e.g. \(option) \(minimum),\(minimum * 4)")
            }
            values.append(v)
        }
        return values
    }
}
