import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

/// `longmixer demo …`: small self-contained runs that exercise the whole stack.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Small self-contained training runs that check the whole stack works.",
        subcommands: [MLPDemoCommand.self])
}

/// `longmixer demo mlp`: a 2-layer MLP learns 3 concentric rings (synthetic, seeded) with Adam.
struct MLPDemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mlp",
        abstract: "Train a 2-layer MLP on a synthetic 3-class rings problem and print the test accuracy.",
        discussion: "Deterministic: the same seed and thread count give the same losses to the last bit.")

    @Option(help: "Seed for the data, the initialisation and the batch order.")
    var seed: UInt64 = 0

    @Option(help: "Optimizer steps (mini-batches of 64).")
    var steps: Int = 300

    @Option(help: "Print the loss every this many steps (0: only the summary).")
    var logEvery: Int = 50

    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        guard steps >= 1 else { throw ValidationError("--steps must be ≥ 1, got \(steps)") }
        guard logEvery >= 0 else { throw ValidationError("--log-every must be ≥ 0, got \(logEvery)") }
    }

    func run() throws {
        try threadOptions.apply()
        print("demo mlp: seed \(seed), \(steps) steps, \(Parallel.threadCount) threads")
        let logEvery = logEvery, steps = steps
        let result = runMLPDemo(seed: seed, steps: steps) { step, loss in
            if logEvery > 0 && ((step + 1) % logEvery == 0 || step == 0 || step + 1 == steps) {
                print(String(format: "step %5d  loss %.4f", step + 1, loss))
            }
        }
        print(String(format: "parameters %d  train accuracy %.2f %%  test accuracy %.2f %%  (%.2f s)",
                     result.parameterCount, 100 * result.trainAccuracy, 100 * result.testAccuracy, result.seconds))
    }
}
