import Foundation
import LongMixerCore

/// The configuration a checkpoint was trained with, as its writer recorded it in the safetensors
/// metadata, against the configuration a loader is about to build the model from.
///
/// A model built from a different configuration may still accept the weights (same names and
/// shapes: `sinusoidalPositions`, `normalized`, the decay or the activation change no shape) and
/// then silently computes something else; comparing the recorded configuration catches that.
public enum StoredConfiguration {
    /// The metadata key under which writers record the model configuration as JSON.
    public static let metadataKey = "configuration"

    /// Throws a usage error naming the first field (dotted path, sorted) whose value differs between
    /// `stored` (JSON from the checkpoint) and `used`. Fields absent from `stored` (written before the
    /// field existed) and fields in `ignoring` (no effect on the outputs, e.g. `dropout` at inference)
    /// are not compared. `source` names where `used` came from, for the message (`config.json`).
    public static func check(stored: String, used: some Encodable, source: String, ignoring: Set<String> = []) throws {
        guard let storedObject = try? JSONSerialization.jsonObject(with: Data(stored.utf8)) else {
            throw UserError(what: "checkpoint metadata \"\(metadataKey)\"", value: String(stored.prefix(80)), why: "is not valid JSON",
                            remedy: "the weights file is damaged; use the run's own model.safetensors")
        }
        let usedObject = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(used))
        if let (field, was, now) = firstDifference(storedObject, usedObject, path: "", ignoring: ignoring) {
            throw UserError(what: "\(source): \(field)", value: now,
                            why: "differs from the configuration the weights were trained with (\(was)), so the model would compute something else",
                            remedy: "use the run's own config.json, or set \(field) to \(was)")
        }
    }

    static func firstDifference(_ stored: Any, _ used: Any, path: String, ignoring: Set<String>) -> (String, String, String)? {
        if ignoring.contains(path) { return nil }
        if let s = stored as? [String: Any], let u = used as? [String: Any] {
            for key in s.keys.sorted() {
                guard let uv = u[key] else { continue }
                if let d = firstDifference(s[key]!, uv, path: path.isEmpty ? key : "\(path).\(key)", ignoring: ignoring) { return d }
            }
            return nil
        }
        let a = render(stored), b = render(used)
        return a == b ? nil : (path.isEmpty ? "configuration" : path, a, b)
    }

    /// A leaf (or a whole subtree of another kind) as canonical JSON text.
    static func render(_ value: Any) -> String {
        if let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]) {
            return String(decoding: data, as: UTF8.self)
        }
        return "\(value)"
    }
}
