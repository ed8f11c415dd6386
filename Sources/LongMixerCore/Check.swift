/// Stops with `message` when `condition` is false — in every build configuration.
///
/// Swift's `precondition` drops its message in optimised builds, which would turn a user's shape
/// mistake into a bare "illegal instruction". Programmer errors in ops (shape mismatch, bad axis,
/// index out of range) go through `check`, so the message naming the values is always printed.
@inlinable @inline(__always)
public func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                  file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}
