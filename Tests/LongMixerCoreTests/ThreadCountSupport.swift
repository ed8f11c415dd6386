@testable import LongMixerCore

/// Runs `body` once per thread count (LongMixer's and OpenBLAS's), restoring the previous count after.
func withEachThreadCount(_ counts: [Int] = [1, 2], _ body: (Int) -> Void) {
    let saved = Parallel.threadCount
    defer { Parallel.setThreadCount(saved) }
    for t in counts {
        Parallel.setThreadCount(t)
        body(t)
    }
}
