import Foundation
import LongMixerCore
import LongMixerNN

/// Which checkpoint: the newest periodic one, or the one with the best validation metric.
public enum CheckpointKind: String, Codable, CaseIterable, Sendable {
    case last, best

    /// Folder name prefix: `step-120`, `best-80`.
    var prefix: String { self == .last ? "step-" : "best-" }
}

/// The training loop's position and running totals. With the weights, the optimizer state and the
/// modules' random streams it is everything a resumed run needs to continue as if it never stopped
/// (the data order is a function of the step: batch k of an epoch is samples k·B ..< (k+1)·B, and
/// the learning rate a function of the step through the schedule).
public struct TrainingProgress: Codable, Equatable, Sendable {
    public var step = 0
    public var samplesSeen = 0
    public var trainingSeconds = 0.0
    public var elapsedSeconds = 0.0
    /// Running sums since the last train record (loss and accuracy weighted as the objective says).
    public var windowLoss = 0.0, windowCorrect = 0, windowSamples = 0, windowWeight = 0
    public var windowNorm = 0.0, windowSteps = 0, windowSeconds = 0.0
    public var lastTrain: EvaluationResult?
    public var lastValidationStep: Int?
    public var lastValidation: EvaluationResult?
    /// The best validation so far (by `Trainer.isBetter`) and its step.
    public var bestStep: Int?
    public var best: EvaluationResult?
    /// The validation due at `step` has not been taken (the run stopped during it).
    public var validationPending = false
    public var stoppedEarly = false
    public var stopReason: String?

    public init() {}

    /// The clock readings stay out of `state.json` (they go to `clock.json`), so the same seed and
    /// thread count give byte-identical checkpoint records.
    enum CodingKeys: String, CodingKey {
        case step, samplesSeen, windowLoss, windowCorrect, windowSamples, windowWeight, windowNorm, windowSteps
        case lastTrain, lastValidationStep, lastValidation, bestStep, best, validationPending, stoppedEarly, stopReason
    }
}

/// `clock.json` of a checkpoint: what differs between two runs of the same seed (times, and the
/// length of the metrics log, whose lines hold times). Only the reports depend on it: without it a
/// run resumes with its times from zero and its log cut after the checkpoint's step.
struct CheckpointClock: Codable {
    var trainingSeconds = 0.0, elapsedSeconds = 0.0, windowSeconds = 0.0
    var metricsBytes: UInt64?
}

/// A module random stream as stored: its four state words in hex and its counter.
public struct RandomStreamState: Codable, Equatable, Sendable {
    public var state: [String]
    public var count: Int
}

/// `state.json` of a checkpoint: what the step, the metrics log and the random streams were, and the
/// checksums of the weights and optimizer files beside it.
public struct CheckpointRecord: Codable, Equatable, Sendable {
    public static let currentFormat = 1

    public var format = CheckpointRecord.currentFormat
    public var kind: CheckpointKind
    public var step: Int
    /// The task and model the weights are for (from the weights metadata).
    public var task: String?
    public var model: String?
    public var progress: TrainingProgress
    public var randomStreams: [String: RandomStreamState] = [:]
    /// Bytes of `metrics.jsonl` when the checkpoint was written: a resumed run cuts the log there
    /// (in `clock.json`; nil when it could not be read).
    public var metricsBytes: UInt64? = 0
    public var weightsChecksum: String = ""
    public var optimizerChecksum: String?
    /// FNV-1a of this record's JSON with `digest` empty, so a damaged `state.json` is refused like
    /// damaged weights.
    public var digest: String = ""

    enum CodingKeys: String, CodingKey {
        case format, kind, step, task, model, progress, randomStreams, weightsChecksum, optimizerChecksum, digest
    }

    var clock: CheckpointClock {
        get {
            CheckpointClock(trainingSeconds: progress.trainingSeconds, elapsedSeconds: progress.elapsedSeconds,
                            windowSeconds: progress.windowSeconds, metricsBytes: metricsBytes)
        }
        set {
            progress.trainingSeconds = newValue.trainingSeconds
            progress.elapsedSeconds = newValue.elapsedSeconds
            progress.windowSeconds = newValue.windowSeconds
            metricsBytes = newValue.metricsBytes
        }
    }

    public init(kind: CheckpointKind, step: Int, task: String?, model: String?, progress: TrainingProgress) {
        self.kind = kind
        self.step = step
        self.task = task
        self.model = model
        self.progress = progress
    }

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }

    func computedDigest() throws -> String {
        var unsigned = self
        unsigned.digest = ""
        var hash = FNV1a()
        hash.mix(try Self.encoder().encode(unsigned))
        return hash.hex
    }

    /// The record as `state.json` bytes, with its digest.
    func encoded() throws -> Data {
        var signed = self
        signed.digest = try computedDigest()
        var data = try Self.encoder().encode(signed)
        data.append(0x0A)
        return data
    }

    /// Decodes and checks a `state.json`.
    static func decode(_ data: Data) throws -> CheckpointRecord {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let record: CheckpointRecord
        do { record = try decoder.decode(CheckpointRecord.self, from: data) } catch {
            throw CheckpointDamage("state.json is not a checkpoint record (\(jsonProblem(error)))")
        }
        guard record.format == currentFormat else {
            throw CheckpointDamage("state.json has format \(record.format); this version reads format \(currentFormat)")
        }
        guard try record.computedDigest() == record.digest else {
            throw CheckpointDamage("state.json does not match its digest (the file was damaged or edited)")
        }
        return record
    }
}

/// Why a checkpoint cannot be used (one clause; the store adds where it is).
struct CheckpointDamage: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The short reason of a JSON decoding error.
func jsonProblem(_ error: Error) -> String {
    switch error {
    case DecodingError.dataCorrupted(let c): return c.underlyingError.map { "\(($0 as NSError).localizedDescription)" } ?? c.debugDescription
    case DecodingError.keyNotFound(let key, _): return "no \"\(key.stringValue)\""
    case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
        return "\(c.codingPath.map(\.stringValue).joined(separator: ".")): \(c.debugDescription)"
    default: return "\(error)"
    }
}

/// A checkpoint read back and verified, not yet put into a model.
public struct LoadedCheckpoint {
    public let url: URL
    public let record: CheckpointRecord
    public let weights: [String: NamedTensor]
    public let weightsMetadata: [String: String]
    /// nil for a best checkpoint (weights only).
    public let optimizer: [String: NamedTensor]?
}

/// The `checkpoints/` folder of a run directory:
///
///     checkpoints/step-<n>/  model.safetensors, optimizer.safetensors, state.json, clock.json  (the newest two)
///     checkpoints/best-<n>/  model.safetensors, state.json, clock.json                        (the best so far)
///
/// A checkpoint is written into a hidden `.partial-…` folder, every file flushed to disk, then the
/// folder renamed into place and the parent flushed: a checkpoint folder is complete or absent. A
/// partial folder left by a killed writer is ignored and removed by the next write. The previous
/// periodic checkpoint is kept so a damaged newest one (a bad disk, a copy cut short) still leaves
/// one to resume from.
public struct CheckpointStore {
    public let directory: URL
    /// Periodic checkpoints kept (the newest first).
    public static let keptPeriodic = 2
    static let partialPrefix = ".partial-"

    public init(runDirectory: URL) {
        directory = runDirectory.appendingPathComponent("checkpoints")
    }

    /// Checkpoint folders of `kind`, newest first.
    public func list(_ kind: CheckpointKind) -> [(step: Int, url: URL)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.compactMap { name -> (Int, URL)? in
            guard name.hasPrefix(kind.prefix), let step = Int(name.dropFirst(kind.prefix.count)), step >= 0 else { return nil }
            return (step, directory.appendingPathComponent(name))
        }.sorted { $0.0 > $1.0 }
    }

    /// Writes a checkpoint of `model` (and `optimizer`, for a periodic one) and returns its folder;
    /// prunes older checkpoints of the kind.
    @discardableResult
    public func write(_ record: CheckpointRecord, model: Module, weightsMetadata: [String: String],
                      optimizer: (any Optimizer)?) throws -> URL {
        let fm = FileManager.default
        let final = directory.appendingPathComponent("\(record.kind.prefix)\(record.step)")
        let partial = directory.appendingPathComponent("\(Self.partialPrefix)\(record.kind.rawValue)-\(record.step)-\(getpid())")
        func failure(_ why: String) -> UserError {
            UserError(.runtime, what: "checkpoint", value: final.path, why: "cannot be written (\(why))",
                      remedy: "free disk space or make the run directory writable; the previous checkpoint is kept")
        }
        do {
            try fm.createDirectory(at: directory, withIntermediateDirectories: true)
            removePartials()
            try fm.createDirectory(at: partial, withIntermediateDirectories: false)
        } catch { throw failure(RunDirectory.reason(error)) }
        defer { try? fm.removeItem(at: partial) }
        var record = record
        do {
            var metadata = weightsMetadata
            metadata["steps"] = String(record.step)
            record.weightsChecksum = try model.saveWeights(to: partial.appendingPathComponent("model.safetensors"), metadata: metadata)
            if let optimizer {
                record.optimizerChecksum = try SafeTensors.saveWithChecksum(optimizer.stateDictionary(),
                                                                           to: partial.appendingPathComponent("optimizer.safetensors"))
            }
            try SafeTensors.writeAtomically(try record.encoded(), to: partial.appendingPathComponent("state.json"))
            try SafeTensors.writeAtomically(try CheckpointRecord.encoder().encode(record.clock), to: partial.appendingPathComponent("clock.json"))
        } catch let e as SafeTensorsError { throw failure(e.description) } catch let e as EncodingError { throw failure("\(e)") }
        // The same step again (a run resumed from an older checkpoint because this one was damaged): replace it.
        if fm.fileExists(atPath: final.path) {
            let discarded = directory.appendingPathComponent("\(Self.partialPrefix)discarded-\(record.kind.rawValue)-\(record.step)-\(getpid())")
            guard rename(final.path, discarded.path) == 0 else { throw failure(String(cString: strerror(errno))) }
            try? fm.removeItem(at: discarded)
        }
        guard rename(partial.path, final.path) == 0 else { throw failure(String(cString: strerror(errno))) }
        Self.flush(directory)
        if record.kind == .last {
            for (_, old) in list(.last).dropFirst(Self.keptPeriodic) { try? fm.removeItem(at: old) }
            pruneBest()
        }
        return final
    }

    /// Removes the best checkpoints no kept periodic one needs: a resumed run takes the best as of its
    /// checkpoint, so those from the oldest kept one's best step on stay (and always the newest).
    func pruneBest() {
        guard let oldest = list(.last).last,
              let data = FileManager.default.contents(atPath: oldest.url.appendingPathComponent("state.json").path),
              let record = try? CheckpointRecord.decode(data) else { return }
        let needed = record.progress.bestStep ?? .max
        for (step, url) in list(.best).dropFirst() where step < needed { try? FileManager.default.removeItem(at: url) }
    }

    /// Removes folders left by interrupted writes.
    func removePartials() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names where name.hasPrefix(Self.partialPrefix) {
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
    }

    /// Removes the checkpoints written after `step` (a resumed run writes them again).
    func removeCheckpoints(after step: Int) {
        for kind in CheckpointKind.allCases {
            for (s, url) in list(kind) where s > step { try? FileManager.default.removeItem(at: url) }
        }
    }

    /// fsync of a folder, so a rename in it survives a crash (best effort: some file systems refuse it).
    static func flush(_ folder: URL) {
        let fd = open(folder.path, O_RDONLY)
        if fd >= 0 { _ = fsync(fd); close(fd) }
    }

    /// Reads one checkpoint folder and verifies it: the record's digest, both files' checksums against
    /// the record, the step and kind against the folder name. Throws `UserError` naming the folder.
    public func read(_ url: URL) throws -> LoadedCheckpoint {
        do {
            let stateURL = url.appendingPathComponent("state.json")
            guard let data = FileManager.default.contents(atPath: stateURL.path) else { throw CheckpointDamage("state.json is missing or unreadable") }
            var record = try CheckpointRecord.decode(data)
            record.metricsBytes = nil
            if let clock = FileManager.default.contents(atPath: url.appendingPathComponent("clock.json").path),
               let decoded = try? JSONDecoder().decode(CheckpointClock.self, from: clock) {
                record.clock = decoded
            }
            guard url.lastPathComponent == "\(record.kind.prefix)\(record.step)" else {
                throw CheckpointDamage("state.json describes the \(record.kind.rawValue) checkpoint of step \(record.step), not this folder")
            }
            let (weights, metadata) = try readTensors(url.appendingPathComponent("model.safetensors"), checksum: record.weightsChecksum)
            var optimizer: [String: NamedTensor]? = nil
            if let sum = record.optimizerChecksum {
                optimizer = try readTensors(url.appendingPathComponent("optimizer.safetensors"), checksum: sum).tensors
            } else if record.kind == .last {
                throw CheckpointDamage("state.json records no optimizer state")
            }
            return LoadedCheckpoint(url: url, record: record, weights: weights, weightsMetadata: metadata, optimizer: optimizer)
        } catch let damage as CheckpointDamage {
            throw UserError(what: "checkpoint", value: url.path, why: "is damaged: \(damage)", remedy: Self.damagedRemedy)
        }
    }

    static let damagedRemedy = "resume from an intact copy, or start the run again with --overwrite"

    private func readTensors(_ url: URL, checksum: String) throws -> (tensors: [String: NamedTensor], metadata: [String: String]) {
        let name = url.lastPathComponent
        guard FileManager.default.fileExists(atPath: url.path) else { throw CheckpointDamage("\(name) is missing") }
        let loaded: (tensors: [String: NamedTensor], metadata: [String: String])
        do { loaded = try SafeTensors.loadWithMetadata(from: url) } catch let e as SafeTensorsError {
            throw CheckpointDamage("\(name): \(e.description)")
        }
        let actual = SafeTensors.checksum(loaded.tensors)
        guard actual == checksum && loaded.metadata[SafeTensors.checksumKey] == checksum else {
            throw CheckpointDamage("\(name) has checksum \(actual), state.json records \(checksum) (the file was damaged or replaced)")
        }
        return loaded
    }

    /// The newest checkpoint of `kind` that reads back intact and that `accept` takes (it may throw,
    /// e.g. when the weights do not fit the model), with the newer ones refused and why.
    public func newestIntact(_ kind: CheckpointKind, accept: (LoadedCheckpoint) throws -> Void = { _ in })
        -> (checkpoint: LoadedCheckpoint?, refused: [(url: URL, error: Error)]) {
        var refused: [(URL, Error)] = []
        for (_, url) in list(kind) {
            do {
                let c = try read(url)
                try accept(c)
                return (c, refused)
            } catch {
                refused.append((url, error))
            }
        }
        return (nil, refused)
    }
}

extension Module {
    /// Where every random stream stands, by dotted name.
    func randomStreamStates() -> [String: RandomStreamState] {
        var out: [String: RandomStreamState] = [:]
        for (name, stream) in namedRandomStreams() {
            out[name] = RandomStreamState(state: stream.generator.state.map { String($0, radix: 16) }, count: stream.count)
        }
        return out
    }

    /// Puts `states` back into the random streams; they must name exactly this model's streams.
    func restoreRandomStreams(_ states: [String: RandomStreamState]) throws {
        let streams = namedRandomStreams()
        let names = Set(streams.map(\.0))
        guard names == Set(states.keys) else {
            let missing = names.subtracting(states.keys).sorted(), unexpected = Set(states.keys).subtracting(names).sorted()
            throw CheckpointDamage("its random streams do not fit this model (missing: \(missing), unexpected: \(unexpected))")
        }
        var parsed: [(RandomStream, [UInt64], Int)] = []
        for (name, stream) in streams {
            let s = states[name]!
            let words = s.state.compactMap { UInt64($0, radix: 16) }
            guard words.count == 4, s.state.count == 4, words != [0, 0, 0, 0], s.count >= 0 else {
                throw CheckpointDamage("random stream \(name) holds \(s.state), count \(s.count)")
            }
            parsed.append((stream, words, s.count))
        }
        for (stream, words, count) in parsed { stream.generator.state = words; stream.count = count }
    }
}
