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
        } catch let stop as TrainingInterrupted {
            // Not a failure: the run stopped as asked, with a checkpoint to continue from. 128 + n, as the shell reports a signal.
            FileHandle.standardError.write(Data("\(stop)\n".utf8))
            Foundation.exit(128 + stop.signal)
        } catch let error as UserError {
            fail(error.description, code: error.exitCode)
        } catch let error as TrainingError {
            fail(error.description, code: 1)
        } catch let error as DatasetFetchError {
            fail(error.description, code: 1)
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) }
            fail(message(for: error), code: 2)
        }
    }

    static func fail(_ message: String, code: Int32) -> Never {
        let line = message.split(whereSeparator: \.isNewline).joined(separator: "; ")
        FileHandle.standardError.write(Data("error: \(line)\n".utf8))
        Foundation.exit(code)
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
