import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerModels
import LongMixerData
import LongMixerNN

@main
struct LongMixerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "longmixer",
        abstract: "Train, evaluate and benchmark efficient long-sequence models (Paramixer, PermuteFormer, …) on CPU.",
        subcommands: [
            TrainCommand.self,
            EvaluateCommand.self,
            ReportCommand.self,
            PresetsCommand.self,
            GenerateCommand.self,
            DataCommand.self,
            BenchCommand.self,
            DemoCommand.self,
        ])

    /// One error style for the whole CLI: every error is one line `error: <description>` on stderr, exit
    /// 2 for usage errors (a bad option or variable, a refused --output, a corrupt input file) and 1 for
    /// runtime failures (divergence, a failed download). --help and --version print as usual.
    static func main() {
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            // --help / --version are "errors" with a successful exit code: print them as ArgumentParser does.
            if exitCode(for: error) == .success { exit(withError: error) }
            fail(message(for: error), code: 2)
        }
        do {
            // After parsing, and not for help (ArgumentParser answers --help with its own internal
            // HelpCommand), so help still works with a bad variable in the environment.
            if !String(describing: type(of: command)).hasSuffix("HelpCommand") { try RuntimeOptions.checkEnvironment() }
            try command.run()
        } catch let failure as AgreedFailure {
            // Rank 0's refusal, passed on to the other processes (which stop with RankStopped).
            stop(after: failure.error, agreed: true)
        } catch {
            stop(after: error, agreed: false)
        }
        // The processes of a distributed run end together, once rank 0 has written everything.
        if DistributedRun.communicator != nil { DistributedRun.exit(0, agreed: true) }
    }

    /// Prints `error` (or the interruption) as one line and exits with its code; `agreed`: every process
    /// of a distributed run stops with it.
    static func stop(after error: any Error, agreed: Bool) -> Never {
        switch error {
        case let stop as TrainingInterrupted:
            // Not a failure: the run stopped as asked, with a checkpoint to continue from. 128 + n, as the shell reports a signal.
            // Every process of a distributed run stops at the same step; rank 0 says so.
            if DistributedRun.printsError(agreed: true) { FileHandle.standardError.write(Data("\(stop)\n".utf8)) }
            DistributedRun.exit(128 + stop.signal, agreed: true)
        case let stop as RankStopped:
            // Another process failed and printed why.
            DistributedRun.exit(stop.exitCode, agreed: true)
        case let error as UserError:
            // Before MPI is up, a refused option is refused by every process alike.
            fail(error.description, code: error.exitCode, agreed: agreed || (error.kind == .usage && DistributedRun.communicator == nil))
        case let error as TrainingError:
            var diverged = false
            if case .diverged = error { diverged = true }   // every process saw the same non-finite sums
            fail(error.description, code: 1, agreed: agreed || diverged)
        case let error as DatasetFetchError:
            fail(error.description, code: 1, agreed: agreed)
        default:
            if exitCode(for: error) == .success { exit(withError: error) }
            fail(message(for: error), code: 2, agreed: agreed)
        }
    }

    /// Prints `error: <message>` and exits with `code`; `agreed`: every process of a distributed
    /// run stops with this error (only rank 0 prints it), else the others are ended too.
    static func fail(_ message: String, code: Int32, agreed: Bool = false) -> Never {
        let line = message.split(whereSeparator: \.isNewline).joined(separator: "; ")
        if DistributedRun.printsError(agreed: agreed) {
            FileHandle.standardError.write(Data("error: \(DistributedRun.prefix)\(line)\n".utf8))
        }
        DistributedRun.exit(code, agreed: agreed)
    }
}

/// `--threads`, shared by every subcommand that computes.
struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads for LongMixer's kernels and OpenBLAS, 1 … \(RuntimeOptions.threadsPerCoreLimit) × cores (default: all cores, or LONGMIXER_THREADS).")
    var threads: Int?

    func apply() throws {
        if let threads {
            Parallel.setThreadCount(try RuntimeOptions.validatedThreadCount(threads, what: "--threads"))
        }
    }
}
