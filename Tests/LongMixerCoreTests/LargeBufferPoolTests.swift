import Foundation
import Testing
@testable import LongMixerCore

@Suite("Large buffer pool")
struct LargeBufferPoolTests {
    /// A mapping the system refuses ends the process with one error line and status 1, not a crash.
    @Test("an allocation the system refuses is one error line and exit status 1")
    func refusedAllocation() async throws {
        let result = await #expect(processExitsWith: .exitCode(1), observing: [\.standardErrorContent]) {
            _ = LargeBufferPool.mapHugePageAligned(bytes: 1 << 60, purpose: "a test buffer")
        }
        let text = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(text == "error: memory (1099511627776 MiB for a test buffer): the system refused the allocation (out of memory); "
                + "lower --batch-size, --micro-batch-size, --length or the model size, or free memory\n", "\(text)")
    }
}
