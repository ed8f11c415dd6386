import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

/// Errors about the run directory, one line each.
public enum RunDirectoryError: Error, CustomStringConvertible, Equatable {
    case notEmpty(String)
    case notADirectory(String)
    case notWritable(String, String)

    public var description: String {
        switch self {
        case .notEmpty(let path):
            return "run directory '\(path)' already exists and is not empty; choose another --output or pass --overwrite to replace it"
        case .notADirectory(let path):
            return "run directory '\(path)' exists and is not a directory"
        case .notWritable(let path, let reason):
            return "cannot write the run directory '\(path)': \(reason)"
        }
    }
}

/// The folder one training run writes into:
///
///     .longmixer-run     marker: this folder is a LongMixer run directory (written first)
///     config.json        the resolved configuration (written at the start)
///     metrics.jsonl      one JSON object per logged step / evaluation (appended as training goes)
///     checkpoints/       periodic, best and final checkpoints (`CheckpointStore`)
///     model.safetensors  final weights
///     summary.json       final metrics, wall-clock time, samples seen
///
/// An existing non-empty directory is never reused silently: `prepare` refuses it unless
/// `overwrite` is set, and even then replaces only a run directory (the marker, or only the files
/// above from before the marker existed) that is not the working directory, the home directory,
/// `/`, one of their parents, or a folder holding one of the run's inputs. Nothing is deleted at
/// that point: the previous run is renamed to a hidden sibling (`.<name>.longmixer-replaced-…`)
/// and removed only by `commitReplacement()` once the new run has written its weights;
/// `rollBackReplacement()` puts it back. A process killed in between leaves the sibling, which never
/// blocks a later run, is listed by `interruptedReplacements(of:)`, restored by
/// `recoverInterruptedReplacement(of:)`, and removed by the next successful replacement's commit.
public struct RunDirectory: Sendable {
    public let url: URL
    /// Where the previous contents wait while this run replaces them (nil when nothing was replaced).
    public let replaced: URL?

    public var configURL: URL { url.appendingPathComponent("config.json") }
    public var metricsURL: URL { url.appendingPathComponent("metrics.jsonl") }
    public var weightsURL: URL { url.appendingPathComponent("model.safetensors") }
    public var summaryURL: URL { url.appendingPathComponent("summary.json") }

    /// The file that marks a folder as a LongMixer run directory.
    public static let markerName = ".longmixer-run"
    /// What a run directory written before the marker existed can hold.
    static let legacyRunFiles: Set<String> = ["config.json", "metrics.jsonl", "model.safetensors", "summary.json", ".write-probe"]
    static let asideInfix = ".longmixer-replaced-"

    /// `runs/<task>-<model>-<UTC timestamp>` under `root`; a numeric suffix is added if that name is taken.
    public static func defaultURL(task: String, model: String, root: URL = URL(fileURLWithPath: "runs"), date: Date = Date()) -> URL {
        let base = "\(task)-\(model)-\(timestamp(date))"
        var candidate = root.appendingPathComponent(base)
        var suffix = 2
        while FileManager.default.fileExists(atPath: candidate.path) {
            candidate = root.appendingPathComponent("\(base)-\(suffix)")
            suffix += 1
        }
        return candidate
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        return formatter.string(from: date)
    }

    /// Checks and creates the directory (with intermediate folders), writes the marker (which also
    /// proves it writable) and, with `overwrite`, moves a previous run aside (see the type's comment).
    /// `inputs` are the files and folders the run reads (corpus, data): a folder holding one is never
    /// replaced. `workingDirectory` and `home` are parameters so tests can never aim at the real ones.
    public static func prepare(_ url: URL, overwrite: Bool, inputs: [URL] = [],
                               workingDirectory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
                               home: URL = FileManager.default.homeDirectoryForCurrentUser) throws -> RunDirectory {
        let fm = FileManager.default
        let url = url.standardizedFileURL
        let path = url.path
        var replaced: URL?
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw UserError(what: "run directory", value: path, why: "exists and is not a folder", remedy: "choose another --output")
            }
            let contents: [String]
            do { contents = try fm.contentsOfDirectory(atPath: path) } catch {
                throw UserError(.runtime, what: "run directory", value: path, why: "cannot list its contents (\(reason(error)))")
            }
            if !contents.isEmpty {
                guard overwrite else {
                    // Point at a run an interrupted --overwrite moved aside: this is where a user looks for it.
                    let kept = interruptedReplacements(of: url).last.map { "; the run it replaced is kept in '\($0.path)'" } ?? ""
                    throw UserError(what: "run directory", value: path, why: "already exists and is not empty\(kept)",
                                    remedy: "choose another --output, or pass --overwrite to replace a previous run")
                }
                try checkReplaceable(url, contents: contents, inputs: inputs, workingDirectory: workingDirectory, home: home)
                replaced = try moveAside(url)
            }
        } else {
            // Name the folder that stops us: the nearest existing ancestor, if it is a file or read-only.
            var ancestor = url.deletingLastPathComponent()
            while !fm.fileExists(atPath: ancestor.path) && ancestor.path != "/" { ancestor = ancestor.deletingLastPathComponent() }
            var ancestorIsDirectory: ObjCBool = false
            if fm.fileExists(atPath: ancestor.path, isDirectory: &ancestorIsDirectory) && !ancestorIsDirectory.boolValue {
                throw UserError(what: "run directory", value: path, why: "'\(ancestor.path)' is a file, not a folder", remedy: "choose another --output")
            }
        }
        let run = RunDirectory(url: url, replaced: replaced)
        do {
            try fm.createDirectory(at: url, withIntermediateDirectories: true)
            try Data("LongMixer run directory (created \(ISO8601DateFormatter().string(from: Date())))\n".utf8)
                .write(to: url.appendingPathComponent(markerName))
        } catch {
            run.rollBackReplacement()
            throw UserError(.runtime, what: "run directory", value: path, why: "cannot write it (\(reason(error)))",
                            remedy: "choose a writable --output")
        }
        return run
    }

    /// Refuses to replace `url` unless it is a run directory that no one works in or reads from.
    static func checkReplaceable(_ url: URL, contents: [String], inputs: [URL], workingDirectory: URL, home: URL) throws {
        let targets = forms(url)
        func refuse(_ why: String, _ remedy: String = "choose another --output") -> UserError {
            UserError(what: "run directory", value: url.path, why: "--overwrite refused: \(why)", remedy: remedy)
        }
        if targets.contains("/") { throw refuse("it is the root folder /") }
        for t in targets {
            if forms(workingDirectory).contains(where: { contains(t, $0) }) {
                throw refuse("it is the working directory or one of its parents")
            }
            if forms(home).contains(where: { contains(t, $0) }) {
                throw refuse("it is the home directory or one of its parents")
            }
            for input in inputs where forms(input).contains(where: { contains(t, $0) }) {
                throw refuse("it holds '\(input.path)', which this run reads", "write the run elsewhere, or move the input out of it")
            }
        }
        let isRun = contents.contains(markerName) || contents.allSatisfy { legacyRunFiles.contains($0) }
        guard isRun else {
            throw refuse("it is not a LongMixer run directory (no \(markerName) marker) and holds \(contents.count) entr\(contents.count == 1 ? "y" : "ies")",
                         "choose another --output, or empty it yourself if its contents can go")
        }
    }

    /// The path as given (standardized) and with symbolic links resolved, when it exists.
    static func forms(_ url: URL) -> Set<String> {
        var out: Set<String> = [url.standardizedFileURL.path]
        if let resolved = realpath(url.path, nil) {
            out.insert(String(cString: resolved))
            free(resolved)
        }
        return Set(out.map { $0.count > 1 && $0.hasSuffix("/") ? String($0.dropLast()) : $0 })
    }

    /// `folder` is `path` or one of its ancestors.
    static func contains(_ folder: String, _ path: String) -> Bool {
        folder == "/" || path == folder || path.hasPrefix(folder + "/")
    }

    /// Renames `url` to a fresh hidden sibling and returns it (atomic: same parent folder).
    static func moveAside(_ url: URL) throws -> URL {
        let aside = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent)\(asideInfix)\(timestamp(Date()))-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        guard rename(url.path, aside.path) == 0 else {
            throw UserError(.runtime, what: "run directory", value: url.path,
                            why: "cannot move the previous run aside to replace it (\(String(cString: strerror(errno))))",
                            remedy: "the parent folder must be writable; or choose another --output")
        }
        return aside
    }

    /// Previous runs of `url` moved aside by replacements that never finished (oldest first).
    public static func interruptedReplacements(of url: URL) -> [URL] {
        let url = url.standardizedFileURL
        let parent = url.deletingLastPathComponent()
        let prefix = ".\(url.lastPathComponent)\(asideInfix)"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []).filter { $0.hasPrefix(prefix) }.sorted()
        return names.map { parent.appendingPathComponent($0) }
    }

    /// Puts the newest interrupted replacement of `url` back in place, discarding the unfinished run
    /// that replaced it (only if it is a run directory), and returns `url`.
    @discardableResult
    public static func recoverInterruptedReplacement(of url: URL) throws -> URL {
        let url = url.standardizedFileURL
        let fm = FileManager.default
        guard let latest = interruptedReplacements(of: url).last else {
            throw UserError(what: "run directory", value: url.path, why: "has no interrupted replacement to recover")
        }
        if fm.fileExists(atPath: url.path) {
            let contents = (try? fm.contentsOfDirectory(atPath: url.path)) ?? []
            guard contents.contains(markerName) || contents.allSatisfy({ legacyRunFiles.contains($0) }) else {
                throw UserError(what: "run directory", value: url.path, why: "holds something other than a LongMixer run, so it is not replaced",
                                remedy: "move it away, then recover again")
            }
            do { try fm.removeItem(at: url) } catch {
                throw UserError(.runtime, what: "run directory", value: url.path, why: "cannot remove the unfinished run (\(reason(error)))")
            }
        }
        guard rename(latest.path, url.path) == 0 else {
            throw UserError(.runtime, what: "run directory", value: latest.path, why: "cannot move it back (\(String(cString: strerror(errno))))")
        }
        return url
    }

    /// The new run is complete: removes the previous run (and any left over by interrupted replacements).
    public func commitReplacement() throws {
        guard replaced != nil else { return }   // asides are removed only when this run was asked to replace them
        for aside in Self.interruptedReplacements(of: url) {
            do { try FileManager.default.removeItem(at: aside) } catch {
                throw UserError(.runtime, what: "previous run", value: aside.path, why: "cannot remove it (\(Self.reason(error)))",
                                remedy: "the new run is complete; remove the folder yourself")
            }
        }
    }

    /// The new run failed: removes its files and puts the previous run back (best effort; what cannot
    /// be restored stays in `replaced`).
    public func rollBackReplacement() {
        guard let replaced else { return }
        let fm = FileManager.default
        if fm.fileExists(atPath: url.path) { try? fm.removeItem(at: url) }
        _ = rename(replaced.path, url.path)
    }

    /// Runs `body` (the training run, which writes the weights), then commits the replacement; if
    /// `body` throws, rolls it back and rethrows, unless `keepingOn` says the error leaves a run worth
    /// keeping (one that stopped with a checkpoint to resume from), which is committed.
    @discardableResult
    public func finishing<T>(keepingOn: (Error) -> Bool = { _ in false }, _ body: () throws -> T) throws -> T {
        let result: T
        do { result = try body() } catch {
            if keepingOn(error) { try commitReplacement() } else { rollBackReplacement() }
            throw error
        }
        try commitReplacement()
        return result
    }

    /// An exclusive lock on the run directory (on its marker) while a run writes into it, released
    /// when the lock is dropped or the process ends.
    public final class Lock {
        let descriptor: Int32
        init(_ descriptor: Int32) { self.descriptor = descriptor }
        deinit { close(descriptor) }
    }

    /// Locks the run directory, so a second process resuming the same run is refused instead of
    /// interleaving its checkpoints with this one's.
    public func lock() throws -> Lock {
        let marker = url.appendingPathComponent(Self.markerName).path
        let fd = open(marker, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw UserError(.runtime, what: "run directory", value: url.path, why: "cannot open its marker (\(String(cString: strerror(errno))))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw UserError(what: "run directory", value: url.path, why: "is in use by another longmixer process",
                            remedy: "wait for it to end, or stop it (Ctrl-C writes a checkpoint) and resume then")
        }
        return Lock(fd)
    }

    init(url: URL, replaced: URL? = nil) {
        self.url = url
        self.replaced = replaced
    }

    /// Writes `value` as pretty-printed, key-sorted JSON to `name` inside the directory.
    public func writeJSON(_ value: some Encodable, to name: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let target = url.appendingPathComponent(name)
        do {
            var data = try encoder.encode(value)
            data.append(0x0A)
            try data.write(to: target, options: .atomic)
        } catch let error as EncodingError {
            throw error
        } catch {
            throw RunDirectoryError.notWritable(target.path, Self.reason(error))
        }
    }

    /// The POSIX reason of a Foundation file error when there is one ("Permission denied"), else its description.
    static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        return ns.localizedDescription
    }
}
