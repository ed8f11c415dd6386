import Foundation
import LongMixerCore
import LongMixerNN

/// One configuration trained once per seed (`train --seeds 1,2,3`): a folder holding one run
/// directory per seed (`seed-<n>/`), `seeds.json` (the seeds, the configuration, then each run's test
/// result with the mean and standard deviation) and `report.md`. `--resume` on the folder resumes the
/// unfinished runs and starts the missing ones.
public enum SeedSweep {
    public struct SeedResult: Codable, Equatable, Sendable {
        public var seed: UInt64
        public var run: String
        public var test: EvaluationResult
    }

    /// Mean and sample standard deviation (n − 1; 0 for one value).
    public struct Spread: Codable, Equatable, Sendable {
        public var mean: Double
        public var standardDeviation: Double

        public init(_ values: [Double]) {
            mean = values.reduce(0, +) / Double(max(values.count, 1))
            let m = mean
            standardDeviation = values.count > 1
                ? (values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count - 1)).squareRoot() : 0
        }

        public var text: String { String(format: "%.4f ± %.4f", mean, standardDeviation) }
    }

    /// `seeds.json`.
    public struct Record: Codable, Equatable, Sendable {
        public var seeds: [UInt64]
        public var configuration: RunConfiguration
        public var results: [SeedResult]?
        /// The test metric: accuracy, or bits per byte for a language model; and the test loss.
        public var metric: String?
        public var testMetric: Spread?
        public var testLoss: Spread?
    }

    static func runName(_ seed: UInt64) -> String { "seed-\(seed)" }

    /// `c` with `seed` for initialisation, data and dropout.
    static func configuration(_ c: RunConfiguration, seed: UInt64) -> RunConfiguration {
        var c = c
        c.seed = seed
        c.data.seed = seed
        return c
    }

    /// Trains `c` once per seed in `output` (default `runs/<task>-<model>-<time>-seeds`).
    @discardableResult
    public static func run(_ c: RunConfiguration, seeds: [UInt64], output: URL?, overwrite: Bool, reporter: TrainingReporter,
                           announce: (String) -> Void = { _ in }) throws -> (record: Record, folder: URL) {
        guard !seeds.isEmpty, Set(seeds).count == seeds.count else {
            throw UserError(what: "--seeds", value: seeds.map(String.init).joined(separator: ","), why: "must name different seeds",
                            remedy: "e.g. --seeds 1,2,3")
        }
        // What can be refused is refused before the folder exists (the runs differ only in their seed).
        _ = try TrainingRun.makeSchedule(c, TrainingRun.build(c))
        let url = output ?? RunDirectory.defaultURL(task: c.task, model: c.model).appendingPathExtension("seeds")
        let inputs = [c.data.corpus].compactMap { $0 }.map { URL(fileURLWithPath: $0) }
        let folder = try RunDirectory.prepare(url, overwrite: overwrite, inputs: inputs)
        let record = Record(seeds: seeds, configuration: c)
        try folder.writeJSON(record, to: "seeds.json")
        let done = try folder.finishing(keepingOn: { $0 is TrainingInterrupted }) {
            try continueRuns(folder.url, record, reporter: reporter, announce: announce, threadsGiven: true)
        }
        return (done, folder.url)
    }

    /// Whether `url` is the folder of a seed sweep.
    public static func isSweep(_ url: URL) -> Bool {
        FileManager.default.fileExists(atPath: url.appendingPathComponent("seeds.json").path)
    }

    /// Resumes the sweep in `url`: finished runs stay, unfinished ones resume, missing ones start.
    @discardableResult
    public static func resume(_ url: URL, settings: RunSettings, threadsGiven: Bool, reporter: TrainingReporter,
                              announce: (String) -> Void = { _ in }) throws -> Record {
        let url = url.standardizedFileURL
        let record: Record
        do { record = try JSONDecoder().decode(Record.self, from: Data(contentsOf: url.appendingPathComponent("seeds.json"))) } catch {
            throw UserError(what: "--resume", value: url.appendingPathComponent("seeds.json").path,
                            why: "is not the record of a seed sweep (\(jsonProblem(error)))", remedy: "start the sweep again with --overwrite")
        }
        let contradictions = record.configuration.contradictions(with: settings)
        guard contradictions.isEmpty else {
            throw UserError(what: "--resume", value: url.path, why: "\(contradictions.joined(separator: ", ")) contradicts the stored configuration",
                            remedy: "drop it (a resumed run goes on as it was started), or start a new sweep")
        }
        return try continueRuns(url, record, reporter: reporter, announce: announce, threadsGiven: threadsGiven)
    }

    static func continueRuns(_ url: URL, _ record: Record, reporter: TrainingReporter, announce: (String) -> Void,
                             threadsGiven: Bool) throws -> Record {
        var record = record
        var results: [SeedResult] = []
        for seed in record.seeds {
            let run = url.appendingPathComponent(runName(seed))
            announce("seed \(seed): \(run.path)")
            let summary: TrainingSummary
            do {
                if let done = try? JSONDecoder().decode(TrainingSummary.self, from: Data(contentsOf: run.appendingPathComponent("summary.json"))) {
                    summary = done
                } else if FileManager.default.fileExists(atPath: run.appendingPathComponent("config.json").path) {
                    summary = try TrainingRun.resume(run, threadsGiven: threadsGiven, reporter: reporter, announce: announce)
                } else {
                    summary = try TrainingRun.run(configuration(record.configuration, seed: seed), output: run, overwrite: true,
                                                  reporter: reporter, announce: announce)
                }
            } catch let stop as TrainingInterrupted {
                // Continue the sweep, not only this seed's run.
                throw TrainingInterrupted(signal: stop.signal, step: stop.step, totalSteps: stop.totalSteps, checkpoint: stop.checkpoint,
                                          runDirectory: url)
            }
            results.append(SeedResult(seed: seed, run: runName(seed), test: summary.test))
        }
        let languageModel = results.first?.test.bitsPerByte != nil
        record.results = results
        record.metric = languageModel ? "bits per byte" : "accuracy"
        record.testMetric = Spread(results.map { languageModel ? $0.test.bitsPerByte! : $0.test.accuracy })
        record.testLoss = Spread(results.map(\.test.loss))
        try RunDirectory(url: url).writeJSON(record, to: "seeds.json")
        try SafeTensors.writeAtomically(Data(markdown(url, record).utf8), to: url.appendingPathComponent("report.md"))
        return record
    }

    /// The line the CLI ends with.
    public static func line(_ record: Record, folder: URL) -> String {
        guard let results = record.results, let metric = record.metric, let spread = record.testMetric else { return "" }
        let each = results.map { r in String(format: "%llu: %.4f", r.seed, metric == "accuracy" ? r.test.accuracy : r.test.bitsPerByte ?? .nan) }
        return "seeds: test \(metric) \(spread.text) over \(results.count) seeds (\(each.joined(separator: ", "))); results in \(folder.path)"
    }

    static func markdown(_ url: URL, _ r: Record) -> String {
        var md = ["# Seeds of \(url.lastPathComponent)", "",
                  "task **\(r.configuration.task)**, model **\(r.configuration.model)**, seeds \(r.seeds.map(String.init).joined(separator: ", "))", ""]
        if let metric = r.metric, let m = r.testMetric, let l = r.testLoss, let results = r.results {
            md += ["Test \(metric): **\(m.text)** (mean ± sample standard deviation); test loss \(l.text).", "",
                   "| seed | test loss | test \(metric) | run |", "|---|---|---|---|"]
            for x in results {
                let value = metric == "accuracy" ? x.test.accuracy : x.test.bitsPerByte ?? .nan
                md.append(String(format: "| %llu | %.5f | %.4f | [%@](%@/report.md) |", x.seed, x.test.loss, value, x.run, x.run))
            }
            md += ["", "Each test result uses the run's best checkpoint (by validation)."]
        }
        return md.joined(separator: "\n") + "\n"
    }
}
