import Foundation
import LongMixerCore

// Data that ship in Debian packages (Fashion-MNIST, bacterial genomes): a pinned package version is
// downloaded with `apt-get download` into `<data dir>/.cache`, its sha256 is checked, and it is
// unpacked with `dpkg-deb -x`. A verified .deb already in the cache is used as it is, which is also
// the way in on a machine without apt-get: put the file there.

public struct DebianPackage: Sendable {
    public let name: String
    public let version: String
    public let sha256: String

    public init(name: String, version: String, sha256: String) {
        self.name = name
        self.version = version
        self.sha256 = sha256
    }

    /// The file name `apt-get download` writes (architecture-independent packages).
    public var fileName: String { "\(name)_\(version.replacingOccurrences(of: ":", with: "%3a"))_all.deb" }

    static let downloadTimeout: Double = 900

    /// The verified .deb in `cache` (downloaded first if needed).
    public func fetch(cache: URL, log: (String) -> Void) throws -> URL {
        let fm = FileManager.default
        do { try fm.createDirectory(at: cache, withIntermediateDirectories: true) } catch {
            throw UserError(.runtime, what: cache.path, why: "cannot be created (\(error.localizedDescription))")
        }
        let deb = cache.appendingPathComponent(fileName)
        if fm.fileExists(atPath: deb.path), (try? SHA256.hexDigest(ofFile: deb)) == sha256 {
            log("\(name): using the cached \(deb.path)")
            return deb
        }
        if fm.fileExists(atPath: deb.path) { try? fm.removeItem(at: deb) }   // a partial or corrupt download
        log("\(name): apt-get download \(name)=\(version) (Debian)")
        // apt-get download writes into the current folder.
        let result = try ChildProcess.run("sh", ["-c", "cd \"$1\" && exec apt-get download -q \"$2\"", "sh", cache.path, "\(name)=\(version)"],
                                          timeout: Self.downloadTimeout)
        guard result.status == 0, fm.fileExists(atPath: deb.path) else {
            let last = result.lastErrorLine
            throw UserError(.runtime, what: "apt-get download \(name)=\(version)", why: last.isEmpty ? "exited with status \(result.status)" : last,
                            remedy: "it needs apt-get, Debian's package lists (apt-get update) and the Debian mirror; or put \(fileName) (sha256 \(sha256)) into \(cache.path)")
        }
        let digest = try SHA256.hexDigest(ofFile: deb)
        guard digest == sha256 else {
            throw UserError(.runtime, what: deb.path, why: "has sha256 \(digest), expected \(sha256)",
                            remedy: "the mirror serves another build of \(name) \(version); the file was kept for inspection")
        }
        log("\(name): sha256 verified (\(sha256))")
        return deb
    }

    /// Unpacks the .deb's files into `destination`.
    public func extract(_ deb: URL, into destination: URL) throws {
        try FileManager.default.createDirectory(at: destination, withIntermediateDirectories: true)
        let result = try ChildProcess.run("dpkg-deb", ["-x", deb.path, destination.path], timeout: 300)
        guard result.status == 0 else {
            throw UserError(.runtime, what: "dpkg-deb -x \(deb.lastPathComponent)", why: result.lastErrorLine.isEmpty ? "exited with status \(result.status)" : result.lastErrorLine)
        }
    }
}
