import Foundation
import Testing
@testable import LongMixerCore

@Suite("Vector math accuracy against libm (double)")
struct VectorMathTests {
    @Test func geluMatchesDoublePrecisionDefinition() {
        // Forward: absolute bound 2e-7·max(1, |x|) + 1e-7 against x·Φ(x) in double (torch's float
        // GELU has absolute, not relative, accuracy in the negative tail too). Derivative: ≤ 3e-7.
        var worstRatio: Double = 0, worstAt: Float = 0, worstDerivative: Double = 0
        var x: Float = -12
        while x < 12 {
            let xd = Double(x)
            let cdf = 0.5 * Foundation.erfc(-xd / 2.0.squareRoot())
            let ref = xd * cdf
            let dRef = cdf + xd * Foundation.exp(-xd * xd / 2) / (2 * Double.pi).squareRoot()
            let ratio = abs(Double(GELUFunction.apply(x)) - ref) / (2e-7 * max(1, abs(xd)) + 1e-7)
            if ratio > worstRatio { worstRatio = ratio; worstAt = x }
            worstDerivative = max(worstDerivative, abs(Double(GELUFunction.apply(x: x, y: 0, gradient: 1)) - dRef))
            x += 0.000_0731
        }
        #expect(worstRatio <= 1, "GELU error / bound = \(worstRatio) at x = \(worstAt)")
        #expect(worstDerivative <= 3e-7, "GELU' error \(worstDerivative)")
    }

    @Test func geluSaturatesAndPropagatesNaN() {
        func g(_ x: Float) -> Float { VectorMath.gelu(Float8(repeating: x))[0] }
        for x: Float in [5.2501, 6, 10, 1e3, 1e20, .greatestFiniteMagnitude, .infinity] {
            #expect(g(x) == x, "gelu(\(x))")
            #expect(g(-x) == 0, "gelu(\(-x))")
        }
        #expect(g(0) == 0)
        #expect(g(.nan).isNaN)
        // Scalar and vector paths agree, and mixed lanes do not disturb each other.
        let v = Float8(-.infinity, -3, -0.5, 0, 0.5, 3, .nan, .infinity)
        let y = VectorMath.gelu(v)
        for i in 0..<8 where !v[i].isNaN { #expect(y[i] == GELUFunction.apply(v[i])) }
        #expect(y[6].isNaN)
    }

    @Test func sigmoidAndSoftplusAreStable() {
        #expect(SigmoidFunction.apply(-100) == 0)
        #expect(SigmoidFunction.apply(100) == 1)
        #expect(SoftplusFunction.apply(100) == 100)
        #expect(abs(SoftplusFunction.apply(-30) - Float(Foundation.exp(-30.0))) < 1e-18)
    }
}

@Suite("Autodiff behaviour")
struct AutodiffTests {
    @Test func nonFiniteLossIsRejected() {
        let x = Variable(Tensor(shape: [2], scalars: [0, 1]), requiresGradient: true)
        let loss = sum(log(x))   // log 0 = −∞
        #expect(throws: AutodiffError.nonFiniteLoss(-.infinity)) { try loss.backward() }
        #expect(x.grad == nil)
    }

    @Test func nonScalarNeedsSeed() {
        let x = Variable(Tensor(ones: [3]), requiresGradient: true)
        #expect(throws: AutodiffError.notScalar([3])) { try (x * 2).backward() }
        try! (x * 2).backward(seed: Tensor(shape: [3], scalars: [1, 2, 3]))
        #expect(x.grad!.scalars == [2, 4, 6])
    }

    @Test func gradientsAccumulateAcrossBackwardCalls() {
        let x = Variable(Tensor(shape: [2], scalars: [1, 2]), requiresGradient: true)
        try! sum(x * 3).backward()
        try! sum(x * 3).backward()
        #expect(x.grad!.scalars == [6, 6])
        x.zeroGradient()
        #expect(x.grad == nil)
    }

    @Test func withoutGradientRecordsNothing() {
        let x = Variable(Tensor(ones: [2]), requiresGradient: true)
        let y = withoutGradient { exp(x) * 2 }
        #expect(!y.requiresGradient)
        #expect(throws: AutodiffError.noGradientPath) { try sum(y).backward() }
        #expect(GradientMode.isEnabled)
    }

    @Test func detachCutsTheGraph() {
        let x = Variable(Tensor(shape: [2], scalars: [1, 2]), requiresGradient: true)
        let y = x * x
        try! sum(y.detached() * x).backward()   // d/dx (c·x) = c = x²
        #expect(x.grad!.scalars == [1, 4])
    }

    @Test func deepChainDoesNotOverflowTheStack() {
        let x = Variable(Tensor(scalar: 1), requiresGradient: true)
        var y = x
        for _ in 0..<20_000 { y = y * 1.0001 }
        try! y.backward()
        #expect(abs(x.grad!.scalar - Float(Foundation.pow(1.0001, 20_000.0))) < 1e-2)
    }

    @Test func crossEntropyMatchesDefinition() {
        let logits = Variable(Tensor(shape: [2, 3], scalars: [1, 2, 3, 0, 0, 0]))
        let loss = crossEntropy(logits: logits, targets: IntTensor([2, 0])).value.scalar
        let ref = (-(3 - Foundation.log(Foundation.exp(1) + Foundation.exp(2) + Foundation.exp(3))) + Foundation.log(3.0)) / 2
        #expect(abs(Double(loss) - ref) < 1e-6)
        let ignored = crossEntropy(logits: logits, targets: IntTensor([2, -100])).value.scalar
        #expect(abs(Double(ignored) - (-(3 - Foundation.log(Foundation.exp(1) + Foundation.exp(2) + Foundation.exp(3))))) < 1e-6)
    }
}

@Suite("Bad input gives one clear error")
struct BadInputTests {
    @Test func shapeMismatchNamesTheShapes() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let a = Variable(Tensor(zeros: [2, 3])), b = Variable(Tensor(zeros: [4]))
            _ = a + b
        }
        let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(message.contains("[2, 3]") && message.contains("[4]") && message.contains("cannot be broadcast"))
    }

    @Test func outOfRangeIndexNamesTheIndex() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let table = Variable(Tensor(zeros: [5, 2]))
            _ = embedding(IntTensor([1, 7]), table: table)
        }
        let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(message.contains("index 7") && message.contains("0..<5"))
    }

    @Test func invalidAxisNamesTheAxis() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = sum(Variable(Tensor(zeros: [2, 3])), axes: [2])
        }
        let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(message.contains("axis 2") && message.contains("rank 2"))
    }

    @Test func matmulInnerDimensionMismatch() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = matmul(Variable(Tensor(zeros: [2, 3])), Variable(Tensor(zeros: [4, 5])))
        }
        let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(message.contains("[2, 3]") && message.contains("[4, 5]"))
    }
}
