import Foundation
import LongMixerCore

// One batch ahead on a background thread: while the model trains on step k's batch, the batch of
// step k + 1 is laid out. Step k's batch is a pure function of k (`prepare` is called with the steps
// in increasing order, one at a time, never concurrently with itself), so the batches are the same
// with and without the thread, and a resumed run starting at any step gets the same ones.
//
// `prepare` runs on the background thread and must call neither BLAS nor `parallelFor`: the thread
// budget (`Parallel`) counts the training thread and its workers only, and OpenBLAS's threaded calls
// are serialised with the training thread's. Sources whose batches qualify say so
// (`BatchSource.preparesBatchesInBackground`); the others are prepared on the calling thread.

/// Prepares the value of step k + 1 in the background while the caller works on step k.
public final class BatchPrefetcher<Value> {
    private let worker: PrefetchWorker<Value>
    private let background: Bool
    private let prepare: (Int) throws -> Value

    /// `prepare(k)` gives step k's value; steps `..< endStep` are prepared ahead. With `background`
    /// false every value is prepared on the calling thread when asked for (the same values).
    public init(endStep: Int, background: Bool, prepare: @escaping (Int) throws -> Value) {
        self.background = background
        self.prepare = prepare
        worker = PrefetchWorker(endStep: endStep, prepare: prepare)
    }

    /// Ends the background thread (waits for it) when the prefetcher goes away without `stop`.
    deinit { worker.stop() }

    /// Step `step`'s value: the one prepared in the background if it was this step's, else prepared
    /// now; then step + 1 is started in the background. An error of `prepare` is thrown here, as it
    /// would have been without the thread.
    public func value(step: Int) throws -> Value {
        guard background else { return try prepare(step) }
        return try worker.value(step: step)
    }

    /// Stops the background thread and waits until it has ended (after the step it is preparing, if
    /// any); calling it again does nothing.
    public func stop() { worker.stop() }

    /// Whether the background thread is running.
    public var isRunning: Bool { worker.isRunning }
}

/// The state shared with the background thread (which keeps it alive while it runs).
private final class PrefetchWorker<Value>: @unchecked Sendable {
    private let prepare: (Int) throws -> Value
    /// Steps at or after this are never prepared ahead.
    private let endStep: Int
    private let condition = NSCondition()
    // Guarded by `condition`:
    /// The step the thread is asked to prepare next.
    private var queued: Int?
    /// Whether the thread is preparing a step now.
    private var busy = false
    /// What the thread prepared, and for which step (an error is kept and rethrown on the caller's thread).
    private var ready: (step: Int, result: Result<Value, any Error>)?
    private var stopping = false
    private var thread: pthread_t?

    init(endStep: Int, prepare: @escaping (Int) throws -> Value) {
        self.endStep = endStep
        self.prepare = prepare
    }

    func value(step: Int) throws -> Value {
        condition.lock()
        // At most one step is ahead: wait for it (usually finished long ago).
        while busy || queued != nil { condition.wait() }
        var result: Result<Value, any Error>?
        if let r = ready, r.step == step { result = r.result }
        ready = nil
        condition.unlock()
        // Not prepared ahead (the first step, or another step than the one ahead): the thread is idle,
        // so `prepare` runs here, still one call at a time.
        let value = try (result ?? Result { try prepare(step) }).get()
        if step + 1 < endStep { try enqueue(step + 1) }
        return value
    }

    private func enqueue(_ step: Int) throws {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { return }
        if thread == nil {
            var t = pthread_t()
            let context = Unmanaged.passRetained(ThreadEntry { [self] in work() }).toOpaque()
            let status = pthread_create(&t, nil, { context in
                Unmanaged<ThreadEntry>.fromOpaque(context!).takeRetainedValue().body()
                return nil
            }, context)
            guard status == 0 else {
                Unmanaged<ThreadEntry>.fromOpaque(context).release()
                throw UserError(.runtime, what: "batch prefetch thread", why: "could not be started (pthread_create: \(status))")
            }
            thread = t
        }
        queued = step
        condition.broadcast()
    }

    /// The background thread: prepares each queued step until `stop`.
    private func work() {
        condition.lock()
        while true {
            while queued == nil && !stopping { condition.wait() }
            if stopping { break }
            let step = queued!
            queued = nil
            busy = true
            condition.unlock()
            let result = Result { try prepare(step) }
            condition.lock()
            busy = false
            ready = (step, result)
            condition.broadcast()
        }
        condition.unlock()
    }

    func stop() {
        condition.lock()
        stopping = true
        queued = nil
        let t = thread
        thread = nil
        condition.broadcast()
        condition.unlock()
        if let t { pthread_join(t, nil) }
    }

    var isRunning: Bool {
        condition.lock()
        defer { condition.unlock() }
        return thread != nil
    }
}

/// What a thread started with `pthread_create` runs (a C function cannot capture a generic type).
private final class ThreadEntry {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}
