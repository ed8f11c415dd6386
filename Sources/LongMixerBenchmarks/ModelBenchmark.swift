import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData
import LongMixerTraining

// The engine behind every model benchmark (`bench scaling`, `bench tables`, `bench attention`,
// `bench paramixer`): models come from `ModelRegistry.build`, so Paramixer and the attention family
// run on the same stack for the same task shape, and the PyTorch twins come from the same
// configuration. At one shape every case runs once per round, the order reversed every other round,
// Swift and PyTorch calls alternating; comparisons are medians of per-round ratios, so load from
// other processes that hits one round hits both sides of its ratio.

/// One model of a benchmark: a registry model and its options.
public struct ModelBenchSpec: Sendable, Equatable {
    /// As printed: `transformer`, `paramixer (CHORD)`.
    public var label: String
    /// The registry name (`longmixer train --model`).
    public var model: String
    public var options: ModelOptions

    public init(label: String, model: String, options: ModelOptions = ModelOptions()) {
        self.label = label
        self.model = model
        self.options = options
    }
}

/// The inputs of one benchmark group: a task shape, its batches and its token ids.
public struct ModelBenchShape: Sendable {
    /// As printed and stored: `Text`, `N = 4096`.
    public var name: String
    public var shape: ModelTaskShape
    /// Sequences per forward call and per training step.
    public var forwardBatch: Int
    public var trainingBatch: Int
    /// Token ids are drawn from `tokenRange`; `cls` (when set) starts every sequence (each document of a pair).
    public var tokenRange: Range<Int>
    public var cls: Int?

    public init(name: String, shape: ModelTaskShape, forwardBatch: Int, trainingBatch: Int, tokenRange: Range<Int>, cls: Int? = nil) {
        self.name = name
        self.shape = shape
        self.forwardBatch = forwardBatch
        self.trainingBatch = trainingBatch
        self.tokenRange = tokenRange
        self.cls = cls
    }

    /// Positions per sample (both documents of a pair).
    public var positions: Int { shape.pair ? 2 * shape.length : shape.length }

    public var objective: TaskObjective {
        switch shape.objective {
        case .classes: return .classification(classes: shape.outputs)
        case .binary: return .binary
        case .regression: return .regression(outputs: shape.outputs, tolerance: 0)
        }
    }
}

/// Seconds per call of one case over the rounds.
public struct CaseTiming: Codable, Sendable, Equatable {
    public var median: Double
    public var lowerQuartile: Double
    public var upperQuartile: Double
    public var best: Double
    /// Best process CPU seconds of a call (all threads of the process that ran it).
    public var bestCPU: Double?
    /// Every wall-clock sample in round order: what paired ratios are computed from.
    public var samples: [Double]

    public init?(samples: [Double], cpu: [Double]? = nil) {
        guard let q = Quartiles(samples) else { return nil }
        median = q.median; lowerQuartile = q.lower; upperQuartile = q.upper
        best = samples.min()!
        bestCPU = cpu?.min()
        self.samples = samples
    }

    /// The same timing with every figure divided by `n` (per sequence of a batch of n).
    public func divided(by n: Int) -> CaseTiming {
        let d = Double(n)
        var t = self
        t.median /= d; t.lowerQuartile /= d; t.upperQuartile /= d; t.best /= d
        t.bestCPU = bestCPU.map { $0 / d }
        t.samples = samples.map { $0 / d }
        return t
    }
}

/// One model at one shape. Times are per call (a batch); `perSequence` divides them.
public struct ModelBenchRow: Codable, Sendable {
    public var group: String
    public var label: String
    public var model: String
    /// N per document.
    public var length: Int
    public var forwardBatch: Int
    public var trainingBatch: Int
    public var parameters: Int?
    /// Why the model did not run at this shape (too long for softmax, no such head, …).
    public var skipped: String?
    /// Forward: eval mode without a graph, on a twin of the model that the training steps leave unchanged.
    /// Training: train mode, loss, backward and one Adam step.
    public var forward: CaseTiming?
    public var training: CaseTiming?
    /// Bytes held in live tensors at the peak of one forward call and of one training step, counted
    /// from before the model was built: parameters, (gradients and Adam moments,) activations, temporaries.
    public var inferencePeakBytes: Int?
    public var trainingPeakBytes: Int?
    /// Model FLOPs of one sequence's forward pass (`Roofline`; a training step counts 3×).
    public var forwardFlops: Double?
    /// The same model in PyTorch, alternating with the Swift cases (nil: not asked).
    public var torchForward: CaseTiming?
    public var torchTraining: CaseTiming?
    public var torchError: String?

    public init(group: String, label: String, model: String, length: Int, forwardBatch: Int, trainingBatch: Int) {
        self.group = group; self.label = label; self.model = model; self.length = length
        self.forwardBatch = forwardBatch; self.trainingBatch = trainingBatch
    }

    /// Per-sequence timings.
    public var forwardPerSequence: CaseTiming? { forward?.divided(by: forwardBatch) }
    public var trainingPerSequence: CaseTiming? { training?.divided(by: trainingBatch) }
    public var torchForwardPerSequence: CaseTiming? { torchForward?.divided(by: forwardBatch) }
    public var torchTrainingPerSequence: CaseTiming? { torchTraining?.divided(by: trainingBatch) }
}

/// The per-round ratio a / b of two cases timed in the same rounds: median and quartiles. Both
/// samples of a pair ran seconds apart, so slow drifts of a shared machine cancel.
public func pairedRatio(_ a: [Double]?, _ b: [Double]?) -> Quartiles? {
    guard let a, let b else { return nil }
    return Quartiles(zip(a, b).filter { $0.1 > 0 }.map { $0.0 / $0.1 })
}

public enum ModelBenchmark {
    /// Runs `specs` at `group`: builds each model (a spec that cannot serve the shape, or for which
    /// `skip` gives a reason, becomes a skipped row), measures each one's memory alone, then times
    /// forward and training step for `rounds` rounds, with the PyTorch twins when `torch` is given.
    public static func run(_ group: ModelBenchShape, specs: [ModelBenchSpec], rounds: Int, torch: TorchWorker? = nil,
                           skip: (ModelBenchSpec) -> String? = { _ in nil }, log: (String) -> Void = { _ in }) throws -> [ModelBenchRow] {
        check(rounds >= 1, "rounds must be ≥ 1, got \(rounds)")
        var rows: [ModelBenchRow] = []
        var built: [(row: Int, inference: any SequenceModel, model: any SequenceModel, optimizer: Adam)] = []
        let forwardInput = input(group, batch: group.forwardBatch, seed: 11)
        let trainingInput = input(group, batch: group.trainingBatch, seed: 12)
        let targets = self.targets(group, batch: group.trainingBatch)
        let objective = group.objective
        var torchIDs: [Int: Int] = [:]

        for (i, spec) in specs.enumerated() {
            var row = ModelBenchRow(group: group.name, label: spec.label, model: spec.model, length: group.shape.length,
                                    forwardBatch: group.forwardBatch, trainingBatch: group.trainingBatch)
            if let reason = skip(spec) {
                row.skipped = reason
                rows.append(row)
                continue
            }
            let entry = try ModelRegistry.entry(spec.model)
            do { try ModelRegistry.check(entry, for: group.shape, taskName: group.name, options: spec.options) } catch let e as UserError {
                row.skipped = e.why
                rows.append(row)
                continue
            }
            // Memory first, each model alone: the peak of one call above what was live before the model was built.
            let before = TensorMemory.liveBytes
            var generator = RandomGenerator(seed: 42 + UInt64(i))
            let builtModel = try ModelRegistry.build(entry, for: group.shape, taskName: group.name, options: spec.options, generator: &generator)
            let model = builtModel.model
            let optimizer = Adam(parameters: model.parameters(), learningRate: 1e-4)
            row.parameters = model.parameterCount
            row.forwardFlops = flops(builtModel, shape: group.shape)
            TensorMemory.resetPeak()
            forward(model, forwardInput)
            row.inferencePeakBytes = TensorMemory.peakBytes - before
            TensorMemory.resetPeak()
            try trainingStep(model, optimizer, trainingInput, targets, objective)
            row.trainingPeakBytes = TensorMemory.peakBytes - before
            log("  \(group.name): \(spec.label) built, \(row.parameters!) parameters")
            if let torch {
                do {
                    let reply = try torch.request(torchBuildRequest(builtModel, group: group, seed: 42 + i), what: "\(spec.label) at \(group.name)")
                    torchIDs[rows.count] = reply["id"] as? Int
                } catch let e as UserError {
                    row.torchError = e.why
                    log("  \(group.name): \(spec.label) on the PyTorch side: \(e.why)")
                }
            }
            // Forward calls time a twin from the same seed, which the training steps leave unchanged: inference of
            // a deployed model, whose tables derived from its parameters stay valid between calls (one untimed
            // call makes them, as the memory pass above did for `model`).
            var twinGenerator = RandomGenerator(seed: 42 + UInt64(i))
            let twin = try ModelRegistry.build(entry, for: group.shape, taskName: group.name, options: spec.options,
                                               generator: &twinGenerator).model
            forward(twin, forwardInput)
            built.append((rows.count, twin, model, optimizer))
            rows.append(row)
        }

        // Cases in a fixed order: each model's forward, training step, then its PyTorch twin's.
        struct Case { var row: Int; var training: Bool; var torch: Bool; var body: () throws -> (wall: Double, cpu: Double) }
        var cases: [Case] = []
        for b in built {
            let (inference, model, optimizer) = (b.inference, b.model, b.optimizer)
            cases.append(Case(row: b.row, training: false, torch: false) { measure { forward(inference, forwardInput) } })
            cases.append(Case(row: b.row, training: true, torch: false) {
                try measure { try trainingStep(model, optimizer, trainingInput, targets, objective) }
            })
            if let torch, let id = torchIDs[b.row] {
                let label = rows[b.row].label
                for training in [false, true] {
                    cases.append(Case(row: b.row, training: training, torch: true) {
                        let r = try torch.request(["op": "time", "id": id, "case": training ? "train" : "forward"], what: "\(label) at \(group.name)")
                        return ((r["seconds"] as? Double) ?? .nan, (r["cpu"] as? Double) ?? .nan)
                    })
                }
            }
        }
        log("  \(group.name): \(cases.count) cases, \(rounds) round\(rounds == 1 ? "" : "s") …")
        var wall = [[Double]](repeating: [], count: cases.count), cpu = wall
        // A PyTorch call that fails ends that model's PyTorch side, not the benchmark: the Swift figures stand.
        var failedTorchRows = Set<Int>()
        for round in 0..<rounds {
            for i in (round % 2 == 0 ? Array(cases.indices) : cases.indices.reversed()) where !(cases[i].torch && failedTorchRows.contains(cases[i].row)) {
                do {
                    let s = try cases[i].body()
                    wall[i].append(s.wall); cpu[i].append(s.cpu)
                } catch let e as UserError where cases[i].torch {
                    failedTorchRows.insert(cases[i].row)
                    rows[cases[i].row].torchError = e.why
                    log("  \(group.name): \(rows[cases[i].row].label) on the PyTorch side: \(e.why)")
                }
            }
        }
        for (i, c) in cases.enumerated() where !(c.torch && failedTorchRows.contains(c.row)) {
            let t = CaseTiming(samples: wall[i], cpu: cpu[i])
            switch (c.torch, c.training) {
            case (false, false): rows[c.row].forward = t
            case (false, true): rows[c.row].training = t
            case (true, false): rows[c.row].torchForward = t
            case (true, true): rows[c.row].torchTraining = t
            }
        }
        if let torch { for id in torchIDs.values { _ = try? torch.request(["op": "drop", "id": id], what: "drop") } }
        return rows
    }

    /// Wall and process CPU seconds of one call of `body`.
    static func measure(_ body: () throws -> Void) rethrows -> (wall: Double, cpu: Double) {
        let c0 = processCPUSeconds(), t0 = BenchmarkClock.nanoseconds()
        try body()
        return (Double(BenchmarkClock.nanoseconds() - t0) * 1e-9, processCPUSeconds() - c0)
    }

    /// Seconds of CPU time used by this process (all threads).
    static func processCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    static func forward(_ model: any SequenceModel, _ input: SequenceInput) {
        model.train(false)
        withoutGradient { _ = model(input) }
    }

    static func trainingStep(_ model: any SequenceModel, _ optimizer: Adam, _ input: SequenceInput, _ targets: Targets,
                             _ objective: TaskObjective) throws {
        model.train(true)
        optimizer.zeroGradients()
        try objective.loss(model(input), targets).backward()
        optimizer.step()
    }

    /// Random token ids (or features) for `batch` samples of `group`, seeded.
    static func input(_ group: ModelBenchShape, batch: Int, seed: UInt64) -> SequenceInput {
        var g = RandomGenerator(seed: seed)
        let n = group.shape.length, width = group.positions
        switch group.shape.input {
        case .features(let f):
            return .features(Tensor.normal([batch, n, f], generator: &g))
        case .tokens:
            let range = group.tokenRange
            var ids = [Int32](); ids.reserveCapacity(batch * width)
            for _ in 0..<batch {
                for t in 0..<width {
                    if let cls = group.cls, t % n == 0 { ids.append(Int32(cls)) } else {
                        ids.append(Int32(range.lowerBound + g.nextInt(below: range.count)))
                    }
                }
            }
            return .tokens(IntTensor(shape: [batch, width], scalars: ids))
        }
    }

    static func targets(_ group: ModelBenchShape, batch: Int) -> Targets {
        var g = RandomGenerator(seed: 13)
        switch group.shape.objective {
        case .classes: return .classes(IntTensor((0..<batch).map { _ in g.nextInt(below: max(group.shape.outputs, 1)) }))
        case .binary: return .classes(IntTensor((0..<batch).map { $0 % 2 }))
        case .regression: return .values(Tensor.normal([batch, group.shape.outputs], generator: &g))
        }
    }

    /// Forward FLOPs of one sample (both documents of a pair).
    static func flops(_ built: BuiltModel, shape: ModelTaskShape) -> Double? {
        if let c = built.configuration as? EncoderConfiguration {
            return Roofline.encoderFlops(c, length: shape.length).forward * (shape.pair ? 2 : 1)
        }
        if let c = built.configuration as? ParamixerConfiguration, let p = built.model as? Paramixer {
            return Roofline.paramixerFlops(c, factors: p.factorCount, links: p.linkCount).forward
        }
        return nil
    }

    /// The worker's `build` request for the PyTorch twin of `built`.
    static func torchBuildRequest(_ built: BuiltModel, group: ModelBenchShape, seed: Int) throws -> [String: Any] {
        let family: String
        switch built.configuration {
        case is EncoderConfiguration: family = "encoder"
        case is ParamixerConfiguration: family = "paramixer"
        default: throw UserError(.runtime, what: "PyTorch side", why: "has no twin of \(type(of: built.model))")
        }
        let data = try JSONEncoder().encode(AnyEncodable(built.configuration))
        let configuration = try JSONSerialization.jsonObject(with: data)
        let objective: String
        switch group.shape.objective {
        case .classes: objective = "classes"
        case .binary: objective = "binary"
        case .regression: objective = "regression"
        }
        var tokens: [String: Any] = ["low": group.tokenRange.lowerBound, "high": group.tokenRange.upperBound]
        if let cls = group.cls { tokens["cls"] = cls }
        return ["op": "build", "family": family, "config": configuration, "length": group.shape.length, "pair": group.shape.pair,
                "objective": objective, "outputs": group.shape.outputs, "tokens": tokens,
                "forward_batch": group.forwardBatch, "train_batch": group.trainingBatch, "seed": seed]
    }

    struct AnyEncodable: Encodable {
        let value: any Encodable
        init(_ value: any Encodable) { self.value = value }
        func encode(to encoder: Encoder) throws { try value.encode(to: encoder) }
    }
}

/// A growth exponent k of time or memory ∝ N^k, fitted by least squares on log-log.
public struct GrowthFit: Codable, Sendable, Equatable {
    public var label: String
    /// `forward`, `training` (seconds per sequence) or `memory` (training-step peak bytes per sequence).
    public var quantity: String
    public var fromLength: Int
    public var toLength: Int
    public var points: Int
    public var exponent: Double
}

/// What a model benchmark writes with `--json` and `bench report` reads.
public struct ModelBenchReport: Codable, Sendable {
    /// `scaling`, `tables`, `attention` or `paramixer`.
    public var benchmark: String
    public var command: String
    public var machine: MachineInfo
    public var threads: Int
    public var repeats: Int
    /// The models and shapes, in a sentence or two.
    public var setup: String
    public var torch: TorchInfo?
    /// The `BLAS.gemm` rate of the roofline columns (best of before and after the timings).
    public var gemm: Roofline.GemmRate?
    public var rows: [ModelBenchRow]
    public var fits: [GrowthFit]?

    public init(benchmark: String, command: String, machine: MachineInfo, threads: Int, repeats: Int, setup: String,
                torch: TorchInfo?, gemm: Roofline.GemmRate? = nil, rows: [ModelBenchRow], fits: [GrowthFit]? = nil) {
        self.benchmark = benchmark; self.command = command; self.machine = machine; self.threads = threads
        self.repeats = repeats; self.setup = setup; self.torch = torch; self.gemm = gemm; self.rows = rows; self.fits = fits
    }

    public func writeJSON(to path: String) throws { try writeBenchmarkJSON(self, to: path) }
}
