import Foundation
import Testing
@testable import LongMixerNN
import LongMixerCore
import LongMixerData
import LongMixerModels
import LongMixerTraining

// Parity with torch.optim / clip_grad_norm_ / lr_scheduler through Tests/Fixtures/optimizer_reference.json,
// written by Scripts/reference/optimizer_reference.py (regenerate: python3 Scripts/reference/optimizer_reference.py).
// Measured against torch 2.13.0+cpu (AMD EPYC, AVX2 kernels): SGD, AdamW and every schedule agree bit for bit;
// Adam and clip_grad_norm_ differ by at most 1 ulp (ATen fuses a multiply-add in its vectorised
// addcmul but not in the scalar tail, and accumulates norms in float), well inside the 1e-6 tolerance.

struct OptimizerFixture: Decodable {
    struct OptimizerRun: Decodable {
        let name: String
        let kind: String
        let learningRate: Float
        let learningRates: [Float]?
        let momentum: Float?
        let dampening: Float?
        let weightDecay: Float?
        let nesterov: Bool?
        let beta1: Float?
        let beta2: Float?
        let epsilon: Float?
        /// after_step[k][i]: parameter i after update k.
        let afterStep: [[[Float]]]
    }
    struct ClippingCase: Decodable {
        let maxNorm: Float
        let gradients: [[Float]?]
        let totalNorm: Float
        let clipped: [[Float]?]
    }
    struct ScheduleRun: Decodable {
        let name: String
        let kind: String
        let learningRates: [Double]
        let learningRate: Float?
        let peakLearningRate: Float?
        let initialLearningRate: Float?
        let minimumLearningRate: Float?
        let warmupSteps: Int?
        let totalSteps: Int?
        let stepSize: Int?
        let gamma: Float?
    }
    let torchVersion: String
    let shapes: [[Int]]
    let initial: [[Float]]
    let gradients: [[[Float]?]]
    let optimizers: [OptimizerRun]
    let clipping: [ClippingCase]
    let schedules: [ScheduleRun]

    static let shared: OptimizerFixture = {
        // …/Tests/LongMixerNNTests/OptimizerTests.swift → …/Tests/Fixtures
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/optimizer_reference.json")
        do {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            return try decoder.decode(OptimizerFixture.self, from: Data(contentsOf: url))
        } catch {
            fatalError("cannot read \(url.path): \(error) — regenerate with Scripts/reference/optimizer_reference.py")
        }
    }()

    func makeParameters() -> [Parameter] {
        zip(shapes, initial).map { Parameter(Tensor(shape: $0, scalars: $1)) }
    }

    func makeOptimizer(_ run: OptimizerRun, _ parameters: [Parameter]) -> Optimizer {
        switch run.kind {
        case "sgd":
            return SGD(parameters: parameters, learningRate: run.learningRate, momentum: run.momentum ?? 0,
                       dampening: run.dampening ?? 0, weightDecay: run.weightDecay ?? 0, nesterov: run.nesterov ?? false)
        case "adam":
            return Adam(parameters: parameters, learningRate: run.learningRate, beta1: run.beta1!, beta2: run.beta2!,
                        epsilon: run.epsilon!, weightDecay: run.weightDecay ?? 0)
        case "adamw":
            return AdamW(parameters: parameters, learningRate: run.learningRate, beta1: run.beta1!, beta2: run.beta2!,
                         epsilon: run.epsilon!, weightDecay: run.weightDecay!)
        default:
            fatalError("unknown optimizer kind \(run.kind)")
        }
    }

    func makeSchedule(_ run: ScheduleRun) -> any LearningRateSchedule {
        switch run.kind {
        case "constant": return ConstantSchedule(learningRate: run.learningRate!)
        case "linear_warmup": return LinearWarmupSchedule(peakLearningRate: run.peakLearningRate!, warmupSteps: run.warmupSteps!)
        case "inverse_sqrt":
            return WarmupInverseSqrtSchedule(peakLearningRate: run.peakLearningRate!, warmupSteps: run.warmupSteps!,
                                             initialLearningRate: run.initialLearningRate!)
        case "warmup_cosine":
            return WarmupCosineSchedule(peakLearningRate: run.peakLearningRate!, warmupSteps: run.warmupSteps!,
                                        totalSteps: run.totalSteps!, minimumLearningRate: run.minimumLearningRate!)
        case "step": return StepSchedule(initialLearningRate: run.initialLearningRate!, stepSize: run.stepSize!, gamma: run.gamma!)
        default: fatalError("unknown schedule kind \(run.kind)")
        }
    }
}

/// Largest |a − b| / max(|b|, floor) over two equal-length arrays. The floor keeps values that
/// cancel to nearly zero from inflating the relative error; it is far below every scale compared here.
func maxRelativeError(_ a: [Float], _ b: [Float], floor: Float = 1e-6) -> Float {
    precondition(a.count == b.count, "lengths \(a.count) and \(b.count) differ")
    var worst: Float = 0
    for (x, y) in zip(a, b) {
        if x == y { continue }
        worst = max(worst, abs(x - y) / max(abs(y), floor))
    }
    return worst.isNaN ? .infinity : worst
}

@Suite("Optimizers")
struct OptimizerTests {
    let fixture = OptimizerFixture.shared
    let tolerance: Float = 1e-6

    @Test("SGD, Adam and AdamW match torch.optim after every one of 5 steps")
    func matchesTorch() {
        #expect(fixture.optimizers.count == 8)
        for run in fixture.optimizers {
            let parameters = fixture.makeParameters()
            let optimizer = fixture.makeOptimizer(run, parameters)
            for (k, expected) in run.afterStep.enumerated() {
                if let rates = run.learningRates { optimizer.learningRate = rates[k] }
                optimizer.zeroGradients()
                for (p, g) in zip(parameters, fixture.gradients[k]) {
                    p.grad = g.map { Tensor(shape: p.shape, scalars: $0) }
                }
                optimizer.step()
                for (i, p) in parameters.enumerated() {
                    let error = maxRelativeError(p.value.scalars, expected[i])
                    #expect(error <= tolerance, "\(run.name): parameter \(i) after step \(k) differs from torch by \(error) (relative)")
                }
            }
        }
    }

    @Test("A parameter without a gradient is untouched and its state does not advance")
    func nilGradientSkipped() throws {
        var generator = RandomGenerator(seed: 7)
        let withGradient = Parameter(.normal([3, 4], generator: &generator))
        let without = Parameter(.normal([5], generator: &generator))
        let before = without.value.scalars.map(\.bitPattern)
        let sgd = SGD(parameters: [withGradient, without], learningRate: 0.1, momentum: 0.9)
        let adam = Adam(parameters: [withGradient, without], learningRate: 0.01, weightDecay: 0.1)
        let adamW = AdamW(parameters: [withGradient, without], learningRate: 0.01, weightDecay: 0.1)
        for optimizer in [sgd, adam, adamW] as [Optimizer] {
            for _ in 0..<3 {
                let start = withGradient.value.scalars
                withGradient.grad = .normal([3, 4], generator: &generator)
                without.grad = nil
                optimizer.step()
                #expect(withGradient.value.scalars != start, "\(type(of: optimizer)) did not update the parameter with a gradient")
                #expect(without.value.scalars.map(\.bitPattern) == before, "\(type(of: optimizer)) changed a parameter without a gradient")
            }
        }
        #expect(sgd.momentumBuffers[0] != nil && sgd.momentumBuffers[1] == nil)
        #expect(adam.stepCounts == [3, 0])
        #expect(adamW.stepCounts == [3, 0])
        // zeroGradients drops gradients (set_to_none).
        withGradient.grad = Tensor(ones: [3, 4])
        adam.zeroGradients()
        #expect(withGradient.grad == nil)
    }

    @Test("Updating a parameter keeps copy-on-write: an earlier snapshot of its value is unchanged")
    func copyOnWrite() {
        for make in [{ SGD(parameters: $0, learningRate: 0.5, momentum: 0.9) as Optimizer },
                     { Adam(parameters: $0, learningRate: 0.5) }, { AdamW(parameters: $0, learningRate: 0.5) }] {
            let p = Parameter(Tensor(shape: [4], scalars: [1, 2, 3, 4]))
            let snapshot = p.value        // shares storage with the parameter
            let optimizer = make([p])
            p.grad = Tensor(ones: [4])
            let gradientSnapshot = p.grad!
            optimizer.step()
            optimizer.step()
            #expect(snapshot.scalars == [1, 2, 3, 4])
            #expect(p.value.scalars != [1, 2, 3, 4])
            #expect(gradientSnapshot.scalars == [1, 1, 1, 1])
        }
    }

    @Test("Large tensors (split across threads) update bit-identically to small ones updated inline")
    func parallelMatchesInline() {
        let n = 5 * optimizerGrain + 123, pieces = 64
        var generator = RandomGenerator(seed: 11)
        let values = Tensor.normal([n], generator: &generator)
        let gradients = (0..<3).map { _ in Tensor.normal([n], generator: &generator) }
        let bounds = (0...pieces).map { n * $0 / pieces }
        func split(_ t: Tensor) -> [Tensor] {
            (0..<pieces).map { Tensor(shape: [bounds[$0 + 1] - bounds[$0]], scalars: Array(t.scalars[bounds[$0]..<bounds[$0 + 1]])) }
        }
        let makers: [([Parameter]) -> Optimizer] = [
            { SGD(parameters: $0, learningRate: 0.1, momentum: 0.9, dampening: 0.2, weightDecay: 0.01) },
            { SGD(parameters: $0, learningRate: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov: true) },
            { Adam(parameters: $0, learningRate: 0.01, weightDecay: 0.1) },
            { AdamW(parameters: $0, learningRate: 0.01) },
        ]
        for make in makers {
            let big = Parameter(values)
            let small = split(values).map { Parameter($0) }
            let bigOptimizer = make([big]), smallOptimizer = make(small)
            for g in gradients {
                big.grad = g
                for (p, piece) in zip(small, split(g)) { p.grad = piece }
                bigOptimizer.step()
                smallOptimizer.step()
            }
            let joined = small.flatMap { $0.value.scalars }
            #expect(big.value.scalars.map(\.bitPattern) == joined.map(\.bitPattern), "\(type(of: bigOptimizer))")
        }
    }

    @Test("A parameter listed twice is updated once")
    func duplicatesUpdatedOnce() {
        let p = Parameter(Tensor(shape: [2], scalars: [1, 1]))
        let sgd = SGD(parameters: [p, p], learningRate: 0.5)
        #expect(sgd.parameters.count == 1)
        p.grad = Tensor(shape: [2], scalars: [1, -2])
        sgd.step()
        #expect(p.value.scalars == [0.5, 2])
    }

    @Test("A learning-rate multiplier equals a separate optimizer at the scaled rate; others are untouched")
    func learningRateMultiplier() {
        for decoupled in [false, true] {
            func make(_ ps: [Parameter], _ lr: Float) -> Adam {
                decoupled ? AdamW(parameters: ps, learningRate: lr, weightDecay: 0.1) : Adam(parameters: ps, learningRate: lr, weightDecay: 0.1)
            }
            let head = Parameter(Tensor(shape: [3], scalars: [0.5, -1, 2]))
            let body = Parameter(Tensor(shape: [2], scalars: [1, -0.25]))
            let headAlone = Parameter(head.value), bodyAlone = Parameter(body.value)
            let together = make([body, head], 1e-2)
            together.setLearningRateMultiplier(0.125, for: [head])
            #expect(together.learningRateMultipliers == [1, 0.125])
            let headOptimizer = make([headAlone], 1.25e-3), bodyOptimizer = make([bodyAlone], 1e-2)
            for step in 0..<3 {
                let s = Float(step + 1)
                for (p, q) in [(head, headAlone), (body, bodyAlone)] {
                    let g = Tensor(shape: p.value.shape, scalars: p.value.scalars.map { $0 * s - 0.3 })
                    p.grad = g; q.grad = g
                }
                together.step(); headOptimizer.step(); bodyOptimizer.step()
            }
            #expect(head.value.scalars.map(\.bitPattern) == headAlone.value.scalars.map(\.bitPattern))
            #expect(body.value.scalars.map(\.bitPattern) == bodyAlone.value.scalars.map(\.bitPattern))
        }
    }

    @Test("clipGradientNorm matches torch.nn.utils.clip_grad_norm_")
    func clippingMatchesTorch() {
        #expect(fixture.clipping.count == 4)
        for (c, reference) in fixture.clipping.enumerated() {
            let parameters = fixture.makeParameters()
            for (p, g) in zip(parameters, reference.gradients) { p.grad = g.map { Tensor(shape: p.shape, scalars: $0) } }
            let total = clipGradientNorm(parameters, maxNorm: reference.maxNorm)
            #expect(maxRelativeError([total], [reference.totalNorm]) <= tolerance, "case \(c): total norm \(total) vs torch \(reference.totalNorm)")
            for (i, (p, expected)) in zip(parameters, reference.clipped).enumerated() {
                #expect((p.grad == nil) == (expected == nil), "case \(c): parameter \(i) gradient presence")
                if let expected, let g = p.grad {
                    let error = maxRelativeError(g.scalars, expected)
                    #expect(error <= tolerance, "case \(c): clipped gradient \(i) differs from torch by \(error)")
                }
            }
        }
    }

    @Test("clipGradientNorm: exact small case, no gradients, and clipping only above the limit")
    func clippingEdgeCases() {
        let a = Parameter(Tensor(zeros: [2])), b = Parameter(Tensor(zeros: [1])), none = Parameter(Tensor(zeros: [3]))
        a.grad = Tensor(shape: [2], scalars: [3, 0])
        b.grad = Tensor(shape: [1], scalars: [4])
        let total = clipGradientNorm([a, b, none], maxNorm: 1)
        #expect(total == 5)
        let coefficient: Float = 1 / (5 + 1e-6)
        #expect(a.grad!.scalars == [3 * coefficient, 0])
        #expect(b.grad!.scalars == [4 * coefficient])
        #expect(none.grad == nil)
        // Below the limit nothing changes.
        a.grad = Tensor(shape: [2], scalars: [0.3, 0.4])
        #expect(abs(clipGradientNorm([a], maxNorm: 1) - 0.5) < 1e-7)
        #expect(a.grad!.scalars == [0.3, 0.4])
        // No gradients at all.
        #expect(clipGradientNorm([none], maxNorm: 1) == 0)
        #expect(clipGradientNorm([], maxNorm: 1) == 0)
    }
}

@Suite("Learning-rate schedules")
struct ScheduleTests {
    let fixture = OptimizerFixture.shared

    @Test("Every schedule matches torch's LambdaLR / StepLR / CosineAnnealingLR")
    func matchesTorch() {
        #expect(fixture.schedules.count == 11)
        for run in fixture.schedules {
            let schedule = fixture.makeSchedule(run)
            let ours = run.learningRates.indices.map { schedule.learningRate(at: $0) }
            let error = maxRelativeError(ours, run.learningRates.map { Float($0) }, floor: 1e-9)
            #expect(error <= 1e-6, "\(run.name): differs from torch by \(error) (relative)")
        }
    }

    @Test("Edge cases: step 0, the warm-up boundary, after the total")
    func edgeCases() {
        #expect(ConstantSchedule(learningRate: 0.25).learningRate(at: 0) == 0.25)
        #expect(ConstantSchedule(learningRate: 0.25).learningRate(at: 1_000_000) == 0.25)

        let linear = LinearWarmupSchedule(peakLearningRate: 1, warmupSteps: 4)
        #expect([0, 1, 2, 3, 4, 5, 100].map { linear.learningRate(at: $0) } == [0, 0.25, 0.5, 0.75, 1, 1, 1])
        #expect(LinearWarmupSchedule(peakLearningRate: 0.5, warmupSteps: 0).learningRate(at: 0) == 0.5)

        let inverse = WarmupInverseSqrtSchedule(peakLearningRate: 1, warmupSteps: 4)
        #expect(inverse.learningRate(at: 0) == 0)
        #expect(inverse.learningRate(at: 2) == 0.5)
        #expect(inverse.learningRate(at: 4) == 1)         // peak exactly at the boundary
        #expect(inverse.learningRate(at: 16) == 0.5)      // √(4/16)
        #expect(inverse.learningRate(at: 400) == 0.1)
        #expect(WarmupInverseSqrtSchedule(peakLearningRate: 1, warmupSteps: 4, initialLearningRate: 0.2).learningRate(at: 0) == 0.2)

        let cosine = WarmupCosineSchedule(peakLearningRate: 1, warmupSteps: 2, totalSteps: 6, minimumLearningRate: 0.1)
        #expect(cosine.learningRate(at: 0) == 0)
        #expect(cosine.learningRate(at: 1) == 0.5)
        #expect(cosine.learningRate(at: 2) == 1)          // peak at the end of warm-up
        #expect(abs(cosine.learningRate(at: 4) - 0.55) < 1e-7)   // half-way: (peak + min) / 2
        #expect(cosine.learningRate(at: 6) == 0.1)
        #expect(cosine.learningRate(at: 1000) == 0.1)     // stays at the minimum after totalSteps
        #expect(WarmupCosineSchedule(peakLearningRate: 2, warmupSteps: 0, totalSteps: 10).learningRate(at: 0) == 2)

        let stepped = StepSchedule(initialLearningRate: 1, stepSize: 3, gamma: 0.5)
        #expect([0, 2, 3, 5, 6, 9].map { stepped.learningRate(at: $0) } == [1, 1, 0.5, 0.5, 0.25, 0.125])
    }

    @Test("An optimizer takes its rate from a schedule")
    func optimizerFollowsSchedule() {
        let p = Parameter(Tensor(zeros: [1]))
        let sgd = SGD(parameters: [p], learningRate: 1)
        let schedule = LinearWarmupSchedule(peakLearningRate: 0.5, warmupSteps: 2)
        var seen: [Float] = []
        for step in 0..<4 {
            sgd.setLearningRate(from: schedule, step: step)
            seen.append(sgd.learningRate)
            p.grad = Tensor(ones: [1])
            sgd.step()
        }
        #expect(seen == [0, 0.25, 0.5, 0.5])
        #expect(p.value.scalars == [-1.25])
    }
}

/// The standard error of an exit test's child process ("" if the exit test did not run).
func standardError(_ result: ExitTest.Result?) -> String {
    String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
}

/// Bad hyper-parameters stop the process with a message naming the value.
@Suite("Invalid optimizer and schedule configuration")
struct InvalidConfigurationTests {
    @Test func negativeLearningRate() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = SGD(parameters: [], learningRate: -0.1)
        }
        #expect(standardError(result).contains("SGD: learning rate must be finite and ≥ 0, got -0.1"))
    }

    @Test func negativeLearningRateSetLater() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let adam = Adam(parameters: [], learningRate: 0.1)
            adam.learningRate = -1
        }
        #expect(standardError(result).contains("Adam: learning rate must be finite and ≥ 0, got -1.0"))
    }

    @Test func learningRateMultiplierOfForeignParameter() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let adam = Adam(parameters: [Parameter(Tensor(zeros: [2]))], learningRate: 0.1)
            adam.setLearningRateMultiplier(0.5, for: [Parameter(Tensor(zeros: [3]))])
        }
        #expect(standardError(result).contains("Adam: a parameter of shape [3] is not optimised by this optimizer"))
    }

    @Test func nesterovWithDampening() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = SGD(parameters: [], learningRate: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true)
        }
        #expect(standardError(result).contains("Nesterov momentum needs momentum > 0 and dampening = 0, got momentum 0.9, dampening 0.1"))
    }

    @Test func betaOutsideUnitInterval() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = AdamW(parameters: [], learningRate: 0.1, beta1: 1)
        }
        #expect(standardError(result).contains("AdamW: beta1 must lie in [0, 1), got 1.0"))
        let second = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Adam(parameters: [], learningRate: 0.1, beta2: -0.5)
        }
        #expect(standardError(second).contains("Adam: beta2 must lie in [0, 1), got -0.5"))
    }

    @Test func negativeEpsilonAndWeightDecay() async {
        await #expect(processExitsWith: .failure) { _ = Adam(parameters: [], learningRate: 0.1, epsilon: -1e-8) }
        await #expect(processExitsWith: .failure) { _ = AdamW(parameters: [], learningRate: 0.1, weightDecay: -0.01) }
        await #expect(processExitsWith: .failure) { _ = SGD(parameters: [], learningRate: 0.1, momentum: -0.5) }
    }

    @Test func gradientShapeMismatch() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let p = Parameter(Tensor(zeros: [2, 3]))
            p.grad = Tensor(zeros: [3, 2])
            Adam(parameters: [p], learningRate: 0.1).step()
        }
        #expect(standardError(result).contains("Adam: gradient shape [3, 2] ≠ parameter shape [2, 3]"))
    }

    @Test func invalidClippingAndSchedules() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            clipGradientNorm([], maxNorm: 0)
        }
        #expect(standardError(result).contains("clipGradientNorm: maxNorm must be finite and > 0, got 0.0"))
        let cosine = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = WarmupCosineSchedule(peakLearningRate: 1, warmupSteps: 10, totalSteps: 10)
        }
        #expect(standardError(cosine).contains("totalSteps (10) must exceed warmupSteps (10)"))
        await #expect(processExitsWith: .failure) { _ = LinearWarmupSchedule(peakLearningRate: 1, warmupSteps: 4).learningRate(at: -1) }
        await #expect(processExitsWith: .failure) { _ = StepSchedule(initialLearningRate: 1, stepSize: 0) }
        await #expect(processExitsWith: .failure) { _ = WarmupInverseSqrtSchedule(peakLearningRate: 1, warmupSteps: 0) }
    }
}

/// A checkpoint's optimizer state: saved, put back into a fresh optimizer, and the next updates equal
/// those of the optimizer that never stopped; a damaged state is refused whole.
@Suite("Optimizer state")
struct OptimizerStateTests {
    /// Two parameters; `steps` updates with gradients that depend on the step.
    func parameters() -> [Parameter] {
        var g = RandomGenerator(seed: 3)
        return [Parameter(.normal([3, 4], generator: &g)), Parameter(.normal([5], generator: &g))]
    }

    func update(_ optimizer: Optimizer, _ ps: [Parameter], steps: Range<Int>) {
        for k in steps {
            for (i, p) in ps.enumerated() where !(i == 1 && k == 0) {   // parameter 1 has no gradient at step 0
                p.grad = Tensor(shape: p.value.shape, scalars: p.value.scalars.enumerated().map { Float($0.offset % 3) - 0.7 * Float(k) + $0.element })
            }
            optimizer.step()
            optimizer.zeroGradients()
        }
    }

    @Test(arguments: ["adam", "adamw", "sgd"])
    func restoredOptimizerContinuesIdentically(kind: String) throws {
        func make(_ ps: [Parameter]) -> Optimizer {
            switch kind {
            case "adam": return Adam(parameters: ps, learningRate: 0.01, weightDecay: 0.1)
            case "adamw": return AdamW(parameters: ps, learningRate: 0.01)
            default: return SGD(parameters: ps, learningRate: 0.01, momentum: 0.9, weightDecay: 0.1)
            }
        }
        let a = parameters(), b = parameters()
        let uninterrupted = make(a)
        update(uninterrupted, a, steps: 0..<6)

        let first = make(b)
        update(first, b, steps: 0..<3)
        let saved = try SafeTensors.decode(SafeTensors.encode(first.stateDictionary()))   // through the file format
        let resumed = make(b)
        try resumed.loadStateDictionary(saved.tensors)
        update(resumed, b, steps: 3..<6)
        for (x, y) in zip(a, b) { #expect(x.value.scalars == y.value.scalars) }
        if kind != "sgd" { #expect((resumed as! Adam).stepCounts == [6, 5]) }
    }

    @Test func damagedStateIsRefusedAndChangesNothing() throws {
        let ps = parameters()
        let adam = Adam(parameters: ps, learningRate: 0.01)
        update(adam, ps, steps: 0..<2)
        let good = adam.stateDictionary()
        func refuses(_ tensors: [String: NamedTensor], _ needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let fresh = Adam(parameters: ps, learningRate: 0.01)
            do {
                try fresh.loadStateDictionary(tensors)
                Issue.record("accepted a damaged state (\(needle))", sourceLocation: sourceLocation)
            } catch {
                #expect("\(error)".contains(needle), "\(error)", sourceLocation: sourceLocation)
                #expect(fresh.stepCounts == [0, 0], sourceLocation: sourceLocation)
            }
        }
        var t = good; t["exp_avg.0"] = .float(Tensor(zeros: [4, 3]));  refuses(t, "parameter 0 has shape [3, 4]")
        t = good; t["exp_avg.7"] = good["exp_avg.0"];                  refuses(t, "exp_avg.7")
        t = good; t["exp_avg.1"] = nil;                                refuses(t, "steps but buffers")
        t = good; t["step"] = .int(IntTensor(shape: [2], scalars: [2, -1])); refuses(t, "negative")
        t = good; t["exp_avg_sq.1"] = .float(Tensor(shape: [5], scalars: [1, 1, -1, 1, 1])); refuses(t, "negative")
        t = good; t["exp_avg.1"] = .float(Tensor(shape: [5], scalars: [1, .nan, 1, 1, 1])); refuses(t, "finite")
        let fresh = Adam(parameters: ps, learningRate: 0.01)
        try fresh.loadStateDictionary(good)
        #expect(fresh.stepCounts == [2, 1])
    }
}
