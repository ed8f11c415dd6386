import Foundation
import LongMixerCore

// A module's parameters and buffers as a safetensors state dictionary: save, load, validate.

extension Module {
    /// Parameters and buffers by dotted name (`namedParameters()` + `namedBuffers()`).
    public func stateDictionary() -> [String: NamedTensor] {
        var out: [String: NamedTensor] = [:]
        for (name, p) in namedParameters() { out[name] = .float(p.value) }
        for (name, b) in namedBuffers() { out[name] = .float(b.value) }
        return out
    }

    /// Saves `stateDictionary()` to `url` as safetensors (atomically).
    /// The metadata also records `SafeTensors.checksum` of the tensors, which loading verifies; returns it.
    @discardableResult
    public func saveWeights(to url: URL, metadata: [String: String] = [:]) throws -> String {
        try SafeTensors.saveWithChecksum(stateDictionary(), to: url, metadata: metadata)
    }

    /// Loads parameters and buffers from the safetensors file at `url` (after verifying the checksum
    /// `saveWeights` recorded, if any). Strict: every name must be
    /// present as a float tensor with the right shape and there must be no extra names, else one
    /// error lists the missing, unexpected and mismatched names; nothing is modified unless
    /// everything matches.
    public func loadWeights(from url: URL) throws {
        let (tensors, metadata) = try SafeTensors.loadWithMetadata(from: url)
        try loadStateDictionary(tensors, metadata: metadata, file: url)
    }

    /// The checksum check, then `loadStateDictionary`, with errors prefixed by the file they came from.
    func loadStateDictionary(_ tensors: [String: NamedTensor], metadata: [String: String], file url: URL) throws {
        do {
            try SafeTensors.verifyChecksum(tensors, metadata: metadata)
            try loadStateDictionary(tensors)
        } catch let e as SafeTensorsError {
            throw SafeTensorsError("\(url.path): \(e.description)")
        } catch let e as UserError {
            throw UserError(e.kind, what: "\(url.path): \(e.what)", value: e.value, why: e.why, remedy: e.remedy)
        }
    }

    /// `loadWeights`, after comparing the model configuration recorded in the file's metadata (if the
    /// writer recorded one, under `StoredConfiguration.metadataKey`) with `configuration`, the one the
    /// model was built from: a mismatch is one usage error naming the field (see `StoredConfiguration`).
    /// `source` names where `configuration` came from, for the message.
    public func loadWeights(from url: URL, configuration: some Encodable, source: String, ignoring: Set<String> = []) throws {
        let (tensors, metadata) = try SafeTensors.loadWithMetadata(from: url)
        if let stored = metadata[StoredConfiguration.metadataKey] {
            try StoredConfiguration.check(stored: stored, used: configuration, source: source, ignoring: ignoring)
        }
        try loadStateDictionary(tensors, metadata: metadata, file: url)
    }

    /// `loadWeights` from tensors already in memory (same strict checks, same all-or-nothing rule).
    public func loadStateDictionary(_ tensors: [String: NamedTensor]) throws {
        var targets: [(String, [Int], (Tensor) -> Void)] = []
        for (name, p) in namedParameters() { targets.append((name, p.value.shape, { p.value = $0 })) }
        for (name, b) in namedBuffers() { targets.append((name, b.value.shape, { b.value = $0 })) }

        let expected = Set(targets.map(\.0))
        var missing: [String] = []
        var mismatched: [String] = []
        for (name, shape, _) in targets {
            guard let t = tensors[name] else { missing.append(name); continue }
            guard let f = t.floatTensor else {
                mismatched.append("\(name) (expected a float tensor of shape \(shape), file has an int tensor of shape \(t.shape))")
                continue
            }
            if f.shape != shape {
                mismatched.append("\(name) (expected shape \(shape), file has \(f.shape))")
            }
        }
        let unexpected = tensors.keys.filter { !expected.contains($0) }.sorted()
        if !missing.isEmpty || !unexpected.isEmpty || !mismatched.isEmpty {
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing: \(missing.sorted().joined(separator: ", "))") }
            if !unexpected.isEmpty { parts.append("unexpected: \(unexpected.joined(separator: ", "))") }
            if !mismatched.isEmpty { parts.append("mismatched: \(mismatched.sorted().joined(separator: "; "))") }
            throw SafeTensorsError("loadWeights into \(type(of: self)): \(parts.joined(separator: " · ")); nothing was loaded")
        }
        try validateValues(tensors, names: targets.map(\.0))
        for (name, _, assign) in targets { assign(tensors[name]!.floatTensor!) }
    }

    /// Every tensor finite, then each module's own meaning checks (`validateLoadedState`: permutations,
    /// rates), so a well-formed file with corrupt values is one error naming the tensor instead of a
    /// trap on first use or silent garbage.
    func validateValues(_ tensors: [String: NamedTensor], names: [String]) throws {
        for name in names {
            let t = tensors[name]!.floatTensor!
            let p = t.pointer
            for i in 0..<t.count where !p[i].isFinite {
                throw UserError(what: "tensor \"\(name)\"", value: "\(p[i]) at \(Self.position(i, shape: t.shape))",
                                why: "is not a finite number", remedy: Self.corruptRemedy)
            }
        }
        func visit(_ module: Module, prefix: String) throws {
            var local: [String: Tensor] = [:]
            for (name, _) in module.localParameters() { local[name] = tensors[prefix + name]?.floatTensor }
            for (name, _) in module.localBuffers() { local[name] = tensors[prefix + name]?.floatTensor }
            do { try module.validateLoadedState(local) } catch let v as LoadedStateViolation {
                throw UserError(what: "tensor \"\(prefix)\(v.tensor)\"", value: v.value, why: v.why, remedy: Self.corruptRemedy)
            }
            for (name, child) in module.namedChildren() { try visit(child, prefix: prefix + name + ".") }
        }
        try visit(self, prefix: "")
    }

    static let corruptRemedy = "the file is damaged or was not written for this model; use the run's own model.safetensors or retrain"

    /// `[i, j, …]` of flat index `flat` in a row-major tensor of `shape`.
    static func position(_ flat: Int, shape: [Int]) -> String {
        var rest = flat
        var index = [Int](repeating: 0, count: shape.count)
        for axis in shape.indices.reversed() where shape[axis] > 0 {
            index[axis] = rest % shape[axis]
            rest /= shape[axis]
        }
        return "[" + index.map(String.init).joined(separator: ", ") + "]"
    }
}
