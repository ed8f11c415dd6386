import Foundation
import Testing
import LongMixerCore

// What every test target shares: one closeness measure, one fixture locator, the thread-count loop
// and the AVX-512 trait.

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
