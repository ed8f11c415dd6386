import Foundation
import Testing
@testable import LongMixerModels

/// Parity with the PyTorch reference (`Scripts/reference/attention_reference.py`; fixtures
/// `Tests/Fixtures/attention_*.safetensors` + `.json`): every mixer inside the pre-LN encoder (and
/// the causal mixers inside the LM). Parameters and buffers are loaded by name, so this also
/// checks that every Swift parameter/buffer name and shape matches the reference 1:1. Logits, loss
/// and every parameter gradient within 1e-4 of the reference tensor's max-abs (the reference runs
/// in float64, LongMixer in float32). The reference uses the naive forms (expanded permutation
/// tables, explicit R^t matrix powers, N×N causal decay matrices), so the fused ops are checked too.
@Suite("AttentionParity")
struct AttentionParityTests {
    static let encoderCases = [
        "softmax_learned", "softmax_sinusoidal_binary", "performer", "permuteformer", "permuteformer2d_binary",
        "ropeperformer", "favor", "orthogonalformer", "permuteformer_retrieval",
    ]
    static let languageModelCases = [
        "lm_causalpermuteformer", "lm_causalpermuteformer_normalized_untied", "lm_causalpermuteformer_nodecay",
        "lm_causaldecayperformer", "lm_causalperformer",
    ]

    static var fixturesDirectory: URL {
        // …/Tests/LongMixerNNTests/AttentionParityTests.swift → package root → Tests/Fixtures
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tests/Fixtures")
    }

    /// max |a − b| / max |reference|.
    static func relativeError(_ a: Tensor, reference b: Tensor) -> Float {
        var diff: Float = 0, scale: Float = 0
        for i in 0..<b.count { scale = max(scale, abs(b[flat: i])); diff = max(diff, abs(a[flat: i] - b[flat: i])) }
        return scale > 0 ? diff / scale : diff
    }

    /// Loads parameters and buffers by name after checking that the name sets agree.
    static func load(_ fixture: AttentionFixtureTensors, into model: Module, name: String) throws {
        let swiftNames = Set(model.namedParameters().map(\.0))
        let referenceNames = Set(fixture.floats.keys.filter { $0.hasPrefix("param.") }.map { String($0.dropFirst(6)) })
        #expect(swiftNames == referenceNames, "\(name): only in Swift: \(swiftNames.subtracting(referenceNames)); only in PyTorch: \(referenceNames.subtracting(swiftNames))")
        for (parameterName, parameter) in model.namedParameters() {
            let value = try #require(fixture.floats["param." + parameterName], "\(parameterName) missing from the fixture")
            #expect(value.shape == parameter.shape, "\(name) \(parameterName): PyTorch \(value.shape) vs Swift \(parameter.shape)")
            parameter.value = value
        }
        let swiftBuffers = Set(model.namedBuffers().map(\.0))
        let referenceBuffers = Set(fixture.floats.keys.filter { $0.hasPrefix("buffer.") }.map { String($0.dropFirst(7)) })
        #expect(swiftBuffers == referenceBuffers, "\(name): buffers only in Swift: \(swiftBuffers.subtracting(referenceBuffers)); only in PyTorch: \(referenceBuffers.subtracting(swiftBuffers))")
        for (bufferName, buffer) in model.namedBuffers() {
            let value = try #require(fixture.floats["buffer." + bufferName], "\(bufferName) missing from the fixture")
            #expect(value.shape == buffer.value.shape, "\(name) \(bufferName): PyTorch \(value.shape) vs Swift \(buffer.value.shape)")
            buffer.value = value
        }
    }

    static func checkGradients(_ fixture: AttentionFixtureTensors, model: Module, name: String) throws {
        for (parameterName, parameter) in model.namedParameters() {
            let reference = try #require(fixture.floats["grad." + parameterName])
            let grad = try #require(parameter.grad, "\(name): \(parameterName) got no gradient")
            var scale: Float = 0
            for i in 0..<reference.count { scale = max(scale, abs(reference[flat: i])) }
            if scale < 1e-7 {
                // Mathematically zero (softmax attention's key bias: a constant shift of every score of a
                // query): float64 gives ~1e-17, float32 rounding ~1e-8, so compare absolutely.
                var largest: Float = 0
                for i in 0..<grad.count { largest = max(largest, abs(grad[flat: i])) }
                #expect(largest <= 1e-5, "\(name): gradient of \(parameterName) should vanish, max |g| \(largest)")
                continue
            }
            let error = relativeError(grad, reference: reference)
            #expect(error <= 1e-4, "\(name): gradient of \(parameterName) relative error \(error)")
        }
    }

    @Test("encoder: logits, loss and every parameter gradient match PyTorch", arguments: encoderCases)
    func encoderParity(name: String) throws {
        let base = Self.fixturesDirectory.appendingPathComponent("attention_\(name)")
        let configuration = try JSONDecoder().decode(EncoderConfiguration.self, from: Data(contentsOf: base.appendingPathExtension("json")))
        let fixture = try AttentionFixtureTensors.load(from: base.appendingPathExtension("safetensors"))
        var generator = RandomGenerator(seed: 0)
        let model = try EncoderClassifier(configuration: configuration, generator: &generator)
        model.eval()
        try Self.load(fixture, into: model, name: name)

        let ids = try #require(fixture.ints["input.tokens"])
        let logits = model(.tokens(ids))
        let referenceLogits = try #require(fixture.floats["logits"])
        #expect(logits.shape == referenceLogits.shape)
        let logitError = Self.relativeError(logits.value, reference: referenceLogits)
        #expect(logitError <= 1e-4, "\(name): logits relative error \(logitError)")

        let loss: Variable
        if let classes = fixture.ints["targets.classes"] {
            loss = crossEntropy(logits: logits, targets: classes)
        } else {
            loss = binaryCrossEntropy(logits: logits, targets: try #require(fixture.floats["targets.values"]))
        }
        let referenceLoss = try #require(fixture.floats["loss"])[flat: 0]
        #expect(abs(loss.value.scalar - referenceLoss) <= 1e-4 * max(1, abs(referenceLoss)), "\(name): loss \(loss.value.scalar) vs \(referenceLoss)")
        try loss.backward()
        try Self.checkGradients(fixture, model: model, name: name)
    }

    @Test("language model: logits (parallel and recurrent), loss and every parameter gradient match PyTorch", arguments: languageModelCases)
    func languageModelParity(name: String) throws {
        let base = Self.fixturesDirectory.appendingPathComponent("attention_\(name)")
        let configuration = try JSONDecoder().decode(LanguageModelConfiguration.self, from: Data(contentsOf: base.appendingPathExtension("json")))
        let fixture = try AttentionFixtureTensors.load(from: base.appendingPathExtension("safetensors"))
        var generator = RandomGenerator(seed: 0)
        let model = try CausalLanguageModel(configuration: configuration, generator: &generator)
        model.eval()
        try Self.load(fixture, into: model, name: name)

        let ids = try #require(fixture.ints["input.tokens"])
        let referenceLogits = try #require(fixture.floats["logits"])
        let logits = model(ids)
        #expect(logits.shape == referenceLogits.shape)
        let logitError = Self.relativeError(logits.value, reference: referenceLogits)
        #expect(logitError <= 1e-4, "\(name): logits relative error \(logitError)")
        let recurrentError = Self.relativeError(model.recurrentLogits(ids), reference: referenceLogits)
        #expect(recurrentError <= 1e-4, "\(name): recurrent logits relative error \(recurrentError)")

        let loss = model.loss(ids)
        let referenceLoss = try #require(fixture.floats["loss"])[flat: 0]
        #expect(abs(loss.value.scalar - referenceLoss) <= 1e-4 * max(1, abs(referenceLoss)), "\(name): loss \(loss.value.scalar) vs \(referenceLoss)")
        try loss.backward()
        try Self.checkGradients(fixture, model: model, name: name)
    }
}

/// Minimal safetensors reader for the fixtures (F32, I32, I64 little-endian), local to these tests
/// until the library reader (`SafeTensors`) lands: 8-byte header length, JSON header
/// {name: {dtype, shape, data_offsets}}, then the data.
struct AttentionFixtureTensors {
    var floats: [String: Tensor] = [:]
    var ints: [String: IntTensor] = [:]

    struct FormatError: Error, CustomStringConvertible {
        let description: String
    }

    static func load(from url: URL) throws -> AttentionFixtureTensors {
        let bytes = [UInt8](try Data(contentsOf: url))
        guard bytes.count >= 8 else { throw FormatError(description: "\(url.lastPathComponent): \(bytes.count) bytes, too short") }
        var headerLength = 0
        for i in 0..<8 { headerLength |= Int(bytes[i]) << (8 * i) }
        guard 8 + headerLength <= bytes.count else { throw FormatError(description: "\(url.lastPathComponent): header length \(headerLength) exceeds the file") }
        let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as? [String: Any] ?? [:]
        let dataStart = 8 + headerLength
        var result = AttentionFixtureTensors()
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
