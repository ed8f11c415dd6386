import Foundation
import Testing
import LongMixerCore
import LongMixerNN
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
