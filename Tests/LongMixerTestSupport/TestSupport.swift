import Foundation
import Testing
import LongMixerCore

// What every test target shares: one closeness measure, one fixture locator, the thread-count loop,
// the AVX-512 trait and the runner of the `longmixer` executable.

/// `Tests/Fixtures/<name>` of this package, located from this source file (works from any working directory).
public func fixtureURL(_ name: String) -> URL {
    URL(fileURLWithPath: #filePath)      // <root>/Tests/LongMixerTestSupport/TestSupport.swift
        .deletingLastPathComponent()     // <root>/Tests/LongMixerTestSupport
        .deletingLastPathComponent()     // <root>/Tests
        .appendingPathComponent("Fixtures")
        .appendingPathComponent(name)
}

/// max |aᵢ − bᵢ| / max(floor, max |bᵢ|): a normwise relative error against the reference `b`
/// (floor 0: relative to the reference's scale, an all-zero reference needs an exact match; floor 1:
/// absolute for small references). Infinity if any difference is NaN, so every bound fails.
public func relativeError(_ a: Tensor, _ b: Tensor, floor: Float = 0) -> Float {
    precondition(a.count == b.count, "relativeError: \(a.shape) vs \(b.shape)")
    var diff: Float = 0, scale = floor
    let ap = a.pointer, bp = b.pointer
    for i in 0..<a.count {
        let d = abs(ap[i] - bp[i])
        if d.isNaN { return .infinity }
        diff = max(diff, d)
        scale = max(scale, abs(bp[i]))
    }
    return scale > 0 ? diff / scale : diff
}

/// Expects `actual` to have `expected`'s shape and to be within `tolerance` of it (`relativeError`).
public func expectClose(_ actual: Tensor, _ expected: Tensor, tolerance: Float = 1e-5, floor: Float = 0, _ label: String,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    guard actual.shape == expected.shape else {
        Issue.record("\(label): shape \(actual.shape) ≠ expected \(expected.shape)", sourceLocation: sourceLocation)
        return
    }
    let error = relativeError(actual, expected, floor: floor)
    #expect(error <= tolerance, "\(label): relative error \(error) > \(tolerance)", sourceLocation: sourceLocation)
}

/// Runs `body` once per thread count (LongMixer's and OpenBLAS's), restoring the previous count after.
public func withEachThreadCount(_ counts: [Int] = [1, 2], _ body: (Int) -> Void) {
    threadCountLock.lock()
    defer { threadCountLock.unlock() }
    let saved = Parallel.threadCount
    defer { Parallel.setThreadCount(saved) }
    for t in counts {
        Parallel.setThreadCount(t)
        body(t)
    }
}

/// Held while a test changes the process-wide thread count (tests run concurrently).
nonisolated(unsafe) let threadCountLock = NSRecursiveLock()

/// Runs `body` while no other test changes the thread count: for comparisons of bits between two
/// computations, which may differ when a concurrent test switches the thread count between them
/// (OpenBLAS splits sums by thread).
public func withSteadyThreadCount<T>(_ body: () throws -> T) rethrows -> T {
    threadCountLock.lock()
    defer { threadCountLock.unlock() }
    return try body()
}

/// Trait of a test whose expectations are about the 16-lane (AVX-512) kernels: it runs where they run
/// and is reported as skipped elsewhere (a CPU without AVX-512, or LONGMIXER_NO_AVX512=1).
public let requiresAVX512 = ConditionTrait.enabled(if: CPUFeatures.avx512, "needs the AVX-512 kernels (absent on this CPU, or LONGMIXER_NO_AVX512=1)")

/// What one run of the `longmixer` executable printed and returned.
public struct CLIResult {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// The `longmixer` executable built beside the test bundle, run end to end.
public enum LongMixerCLI {
    /// The executable next to the running test bundle.
    public static let executable: URL = {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
        return dir.appendingPathComponent("longmixer")
    }()

    /// Runs `longmixer arguments…` in `directory` (stopped after `timeout` seconds).
    public static func run(_ arguments: [String], in directory: URL, timeout: Double = 300) throws -> CLIResult {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = directory
        // Output goes to files (no pipe can fill up and block the child).
        let out = directory.appendingPathComponent(".stdout-\(UUID().uuidString)"), err = directory.appendingPathComponent(".stderr-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: out); try? FileManager.default.removeItem(at: err) }
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        let outData = try Data(contentsOf: out), errData = try Data(contentsOf: err)
        return CLIResult(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Runs `executable arguments…` with its stdout in a pipe of one page (so the child blocks a few
    /// lines after the reader stops reading and cannot run far ahead), reads its JSON progress events and,
    /// after each chunk, calls `act` with the child's pid and the newest step until `act` returns true.
    /// Returns the exit status and reason, the output, and when `act` returned true.
    public static func runReadingProgress(_ executable: URL, _ arguments: [String], in directory: URL? = nil,
                                          act: (_ pid: Int32, _ step: Int) -> Bool) throws
        -> (status: Int32, reason: Process.TerminationReason, output: String, actedAt: Date?) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        let out = Pipe()
        _ = fcntl(out.fileHandleForWriting.fileDescriptor, 1031 /* F_SETPIPE_SZ */, 4096)
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        var pending = Data(), seen = 0, actedAt: Date? = nil, text = ""
        while true {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...newline)
                text += line + "\n"
                if let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                   object["event"] as? String == "progress", let s = object["step"] as? Int { seen = s }
            }
            if actedAt == nil && act(process.processIdentifier, seen) { actedAt = Date() }
        }
        process.waitUntilExit()
        return (process.terminationStatus, process.terminationReason, text, actedAt)
    }

    /// A fresh empty folder under the temporary directory.
    public static func scratch() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}
