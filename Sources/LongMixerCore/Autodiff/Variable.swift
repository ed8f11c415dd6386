import Foundation

/// A tensor in the autodiff graph. The graph hangs off the values (micrograd style): each
/// non-leaf Variable keeps its inputs and a pullback mapping the gradient of its value to the
/// gradients of its inputs. `backward()` walks the graph in reverse topological order and
/// accumulates into the leaves' `grad`.
open class Variable {
    /// The value. Parameters are updated in place by optimizers (`Parameter.value = …`).
    public var value: Tensor
    /// Accumulated gradient of a leaf that requires it (nil until the first backward).
    public var grad: Tensor?
    public let requiresGradient: Bool
    @usableFromInline let inputs: [Variable]
    @usableFromInline let pullback: ((Tensor) -> [Tensor?])?

    /// A leaf.
    public init(_ value: Tensor, requiresGradient: Bool = false) {
        self.value = value
        self.requiresGradient = requiresGradient
        self.inputs = []
        self.pullback = nil
    }

    /// An op result; `pullback(g)` returns one gradient (or nil) per input, shaped like that input.
    @usableFromInline init(value: Tensor, inputs: [Variable], pullback: @escaping (Tensor) -> [Tensor?]) {
        self.value = value
        self.requiresGradient = true
        self.inputs = inputs
        self.pullback = pullback
    }

    public var shape: [Int] { value.shape }
    public var rank: Int { value.rank }
    public var isLeaf: Bool { pullback == nil }

    /// The same value cut from the graph.
    public func detached() -> Variable { Variable(value) }

    public func zeroGradient() { grad = nil }
}

/// Whether ops record the graph. Task-local (and so thread-safe): `withoutGradient { }` in one
/// task does not switch recording off for another running concurrently.
public enum GradientMode {
    @TaskLocal public static var isEnabled = true
}

/// Runs `body` without recording the autodiff graph (evaluation, optimizer updates).
@discardableResult
public func withoutGradient<R>(_ body: () throws -> R) rethrows -> R {
    try GradientMode.$isEnabled.withValue(false) { try body() }
}

/// Builds an op's result: records the graph only if recording is on and some input needs it.

public func makeResult(_ value: Tensor, _ inputs: [Variable], _ pullback: @escaping (Tensor) -> [Tensor?]) -> Variable {
    if GradientMode.isEnabled && inputs.contains(where: { $0.requiresGradient }) {
        return Variable(value: value, inputs: inputs, pullback: pullback)
    }
    return Variable(value)
}

public enum AutodiffError: Error, CustomStringConvertible, Equatable {
    case nonFiniteLoss(Float)
    case notScalar([Int])
    case noGradientPath

    public var description: String {
        switch self {
        case .nonFiniteLoss(let v): return "backward: the loss is not finite (\(v)); no gradients were computed"
        case .notScalar(let s): return "backward: the loss must be a single value, got shape \(s); pass `seed:` for a non-scalar output"
        case .noGradientPath: return "backward: the value does not depend on any variable that requires a gradient"
        }
    }
}

extension Variable {
    /// Back-propagates from this value and accumulates gradients into every leaf that requires
    /// one. A scalar loss is seeded with 1 and must be finite; pass `seed` for other outputs.
    public func backward(seed: Tensor? = nil) throws {
        if seed == nil {
            guard value.count == 1 else { throw AutodiffError.notScalar(value.shape) }
            guard value.scalar.isFinite else { throw AutodiffError.nonFiniteLoss(value.scalar) }
        } else {
            check(seed!.shape == value.shape, "backward: seed shape \(seed!.shape) ≠ value shape \(value.shape)")
        }
        guard requiresGradient else { throw AutodiffError.noGradientPath }

        // Reverse topological order by iterative DFS (deep graphs would overflow a recursive one).
        var order: [Variable] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(Variable, Bool)] = [(self, false)]
        while let (node, expanded) = stack.popLast() {
            if expanded { order.append(node); continue }
            if !visited.insert(ObjectIdentifier(node)).inserted { continue }
            stack.append((node, true))
            for input in node.inputs where input.requiresGradient && !visited.contains(ObjectIdentifier(input)) {
                stack.append((input, false))
            }
        }

        var grads: [ObjectIdentifier: Tensor] = [ObjectIdentifier(self): seed ?? Tensor(repeating: 1, shape: value.shape)]
        for node in order.reversed() {
            guard let g = grads.removeValue(forKey: ObjectIdentifier(node)) else { continue }
            guard let pullback = node.pullback else {
                if node.grad == nil { node.grad = g } else { node.grad!.add(g) }
                continue
            }
            let inputGrads = pullback(g)
            check(inputGrads.count == node.inputs.count, "pullback returned \(inputGrads.count) gradients for \(node.inputs.count) inputs")
            for (input, ig) in zip(node.inputs, inputGrads) where input.requiresGradient {
                guard let ig else { continue }
                check(ig.shape == input.shape, "pullback gradient shape \(ig.shape) ≠ input shape \(input.shape)")
                let key = ObjectIdentifier(input)
                if grads[key] == nil { grads[key] = ig } else { grads[key]!.add(ig) }
            }
        }
    }
}

extension Tensor {
    /// self += alpha·other (same shape): in place when the storage is this tensor's alone; when it is shared
    /// (a gradient handed on to two inputs), summed into a new buffer in one pass instead of a copy and an add.
    public mutating func add(_ other: Tensor, scaledBy alpha: Float = 1) {
        check(shape == other.shape, "add: shapes \(shape) and \(other.shape) differ")
        let n = count
        if isKnownUniquelyReferenced(&storage) {
            axpyKernel(y: storage.base, x: other.pointer, alpha: alpha, count: n)
        } else {
            let sum = FloatStorage(count: n)
            axpyKernel(out: sum.base, y: pointer, x: other.pointer, alpha: alpha, count: n)
            storage = sum
        }
    }
}
