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
///     config.json        the resolved configuration (written at the start)
///     metrics.jsonl      one JSON object per logged step / evaluation (appended as training goes)
///     model.safetensors  final weights
///     summary.json       final metrics, wall-clock time, samples seen
///
/// An existing non-empty directory is never reused silently: `prepare` refuses it unless
/// `overwrite` is set, in which case its previous contents are removed first.
public struct RunDirectory: Sendable {
    public let url: URL

    public var configURL: URL { url.appendingPathComponent("config.json") }
    public var metricsURL: URL { url.appendingPathComponent("metrics.jsonl") }
    public var weightsURL: URL { url.appendingPathComponent("model.safetensors") }
    public var summaryURL: URL { url.appendingPathComponent("summary.json") }

    /// `runs/<task>-<model>-<UTC timestamp>` under `root`; a numeric suffix is added if that name is taken.
    public static func defaultURL(task: String, model: String, root: URL = URL(fileURLWithPath: "runs"), date: Date = Date()) -> URL {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        let base = "\(task)-\(model)-\(formatter.string(from: date))"
        var candidate = root.appendingPathComponent(base)
        var suffix = 2
        while FileManager.default.fileExists(atPath: candidate.path) {
            candidate = root.appendingPathComponent("\(base)-\(suffix)")
            suffix += 1
        }
        return candidate
    }

    /// Checks and creates the directory (with intermediate folders) and verifies it is writable.
    public static func prepare(_ url: URL, overwrite: Bool) throws -> RunDirectory {
        let fm = FileManager.default
        let path = url.path
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw RunDirectoryError.notADirectory(path) }
            let contents: [String]
            do { contents = try fm.contentsOfDirectory(atPath: path) } catch {
                throw RunDirectoryError.notWritable(path, "cannot list its contents")
            }
            if !contents.isEmpty {
                guard overwrite else { throw RunDirectoryError.notEmpty(path) }
                for name in contents {
                    do { try fm.removeItem(at: url.appendingPathComponent(name)) } catch {
                        throw RunDirectoryError.notWritable(path, "cannot remove '\(name)' to overwrite it")
                    }
                }
            }
        } else {
            // Name the folder that stops us: the nearest existing ancestor, if it is a file or read-only.
            var ancestor = url.deletingLastPathComponent()
            while !fm.fileExists(atPath: ancestor.path) && ancestor.path != "/" { ancestor = ancestor.deletingLastPathComponent() }
            var ancestorIsDirectory: ObjCBool = false
            if fm.fileExists(atPath: ancestor.path, isDirectory: &ancestorIsDirectory) && !ancestorIsDirectory.boolValue {
                throw RunDirectoryError.notWritable(path, "'\(ancestor.path)' is a file, not a folder")
            }
            do { try fm.createDirectory(at: url, withIntermediateDirectories: true) } catch {
                throw RunDirectoryError.notWritable(path, "cannot create it inside '\(ancestor.path)' (\(Self.reason(error)))")
            }
        }
        // Probe: the first real write happens only after model construction, so fail early here.
        let probe = url.appendingPathComponent(".write-probe")
        guard fm.createFile(atPath: probe.path, contents: Data()) else {
            throw RunDirectoryError.notWritable(path, "permission denied")
        }
        try? fm.removeItem(at: probe)
        return RunDirectory(url: url)
    }

    init(url: URL) { self.url = url }

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
