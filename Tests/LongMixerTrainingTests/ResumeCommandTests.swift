import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerTestSupport

/// `longmixer train` stopped by SIGKILL or SIGINT at a random step and resumed with `--resume` ends with
/// the weights of a run that never stopped, byte for byte; `--resume` refuses what does not fit.
@Suite("longmixer train --resume (CLI)", .serialized)
struct ResumeCommandTests {
    static let tiny = ["--task", "adding", "--length", "16", "--dimensions", "8", "--hidden", "8", "--batch-size", "4",
                       "--train-size", "64", "--val-size", "16", "--test-size", "16", "--threads", "1"]
    static let run = tiny + ["--steps", "120", "--eval-interval", "30", "--checkpoint-interval", "7", "--log-interval", "1"]

    /// The metrics without times and throughput.
    static func metrics(_ run: URL) throws -> [MetricsRecord] {
        try readJSONLines(MetricsRecord.self, from: run.appendingPathComponent("metrics.jsonl")).map {
            var r = $0
            r.elapsedSeconds = 0
            r.samplesPerSecond = nil
            return r
        }
    }

    /// Starts a run whose stdout is a pipe of one page, reads its JSON progress until step `step`,
    /// then sends `signal`. The child blocks on the full pipe a few steps later, so it cannot finish
    /// before the signal arrives however the machine schedules it. Returns the exit status and reason.
    static func interrupt(_ arguments: [String], in directory: URL, atStep step: Int, with signal: Int32) throws -> (Int32, Process.TerminationReason, String) {
        let r = try LongMixerCLI.runReadingProgress(TrainCommandTests.executable, arguments, in: directory) { pid, seen in
            guard seen >= step else { return false }
            kill(pid, signal)
            return true
        }
        return (r.status, r.reason, r.output)
    }

    @Test(arguments: [SIGKILL, SIGINT])
    func stoppedAtARandomStepAndResumedEndsIdentical(signal: Int32) throws {
        let dir = try TrainCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let reference = try TrainCommandTests.run(["train", "--quiet", "--output", "reference"] + Self.run, in: dir)
        try #require(reference.status == 0, "\(reference.stderr)")

        let step = Int.random(in: 10...90)
        let (status, reason, output) = try Self.interrupt(["train", "--json", "--output", "run"] + Self.run, in: dir, atStep: step, with: signal)
        let run = dir.appendingPathComponent("run")
        #expect(!FileManager.default.fileExists(atPath: run.appendingPathComponent("summary.json").path), "signal \(signal) at step \(step) came too late")
        if signal == SIGKILL {
            #expect(reason == .uncaughtSignal && status == SIGKILL)
        } else {
            // A checkpoint at the step where it stopped, announced as an event.
            #expect(reason == .exit && status == 128 + SIGINT, "status \(status)")
            #expect(output.contains("\"event\":\"checkpoint\""))
        }
        let stoppedAt = CheckpointStore(runDirectory: run).list(.last).first?.step ?? 0
        #expect(stoppedAt >= (signal == SIGKILL ? step - 7 : step) && stoppedAt < 120, "signal \(signal) at step \(step): newest checkpoint \(stoppedAt)")

        let resumed = try TrainCommandTests.run(["train", "--resume", "run"], in: dir)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stdout.contains("resuming after step \(stoppedAt)"), "\(resumed.stdout)")
        let same = try Data(contentsOf: run.appendingPathComponent("model.safetensors"))
            == Data(contentsOf: dir.appendingPathComponent("reference/model.safetensors"))
        #expect(same, "signal \(signal) at step \(step), resumed from \(stoppedAt): the final weights differ")
        #expect(try Self.metrics(run) == Self.metrics(dir.appendingPathComponent("reference")))
        // The final checkpoint too, byte for byte, but for its clock.
        for file in ["model.safetensors", "optimizer.safetensors", "state.json"] {
            let path = "checkpoints/step-120/\(file)"
            #expect(try Data(contentsOf: run.appendingPathComponent(path)) == Data(contentsOf: dir.appendingPathComponent("reference/\(path)")), "\(path)")
        }
    }

    @Test func resumeRefusesWhatDoesNotFit() throws {
        let dir = try TrainCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let trained = try TrainCommandTests.run(["train", "--quiet", "--output", "done"] + Self.tiny + ["--steps", "4"], in: dir)
        try #require(trained.status == 0, "\(trained.stderr)")
        // An unfinished run: remove its summary, so only the configuration checks stand in the way.
        try FileManager.default.copyItem(at: dir.appendingPathComponent("done"), to: dir.appendingPathComponent("open"))
        try FileManager.default.removeItem(at: dir.appendingPathComponent("open/summary.json"))
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("empty"), withIntermediateDirectories: true)
        let cases: [([String], String)] = [
            (["--resume", "open", "--length", "32"], "--length 32 (the run has 16)"),
            (["--resume", "open", "--model", "transformer", "--task", "order"], "--task order (the run has adding), --model transformer (the run has paramixer)"),
            (["--resume", "open", "--output", "elsewhere"], "--output: does not go with --resume"),
            (["--resume", "open", "--preset", "paramixer-adding"], "--preset: does not go with --resume"),
            (["--resume", "done"], "the run is complete"),
            (["--resume", "empty"], "has no config.json"),
            (["--resume", "missing"], "is not a folder"),
        ]
        for (arguments, needle) in cases {
            let r = try TrainCommandTests.run(["train"] + arguments, in: dir)
            #expect(r.status == 2 && r.stderr.hasPrefix("error: ") && r.stderr.contains(needle), "\(arguments): \(r.status) \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1 && r.stdout.isEmpty, "\(arguments): \(r.stderr)")
        }
        // A hand-edited config.json is checked as a command line is: one line naming the field, for
        // --resume and for evaluate, before anything is built.
        let edits: [([String], Any, String)] = [
            (["modelOptions", "layers"], 1_000_000_000_000, "its layers (1000000000000) is invalid: must be in 1...1024"),
            (["modelOptions", "dimensions"], 1_000_000_000, "its dimensions (1000000000) is invalid"),
            (["training", "batchSize"], 100_000_000, "its batch-size (100000000) is invalid"),
            (["length"], Int.max, "its length (\(Int.max)) is invalid"),
            (["learningRate"], -1, "its learning-rate (-1.0) is invalid"),
            (["task"], "nonsense", "its task"),
        ]
        for (path, value, needle) in edits {
            let name = "edited-\(path.last!)"
            try FileManager.default.copyItem(at: dir.appendingPathComponent("open"), to: dir.appendingPathComponent(name))
            let configURL = dir.appendingPathComponent("\(name)/config.json")
            var record = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
            var configuration = try #require(record["configuration"] as? [String: Any])
            if path.count == 1 { configuration[path[0]] = value } else {
                var inner = configuration[path[0]] as? [String: Any] ?? [:]
                inner[path[1]] = value
                configuration[path[0]] = inner
            }
            record["configuration"] = configuration
            let edited = try JSONSerialization.data(withJSONObject: record)
            try edited.write(to: configURL)
            for arguments in [["train", "--resume", name], ["evaluate", name]] {
                let r = try TrainCommandTests.run(arguments, in: dir)
                #expect(r.status == 2 && r.stderr.hasPrefix("error: ") && r.stderr.contains(needle), "\(arguments): \(r.status) \(r.stderr)")
                #expect(r.stderr.split(separator: "\n").count == 1, "\(arguments): \(r.stderr)")
            }
            #expect(try Data(contentsOf: configURL) == edited, "the refused run's config.json was rewritten")
        }
        // A run another process holds.
        let marker = open(dir.appendingPathComponent("open/\(RunDirectory.markerName)").path, O_RDWR)
        try #require(marker >= 0 && flock(marker, LOCK_EX | LOCK_NB) == 0)
        let busy = try TrainCommandTests.run(["train", "--resume", "open"], in: dir)
        close(marker)
        #expect(busy.status == 2 && busy.stderr.contains("is in use by another longmixer process"), "\(busy.stderr)")
        // The same values as stored are no contradiction.
        let r = try TrainCommandTests.run(["train", "--resume", "open", "--length", "16", "--quiet"], in: dir)
        #expect(r.status == 0, "\(r.stderr)")
    }

    /// Counts the `<path>` elements of an SVG; nil when it is not well-formed XML.
    final class PathCounter: NSObject, XMLParserDelegate {
        var paths = 0, root: String?
        func parser(_ parser: XMLParser, didStartElement element: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            if root == nil { root = element }
            if element == "path" { paths += 1 }
        }
        static func count(_ url: URL) throws -> Int? {
            let parser = XMLParser(data: try Data(contentsOf: url))
            let counter = PathCounter()
            parser.delegate = counter
            return parser.parse() && counter.root == "svg" ? counter.paths : nil
        }
    }

    @Test func trainInterruptResumeEvaluateReport() throws {
        let dir = try TrainCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        // A preset shrunk to 50 steps (one epoch of 2,000 sequences at N = 20).
        let train = ["train", "--preset", "paramixer-adding", "--scale", "0.02", "--checkpoint-interval", "5", "--threads", "1", "--output", "run"]
        let (status, _, _) = try Self.interrupt(train + ["--json", "--log-interval", "1"], in: dir, atStep: 10, with: SIGINT)
        #expect(status == 128 + SIGINT)
        let run = dir.appendingPathComponent("run")
        #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent("report.md").path), "a stopped run has its report")
        let resumed = try TrainCommandTests.run(["train", "--resume", "run", "--quiet"], in: dir)
        #expect(resumed.status == 0 && resumed.stdout.hasPrefix("done: 50 steps"), "\(resumed.stdout) \(resumed.stderr)")

        let best = try TrainCommandTests.run(["evaluate", "run"], in: dir)
        let summary = try JSONDecoder().decode(TrainingSummary.self, from: Data(contentsOf: run.appendingPathComponent("summary.json")))
        #expect(best.status == 0 && best.stdout.hasPrefix("test, best weights (step \(summary.bestStep!)): ")
                && best.stdout.contains(String(format: "loss %.5f", summary.test.loss)), "\(best.stdout) \(best.stderr)")
        let last = try TrainCommandTests.run(["evaluate", "run", "--checkpoint", "last", "--split", "validation", "--json"], in: dir)
        let object = try JSONSerialization.jsonObject(with: Data(last.stdout.utf8)) as? [String: Any]
        #expect(object?["step"] as? Int == 50 && object?["split"] as? String == "validation", "\(last.stdout) \(last.stderr)")
        #expect(((object?["result"] as? [String: Any])?["loss"] as? Double).map { abs($0 - summary.validation.loss) < 1e-12 } == true)

        let report = try TrainCommandTests.run(["report", "run"], in: dir)
        #expect(report.status == 0, "\(report.stderr)")
        let files = ["config.json", "metrics.jsonl", "metrics.csv", "model.safetensors", "summary.json", "report.md",
                     "checkpoints/step-50/model.safetensors", "checkpoints/step-50/optimizer.safetensors", "checkpoints/step-50/state.json",
                     "checkpoints/step-45/state.json", "checkpoints/best-\(summary.bestStep!)/model.safetensors"]
            + RunReport.plotNames.map { "plots/\($0)" }
        for file in files { #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent(file).path), "no \(file)") }
        for plot in RunReport.plotNames {
            #expect(try PathCounter.count(run.appendingPathComponent("plots/\(plot)")) == 2, "\(plot): train and validation curves")
        }
        let markdown = try String(contentsOf: run.appendingPathComponent("report.md"), encoding: .utf8)
        for needle in ["test, best weights", "test, last weights", "## Time and throughput", "](plots/loss-steps.svg)", "| training.epochs | 1 |"] {
            #expect(markdown.contains(needle), "report.md lacks \(needle)")
        }
        let csv = try String(contentsOf: run.appendingPathComponent("metrics.csv"), encoding: .utf8).split(separator: "\n")
        #expect(csv.count == 1 + (try readJSONLines(MetricsRecord.self, from: run.appendingPathComponent("metrics.jsonl")).count))

        // A bit flipped in the newest checkpoint: evaluate warns and scores the previous one; with both damaged, one error.
        let newest = run.appendingPathComponent("checkpoints/step-50/model.safetensors")
        var bytes = try Data(contentsOf: newest)
        bytes[bytes.count - 2] ^= 0x04
        try bytes.write(to: newest)
        let fallback = try TrainCommandTests.run(["evaluate", "run", "--checkpoint", "last"], in: dir)
        #expect(fallback.status == 0 && fallback.stdout.contains("passing over checkpoint step-50") && fallback.stdout.contains("checksum")
                && fallback.stdout.contains("last weights (step 45)"), "\(fallback.stdout) \(fallback.stderr)")
        let older = run.appendingPathComponent("checkpoints/step-45/model.safetensors")
        try Data(contentsOf: older).prefix(64).write(to: older)
        let refused = try TrainCommandTests.run(["evaluate", "run", "--checkpoint", "last"], in: dir)
        #expect(refused.status == 2 && refused.stderr.hasPrefix("error: checkpoint (") && refused.stderr.contains("step-50"), "\(refused.stderr)")
    }

    @Test func seedsReportMeanAndStandardDeviation() throws {
        let dir = try TrainCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try TrainCommandTests.run(["train", "--quiet", "--output", "sweep", "--seeds", "3,1,2"] + Self.tiny + ["--steps", "10"], in: dir)
        #expect(r.status == 0, "\(r.stderr)")
        let sweep = dir.appendingPathComponent("sweep")
        func testAccuracy(_ seed: Int) throws -> Double {
            try JSONDecoder().decode(TrainingSummary.self, from: Data(contentsOf: sweep.appendingPathComponent("seed-\(seed)/summary.json"))).test.accuracy
        }
        let values = try [3, 1, 2].map(testAccuracy)
        let mean = values.reduce(0, +) / 3
        let std = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 2).squareRoot()
        let record = try JSONDecoder().decode(SeedSweep.Record.self, from: Data(contentsOf: sweep.appendingPathComponent("seeds.json")))
        #expect(record.seeds == [3, 1, 2] && record.results?.map(\.seed) == [3, 1, 2])
        #expect(abs(record.testMetric!.mean - mean) < 1e-12 && abs(record.testMetric!.standardDeviation - std) < 1e-12)
        #expect(r.stdout.contains(String(format: "seeds: test accuracy %.4f ± %.4f over 3 seeds", mean, std)), "\(r.stdout)")
        let configs = try [1, 2, 3].map { try Data(contentsOf: sweep.appendingPathComponent("seed-\($0)/model.safetensors")) }
        #expect(Set(configs).count == 3, "each seed trains its own model")
        #expect(FileManager.default.fileExists(atPath: sweep.appendingPathComponent("report.md").path))

        // An unfinished seed is resumed through the sweep's folder; the result stays.
        try FileManager.default.removeItem(at: sweep.appendingPathComponent("seed-2/summary.json"))
        let resumed = try TrainCommandTests.run(["train", "--resume", "sweep", "--quiet"], in: dir)
        #expect(resumed.status == 0 && resumed.stdout.contains(String(format: "%.4f ± %.4f", mean, std)), "\(resumed.stdout) \(resumed.stderr)")

        for (arguments, needle) in [(["--seeds", "1,1"], "different seeds"), (["--seeds", "1,x"], "comma-separated"),
                                    (["--seeds", "1,2", "--seed", "3"], "--seed")] {
            let bad = try TrainCommandTests.run(["train", "--output", "bad"] + Self.tiny + ["--steps", "2"] + arguments, in: dir)
            #expect(bad.status == 2 && bad.stderr.contains(needle), "\(arguments): \(bad.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("bad").path))
        }
    }
}
