import Foundation
import Testing
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerMPI
@testable import LongMixerTraining
import LongMixerTestSupport

/// Data-parallel training: 2 ranks give the gradients and weights of one process with the whole batch,
/// and the same ones again when run twice.
@Suite("Distributed training")
struct DistributedTrainingTests {
    static let isWorker = ProcessInfo.processInfo.environment["LONGMIXER_MPI_WORKER"] == "1"

    @Test("2 ranks with batch 4 each = 1 process with batch 8 (weights and first gradients ≤ 1e-6 relative)", .enabled(if: !isWorker))
    func twoRanksEqualOneProcess() throws {
        let output = try MPILauncher.run(ranks: 2, filter: "DistributedTrainingTests/equivalenceWorker")
        #expect(output.status == 0, "\(output.text)")
        #expect(output.text.contains("rank 0 of 2 equivalent") && output.text.contains("rank 1 of 2 equivalent"), "\(output.text)")
    }

    /// A tiny Paramixer on Adding with `batch` sequences per step (the global batch).
    static func configuration(batch: Int, steps: Int) throws -> RunConfiguration {
        var s = RunSettings()
        s.task = "adding"; s.model = "paramixer"; s.length = 16
        s.modelOptions.dimensions = 8; s.modelOptions.hidden = 8
        s.batchSize = batch; s.steps = steps; s.trainSize = 64; s.validationSize = 8; s.testSize = 8
        return try RunConfiguration.resolve(s)
    }

    /// Trains `steps` steps; the parameters by name after it, and their last gradients.
    static func train(steps: Int, _ communicator: any Communicator) throws -> [(name: String, value: Tensor, grad: Tensor?)] {
        let c = try configuration(batch: 8, steps: steps)
        let parts = try TrainingRun.build(c, processes: communicator.size)
        let trainer = try TrainingRun.makeTrainer(c, parts, runDirectory: nil, reporter: SilentReporter(), communicator: communicator)
        try trainer.run()
        return parts.built.model.namedParameters().map { ($0.0, $0.1.value, $0.1.grad) }
    }

    @Test(.enabled(if: isWorker))
    func equivalenceWorker() throws {
        let world = try MPICommunicator.world()
        #expect(world.size == 2)
        Parallel.setThreadCount(1)
        for steps in [1, 5] {
            let single = try Self.train(steps: steps, SingleProcess())
            let distributed = try Self.train(steps: steps, world)
            let again = try Self.train(steps: steps, world)
            var weightError: Float = 0, gradientError: Float = 0
            for (d, (s, a)) in zip(distributed, zip(single, again)) {
                #expect(d.name == s.name)
                let e = relativeError(d.value, s.value)
                weightError = max(weightError, e)
                #expect(e <= 1e-6, "after \(steps) steps, \(d.name): weights differ by \(e)")
                if let dg = d.grad, let sg = s.grad {
                    let g = relativeError(dg, sg)
                    gradientError = max(gradientError, g)
                    // After several steps the gradients are taken at weights that already differ by rounding.
                    #expect(g <= (steps == 1 ? 1e-6 : 1e-5), "step \(steps), \(d.name): gradients differ by \(g)")
                } else {
                    #expect(d.grad == nil && s.grad == nil, "\(d.name): a gradient on one side only")
                }
                // A fixed number of ranks gives the same numbers every time.
                #expect(relativeError(d.value, a.value) == 0, "\(d.name): two runs of 2 ranks differ")
            }
            print("rank \(world.rank): \(steps) steps: max relative error weights \(weightError), gradients \(gradientError)")
        }
        print("rank \(world.rank) of \(world.size) equivalent")
    }
}

/// Evaluation split over 2 ranks: every rank gets one process's result, bit for bit.
@Suite("Distributed evaluation")
struct DistributedEvaluationTests {
    @Test("2 ranks evaluate their shares of the batches = 1 process (regression, classes, binary with ROC AUC)",
          .enabled(if: !DistributedTrainingTests.isWorker))
    func twoRanksEqualOneProcess() throws {
        let output = try MPILauncher.run(ranks: 2, filter: "DistributedEvaluationTests/evaluationWorker")
        #expect(output.status == 0, "\(output.text)")
        #expect(output.text.contains("rank 0 of 2 evaluated alike") && output.text.contains("rank 1 of 2 evaluated alike"), "\(output.text)")
    }

    /// `base` with binary labels: 1 where the first target value exceeds `threshold`.
    struct BinaryLabels: BatchSource {
        let base: any BatchSource
        let threshold: Float
        var count: Int { base.count }
        var length: Int { base.length }
        func relabelled(_ b: Batch) -> Batch {
            guard case .values(let y) = b.targets else { return b }
            let width = y.count / b.size
            return Batch(input: b.input, targets: .classes(IntTensor(shape: [b.size], scalars: (0..<b.size).map { y.scalars[$0 * width] > threshold ? 1 : 0 })))
        }
        func batch(indices: Range<Int>) -> Batch { relabelled(base.batch(indices: indices)) }
        func batch(samples: [Int]) -> Batch { relabelled(base.batch(samples: samples)) }
    }

    @Test(.enabled(if: DistributedTrainingTests.isWorker))
    func evaluationWorker() throws {
        let world = try MPICommunicator.world()
        #expect(world.size == 2)
        Parallel.setThreadCount(1)
        for task in ["adding", "order"] {
            var settings = RunSettings()
            settings.task = task; settings.model = "paramixer"; settings.length = 16
            settings.modelOptions.dimensions = 8; settings.modelOptions.hidden = 8
            settings.batchSize = 4; settings.steps = 1; settings.trainSize = 8; settings.validationSize = 8; settings.testSize = 23
            let parts = try TrainingRun.build(try RunConfiguration.resolve(settings))
            let model = parts.built.model
            var cases: [(String, any BatchSource, TaskObjective)] = [(task, parts.data.test, parts.task.objective)]
            if task == "adding", case .values(let y) = parts.data.test.batch(indices: 0..<23).targets {
                // Labels: above the median sum, so both classes are there.
                cases.append(("adding as binary", BinaryLabels(base: parts.data.test, threshold: y.scalars.sorted()[11]), .binary))
            }
            for (name, source, objective) in cases {
                // Batches of 4 and 5 of 23 sequences: 6 and 5 batches, the last one short; rank 1 has one batch fewer with 5.
                for batchSize in [4, 5, 23] {
                    let single = try evaluate(model, on: source, objective: objective, batchSize: batchSize)
                    var calls: [(Int, Int)] = []
                    let split = try evaluate(model, on: source, objective: objective, batchSize: batchSize, communicator: world) { calls.append(($0, $1)) }
                    #expect(split == single, "\(name), batch \(batchSize): \(split) on 2 ranks, \(single) on one")
                    #expect(split.count == 23)
                    if case .binary = objective { #expect(split.rocAUC != nil, "\(name): no ROC AUC") }
                    let batches = (23 + batchSize - 1) / batchSize
                    #expect(calls.map(\.0) == (0..<((batches + 1) / 2)).map { min(2 * ($0 + 1), batches) }, "\(name), batch \(batchSize): progress \(calls)")
                    #expect(calls.allSatisfy { $0.1 == batches })
                }
            }
        }
        print("rank \(world.rank) of \(world.size) evaluated alike")
    }

    @Test("a stop signal on one rank during a validation stops every rank at the same step", .enabled(if: !DistributedTrainingTests.isWorker))
    func signalDuringValidation() throws {
        let output = try MPILauncher.run(ranks: 2, filter: "DistributedEvaluationTests/signalWorker", timeout: 60)
        #expect(output.status == 0, "\(output.text)")
        #expect(output.text.contains("rank 0 stopped at step 10") && output.text.contains("rank 1 stopped at step 10"), "\(output.text)")
    }

    /// Latches SIGTERM once the first validation round was reported.
    final class SignalAfterValidationStarts: TrainingReporter {
        var signal: Int32 = 0
        func report(_ event: TrainingEvent) {
            if case .evaluating(split: .validation, _, _) = event { signal = SIGTERM }
        }
    }

    @Test(.enabled(if: DistributedTrainingTests.isWorker))
    func signalWorker() throws {
        let world = try MPICommunicator.world()
        Parallel.setThreadCount(1)
        var settings = RunSettings()
        settings.task = "adding"; settings.model = "paramixer"; settings.length = 16
        settings.modelOptions.dimensions = 8; settings.modelOptions.hidden = 8
        // 3 validation batches: 2 rounds on 2 ranks, the signal comes after the first.
        settings.batchSize = 8; settings.steps = 30; settings.evaluationInterval = 10
        settings.trainSize = 64; settings.validationSize = 24; settings.testSize = 8
        let c = try RunConfiguration.resolve(settings)
        let parts = try TrainingRun.build(c, processes: world.size)
        // Rank 1 gets the signal; rank 0 learns of it only through the agreement.
        let signalling = SignalAfterValidationStarts()
        let trainer = try TrainingRun.makeTrainer(c, parts, runDirectory: nil, reporter: world.rank == 1 ? signalling : SilentReporter(),
                                                  communicator: world)
        trainer.stopSignal = { signalling.signal }
        do {
            try trainer.run()
            Issue.record("rank \(world.rank): the run was not stopped")
        } catch let stop as TrainingInterrupted {
            #expect(stop.signal == SIGTERM)
            print("rank \(world.rank) stopped at step \(stop.step)")
        }
    }
}

/// `mpirun … longmixer train --distributed`, end to end.
@Suite("longmixer train --distributed (CLI)", .serialized)
struct DistributedCommandTests {
    static let tiny = ["--task", "adding", "--model", "paramixer", "--length", "16", "--dimensions", "8", "--hidden", "8",
                       "--batch-size", "4", "--train-size", "64", "--val-size", "16", "--test-size", "16", "--threads", "1"]

    static var mpirunOptions: [String] { ["--oversubscribe"] + (getuid() == 0 ? ["--allow-run-as-root"] : []) }

    /// `mpirun -np ranks [options] longmixer arguments…`, waited for.
    static func mpirun(_ ranks: Int, _ arguments: [String], options: [String] = [], prefix: [String] = [], timeout: Double = 300) throws -> CLIResult {
        let r = try ChildProcess.run(prefix.first ?? "mpirun",
                                     Array(prefix.dropFirst()) + (prefix.isEmpty ? [] : ["mpirun"])
                                        + ["-np", String(ranks)] + mpirunOptions + options + [LongMixerCLI.executable.path] + arguments,
                                     timeout: timeout)
        return CLIResult(status: r.status, stdout: String(decoding: r.standardOutput, as: UTF8.self),
                         stderr: String(decoding: r.standardError, as: UTF8.self))
    }

    @Test func refusedOutsideMPIRun() throws {
        let dir = try LongMixerCLI.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try LongMixerCLI.run(["train", "--distributed"] + Self.tiny + ["--steps", "2"], in: dir)
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderr == "error: --distributed: this process was not started by mpirun; start every process with `mpirun -np K longmixer train … --distributed`, or train without --distributed\n")
        let e = try LongMixerCLI.run(["evaluate", dir.path, "--distributed"], in: dir)
        #expect(e.status == 2, "\(e.stderr)")
        #expect(e.stderr == "error: --distributed: this process was not started by mpirun; start every process with `mpirun -np K longmixer evaluate … --distributed`, or evaluate without --distributed\n")
    }

    /// The pid of rank `rank`, a child of `mpirun`.
    static func rankProcess(_ rank: Int, of mpirun: Int32) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for entry in entries {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, Int32(fields[1]) == mpirun,
                  let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            if environment.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }) { return pid }
        }
        return nil
    }

    /// `mpirun -np 2 longmixer arguments…` (JSON progress), `signal` sent to rank 1 once rank 0 reported `step`.
    static func runTwoRanks(_ arguments: [String], atStep step: Int, signal: Int32) throws
        -> (status: Int32, reason: Process.TerminationReason, output: String, actedAt: Date?) {
        try LongMixerCLI.runReadingProgress(URL(fileURLWithPath: "/usr/bin/env"),
                                            ["mpirun", "-np", "2"] + mpirunOptions + [LongMixerCLI.executable.path] + arguments) { pid, seen in
            guard seen >= step, let rank1 = rankProcess(1, of: pid) else { return false }
            kill(rank1, signal)
            return true
        }
    }

    @Test("a rank killed: the job stops in bounded time, --resume finishes")
    func rankKilledThenResumed() throws {
        let dir = try LongMixerCLI.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run")
        let arguments = ["train", "--distributed", "--json", "--output", run.path] + Self.tiny
            + ["--steps", "400", "--checkpoint-interval", "5", "--eval-interval", "100", "--log-interval", "1"]
        let (status, _, _, killedAt) = try Self.runTwoRanks(arguments, atStep: 20, signal: SIGKILL)
        let stopSeconds = killedAt.map { Date().timeIntervalSince($0) } ?? .infinity
        print("rank 1 killed at step 20: mpirun ended \(String(format: "%.2f", stopSeconds)) s later, status \(status)")
        try #require(killedAt != nil, "rank 1 was not found or the run ended before step 20")
        #expect(status != 0)
        #expect(stopSeconds < 30, "the job took \(stopSeconds) s to stop after a rank died")
        #expect(!FileManager.default.fileExists(atPath: run.appendingPathComponent("summary.json").path))
        let stoppedAt = CheckpointStore(runDirectory: run).list(.last).first?.step ?? 0
        #expect(stoppedAt >= 15 && stoppedAt < 400, "newest checkpoint \(stoppedAt)")

        let resumed = try Self.mpirun(2, ["train", "--resume", run.path, "--distributed"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stdout.contains("resuming after step \(stoppedAt)"), "\(resumed.stdout)")
        let summary = try JSONDecoder().decode(TrainingSummary.self, from: Data(contentsOf: run.appendingPathComponent("summary.json")))
        #expect(summary.steps == 400 && summary.samplesSeen == 400 * 8 && summary.processes == 2)
    }

    @Test("the ranks' shared validation and test = `longmixer evaluate` of the run by one process and by 2, bit for bit")
    func evaluationSharedOverRanks() throws {
        let dir = try LongMixerCLI.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run")
        // 23 test sequences in evaluation batches of 4 (the per-process batch): 6 batches, rank 0 scores 0, 2, 4, rank 1 1, 3, 5.
        let arguments = ["train", "--distributed", "--quiet", "--output", run.path] + Self.tiny
            + ["--test-size", "23", "--steps", "30", "--eval-interval", "10"]
        let r = try Self.mpirun(2, arguments)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        let summary = try JSONDecoder().decode(TrainingSummary.self, from: Data(contentsOf: run.appendingPathComponent("summary.json")))
        #expect(summary.processes == 2 && summary.test.count == 23)
        func evaluated(_ split: String, _ checkpoint: String, ranks: Int = 1) throws -> EvaluationResult {
            let arguments = ["evaluate", run.path, "--split", split, "--checkpoint", checkpoint, "--json"]
            let e = ranks == 1 ? try LongMixerCLI.run(arguments, in: dir) : try Self.mpirun(ranks, arguments + ["--distributed", "--threads", "1"])
            try #require(e.status == 0, "\(e.stderr)")
            // One JSON line, from rank 0 only.
            #expect(e.stdout.split(separator: "\n").count == 1, "\(e.stdout)")
            struct Line: Decodable { let result: EvaluationResult }
            let decoder = JSONDecoder()
            decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            return try decoder.decode(Line.self, from: Data(e.stdout.utf8)).result
        }
        #expect(try evaluated("test", "best") == summary.test)
        #expect(try evaluated("test", "last") == summary.testLast)
        #expect(try evaluated("validation", "last") == summary.validation)
        #expect(try evaluated("test", "best", ranks: 2) == summary.test)
        #expect(try evaluated("validation", "last", ranks: 2) == summary.validation)
        // Rank 0 reads the run directory; a refusal there stops every rank with one error.
        let refused = try Self.mpirun(2, ["evaluate", dir.appendingPathComponent("missing").path, "--distributed"])
        #expect(refused.status == 2 && refused.stderr.components(separatedBy: "error:").count == 2, "\(refused.stderr)")
    }

    @Test("SIGTERM to one rank: every rank stops at the same step with a checkpoint; resumed by one process")
    func signalAgreedAndResumedWithOtherK() throws {
        let dir = try LongMixerCLI.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run")
        let arguments = ["train", "--distributed", "--json", "--output", run.path] + Self.tiny
            + ["--steps", "400", "--checkpoint-interval", "50", "--eval-interval", "100", "--log-interval", "1"]
        let (status, _, text, signalledAt) = try Self.runTwoRanks(arguments, atStep: 20, signal: SIGTERM)
        try #require(signalledAt != nil, "rank 1 was not found or the run ended before step 20")
        #expect(status == 128 + SIGTERM, "status \(status)")
        #expect(text.contains("\"event\":\"checkpoint\""), "\(text.suffix(2000))")
        let stoppedAt = CheckpointStore(runDirectory: run).list(.last).first?.step ?? 0
        #expect(stoppedAt >= 20 && stoppedAt < 400, "newest checkpoint \(stoppedAt)")
        // The sample order is global: one process goes on with the whole batch of 8.
        let resumed = try LongMixerCLI.run(["train", "--resume", run.path], in: dir)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stdout.contains("resuming after step \(stoppedAt)"), "\(resumed.stdout)")
        let summary = try JSONDecoder().decode(TrainingSummary.self, from: Data(contentsOf: run.appendingPathComponent("summary.json")))
        #expect(summary.steps == 400 && summary.samplesSeen == 400 * 8)
    }
}

/// Two "machines" as network namespaces joined by a veth pair: mpirun starts the second one's
/// daemon through `ip netns exec` (as it would through ssh), the ranks talk TCP over the veth only,
/// and the run ends with the weights of 2 ranks on one machine.
@Suite("longmixer train --distributed across network namespaces", .serialized)
struct MultiHostTests {
    static let suffix = String(getpid())
    static let namespaces = ["lmA\(suffix)", "lmB\(suffix)"]
    static let addresses = ["10.77.0.1", "10.77.0.2"]

    @discardableResult
    static func ip(_ arguments: [String]) throws -> ChildProcess.Output {
        try ChildProcess.run("ip", arguments, timeout: 30)
    }

    static func removeNamespaces() {
        for ns in namespaces { _ = try? ip(["netns", "del", ns]) }
    }

    /// Why namespaces cannot be made here (nil: they can).
    static let unavailable: String? = {
        guard getuid() == 0 else { return "network namespaces need root" }
        guard let probe = try? ip(["netns", "add", "lmprobe\(suffix)"]) else { return "`ip` (iproute2) is not installed" }
        guard probe.status == 0 else { return "cannot make a network namespace: \(probe.lastErrorLine)" }
        _ = try? ip(["netns", "del", "lmprobe\(suffix)"])
        return nil
    }()

    /// Two namespaces with 10.77.0.1/24 and 10.77.0.2/24 on the two ends of a veth pair.
    static func makeNamespaces() throws {
        removeNamespaces()
        let (a, b) = (namespaces[0], namespaces[1])
        let links = ["vA\(suffix)", "vB\(suffix)"]
        for command in [["netns", "add", a], ["netns", "add", b],
                        ["link", "add", links[0], "type", "veth", "peer", "name", links[1]],
                        ["link", "set", links[0], "netns", a], ["link", "set", links[1], "netns", b],
                        ["-n", a, "addr", "add", addresses[0] + "/24", "dev", links[0]],
                        ["-n", b, "addr", "add", addresses[1] + "/24", "dev", links[1]],
                        ["-n", a, "link", "set", links[0], "up"], ["-n", b, "link", "set", links[1], "up"],
                        ["-n", a, "link", "set", "lo", "up"], ["-n", b, "link", "set", "lo", "up"]] {
            let r = try ip(command)
            guard r.status == 0 else { throw UserError(.runtime, what: "ip \(command.joined(separator: " "))", why: r.lastErrorLine) }
        }
    }

    @Test("2 hosts (namespaces, TCP over veth) = 2 ranks on one host",
          .enabled(if: unavailable == nil, Comment(rawValue: unavailable ?? "")))
    func twoHostsEqualOneHost() throws {
        let dir = try LongMixerCLI.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Self.makeNamespaces()
        defer { Self.removeNamespaces() }
        // mpirun's "ssh": run the daemon's command line in the host's namespace.
        let agent = dir.appendingPathComponent("netns-agent")
        try """
            #!/bin/sh
            while [ "${1#-}" != "$1" ]; do shift; done
            case "$1" in
              \(Self.addresses[0])) ns=\(Self.namespaces[0]) ;;
              \(Self.addresses[1])) ns=\(Self.namespaces[1]) ;;
              *) echo "unknown host $1" >&2; exit 1 ;;
            esac
            shift
            exec ip netns exec "$ns" /bin/sh -c "$*"
            """.write(to: agent, atomically: true, encoding: .utf8)
        chmod(agent.path, 0o755)
        let train = ["train", "--distributed", "--quiet"] + DistributedCommandTests.tiny + ["--steps", "30", "--eval-interval", "15"]
        let hosts = ["--host", Self.addresses.map { $0 + ":1" }.joined(separator: ","),
                     "--mca", "plm_rsh_agent", agent.path, "--mca", "plm_rsh_no_tree_spawn", "1",
                     "--mca", "pml", "ob1", "--mca", "btl", "tcp,self",
                     "--mca", "btl_tcp_if_include", "10.77.0.0/24", "--mca", "oob_tcp_if_include", "10.77.0.0/24"]
        let multi = try DistributedCommandTests.mpirun(2, train + ["--output", dir.appendingPathComponent("multi").path], options: hosts,
                                                       prefix: ["ip", "netns", "exec", Self.namespaces[0]], timeout: 300)
        #expect(multi.status == 0, "\(multi.stdout)\n\(multi.stderr)")
        let single = try DistributedCommandTests.mpirun(2, train + ["--output", dir.appendingPathComponent("single").path])
        #expect(single.status == 0, "\(single.stderr)")
        let a = try SafeTensors.load(from: dir.appendingPathComponent("multi/model.safetensors"))
        let b = try SafeTensors.load(from: dir.appendingPathComponent("single/model.safetensors"))
        #expect(a.keys.sorted() == b.keys.sorted())
        for (name, t) in a {
            guard case .float(let x) = t, case .float(let y)? = b[name] else { continue }
            // Two ranks' sums are the same in any transport: the weights are bit for bit the same.
            #expect(relativeError(x, y) == 0, "\(name)")
        }
    }
}
