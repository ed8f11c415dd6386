import Synchronization

/// Bytes held by live tensor storages, and their peak: the exact memory a computation keeps in
/// tensors (activations saved for backward, gradients, parameters), independent of how malloc or
/// the large-buffer pool recycle pages — unlike resident-set readings.
public enum TensorMemory {
    private static let live = Atomic<Int>(0)
    private static let peak = Atomic<Int>(0)

    static func allocated(_ bytes: Int) {
        let now = live.add(bytes, ordering: .relaxed).newValue
        var seen = peak.load(ordering: .relaxed)
        while now > seen {
            let (exchanged, original) = peak.compareExchange(expected: seen, desired: now, ordering: .relaxed)
            if exchanged { break }
            seen = original
        }
    }

    static func released(_ bytes: Int) { live.subtract(bytes, ordering: .relaxed) }

    /// Bytes in live tensors now.
    public static var liveBytes: Int { live.load(ordering: .relaxed) }
    /// Highest `liveBytes` since start or the last `resetPeak()`.
    public static var peakBytes: Int { peak.load(ordering: .relaxed) }
    /// Sets the peak to the current live bytes.
    public static func resetPeak() { peak.store(live.load(ordering: .relaxed), ordering: .relaxed) }
}
