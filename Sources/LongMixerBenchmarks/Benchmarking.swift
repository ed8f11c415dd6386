import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

// Reusable benchmark machinery: a monotonic clock, a best-of-N timer that interleaves the cases it
// compares, a STREAM-like DRAM bandwidth probe, machine information, table printing and JSON output.
// Used by `longmixer bench core`; model benchmarks reuse the same pieces.
//
// Benchmarks run on shared machines whose load changes within a run, so cases that are compared with
// each other (our GEMM path against raw sgemm) run interleaved, round by round, so that a burst of
// load hits all of them alike; ratios are taken per round.

// MARK: - Clock and timer

public enum BenchmarkClock {
    /// Nanoseconds on CLOCK_MONOTONIC.
    @inline(__always)
    public static func nanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Seconds on CLOCK_MONOTONIC.
    @inline(__always)
    public static func seconds() -> Double { Double(nanoseconds()) * 1e-9 }
}

/// Timing of one benchmark case: seconds per call.
public struct TimingStatistics: Codable, Sendable {
    /// Fastest sample (the figure of record on a noisy machine).
    public var best: Double
    public var median: Double
    /// Number of samples and calls per sample.
    public var samples: Int
    public var callsPerSample: Int
    /// Every sample in round order (seconds per call), for statistics paired by round; nil where not kept.
    public var roundSamples: [Double]?
}

/// A named piece of work to time; `body` runs one call.
public struct BenchmarkCase {
    public var name: String
    public var body: () -> Void
    /// Wait after each of this case's samples, untimed: for a case that leaves threads busy after it
    /// returns (OpenBLAS's own workers spin for about 0.1 s), so the next case starts with the cores to itself.
    public var settleSeconds: Double
    public init(_ name: String, settleSeconds: Double = 0, _ body: @escaping () -> Void) {
        self.name = name
        self.settleSeconds = settleSeconds
        self.body = body
    }
}

extension BenchmarkCase {
    /// Waits `settleSeconds` spinning on every thread: sleeping instead let the (virtual) cores idle, and the
    /// next case then paid their wake-up and clock ramp.
    func settle() {
        guard settleSeconds > 0 else { return }
        let end = BenchmarkClock.nanoseconds() + UInt64(settleSeconds * 1e9)
        parallelFor(Parallel.threadCount) { _ in while BenchmarkClock.nanoseconds() < end {} }
    }
}

public enum BenchmarkTimer {
    /// Times each case `repeats` times and returns statistics in the order given.
    ///
    /// Each case first runs `warmUp` calls (page faults, BLAS buffers, caches). A case's number of calls
    /// per sample is chosen once so that a sample lasts at least `minimumSampleSeconds`; a sample's time
    /// is its mean per call. Rounds are interleaved: round r times case 0, case 1, … in turn, each sample
    /// followed by its case's untimed `settleSeconds` wait.
    public static func measure(_ cases: [BenchmarkCase], repeats: Int, warmUp: Int = 1,
                               minimumSampleSeconds: Double = 0.01) -> [TimingStatistics] {
        check(repeats >= 1, "repeats must be ≥ 1, got \(repeats)")
        var calls = [Int](repeating: 1, count: cases.count)
        for (i, c) in cases.enumerated() {
            var once = Double.infinity
            for _ in 0..<max(warmUp, 1) {
                let t0 = BenchmarkClock.nanoseconds()
                c.body()
                once = min(once, Double(BenchmarkClock.nanoseconds() - t0) * 1e-9)
                c.settle()
            }
            calls[i] = max(1, min(1000, Int((minimumSampleSeconds / max(once, 1e-9)).rounded(.up))))
        }
        var samples = [[Double]](repeating: [], count: cases.count)
        for _ in 0..<repeats {
            for (i, c) in cases.enumerated() {
                let n = calls[i]
                let t0 = BenchmarkClock.nanoseconds()
                for _ in 0..<n { c.body() }
                samples[i].append(Double(BenchmarkClock.nanoseconds() - t0) * 1e-9 / Double(n))
                c.settle()
            }
        }
        return zip(samples, calls).map { s, n in
            let sorted = s.sorted()
            return TimingStatistics(best: sorted[0], median: sorted[sorted.count / 2], samples: sorted.count, callsPerSample: n,
                                    roundSamples: s)
        }
    }

    /// Times one case.
    public static func measure(_ name: String, repeats: Int, warmUp: Int = 1, minimumSampleSeconds: Double = 0.01,
                               _ body: @escaping () -> Void) -> TimingStatistics {
        measure([BenchmarkCase(name, body)], repeats: repeats, warmUp: warmUp, minimumSampleSeconds: minimumSampleSeconds)[0]
    }
}

// MARK: - DRAM bandwidth (STREAM-like)

/// Float buffers placed like large tensors (`LargeBufferPool`): 2 MiB-aligned, transparent huge pages
/// requested. The STREAM arrays and the benchmarks' preallocated outputs use them, so that references
/// and kernels see the same kind of memory as the tensors of real ops (`malloc` gave 16-byte-aligned
/// 4 KiB pages: every 64-byte store split over two cache lines).
public enum BenchmarkBuffer {

    public static func allocate(floats: Int) -> UnsafeMutablePointer<Float> {
        LargeBufferPool.mapHugePageAligned(bytes: floats * 4, purpose: "a benchmark buffer").bindMemory(to: Float.self, capacity: floats)
    }

    public static func deallocate(_ p: UnsafeMutablePointer<Float>, floats: Int) {
        munmap(UnsafeMutableRawPointer(p), floats * 4)
    }
}

/// STREAM-style copy and triad over arrays much larger than the last-level cache, on the current
/// `Parallel.threadCount` (rows split with `parallelFor`, static contiguous chunks, SIMD8 loops on
/// unsafe pointers), with ordinary stores and with streaming stores. Bytes are counted as STREAM does:
/// copy 2·4·n, triad 3·4·n (no write-allocate; an ordinary store also reads its line first).
public final class MemoryBandwidthProbe {
    public let count: Int
    let a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, c: UnsafeMutablePointer<Float>

    /// `count` floats per array; the default (16M floats = 64 MiB each) is 8× the 8 MiB L3.
    public init(count: Int = 1 << 24) {
        check(count >= 8, "bandwidth probe needs at least 8 floats per array, got \(count)")
        self.count = count
        a = BenchmarkBuffer.allocate(floats: count); b = BenchmarkBuffer.allocate(floats: count)
        c = BenchmarkBuffer.allocate(floats: count)
        let (a, b, c) = (self.a, self.b, self.c)
        // Distinct values on every page: pages of one constant can be merged by the host (KSM) and
        // then read from cache (one early run, with constant arrays, showed a copy at 2× DRAM speed).
        parallelFor(count, grain: 1 << 15) { r in
            for i in r {
                let h = UInt32(truncatingIfNeeded: i &* 2_654_435_761) >> 8
                a[i] = Float(h & 0xFFFF) * 1e-4; b[i] = Float(h >> 8) * 1e-4; c[i] = Float(h & 0xFFF) * 1e-3
            }
        }
    }

    deinit {
        for p in [a, b, c] { BenchmarkBuffer.deallocate(p, floats: count) }
    }

    /// c = a.
    public func copy() {
        let (a, c) = (UnsafePointer(self.a), self.c)
        parallelFor(count, grain: 1 << 15) { r in
            var i = r.lowerBound
            while i + 32 <= r.upperBound {
                c.store8(a.load8(i), i); c.store8(a.load8(i + 8), i + 8)
                c.store8(a.load8(i + 16), i + 16); c.store8(a.load8(i + 24), i + 24)
                i += 32
            }
            while i < r.upperBound { c[i] = a[i]; i += 1 }
        }
    }

    /// c = a with glibc's `memcpy` per thread chunk (for large sizes it may use non-temporal stores,
    /// which skip the read-for-ownership that ordinary stores pay: information, not a kernel's pattern).
    public func memcpyCopy() {
        let (a, c) = (UnsafeRawPointer(self.a), UnsafeMutableRawPointer(self.c))
        parallelFor(count, grain: 1 << 15) { r in
            _ = memcpy(c + r.lowerBound * 4, a + r.lowerBound * 4, r.count * 4)
        }
    }

    /// a = b + s·c.
    public func triad(scale s: Float = 3) {
        let (a, b, c) = (self.a, UnsafePointer(self.b), UnsafePointer(self.c))
        let s8 = Float8(repeating: s)
        parallelFor(count, grain: 1 << 15) { r in
            var i = r.lowerBound
            while i + 16 <= r.upperBound {
                a.store8(b.load8(i) + s8 * c.load8(i), i)
                a.store8(b.load8(i + 8) + s8 * c.load8(i + 8), i + 8)
                i += 16
            }
            while i < r.upperBound { a[i] = b[i] + s * c[i]; i += 1 }
        }
    }

    /// c = a with streaming (non-temporal) stores: c's lines are written without being read first.
    /// Kernels with outputs beyond the last-level cache store this way, so the DRAM reference includes it.
    public func copyStreaming() {
        let (a, c) = (UnsafePointer(self.a), self.c)
        parallelFor(count, grain: 1 << 15) { r in
            var i = r.lowerBound
            let head = min(r.count, StreamingStores.floatsToAlignment32(c + i))
            for _ in 0..<head { c[i] = a[i]; i += 1 }
            while i + 32 <= r.upperBound {
                StreamingStores.store8(a.load8(i), c + i); StreamingStores.store8(a.load8(i + 8), c + i + 8)
                StreamingStores.store8(a.load8(i + 16), c + i + 16); StreamingStores.store8(a.load8(i + 24), c + i + 24)
                i += 32
            }
            while i < r.upperBound { c[i] = a[i]; i += 1 }
            StreamingStores.fence()
        }
    }

    /// a = b + s·c with streaming stores.
    public func triadStreaming(scale s: Float = 3) {
        let (a, b, c) = (self.a, UnsafePointer(self.b), UnsafePointer(self.c))
        let s8 = Float8(repeating: s)
        parallelFor(count, grain: 1 << 15) { r in
            var i = r.lowerBound
            let head = min(r.count, StreamingStores.floatsToAlignment32(a + i))
            for _ in 0..<head { a[i] = b[i] + s * c[i]; i += 1 }
            while i + 16 <= r.upperBound {
                StreamingStores.store8(b.load8(i) + s8 * c.load8(i), a + i)
                StreamingStores.store8(b.load8(i + 8) + s8 * c.load8(i + 8), a + i + 8)
                i += 16
            }
            while i < r.upperBound { a[i] = b[i] + s * c[i]; i += 1 }
            StreamingStores.fence()
        }
    }

    public var copyBytes: Double { Double(2 * 4 * count) }
    public var triadBytes: Double { Double(3 * 4 * count) }
}

// MARK: - Machine information

public struct MachineInfo: Codable, Sendable {
    public var cpuModel: String
    public var logicalCores: Int
    public var blasCore: String
    public var blasConfig: String
    public var date: String
    public var os: String
    /// /proc/loadavg's 1-minute load at the start: on a shared machine, other work shows up here.
    public var loadAverage: Double?
    /// The kernels' instruction set, the GEMM behind `BLAS.gemm` and OpenBLAS's kernel set (`Roofline.instructionSetPath`).
    public var instructionSet: String?

    public static func current() -> MachineInfo {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return MachineInfo(cpuModel: cpuModelName(), logicalCores: ProcessInfo.processInfo.activeProcessorCount,
                           blasCore: BLAS.coreName, blasConfig: BLAS.configuration,
                           date: formatter.string(from: Date()),
                           os: ProcessInfo.processInfo.operatingSystemVersionString,
                           loadAverage: (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))
                               .flatMap { $0.split(separator: " ").first }.flatMap { Double($0) },
                           instructionSet: Roofline.instructionSetPath)
    }

    /// "model name" (plus family/model) from /proc/cpuinfo; "unknown" elsewhere.
    static func cpuModelName() -> String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 && fields[parts[0]] == nil { fields[parts[0]] = parts[1] }
            if line.trimmingCharacters(in: .whitespaces).isEmpty && !fields.isEmpty { break }
        }
        var name = fields["model name"] ?? "unknown"
        if let family = fields["cpu family"], let model = fields["model"] { name += " (family \(family), model \(model))" }
        if let flags = fields["flags"] {
            let set = Set(flags.split(separator: " "))
            let features = ["avx2", "fma", "avx512f"].filter { set.contains(Substring($0)) }
            if !features.isEmpty { name += " [\(features.joined(separator: ", "))]" }
        }
        return name
    }

    public var summary: String {
        "\(cpuModel), \(logicalCores) logical cores; OpenBLAS core \(blasCore)"
            // A kernel set forced through the environment.
            + (ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"].map { " (forced by OPENBLAS_CORETYPE=\($0))" } ?? "")
            + " (\(blasConfig)); \(date)"
            + (loadAverage.map { "; load average \($0)" } ?? "")
    }
}

// MARK: - Results, tables and JSON

/// One measured line of a benchmark report.
public struct BenchmarkRecord: Codable, Sendable {
    public var group: String          // e.g. "gemm", "memory"
    public var name: String           // e.g. "4096x128 · 128x128"
    public var variant: String        // e.g. "linear (ours)", "cblas_sgemm"
    public var threads: Int
    public var timing: TimingStatistics
    /// Work per call in `workUnit` (FLOP or bytes), and the resulting best rate.
    public var work: Double
    public var rate: Double
    public var rateUnit: String       // "GFLOP/s" or "GB/s"
    /// Rate relative to a reference measured in the same run (percent), with its name and the target.
    public var percentOfReference: Double?
    public var reference: String?
    public var targetPercent: Double?
    /// The same ratio paired by round: median and quartiles over rounds of (this rate ÷ the reference's rate
    /// in the same round). On a shared machine, load that hits one round hits both sides of its ratio.
    public var pairedPercentOfReference: Quartiles?

    public init(group: String, name: String, variant: String, threads: Int, timing: TimingStatistics,
                work: Double, rateUnit: String, percentOfReference: Double? = nil, reference: String? = nil,
                targetPercent: Double? = nil) {
        self.group = group; self.name = name; self.variant = variant; self.threads = threads
        self.timing = timing; self.work = work
        self.rate = work / timing.best * 1e-9
        self.rateUnit = rateUnit
        self.percentOfReference = percentOfReference; self.reference = reference; self.targetPercent = targetPercent
    }

    public var meetsTarget: Bool? {
        guard let p = percentOfReference, let t = targetPercent else { return nil }
        return p >= t
    }
}

/// Median and quartiles of a sample.
public struct Quartiles: Codable, Sendable {
    public var lower: Double
    public var median: Double
    public var upper: Double

    /// Nil for an empty sample. Quartiles by the nearest-rank rule (as the medians elsewhere in the benchmarks).
    public init?(_ values: [Double]) {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted(), n = sorted.count
        lower = sorted[(n - 1) / 4]; median = sorted[n / 2]; upper = sorted[min(n - 1, (3 * n) / 4)]
    }
}

public struct BenchmarkReport: Codable, Sendable {
    public var command: String
    public var machine: MachineInfo
    public var repeats: Int
    public var records: [BenchmarkRecord]

    public init(command: String, machine: MachineInfo, repeats: Int, records: [BenchmarkRecord]) {
        self.command = command; self.machine = machine; self.repeats = repeats; self.records = records
    }

    public func writeJSON(to path: String) throws { try writeBenchmarkJSON(self, to: path) }
}

/// Writes `value` as pretty, key-sorted JSON (stable diffs of committed results), creating the folder.
public func writeBenchmarkJSON<T: Encodable>(_ value: T, to path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let url = URL(fileURLWithPath: path)
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try encoder.encode(value).write(to: url)
}

/// A plain-text table with right-aligned numeric columns; `markdown` gives a GitHub table.
public struct TextTable {
    public var headers: [String]
    public var rows: [[String]] = []
    /// Columns whose cells are left-aligned (the rest are right-aligned).
    public var leftAligned: Set<Int>

    public init(headers: [String], leftAligned: Set<Int> = [0]) {
        self.headers = headers
        self.leftAligned = leftAligned
    }

    public mutating func append(_ row: [String]) {
        check(row.count == headers.count, "table row has \(row.count) cells, expected \(headers.count)")
        rows.append(row)
    }

    public func render(markdown: Bool = false) -> String {
        var widths = headers.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func pad(_ s: String, _ i: Int) -> String {
            let fill = String(repeating: " ", count: widths[i] - s.count)
            return leftAligned.contains(i) ? s + fill : fill + s
        }
        func line(_ cells: [String]) -> String {
            let padded = cells.enumerated().map { pad($0.element, $0.offset) }
            return markdown ? "| " + padded.joined(separator: " | ") + " |" : padded.joined(separator: "  ")
        }
        var out = [line(headers)]
        if markdown {
            out.append("|" + widths.enumerated().map { i, w in
                leftAligned.contains(i) ? " " + String(repeating: "-", count: w) + " " : " " + String(repeating: "-", count: w - 1) + ": "
            }.joined(separator: "|") + "|")
        } else {
            out.append(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
        }
        out += rows.map(line)
        return out.joined(separator: "\n")
    }
}

/// Formats a number with a fixed number of decimals.
public func formatNumber(_ x: Double, decimals: Int = 1) -> String { String(format: "%.\(decimals)f", x) }

/// Formats seconds as milliseconds.
public func formatMilliseconds(_ seconds: Double) -> String { String(format: "%.3f", seconds * 1e3) }
