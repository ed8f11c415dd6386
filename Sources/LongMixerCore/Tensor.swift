import Foundation
import CLongMixerMemory

/// One contiguous, 64-byte aligned buffer of Float32. Tensors share it until one of them writes
/// (copy-on-write through `isKnownUniquelyReferenced`).
public final class FloatStorage: @unchecked Sendable {
    public let count: Int
    public let base: UnsafeMutablePointer<Float>

    /// Uninitialised storage of `count` floats.
    public init(count: Int) {
        check(count >= 0, "storage size must be non-negative, got \(count)")
        self.count = count
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        TensorMemory.allocated(bytes)
        if bytes >= LargeBufferPool.thresholdBytes {
            base = LargeBufferPool.allocate(bytes: bytes).bindMemory(to: Float.self, capacity: count)
            return
        }
        _ = FloatStorage.heapKept
        var raw: UnsafeMutableRawPointer?
        let status = posix_memalign(&raw, 64, bytes)
        check(status == 0 && raw != nil, "cannot allocate \(bytes) bytes for a tensor")
        base = raw!.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    /// glibc gives the top of its heap back to the system whenever more than its adaptive trim threshold is free
    /// there. A training step frees most of its tensors at its end, so steps returned those pages and page-faulted
    /// them in again (`bench paramixer --models paramixer-cdil-apc --lengths 4096`: 30 % fewer page faults and
    /// 3.5 % less CPU time with fixed thresholds, and no more steps 20–30 % slower than the rest). Blocks below
    /// `LargeBufferPool.thresholdBytes` (the larger ones are the pool's) now stay in the heap unless 1 GiB is free
    /// at its top.
    static let heapKept: Void = lm_keep_heap(Int32(LargeBufferPool.thresholdBytes), 1 << 30)

    deinit {
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        TensorMemory.released(bytes)
        if bytes >= LargeBufferPool.thresholdBytes { LargeBufferPool.release(UnsafeMutableRawPointer(base), bytes: bytes) } else { free(base) }
    }

    func copy() -> FloatStorage {
        let other = FloatStorage(count: count)
        other.base.update(from: base, count: count)
        return other
    }
}

/// Number of elements of a shape; validates that every extent is non-negative.

public func elementCount(_ shape: [Int]) -> Int {
    var n = 1
    for d in shape {
        check(d >= 0, "shape \(shape) has a negative extent")
        n *= d
    }
    return n
}

/// Float32 tensor: contiguous, row-major, copy-on-write. Views that would be strided are
/// materialised by the ops that make them, so every kernel sees dense memory.
public struct Tensor: @unchecked Sendable {
    public private(set) var shape: [Int]
    @usableFromInline var storage: FloatStorage

    /// Wraps existing storage (no copy). `shape` must describe exactly `storage.count` elements.
    public init(shape: [Int], storage: FloatStorage) {
        check(elementCount(shape) == storage.count,
                     "shape \(shape) holds \(elementCount(shape)) elements, storage has \(storage.count)")
        self.shape = shape
        self.storage = storage
    }

    /// Uninitialised tensor; every element must be written before it is read.
    public init(uninitializedShape shape: [Int]) {
        self.init(shape: shape, storage: FloatStorage(count: elementCount(shape)))
    }

    public init(repeating value: Float, shape: [Int]) {
        self.init(uninitializedShape: shape)
        storage.base.initialize(repeating: value, count: storage.count)
    }

    public init(zeros shape: [Int]) { self.init(repeating: 0, shape: shape) }
    public init(ones shape: [Int]) { self.init(repeating: 1, shape: shape) }

    public init(shape: [Int], scalars: [Float]) {
        check(elementCount(shape) == scalars.count,
                     "shape \(shape) needs \(elementCount(shape)) scalars, got \(scalars.count)")
        self.init(uninitializedShape: shape)
        scalars.withUnsafeBufferPointer { storage.base.update(from: $0.baseAddress!, count: $0.count) }
    }

    /// A rank-0 tensor.
    public init(scalar: Float) { self.init(shape: [], scalars: [scalar]) }

    /// 1-D tensor of the values start, start+step, … below `end`.
    public init(arange start: Float, _ end: Float, step: Float = 1) {
        check(step != 0 && (end - start) / step >= 0, "arange(\(start), \(end), step: \(step)) is empty or infinite")
        let n = Int(((end - start) / step).rounded(.up))
        self.init(shape: [n], scalars: (0..<n).map { start + Float($0) * step })
    }

    public var rank: Int { shape.count }
    public var count: Int { storage.count }
    public var scalars: [Float] { Array(UnsafeBufferPointer(start: storage.base, count: count)) }

    /// The single value of a one-element tensor.
    public var scalar: Float {
        check(count == 1, "scalar of a tensor of shape \(shape)")
        return storage.base[0]
    }

    public subscript(flat index: Int) -> Float {
        get {
            check(index >= 0 && index < count, "flat index \(index) out of range 0..<\(count)")
            return storage.base[index]
        }
        set {
            check(index >= 0 && index < count, "flat index \(index) out of range 0..<\(count)")
            makeUnique()
            storage.base[index] = newValue
        }
    }

    
    public func withUnsafePointer<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafePointer(storage.base))
    }

    
    public mutating func withUnsafeMutablePointer<R>(_ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        makeUnique()
        return try body(storage.base)
    }

    /// Read-only base pointer, valid while this tensor (or a copy sharing its storage) is alive.
    public var pointer: UnsafePointer<Float> { UnsafePointer(storage.base) }

    
    public mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
    }

    /// Same storage, new shape (free). Use `-1` for one inferred extent.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        let resolved = resolveShape(newShape, count: count, from: shape)
        return Tensor(shape: resolved, storage: storage)
    }
}

/// Resolves a single `-1` in `shape`, checking that the element count is preserved.
public func resolveShape(_ shape: [Int], count: Int, from original: [Int]) -> [Int] {
    let inferred = shape.indices.filter { shape[$0] == -1 }
    check(inferred.count <= 1, "reshape \(original) → \(shape): at most one -1 allowed")
    var result = shape
    if let i = inferred.first {
        let known = shape.enumerated().filter { $0.offset != i }.reduce(1) { $0 * $1.element }
        check(known > 0 && count % known == 0, "cannot reshape \(original) (\(count) elements) to \(shape)")
        result[i] = count / known
    }
    check(elementCount(result) == count, "cannot reshape \(original) (\(count) elements) to \(shape)")
    return result
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let preview = scalars.prefix(8).map { String(format: "%.5g", $0) }.joined(separator: ", ")
        return "Tensor(shape: \(shape), [\(preview)\(count > 8 ? ", …" : "")])"
    }
}

/// Int32 tensor for token ids, class labels and gather indices. Row-major, copy-on-write (Array).
public struct IntTensor: Equatable, Sendable {
    public private(set) var shape: [Int]
    public var scalars: [Int32]

    public init(shape: [Int], scalars: [Int32]) {
        check(elementCount(shape) == scalars.count,
                     "shape \(shape) needs \(elementCount(shape)) scalars, got \(scalars.count)")
        self.shape = shape
        self.scalars = scalars
    }

    public init(zeros shape: [Int]) { self.init(shape: shape, scalars: [Int32](repeating: 0, count: elementCount(shape))) }

    public init(_ values: [Int]) { self.init(shape: [values.count], scalars: values.map { Int32($0) }) }

    public var rank: Int { shape.count }
    public var count: Int { scalars.count }

    public func reshaped(_ newShape: [Int]) -> IntTensor {
        IntTensor(shape: resolveShape(newShape, count: count, from: shape), scalars: scalars)
    }

    /// Checks every index lies in 0..<upperBound (plus an optional allowed sentinel), naming the offender.
    public func checkRange(_ upperBound: Int, what: String, allowing sentinel: Int? = nil) {
        for (i, v) in scalars.enumerated() where (v < 0 || Int(v) >= upperBound) && Int(v) != sentinel {
            fatalError("\(what): index \(v) at position \(i) is out of range 0..<\(upperBound)")
        }
    }
}
