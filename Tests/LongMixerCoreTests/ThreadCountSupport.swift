import Testing
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

/// Trait of a test whose expectations are about the 16-lane (AVX-512) kernels: it runs where they run
/// and is reported as skipped elsewhere (a CPU without AVX-512, or LONGMIXER_NO_AVX512=1).
let requiresAVX512 = ConditionTrait.enabled(if: CPUFeatures.avx512, "needs the AVX-512 kernels (absent on this CPU, or LONGMIXER_NO_AVX512=1)")
