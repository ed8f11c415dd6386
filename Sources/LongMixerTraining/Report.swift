import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels

// The report of a run directory, regenerated from its files (config.json, metrics.jsonl and, once
// the run is done, summary.json): report.md, metrics.csv and SVG plots of the loss and the metric
// against steps and wall time. Written at the end of every run and by `longmixer report`.

/// Reads `metrics.jsonl`, skipping lines that do not decode (the last line of a killed run may be cut).
public func readMetrics(_ url: URL) throws -> (records: [MetricsRecord], skipped: Int) {
    guard let data = FileManager.default.contents(atPath: url.path) else {
        throw UserError(what: "metrics", value: url.path, why: "cannot be read", remedy: "name the run directory of a training run")
    }
    let decoder = JSONDecoder()
    decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    var records: [MetricsRecord] = [], skipped = 0
    for line in data.split(separator: 0x0A) {
        if let r = try? decoder.decode(MetricsRecord.self, from: Data(line)) { records.append(r) } else { skipped += 1 }
    }
    return (records, skipped)
}

/// `metrics.csv`: one row per record of `metrics.jsonl`, every field a column (empty where absent).
public enum MetricsCSV {
    public static let columns = ["step", "epoch", "split", "checkpoint", "loss", "accuracy", "elapsedSeconds", "samplesSeen",
                                 "learningRate", "samplesPerSecond", "gradientNorm", "evaluatedSamples", "bitsPerByte", "perplexity", "rocAUC"]

    public static func text(_ records: [MetricsRecord]) -> String {
        func number(_ v: Double?) -> String { v.map { "\($0)" } ?? "" }
        func integer(_ v: Int?) -> String { v.map(String.init) ?? "" }
        var lines = [columns.joined(separator: ",")]
        for r in records {
            lines.append([String(r.step), String(r.epoch), r.split.rawValue, r.checkpoint?.rawValue ?? "", number(r.loss), number(r.accuracy),
                          number(r.elapsedSeconds), String(r.samplesSeen), number(r.learningRate), number(r.samplesPerSecond),
                          number(r.gradientNorm), integer(r.evaluatedSamples), number(r.bitsPerByte), number(r.perplexity),
                          number(r.rocAUC)].joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// A line chart as SVG: one `<path>` per curve (nothing else is a path), axes and ticks as lines and
/// text, a legend. The y axis is logarithmic when every value is positive and they span more than
/// a factor of 20.
public struct LineChart {
    public struct Curve {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: String
        public init(name: String, points: [(x: Double, y: Double)], color: String) {
            self.name = name
            self.points = points
            self.color = color
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var curves: [Curve]

    public init(title: String, xLabel: String, yLabel: String, curves: [Curve]) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.curves = curves
    }

    static let width = 640.0, height = 360.0
    static let left = 70.0, right = 20.0, top = 40.0, bottom = 50.0

    /// About `count` round tick values covering `low ... high`.
    static func ticks(_ low: Double, _ high: Double, count: Int = 5) -> [Double] {
        guard high > low else { return [low] }
        let raw = (high - low) / Double(count)
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        var values: [Double] = []
        var v = ceil(low / step) * step
        while v <= high + step * 1e-9 { values.append(v); v += step }
        return values
    }

    static func format(_ v: Double) -> String {
        if v == 0 { return "0" }
        let a = abs(v)
        if a >= 1e5 || a < 1e-3 { return String(format: "%.0e", v) }
        if a >= 100 { return String(format: "%.0f", v) }
        return String(format: "%g", (v * 1e4).rounded() / 1e4)
    }

    static func escaped(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    public var svg: String {
        let finite = curves.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite }
        let xs = finite.map(\.x), ys = finite.map(\.y)
        var xLow = xs.min() ?? 0, xHigh = xs.max() ?? 1
        if xHigh <= xLow { xHigh = xLow + 1 }
        let logarithmic = (ys.min() ?? 0) > 0 && (ys.max() ?? 0) / (ys.min() ?? 1) > 20
        func scaled(_ y: Double) -> Double { logarithmic ? log10(y) : y }
        var yLow = ys.map(scaled).min() ?? 0, yHigh = ys.map(scaled).max() ?? 1
        if yHigh <= yLow { yLow -= 0.5; yHigh += 0.5 }
        let pad = (yHigh - yLow) * 0.05
        yLow -= pad; yHigh += pad
        if !logarithmic && yLow < 0 && (ys.min() ?? 0) >= 0 { yLow = 0 }
        xLow = min(xLow, xs.min() ?? xLow)
        let plotWidth = Self.width - Self.left - Self.right, plotHeight = Self.height - Self.top - Self.bottom
        func px(_ x: Double) -> Double { Self.left + (x - xLow) / (xHigh - xLow) * plotWidth }
        func py(_ y: Double) -> Double { Self.top + (1 - (scaled(y) - yLow) / (yHigh - yLow)) * plotHeight }
        func n(_ v: Double) -> String { String(format: "%.1f", v) }

        var out = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(Self.width))\" height=\"\(Int(Self.height))\" viewBox=\"0 0 \(Int(Self.width)) \(Int(Self.height))\" font-family=\"sans-serif\" font-size=\"11\">",
                   "<rect x=\"0\" y=\"0\" width=\"\(Int(Self.width))\" height=\"\(Int(Self.height))\" fill=\"white\"/>",
                   "<text x=\"\(n(Self.width / 2))\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">\(Self.escaped(title))</text>"]
        // Axes and ticks.
        let x0 = Self.left, y0 = Self.top + plotHeight
        out.append("<line x1=\"\(n(x0))\" y1=\"\(n(y0))\" x2=\"\(n(x0 + plotWidth))\" y2=\"\(n(y0))\" stroke=\"black\"/>")
        out.append("<line x1=\"\(n(x0))\" y1=\"\(n(Self.top))\" x2=\"\(n(x0))\" y2=\"\(n(y0))\" stroke=\"black\"/>")
        for t in Self.ticks(xLow, xHigh) {
            out.append("<line x1=\"\(n(px(t)))\" y1=\"\(n(y0))\" x2=\"\(n(px(t)))\" y2=\"\(n(y0 + 4))\" stroke=\"black\"/>")
            out.append("<text x=\"\(n(px(t)))\" y=\"\(n(y0 + 16))\" text-anchor=\"middle\">\(Self.format(t))</text>")
        }
        let yTicks = logarithmic ? Self.ticks(yLow, yHigh).map { pow(10, $0) } : Self.ticks(yLow, yHigh)
        for t in yTicks {
            out.append("<line x1=\"\(n(x0 - 4))\" y1=\"\(n(py(t)))\" x2=\"\(n(x0 + plotWidth))\" y2=\"\(n(py(t)))\" stroke=\"#dddddd\"/>")
            out.append("<text x=\"\(n(x0 - 6))\" y=\"\(n(py(t) + 4))\" text-anchor=\"end\">\(Self.format(t))</text>")
        }
        out.append("<text x=\"\(n(x0 + plotWidth / 2))\" y=\"\(n(Self.height - 12))\" text-anchor=\"middle\">\(Self.escaped(xLabel))</text>")
        out.append("<text x=\"16\" y=\"\(n(Self.top + plotHeight / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(n(Self.top + plotHeight / 2)))\">\(Self.escaped(yLabel + (logarithmic ? " (log scale)" : "")))</text>")
        // One path per curve; a single point is drawn as a dot (a zero-length segment with round caps).
        for curve in curves {
            let points = curve.points.filter { $0.x.isFinite && $0.y.isFinite && (!logarithmic || $0.y > 0) }
            var d = points.enumerated().map { "\($0.offset == 0 ? "M" : "L")\(n(px($0.element.x))) \(n(py($0.element.y)))" }.joined(separator: " ")
            if points.count == 1 { d += " h0" }
            out.append("<path d=\"\(d)\" fill=\"none\" stroke=\"\(curve.color)\" stroke-width=\"\(points.count == 1 ? 6 : 1.5)\" stroke-linecap=\"round\" stroke-linejoin=\"round\"><title>\(Self.escaped(curve.name))</title></path>")
        }
        for (i, curve) in curves.enumerated() {
            let y = Self.top + 8 + Double(i) * 16, x = x0 + plotWidth - 110
            out.append("<line x1=\"\(n(x))\" y1=\"\(n(y))\" x2=\"\(n(x + 20))\" y2=\"\(n(y))\" stroke=\"\(curve.color)\" stroke-width=\"2\"/>")
            out.append("<text x=\"\(n(x + 26))\" y=\"\(n(y + 4))\">\(Self.escaped(curve.name))</text>")
        }
        out.append("</svg>")
        return out.joined(separator: "\n") + "\n"
    }
}

/// The report of one run directory.
public enum RunReport {
    /// What `config.json` holds, as far as the report shows it.
    struct Header: Decodable {
        var command: [String]?
        var startedAt: String?
        var configuration: RunConfiguration?
        var threads: Int?
        var parameterCount: Int?
        var data: String?
    }

    /// The files `write` produces, relative to the run directory.
    public static let plotNames = ["loss-steps.svg", "loss-time.svg", "metric-steps.svg", "metric-time.svg"]

    /// Writes `metrics.csv`, `plots/*.svg` and `report.md` into the run directory `url`; returns the report's URL.
    @discardableResult
    public static func write(_ url: URL) throws -> URL {
        let run = url.standardizedFileURL
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: run.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw UserError(what: "run directory", value: run.path, why: "is not a folder", remedy: "name the run directory of a training run")
        }
        let header = try StoredRunRecord.read(run, option: "run directory")
        let config = FileManager.default.contents(atPath: run.appendingPathComponent("config.json").path)
            .flatMap { try? JSONDecoder().decode(Header.self, from: $0) } ?? Header()
        let (records, skipped) = try readMetrics(run.appendingPathComponent("metrics.jsonl"))
        let summary = FileManager.default.contents(atPath: run.appendingPathComponent("summary.json").path)
            .flatMap { try? JSONDecoder().decode(TrainingSummary.self, from: $0) }

        func write(_ text: String, _ name: String) throws {
            do { try SafeTensors.writeAtomically(Data(text.utf8), to: run.appendingPathComponent(name)) } catch {
                throw UserError(.runtime, what: "report", value: run.appendingPathComponent(name).path, why: "cannot be written (\(error))",
                                remedy: "make the run directory writable")
            }
        }
        try write(MetricsCSV.text(records), "metrics.csv")
        do { try FileManager.default.createDirectory(at: run.appendingPathComponent("plots"), withIntermediateDirectories: true) } catch {
            throw UserError(.runtime, what: "report", value: run.appendingPathComponent("plots").path, why: "cannot be created (\(error))")
        }
        let charts = charts(records, languageModel: header.configuration.task == "lm")
        for (name, chart) in zip(plotNames, charts) { try write(chart.svg, "plots/\(name)") }
        let reportURL = run.appendingPathComponent("report.md")
        try write(markdown(run: run, config: config, records: records, skipped: skipped, summary: summary), "report.md")
        return reportURL
    }

    /// Loss and metric against steps and against wall time, train and validation curves.
    static func charts(_ records: [MetricsRecord], languageModel: Bool) -> [LineChart] {
        let train = records.filter { $0.split == .train }, validation = records.filter { $0.split == .validation }
        let metricName = languageModel ? "bits per byte" : "accuracy"
        func metric(_ r: MetricsRecord) -> Double { languageModel ? (r.bitsPerByte ?? r.loss / log(2)) : r.accuracy }
        func curves(_ x: (MetricsRecord) -> Double, _ y: (MetricsRecord) -> Double) -> [LineChart.Curve] {
            [LineChart.Curve(name: "train", points: train.map { (x($0), y($0)) }, color: "#1f77b4"),
             LineChart.Curve(name: "validation", points: validation.map { (x($0), y($0)) }, color: "#d62728")]
        }
        let step: (MetricsRecord) -> Double = { Double($0.step) }, time: (MetricsRecord) -> Double = { $0.elapsedSeconds }
        return [LineChart(title: "Loss", xLabel: "step", yLabel: "loss", curves: curves(step, \.loss)),
                LineChart(title: "Loss", xLabel: "wall time (s)", yLabel: "loss", curves: curves(time, \.loss)),
                LineChart(title: metricName.capitalized, xLabel: "step", yLabel: metricName, curves: curves(step, metric)),
                LineChart(title: metricName.capitalized, xLabel: "wall time (s)", yLabel: metricName, curves: curves(time, metric))]
    }

    static func markdown(run: URL, config: Header, records: [MetricsRecord], skipped: Int, summary: TrainingSummary?) -> String {
        let c = config.configuration
        var md = ["# Run \(run.lastPathComponent)", ""]
        var facts: [String] = []
        if let c { facts.append("task **\(c.task)**, model **\(c.model)**" + (c.preset.map { ", preset \($0)" } ?? "")) }
        if let p = config.parameterCount { facts.append("\(p) parameters") }
        if let t = config.threads { facts.append("\(t) thread\(t == 1 ? "" : "s")") }
        if let s = config.startedAt { facts.append("started \(s)") }
        md.append(facts.joined(separator: " · "))
        if let command = config.command {
            md += ["", "```sh", (["longmixer"] + command.dropFirst()).joined(separator: " "), "```"]
        }
        if let data = config.data { md += ["", "Data: \(data)"] }

        md += ["", "## Results", ""]
        func row(_ name: String, _ r: EvaluationResult) -> String {
            "| \(name) | \(String(format: "%.5f", r.loss)) | \(String(format: "%.4f", r.accuracy))"
                + (r.bitsPerByte.map { String(format: " | %.4f", $0) } ?? "") + " | \(r.count) |"
        }
        let bpb = summary?.test.bitsPerByte != nil
        if let s = summary {
            md.append("| | loss | accuracy\(bpb ? " | bits per byte" : "") | sequences |")
            md.append("|---|---|---\(bpb ? "|---" : "")|---|")
            md.append(row("test, best weights (step \(s.bestStep ?? s.steps))", s.test))
            if let last = s.testLast { md.append(row("test, last weights (step \(s.steps))", last)) }
            md.append(row("validation, last weights (step \(s.steps))", s.validation))
            if let best = s.bestValidation, let step = s.bestStep { md.append(row("validation, best (step \(step))", best)) }
            md += ["", "Loss: \(s.lossName); accuracy: \(s.accuracyDefinition). Stopped: \(s.stopReason)."]
            md += ["", "## Time and throughput", "",
                   "| | |", "|---|---|",
                   "| steps | \(s.steps) (\(String(format: "%.2f", s.epochs)) epochs, \(s.samplesSeen) sequences) |",
                   "| wall clock | \(ProgressText.duration(s.wallClockSeconds)) |",
                   "| training | \(ProgressText.duration(s.trainingSeconds)) |",
                   "| throughput | \(String(format: "%.1f", s.trainSamplesPerSecond)) sequences/s"
                    + (c.map { $0.task == "lm" ? String(format: " (%.0f tokens/s)", s.trainSamplesPerSecond * Double($0.length)) : "" } ?? "") + " |"]
            if let rss = s.peakResidentBytes { md.append("| peak resident memory | \(String(format: "%.2f GiB", Double(rss) / 1_073_741_824)) |") }
        } else {
            let last = records.last { $0.split == .train }
            md.append("Unfinished: the log reaches step \(last?.step ?? 0)" + (c.map { " of \($0.training.steps.map(String.init) ?? "\($0.training.epochs) epochs")" } ?? "")
                      + "; continue with `longmixer train --resume \(run.path)`.")
            if let v = records.last(where: { $0.split == .validation }) {
                md += ["", String(format: "Last validation (step %d): loss %.5f, accuracy %.4f.", v.step, v.loss, v.accuracy)]
            }
        }
        if skipped > 0 { md += ["", "(\(skipped) line\(skipped == 1 ? "" : "s") of metrics.jsonl could not be read and \(skipped == 1 ? "is" : "are") left out.)"] }

        md += ["", "## Curves", ""]
        let names = ["loss against steps", "loss against wall time", "metric against steps", "metric against wall time"]
        for (file, name) in zip(plotNames, names) { md.append("![\(name)](plots/\(file))") }
        md += ["", "Every logged record is in metrics.jsonl and metrics.csv."]

        if let c {
            md += ["", "## Configuration", "", "| setting | value |", "|---|---|"]
            for (key, value) in flattened(c) { md.append("| \(key) | \(value) |") }
        }
        return md.joined(separator: "\n") + "\n"
    }

    /// Every leaf of the configuration as (dotted key, value), sorted.
    static func flattened(_ c: RunConfiguration) -> [(String, String)] {
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard let data = try? encoder.encode(c), let object = try? JSONSerialization.jsonObject(with: data) else { return [] }
        var out: [(String, String)] = []
        func visit(_ value: Any, _ path: String) {
            if let d = value as? [String: Any] {
                for key in d.keys.sorted() { visit(d[key]!, path.isEmpty ? key : "\(path).\(key)") }
            } else if let a = value as? [Any] {
                out.append((path, a.map { "\($0)" }.joined(separator: ", ")))
            } else {
                out.append((path, "\(value)"))
            }
        }
        visit(object, "")
        return out
    }
}

/// `longmixer evaluate`: a run's best or last checkpoint scored on its validation or test split
/// (every sequence; a language model's every window), with the configuration the run stored.
public enum RunEvaluation {
    public struct Outcome {
        public var split: MetricsRecord.Kind
        public var checkpoint: CheckpointKind
        public var step: Int?
        /// The weights file scored.
        public var weights: URL
        public var result: EvaluationResult
        public var seconds: Double
    }

    /// Unless `threadsGiven`, the run's thread count is used (the numbers of the run itself); with several
    /// processes (`communicator`), each keeps the thread count it was started with. Damaged checkpoints are
    /// reported to `reporter` and passed over for the previous one.
    ///
    /// Several processes: rank 0 reads the run directory (the others need not see it) and passes on the
    /// configuration and the checkpoint's weights; each process scores its share of the batches and every
    /// one gets the single-process result (`evaluate(…, communicator:)`).
    public static func evaluate(_ url: URL, split: MetricsRecord.Kind, checkpoint kind: CheckpointKind, threadsGiven: Bool = false,
                                reporter: TrainingReporter = SilentReporter(), communicator: any Communicator = SingleProcess()) throws -> Outcome {
        let url = url.standardizedFileURL
        guard split != .train else {
            throw UserError(what: "--split", value: split.rawValue, why: "evaluate scores the validation or the test split")
        }
        let stored: TrainingRun.SharedRunRecord
        if communicator.size > 1 {
            stored = try .broadcast(try communicator.onRoot { try StoredRunRecord.read(url, option: "run directory") }, communicator)
        } else {
            let record = try StoredRunRecord.read(url, option: "run directory")
            stored = TrainingRun.SharedRunRecord(configuration: record.configuration, threads: record.threads)
            if !threadsGiven, let threads = stored.threads, let valid = try? RuntimeOptions.validatedThreadCount(threads, what: "threads") {
                Parallel.setThreadCount(valid)
            }
        }
        let parts = try TrainingRun.build(stored.configuration)
        let model = parts.built.model
        let loaded = try communicator.onRoot { () throws -> (step: Int?, weights: URL) in
            try loadCheckpoint(url, kind: kind, into: model, parts: parts, reporter: reporter)
        }
        if communicator.size > 1 {
            let weights = try communicator.broadcast(communicator.isRoot ? SafeTensors.encode(model.stateDictionary()) : Data())
            if !communicator.isRoot { try model.loadStateDictionary(SafeTensors.decode(weights).tensors) }
        }
        let source = split == .test ? parts.data.test : parts.data.validation
        let batch = stored.configuration.training.evaluationBatchSize ?? stored.configuration.training.batchSize
        let start = DispatchTime.now().uptimeNanoseconds
        let result = try LongMixerTraining.evaluate(model, on: source, objective: parts.task.objective, batchSize: batch,
                                                    communicator: communicator) { done, total in
            reporter.report(.evaluating(split: split, done: done, total: total))
        }
        return Outcome(split: split, checkpoint: kind, step: loaded?.step, weights: loaded?.weights ?? url, result: result,
                       seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    /// Loads the newest intact `kind` checkpoint of the run in `url` (a run from before checkpoints: its final
    /// weights) into `model`; its step (nil for final weights) and weights file.
    static func loadCheckpoint(_ url: URL, kind: CheckpointKind, into model: any SequenceModel, parts: TrainingRun.Parts,
                               reporter: TrainingReporter) throws -> (step: Int?, weights: URL) {
        let store = CheckpointStore(runDirectory: url)
        let (found, refused) = store.newestIntact(kind) { c in
            guard c.record.task == parts.task.name && c.record.model == parts.entry.name
                    && c.weightsMetadata[StoredConfiguration.metadataKey] == parts.weightsMetadata[StoredConfiguration.metadataKey] else {
                throw UserError(what: "checkpoint", value: c.url.path, why: "was not written for the model config.json describes",
                                remedy: "evaluate the run directory it came from")
            }
            try model.loadStateDictionary(c.weights)
        }
        for (u, error) in refused { reporter.report(.checkpointRefused(url: u, reason: "\(error)")) }
        if let found { return (found.record.step, found.url.appendingPathComponent("model.safetensors")) }
        if let (u, error) = refused.first {
            if let e = error as? UserError { throw e }
            throw UserError(what: "checkpoint", value: u.path, why: "cannot be used (\(error))", remedy: CheckpointStore.damagedRemedy)
        }
        // A run from before checkpoints: its final weights are the last ones.
        let final = url.appendingPathComponent("model.safetensors")
        guard kind == .last, FileManager.default.fileExists(atPath: final.path) else {
            throw UserError(what: "run directory", value: url.path, why: "has no \(kind.rawValue) checkpoint yet",
                            remedy: kind == .best ? "evaluate --checkpoint last, or train until a validation" : "train it first")
        }
        try model.loadWeights(from: final)
        return (nil, final)
    }
}
