import Foundation
import LongMixerCore

/// Starts this test binary under `mpirun` with one test filter, the ranks running as workers.
enum MPILauncher {
    struct Output { var status: Int32; var text: String }

    static func run(ranks: Int, filter: String, timeout: Double = 300) throws -> Output {
        let binary = CommandLine.arguments[0]
        var arguments = ["-np", String(ranks), "--oversubscribe", "-x", "LONGMIXER_MPI_WORKER=1"]
        if getuid() == 0 { arguments.append("--allow-run-as-root") }
        arguments += [binary, "--testing-library", "swift-testing", "--filter", filter]
        var environment = ProcessInfo.processInfo.environment
        environment["LONGMIXER_MPI_WORKER"] = "1"
        let r = try ChildProcess.run("mpirun", arguments, timeout: timeout, environment: environment)
        let text = String(decoding: r.standardOutput, as: UTF8.self) + String(decoding: r.standardError, as: UTF8.self)
        return Output(status: r.status, text: text)
    }
}
