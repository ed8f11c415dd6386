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
    /// Returns once every process has called it.
    func barrier() throws
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    /// The sum of `value` over every process.
    public func sum(_ value: Double) throws -> Double {
        var v = value
        try withUnsafeMutablePointer(to: &v) { try allReduceSum(UnsafeMutableBufferPointer(start: $0, count: 1)) }
        return v
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
}
