import CLongMixerProcess

/// SIGINT and SIGTERM during a training run: the first one is recorded for the trainer, which writes
/// a checkpoint and stops between two steps (or two evaluation batches); a second one stops the
/// process at once (the default action is back after the first).
public enum StopSignals {
    /// The signal received since `catching` began (0: none).
    public static var received: Int32 { longmixer_stop_signal() }

    /// Runs `body` with the signals caught, then restores their default actions.
    public static func catching<T>(_ body: () throws -> T) throws -> T {
        _ = longmixer_catch_stop_signals()
        defer { longmixer_release_stop_signals() }
        return try body()
    }
}
