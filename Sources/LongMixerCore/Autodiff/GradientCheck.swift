import Foundation

/// Outcome of comparing autodiff gradients with central finite differences.
public struct GradientCheckResult: CustomStringConvertible {
    /// Largest |analytic − numeric| over all checked elements.
    public var maxAbsoluteError: Double = 0
    /// Largest error in units of the tolerance (≤ 1 passes).
    public var worstRatio: Double = 0
    /// Where the worst element is: (input index, flat element index, analytic, numeric).
    public var worst: (input: Int, element: Int, analytic: Double, numeric: Double)? = nil
    public var checkedElements = 0

    public var passed: Bool { worstRatio <= 1 && checkedElements > 0 }

    public var description: String {
        guard let w = worst else { return "gradient check: nothing checked" }
        return String(format: "gradient check %@: %d elements, max |Δ| %.3g, worst input %d element %d: analytic %.6g vs numeric %.6g (%.2f× tolerance)",
                      passed ? "passed" : "FAILED", checkedElements, maxAbsoluteError, w.input, w.element, w.analytic, w.numeric, worstRatio)
    }
}

/// Checks the pullbacks of `function` at `inputs` against central finite differences.
///
/// The output is contracted with a fixed random tensor R (seeded), so every output element
/// contributes: L = Σ f(x)·R, evaluated in double precision. Analytic gradients come from one
/// `backward(seed: R)`; numeric ones from (L(x + h) − L(x − h)) / 2h per input element, with h
/// taken as the actually representable float step. An element passes when
/// |analytic − numeric| ≤ absoluteTolerance + relativeTolerance·max(|analytic|, |numeric|).
/// Defaults suit float32 with inputs of order 1: truncation error O(h²) ≈ 1e-4, rounding
/// ≈ 1e-7·|L|/h. A wrong pullback typically misses by O(1).
///
/// `function` must be deterministic: create any random generator inside it from a fixed seed.
/// Only inputs with `requiresGradient` are perturbed.
public func checkGradients(_ inputs: [Variable], step: Float = 1e-2, absoluteTolerance: Double = 2e-3,
                           relativeTolerance: Double = 2e-3, seed: UInt64 = 0x5EED,
                           _ function: ([Variable]) -> Variable) -> GradientCheckResult {
    for x in inputs where x.requiresGradient { x.grad = nil }
    let output = function(inputs)
    var generator = RandomGenerator(seed: seed)
    let projection = Tensor.uniform(output.shape, low: -1, high: 1, generator: &generator)

    func contracted(_ y: Tensor) -> Double {
        var s: Double = 0
        for i in 0..<y.count { s += Double(y.pointer[i]) * Double(projection.pointer[i]) }
        return s
    }

    var result = GradientCheckResult()
    do { try output.backward(seed: projection) } catch {
        // No input needs a gradient: every numeric derivative must then be zero as well.
    }
    for (index, x) in inputs.enumerated() where x.requiresGradient {
        let analytic = x.grad ?? Tensor(zeros: x.shape)
        for e in 0..<x.value.count {
            let original = x.value[flat: e]
            let plus = original + step, minus = original - step
            x.value[flat: e] = plus
            let lPlus = withoutGradient { contracted(function(inputs).value) }
            x.value[flat: e] = minus
            let lMinus = withoutGradient { contracted(function(inputs).value) }
            x.value[flat: e] = original
            let numeric = (lPlus - lMinus) / Double(plus - minus)
            let a = Double(analytic[flat: e])
            let error = abs(a - numeric)
            let ratio = error / (absoluteTolerance + relativeTolerance * max(abs(a), abs(numeric)))
            result.checkedElements += 1
            result.maxAbsoluteError = max(result.maxAbsoluteError, error)
            if ratio > result.worstRatio || result.worst == nil {
                result.worstRatio = max(ratio, result.worstRatio)
                result.worst = (index, e, a, numeric)
            }
        }
    }
    return result
}
