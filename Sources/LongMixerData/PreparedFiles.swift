import Foundation
import LongMixerCore

// What the prepared-data tasks share: writing a task's folder atomically (a staging folder renamed
// into place, so an interrupted `data prepare` never leaves data that look ready), reading whole
// files with one-line errors, and describing what a folder holds.

enum PreparedFiles {
    /// Runs `body` on an empty staging folder beside `final`, then renames it to `final`
    /// (which must not exist yet, or be an empty folder). The staging folder is removed on failure.
    static func writeAtomically(_ final: URL, _ body: (URL) throws -> Void) throws {
        let fm = FileManager.default
        let parent = final.deletingLastPathComponent()
        do { try fm.createDirectory(at: parent, withIntermediateDirectories: true) } catch {
            throw UserError(.runtime, what: "data folder", value: parent.path, why: "cannot be created (\(reason(error)))",
                            remedy: "choose another --data-dir")
        }
        let staging = parent.appendingPathComponent(".\(final.lastPathComponent)-partial-\(UUID().uuidString)")
        try fm.createDirectory(at: staging, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: staging) }
        try body(staging)
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: final.path, isDirectory: &isDirectory) {
            let entries = (try? fm.contentsOfDirectory(atPath: final.path)) ?? ["?"]
            guard isDirectory.boolValue, entries.isEmpty else {
                throw UserError(.runtime, what: "data folder", value: final.path, why: "exists and is not an empty folder (it holds incomplete data)",
                                remedy: "remove it, then prepare again")
            }
            try fm.removeItem(at: final)
        }
        do { try fm.moveItem(at: staging, to: final) } catch {
            throw UserError(.runtime, what: "data folder", value: final.path, why: "cannot be written (\(reason(error)))")
        }
    }

    /// The bytes of a regular file, or a one-line error naming it.
    static func read(_ url: URL, what: String) throws -> Data {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw UserError(what: what, value: url.path, why: "does not exist")
        }
        guard !isDirectory.boolValue else { throw UserError(what: what, value: url.path, why: "is a folder, not a file") }
        do { return try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw UserError(what: what, value: url.path, why: "cannot be read (\(reason(error)))")
        }
    }

    static func write(_ data: Data, to url: URL) throws {
        do { try data.write(to: url) } catch {
            throw UserError(.runtime, what: "data file", value: url.path, why: "cannot be written (\(reason(error)))", remedy: "check the free disk space")
        }
    }

    /// Writes a file in pieces of about 4 MiB: `body` appends to the buffer and calls `flush`
    /// whenever it likes. Returns the bytes written.
    static func writeChunked(_ url: URL, _ body: (inout [UInt8], _ flush: (inout [UInt8]) throws -> Void) throws -> Void) throws -> Int {
        guard FileManager.default.createFile(atPath: url.path, contents: nil), let handle = try? FileHandle(forWritingTo: url) else {
            throw UserError(.runtime, what: "data file", value: url.path, why: "cannot be created", remedy: "check the folder's permissions")
        }
        defer { try? handle.close() }
        var written = 0
        func flush(_ buffer: inout [UInt8]) throws {
            guard buffer.count >= 1 << 22 else { return }
            try put(buffer)
            buffer.removeAll(keepingCapacity: true)
        }
        func put(_ buffer: [UInt8]) throws {
            do { try handle.write(contentsOf: buffer) } catch {
                throw UserError(.runtime, what: "data file", value: url.path, why: "cannot be written (\(reason(error)))", remedy: "check the free disk space")
            }
            written += buffer.count
        }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 23)
        try body(&buffer, flush)
        try put(buffer)
        return written
    }

    /// Size in bytes of a regular file (nil: missing).
    static func size(_ url: URL) -> Int? {
        guard let a = try? FileManager.default.attributesOfItem(atPath: url.path), (a[.type] as? FileAttributeType) == .typeRegular else { return nil }
        return a[.size] as? Int
    }

    /// "12.3 MB".
    static func megabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }

    static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        return ns.localizedDescription
    }

    /// The first folder among `candidates` holding every file of `names`.
    static func folder(holding names: [String], among candidates: [URL]) -> URL? {
        candidates.first { dir in names.allSatisfy { size(dir.appendingPathComponent($0)) != nil } }
    }
}

/// `text` fit for a one-line message: control characters escaped, at most `limit` characters.
func printable(_ text: String, limit: Int = 40) -> String {
    var out = ""
    for scalar in text.unicodeScalars.prefix(limit) {
        if scalar.value < 0x20 || scalar.value == 0x7F || scalar == "\u{FFFD}" || (0x80..<0xA0).contains(scalar.value)
            || scalar == "\u{2028}" || scalar == "\u{2029}" || scalar == "\u{85}" {
            out += "\\u{\(String(scalar.value, radix: 16))}"
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return text.unicodeScalars.count > limit ? out + "…" : out
}

/// The lines of a text file (LF or CRLF; a final line without a newline counts), as byte ranges.
struct TextLines {
    let bytes: Data
    init(_ bytes: Data) { self.bytes = bytes }

    /// Calls `body(lineNumber, line)` for each line, 1-based; stops when it returns false.
    func forEach(_ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Bool) rethrows {
        try bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let all = raw.bindMemory(to: UInt8.self)
            var start = 0, number = 0
            guard let base = all.baseAddress else { return }
            while start < all.count {
                var end = all.count
                if let found = memchr(base + start, 0x0A, all.count - start) {
                    end = UnsafePointer<UInt8>(found.assumingMemoryBound(to: UInt8.self)) - base
                }
                var last = end
                if last > start && all[last - 1] == 0x0D { last -= 1 }
                number += 1
                if try !body(number, UnsafeBufferPointer(rebasing: all[start..<last])) { return }
                start = end + 1
            }
        }
    }
}
