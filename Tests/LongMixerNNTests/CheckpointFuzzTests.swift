import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels

/// Mutated checkpoints through every loading path: safetensors parsing, the configuration recorded
/// in the metadata, the checksum, and module state loading (with its value checks) into a Paramixer,
/// a PermuteFormer LM with decay, and two attention encoders (PermuteFormer, OrthogonalFormer). Every
/// mutant must end in a clean error or a load whose changes are all valid values in a file without a
/// checksum (then the model must still run on them).
/// A trap would end the test process, a hang the per-mutant time limit.
///
/// Default: 10,000 mutants (seconds in a debug build); `LONGMIXER_SLOW_TESTS=1`: 200,000.
@Suite("Checkpoint fuzz")
struct CheckpointFuzzTests {
    /// A model, how to run it, and its checkpoint.
    final class Target {
        let name: String
        let model: Module
        let run: () -> Void
        let original: [String: NamedTensor]
        /// The checkpoint as `saveWeights` writes it (with a checksum), and as other writers and older
        /// runs do (without one: only the value checks stand between a damaged value and the model);
        /// for models with permutations also with them as I64 index tensors (as torch.long), which the
        /// reader narrows with a range check and the loader refuses (buffers are float).
        let files: [Data]
        /// Byte offset in each file, element count and element size of every tensor.
        let layouts: [[String: (offset: Int, count: Int, size: Int)]]
        let bufferNames: Set<String>
        let configuration: any Encodable

        init(name: String, model: Module, configuration: any Encodable, run: @escaping () -> Void) throws {
            self.name = name
            self.configuration = configuration
            self.model = model
            self.run = run
            original = model.stateDictionary()
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys   // the same file, so the same mutants, in every run
            let metadata = [StoredConfiguration.metadataKey: String(decoding: try encoder.encode(configuration), as: UTF8.self), "steps": "10"]
            var checked = metadata
            checked[SafeTensors.checksumKey] = SafeTensors.checksum(original)
            var files = [try SafeTensors.encode(original, metadata: checked), try SafeTensors.encode(original, metadata: metadata)]
            var indices = original
            for (name, tensor) in original where name.hasSuffix("permutation") {
                indices[name] = .int(IntTensor(shape: tensor.shape, scalars: tensor.floatTensor!.scalars.map { Int32($0) }))
            }
            if indices.keys.contains(where: { $0.hasSuffix("permutation") }) {
                files.append(try SafeTensors.encode(indices, metadata: metadata, integerFormat: .i64))
            }
            self.files = files
            layouts = try files.map { file in
                let headerLength = Int(file.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
                let header = try JSONSerialization.jsonObject(with: file[8..<(8 + headerLength)]) as! [String: Any]
                var layout: [String: (offset: Int, count: Int, size: Int)] = [:]
                for (key, value) in header where key != "__metadata__" {
                    let entry = value as! [String: Any]
                    let offsets = entry["data_offsets"] as! [Int], size = entry["dtype"] as! String == "I64" ? 8 : 4
                    layout[key] = (8 + headerLength + offsets[0], (offsets[1] - offsets[0]) / size, size)
                }
                return layout
            }
            bufferNames = Set(model.namedBuffers().map(\.0))
            let original = self.original
            let parameters = model.namedParameters(), buffers = model.namedBuffers()
            restore = {
                for (name, p) in parameters { p.value = original[name]!.floatTensor! }
                for (name, b) in buffers { b.value = original[name]!.floatTensor! }
            }
        }

        /// Puts the original weights back (cheaper than a validated load; they are known good).
        let restore: () -> Void
    }

    static func targets() throws -> [Target] {
        var g = RandomGenerator(seed: 11)
        let paramixerConfiguration = ParamixerConfiguration(vocabularySize: 10, length: 8, embeddingSize: 4, hiddenSize: 4, blocks: 1,
                                                            linkProtocol: .cdil, positionalEmbedding: true, outputCount: 3)
        let paramixer = try Paramixer(configuration: paramixerConfiguration, generator: &g)
        let tokens = IntTensor(shape: [2, 8], scalars: [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6])
        let lmConfiguration = LanguageModelConfiguration(dimensions: 8, heads: 2, layers: 1, feedForwardDimensions: 8, dropout: 0,
                                                         mixer: MixerConfiguration(kind: .causalPermuteFormer))
        let lm = try CausalLanguageModel(configuration: lmConfiguration, generator: &g)
        func encoder(_ kind: MixerKind) throws -> (EncoderClassifier, EncoderConfiguration) {
            let c = EncoderConfiguration(vocabularySize: 12, dimensions: 8, heads: 2, layers: 1, feedForwardDimensions: 8, dropout: 0,
                                         mixer: MixerConfiguration(kind: kind, featureMultiplier: 2), classes: 3)
            return (try EncoderClassifier(configuration: c, generator: &g), c)
        }
        let (permute, permuteConfiguration) = try encoder(.permuteFormer)
        let (orthogonal, orthogonalConfiguration) = try encoder(.orthogonalFormer)
        for m in [paramixer, lm, permute, orthogonal] as [Module] { m.eval() }
        let encoderTokens = IntTensor(shape: [1, 6], scalars: [1, 5, 7, 9, 11, 2])
        return [
            try Target(name: "Paramixer", model: paramixer, configuration: paramixerConfiguration) { _ = withoutGradient { paramixer(.tokens(tokens)) } },
            try Target(name: "PermuteFormer LM with decay", model: lm, configuration: lmConfiguration) {
                _ = withoutGradient { lm(IntTensor(shape: [1, 5], scalars: [1, 70, 80, 90, 100])) }
                var r = RandomGenerator(seed: 0)
                _ = lm.generate(prompt: [1, 70], count: 3, temperature: 1, generator: &r)
            },
            try Target(name: "PermuteFormer encoder", model: permute, configuration: permuteConfiguration) { _ = withoutGradient { permute(.tokens(encoderTokens)) } },
            try Target(name: "OrthogonalFormer encoder", model: orthogonal, configuration: orthogonalConfiguration) {
                _ = withoutGradient { orthogonal(.tokens(encoderTokens)) }
            },
        ]
    }

    struct Counts: CustomStringConvertible {
        var mutants = 0, parseErrors = 0, checksumErrors = 0, configurationErrors = 0, loadErrors = 0
        /// Loaded, and nothing the model sees changed (header whitespace, a metadata value no loader reads).
        var unchanged = 0
        /// Loaded with changed weights, all finite (any finite weight is a valid model), from a file without
        /// a checksum (or whose checksum entry the mutation removed).
        var validWeights = 0
        /// Loaded with changed buffers whose values are still valid: decay rates in (0, 1], finite rotation
        /// angles, a basis still orthogonal within the check's 1e-3 (low mantissa bits).
        var validBuffers = 0
        /// Loaded with a changed permutation (any change breaks it, so the check must catch all), or with any
        /// changed value despite a checksum: must stay 0.
        var unexpected = 0
        var slowest = 0.0
        /// The slowest mutant run again (best of 3): what decides whether it hangs.
        var slowestRetimed = 0.0
        var runSeconds = 0.0
        var parseSeconds = 0.0

        var description: String {
            "\(mutants) mutants: \(parseErrors) parse errors, \(checksumErrors) checksum errors, \(configurationErrors) configuration errors, \(loadErrors) load errors, "
                + "\(unchanged) loaded unchanged, \(validWeights) loaded with changed finite weights, \(validBuffers) loaded with changed buffers still valid, \(unexpected) unexpected; slowest \(String(format: "%.1f", slowest * 1000)) ms (again: \(String(format: "%.1f", slowestRetimed * 1000)) ms); parse (successful) \(String(format: "%.1f", parseSeconds)) s, run+restore \(String(format: "%.1f", runSeconds)) s"
        }
    }

    static let specialValues: [Float] = [.nan, -.nan, .infinity, -.infinity, -1, -31, 1.5, 0, -0.0, 2, 7, 8, 31, 32, 1e38, -1e38,
                                         .greatestFiniteMagnitude, .leastNonzeroMagnitude, 0.5, 1, 1.0000001, 0.99999994]

    static let specialIndices: [Int64] = [-1, -31, 0, 3, 8, 31, 32, Int64(Int32.max), Int64(Int32.max) + 1, Int64(Int32.min) - 1, .max, .min]

    /// One mutant of one of `target.files`.
    static func mutate(_ target: Target, _ g: inout RandomGenerator) -> Data {
        func random(_ n: Int) -> Int { Int(g.nextUniformDouble() * Double(n)) % max(n, 1) }
        let variant = random(target.files.count)
        let file = target.files[variant], layout = target.layouts[variant]
        var bytes = [UInt8](file)
        let headerLength = Int(file.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        switch random(8) {
        case 0:   // bit flips anywhere
            for _ in 0...random(3) { bytes[random(bytes.count)] ^= UInt8(1 << random(8)) }
        case 1:   // truncation
            bytes = Array(bytes.prefix(random(bytes.count)))
        case 2:   // the header length field
            let choices: [UInt64] = [0, 1, 2, UInt64(headerLength) - 1, UInt64(headerLength) + 1, UInt64(headerLength) + 8, UInt64(bytes.count), .max, 100_000_001]
            var v = choices[random(choices.count)].littleEndian
            withUnsafeBytes(of: &v) { for i in 0..<8 { bytes[i] = $0[i] } }
        case 3, 4:   // header text edits, re-framed with the new length (mostly)
            var header = Array(bytes[8..<(8 + headerLength)])
            let body = Array(bytes[(8 + headerLength)...])
            editHeader(&header, &g)
            var length = UInt64(random(10) == 0 ? headerLength : header.count).littleEndian
            bytes = withUnsafeBytes(of: &length) { Array($0) } + header + body
        case 5, 6:   // an out-of-range or non-finite value in a tensor of each kind
            let kinds = layout.keys.sorted()
            let permutations = kinds.filter { $0.hasSuffix("permutation") }, decays = kinds.filter { $0.hasSuffix("decay") }
            let buffers = kinds.filter { target.bufferNames.contains($0) }, weights = kinds.filter { !target.bufferNames.contains($0) }
            let pools = [weights, permutations, decays, buffers].filter { !$0.isEmpty }
            let pool = pools[random(pools.count)]
            let name = pool[random(pool.count)]
            let (offset, count, size) = layout[name]!
            guard count > 0 else { break }
            let at = offset + size * random(count)
            if size == 8 {
                var v = specialIndices[random(specialIndices.count)].littleEndian
                withUnsafeBytes(of: &v) { for i in 0..<8 { bytes[at + i] = $0[i] } }
            } else {
                var v = specialValues[random(specialValues.count)].bitPattern.littleEndian
                withUnsafeBytes(of: &v) { for i in 0..<4 { bytes[at + i] = $0[i] } }
            }
        default:   // random bytes over a stretch, or trailing bytes
            if random(2) == 0 {
                let start = random(bytes.count)
                for i in start..<min(bytes.count, start + 1 + random(16)) { bytes[i] = UInt8(random(256)) }
            } else {
                bytes += (0..<(1 + random(8))).map { _ in UInt8(random(256)) }
            }
        }
        return Data(bytes)
    }

    static func editHeader(_ header: inout [UInt8], _ g: inout RandomGenerator) {
        func random(_ n: Int) -> Int { Int(g.nextUniformDouble() * Double(n)) % max(n, 1) }
        var text = String(decoding: header, as: UTF8.self)
        func replaceRandom(_ pattern: String, with replacements: [String]) {
            let ranges = text.ranges(of: pattern)
            guard !ranges.isEmpty else { return }
            text.replaceSubrange(ranges[random(ranges.count)], with: replacements[random(replacements.count)])
        }
        switch random(9) {
        case 0: replaceRandom("F32", with: ["F16", "I32", "I64", "BF16", "F64", "U8", "f32", ""])
        case 1: replaceRandom("\"shape\":[", with: ["\"shape\":[1,", "\"shape\":[0,", "\"shape\":[-1,", "\"shape\":[1.5,", "\"shape\":[", "\"shape\":[9999999999999999999,"])
        case 2: replaceRandom("\"data_offsets\":[", with: ["\"data_offsets\":[4,", "\"data_offsets\":[0,", "\"data_offsets\":[-4,", "\"data_offsets\":[1e3,"])
        case 3: replaceRandom("true", with: ["false", "1", "null"])
        case 4: replaceRandom("false", with: ["true", "0"])
        case 5: replaceRandom("\"steps\":\"10\"", with: ["\"steps\":\"11\"", "\"steps\":10"])
        case 6: replaceRandom(".weight", with: [".weigh", ".Weight", ".weight2", ".bias"])
        default:
            var bytes = Array(text.utf8)
            let alphabet = Array("{}[]\",:0123456789-.eE aZ\\".utf8)
            if bytes.isEmpty { break }
            let i = random(bytes.count)
            switch random(3) {
            case 0: bytes.remove(at: i)
            case 1: bytes.insert(alphabet[random(alphabet.count)], at: i)
            default: bytes[i] = alphabet[random(alphabet.count)]
            }
            header = bytes
            return
        }
        header = Array(text.utf8)
    }

    /// Classifies one mutant; returns its time.
    static func check(_ data: Data, _ target: Target, _ counts: inout Counts) -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        defer { counts.mutants += 1 }
        let decoded: (tensors: [String: NamedTensor], metadata: [String: String])
        do { decoded = try SafeTensors.decode(data) } catch {
            counts.parseErrors += 1
            return elapsed(start)
        }
        counts.parseSeconds += elapsed(start)
        // The same steps as Module.loadWeights(from:configuration:source:): configuration, checksum, state.
        if let stored = decoded.metadata[StoredConfiguration.metadataKey] {
            do {
                try StoredConfiguration.check(stored: stored, used: target.configuration, source: "config.json")
            } catch {
                counts.configurationErrors += 1
                return elapsed(start)
            }
        }
        do { try SafeTensors.verifyChecksum(decoded.tensors, metadata: decoded.metadata) } catch {
            counts.checksumErrors += 1
            return elapsed(start)
        }
        do { try target.model.loadStateDictionary(decoded.tensors) } catch is SafeTensorsError {
            counts.loadErrors += 1
            return elapsed(start)
        } catch is UserError {
            counts.loadErrors += 1
            return elapsed(start)
        } catch {
            Issue.record("\(target.name): unexpected error type \(type(of: error)): \(error)")
            return elapsed(start)
        }
        // Loaded: every change must be a valid value, and the model must still run on it.
        // Changed values (-0.0 for 0 is no change; NaN cannot be here, the loader refuses it).
        var changed: [String] = []
        for (name, tensor) in decoded.tensors where tensor.floatTensor!.scalars != target.original[name]!.floatTensor!.scalars {
            changed.append(name)
        }
        if changed.isEmpty {
            counts.unchanged += 1
        } else if decoded.metadata[SafeTensors.checksumKey] != nil || changed.contains(where: { $0.hasSuffix("permutation") }) {
            counts.unexpected += 1
            Issue.record("\(target.name): a mutant changed \(changed) and loaded without an error")
        } else if changed.contains(where: { target.bufferNames.contains($0) }) {
            counts.validBuffers += 1
        } else {
            counts.validWeights += 1
        }
        let loaded = elapsed(start)
        target.run()
        target.restore()
        counts.runSeconds += elapsed(start) - loaded
        return elapsed(start)
    }

    static func elapsed(_ start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    @Test("10,000 mutated checkpoints (200,000 with LONGMIXER_SLOW_TESTS=1): no crash, no hang, no unexpected silent load")
    func fuzz() throws {
        let slow = ProcessInfo.processInfo.environment["LONGMIXER_SLOW_TESTS"] == "1"
        let perTarget = (slow ? 200_000 : 10_000) / 4
        let targets = try Self.targets()
        // One target per thread (each has its own model), so the suite's wall time stays short on 2 cores.
        nonisolated(unsafe) var results = [Counts](repeating: Counts(), count: targets.count)
        DispatchQueue.concurrentPerform(iterations: targets.count) { i in
            let target = targets[i]
            // The unmutated files load and their recorded configuration matches.
            var clean = Counts()
            for file in target.files { _ = Self.check(file, target, &clean) }
            #expect(clean.unchanged == 2 && clean.loadErrors == target.files.count - 2,
                    "\(target.name): the original checkpoint does not load cleanly: \(clean)")
            var g = RandomGenerator(seed: 1000 + UInt64(i))
            var counts = Counts()
            var slowestMutant = Data()
            for _ in 0..<perTarget {
                let mutant = Self.mutate(target, &g)
                let seconds = Self.check(mutant, target, &counts)
                if seconds > counts.slowest { counts.slowest = seconds; slowestMutant = mutant }
            }
            // On a shared machine one sample can stall for seconds; a mutant that really hangs is slow every time.
            var scratch = Counts()
            counts.slowestRetimed = (0..<3).map { _ in Self.check(slowestMutant, target, &scratch) }.min()!
            results[i] = counts
        }
        var total = Counts()
        for (target, counts) in zip(targets, results) {
            print("checkpoint fuzz, \(target.name): \(counts)")
            #expect(counts.unexpected == 0)
            #expect(counts.slowestRetimed < 2, "\(target.name): a mutant takes \(counts.slowestRetimed) s")
            total.mutants += counts.mutants; total.parseErrors += counts.parseErrors; total.checksumErrors += counts.checksumErrors
            total.configurationErrors += counts.configurationErrors
            total.loadErrors += counts.loadErrors; total.unchanged += counts.unchanged
            total.validWeights += counts.validWeights; total.validBuffers += counts.validBuffers
            total.unexpected += counts.unexpected; total.slowest = max(total.slowest, counts.slowest)
            total.slowestRetimed = max(total.slowestRetimed, counts.slowestRetimed)
            total.parseSeconds += counts.parseSeconds; total.runSeconds += counts.runSeconds
        }
        print("checkpoint fuzz, total: \(total)")
        #expect(total.mutants == 4 * perTarget)
    }
}
