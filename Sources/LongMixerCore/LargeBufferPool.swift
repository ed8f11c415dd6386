import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Recycles tensor buffers of 32 MiB and more.
///
/// glibc already reuses freed blocks below its mmap threshold (which adapts up to 32 MiB), but
/// every larger block is a fresh `mmap`: its first touch page-faults once per 4 KiB page
/// (≈ 26 ms per 64 MiB here), which dominated long-sequence training steps. Large buffers are
/// therefore mapped 2 MiB-aligned with transparent huge pages requested (`MADV_HUGEPAGE`, 512×
/// fewer faults), and kept in a size-classed pool on release so the next step reuses them.
/// The pool holds at most `capacityBytes` of idle memory; `trim()` returns it to the system.
public enum LargeBufferPool {
    public static let thresholdBytes = 32 << 20
    static let granularity = 2 << 20
    /// Idle bytes kept for reuse (default 2 GiB, `LONGMIXER_POOL_MB` to change, 0 disables).
    nonisolated(unsafe) public static var capacityBytes: Int = {
        if let s = ProcessInfo.processInfo.environment["LONGMIXER_POOL_MB"], let mb = Int(s), mb >= 0 { return mb << 20 }
        return 2 << 30
    }()

    nonisolated(unsafe) private static var idle: [Int: [UnsafeMutableRawPointer]] = [:]
    nonisolated(unsafe) private static var idleBytes = 0
    private static let lock = NSLock()

    static func sizeClass(_ bytes: Int) -> Int { (bytes + granularity - 1) / granularity * granularity }

    /// A buffer of at least `bytes` bytes (64-byte aligned and more).
    static func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        let size = sizeClass(bytes)
        lock.lock()
        if var list = idle[size], let p = list.popLast() {
            idle[size] = list.isEmpty ? nil : list
            idleBytes -= size
            lock.unlock()
            return p
        }
        lock.unlock()
        // Over-map by 2 MiB to place the buffer on a huge-page boundary, then unmap the slack.
        let mapped = size + granularity
        guard let raw = mmap(nil, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED else {
            fatalError("cannot map \(size >> 20) MiB for a tensor (out of memory?)")
        }
        let address = Int(bitPattern: raw)
        let aligned = (address + granularity - 1) / granularity * granularity
        if aligned > address { munmap(raw, aligned - address) }
        let tail = address + mapped - (aligned + size)
        if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: aligned + size), tail) }
        let p = UnsafeMutableRawPointer(bitPattern: aligned)!
        _ = madvise(p, size, 14 /* MADV_HUGEPAGE */)
        return p
    }

    static func release(_ p: UnsafeMutableRawPointer, bytes: Int) {
        let size = sizeClass(bytes)
        lock.lock()
        if idleBytes + size <= capacityBytes {
            idle[size, default: []].append(p)
            idleBytes += size
            lock.unlock()
            return
        }
        lock.unlock()
        munmap(p, size)
    }

    /// Returns every idle buffer to the system.
    public static func trim() {
        lock.lock()
        let all = idle
        idle = [:]
        idleBytes = 0
        lock.unlock()
        for (size, list) in all { for p in list { munmap(p, size) } }
    }

    /// Bytes currently held idle for reuse.
    public static var idleByteCount: Int { lock.lock(); defer { lock.unlock() }; return idleBytes }
}
