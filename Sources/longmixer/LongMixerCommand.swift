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
            PresetsCommand.self,
            GenerateCommand.self,
            DataCommand.self,
            BenchCommand.self,
            DemoCommand.self,
        ])

    /// One error style for the whole CLI: a `UserError` from anywhere (a bad LONGMIXER_* variable, a
    /// refused --output, a corrupt checkpoint) is printed as `error: <description>` on stderr and exits
    /// 2 (usage) or 1 (runtime). ArgumentParser keeps its own parse errors, --help and usage text.
    static func main() {
        do {
            var command = try parseAsRoot()
            // After parsing, and not for help (ArgumentParser answers --help with its own internal
            // HelpCommand), so help still works with a bad variable in the environment.
            if !String(describing: type(of: command)).hasSuffix("HelpCommand") { try RuntimeOptions.checkEnvironment() }
            try command.run()
        } catch let error as UserError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            Foundation.exit(error.exitCode)
        } catch {
            exit(withError: error)
        }
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
