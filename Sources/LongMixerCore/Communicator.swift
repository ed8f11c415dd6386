import Foundation

/// The processes of a data-parallel run and the collective operations training needs.
///
/// One process (`SingleProcess`) is the default. The MPI backend (`MPICommunicator` in `LongMixerMPI`,
/// built with `LONGMIXER_MPI=1`) spans the ranks `mpirun` started, on one machine or many. Every
/// process calls the same collectives in the same order; a failed collective throws.
public protocol Communicator: AnyObject {
    /// This process's index, 0..<size. Rank 0 writes files and prints progress.
    var rank: Int { get }
    /// Number of processes.
    var size: Int { get }
    /// Element-wise sum of `values` over every process, in place: every process gets the sum.
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws
    /// Every process's `bytes` become those of process `root`.
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws
    /// Returns once every process has called it (waiting without spinning: the others may be
    /// validating or writing a checkpoint for seconds).
    func barrier() throws
    /// Ends every process of the run with `code`: for a failure on one process that the others
    /// cannot learn of, so none waits forever in a collective.
    func abort(code: Int32) -> Never
}

/// Rank 0's failure in `Communicator.onRoot`, which the other ranks learnt of (they stop with
/// `RankStopped`): every process ends normally instead of aborting the job.
public struct AgreedFailure: Error, CustomStringConvertible {
    public let error: any Error
    public init(_ error: any Error) { self.error = error }
    public var description: String { "\(error)" }
}

/// This process stops because another one of the run failed and reported it (rank 0 prints the
/// error); the process exits with the same code, silently.
public struct RankStopped: Error, CustomStringConvertible {
    public let exitCode: Int32
    public init(exitCode: Int32) { self.exitCode = exitCode }
    public var description: String { "another process of the run stopped with exit code \(exitCode)" }
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    /// The sum of `value` over every process.
    public func sum(_ value: Double) throws -> Double {
        var v = value
        try withUnsafeMutablePointer(to: &v) { try allReduceSum(UnsafeMutableBufferPointer(start: $0, count: 1)) }
        return v
    }

    /// The bytes of `data` on process `root`, on every process (`data` is ignored elsewhere).
    public func broadcast(_ data: Data, root: Int = 0) throws -> Data {
        guard size > 1 else { return data }
        var count = UInt64(data.count)
        try withUnsafeMutableBytes(of: &count) { try broadcast($0, root: root) }
        var bytes = rank == root ? [UInt8](data) : [UInt8](repeating: 0, count: Int(count))
        try bytes.withUnsafeMutableBytes { try broadcast($0, root: root) }
        return Data(bytes)
    }

    /// Runs `body` on rank 0 only and tells every rank whether it succeeded, so a refusal there
    /// (a run directory in use, a damaged checkpoint) stops the others too (with `RankStopped`)
    /// instead of leaving them in the next collective; rank 0 throws it as `AgreedFailure` (with
    /// one process, as it is). nil on the other ranks.
    public func onRoot<T>(_ body: () throws -> T) throws -> T? {
        guard size > 1 else { return try body() }
        var result: Result<T, any Error>? = nil
        var code: Int32 = 0
        if isRoot {
            do { result = .success(try body()) } catch {
                result = .failure(error)
                code = (error as? UserError)?.exitCode ?? 1
            }
        }
        try withUnsafeMutableBytes(of: &code) { try broadcast($0, root: 0) }
        switch result {
        case .success(let value): return value
        case .failure(let error): throw AgreedFailure(error)
        case nil: break
        }
        if code != 0 { throw RankStopped(exitCode: code) }
        return nil
    }

    /// Every process's `tensor` becomes the one of process `root`.
    public func broadcast(_ tensor: inout Tensor, root: Int = 0) throws {
        let bytes = tensor.count * MemoryLayout<Float>.size
        try tensor.withUnsafeMutablePointer { p in try broadcast(UnsafeMutableRawBufferPointer(start: p, count: bytes), root: root) }
    }
}

/// A run of one process: every collective is the identity.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws {}
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws {}
    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {}
    public func barrier() throws {}
    public func abort(code: Int32) -> Never { exit(code) }
}
