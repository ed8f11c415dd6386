import Foundation
import LongMixerCore
#if LONGMIXER_MPI
import LongMixerMPI
#endif

/// `train --distributed`: the MPI processes of a data-parallel run, and how a process of one ends.
enum DistributedRun {
    /// The communicator once MPI is up (nil: one process).
    nonisolated(unsafe) static var communicator: (any Communicator)?
    /// This process's rank as the launcher announced it, before MPI is up (errors of the options
    /// are the same on every rank: only rank 0 prints them).
    nonisolated(unsafe) static var launchedRank: Int?

    /// Refuses `--distributed` of `longmixer command` in a build without MPI or a process `mpirun` did not
    /// start, before anything else is checked.
    static func checkLaunched(_ command: String = "train") throws {
        #if LONGMIXER_MPI
        let environment = ProcessInfo.processInfo.environment
        // Open MPI, MPICH (Hydra) and PMIx launchers.
        guard let rank = ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"].lazy.compactMap({ environment[$0] }).first else {
            throw UserError(what: "--distributed", why: "this process was not started by mpirun",
                            remedy: "start every process with `mpirun -np K longmixer \(command) … --distributed`, or \(command) without --distributed")
        }
        launchedRank = Int(rank)
        #else
        throw UserError(what: "--distributed", why: "this longmixer was built without MPI",
                        remedy: "build it with `LONGMIXER_MPI=1 swift build -c release` (needs libopenmpi-dev), or \(command) without --distributed")
        #endif
    }

    /// The processes of the run. Unless a thread count was given, each process takes its share of
    /// the machine's cores (processes on one machine would otherwise fight for them).
    static func world(threadsGiven: Bool) throws -> any Communicator {
        #if LONGMIXER_MPI
        let world = try MPICommunicator.world()
        communicator = world
        let environment = ProcessInfo.processInfo.environment
        if !threadsGiven, let local = (environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? environment["MPI_LOCALNRANKS"]).flatMap({ Int($0) }), local > 1 {
            Parallel.setThreadCount(max(1, ProcessInfo.processInfo.activeProcessorCount / local))
        }
        return world
        #else
        try checkLaunched()
        return SingleProcess()
        #endif
    }

    /// Whether this process prints an error: rank 0 always; another rank only for a failure of its
    /// own (not one every rank has, such as a refused option or an agreed stop).
    static func printsError(agreed: Bool) -> Bool {
        let rank = communicator?.rank ?? launchedRank ?? 0
        return rank == 0 || !agreed
    }

    /// "rank r: " on the lines of a rank other than 0.
    static var prefix: String {
        let rank = communicator?.rank ?? launchedRank ?? 0
        return rank == 0 ? "" : "rank \(rank): "
    }

    /// Ends this process with `code`, after the others of an agreed stop. A failure that the other
    /// processes did not agree on ends them too (MPI_Abort), so none waits forever in a collective.
    static func exit(_ code: Int32, agreed: Bool) -> Never {
        if let world = communicator, world.size > 1 {
            if !agreed { world.abort(code: code) }
            // mpirun ends the whole job when one process exits with a failure: wait for rank 0 to finish writing.
            do { try world.barrier() } catch { world.abort(code: code) }
        }
        Foundation.exit(code)
    }
}
