import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerModels
import LongMixerData

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
}

/// `--threads`, shared by every subcommand that computes.
struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads for LongMixer's kernels and OpenBLAS (default: all cores, or LONGMIXER_THREADS).")
    var threads: Int?

    func apply() throws {
        if let threads {
            guard threads >= 1 else { throw ValidationError("--threads must be ≥ 1, got \(threads)") }
            Parallel.setThreadCount(threads)
        }
    }
}
