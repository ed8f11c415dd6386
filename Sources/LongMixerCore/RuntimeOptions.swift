import Foundation

/// Every `LONGMIXER_*` environment variable the library reads, parsed once, each with a documented range.
///
/// | variable                 | values                          | default                          |
/// |--------------------------|---------------------------------|----------------------------------|
/// | `LONGMIXER_THREADS`      | integer 1 … 4 × cores           | all cores                        |
/// | `LONGMIXER_GEMM`         | `auto`, `openblas`, `packed`    | `auto`                           |
/// | `LONGMIXER_NO_AVX512`    | `0`, `1`                        | `0`                              |
/// | `LONGMIXER_NO_STREAMING` | `0`, `1`                        | `0`                              |
/// | `LONGMIXER_POOL_MB`      | integer 0 … physical memory MiB | ¼ of RAM, 2–16 GiB               |
/// | `LONGMIXER_TORCH_PYTHON` | a path (benchmarks)             | `python3`                        |
/// | `LONGMIXER_FUSED_FACTOR` | `0`, `1`                        | fused Paramixer inference on AVX2 only |
///
/// Build- and test-only names (`LONGMIXER_PORTABLE`, `LONGMIXER_MPI`, `LONGMIXER_MPI_WORKER`,
/// `LONGMIXER_SLOW_TESTS`, `LONGMIXER_WRITE_FIXTURES`) are known but not interpreted here. An empty
/// value means unset. Any other `LONGMIXER_*` name is an error too: a misspelt variable would
/// otherwise be ignored without a word.
///
/// The library cannot throw from the static initialisers that consult these values, so a bad value
/// falls back to the default there and is kept in `environmentErrors`; the CLI calls
/// `checkEnvironment()` before doing anything, so a user always sees the error (exit 2).
public struct RuntimeOptions: Sendable, Equatable {
    public enum Gemm: String, Sendable, CaseIterable { case auto, openblas, packed }

    /// nil: all cores.
    public var threads: Int?
    public var gemm: Gemm = .auto
    public var noAVX512 = false
    public var noStreaming = false
    /// nil: the pool's own default.
    public var poolMegabytes: Int?
    public var torchPython: String?
    /// nil: the fused Paramixer inference kernel where it was measured faster (AVX2); true/false forces it.
    public var fusedFactor: Bool?

    public init() {}

    /// Variables read by the library (interpreted) and names that are only read by the build or the tests.
    public static let interpretedNames = ["LONGMIXER_THREADS", "LONGMIXER_GEMM", "LONGMIXER_NO_AVX512", "LONGMIXER_NO_STREAMING",
                                          "LONGMIXER_POOL_MB", "LONGMIXER_TORCH_PYTHON", "LONGMIXER_FUSED_FACTOR"]
    public static let buildAndTestNames = ["LONGMIXER_PORTABLE", "LONGMIXER_MPI", "LONGMIXER_MPI_WORKER", "LONGMIXER_SLOW_TESTS",
                                             "LONGMIXER_WRITE_FIXTURES"]

    /// Threads above this many per core only add switching and memory (each thread has its own partial
    /// buffers); a larger request is almost certainly a typo, and a huge one used to stall `parallelFor`.
    public static let threadsPerCoreLimit = 4

    /// The largest accepted thread count on a machine with `cores` cores.
    public static func maximumThreads(cores: Int = ProcessInfo.processInfo.activeProcessorCount) -> Int {
        threadsPerCoreLimit * max(1, cores)
    }

    /// `n` if it is a valid thread count for this machine, else a usage error naming `what` (`--threads`).
    public static func validatedThreadCount(_ n: Int, what: String, cores: Int = ProcessInfo.processInfo.activeProcessorCount) throws -> Int {
        let limit = maximumThreads(cores: cores)
        guard n >= 1 && n <= limit else {
            throw UserError(what: what, value: String(n),
                            why: "must be between 1 and \(limit) (\(threadsPerCoreLimit) × the \(max(1, cores)) cores)",
                            remedy: "leave it unset to use every core")
        }
        return n
    }

    /// Parses `environment`; every variable is checked independently, so one bad value does not hide another.
    /// Returns the options with bad values left at their defaults, and one error per bad variable.
    public static func parse(_ environment: [String: String], cores: Int = ProcessInfo.processInfo.activeProcessorCount,
                             physicalMemoryBytes: UInt64 = ProcessInfo.processInfo.physicalMemory) -> (options: RuntimeOptions, errors: [UserError]) {
        var o = RuntimeOptions()
        var errors: [UserError] = []
        func value(_ name: String) -> String? {
            guard let v = environment[name]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
            return v
        }
        func flag(_ name: String) -> Bool {
            guard let v = value(name) else { return false }
            switch v {
            case "0": return false
            case "1": return true
            default:
                errors.append(UserError(what: name, value: v, why: "must be 0 or 1", remedy: "unset it for the default (0)"))
                return false
            }
        }
        if let v = value("LONGMIXER_THREADS") {
            if let n = Int(v) {
                do { o.threads = try validatedThreadCount(n, what: "LONGMIXER_THREADS", cores: cores) } catch let e as UserError { errors.append(e) } catch {}
            } else {
                errors.append(UserError(what: "LONGMIXER_THREADS", value: v, why: "must be an integer between 1 and \(maximumThreads(cores: cores))",
                                        remedy: "unset it to use every core"))
            }
        }
        if let v = value("LONGMIXER_GEMM") {
            if let g = Gemm(rawValue: v.lowercased()) { o.gemm = g } else {
                errors.append(UserError(what: "LONGMIXER_GEMM", value: v, why: "must be auto, openblas or packed", remedy: "unset it for auto"))
            }
        }
        o.noAVX512 = flag("LONGMIXER_NO_AVX512")
        o.noStreaming = flag("LONGMIXER_NO_STREAMING")
        if value("LONGMIXER_FUSED_FACTOR") != nil { o.fusedFactor = flag("LONGMIXER_FUSED_FACTOR") }
        if let v = value("LONGMIXER_POOL_MB") {
            let limit = Int(min(physicalMemoryBytes >> 20, UInt64(Int.max >> 21)))
            if let mb = Int(v), mb >= 0, mb <= limit { o.poolMegabytes = mb } else {
                errors.append(UserError(what: "LONGMIXER_POOL_MB", value: v, why: "must be an integer between 0 (no pool) and \(limit) (the physical memory in MiB)",
                                        remedy: "unset it for the default (a quarter of RAM, 2–16 GiB)"))
            }
        }
        // Any path: whether it runs is the benchmark's to report (it names the interpreter it tried).
        o.torchPython = value("LONGMIXER_TORCH_PYTHON")
        let known = Set(interpretedNames + buildAndTestNames)
        for name in environment.keys.sorted() where name.hasPrefix("LONGMIXER_") && !known.contains(name) {
            errors.append(UserError(what: name, value: environment[name], why: "is not a LongMixer variable",
                                    remedy: "known variables: \(interpretedNames.joined(separator: ", ")); unset it"))
        }
        return (o, errors)
    }

    private static let parsedEnvironment = parse(ProcessInfo.processInfo.environment)

    /// The process's options (bad values replaced by their defaults; see `environmentErrors`).
    public static var environment: RuntimeOptions { parsedEnvironment.options }

    /// One error per bad `LONGMIXER_*` variable of this process.
    public static var environmentErrors: [UserError] { parsedEnvironment.errors }

    /// Throws the first bad `LONGMIXER_*` variable (the CLI calls this at start).
    public static func checkEnvironment() throws {
        if let first = environmentErrors.first { throw first }
    }
}
