import Foundation
import Testing
@testable import LongMixerModels

/// Parity with the PyTorch reference (`Scripts/reference/paramixer_reference.py`, fixtures in
/// `Tests/Fixtures/paramixer_*.safetensors` + `.json`). Weights are loaded by name, so this also
/// checks that every Swift parameter name and shape matches the reference module 1:1.
/// Tolerance: logits, loss and every parameter gradient within 1e-4 of the reference tensor's
/// max-abs (the reference runs in float64, LongMixer in float32).
@Suite("ParamixerParity")
struct ParamixerParityTests {
    static let cases = [
        "chord_n16_flatten_1block",
        "cdil_n16_cls_2blocks",
        "chord_n37_flatten_2blocks",
        "cdil_n37_cls_1block_floor",
        "cdil_n8_flatten_2blocks",
        "adding_n16_chord_flatten",
    ]

    static var fixturesDirectory: URL {
        // …/Tests/LongMixerNNTests/ParamixerParityTests.swift → package root → Tests/Fixtures
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tests/Fixtures")
    }

    /// max |a − b| / max |reference|.
    static func relativeError(_ a: Tensor, reference b: Tensor) -> Float {
        var diff: Float = 0, scale: Float = 0
        for i in 0..<b.count { scale = max(scale, abs(b[flat: i])); diff = max(diff, abs(a[flat: i] - b[flat: i])) }
        return scale > 0 ? diff / scale : diff
    }

    @Test("logits, loss and every parameter gradient match PyTorch", arguments: cases)
    func parity(name: String) throws {
        let base = Self.fixturesDirectory.appendingPathComponent("paramixer_\(name)")
        let configuration = try JSONDecoder().decode(ParamixerConfiguration.self,
                                                     from: Data(contentsOf: base.appendingPathExtension("json")))
        let fixture = try FixtureTensors.load(from: base.appendingPathExtension("safetensors"))
        var generator = RandomGenerator(seed: 0)
        let model = try Paramixer(configuration: configuration, generator: &generator)
        model.eval()

        let swiftNames = Set(model.namedParameters().map(\.0))
        let referenceNames = Set(fixture.floats.keys.filter { $0.hasPrefix("param.") }.map { String($0.dropFirst(6)) })
        #expect(swiftNames == referenceNames, "only in Swift: \(swiftNames.subtracting(referenceNames)); only in PyTorch: \(referenceNames.subtracting(swiftNames))")
        for (parameterName, parameter) in model.namedParameters() {
            let value = try #require(fixture.floats["param." + parameterName], "\(parameterName) missing from the fixture")
            #expect(value.shape == parameter.shape, "\(parameterName): PyTorch \(value.shape) vs Swift \(parameter.shape)")
            parameter.value = value
        }

        let input: SequenceInput
        if let tokens = fixture.ints["input.tokens"] { input = .tokens(tokens) } else { input = .features(try #require(fixture.floats["input.features"])) }
        let logits = model(input)
        let referenceLogits = try #require(fixture.floats["logits"])
        #expect(logits.shape == referenceLogits.shape)
        let logitError = Self.relativeError(logits.value, reference: referenceLogits)
        #expect(logitError <= 1e-4, "\(name): logits relative error \(logitError)")

        let loss: Variable
        if let classes = fixture.ints["targets.classes"] {
            loss = crossEntropy(logits: logits, targets: classes)
        } else {
            loss = meanSquaredError(logits, Variable(try #require(fixture.floats["targets.values"])))
        }
        let referenceLoss = try #require(fixture.floats["loss"])
        #expect(abs(loss.value.scalar - referenceLoss[flat: 0]) <= 1e-4 * max(1, abs(referenceLoss[flat: 0])),
                "\(name): loss \(loss.value.scalar) vs \(referenceLoss[flat: 0])")

        try loss.backward()
        for (parameterName, parameter) in model.namedParameters() {
            let reference = try #require(fixture.floats["grad." + parameterName])
            let grad = try #require(parameter.grad, "\(parameterName) got no gradient")
            let error = Self.relativeError(grad, reference: reference)
            #expect(error <= 1e-4, "\(name): gradient of \(parameterName) relative error \(error)")
        }

        // The padding row's embedding gets exactly no gradient (the fixture's tails are padding).
        if let p = configuration.paddingIndex, let grad = model.namedParameters().first(where: { $0.0 == "embedding.weight" })?.1.grad {
            let d = configuration.embeddingSize
            #expect((0..<d).allSatisfy { grad[flat: p * d + $0] == 0 })
        }
    }
}

/// Minimal safetensors reader for the fixtures (F32, I32, I64 little-endian), local to the tests:
/// 8-byte header length, JSON header {name: {dtype, shape, data_offsets}}, then the data.
struct FixtureTensors {
    var floats: [String: Tensor] = [:]
    var ints: [String: IntTensor] = [:]

    struct FormatError: Error, CustomStringConvertible {
        let description: String
    }

    static func load(from url: URL) throws -> FixtureTensors {
        let bytes = [UInt8](try Data(contentsOf: url))
        guard bytes.count >= 8 else { throw FormatError(description: "\(url.lastPathComponent): \(bytes.count) bytes, too short") }
        var headerLength = 0
        for i in 0..<8 { headerLength |= Int(bytes[i]) << (8 * i) }
        guard 8 + headerLength <= bytes.count else { throw FormatError(description: "\(url.lastPathComponent): header length \(headerLength) exceeds the file") }
        let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as? [String: Any] ?? [:]
        let dataStart = 8 + headerLength
        var result = FixtureTensors()
        for (name, entry) in header where name != "__metadata__" {
            guard let entry = entry as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                throw FormatError(description: "\(url.lastPathComponent): malformed entry \(name)")
            }
            let count = shape.reduce(1, *)
            let start = dataStart + offsets[0]
            func word(_ i: Int, _ size: Int) -> UInt64 {
                var v: UInt64 = 0
                for j in 0..<size { v |= UInt64(bytes[start + i * size + j]) << (8 * UInt64(j)) }
                return v
            }
            switch dtype {
            case "F32": result.floats[name] = Tensor(shape: shape, scalars: (0..<count).map { Float(bitPattern: UInt32(word($0, 4))) })
            case "I32": result.ints[name] = IntTensor(shape: shape, scalars: (0..<count).map { Int32(bitPattern: UInt32(word($0, 4))) })
            case "I64": result.ints[name] = IntTensor(shape: shape, scalars: (0..<count).map { Int32(truncatingIfNeeded: Int64(bitPattern: word($0, 8))) })
            default: throw FormatError(description: "\(url.lastPathComponent): unsupported dtype \(dtype) for \(name)")
            }
        }
        return result
    }
}
