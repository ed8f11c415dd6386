import CLongMixerMemory
import Foundation

/// Streaming (non-temporal) stores for kernel outputs much larger than the last-level cache.
///
/// An ordinary store to a line that is not cached first reads the line from DRAM (write-allocate), so
/// a kernel that reads one tensor and writes another moves 2 reads + 1 write; a streaming store writes
/// the whole line without reading it and does not evict the input from the caches. An output of at
/// least the last-level cache's size cannot stay cached for its consumer anyway, so kernels switch to
/// streaming stores there (`shouldStream`); smaller outputs (training-size tensors) keep ordinary
/// stores and stay in cache for the next kernel. Each thread that streamed calls `fence()` before it
/// returns from its `parallelFor` piece (streaming stores are weakly ordered).
///
/// `LONGMIXER_NO_STREAMING=1` turns them off (to compare).
public enum StreamingStores {
    /// Outputs of at least this many bytes are streamed: the last-level cache size from sysfs
    /// (32 MiB on the current hosts; 32 MiB where it cannot be read), at least 4 MiB.
    public static let thresholdBytes: Int = {
        if RuntimeOptions.environment.noStreaming { return .max }
        return max(4 << 20, lastLevelCacheBytes() ?? (32 << 20))
    }()

    /// True when an output of `bytes` bytes should be written with streaming stores.
    public static func shouldStream(bytes: Int) -> Bool { bytes >= thresholdBytes }

    /// True when the rows of an output of `rows` × `n` floats at `p` should be streamed: it is large
    /// enough, and every row starts on a 64-byte cache line (p aligned, n a multiple of 16). Row kernels
    /// stream whole rows; rows that share a line would mix streaming and ordinary stores in that line.
    public static func shouldStreamRows(_ p: UnsafeMutablePointer<Float>, rows: Int, n: Int) -> Bool {
        shouldStream(bytes: rows * n * 4) && Int(bitPattern: p) & 63 == 0 && n % 16 == 0
    }

    /// Size of the largest cache listed for cpu0 in /sys/devices/system/cpu/cpu0/cache ("32768K").
    static func lastLevelCacheBytes() -> Int? {
        var best: Int?
        for index in 0..<8 {
            guard let text = try? String(contentsOfFile: "/sys/devices/system/cpu/cpu0/cache/index\(index)/size", encoding: .utf8)
            else { continue }
            let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
            let unit: Int = t.hasSuffix("K") ? 1 << 10 : t.hasSuffix("M") ? 1 << 20 : 1
            guard let value = Int(t.trimmingCharacters(in: CharacterSet.decimalDigits.inverted)) else { continue }
            best = max(best ?? 0, value * unit)
        }
        return best
    }

    /// Streaming store of 8 floats at `p` (32-byte aligned).
    @inlinable @inline(__always)
    public static func store8(_ v: Float8, _ p: UnsafeMutablePointer<Float>) { lm_stream8(p, v) }

    /// Orders this thread's streaming stores before its later stores (`sfence`).
    @inlinable @inline(__always)
    public static func fence() { lm_store_fence() }

    /// Prefetches the cache line holding `p` for reading.
    @inlinable @inline(__always)
    public static func prefetch(_ p: UnsafePointer<Float>) { lm_prefetch(p) }

    /// Floats from `p` to its next 32-byte boundary (0 when aligned; p is 4-byte aligned).
    @inlinable @inline(__always)
    public static func floatsToAlignment32(_ p: UnsafeMutablePointer<Float>) -> Int {
        let offset = Int(bitPattern: p) & 31
        return offset == 0 ? 0 : (32 - offset) / 4
    }
}
