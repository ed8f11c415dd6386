import Foundation
import LongMixerCore

// The LRA release's Pathfinder layout, for users who have it: a difficulty folder (e.g.
// `lra_release/pathfinder32/curv_contour_length_14`) holding `metadata/<n>.npy` and `imgs/<n>/sample_<i>.png`.
// Despite the extension, the release's metadata files are text: one line per image,
// `<subdir> <file name> <index> <label> …` (LRA's builder reads fields 0, 1 and 3). A real NumPy array
// of strings (what the generator's `np.save` writes) is read too. LRA splits the images 80/10/10 in
// file order.

/// One image of the release: its path under the difficulty folder and its label.
public struct PathfinderReleaseEntry: Equatable, Sendable {
    public var path: String
    public var label: Int
}

public enum PathfinderRelease {
    /// The rows of one metadata file (`name` names it in errors).
    public static func parseMetadata(_ data: Data, name: String) throws -> [PathfinderReleaseEntry] {
        let rows: [[String]]
        if data.starts(with: [0x93] + Array("NUMPY".utf8)) {
            rows = try parseNumpyStrings(data, name: name)
        } else {
            guard let text = String(data: data, encoding: .utf8) else { throw dataFileError(name, "is neither text nor a NumPy array") }
            rows = text.split(whereSeparator: \.isNewline).map { $0.split(whereSeparator: \.isWhitespace).map(String.init) }.filter { !$0.isEmpty }
        }
        guard !rows.isEmpty else { throw dataFileError(name, "lists no images") }
        return try rows.enumerated().map { n, fields in
            guard fields.count >= 4 else { throw dataFileError(name, "row \(n + 1) has \(fields.count) fields; expected at least 4 (folder, file, index, label)") }
            guard let label = Int(fields[3]), label == 0 || label == 1 else {
                throw dataFileError(name, "row \(n + 1) has label '\(printable(fields[3]))'; expected 0 or 1")
            }
            let path = fields[0] + "/" + fields[1]
            guard !path.hasPrefix("/"), !path.split(separator: "/").contains("..") else {
                throw dataFileError(name, "row \(n + 1) names a path outside the data folder: \(printable(path))")
            }
            return PathfinderReleaseEntry(path: path, label: label)
        }
    }

    /// A 1-D or 2-D NumPy array of fixed-width strings ('<U' UTF-32 or '|S' bytes), C order.
    static func parseNumpyStrings(_ data: Data, name: String) throws -> [[String]] {
        let bytes = [UInt8](data)
        guard bytes.count >= 10 else { throw dataFileError(name, "is truncated (NumPy header)") }
        let major = bytes[6]
        let headerLength: Int, start: Int
        switch major {
        case 1: headerLength = Int(bytes[8]) | Int(bytes[9]) << 8; start = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw dataFileError(name, "is truncated (NumPy header)") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24; start = 12
        default: throw dataFileError(name, "has an unknown NumPy format version \(major)")
        }
        guard headerLength <= bytes.count - start else { throw dataFileError(name, "is truncated (NumPy header)") }
        let header = String(decoding: bytes[start..<start + headerLength], as: UTF8.self)
        func field(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descr = field("descr"), descr.hasPrefix("'") else { throw dataFileError(name, "has a NumPy header without 'descr'") }
        let type = String(descr.dropFirst().prefix { $0 != "'" })
        let itemCharacters: Int, bytesPerCharacter: Int
        if type.hasPrefix("<U"), let n = Int(type.dropFirst(2)) { itemCharacters = n; bytesPerCharacter = 4 }
        else if type.hasPrefix("|S"), let n = Int(type.dropFirst(2)) { itemCharacters = n; bytesPerCharacter = 1 }
        else { throw dataFileError(name, "holds NumPy type \(printable(type)); expected strings (<U or |S)") }
        guard (1...4096).contains(itemCharacters) else { throw dataFileError(name, "holds strings of \(itemCharacters) characters") }
        if let order = field("fortran_order"), order.hasPrefix("True") { throw dataFileError(name, "is a Fortran-order NumPy array") }
        guard let shapeText = field("shape"), shapeText.hasPrefix("("), let close = shapeText.firstIndex(of: ")") else {
            throw dataFileError(name, "has a NumPy header without 'shape'")
        }
        let dims = shapeText[shapeText.index(after: shapeText.startIndex)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard (1...2).contains(dims.count), let rows = Int(dims[0]), rows >= 0, rows <= 1 << 24 else {
            throw dataFileError(name, "has NumPy shape (\(printable(dims.joined(separator: ", ")))); expected (rows, fields)")
        }
        let columns = dims.count == 2 ? Int(dims[1]) ?? -1 : 1
        guard (1...64).contains(columns) else { throw dataFileError(name, "has \(columns) fields per row") }
        let item = itemCharacters * bytesPerCharacter
        let body = start + headerLength
        guard bytes.count - body == rows * columns * item else {
            throw dataFileError(name, "holds \(bytes.count - body) bytes of strings, expected \(rows * columns * item)")
        }
        return try (0..<rows).map { r in
            try (0..<columns).map { c in
                let at = body + (r * columns + c) * item
                if bytesPerCharacter == 1 {
                    return String(decoding: bytes[at..<at + item].prefix { $0 != 0 }, as: UTF8.self)
                }
                var s = String.UnicodeScalarView()
                for k in 0..<itemCharacters {
                    let o = at + 4 * k
                    let v = UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24
                    if v == 0 { break }
                    guard let scalar = Unicode.Scalar(v) else { throw dataFileError(name, "holds an invalid character") }
                    s.append(scalar)
                }
                return String(s)
            }
        }
    }

    /// Every entry of the difficulty folder `root`, metadata files in numeric order (then by name).
    public static func entries(root: URL) throws -> [PathfinderReleaseEntry] {
        let metadata = root.appendingPathComponent("metadata")
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: metadata.path) else {
            throw dataFileError(metadata.path, "is missing", remedy: "it should hold the release's metadata/*.npy files")
        }
        let files = names.filter { $0.hasSuffix(".npy") }.sorted { a, b in
            let na = Int(a.dropLast(4)), nb = Int(b.dropLast(4))
            switch (na, nb) {
            case let (x?, y?): return x < y
            case (_?, nil): return true
            case (nil, _?): return false
            default: return a < b
            }
        }
        guard !files.isEmpty else { throw dataFileError(metadata.path, "holds no .npy metadata files") }
        var all: [PathfinderReleaseEntry] = []
        for f in files {
            let url = metadata.appendingPathComponent(f)
            let data: Data
            do { data = try Data(contentsOf: url) } catch { throw dataFileError(url.path, "cannot be read") }
            all += try parseMetadata(data, name: url.path)
        }
        return all
    }

    /// Converts the release at `root` into train/validation/test stores in `destination` (80/10/10 in
    /// file order), checking every image is `size`×`size`. Returns the three counts.
    public static func convert(root: URL, size: Int, destination: URL, description: String, log: (String) -> Void) throws -> [Int] {
        let entries = try entries(root: root)
        let n = entries.count
        guard n >= 3 else { throw dataFileError(root.path, "lists \(n) images; at least 3 are needed for three splits") }
        let cuts = [0, n * 8 / 10, n * 9 / 10, n]
        log("reading \(n) images listed under \(root.path)")
        var counts: [Int] = []
        for (s, split) in DataSplit.allCases.enumerated() {
            let writer = try LabelledStoreWriter(url: destination.appendingPathComponent(SplitStores.fileName(split)), width: size, height: size,
                                                 classNames: PathfinderGenerator.classNames, description: description)
            let part = Array(entries[cuts[s]..<cuts[s + 1]])
            let block = 4096
            for start in stride(from: 0, to: part.count, by: block) {
                let slice = Array(part[start..<min(start + block, part.count)])
                var images = [[UInt8]](repeating: [], count: slice.count)
                var failure: Error?
                let lock = NSLock()
                images.withUnsafeMutableBufferPointer { out in
                    let o = out.baseAddress!
                    parallelFor(slice.count, grain: 16) { range in
                        for i in range {
                            let url = root.appendingPathComponent(slice[i].path)
                            do {
                                let data: Data
                                do { data = try Data(contentsOf: url) } catch { throw dataFileError(url.path, "is missing or unreadable") }
                                let image = try PNGDecoder.decodeGray(data, name: url.path)
                                guard image.width == size && image.height == size else {
                                    throw dataFileError(url.path, "is \(image.width)×\(image.height); this task's images are \(size)×\(size)")
                                }
                                o[i] = image.pixels
                            } catch {
                                lock.lock(); failure = failure ?? error; lock.unlock()
                            }
                        }
                    }
                }
                if let failure { throw failure }
                for (i, image) in images.enumerated() { try writer.append(label: slice[i].label, image) }
            }
            try writer.finish()
            counts.append(part.count)
        }
        return counts
    }
}
