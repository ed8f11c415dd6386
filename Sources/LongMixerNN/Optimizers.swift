import Foundation
import LongMixerCore

// Optimizers with PyTorch's update rules (torch.optim, single-tensor CPU path), element for element:
// the same operation order, the same fused multiply-adds where ATen's vectorised CPU kernels use
// them, and scalar coefficients derived in double precision (as the Python code does) before they
// are rounded to Float. `Tests/Fixtures/optimizer_reference.json` (written by
// `Scripts/reference/optimizer_reference.py`) pins the results against torch.
//
// Conventions shared by every optimizer here:
// - State lives in arrays parallel to the parameter list, created lazily on a parameter's first
//   update. A parameter whose `grad` is nil is skipped and its state is not advanced (PyTorch).
// - The same Parameter listed twice (tied weights reached through two modules) is kept once.
// - Updates write through `value.withUnsafeMutablePointer`, so a tensor that shares storage with the
//   parameter (a snapshot taken before the step) keeps its old values (copy-on-write).
// - Element loops run on raw pointers; large tensors are split with `parallelFor`. Every element
//   is updated independently, so results do not depend on the thread count.

/// Updates parameters from their accumulated gradients.
public protocol Optimizer: AnyObject {
    /// The learning rate the next `step()` uses (set it from a `LearningRateSchedule` each step).
    var learningRate: Float { get set }
    /// Applies one update to every parameter that has a gradient.
    func step()
    /// Drops every parameter's gradient (`grad = nil`, PyTorch's `set_to_none=True`).
    func zeroGradients()
    /// What the next steps depend on besides the parameters (moments, momentum buffers, step
    /// counts) as named tensors indexed like the parameter list: what a checkpoint saves.
    func stateDictionary() -> [String: NamedTensor]
    /// Puts a `stateDictionary()` back, after checking every tensor against the parameters (names,
    /// shapes, finite values); nothing changes unless all of it fits.
    func loadStateDictionary(_ tensors: [String: NamedTensor]) throws
}

/// Checks and splits an optimizer state dictionary: `perParameter` names the tensors kept per
/// parameter (`exp_avg` → `exp_avg.3`), `counts` an optional int tensor of one value per parameter.
fileprivate func readOptimizerState(_ tensors: [String: NamedTensor], owner: String, parameters: [Parameter],
                                    perParameter: [String], counts: String?) throws -> (buffers: [String: [Tensor?]], counts: [Int]) {
    func refuse(_ what: String, _ value: String? = nil, _ why: String) -> UserError {
        UserError(what: "\(owner) state: \(what)", value: value, why: why,
                  remedy: "the checkpoint is damaged or was written for another model or optimizer")
    }
    var buffers = Dictionary(uniqueKeysWithValues: perParameter.map { ($0, [Tensor?](repeating: nil, count: parameters.count)) })
    var stepCounts = [Int](repeating: 0, count: parameters.count)
    for (name, tensor) in tensors.sorted(by: { $0.key < $1.key }) {
        if name == counts {
            guard let t = tensor.intTensor, t.shape == [parameters.count] else {
                throw refuse(name, "\(tensor.kindName) \(tensor.shape)", "must be \(parameters.count) integers, one per parameter")
            }
            guard let bad = t.scalars.first(where: { $0 < 0 }) else { stepCounts = t.scalars.map(Int.init); continue }
            throw refuse(name, String(bad), "a step count cannot be negative")
        }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let kind = perParameter.first(where: { $0 == parts[0] }), let i = Int(parts[1]),
              i >= 0 && i < parameters.count else {
            throw refuse(name, nil, "is not a tensor of this optimizer over \(parameters.count) parameters")
        }
        guard let t = tensor.floatTensor, t.shape == parameters[i].value.shape else {
            throw refuse(name, "\(tensor.kindName) \(tensor.shape)", "parameter \(i) has shape \(parameters[i].value.shape)")
        }
        let p = t.pointer
        for j in 0..<t.count where !p[j].isFinite { throw refuse(name, "\(p[j])", "is not a finite number") }
        buffers[kind]![i] = t
    }
    if counts != nil {
        // A parameter has been updated (count > 0) exactly when it has every buffer.
        for i in 0..<parameters.count {
            let present = perParameter.filter { buffers[$0]![i] != nil }
            guard present.isEmpty == (stepCounts[i] == 0) && (present.isEmpty || present.count == perParameter.count) else {
                throw refuse("parameter \(i)", nil, "has \(stepCounts[i]) steps but buffers \(present)")
            }
        }
    }
    return (buffers, stepCounts)
}

/// The present entries of `buffers` as `<name>.<index>` float tensors.
fileprivate func namedBuffers(_ name: String, _ buffers: [Tensor?]) -> [String: NamedTensor] {
    var out: [String: NamedTensor] = [:]
    for (i, b) in buffers.enumerated() { if let b { out["\(name).\(i)"] = .float(b) } }
    return out
}

/// Elements per `parallelFor` piece in the update loops (below this, updates run inline).
let optimizerGrain = 1 << 15

/// The parameter list with duplicates (by identity) removed, keeping first occurrences.
fileprivate func uniqueParameters(_ parameters: [Parameter]) -> [Parameter] {
    var seen = Set<ObjectIdentifier>()
    return parameters.filter { seen.insert(ObjectIdentifier($0)).inserted }
}

fileprivate func checkLearningRate(_ lr: Float, _ owner: String) {
    check(lr.isFinite && lr >= 0, "\(owner): learning rate must be finite and ≥ 0, got \(lr)")
}

/// The gradient of `p`, checked against its value's shape; nil if there is none.
fileprivate func checkedGradient(of p: Parameter, _ owner: String) -> Tensor? {
    guard let g = p.grad else { return nil }
    check(g.shape == p.value.shape, "\(owner): gradient shape \(g.shape) ≠ parameter shape \(p.value.shape)")
    return g
}

// MARK: - SGD

/// Stochastic gradient descent with optional momentum, dampening, L2 weight decay and Nesterov
/// momentum, as `torch.optim.SGD`:
///
///     g ← ∇ + λ·θ                                  (λ = weightDecay)
///     b ← g on the first step, else μ·b + (1 − τ)·g (μ = momentum, τ = dampening)
///     g ← g + μ·b if nesterov, else b               (only when μ ≠ 0)
///     θ ← θ − γ·g                                   (γ = learningRate)
public final class SGD: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float { didSet { checkLearningRate(learningRate, "SGD") } }
    public let momentum: Float
    public let dampening: Float
    public let weightDecay: Float
    public let nesterov: Bool
    /// Momentum buffers, parallel to `parameters`; nil until a parameter's first update.
    public private(set) var momentumBuffers: [Tensor?]

    public init(parameters: [Parameter], learningRate: Float, momentum: Float = 0, dampening: Float = 0,
                weightDecay: Float = 0, nesterov: Bool = false) {
        checkLearningRate(learningRate, "SGD")
        check(momentum.isFinite && momentum >= 0, "SGD: momentum must be finite and ≥ 0, got \(momentum)")
        check(dampening.isFinite, "SGD: dampening must be finite, got \(dampening)")
        check(weightDecay.isFinite && weightDecay >= 0, "SGD: weight decay must be finite and ≥ 0, got \(weightDecay)")
        check(!nesterov || (momentum > 0 && dampening == 0),
                     "SGD: Nesterov momentum needs momentum > 0 and dampening = 0, got momentum \(momentum), dampening \(dampening)")
        self.parameters = uniqueParameters(parameters)
        self.learningRate = learningRate
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        momentumBuffers = Array(repeating: nil, count: self.parameters.count)
    }

    public func step() {
        let lr = learningRate, mu = momentum, wd = weightDecay, nesterov = nesterov
        let keep = Float(1 - Double(dampening))   // torch: alpha = 1 - dampening, a double rounded to float
        for (i, p) in parameters.enumerated() {
            guard let grad = checkedGradient(of: p, "SGD") else { continue }
            let n = grad.count, gp = grad.pointer
            if mu == 0 {
                p.value.withUnsafeMutablePointer { x in
                    parallelFor(n, grain: optimizerGrain) { r in
                        for j in r {
                            let g = wd != 0 ? gp[j].addingProduct(wd, x[j]) : gp[j]
                            x[j] = x[j].addingProduct(-lr, g)
                        }
                    }
                }
                continue
            }
            let first = momentumBuffers[i] == nil
            var buffer = momentumBuffers[i] ?? Tensor(uninitializedShape: grad.shape)
            momentumBuffers[i] = nil   // keep the buffer uniquely referenced: no copy on write
            buffer.withUnsafeMutablePointer { b in
                p.value.withUnsafeMutablePointer { x in
                    parallelFor(n, grain: optimizerGrain) { r in
                        for j in r {
                            let g = wd != 0 ? gp[j].addingProduct(wd, x[j]) : gp[j]
                            let bj = first ? g : (b[j] * mu).addingProduct(keep, g)
                            b[j] = bj
                            let d = nesterov ? g.addingProduct(mu, bj) : bj
                            x[j] = x[j].addingProduct(-lr, d)
                        }
                    }
                }
            }
            momentumBuffers[i] = buffer
        }
    }

    public func zeroGradients() { for p in parameters { p.grad = nil } }

    public func stateDictionary() -> [String: NamedTensor] { namedBuffers("momentum_buffer", momentumBuffers) }

    public func loadStateDictionary(_ tensors: [String: NamedTensor]) throws {
        let read = try readOptimizerState(tensors, owner: "SGD", parameters: parameters, perParameter: ["momentum_buffer"], counts: nil)
        momentumBuffers = read.buffers["momentum_buffer"]!
    }
}

// MARK: - Adam and AdamW

/// First and second moment estimates and step counts shared by Adam and AdamW.
fileprivate struct AdamState {
    var firstMoments: [Tensor?]
    var secondMoments: [Tensor?]
    var steps: [Int]

    init(count: Int) {
        firstMoments = Array(repeating: nil, count: count)
        secondMoments = Array(repeating: nil, count: count)
        steps = Array(repeating: 0, count: count)
    }
}

fileprivate func checkAdamHyperparameters(_ owner: String, learningRate: Float, beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float) {
    checkLearningRate(learningRate, owner)
    check(beta1 >= 0 && beta1 < 1, "\(owner): beta1 must lie in [0, 1), got \(beta1)")
    check(beta2 >= 0 && beta2 < 1, "\(owner): beta2 must lie in [0, 1), got \(beta2)")
    check(epsilon.isFinite && epsilon >= 0, "\(owner): epsilon must be finite and ≥ 0, got \(epsilon)")
    check(weightDecay.isFinite && weightDecay >= 0, "\(owner): weight decay must be finite and ≥ 0, got \(weightDecay)")
}

/// One Adam step for every parameter with a gradient, as `torch.optim.adam._single_tensor_adam`:
///
///     t ← t + 1
///     θ ← θ·(1 − γλ)                      (decoupled decay: AdamW)
///     g ← ∇ + λ·θ                         (L2 decay: Adam)
///     m ← lerp(m, g, 1 − β₁)              (= β₁·m + (1 − β₁)·g)
///     v ← β₂·v + (1 − β₂)·g²
///     θ ← θ − (γ / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
///
/// The bias corrections and the step size are computed in double precision, as torch does in Python.
fileprivate func adamStep(parameters: [Parameter], state: inout AdamState, owner: String, learningRate baseRate: Float,
              multipliers: [Float], beta1: Float, beta2: Float, epsilon: Float, weightDecay wd: Float, decoupled: Bool) {
    let lerpWeight = Float(1 - Double(beta1))
    let smallWeight = abs(lerpWeight) < 0.5           // ATen's lerp switches formula at |w| = 0.5
    let lerpCoefficient = smallWeight ? lerpWeight : lerpWeight - 1
    let squareWeight = Float(1 - Double(beta2))
    for (i, p) in parameters.enumerated() {
        guard let grad = checkedGradient(of: p, owner) else { continue }
        // A multiplier of exactly 1 leaves the rate bit-identical to torch's single-group Adam.
        let lr = multipliers[i] == 1 ? baseRate : baseRate * multipliers[i]
        let decay = Float(1 - Double(lr) * Double(wd))
        let n = grad.count, gp = grad.pointer
        state.steps[i] += 1
        let t = Double(state.steps[i])
        let correction1 = 1 - Foundation.pow(Double(beta1), t)
        let correction2 = 1 - Foundation.pow(Double(beta2), t)
        let negativeStepSize = Float(-(Double(lr) / correction1))
        let correction2Root = Float(Foundation.pow(correction2, 0.5))
        var m = state.firstMoments[i] ?? Tensor(zeros: grad.shape)
        var v = state.secondMoments[i] ?? Tensor(zeros: grad.shape)
        state.firstMoments[i] = nil; state.secondMoments[i] = nil   // unique: no copy on write
        m.withUnsafeMutablePointer { mp in
            v.withUnsafeMutablePointer { vp in
                p.value.withUnsafeMutablePointer { x in
                    parallelFor(n, grain: optimizerGrain) { r in
                        for j in r {
                            var theta = x[j]
                            var g = gp[j]
                            if wd != 0 {
                                if decoupled { theta = theta * decay } else { g = g.addingProduct(wd, theta) }
                            }
                            let mj = mp[j]
                            // ATen's vectorised lerp: fma(w, g − m, m) for small w, else fma(w − 1, g − m, g).
                            let mNew = (smallWeight ? mj : g).addingProduct(lerpCoefficient, g - mj)
                            mp[j] = mNew
                            let vNew = vp[j] * beta2 + squareWeight * g * g
                            vp[j] = vNew
                            let denominator = vNew.squareRoot() / correction2Root + epsilon
                            x[j] = theta + negativeStepSize * mNew / denominator
                        }
                    }
                }
            }
        }
        state.firstMoments[i] = m
        state.secondMoments[i] = v
    }
}

/// Adam with L2 weight decay added to the gradient, as `torch.optim.Adam` (amsgrad off).
public class Adam: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float { didSet { checkLearningRate(learningRate, name) } }
    public let beta1: Float
    public let beta2: Float
    public let epsilon: Float
    public let weightDecay: Float
    /// θ·(1 − γλ) before the update (AdamW) instead of λ·θ added to the gradient (Adam).
    let decoupledWeightDecay: Bool
    private let name: String
    fileprivate var state: AdamState
    /// Per-parameter factor on the learning rate (parallel to `parameters`; all 1 by default), like torch
    /// parameter groups whose `lr` is a multiple of the base rate. Schedules scale every group alike.
    public private(set) var learningRateMultipliers: [Float]

    public convenience init(parameters: [Parameter], learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999,
                            epsilon: Float = 1e-8, weightDecay: Float = 0) {
        self.init(name: "Adam", decoupled: false, parameters: parameters, learningRate: learningRate, beta1: beta1,
                  beta2: beta2, epsilon: epsilon, weightDecay: weightDecay)
    }

    init(name: String, decoupled: Bool, parameters: [Parameter], learningRate: Float, beta1: Float, beta2: Float,
         epsilon: Float, weightDecay: Float) {
        checkAdamHyperparameters(name, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon, weightDecay: weightDecay)
        self.name = name
        self.decoupledWeightDecay = decoupled
        self.parameters = uniqueParameters(parameters)
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        state = AdamState(count: self.parameters.count)
        learningRateMultipliers = [Float](repeating: 1, count: self.parameters.count)
    }

    /// Multiplies the learning rate of `selected` (parameters of this optimizer) by `multiplier` (> 0, finite).
    public func setLearningRateMultiplier(_ multiplier: Float, for selected: [Parameter]) {
        check(multiplier.isFinite && multiplier > 0, "\(name): learning-rate multiplier must be finite and > 0, got \(multiplier)")
        let index = Dictionary(uniqueKeysWithValues: parameters.enumerated().map { (ObjectIdentifier($0.element), $0.offset) })
        for p in selected {
            let i = index[ObjectIdentifier(p)]
            check(i != nil, "\(name): a parameter of shape \(p.value.shape) is not optimised by this optimizer")
            learningRateMultipliers[i!] = multiplier
        }
    }

    /// Number of updates applied to each parameter (parallel to `parameters`).
    public var stepCounts: [Int] { state.steps }

    public func step() {
        adamStep(parameters: parameters, state: &state, owner: name, learningRate: learningRate,
                 multipliers: learningRateMultipliers, beta1: beta1,
                 beta2: beta2, epsilon: epsilon, weightDecay: weightDecay, decoupled: decoupledWeightDecay)
    }

    public func zeroGradients() { for p in parameters { p.grad = nil } }

    public func stateDictionary() -> [String: NamedTensor] {
        var out = namedBuffers("exp_avg", state.firstMoments).merging(namedBuffers("exp_avg_sq", state.secondMoments)) { a, _ in a }
        out["step"] = .int(IntTensor(shape: [parameters.count], scalars: state.steps.map { Int32(clamping: $0) }))
        return out
    }

    public func loadStateDictionary(_ tensors: [String: NamedTensor]) throws {
        let read = try readOptimizerState(tensors, owner: name, parameters: parameters, perParameter: ["exp_avg", "exp_avg_sq"], counts: "step")
        if let negative = read.buffers["exp_avg_sq"]!.compactMap({ $0 }).first(where: { $0.scalars.contains { $0 < 0 } }) {
            throw UserError(what: "\(name) state: exp_avg_sq", value: "\(negative.scalars.min()!)", why: "a second moment cannot be negative",
                            remedy: "the checkpoint is damaged or was written for another model or optimizer")
        }
        state.firstMoments = read.buffers["exp_avg"]!
        state.secondMoments = read.buffers["exp_avg_sq"]!
        state.steps = read.counts
    }
}

/// Adam with decoupled weight decay (θ ← θ·(1 − γλ) before the Adam update), as `torch.optim.AdamW`.
public final class AdamW: Adam {
    public init(parameters: [Parameter], learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8, weightDecay: Float = 0.01) {
        super.init(name: "AdamW", decoupled: true, parameters: parameters, learningRate: learningRate, beta1: beta1,
                   beta2: beta2, epsilon: epsilon, weightDecay: weightDecay)
    }
}

// MARK: - Gradient clipping

/// Elements per block of the norm's partial sums; fixed, so the sum's rounding never depends on threads.
fileprivate let normBlock = 1 << 14

/// Euclidean norm of a tensor, accumulated in double over fixed blocks (deterministic for any thread count).
fileprivate func euclideanNorm(_ t: Tensor) -> Double {
    let n = t.count, x = t.pointer
    let blocks = (n + normBlock - 1) / normBlock
    if blocks == 0 { return 0 }
    var partial = [Double](repeating: 0, count: blocks)
    partial.withUnsafeMutableBufferPointer { out in
        let o = out.baseAddress!
        parallelFor(blocks) { r in
            for b in r {
                var s: Double = 0
                for j in (b * normBlock)..<min(n, (b + 1) * normBlock) { let v = Double(x[j]); s += v * v }
                o[b] = s
            }
        }
    }
    var total: Double = 0
    for s in partial { total += s }
    return total.squareRoot()
}

/// Rescales the gradients of `parameters` so that their global Euclidean norm is at most `maxNorm`,
/// as `torch.nn.utils.clip_grad_norm_`: the total norm is the norm of the per-tensor norms, and every
/// gradient is multiplied by min(maxNorm / (total + 1e-6), 1). Parameters without a gradient are
/// ignored; a parameter listed twice counts once. Returns the total norm before clipping (0 when no
/// parameter has a gradient). A non-finite norm is returned as is and, as in torch, turns the
/// gradients into NaN/zero; check the returned value to skip such steps.
@discardableResult
public func clipGradientNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
    check(maxNorm.isFinite && maxNorm > 0, "clipGradientNorm: maxNorm must be finite and > 0, got \(maxNorm)")
    let withGradients = uniqueParameters(parameters).filter { $0.grad != nil }
    if withGradients.isEmpty { return 0 }
    var sumOfSquares: Double = 0
    for p in withGradients {
        let norm = Double(Float(euclideanNorm(p.grad!)))   // torch: per-tensor norms are float32 tensors
        sumOfSquares += norm * norm
    }
    let total = Float(sumOfSquares.squareRoot())
    let coefficient = min(maxNorm / (total + 1e-6), 1)
    if coefficient < 1 || coefficient.isNaN {
        for p in withGradients {
            let n = p.grad!.count
            p.grad!.withUnsafeMutablePointer { g in
                parallelFor(n, grain: optimizerGrain) { r in for j in r { g[j] *= coefficient } }
            }
        }
    }
    return total
}
