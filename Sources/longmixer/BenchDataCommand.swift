import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerData

/// `longmixer bench data`: how fast each task's data load and turn into batches at the task's own
/// length — the input side of a training step, to set against the step itself.
struct BenchDataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Load time and batches per second of each task's data at its reference length.",
        discussion: """
            For every task (generated ones always; prepared ones when their data are in --data-dir): the time to \
            build its splits (reading and checking the files), then --batches training batches of --batch samples \
            in a shuffled epoch order, as the trainer asks for them. The language-model task needs --corpus and is \
            left out.
            """)

    @Option(help: "Comma-separated tasks (default: every task but lm).")
    var tasks: String?

    @Option(help: "Samples per batch.")
    var batch: Int = 32

    @Option(help: "Batches timed per task.")
    var batches: Int = 200

    @Option(help: "Threads (the synthetic generators run in parallel).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @OptionGroup var data: DataDirectoryOption

    func run() throws {
        guard batch >= 1 && batches >= 1 && threads >= 1 else {
            throw UserError(what: "--batch, --batches, --threads", why: "must be ≥ 1")
        }
        Parallel.setThreadCount(threads)
        let directory = try data.checked()
        let chosen = try (tasks?.split(separator: ",").map { try TaskRegistry.task(String($0).trimmingCharacters(in: .whitespaces)) }
                          ?? TaskRegistry.all.filter { !$0.isCausal })
        // The first column fits the longest name listed (never cut: `pathfinder-intermediate`).
        let width = max(10, chosen.map(\.name.count).max() ?? 0)
        func column(_ name: String) -> String { name.padding(toLength: width, withPad: " ", startingAt: 0) }
        print(column("task") + "      N      load s   batches/s   samples/s   ms/batch   (batch \(batch), \(batches) batches, \(threads) threads)")
        for task in chosen where !task.isCausal {
            if let p = task as? any PreparableTask, !p.dataState(in: directory).isReady {
                print("\(column(task.name))  not prepared (longmixer data prepare \(task.name))")
                continue
            }
            let length = task.defaultLength ?? 1024
            var options = TaskDataOptions(length: length, seed: 1, dataDirectory: directory.path)
            if !task.dataOptions.contains(.dataDirectory) {
                options.dataDirectory = nil
                options.splitSizes = SplitSizes(train: max(batch * batches, 1000), validation: 100, test: 100)
            }
            let clock = ContinuousClock()
            var made: TaskData?
            let load = clock.measure { made = try? task.makeData(options, trainSamples: nil) }
            guard let d = made else {
                _ = try task.makeData(options, trainSamples: nil)          // rethrows the error
                continue
            }
            var order = EpochOrder(count: d.train.count, seed: 1)
            let perEpoch = max(1, d.train.count / batch)
            var checksum = 0
            let elapsed = clock.measure {
                for k in 0..<batches {
                    let start = (k % perEpoch) * batch
                    let b = d.train.batch(samples: order.samples(epoch: k / perEpoch, positions: start..<min(start + batch, d.train.count)))
                    checksum &+= b.size
                }
            }
            let s = seconds(elapsed)
            print(String(format: "%@  %5d  %8.2f  %10.1f  %10.0f  %9.3f", column(task.name), length,
                         seconds(load), Double(batches) / s, Double(checksum) / s, 1000 * s / Double(batches)))
        }
    }

    func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }
}
