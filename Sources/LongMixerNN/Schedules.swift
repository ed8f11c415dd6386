import Foundation
import LongMixerCore

// Learning-rate schedules. `learningRate(at: step)` is the rate for the update with index `step`
// (counting from 0), i.e. what `torch.optim.lr_scheduler.LambdaLR` / `StepLR` hold in the
// optimizer after `step` calls to `scheduler.step()`. Values are computed in double precision and
// rounded once to Float. Warm-ups follow Hugging Face / fairseq: the rate rises linearly from its
// initial value at step 0 and reaches the peak at step == warmupSteps.

/// Maps an update index (from 0) to a learning rate.
public protocol LearningRateSchedule {
    func learningRate(at step: Int) -> Float
}

extension Optimizer {
    /// Sets `learningRate` from `schedule` for the update with index `step`.
    public func setLearningRate(from schedule: some LearningRateSchedule, step: Int) {
        learningRate = schedule.learningRate(at: step)
    }
}

fileprivate func checkStep(_ step: Int, _ owner: String) {
    check(step >= 0, "\(owner): step must be ≥ 0, got \(step)")
}

fileprivate func checkRate(_ value: Float, _ what: String, _ owner: String) {
    check(value.isFinite && value >= 0, "\(owner): \(what) must be finite and ≥ 0, got \(value)")
}

/// The same rate at every step.
public struct ConstantSchedule: LearningRateSchedule, Sendable {
    public let learningRate: Float

    public init(learningRate: Float) {
        checkRate(learningRate, "learning rate", "ConstantSchedule")
        self.learningRate = learningRate
    }

    public func learningRate(at step: Int) -> Float {
        checkStep(step, "ConstantSchedule")
        return learningRate
    }
}

/// Linear warm-up from 0 to `peakLearningRate` over `warmupSteps`, then constant:
/// peak·min(step / warmupSteps, 1) (Hugging Face `get_constant_schedule_with_warmup`).
/// `warmupSteps = 0` is a constant schedule.
public struct LinearWarmupSchedule: LearningRateSchedule, Sendable {
    public let peakLearningRate: Float
    public let warmupSteps: Int

    public init(peakLearningRate: Float, warmupSteps: Int) {
        checkRate(peakLearningRate, "peak learning rate", "LinearWarmupSchedule")
        check(warmupSteps >= 0, "LinearWarmupSchedule: warmupSteps must be ≥ 0, got \(warmupSteps)")
        self.peakLearningRate = peakLearningRate
        self.warmupSteps = warmupSteps
    }

    public func learningRate(at step: Int) -> Float {
        checkStep(step, "LinearWarmupSchedule")
        if step >= warmupSteps { return peakLearningRate }
        return Float(Double(peakLearningRate) * Double(step) / Double(warmupSteps))
    }
}

/// fairseq's `inverse_sqrt`: linear warm-up from `initialLearningRate` to `peakLearningRate` over
/// `warmupSteps`, then peak·√(warmupSteps / step), so the rate is continuous at the boundary.
public struct WarmupInverseSqrtSchedule: LearningRateSchedule, Sendable {
    public let peakLearningRate: Float
    public let warmupSteps: Int
    public let initialLearningRate: Float

    public init(peakLearningRate: Float, warmupSteps: Int, initialLearningRate: Float = 0) {
        checkRate(peakLearningRate, "peak learning rate", "WarmupInverseSqrtSchedule")
        checkRate(initialLearningRate, "initial learning rate", "WarmupInverseSqrtSchedule")
        check(warmupSteps >= 1, "WarmupInverseSqrtSchedule: warmupSteps must be ≥ 1 (the decay is peak·√(warmup/step)), got \(warmupSteps)")
        self.peakLearningRate = peakLearningRate
        self.warmupSteps = warmupSteps
        self.initialLearningRate = initialLearningRate
    }

    public func learningRate(at step: Int) -> Float {
        checkStep(step, "WarmupInverseSqrtSchedule")
        let peak = Double(peakLearningRate), warmup = Double(warmupSteps)
        if step < warmupSteps {
            let initial = Double(initialLearningRate)
            return Float(initial + Double(step) * (peak - initial) / warmup)
        }
        return Float(peak * warmup.squareRoot() / Double(step).squareRoot())
    }
}

/// Linear warm-up from 0 to `peakLearningRate` over `warmupSteps`, then a half cosine from the peak
/// down to `minimumLearningRate` at `totalSteps`, and the minimum after that:
/// min + (peak − min)·(1 + cos(π·(step − warmup)/(total − warmup)))/2
/// (Hugging Face `get_cosine_schedule_with_warmup` with a floor; torch `CosineAnnealingLR` after warm-up).
public struct WarmupCosineSchedule: LearningRateSchedule, Sendable {
    public let peakLearningRate: Float
    public let warmupSteps: Int
    public let totalSteps: Int
    public let minimumLearningRate: Float

    public init(peakLearningRate: Float, warmupSteps: Int, totalSteps: Int, minimumLearningRate: Float = 0) {
        checkRate(peakLearningRate, "peak learning rate", "WarmupCosineSchedule")
        checkRate(minimumLearningRate, "minimum learning rate", "WarmupCosineSchedule")
        check(minimumLearningRate <= peakLearningRate,
                     "WarmupCosineSchedule: minimum learning rate \(minimumLearningRate) exceeds the peak \(peakLearningRate)")
        check(warmupSteps >= 0, "WarmupCosineSchedule: warmupSteps must be ≥ 0, got \(warmupSteps)")
        check(totalSteps > warmupSteps,
                     "WarmupCosineSchedule: totalSteps (\(totalSteps)) must exceed warmupSteps (\(warmupSteps))")
        self.peakLearningRate = peakLearningRate
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.minimumLearningRate = minimumLearningRate
    }

    public func learningRate(at step: Int) -> Float {
        checkStep(step, "WarmupCosineSchedule")
        let peak = Double(peakLearningRate), floor = Double(minimumLearningRate)
        if step < warmupSteps { return Float(peak * Double(step) / Double(warmupSteps)) }
        if step >= totalSteps { return minimumLearningRate }
        let progress = Double(step - warmupSteps) / Double(totalSteps - warmupSteps)
        return Float(floor + (peak - floor) * (1 + Foundation.cos(Double.pi * progress)) / 2)
    }
}

/// The initial rate multiplied by `gamma` every `stepSize` steps: initial·gamma^⌊step / stepSize⌋
/// (torch `StepLR`).
public struct StepSchedule: LearningRateSchedule, Sendable {
    public let initialLearningRate: Float
    public let stepSize: Int
    public let gamma: Float

    public init(initialLearningRate: Float, stepSize: Int, gamma: Float = 0.1) {
        checkRate(initialLearningRate, "initial learning rate", "StepSchedule")
        check(stepSize >= 1, "StepSchedule: stepSize must be ≥ 1, got \(stepSize)")
        check(gamma.isFinite && gamma > 0, "StepSchedule: gamma must be finite and > 0, got \(gamma)")
        self.initialLearningRate = initialLearningRate
        self.stepSize = stepSize
        self.gamma = gamma
    }

    public func learningRate(at step: Int) -> Float {
        checkStep(step, "StepSchedule")
        return Float(Double(initialLearningRate) * Foundation.pow(Double(gamma), Double(step / stepSize)))
    }
}
