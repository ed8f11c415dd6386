import Foundation
import Testing
@testable import LongMixerBenchmarks

/// The ring all-reduce cost model behind the estimate for 8–64 machines.
@Suite("Distributed benchmark estimate")
struct DistributedBenchmarkTests {
    @Test func ringAllReduce() {
        #expect(DistributedBenchReport.ringSeconds(bytes: 1 << 20, machines: 1, bandwidth: 1e9, latency: 1e-5) == 0)
        // K = 2: two messages of half the buffer each way.
        let two = DistributedBenchReport.ringSeconds(bytes: 1_000_000, machines: 2, bandwidth: 1e9, latency: 1e-5)
        #expect(abs(two - (2e-5 + 1e-3)) < 1e-12)
        // Large K: the bandwidth term tends to 2 · bytes / bandwidth, the latency term grows with K.
        let big = DistributedBenchReport.ringSeconds(bytes: 1_000_000, machines: 64, bandwidth: 1e9, latency: 0)
        #expect(abs(big - 2e-3 * 63 / 64) < 1e-12)
    }
}
