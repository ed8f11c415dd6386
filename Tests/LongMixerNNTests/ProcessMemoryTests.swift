import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels

@Suite("Process memory")
struct ProcessMemoryTests {
    @Test func peakFollowsALargeAllocation() async {
        // In a child process: the peak is process-wide and other tests allocate concurrently.
        await #expect(processExitsWith: .success) {
            guard ProcessMemory.resetPeak(), let before = ProcessMemory.peakResidentBytes() else { return }   // not Linux
            do {
                var t = Tensor(zeros: [64 << 20])   // 256 MiB, touched
                t[flat: 0] = 1
            }
            let after = ProcessMemory.peakResidentBytes()!
            precondition(after - before >= 250 << 20, "peak grew by \(after - before) bytes only")
        }
    }
}
