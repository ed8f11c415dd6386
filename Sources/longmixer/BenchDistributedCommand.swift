import ArgumentParser
import Dispatch
import Foundation
import LongMixerCore
import LongMixerTraining
import LongMixerBenchmarks

/// `longmixer bench distributed`: `mpirun -np K longmixer train … --distributed` per model and K.
struct BenchDistributedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distributed",
        abstract: "Data-parallel training over MPI: samples/s for K processes, all-reduce time per step and its share, and an estimate for 8–64 machines.",
        discussion: """
            Runs `mpirun -np K longmixer train --task adding --model M --length N --steps S --batch-size B --distributed` \
            for every model and K, each process with cores ÷ K threads (at least 1), and reads rank 0's summary: samples/s of \
            the training steps (validation excluded), step time and the seconds in the gradient all-reduce (waiting for \
            slower ranks included). `longmixer bench report` turns the JSON into a section of docs/benchmarks.md with a \
            ring all-reduce estimate for 8–64 machines like this one. Needs a build with LONGMIXER_MPI=1 and mpirun in PATH.
            """)

    @Option(help: "Models, comma-separated.")
    var models: String = "paramixer,permuteformer"

    @Option(parsing: .unconditional, help: "Sequence length N.")
    var length: Int = 4096

    @Option(help: "Process counts K, comma-separated.")
    var processes: String = "1,2,4"

    @Option(parsing: .unconditional, help: "Sequences per process and step.")
    var batchSize: Int = 2

    @Option(parsing: .unconditional, help: "Training steps per run (the first is included).")
    var steps: Int = 8

    @Option(help: "Write the results as JSON here (e.g. docs/benchmarks/distributed-<machine>-<date>.json).")
    var json: String?

    @Option(help: .hidden)
    var allReduceProbe: Int?

    /// Under mpirun: the median seconds of one all-reduce of `bytes` bytes, the processes started
    /// together by a small all-reduce before each (rank 0 prints it).
    static func probe(bytes: Int) throws {
        #if LONGMIXER_MPI
        try DistributedRun.checkLaunched()
        let world = try DistributedRun.world(threadsGiven: true)
        var buffer = [Float](repeating: 1, count: max(1, bytes / 4))
        var sync = [Double](repeating: 0, count: 1)
        var times: [Double] = []
        for round in 0..<25 {
            try sync.withUnsafeMutableBufferPointer { try world.allReduceSum($0) }
            let start = DispatchTime.now().uptimeNanoseconds
            try buffer.withUnsafeMutableBufferPointer { try world.allReduceSum($0) }
            if round >= 5 { times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9) }
        }
        if world.isRoot { print(times.sorted()[times.count / 2]) }
        #endif
    }

    func run() throws {
        if let bytes = allReduceProbe { return try Self.probe(bytes: bytes) }
        #if !LONGMIXER_MPI
        throw UserError(what: "bench distributed", why: "this longmixer was built without MPI",
                        remedy: "build it with `LONGMIXER_MPI=1 swift build -c release` (needs libopenmpi-dev)")
        #else
        let modelList = models.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let counts = try processes.split(separator: ",").map { text -> Int in
            guard let k = Int(text.trimmingCharacters(in: .whitespaces)), (1...256).contains(k) else {
                throw UserError(what: "--processes", value: processes, why: "must be a comma-separated list of counts in 1...256", remedy: "e.g. --processes 1,2,4")
            }
            return k
        }
        for (value, name, limit) in [(length, "--length", 1 << 24), (batchSize, "--batch-size", 1 << 16), (steps, "--steps", 1 << 20)]
            where !(1...limit).contains(value) {
            throw UserError(what: name, value: String(value), why: "must be in 1...\(limit)")
        }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let machine = MachineInfo.current()
        var rows: [DistributedBenchReport.Row] = []
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-bench-distributed-\(getpid())")
        defer { try? FileManager.default.removeItem(at: scratch) }
        for model in modelList {
            for k in counts {
                let threads = max(1, cores / k)
                let output = scratch.appendingPathComponent("\(model)-\(k)")
                let train = ["train", "--task", "adding", "--model", model, "--length", String(length), "--steps", String(steps),
                             "--batch-size", String(batchSize), "--train-size", String(steps * batchSize * k), "--val-size", "2",
                             "--test-size", "2", "--eval-interval", String(steps), "--threads", String(threads), "--quiet",
                             "--output", output.path, "--distributed"]
                let r = try ChildProcess.run("mpirun", ["-np", String(k), "--oversubscribe"] + (getuid() == 0 ? ["--allow-run-as-root"] : [])
                                             + [executable] + train, timeout: 3600)
                guard r.status == 0 else {
                    throw UserError(.runtime, what: "mpirun -np \(k) longmixer train --model \(model)", value: String(r.status),
                                    why: r.lastErrorLine, remedy: "run it by hand to see the whole output")
                }
                let summary = try JSONDecoder().decode(TrainingSummary.self, from: Data(contentsOf: output.appendingPathComponent("summary.json")))
                var alone: Double? = nil
                if k > 1 {
                    let p = try ChildProcess.run("mpirun", ["-np", String(k), "--oversubscribe"] + (getuid() == 0 ? ["--allow-run-as-root"] : [])
                                                 + [executable, "bench", "distributed", "--all-reduce-probe", String(4 * summary.parameterCount)],
                                                 timeout: 600)
                    alone = Double(String(decoding: p.standardOutput, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
                }
                let row = DistributedBenchReport.Row(
                    model: model, length: length, processes: k, threadsPerProcess: threads, batchPerProcess: batchSize, steps: summary.steps,
                    samplesPerSecond: summary.trainSamplesPerSecond, stepSeconds: summary.trainingSeconds / Double(max(summary.steps, 1)),
                    allReduceSecondsPerStep: (summary.allReduceSeconds ?? 0) / Double(max(summary.steps, 1)),
                    gradientBytes: 4 * summary.parameterCount, allReduceAloneSeconds: alone)
                rows.append(row)
                print("\(model) N=\(length) K=\(k) threads=\(threads): " + String(format: "%.2f samples/s, step %.1f ms, all-reduce %.2f ms/step (alone %.3f ms)",
                      row.samplesPerSecond, row.stepSeconds * 1000, row.allReduceSecondsPerStep * 1000, (alone ?? 0) * 1000))
            }
        }
        let command = (["longmixer"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        #if DEBUG
        let build = "debug build (LongMixerCore, NN and Data at -O, the model and training code unoptimised)"
        #else
        let build = "release build"
        #endif
        let report = DistributedBenchReport(command: command, machine: machine, build: build, rows: rows)
        if let json {
            try writeBenchmarkJSON(report, to: json)
            print("wrote \(json)")
        }
        #endif
    }
}
