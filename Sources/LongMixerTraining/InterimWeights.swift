import Foundation

// INTERIM until branch wt-safetensors (Module.saveWeights(to:metadata:)) is merged: a minimal
// safetensors writer (F32 tensors, little-endian, header JSON with __metadata__, padded to 8 bytes)
// so runs already produce a loadable `model.safetensors`. The Trainer calls only
// `saveModelWeights`, whose body becomes `try model.saveWeights(to:metadata:)` after the merge.

func saveModelWeights(_ model: Module, to url: URL, metadata: [String: String]) throws {
    var entries: [(String, Tensor)] = model.namedParameters().map { ($0.0, $0.1.value) }
    entries += model.namedBuffers().map { ($0.0, $0.1.value) }
    var header: [String: Any] = ["__metadata__": metadata]
    var offset = 0
    for (name, t) in entries {
        let bytes = t.count * MemoryLayout<Float>.size
        header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]]
        offset += bytes
    }
    var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    while json.count % 8 != 0 { json.append(0x20) }
    var data = Data()
    var size = UInt64(json.count).littleEndian
    withUnsafeBytes(of: &size) { data.append(contentsOf: $0) }
    data.append(json)
    for (_, t) in entries { t.withUnsafePointer { data.append(UnsafeBufferPointer(start: $0, count: t.count)) } }
    try data.write(to: url, options: .atomic)
}
