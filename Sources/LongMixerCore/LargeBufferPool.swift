import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Recycles tensor buffers of 32 MiB and more.
///
/// glibc already reuses freed blocks below its mmap threshold (which adapts up to 32 MiB), but
/// every larger block is a fresh `mmap`: its first touch page-faults once per 4 KiB page
/// (tens of milliseconds per 64 MiB), which dominated long-sequence training steps. Large buffers are
/// therefore mapped 2 MiB-aligned with transparent huge pages requested (`MADV_HUGEPAGE`, 512×
/// fewer faults), and kept in a size-classed pool on release so the next step reuses them.
/// The pool holds at most `capacityBytes` of idle memory, evicting the least recently released
/// buffers first (so buffers of sizes no longer in use — another model, another length — make room
/// for the current ones instead of crowding them out); `trim()` returns it all to the system.
public enum LargeBufferPool {
    public static let thresholdBytes = 32 << 20
    static let granularity = 2 << 20
    /// Idle bytes kept for reuse: a quarter of physical memory, at least 2 GiB and at most 16 GiB
    /// (`LONGMIXER_POOL_MB` to change, 0 disables). A training step at N = 16 384 frees several GiB
    /// of large activations and gradients; with room for only part of them, every step page-faults the
    /// rest in again (a Performer step then spends a quarter of its time in the kernel's page clearing).
    nonisolated(unsafe) public static var capacityBytes: Int = {
        if let mb = RuntimeOptions.environment.poolMegabytes { return mb << 20 }
        let quarter = Int(ProcessInfo.processInfo.physicalMemory / 4)
        return min(16 << 30, max(2 << 30, quarter))
    }()

    /// Idle buffers, least recently released first.
    nonisolated(unsafe) private static var idle: [(size: Int, pointer: UnsafeMutableRawPointer)] = []
    nonisolated(unsafe) private static var idleBytes = 0
    private static let lock = NSLock()

    static func sizeClass(_ bytes: Int) -> Int { (bytes + granularity - 1) / granularity * granularity }

    /// A buffer of at least `bytes` bytes (64-byte aligned and more).
    static func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        let size = sizeClass(bytes)
        lock.lock()
        if let i = idle.lastIndex(where: { $0.size == size }) {
            let p = idle.remove(at: i).pointer
            idleBytes -= size
            lock.unlock()
            return p
        }
        lock.unlock()
        return mapHugePageAligned(bytes: size, purpose: "a tensor")
    }

    /// A fresh anonymous mapping of `bytes` bytes on a 2 MiB boundary with transparent huge pages requested
    /// (over-mapped by 2 MiB, the slack unmapped). Release it with `munmap(p, bytes)`.
    public static func mapHugePageAligned(bytes: Int, purpose: String) -> UnsafeMutableRawPointer {
        let mapped = bytes + granularity
        func map() -> UnsafeMutableRawPointer? {
            guard let raw = mmap(nil, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED else { return nil }
            return raw
        }
        // The idle buffers may be what is missing: give them back and try once more.
        guard let raw = map() ?? { trim(); return map() }() else { exitOutOfMemory(bytes: bytes, purpose: purpose) }
        let address = Int(bitPattern: raw)
        let aligned = (address + granularity - 1) / granularity * granularity
        if aligned > address { munmap(raw, aligned - address) }
        let tail = address + mapped - (aligned + bytes)
        if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: aligned + bytes), tail) }
        let p = UnsafeMutableRawPointer(bitPattern: aligned)!
        _ = madvise(p, bytes, 14 /* MADV_HUGEPAGE */)
        return p
    }

    /// Tensor operations cannot throw, and the run's memory estimate has already passed: the system
    /// refused memory it seemed to have. One error line and exit status 1, not a crash report.
    static func exitOutOfMemory(bytes: Int, purpose: String) -> Never {
        let error = UserError(.runtime, what: "memory", value: "\(bytes >> 20) MiB for \(purpose)",
                              why: "the system refused the allocation (out of memory)",
                              remedy: "lower --batch-size, --micro-batch-size, --length or the model size, or free memory")
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        exit(error.exitCode)
    }

    static func release(_ p: UnsafeMutableRawPointer, bytes: Int) {
        let size = sizeClass(bytes)
        var evicted: [(size: Int, pointer: UnsafeMutableRawPointer)] = []
        lock.lock()
        if size > capacityBytes {
            lock.unlock()
            munmap(p, size)
            return
        }
        idle.append((size, p))
        idleBytes += size
        while idleBytes > capacityBytes {
            let oldest = idle.removeFirst()
            idleBytes -= oldest.size
            evicted.append(oldest)
        }
        lock.unlock()
        for e in evicted { munmap(e.pointer, e.size) }
    }

    /// Returns every idle buffer to the system.
    public static func trim() {
        lock.lock()
        let all = idle
        idle = []
        idleBytes = 0
        lock.unlock()
        for e in all { munmap(e.pointer, e.size) }
    }

    /// Bytes currently held idle for reuse.
    public static var idleByteCount: Int { lock.lock(); defer { lock.unlock() }; return idleBytes }
}
