import ArgumentParser
import Foundation
import LongMixerCore
import LongMixerBenchmarks

// The option vocabulary of every `longmixer bench` subcommand: a subcommand declares the groups that
// apply to it, so an option means the same thing wherever it appears. `--lengths`, `--repeats` and
// `--batch-size` are declared by each subcommand (their defaults differ) with the help texts below.

enum BenchHelp {
    static let lengths = "Comma-separated sequence lengths."
    static let repeats = "Rounds: every case runs once per round, the cases of a group alternating direction round by round; medians and IQRs are over rounds."
    static let batchSize = "Sequences per training step."
}

/// `--threads`: LongMixer's kernels, OpenBLAS and PyTorch all run with this many threads.
struct BenchThreadsOption: ParsableArguments {
    @Option(help: "Threads for LongMixer's kernels, OpenBLAS and PyTorch (default: all cores). `bench core` takes a comma-separated list.")
    var threads: String?

    /// The one thread count of a benchmark that runs at one count, applied to LongMixer and OpenBLAS.
    func applySingle() throws -> Int {
        let t = try BenchArguments.threads(threads, single: true)[0]
        Parallel.setThreadCount(t)
        return t
    }
}

/// `--json`, `--markdown`, `--check-targets`.
struct BenchOutputOptions: ParsableArguments {
    @Option(help: "Write the results, the command and the machine (CPU, instruction set, date, load) as JSON to this path.")
    var json: String?

    @Flag(help: "Also print the tables as Markdown.")
    var markdown = false

    @Flag(name: .customLong("check-targets"), help: "Also judge the results against the project's performance targets.")
    var checkTargets = false
}

/// `--plot`: an SVG log-log plot of the results against N.
struct BenchPlotOption: ParsableArguments {
    @Option(help: "Write an SVG log-log plot of time and memory against N to this path.")
    var plot: String?
}

/// `--torch` and `--python`.
struct BenchTorchOptions: ParsableArguments {
    @Flag(help: "Also time the same models in PyTorch, alternating with the Swift cases round by round.")
    var torch = false

    @Option(help: "Python interpreter with torch for --torch (default: LONGMIXER_TORCH_PYTHON, else python3).")
    var python: String?

    /// With --torch: the interpreter, checked (it runs and imports torch; `script` is reachable) before
    /// any timing starts. nil without --torch; --python without --torch is refused.
    func checked(script: String = TorchSide.workerScript) throws -> (interpreter: TorchInterpreter, info: TorchInfo)? {
        guard torch else {
            if let python {
                throw UserError(what: "--python", value: python, why: "is only read with --torch", remedy: "add --torch, or drop --python")
            }
            return nil
        }
        let interpreter = TorchInterpreter.resolve(option: python)
        return (interpreter, try TorchSide.check(interpreter, script: script))
    }
}

/// `longmixer bench …` as typed, for the reports.
func benchCommandLine() -> String {
    (["longmixer"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
}
