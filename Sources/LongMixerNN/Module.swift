import Foundation
import LongMixerCore

/// A trainable tensor: a leaf Variable that requires a gradient. A reference, so optimizers
/// update it in place and every graph node that used it sees the same object.
public final class Parameter: Variable {
    public init(_ value: Tensor) { super.init(value, requiresGradient: true) }
}

/// A non-trainable tensor saved with the model (e.g. a fixed permutation or decay rates), so
/// a checkpoint alone reproduces the model's outputs.
public final class Buffer {
    public var value: Tensor
    public init(_ value: Tensor) { self.value = value }
}

/// A random stream a module draws from while it trains (dropout masks, redrawn features). A
/// reference found by reflection like a `Buffer`, so a checkpoint can save where every stream stands
/// and a resumed run draws the same numbers as one that never stopped. `count` is the owner's
/// position counter that goes with the stream (FAVOR+: passes since the last redraw; else 0).
public final class RandomStream {
    public var generator: RandomGenerator
    public var count = 0
    public init(_ generator: RandomGenerator) { self.generator = generator }
}

/// Tensors computed from parameters alone, kept between forwards (not saved, not trained): `tables` returns
/// the kept ones while every source is bytewise what it was when they were made, and makes them anew
/// otherwise (after an optimizer step, a loaded checkpoint, another length). The check reads each source once,
/// which is what makes keeping safe without tracking every write to a parameter.
public final class ParameterDerivedTables: @unchecked Sendable {
    private let lock = NSLock()
    /// The sources' shapes and floats, in order, when `kept` was made.
    private var shapes: [[Int]] = []
    private var floats: [Float] = []
    private var kept: [Tensor] = []

    public init() {}

    /// The tables derived from `sources` by `make`: the kept ones when the sources are unchanged, else `make()`'s (then kept).
    public func tables(derivedFrom sources: [Tensor], make: () -> [Tensor]) -> [Tensor] {
        lock.lock()
        defer { lock.unlock() }
        if !kept.isEmpty && sources.map(\.shape) == shapes && matches(sources) { return kept }
        kept = make()
        shapes = sources.map(\.shape)
        floats.removeAll(keepingCapacity: true)
        for t in sources { floats.append(contentsOf: UnsafeBufferPointer(start: t.pointer, count: t.count)) }
        return kept
    }

    private func matches(_ sources: [Tensor]) -> Bool {
        var offset = 0
        return floats.withUnsafeBytes { saved in
            for t in sources {
                let bytes = t.count * MemoryLayout<Float>.stride
                guard offset + bytes <= saved.count, memcmp(saved.baseAddress! + offset, UnsafeRawPointer(t.pointer), bytes) == 0
                else { return false }
                offset += bytes
            }
            return offset == saved.count
        }
    }
}

/// Base class of layers and models (mlx-swift style). Parameters, buffers and sub-modules are
/// found by reflection over stored properties, so names are the property names joined with dots
/// (`blocks.0.mixer.query.weight`); arrays of modules get their index as a path component.
/// Properties whose name starts with `_` drop the underscore.
open class Module {
    public private(set) var isTraining = true

    public init() {}

    /// Direct sub-modules with their names, in declaration order.
    open func namedChildren() -> [(String, Module)] {
        reflectedMembers().compactMap { name, value in
            if let m = value as? Module { return [(name, m)] }
            if let ms = value as? [Module] { return ms.enumerated().map { ("\(name).\($0.offset)", $0.element) } }
            return nil
        }.flatMap { $0 }
    }

    /// Parameters held directly by this module.
    open func localParameters() -> [(String, Parameter)] {
        reflectedMembers().compactMap { name, value in (value as? Parameter).map { (name, $0) } }
    }

    /// Buffers held directly by this module.
    open func localBuffers() -> [(String, Buffer)] {
        reflectedMembers().compactMap { name, value in (value as? Buffer).map { (name, $0) } }
    }

    /// Random streams held directly by this module.
    open func localRandomStreams() -> [(String, RandomStream)] {
        reflectedMembers().compactMap { name, value in (value as? RandomStream).map { (name, $0) } }
    }

    private func reflectedMembers() -> [(String, Any)] {
        var result: [(String, Any)] = []
        var mirror: Mirror? = Mirror(reflecting: self)
        var levels: [[(String, Any)]] = []
        while let m = mirror {
            levels.append(m.children.compactMap { child in
                guard var label = child.label else { return nil }
                if label.hasPrefix("$__lazy_storage_$_") { label.removeFirst("$__lazy_storage_$_".count) }
                if label.hasPrefix("_") { label.removeFirst() }
                // Unwrap optionals so `var bias: Parameter?` is found.
                let childMirror = Mirror(reflecting: child.value)
                if childMirror.displayStyle == .optional {
                    guard let wrapped = childMirror.children.first?.value else { return nil }
                    return (label, wrapped)
                }
                return (label, child.value)
            })
            mirror = m.superclassMirror
        }
        // Superclass members first, like PyTorch registration order through super().__init__.
        for level in levels.reversed() { result.append(contentsOf: level) }
        return result
    }

    /// Every parameter with its dotted path, depth-first in declaration order.
    public func namedParameters() -> [(String, Parameter)] {
        var out = localParameters()
        for (name, child) in namedChildren() {
            out += child.namedParameters().map { ("\(name).\($0.0)", $0.1) }
        }
        return out
    }

    public func namedBuffers() -> [(String, Buffer)] {
        var out = localBuffers()
        for (name, child) in namedChildren() {
            out += child.namedBuffers().map { ("\(name).\($0.0)", $0.1) }
        }
        return out
    }

    /// Every random stream with its dotted path, depth-first in declaration order.
    public func namedRandomStreams() -> [(String, RandomStream)] {
        var out = localRandomStreams()
        for (name, child) in namedChildren() {
            out += child.namedRandomStreams().map { ("\(name).\($0.0)", $0.1) }
        }
        return out
    }

    public func parameters() -> [Parameter] { namedParameters().map(\.1) }

    /// Number of trainable scalars.
    public var parameterCount: Int { parameters().reduce(0) { $0 + $1.value.count } }

    /// Checks tensors about to be loaded into this module's own parameters and buffers (keyed by
    /// their local names, e.g. `permutation`) against what they mean, before anything is assigned:
    /// a module whose buffers hold indices or rates overrides this so a corrupt checkpoint is one
    /// error at load instead of a trap on first use. Every tensor has already been checked for
    /// shape and finiteness. Throw `LoadedStateViolation` naming the local tensor.
    open func validateLoadedState(_ local: [String: Tensor]) throws {}

    /// Training mode (dropout active) for this module and all sub-modules.
    public func train(_ on: Bool = true) {
        isTraining = on
        for (_, child) in namedChildren() { child.train(on) }
    }

    /// Evaluation mode.
    public func eval() { train(false) }

    public func zeroGradients() { for p in parameters() { p.grad = nil } }

    /// The module tree with parameter shapes, one line each.
    public func summary() -> String {
        var lines = ["\(type(of: self)) — \(parameterCount) parameters"]
        for (name, p) in namedParameters() { lines.append("  \(name) \(p.shape)") }
        for (name, b) in namedBuffers() { lines.append("  \(name) \(b.value.shape) (buffer)") }
        return lines.joined(separator: "\n")
    }
}

/// Why a tensor cannot be loaded into a module (thrown by `Module.validateLoadedState`; the loader
/// adds the module's path to `tensor`).
public struct LoadedStateViolation: Error, Equatable {
    /// Local name of the tensor (`permutation`).
    public var tensor: String
    /// The offending value and where it is (`-31 at [1, 4]`).
    public var value: String?
    public var why: String
    public init(tensor: String, value: String? = nil, why: String) {
        self.tensor = tensor
        self.value = value
        self.why = why
    }
}

/// Something that maps one Variable to another.
public protocol UnaryLayer: AnyObject {
    func callAsFunction(_ x: Variable) -> Variable
}
