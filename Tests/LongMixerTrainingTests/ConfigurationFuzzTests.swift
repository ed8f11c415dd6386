import Foundation
import Testing
import LongMixerCore
import LongMixerData
import LongMixerModels
import LongMixerNN
import LongMixerTraining

/// Mutated `config.json` files through the loading path that reads them (`CausalLanguageModel.load`,
/// what `generate` runs) and through `RunConfiguration` decoding: every mutant loads a valid model or
/// fails with an error; nothing traps, hangs or allocates without bound.
/// The part of config.json that holds the resolved run configuration.
private struct RunRecordHeader: Decodable { var configuration: RunConfiguration }

@Suite("config.json fuzz", .serialized)
struct ConfigurationFuzzTests {
    /// A small LM run directory: weights and the config.json `train` writes.
    static func makeRun(in dir: URL) throws -> Data {
        var c = try LanguageModelConfiguration.preset("tiny")
        c.dimensions = 16
        c.heads = 2
        c.feedForwardDimensions = 32
        var g = RandomGenerator(seed: 3)
        let model = try CausalLanguageModel(configuration: c, generator: &g)
        try model.saveWeights(to: dir.appendingPathComponent("model.safetensors"), metadata: ["configuration": String(decoding: try JSONEncoder().encode(c), as: UTF8.self)])
        let run = try RunConfiguration.resolve({ var s = RunSettings(); s.task = "lm"; s.corpus = "c.txt"; s.size = .tiny; return s }())
        let record: [String: Any] = [
            "task": "lm", "model": "permuteformer",
            "languageModel": try JSONSerialization.jsonObject(with: JSONEncoder().encode(c)),
            "configuration": try JSONSerialization.jsonObject(with: JSONEncoder().encode(run)),
        ]
        return try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
    }

    /// Paths to every scalar of a JSON tree.
    static func leafPaths(_ value: Any, prefix: [String] = []) -> [[String]] {
        if let object = value as? [String: Any] {
            return object.keys.sorted().flatMap { leafPaths(object[$0]!, prefix: prefix + [$0]) }
        }
        if let array = value as? [Any] { return array.indices.flatMap { leafPaths(array[$0], prefix: prefix + [String($0)]) } }
        return [prefix]
    }

    static func setting(_ value: Any, at path: [String], to replacement: Any?) -> Any {
        guard let key = path.first else { return replacement ?? NSNull() }
        if var object = value as? [String: Any] {
            if path.count == 1 && replacement == nil { object.removeValue(forKey: key) } else {
                object[key] = setting(object[key] ?? NSNull(), at: Array(path.dropFirst()), to: replacement)
            }
            return object
        }
        if var array = value as? [Any], let i = Int(key), array.indices.contains(i) {
            array[i] = setting(array[i], at: Array(path.dropFirst()), to: replacement)
            return array
        }
        return value
    }

    @Test func mutatedConfigurationsNeverTrap() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-config-fuzz-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let original = try Self.makeRun(in: dir)
        let tree = try JSONSerialization.jsonObject(with: original)
        let paths = Self.leafPaths(tree)
        let replacements: [Any?] = [0, -1, 1, 3, 1_000_000_000_000, Int.max, 1.5, -0.5, 1e30, "nan", "abc", NSNull(), true, [1, 2], nil]
        let mutants = ProcessInfo.processInfo.environment["LONGMIXER_SLOW_TESTS"] == "1" ? 20_000 : 2_000
        var g = RandomGenerator(seed: 11)
        var loaded = 0, refused = 0, decodedRuns = 0
        let configURL = dir.appendingPathComponent("config.json")
        for i in 0..<mutants {
            var bytes: Data
            switch i % 4 {
            case 0, 1:   // one field replaced or deleted
                let path = paths[g.nextInt(below: paths.count)]
                let mutated = Self.setting(tree, at: path, to: replacements[g.nextInt(below: replacements.count)])
                bytes = try JSONSerialization.data(withJSONObject: mutated, options: [.sortedKeys])
            case 2:      // a flipped bit
                bytes = original
                let at = g.nextInt(below: bytes.count)
                bytes[at] ^= UInt8(1 << g.nextInt(below: 8))
            default:     // truncated
                bytes = original.prefix(g.nextInt(below: original.count))
            }
            try bytes.write(to: configURL)
            do {
                _ = try CausalLanguageModel.load(weights: dir.appendingPathComponent("model.safetensors"), config: configURL)
                loaded += 1
            } catch {
                refused += 1
                #expect(!"\(error)".contains("\n"), "mutant \(i): a multi-line error: \(error)")
            }
            if (try? JSONDecoder().decode(RunRecordHeader.self, from: bytes)) != nil { decodedRuns += 1 }
        }
        #expect(loaded + refused == mutants)
        #expect(refused > mutants / 3, "only \(refused) of \(mutants) mutants refused")
        #expect(decodedRuns > 0 && decodedRuns < mutants)
        print("config.json fuzz: \(mutants) mutants, \(loaded) loaded (an equivalent configuration), \(refused) refused, \(decodedRuns) decoded as run configurations")
    }
}
