import Foundation
import LongMixerCore

/// Initialisations with PyTorch's defaults (same distributions, our own seeded generator).
public enum Initializer {
    /// U(−1/√fanIn, 1/√fanIn): `nn.Linear`'s default for weight (kaiming_uniform with a = √5) and bias.
    public static func linearUniform(_ shape: [Int], fanIn: Int, generator: inout RandomGenerator) -> Tensor {
        let bound = fanIn > 0 ? 1 / Float(fanIn).squareRoot() : 0
        return .uniform(shape, low: -bound, high: bound, generator: &generator)
    }
}

/// y = x·Wᵀ + b. weight: [out, in]; bias: [out]. Default init U(±1/√in) for both (PyTorch).
public final class Linear: Module, UnaryLayer {
    public let weight: Parameter
    public let bias: Parameter?

    public init(inputDimensions: Int, outputDimensions: Int, bias: Bool = true, generator: inout RandomGenerator) {
        check(inputDimensions > 0 && outputDimensions > 0,
                     "Linear: dimensions must be positive, got \(inputDimensions) → \(outputDimensions)")
        weight = Parameter(Initializer.linearUniform([outputDimensions, inputDimensions], fanIn: inputDimensions, generator: &generator))
        self.bias = bias ? Parameter(Initializer.linearUniform([outputDimensions], fanIn: inputDimensions, generator: &generator)) : nil
    }

    /// Linear with N(0, σ) weights and zero bias.
    public init(inputDimensions: Int, outputDimensions: Int, bias: Bool = true, standardDeviation: Float, generator: inout RandomGenerator) {
        weight = Parameter(.normal([outputDimensions, inputDimensions], standardDeviation: standardDeviation, generator: &generator))
        self.bias = bias ? Parameter(Tensor(zeros: [outputDimensions])) : nil
    }

    public var inputDimensions: Int { weight.shape[1] }
    public var outputDimensions: Int { weight.shape[0] }

    public func callAsFunction(_ x: Variable) -> Variable { linear(x, weight: weight, bias: bias) }
}

/// Token embedding table [V, D], N(0, 1) init (PyTorch); the padding row starts at zero and
/// receives no gradient.
public final class Embedding: Module {
    public let weight: Parameter
    public let paddingIndex: Int?

    public init(count: Int, dimensions: Int, paddingIndex: Int? = nil, standardDeviation: Float = 1, generator: inout RandomGenerator) {
        check(count > 0 && dimensions > 0, "Embedding: count \(count) and dimensions \(dimensions) must be positive")
        if let p = paddingIndex { check(p >= 0 && p < count, "Embedding: padding index \(p) outside 0..<\(count)") }
        var table = Tensor.normal([count, dimensions], standardDeviation: standardDeviation, generator: &generator)
        if let p = paddingIndex {
            table.withUnsafeMutablePointer { $0.advanced(by: p * dimensions).update(repeating: 0, count: dimensions) }
        }
        weight = Parameter(table)
        self.paddingIndex = paddingIndex
    }

    public func callAsFunction(_ ids: IntTensor) -> Variable { embedding(ids, table: weight, paddingIndex: paddingIndex) }
}

/// Layer norm over the last axis; γ = 1, β = 0 at init.
public final class LayerNorm: Module, UnaryLayer {
    public let weight: Parameter
    public let bias: Parameter
    public let epsilon: Float

    public init(dimensions: Int, epsilon: Float = 1e-5) {
        weight = Parameter(Tensor(ones: [dimensions]))
        bias = Parameter(Tensor(zeros: [dimensions]))
        self.epsilon = epsilon
    }

    public func callAsFunction(_ x: Variable) -> Variable { layerNorm(x, gamma: weight, beta: bias, epsilon: epsilon) }
}

/// Inverted dropout with its own seeded stream; identity in eval mode.
public final class Dropout: Module, UnaryLayer {
    public let probability: Float
    let random: RandomStream

    public init(probability: Float, generator: inout RandomGenerator) {
        check(probability >= 0 && probability < 1, "Dropout: probability \(probability) outside [0, 1)")
        self.probability = probability
        random = RandomStream(generator.split())
    }

    public func callAsFunction(_ x: Variable) -> Variable {
        dropout(x, probability: probability, training: isTraining, generator: &random.generator)
    }
}

/// Pointwise activations as layers.
public final class Activation: Module, UnaryLayer {
    public enum Kind: String, Codable, CaseIterable, Sendable { case gelu, relu, tanh, sigmoid, softplus, identity }
    public let kind: Kind
    public init(_ kind: Kind) { self.kind = kind }

    public func callAsFunction(_ x: Variable) -> Variable {
        switch kind {
        case .gelu: return gelu(x)
        case .relu: return relu(x)
        case .tanh: return tanh(x)
        case .sigmoid: return sigmoid(x)
        case .softplus: return softplus(x)
        case .identity: return x
        }
    }
}

/// Layers applied in order; children are named "0", "1", … (as `nn.Sequential`).
public final class Sequential: Module, UnaryLayer {
    public let layers: [Module]

    public init(_ layers: [Module]) {
        for l in layers { check(l is UnaryLayer, "Sequential: \(type(of: l)) is not a UnaryLayer") }
        self.layers = layers
    }

    public override func namedChildren() -> [(String, Module)] { layers.enumerated().map { ("\($0.offset)", $0.element) } }

    public func callAsFunction(_ x: Variable) -> Variable {
        layers.reduce(x) { ($1 as! UnaryLayer)($0) }
    }
}

/// Linear(in, hidden) → activation → Linear(hidden, out), as a Sequential (names "0.weight", "2.weight").
public func makeMLP(inputDimensions: Int, hiddenDimensions: Int, outputDimensions: Int,
                    activation: Activation.Kind = .gelu, generator: inout RandomGenerator) -> Sequential {
    Sequential([
        Linear(inputDimensions: inputDimensions, outputDimensions: hiddenDimensions, generator: &generator),
        Activation(activation),
        Linear(inputDimensions: hiddenDimensions, outputDimensions: outputDimensions, generator: &generator),
    ])
}
