import Foundation
import Testing
import LongMixerNN

/// `Tests/Fixtures/<name>` of this package, located from this source file (works from any working directory).
func fixtureURL(_ name: String) -> URL {
    URL(fileURLWithPath: #filePath)      // <root>/Tests/LongMixerNNTests/TestSupport.swift
        .deletingLastPathComponent()     // <root>/Tests/LongMixerNNTests
        .deletingLastPathComponent()     // <root>/Tests
        .deletingLastPathComponent()     // <root>
        .appendingPathComponent("Tests")
        .appendingPathComponent("Fixtures")
        .appendingPathComponent(name)
}

/// Largest |aᵢ − eᵢ| and the bound it must stay under: `tolerance` × max |eᵢ| (relative to the
/// reference tensor's scale). An all-zero reference needs an exact match; NaN anywhere fails.
func relativeError(_ actual: Tensor, _ expected: Tensor) -> (maxAbsDiff: Float, scale: Float) {
    precondition(actual.count == expected.count, "relativeError: \(actual.count) vs \(expected.count) elements")
    var diff: Float = 0, scale: Float = 0
    let a = actual.pointer, e = expected.pointer
    for i in 0..<actual.count {
        let d = abs(a[i] - e[i])
        if d.isNaN || d > diff { diff = d.isNaN ? .nan : d }
        if diff.isNaN { break }
        scale = max(scale, abs(e[i]))
    }
    return (diff, scale)
}

/// Expects `actual` to have `expected`'s shape and to match it to `tolerance` relative to the
/// reference's largest magnitude (see `relativeError`).
func expectClose(_ actual: Tensor, _ expected: Tensor, tolerance: Float = 1e-5, _ label: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    guard actual.shape == expected.shape else {
        Issue.record("\(label): shape \(actual.shape) ≠ expected \(expected.shape)", sourceLocation: sourceLocation)
        return
    }
    let (diff, scale) = relativeError(actual, expected)
    let bound = tolerance * scale
    #expect(diff <= bound, "\(label): max |Δ| = \(diff) > \(tolerance) × max|ref| (\(scale)) = \(bound)",
            sourceLocation: sourceLocation)
}
