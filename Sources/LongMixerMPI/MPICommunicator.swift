import CMPI
import LongMixerCore
#if canImport(Glibc)
import Glibc
#endif

/// The processes `mpirun` started, through MPI (Open MPI or MPICH): data-parallel training across
/// processes and machines with the launcher and network stack a cluster already runs.
///
/// MPI is initialised once per process (`MPI_THREAD_FUNNELED`: only the thread that initialised it
/// calls MPI; the compute threads never do) and finalised at exit. Errors come back as return codes
/// and become one `UserError` each instead of aborting the job; a rank that dies makes `mpirun`
/// stop the others.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    private let world: MPI_Comm

    nonisolated(unsafe) private static var shared: MPICommunicator?

    /// The world communicator of this process (initialising MPI on first use).
    public static func world() throws -> MPICommunicator {
        if let shared { return shared }
        var provided: Int32 = 0
        try check(MPI_Init_thread(nil, nil, longmixer_mpi_thread_funneled(), &provided), "MPI_Init_thread")
        guard let world = longmixer_mpi_comm_world() else { throw UserError(.runtime, what: "MPI", why: "no world communicator") }
        try check(longmixer_mpi_return_errors(world), "MPI_Comm_set_errhandler")
        var rank: Int32 = 0, size: Int32 = 0
        try check(MPI_Comm_rank(world, &rank), "MPI_Comm_rank")
        try check(MPI_Comm_size(world, &size), "MPI_Comm_size")
        let c = MPICommunicator(rank: Int(rank), size: Int(size), world: world)
        shared = c
        atexit { MPI_Finalize() }
        return c
    }

    private init(rank: Int, size: Int, world: MPI_Comm) {
        self.rank = rank
        self.size = size
        self.world = world
    }

    /// MPI counts are Int32: larger buffers go in pieces.
    static let maximumCount = Int(Int32.max) / 8

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws {
        try allReduce(UnsafeMutableRawPointer(values.baseAddress), count: values.count, type: longmixer_mpi_float(), stride: 4)
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws {
        try allReduce(UnsafeMutableRawPointer(values.baseAddress), count: values.count, type: longmixer_mpi_double(), stride: 8)
    }

    private func allReduce(_ base: UnsafeMutableRawPointer?, count: Int, type: MPI_Datatype, stride: Int) throws {
        guard let base, count > 0 else { return }
        var start = 0
        while start < count {
            let n = min(Self.maximumCount, count - start)
            try Self.check(MPI_Allreduce(longmixer_mpi_in_place(), base + start * stride, Int32(n), type, longmixer_mpi_sum(), world),
                           "MPI_Allreduce")
            start += n
        }
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var start = 0
        while start < bytes.count {
            let n = min(Self.maximumCount, bytes.count - start)
            try Self.check(MPI_Bcast(base + start, Int32(n), longmixer_mpi_byte(), Int32(root), world), "MPI_Bcast")
            start += n
        }
    }

    /// A non-blocking barrier polled with short sleeps: a blocking MPI call spins on its core, which
    /// would take a core from the rank the others wait for (rank 0 validating or writing a checkpoint).
    public func barrier() throws {
        var request: MPI_Request? = nil
        try Self.check(MPI_Ibarrier(world, &request), "MPI_Ibarrier")
        var done: Int32 = 0
        while true {
            try Self.check(longmixer_mpi_test(&request, &done), "MPI_Test")
            if done != 0 { return }
            usleep(200)
        }
    }

    public func abort(code: Int32) -> Never {
        MPI_Abort(world, code)
        exit(code)
    }

    static func check(_ code: Int32, _ call: String) throws {
        guard code != longmixer_mpi_success() else { return }
        var text = [CChar](repeating: 0, count: Int(longmixer_mpi_max_error_string()) + 1)
        var length: Int32 = 0
        MPI_Error_string(code, &text, &length)
        throw UserError(.runtime, what: call, value: String(code), why: String(cString: text),
                        remedy: "check that every rank is alive and reachable (mpirun's output names the failed one)")
    }
}
