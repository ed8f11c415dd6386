import Foundation
import Testing
import LongMixerCore
import LongMixerMPI

/// The MPI collectives, run for real: the suite starts this test binary under `mpirun -np 2` with
/// `LONGMIXER_MPI_WORKER=1`, which enables the worker test in each rank.
@Suite("MPI communicator")
struct MPICommunicatorTests {
    static let isWorker = ProcessInfo.processInfo.environment["LONGMIXER_MPI_WORKER"] == "1"

    @Test("allreduce, broadcast and barrier across 2 ranks", .enabled(if: !isWorker))
    func twoRanks() throws {
        let output = try MPILauncher.run(ranks: 2, filter: "MPICommunicatorTests/worker")
        #expect(output.status == 0, "\(output.text)")
        #expect(output.text.contains("rank 0 of 2 ok") && output.text.contains("rank 1 of 2 ok"), "\(output.text)")
    }

    @Test(.enabled(if: isWorker))
    func worker() throws {
        let world = try MPICommunicator.world()
        #expect(world.size == 2)
        let r = Float(world.rank)
        // A buffer larger than one MPI call's count is reduced in pieces.
        var values = (0..<1000).map { Float($0) * (r + 1) }
        try values.withUnsafeMutableBufferPointer { try world.allReduceSum($0) }
        #expect(values == (0..<1000).map { Float($0) * 3 })
        #expect(try world.sum(Double(world.rank) + 0.5) == 2)
        var tensor = Tensor(shape: [3], scalars: [r, r, r])
        try world.broadcast(&tensor, root: 1)
        #expect(tensor.scalars == [1, 1, 1])
        try world.barrier()
        print("rank \(world.rank) of \(world.size) ok")
    }
}
