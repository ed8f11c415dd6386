import Foundation
import LongMixerCore

/// `longmixer bench distributed`: data-parallel training throughput with K processes (`mpirun -np K
/// longmixer train … --distributed`), the gradient all-reduce's time per step and share, and an
/// estimate for 8–64 machines from the measured compute time and gradient size.
public struct DistributedBenchReport: Codable, Sendable {
    public struct Row: Codable, Sendable {
        public var model: String
        public var length: Int
        public var processes: Int
        public var threadsPerProcess: Int
        public var batchPerProcess: Int
        public var steps: Int
        /// Global samples per second of training steps (rank 0's clock, evaluation excluded).
        public var samplesPerSecond: Double
        public var stepSeconds: Double
        /// Seconds per step rank 0 spent in the gradient all-reduce, waiting for slower ranks included.
        public var allReduceSecondsPerStep: Double
        /// Bytes all-reduced per step (the gradients, 4 bytes per parameter).
        public var gradientBytes: Int
        /// Median seconds of one all-reduce of `gradientBytes` by the same K processes alone, started
        /// together (no compute, no waiting): the communication itself.
        public var allReduceAloneSeconds: Double?

        public init(model: String, length: Int, processes: Int, threadsPerProcess: Int, batchPerProcess: Int, steps: Int,
                    samplesPerSecond: Double, stepSeconds: Double, allReduceSecondsPerStep: Double, gradientBytes: Int,
                    allReduceAloneSeconds: Double?) {
            self.model = model; self.length = length; self.processes = processes; self.threadsPerProcess = threadsPerProcess
            self.batchPerProcess = batchPerProcess; self.steps = steps; self.samplesPerSecond = samplesPerSecond
            self.stepSeconds = stepSeconds; self.allReduceSecondsPerStep = allReduceSecondsPerStep; self.gradientBytes = gradientBytes
            self.allReduceAloneSeconds = allReduceAloneSeconds
        }
    }
    public var command: String
    public var machine: MachineInfo
    /// How the measured binary was built (a debug build runs the model code unoptimised).
    public var build: String?
    public var distributedRows: [Row]

    public init(command: String, machine: MachineInfo, build: String, rows: [Row]) {
        self.command = command
        self.machine = machine
        self.build = build
        self.distributedRows = rows
    }

    /// The ring all-reduce cost model: 2(K−1) messages of bytes/K each, every one paying the latency.
    public static func ringSeconds(bytes: Int, machines k: Int, bandwidth: Double, latency: Double) -> Double {
        guard k > 1 else { return 0 }
        return 2 * Double(k - 1) * latency + 2 * Double(k - 1) / Double(k) * Double(bytes) / bandwidth
    }

    /// Links of the estimate: name, bytes per second actually carried (90 % of the line rate), latency per message.
    static let networks: [(name: String, bandwidth: Double, latency: Double)] = [
        ("10 GbE", 0.9 * 10e9 / 8, 30e-6), ("25 GbE", 0.9 * 25e9 / 8, 20e-6), ("100 Gb/s", 0.9 * 100e9 / 8, 5e-6),
    ]

    func measuredTable() -> TextTable {
        var t = TextTable(headers: ["model", "N", "processes K", "threads/process", "batch/process", "samples/s", "× K = 1", "step ms",
                                    "all-reduce ms/step", "share", "of which alone ms", "alone share", "gradient MiB"])
        for r in distributedRows {
            let one = distributedRows.first { $0.model == r.model && $0.length == r.length && $0.processes == 1 }
            t.append([r.model, "\(r.length)", "\(r.processes)", "\(r.threadsPerProcess)", "\(r.batchPerProcess)",
                      formatNumber(r.samplesPerSecond, decimals: 2),
                      one.map { formatNumber(r.samplesPerSecond / $0.samplesPerSecond, decimals: 2) + "×" } ?? "–",
                      formatNumber(r.stepSeconds * 1000, decimals: 1),
                      r.processes == 1 ? "–" : formatNumber(r.allReduceSecondsPerStep * 1000, decimals: 2),
                      r.processes == 1 ? "–" : formatNumber(100 * r.allReduceSecondsPerStep / r.stepSeconds, decimals: 1) + " %",
                      r.processes == 1 ? "–" : r.allReduceAloneSeconds.map { formatNumber($0 * 1000, decimals: 3) } ?? "–",
                      r.processes == 1 ? "–" : r.allReduceAloneSeconds.map { formatNumber(100 * $0 / r.stepSeconds, decimals: 2) + " %" } ?? "–",
                      formatNumber(Double(r.gradientBytes) / 1_048_576, decimals: 3)])
        }
        return t
    }

    /// Machines like this one, one process each with all its cores: the K = 1 step time is the compute
    /// per step (weak scaling: the batch per machine stays), the ring all-reduce is added after it.
    func estimateTable() -> TextTable {
        let ks = [8, 16, 32, 64]
        var t = TextTable(headers: ["model", "N", "network"] + ks.map { "K = \($0): samples/s (efficiency)" })
        for r in distributedRows where r.processes == 1 {
            for net in Self.networks {
                var cells = [r.model, "\(r.length)", net.name]
                for k in ks {
                    let comm = Self.ringSeconds(bytes: r.gradientBytes, machines: k, bandwidth: net.bandwidth, latency: net.latency)
                    let step = r.stepSeconds + comm
                    cells.append(formatNumber(Double(k * r.batchPerProcess) / step, decimals: 1)
                                 + " (" + formatNumber(100 * r.stepSeconds / step, decimals: 1) + " %)")
                }
                t.append(cells)
            }
        }
        return t
    }

    static let reading = """
        All-reduce ms/step: rank 0's time in the gradient all-reduce of a training step, which includes waiting for \
        the slowest rank (on a shared machine, most of it); alone: the median of one all-reduce of the same bytes by \
        the same processes started together, the communication itself (shared memory on one machine). The waiting \
        is the imbalance of K processes sharing two loaded cores; between machines it is the straggler term the \
        estimate leaves out. The communication alone is under 1 % of a step here, and 0.7–1.8 % of Paramixer's \
        step at 10 GbE for 8–64 machines in the model below: overlapping it with the backward pass (bucketing) would not pay.
        """

    static let assumptions = """
        Estimate: every machine is this one (its K = 1 step time is the compute per step, measured with all its cores) and runs one \
        process; the batch per process stays (weak scaling); the gradients are all-reduced as one buffer after the backward pass \
        (no overlap, as implemented), by a ring: 2(K−1) messages of bytes/K, time 2(K−1)·α + 2(K−1)/K · bytes/β, with β 90 % of \
        the line rate and α the latency per message (30 µs on 10 GbE, 20 µs on 25 GbE, 5 µs on 100 Gb/s). Not modelled: stragglers \
        (the slowest machine sets every step), validation and test (split over the machines), rank 0's checkpoints (the others wait), \
        and data loading.
        """
}
