import Foundation
import LongMixerCore

// What a training run tells while it goes, and the three ways the CLI shows it: plain periodic
// lines (a pipe or a file), one live line redrawn in place (a terminal), JSON (one object per event).

/// Where a run stands after a step, for a live progress line.
public struct LiveStatus: Equatable, Sendable {
    public var step: Int
    public var totalSteps: Int
    public var epoch: Int
    /// Running loss and accuracy since the last train record.
    public var loss: Double
    public var accuracy: Double
    /// Training throughput since the last train record, in `rateUnit` (`seq/s`, or `tok/s` for a language model).
    public var rate: Double
    public var rateUnit: String
    public var elapsedSeconds: Double
    public var etaSeconds: Double
}

/// Events a training run reports while it goes.
public enum TrainingEvent {
    case started(totalSteps: Int, parameterCount: Int, trainSamples: Int, runDirectory: URL?)
    /// A resumed run goes on after `step`, from `checkpoint` (nil: there was none yet; from the start).
    case resumed(step: Int, checkpoint: URL?)
    /// After every step.
    case step(LiveStatus)
    /// A train-metrics record with the estimated seconds remaining.
    case progress(MetricsRecord, totalSteps: Int, etaSeconds: Double?)
    /// An evaluation under way: batches done of all.
    case evaluating(split: MetricsRecord.Kind, done: Int, total: Int)
    case evaluation(MetricsRecord)
    case checkpoint(CheckpointKind, step: Int, url: URL)
    /// A damaged checkpoint passed over (the run goes on from an older one).
    case checkpointRefused(url: URL, reason: String)
    case earlyStop(step: Int, accuracy: Double, target: Double)
    case finished(TrainingSummary, runDirectory: URL?)
}

/// Receives training events (console lines, a test's recorder, nothing).
public protocol TrainingReporter: AnyObject {
    func report(_ event: TrainingEvent)
}

/// Ignores everything.
public final class SilentReporter: TrainingReporter {
    public init() {}
    public func report(_ event: TrainingEvent) {}
}

/// The text of console lines, shared by the plain and the live reporter.
public enum ProgressText {
    /// Widest progress line.
    public static let columns = 100

    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        let s = Int(seconds.rounded())
        if s >= 3600 { return String(format: "%dh%02dm%02ds", s / 3600, (s / 60) % 60, s % 60) }
        if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return String(format: "%.1fs", seconds)
    }

    /// "bpb 1.234  ppl 2.35  " for language-model records, "" otherwise.
    static func languageModelMetrics(_ bitsPerByte: Double?, _ perplexity: Double?, rocAUC: Double? = nil) -> String {
        let auc = rocAUC.map { String(format: "auc %.4f  ", $0) } ?? ""
        guard let bitsPerByte, let perplexity else { return auc }
        return String(format: "bpb %.4f  ppl %.3f  ", bitsPerByte, perplexity) + auc
    }

    static func rate(_ value: Double, _ unit: String) -> String {
        value >= 100 ? String(format: "%.0f %@", value, unit) : String(format: "%.1f %@", value, unit)
    }

    /// Segments joined by two spaces; optional ones (nil priority = always kept) are dropped, lowest
    /// priority first, until the line fits `columns`.
    static func fitted(_ segments: [(text: String, priority: Int?)], columns: Int = columns) -> String {
        var kept = segments
        func line() -> String { kept.map(\.text).joined(separator: "  ") }
        while line().count > columns, let drop = kept.indices.filter({ kept[$0].priority != nil }).min(by: { kept[$0].priority! < kept[$1].priority! }) {
            kept.remove(at: drop)
        }
        let text = line()
        return text.count > columns ? String(text.prefix(columns - 1)) + "…" : text
    }

    /// `step 50/1500  epoch 0  loss 0.04123  acc 0.1234  …  ETA 3m02s`, at most `columns` wide.
    static func progressLine(step: Int, total: Int, epoch: Int, loss: Double, accuracy: Double, bitsPerByte: Double?,
                             gradientNorm: Double?, rate: String, elapsed: Double, eta: Double?, columns: Int = columns) -> String {
        let width = String(total).count
        let stepText = String(repeating: " ", count: max(0, width - String(step).count)) + String(step)
        var segments: [(String, Int?)] = [("step \(stepText)/\(total)", nil), ("epoch \(epoch)", 2),
                                          (String(format: "loss %.5f", loss), nil), (String(format: "acc %.4f", accuracy), 5)]
        if let bitsPerByte { segments.append((String(format: "bpb %.4f", bitsPerByte), 6)) }
        if let gradientNorm { segments.append((String(format: "|g| %.3f", gradientNorm), 1)) }
        segments += [(rate, 4), ("elapsed \(duration(elapsed))", 0), ("ETA \(eta.map(duration) ?? "?")", 3)]
        return fitted(segments, columns: columns)
    }

    static func progress(_ r: MetricsRecord, total: Int, eta: Double?) -> String {
        progressLine(step: r.step, total: total, epoch: r.epoch, loss: r.loss, accuracy: r.accuracy, bitsPerByte: r.bitsPerByte,
                     gradientNorm: r.gradientNorm, rate: rate(r.samplesPerSecond ?? 0, "seq/s"), elapsed: r.elapsedSeconds, eta: eta)
    }

    static func evaluation(_ r: MetricsRecord) -> String {
        let weights = r.checkpoint.map { " (\($0.rawValue) weights)" } ?? ""
        return String(format: "%@%@ @ step %d: loss %.5f  acc %.4f  %@(%d sequences, elapsed %@)",
                      r.split.rawValue, weights, r.step, r.loss, r.accuracy, languageModelMetrics(r.bitsPerByte, r.perplexity, rocAUC: r.rocAUC),
                      r.evaluatedSamples ?? 0, duration(r.elapsedSeconds))
    }

    static func finished(_ s: TrainingSummary, runDirectory: URL?) -> String {
        let best = s.bestStep.map { step in
            step == s.steps ? " (last = best weights)" : String(format: " (best weights, step %d; last: %.4f)", step, s.testLast?.accuracy ?? .nan)
        } ?? ""
        return String(format: "done: %d steps, %d samples in %@ (%.1f samples/s); test loss %.5f, test accuracy %.4f",
                      s.steps, s.samplesSeen, duration(s.wallClockSeconds), s.trainSamplesPerSecond, s.test.loss, s.test.accuracy)
            + best
            + (s.validation.bitsPerByte.map { String(format: "; validation bpb %.4f", $0) } ?? "")
            + (s.test.bitsPerByte.map { String(format: ", test bpb %.4f", $0) } ?? "")
            + (s.peakResidentBytes.map { String(format: "; peak RSS %.2f GiB", Double($0) / 1_073_741_824) } ?? "")
            + (runDirectory.map { "; results in \($0.path)" } ?? "")
    }

    /// The permanent line of an event (nil: the event has none).
    public static func line(_ event: TrainingEvent) -> String? {
        switch event {
        case .started(let total, let parameters, let samples, let dir):
            return "training: \(total) steps over \(samples) training sequences, \(parameters) parameters"
                + (dir.map { ", run directory \($0.path)" } ?? "")
        case .resumed(let step, let checkpoint):
            return checkpoint.map { "resuming after step \(step) from \($0.path)" } ?? "resuming: no checkpoint yet, starting from step 0"
        case .progress(let r, let total, let eta): return progress(r, total: total, eta: eta)
        case .evaluation(let r): return evaluation(r)
        case .checkpointRefused(let url, let reason): return "warning: passing over checkpoint \(url.lastPathComponent): \(reason)"
        case .earlyStop(let step, let accuracy, let target):
            return String(format: "early stop at step %d: validation accuracy %.4f ≥ target %.4f", step, accuracy, target)
        case .finished(let s, let dir): return finished(s, runDirectory: dir)
        case .step, .evaluating, .checkpoint: return nil
        }
    }
}

/// Plain lines (for a pipe or a file): the start, a train record every log interval, each
/// evaluation, and the end. When a minute passes without a line (slow steps at long N, a long
/// evaluation), one more line says where the run stands, so a log never looks hung.
public final class ConsoleReporter: TrainingReporter {
    let write: (String) -> Void
    /// Seconds without a line after which a step or an evaluation batch prints one.
    let heartbeatSeconds: Double
    /// Monotonic seconds (injected by tests).
    let clock: () -> Double
    private var lastLine: Double

    public init(heartbeatSeconds: Double = 60, clock: @escaping () -> Double = { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 },
                write: @escaping (String) -> Void = { line in
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }) {
        self.write = write
        self.heartbeatSeconds = heartbeatSeconds
        self.clock = clock
        self.lastLine = clock()
    }

    public static func duration(_ seconds: Double) -> String { ProgressText.duration(seconds) }

    private func emit(_ line: String) {
        write(line)
        lastLine = clock()
    }

    public func report(_ event: TrainingEvent) {
        switch event {
        case .step(let s) where clock() - lastLine >= heartbeatSeconds && s.step < s.totalSteps:
            emit(ProgressText.progressLine(step: s.step, total: s.totalSteps, epoch: s.epoch, loss: s.loss, accuracy: s.accuracy,
                                           bitsPerByte: nil, gradientNorm: nil, rate: ProgressText.rate(s.rate, s.rateUnit),
                                           elapsed: s.elapsedSeconds, eta: s.etaSeconds))
        case .evaluating(let split, let done, let total) where clock() - lastLine >= heartbeatSeconds && done < total:
            emit("\(split.rawValue): batch \(done)/\(total)")
        default:
            if let line = ProgressText.line(event) { emit(line) }
        }
    }
}

/// For a terminal: one live line (step / total, epoch, loss, metric, throughput, ETA; or the batches
/// of an evaluation) redrawn in place at most ten times a second, and permanent lines for the start,
/// evaluations, warnings and the end. Train records are not printed (the live line shows them).
public final class LiveReporter: TrainingReporter {
    let write: (String) -> Void
    let columns: Int
    private var lastDraw = 0.0
    private var live = false

    /// `columns`: the terminal's width (the line is at most `ProgressText.columns` wide in any case).
    public init(columns: Int = ProgressText.columns, write: @escaping (String) -> Void = { text in
        FileHandle.standardOutput.write(Data(text.utf8))
    }) {
        self.columns = max(20, min(columns, ProgressText.columns))
        self.write = write
    }

    private func draw(_ line: String, force: Bool) {
        let now = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
        guard force || now - lastDraw >= 0.1 else { return }
        lastDraw = now
        // The last column stays free: a terminal wraps a line that fills it.
        write("\r" + ProgressText.fitted([(line, nil)], columns: columns - 1) + "\u{1B}[K")
        live = true
    }

    /// Prints `line` under the live line (which is cleared first).
    public func printLine(_ line: String) { permanent(line) }

    private func permanent(_ line: String) {
        write((live ? "\r\u{1B}[K" : "") + line + "\n")
        live = false
    }

    public func report(_ event: TrainingEvent) {
        switch event {
        case .step(let s):
            draw(ProgressText.progressLine(step: s.step, total: s.totalSteps, epoch: s.epoch, loss: s.loss, accuracy: s.accuracy,
                                           bitsPerByte: nil, gradientNorm: nil, rate: ProgressText.rate(s.rate, s.rateUnit),
                                           elapsed: s.elapsedSeconds, eta: s.etaSeconds, columns: columns - 1),
                 force: s.step == s.totalSteps)
        case .evaluating(let split, let done, let total):
            draw("\(split.rawValue): batch \(done)/\(total)", force: done == total)
        case .progress, .checkpoint:
            break
        default:
            if let line = ProgressText.line(event) { permanent(line) }
        }
    }
}

/// One JSON object per line and event: `{"event": "progress", …}` with the event's fields (a metrics
/// record, the summary, a checkpoint's kind, step and path). Per-step and per-batch events are left out.
public final class JSONReporter: TrainingReporter {
    let write: (String) -> Void

    public init(write: @escaping (String) -> Void = { line in
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }) {
        self.write = write
    }

    private struct Envelope<Body: Encodable>: Encodable {
        let event: String
        let body: Body
        func encode(to encoder: Encoder) throws {
            try body.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(event, forKey: Key(stringValue: "event")!)
        }
        struct Key: CodingKey {
            var stringValue: String
            init?(stringValue: String) { self.stringValue = stringValue }
            var intValue: Int? { nil }
            init?(intValue: Int) { nil }
        }
    }

    private func emit(_ event: String, _ body: some Encodable) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard let data = try? encoder.encode(Envelope(event: event, body: body)) else { return }
        write(String(decoding: data, as: UTF8.self))
    }

    private struct Started: Encodable { let totalSteps, parameterCount, trainSamples: Int; let runDirectory: String? }
    private struct Resumed: Encodable { let step: Int; let checkpoint: String? }
    private struct Checkpoint: Encodable { let kind: CheckpointKind; let step: Int; let path: String }
    private struct Refused: Encodable { let path, reason: String }
    private struct EarlyStop: Encodable { let step: Int; let accuracy, target: Double }

    public func report(_ event: TrainingEvent) {
        switch event {
        case .started(let total, let parameters, let samples, let dir):
            emit("started", Started(totalSteps: total, parameterCount: parameters, trainSamples: samples, runDirectory: dir?.path))
        case .resumed(let step, let checkpoint): emit("resumed", Resumed(step: step, checkpoint: checkpoint?.path))
        case .progress(let r, _, _): emit("progress", r)
        case .evaluation(let r): emit("evaluation", r)
        case .checkpoint(let kind, let step, let url): emit("checkpoint", Checkpoint(kind: kind, step: step, path: url.path))
        case .checkpointRefused(let url, let reason): emit("checkpointRefused", Refused(path: url.path, reason: reason))
        case .earlyStop(let step, let accuracy, let target): emit("earlyStop", EarlyStop(step: step, accuracy: accuracy, target: target))
        case .finished(let s, _): emit("finished", s)
        case .step, .evaluating: break
        }
    }
}
