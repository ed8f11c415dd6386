import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels
import LongMixerTestSupport

/// End to end through the `longmixer` executable (built beside the test bundle): every model family
/// on the tasks it serves, a few steps at tiny sizes, the run directory checked; and refusals that
/// leave nothing behind.
@Suite("longmixer train (CLI)", .serialized)
struct TrainCommandTests {
    typealias Result = CLIResult
    static var executable: URL { LongMixerCLI.executable }
    static func run(_ arguments: [String], in directory: URL) throws -> Result { try LongMixerCLI.run(arguments, in: directory) }
    static func scratch() throws -> URL { try LongMixerCLI.scratch() }

    /// Trains and checks the run directory: the files, the recorded task/model, finite test metrics.
    func trains(_ arguments: [String], task: String, model: String, family: String,
                sourceLocation: SourceLocation = #_sourceLocation) throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try Self.run(["train", "--quiet", "--threads", "1", "--output", "run"] + arguments, in: dir)
        #expect(r.status == 0, "\(arguments): exit \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        guard r.status == 0 else { return }
        let run = dir.appendingPathComponent("run")
        for file in ["config.json", "metrics.jsonl", "model.safetensors", "summary.json"] {
            #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent(file).path), "\(arguments): no \(file)",
                    sourceLocation: sourceLocation)
        }
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("config.json"))) as! [String: Any]
        let resolved = config["configuration"] as? [String: Any]
        #expect(resolved?["task"] as? String == task && resolved?["model"] as? String == model, sourceLocation: sourceLocation)
        #expect(config[family] != nil, "\(arguments): config.json has no \(family) model configuration", sourceLocation: sourceLocation)
        let summary = try JSONDecoder().decode(TrainingSummary.self, from: Data(contentsOf: run.appendingPathComponent("summary.json")))
        #expect(summary.test.loss.isFinite && summary.steps == 3, sourceLocation: sourceLocation)
    }

    static let tiny = ["--steps", "3", "--train-size", "24", "--val-size", "8", "--test-size", "8", "--batch-size", "8", "--length", "32"]

    @Test func executableIsBuilt() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.executable.path), "no longmixer at \(Self.executable.path)")
    }

    @Test(arguments: ["chord", "cdil"])
    func paramixerOnBothSyntheticTasks(linkProtocol: String) throws {
        for task in ["adding", "order"] {
            try trains(["--task", task, "--model", "paramixer", "--protocol", linkProtocol] + Self.tiny,
                       task: task, model: "paramixer", family: "paramixer")
        }
    }

    @Test(arguments: ["transformer", "performer", "favor", "permuteformer", "rope", "orthogonal"])
    func encoderOnBothSyntheticTasks(model: String) throws {
        for task in ["adding", "order"] {
            try trains(["--task", task, "--model", model, "--dimensions", "16", "--heads", "2"] + Self.tiny,
                       task: task, model: model, family: "encoder")
        }
    }

    @Test(arguments: ["permuteformer", "performer", "permuteformer-no-decay", "decay-only", "transformer"])
    func languageModels(model: String) throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let corpus = dir.appendingPathComponent("corpus.txt")
        try String(repeating: "To be, or not to be, that is the question. ", count: 200).write(to: corpus, atomically: true, encoding: .utf8)
        try trains(["--task", "lm", "--model", model, "--corpus", corpus.path, "--size", "tiny", "--dimensions", "16", "--length", "16",
                    "--steps", "3", "--batch-size", "2", "--val-size", "2", "--test-size", "2"],
                   task: "lm", model: model, family: "languageModel")
    }

    @Test func refusalsLeaveNothingBehind() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let refused: [[String]] = [
            ["--task", "adding", "--heads", "4"],                    // a flag of another model family
            ["--task", "order", "--model", "decay-only"],            // a causal mixer on a classification task
            ["--task", "order", "--model", "permuteformer-2d"],      // a 2D mixer without a grid
            ["--task", "lm", "--model", "favor"],                    // no causal form
            ["--preset", "no-such-preset"],
            ["--task", "adding", "--model", "performer", "--residual", "block-input"],
            ["--task", "adding", "--length", "-5"],
        ]
        for arguments in refused {
            let r = try Self.run(["train", "--output", "run"] + arguments, in: dir)
            #expect(r.status != 0, "\(arguments) was accepted")
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(arguments): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("run").path), "\(arguments) left a run directory")
        }
    }

    /// Every numeric option of `train` at 0, −1, 2^63 − 1 and NaN: a tiny valid run, or one `error:` line
    /// with exit code 2 and no run directory; never a trap.
    @Test func everyNumericOptionAtItsExtremes() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let options: [(String, String)] = [
            ("--length", "paramixer"), ("--dimensions", "paramixer"), ("--layers", "paramixer"), ("--hidden", "paramixer"),
            ("--dropout1", "paramixer"), ("--dropout2", "paramixer"), ("--heads", "performer"), ("--feed-forward", "performer"),
            ("--dropout", "performer"), ("--scale", "paramixer"), ("--learning-rate", "paramixer"), ("--warmup-steps", "paramixer"),
            ("--head-lr-scale", "paramixer"), ("--weight-decay", "paramixer"), ("--batch-size", "paramixer"),
            ("--micro-batch-size", "paramixer"), ("--epochs", "paramixer"), ("--steps", "paramixer"), ("--clip-norm", "paramixer"),
            ("--seed", "paramixer"), ("--train-size", "paramixer"), ("--val-size", "paramixer"), ("--test-size", "paramixer"),
            ("--eval-interval", "paramixer"), ("--log-interval", "paramixer"), ("--target-accuracy", "paramixer"), ("--threads", "paramixer"),
        ]
        let base = ["train", "--task", "adding", "--length", "16", "--train-size", "8", "--val-size", "4", "--test-size", "4",
                    "--batch-size", "4", "--steps", "1", "--dimensions", "8", "--quiet", "--output", "run"]
        /// The base arguments without `flags` (and their values).
        func without(_ flags: Set<String>) -> [String] {
            var args = base, i = 0
            while i < args.count { if flags.contains(args[i]) { args.removeSubrange(i...(i + 1)) } else { i += 1 } }
            return args
        }
        var accepted = 0, refused = 0
        for (flag, model) in options {
            for value in ["0", "-1", "9223372036854775807", "nan"] {
                // --epochs replaces --steps; the attention options need a head count (unless it is the one tested).
                var args = without(flag == "--epochs" ? [flag, "--steps"] : [flag]) + ["--model", model, flag, value]
                if model == "performer" && flag != "--heads" { args += ["--heads", "2"] }
                let r = try Self.run(args, in: dir)
                let run = dir.appendingPathComponent("run")
                let lines = r.stderr.split(separator: "\n")
                #expect(r.status == 0 || r.status == 2, "\(flag) \(value): exit \(r.status): \(r.stderr)")
                if r.status == 0 {
                    accepted += 1
                } else {
                    refused += 1
                    #expect(lines.count == 1 && lines[0].hasPrefix("error: "), "\(flag) \(value): \(r.stderr)")
                    #expect(!FileManager.default.fileExists(atPath: run.path), "\(flag) \(value) left a run directory")
                }
                try? FileManager.default.removeItem(at: run)
            }
        }
        #expect(refused > accepted)
    }

    @Test func dataFolderMustBeAFolder() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        try "not a folder".write(to: dir.appendingPathComponent("file.txt"), atomically: true, encoding: .utf8)
        for arguments in [["data", "list", "--data-dir", "file.txt"], ["data", "fetch", "shakespeare", "--data-dir", "file.txt"]] {
            let r = try Self.run(arguments, in: dir)
            #expect(r.status == 2 && r.stderr.hasPrefix("error: --data-dir (file.txt): is a file"), "\(arguments): \(r.stderr)")
        }
    }

    @Test func listopsPreparedThenTrained() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        // Without data: one line naming the command that prepares them, for a task and for a preset.
        for arguments in [["--task", "listops", "--model", "transformer"], ["--preset", "lra-listops-permuteformer", "--scale", "0.05"]] {
            let r = try Self.run(["train", "--quiet", "--output", "run", "--data-dir", "d"] + arguments, in: dir)
            #expect(r.status != 0 && r.stderr.hasPrefix("error: listops data") && r.stderr.contains("run `longmixer data prepare listops --data-dir d`")
                    && r.stderr.split(separator: "\n").count == 1, "\(arguments): \(r.stderr)")
        }
        let prepare = try Self.run(["data", "prepare", "listops", "--seed", "4", "--train-size", "24", "--val-size", "8", "--test-size", "8",
                                    "--data-dir", "d"], in: dir)
        #expect(prepare.status == 0 && prepare.stdout.contains("40 kept"), "\(prepare.stdout)\(prepare.stderr)")
        let list = try Self.run(["data", "list", "--data-dir", "d"], in: dir)
        #expect(list.stdout.contains("generated with seed 4: 24 / 8 / 8 trees"), "\(list.stdout)")
        try trains(["--task", "listops", "--model", "transformer", "--data-dir", dir.appendingPathComponent("d").path, "--steps", "3", "--batch-size", "8", "--length", "600",
                    "--dimensions", "16", "--heads", "2", "--layers", "1", "--feed-forward", "32"],
                   task: "listops", model: "transformer", family: "encoder")
        // The input side's speed, per task.
        let bench = try Self.run(["bench", "data", "--data-dir", "d", "--tasks", "order,listops,text", "--batches", "3", "--batch", "4"], in: dir)
        #expect(bench.status == 0 && bench.stdout.contains("listops      1999") && bench.stdout.contains("text") && bench.stdout.contains("not prepared"),
                "\(bench.stdout)\(bench.stderr)")
        // Sizes where the splits are fixed, and a task without data to prepare, are refused.
        let order = try Self.run(["data", "prepare", "order"], in: dir)
        #expect(order.status == 2 && order.stderr.contains("has no data to prepare"), "\(order.stderr)")
        let text = try Self.run(["data", "prepare", "text", "--train-size", "10", "--data-dir", "d"], in: dir)
        #expect(text.status == 2 && text.stderr.contains("splits have fixed sizes"), "\(text.stderr)")
    }

    @Test func pathfinderPreparedThenTrained() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = try Self.run(["train", "--quiet", "--output", "run", "--data-dir", "d", "--task", "pathfinder", "--model", "permuteformer-2d"], in: dir)
        #expect(missing.status != 0 && missing.stderr.contains("run `longmixer data prepare pathfinder --data-dir d`")
                && missing.stderr.split(separator: "\n").count == 1, "\(missing.stderr)")
        let prepare = try Self.run(["data", "prepare", "pathfinder", "--seed", "3", "--train-size", "32", "--val-size", "8", "--test-size", "8",
                                    "--data-dir", "d"], in: dir)
        #expect(prepare.status == 0 && prepare.stdout.contains("32 train, 8 validation, 8 test images"), "\(prepare.stdout)\(prepare.stderr)")
        let list = try Self.run(["data", "list", "--data-dir", "d"], in: dir)
        #expect(list.stdout.contains("generated with seed 3"), "\(list.stdout)")
        let data = dir.appendingPathComponent("d").path
        try trains(["--task", "pathfinder", "--model", "permuteformer-2d", "--data-dir", data, "--steps", "3", "--batch-size", "8",
                    "--dimensions", "16", "--heads", "2", "--layers", "1", "--feed-forward", "16"],
                   task: "pathfinder", model: "permuteformer-2d", family: "encoder")
        try trains(["--task", "pathfinder", "--model", "paramixer", "--data-dir", data, "--steps", "3", "--batch-size", "8",
                    "--dimensions", "8", "--hidden", "8"],
                   task: "pathfinder", model: "paramixer", family: "paramixer")
        // The grid fixes N.
        let length = try Self.run(["train", "--quiet", "--output", "run2", "--data-dir", data, "--task", "pathfinder", "--length", "1024"], in: dir)
        #expect(length.status == 2 && length.stderr.contains("N = 1026"), "\(length.stderr)")
    }

    @Test func imageFromCIFARBatchesTrained() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        // CIFAR-10's binary batches placed in the data folder are used instead of Fashion-MNIST.
        let cifar = dir.appendingPathComponent("d/cifar-10-batches-bin")
        try FileManager.default.createDirectory(at: cifar, withIntermediateDirectories: true)
        for (k, file) in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"].enumerated() {
            var bytes: [UInt8] = []
            for i in 0..<4 { bytes += [UInt8((k + i) % 10)] + (0..<3072).map { UInt8(truncatingIfNeeded: $0 * (i + 1) + k) } }
            try Data(bytes).write(to: cifar.appendingPathComponent(file + ".bin"))
        }
        let prepare = try Self.run(["data", "prepare", "image", "--data-dir", "d"], in: dir)
        #expect(prepare.status == 0 && prepare.stdout.contains("18 train, 2 validation, 4 test images") && prepare.stdout.contains("CIFAR-10"),
                "\(prepare.stdout)\(prepare.stderr)")
        try trains(["--task", "image", "--model", "permuteformer-2d", "--data-dir", dir.appendingPathComponent("d").path, "--steps", "3",
                    "--batch-size", "4", "--dimensions", "16", "--heads", "2", "--layers", "1", "--feed-forward", "16"],
                   task: "image", model: "permuteformer-2d", family: "encoder")
        let sizes = try Self.run(["data", "prepare", "genome", "--train-size", "5", "--data-dir", "e"], in: dir)
        #expect(sizes.status == 2 && sizes.stderr.contains("fixed sizes"), "\(sizes.stderr)")
    }

    @Test func presetsAreListed() throws {
        let r = try Self.run(["presets"], in: FileManager.default.temporaryDirectory)
        #expect(r.status == 0)
        for name in ["paramixer-adding", "paramixer-order", "lra-image-permuteformer-2d", "lm-wikitext-permuteformer", "lra-pathx-permuteformer-2d",
                     "genome-permuteformer", "longdoc-32k-performer"] {
            #expect(r.stdout.contains(name), "\(name) is not listed")
        }
        #expect(r.stdout.contains("task image (also --task mnist), model paramixer"), "\(r.stdout)")
        // A recipe on a task it was not written for: one line, before anything is read.
        let wrong = try Self.run(["train", "--preset", "paramixer-image", "--task", "text", "--data-dir", "absent"], in: FileManager.default.temporaryDirectory)
        #expect(wrong.status != 0 && wrong.stderr.split(separator: "\n").count == 1
                && wrong.stderr.contains("preset paramixer-image is for the image, mnist tasks"), "\(wrong.stderr)")
    }
}
