import Foundation
import LongMixerCore
import LongMixerModels
import LongMixerData

/// Resident-memory readings of this process from /proc (Linux).
public enum ProcessMemory {
    /// Peak resident set size (VmHWM) in bytes since start or the last `resetPeak()`; nil off Linux.
    public static func peakResidentBytes() -> Int? { statusField("VmHWM:") }

    /// Current resident set size (VmRSS) in bytes.
    public static func residentBytes() -> Int? { statusField("VmRSS:") }

    /// Resets the peak to the current resident size (writes 5 to /proc/self/clear_refs), after
    /// returning the idle large-buffer pool so that it does not count. Returns false if unsupported.
    @discardableResult
    public static func resetPeak() -> Bool {
        LargeBufferPool.trim()
        guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? handle.close() }
        do { try handle.write(contentsOf: Data("5".utf8)) } catch { return false }
        return true
    }

    private static func statusField(_ name: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return nil
    }
}
