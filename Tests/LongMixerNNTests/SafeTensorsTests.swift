import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerNN
import LongMixerCore
import LongMixerData
import LongMixerModels
import LongMixerTraining

// safetensors reader/writer: round trips, interoperability with Python's `safetensors` (fixtures
// written by Scripts/reference/safetensors_fixture.py and by this suite), and a malformed-file suite.
//
// Regenerate the Swift-written fixtures and check them with Python (from the package root):
//     LONGMIXER_WRITE_FIXTURES=1 swift test --filter SafeTensorsTests
//     python3 Scripts/reference/safetensors_fixture.py

// MARK: - Helpers

private func floatBits(_ t: Tensor) -> [UInt32] { t.scalars.map(\.bitPattern) }

/// A file from a header string and data bytes; the header is padded with spaces to a multiple of 8
/// unless `pad` is false; `declaredLength` overrides the length field.
private func makeFile(_ header: String, data: [UInt8] = [], pad: Bool = true, declaredLength: UInt64? = nil) -> Data {
    var h = Array(header.utf8)
    if pad { while h.count % 8 != 0 { h.append(0x20) } }
    var n = (declaredLength ?? UInt64(h.count)).littleEndian
    var out = Data(bytes: &n, count: 8)
    out.append(contentsOf: h)
    out.append(contentsOf: data)
    return out
}

/// Expects decoding to throw a SafeTensorsError whose message contains every fragment.
private func expectRejected(_ data: Data, _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        _ = try SafeTensors.decode(data)
        Issue.record("decoding succeeded; expected an error mentioning \(fragments)", sourceLocation: sourceLocation)
    } catch let e as SafeTensorsError {
        for f in fragments {
            #expect(e.description.contains(f), "error \"\(e.description)\" does not mention \"\(f)\"", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("unexpected error type \(error)", sourceLocation: sourceLocation)
    }
}

/// The tensors of Tests/Fixtures/swift_written*.safetensors (mirrored in safetensors_fixture.py).
func swiftWrittenTensors() -> (tensors: [String: NamedTensor], metadata: [String: String]) {
    let tensors: [String: NamedTensor] = [
        "a.weight": .float(Tensor(shape: [2, 3], scalars: [0.5, -1.25, Float(bitPattern: 0x0020_AAC8), .infinity, -0.0, 1e30])),
        "b.ids": .int(IntTensor(shape: [2, 2], scalars: [0, -1, .max, .min])),
        "c.scalar": .float(Tensor(scalar: 3.5)),
        "d.empty": .float(Tensor(zeros: [0])),
        "e.rank4": .float(Tensor(shape: [1, 2, 1, 3], scalars: (0..<6).map { Float($0) * 0.25 - 0.5 })),
        "f.empty_ids": .int(IntTensor(zeros: [2, 0])),
        // numpy's nan and -nan bit patterns (quiet NaN, positive and negative sign).
        "g.nan": .float(Tensor(shape: [2], scalars: [Float(bitPattern: 0x7FC0_0000), Float(bitPattern: 0xFFC0_0000)])),
    ]
    return (tensors, ["framework": "LongMixer", "note": "swift_written fixture ✓"])
}

/// Expects two named-tensor maps to hold the same names, kinds, shapes and bit-identical values.
private func expectIdentical(_ a: [String: NamedTensor], _ b: [String: NamedTensor], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(Set(a.keys) == Set(b.keys), sourceLocation: sourceLocation)
    for (name, x) in a {
        guard let y = b[name] else { continue }
        #expect(x.shape == y.shape, "\(name): shape \(x.shape) vs \(y.shape)", sourceLocation: sourceLocation)
        switch (x, y) {
        case (.float(let s), .float(let t)):
            #expect(floatBits(s) == floatBits(t), "\(name): float bits differ", sourceLocation: sourceLocation)
        case (.int(let s), .int(let t)):
            #expect(s == t, "\(name): int values differ", sourceLocation: sourceLocation)
        default:
            Issue.record("\(name): kind \(x) vs \(y)", sourceLocation: sourceLocation)
        }
    }
}

/// A small valid file (two tensors, metadata) for the corruption tests.
private func smallValidFile() throws -> Data {
    try SafeTensors.encode([
        "w": .float(Tensor(shape: [2, 2], scalars: [1, -2, 3.5, 0])),
        "ids": .int(IntTensor([3, -4, 5])),
        "s": .float(Tensor(scalar: 7)),
    ], metadata: ["k": "v"])
}

// MARK: - Round trips

@Suite struct SafeTensorsTests {
    @Test func roundTripEveryDtypeRankAndEmptyTensors() throws {
        var generator = RandomGenerator(seed: 11)
        let shapes: [[Int]] = [[], [5], [2, 3], [2, 1, 3], [1, 2, 2, 3], [0], [2, 0, 3], [3, 0]]
        var tensors: [String: NamedTensor] = [:]
        for (i, shape) in shapes.enumerated() {
            let n = shape.reduce(1, *)
            tensors["float.rank\(shape.count).\(i)"] = .float(.normal(shape, standardDeviation: 3, generator: &generator))
            tensors["int.rank\(shape.count).\(i)"] = .int(IntTensor(shape: shape, scalars: (0..<n).map { Int32($0 * 7919 % 2001) - 1000 }))
        }
        tensors["float.special"] = .float(Tensor(shape: [6], scalars: [-0.0, .infinity, -.infinity, .nan, .leastNonzeroMagnitude, .greatestFiniteMagnitude]))
        tensors["int.extremes"] = .int(IntTensor(shape: [2], scalars: [.min, .max]))
        tensors["unicode name ✓ \"quoted\" \\ \n"] = .float(Tensor(scalar: 1))
        let metadata = ["epoch": "3", "note": "é ✓ \"q\" \\ \t"]

        for format in [SafeTensors.IntegerFormat.i32, .i64] {
            let data = try SafeTensors.encode(tensors, metadata: metadata, integerFormat: format)
            let (decoded, meta) = try SafeTensors.decode(data)
            expectIdentical(tensors, decoded)
            #expect(meta == metadata)
            // The header length is a multiple of 8 and the file is exactly header + data.
            let n = data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            #expect(n % 8 == 0)
            let dataBytes = tensors.values.reduce(0) { total, t in
                switch t {
                case .float(let f): return total + 4 * f.count
                case .int(let i): return total + (format == .i32 ? 4 : 8) * i.count
                }
            }
            #expect(data.count == 8 + Int(n) + dataBytes)
        }
        // Empty map and a data slice whose indices do not start at zero.
        let empty = try SafeTensors.encode([:])
        #expect(try SafeTensors.decode(empty).tensors.isEmpty)
        var shifted = Data([0xAA, 0xBB, 0xCC])
        shifted.append(try SafeTensors.encode(tensors))
        let slice = shifted.dropFirst(3)
        #expect(slice.startIndex == 3)
        expectIdentical(tensors, try SafeTensors.decode(slice).tensors)
    }

    @Test func encodeRejectsReservedName() {
        #expect(throws: SafeTensorsError.self) { try SafeTensors.encode(["__metadata__": .float(Tensor(scalar: 1))]) }
    }

    @Test func halfToFloatIsExactForAllBitPatterns() {
        var checked = 0
        for bits in 0...UInt16.max {
            let fast = SafeTensors.floatFromHalfBits(bits)
            let reference = SafeTensors.floatFromHalfBitsReference(bits)
            let isNaN = (bits & 0x7C00) == 0x7C00 && (bits & 0x03FF) != 0
            if isNaN {
                #expect(fast.isNaN && reference.isNaN && fast.sign == reference.sign, "F16 0x\(String(bits, radix: 16))")
            } else {
                #expect(fast.bitPattern == reference.bitPattern, "F16 0x\(String(bits, radix: 16)): \(fast) vs \(reference)")
            }
            checked += 1
        }
        #expect(checked == 65536)
        // Spot values from the definition of binary16.
        #expect(SafeTensors.floatFromHalfBitsReference(0x0001) == 0x1p-24)
        #expect(SafeTensors.floatFromHalfBitsReference(0x03FF) == 1023 * 0x1p-24)
        #expect(SafeTensors.floatFromHalfBitsReference(0x0400) == 0x1p-14)
        #expect(SafeTensors.floatFromHalfBitsReference(0x7BFF) == 65504)
        #expect(SafeTensors.floatFromHalfBitsReference(0x3555) == 0x1.554p-2)
        #expect(SafeTensors.floatFromHalfBitsReference(0x8000).bitPattern == 0x8000_0000)
        #expect(SafeTensors.floatFromHalfBitsReference(0xFC00) == -.infinity)
    }

    // MARK: - Interoperability with Python

    @Test func readsPythonWrittenFixture() throws {
        let (tensors, metadata) = try SafeTensors.loadWithMetadata(from: fixtureURL("python_written.safetensors"))
        #expect(metadata == ["format": "pt", "written_by": "safetensors_fixture.py", "unicode": "héllo ✓ \"quoted\"\n"])
        #expect(Set(tensors.keys) == ["f32.matrix", "f16.special", "i32.ids", "i64.ids", "scalar.f32", "scalar.i64", "empty.f32", "rank4.f32"])

        let f32 = try #require(tensors["f32.matrix"]?.floatTensor)
        #expect(f32.shape == [3, 3])
        let f32Expected: [Float] = [0.5, -1.25, Float(bitPattern: 0x0020_AAC8), .infinity, -0.0, 1e30, -.infinity, .nan, 3.1415927]
        #expect(floatBits(f32) == f32Expected.map(\.bitPattern))   // numpy's nan is 0x7FC00000, as Swift's .nan

        let f16 = try #require(tensors["f16.special"]?.floatTensor)
        #expect(f16.shape == [4, 4])
        let half: [Float] = [0, -0.0, 1, -2, 65504, 0x1p-14, 0x1p-24, 1023 * 0x1p-24, 513 * 0x1p-24,
                             .infinity, -.infinity, .nan, .nan, -.nan, 0x1.554p-2, -65504]
        for (i, (got, want)) in zip(f16.scalars, half).enumerated() {
            if want.isNaN {
                #expect(got.isNaN && got.sign == want.sign, "f16.special[\(i)] = \(got), want NaN with sign \(want.sign)")
            } else {
                #expect(got.bitPattern == want.bitPattern, "f16.special[\(i)] = \(got), want \(want)")
            }
        }

        #expect(tensors["i32.ids"]?.intTensor == IntTensor(shape: [3, 4], scalars: [0, 1, -1, 7, .max, .min, 42, -42, 5, 4, 3, 2]))
        #expect(tensors["i64.ids"]?.intTensor == IntTensor(shape: [5], scalars: [0, -1, .max, .min, 123456789]))
        let scalar = try #require(tensors["scalar.f32"]?.floatTensor)
        #expect(scalar.shape == [] && scalar.scalar == 2.5)
        #expect(tensors["scalar.i64"]?.intTensor == IntTensor(shape: [], scalars: [-7]))
        #expect(tensors["empty.f32"]?.floatTensor?.shape == [0, 3])
        let rank4 = try #require(tensors["rank4.f32"]?.floatTensor)
        #expect(rank4.shape == [2, 1, 2, 3])
        #expect(rank4.scalars == (0..<12).map { Float($0) * 0.25 - 1 })
    }

    /// The committed Swift-written fixtures (which the Python script verifies) must equal what the
    /// encoder produces today, byte for byte. With LONGMIXER_WRITE_FIXTURES=1 this rewrites them.
    @Test func swiftWrittenFixturesMatchEncoder() throws {
        let (tensors, metadata) = swiftWrittenTensors()
        let files: [(String, SafeTensors.IntegerFormat)] = [("swift_written.safetensors", .i32), ("swift_written_i64.safetensors", .i64)]
        for (name, format) in files {
            let url = fixtureURL(name)
            if ProcessInfo.processInfo.environment["LONGMIXER_WRITE_FIXTURES"] == "1" {
                try SafeTensors.save(tensors, to: url, metadata: metadata, integerFormat: format)
            }
            let committed = try Data(contentsOf: url)
            let encoded = try SafeTensors.encode(tensors, metadata: metadata, integerFormat: format)
            #expect(encoded == committed, "\(name): the encoder's output differs from the committed fixture (\(encoded.count) vs \(committed.count) bytes)")
            let (decoded, meta) = try SafeTensors.decode(committed)
            expectIdentical(tensors, decoded)
            #expect(meta == metadata)
        }
    }

    // MARK: - Files

    @Test func saveIsAtomicAndLoadReadsItBack() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("safetensors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("model.safetensors")

        let first: [String: NamedTensor] = ["x": .float(Tensor(shape: [2], scalars: [1, 2]))]
        let second: [String: NamedTensor] = ["y": .int(IntTensor([4, 5, 6]))]
        try SafeTensors.save(first, to: url)
        expectIdentical(first, try SafeTensors.load(from: url))
        try SafeTensors.save(second, to: url, metadata: ["step": "2"])   // replaces the file
        expectIdentical(second, try SafeTensors.load(from: url))
        #expect(try SafeTensors.loadWithMetadata(from: url).metadata == ["step": "2"])
        // No temporary files are left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["model.safetensors"])

        // A failing save (directory missing) throws and creates nothing.
        let missingDir = directory.appendingPathComponent("no/such/dir/model.safetensors")
        #expect(throws: SafeTensorsError.self) { try SafeTensors.save(first, to: missingDir) }
        // Loading a missing file is a clear error naming it.
        do {
            _ = try SafeTensors.load(from: directory.appendingPathComponent("absent.safetensors"))
            Issue.record("loading a missing file succeeded")
        } catch let e as SafeTensorsError {
            #expect(e.description.contains("absent.safetensors"))
        }
        // A corrupt file's error names the file.
        try Data([1, 2, 3]).write(to: url)
        do {
            _ = try SafeTensors.load(from: url)
            Issue.record("loading a 3-byte file succeeded")
        } catch let e as SafeTensorsError {
            #expect(e.description.contains("model.safetensors") && e.description.contains("3 bytes"))
        }
    }

    // MARK: - Malformed files

    @Test func everyTruncationThrows() throws {
        let full = try smallValidFile()
        _ = try SafeTensors.decode(full)   // the full file is valid
        for length in 0..<full.count {
            #expect(throws: SafeTensorsError.self, "truncated to \(length) of \(full.count) bytes") {
                try SafeTensors.decode(full.prefix(length))
            }
        }
        // Trailing bytes after the last tensor are rejected too (Python requires an exact cover).
        expectRejected(full + Data([0]), "cover")
    }

    @Test func headerLengthBounds() {
        let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        expectRejected(makeFile(header, data: [0, 0, 0, 0], declaredLength: UInt64.max), "18446744073709551615", "limit")
        expectRejected(makeFile(header, data: [0, 0, 0, 0], declaredLength: 100_000_001), "100000001", "limit")
        expectRejected(makeFile(header, data: [0, 0, 0, 0], declaredLength: 1000), "1000", "exceeds")
        expectRejected(makeFile("{}", pad: false, declaredLength: 1), "header length 1")
        expectRejected(makeFile("", pad: false, declaredLength: 0), "header length 0")
        expectRejected(Data([8, 0, 0]), "3 bytes")
        // The smallest valid file: "{}" and no data.
        #expect(throws: Never.self) { try SafeTensors.decode(makeFile("{}", pad: false)) }
    }

    @Test func headerMustBeAJSONObject() {
        expectRejected(makeFile("not json"), "not valid JSON", "expected \"null\" at byte 0")
        expectRejected(makeFile("xyz"), "not valid JSON", "unexpected character 'x' at byte 0")
        expectRejected(makeFile("[1, 2]"), "header must be a JSON object")
        expectRejected(makeFile(#""a""#), "header must be a JSON object")
        // Leading and trailing JSON whitespace is fine (Python accepts it too).
        let spaced = makeFile(" \n{\"a\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}\t", data: [9, 0, 0, 0])
        #expect((try? SafeTensors.decode(spaced))?.tensors["a"]?.intTensor == IntTensor(shape: [], scalars: [9]))
        expectRejected(makeFile(#"{"a": }"#), "not valid JSON")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#, data: [0, 0, 0, 0]), "not valid JSON")
        expectRejected(makeFile("{} {}"), "trailing")
        expectRejected(makeFile("{\"a\u{01}\":1}"), "control character")
        expectRejected(makeFile(#"{"\ud800":1}"#), "surrogate")
        var invalidUTF8 = makeFile(#"{"xx":1}"#)
        invalidUTF8[8 + 2] = 0xFF
        expectRejected(invalidUTF8, "UTF-8")
        let deep = "{\"a\":" + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + "}"
        expectRejected(makeFile(deep), "nesting")
        expectRejected(makeFile(#"{"a":[1,2]}"#), "entry \"a\" must be an object")
        expectRejected(makeFile(#"{"__metadata__":{"k":1}}"#), "metadata value for \"k\" must be a string")
        expectRejected(makeFile(#"{"__metadata__":[]}"#), "__metadata__")
        #expect((try? SafeTensors.decode(makeFile(#"{"__metadata__":null}"#)))?.metadata == [:])
    }

    @Test func entryFieldsAreValidated() {
        let four: [UInt8] = [0, 0, 128, 63]   // 1.0f
        expectRejected(makeFile(#"{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,4]}}"#, data: four), "unsupported dtype \"F64\"", "\"a\"")
        expectRejected(makeFile(#"{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#, data: four), "BF16")
        expectRejected(makeFile(#"{"a":{"dtype":3,"shape":[1],"data_offsets":[0,4]}}"#, data: four), "dtype must be a string")
        expectRejected(makeFile(#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, data: four), "missing \"dtype\"")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#, data: four), "missing \"shape\"")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1]}}"#, data: four), "missing \"data_offsets\"")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":0}}"#, data: four), "unexpected field \"extra\"")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: four), "shape[0] is negative (-1)")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, data: four), "shape[0] must be a non-negative integer, got 1.5")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}"#, data: four), "shape[0]")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}}"#, data: four), "shape must be an array")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}"#, data: four), "shape[0]")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#, data: four), "data_offsets must be an array [begin, end]")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, data: four), "begin is negative")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: four), "begin > end")
        // Shape / offset / dtype inconsistency.
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: four), "shape [2] needs 8 bytes", "span 4")
        expectRejected(makeFile(#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,4]}}"#, data: four), "I64", "needs 8 bytes")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}"#), "too many elements")
        // Duplicate keys (JSON allows them syntactically; the format does not).
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: four), "duplicate key \"a\"")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: four), "duplicate key \"dtype\"")
    }

    @Test func offsetsMustTileTheBuffer() {
        let eight = [UInt8](repeating: 0, count: 8)
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: eight),
                       "overlap")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: eight), "gap", "[0, 4)")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, data: eight), "outside the 8-byte buffer")
        expectRejected(makeFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: eight), "cover 4 bytes", "has 8")
        // In order and contiguous but listed out of order in the header: valid.
        let ok = makeFile(#"{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#,
                          data: [1, 0, 0, 0, 0, 0, 128, 63])
        let decoded = try? SafeTensors.decode(ok)
        #expect(decoded?.tensors["a"]?.intTensor == IntTensor([1]))
        #expect(decoded?.tensors["b"]?.floatTensor?.scalars == [1])
    }

    @Test func int64OutOfInt32RangeIsAnError() throws {
        var big = Int64(Int32.max) + 1
        let bytes = withUnsafeBytes(of: &big) { Array($0) }
        expectRejected(makeFile(#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#, data: [UInt8](repeating: 0, count: 8) + bytes),
                       "\"ids\"", "2147483648", "flat index 1", "Int32")
    }

    /// Seeded random corruption of a valid file: every result is a decoded file or a SafeTensorsError.
    @Test func randomCorruptionNeverCrashes() throws {
        let valid = try smallValidFile()
        var generator = RandomGenerator(seed: 2024)
        var rejected = 0
        for _ in 0..<3000 {
            var data = valid
            let edits = 1 + Int(generator.next() % 3)
            for _ in 0..<edits {
                let position = Int(generator.next() % UInt64(data.count))
                data[position] = UInt8(truncatingIfNeeded: generator.next())
            }
            do { _ = try SafeTensors.decode(data) } catch is SafeTensorsError { rejected += 1 }
        }
        #expect(rejected > 1000)
    }

    // MARK: - Module weights

    @Test func moduleWeightsRoundTripAndStrictLoading() throws {
        final class Tiny: Module {
            let embedding: Embedding
            let layers: [Linear]
            let norm: LayerNorm
            let table = Buffer(Tensor(shape: [3], scalars: [1, 2, 3]))
            init(seed: UInt64) {
                var g = RandomGenerator(seed: seed)
                embedding = Embedding(count: 5, dimensions: 4, generator: &g)
                layers = [Linear(inputDimensions: 4, outputDimensions: 3, generator: &g),
                          Linear(inputDimensions: 3, outputDimensions: 2, bias: false, generator: &g)]
                norm = LayerNorm(dimensions: 2)
            }
        }
        let source = Tiny(seed: 1)
        let names = Set(source.stateDictionary().keys)
        #expect(names == ["embedding.weight", "layers.0.weight", "layers.0.bias", "layers.1.weight", "norm.weight", "norm.bias", "table"])

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("weights-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("tiny.safetensors")
        source.norm.weight.value = Tensor(shape: [2], scalars: [0.5, 2])
        source.table.value = Tensor(shape: [3], scalars: [9, 8, 7])
        try source.saveWeights(to: url, metadata: ["model": "Tiny"])

        let target = Tiny(seed: 2)
        #expect(target.embedding.weight.value.scalars != source.embedding.weight.value.scalars)
        try target.loadWeights(from: url)
        expectIdentical(source.stateDictionary(), target.stateDictionary())

        // Strictness: one error naming every missing, unexpected and mismatched name; nothing loaded.
        var bad = source.stateDictionary()
        bad["layers.0.bias"] = nil
        bad["norm.weight"] = .float(Tensor(zeros: [3]))
        bad["table"] = .int(IntTensor([1, 2, 3]))
        bad["extra.weight"] = .float(Tensor(zeros: [1]))
        bad["embedding.weight"] = .float(Tensor(repeating: 42, shape: [5, 4]))
        try SafeTensors.save(bad, to: url)
        let fresh = Tiny(seed: 3)
        let before = fresh.stateDictionary()
        do {
            try fresh.loadWeights(from: url)
            Issue.record("loadWeights accepted a mismatched file")
        } catch let e as SafeTensorsError {
            for fragment in ["missing: layers.0.bias", "unexpected: extra.weight", "norm.weight (expected shape [2], file has [3])",
                             "table (expected a float tensor", "tiny.safetensors", "nothing was loaded"] {
                #expect(e.description.contains(fragment), "\"\(e.description)\" lacks \"\(fragment)\"")
            }
        }
        expectIdentical(before, fresh.stateDictionary())   // the valid embedding.weight was not applied either
    }
}
