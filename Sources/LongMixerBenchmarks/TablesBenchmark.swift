import Foundation
import LongMixerCore
import LongMixerModels
import LongMixerData
import LongMixerTraining

/// `longmixer bench tables`: the PermuteFormer paper's efficiency tables (Table 2, training time;
/// Table 3, inference latency) at CPU scale, with peak memory, on the shapes of the four LRA tasks.
///
/// Each model is its LRA preset (`longmixer presets`: `lra-<task>-<model>`, `paramixer-<task>`) with one
/// layer (one block): the presets' widths, heads, FFN, dropout and pooling, so a table row is what a
/// training run of that preset would cost per layer. Inputs are random byte tokens (3 … 258, CLS = 1
/// first), never padding. Training time is that of full steps (loss, backward, Adam) on batches of the
/// task's CPU batch size, reported per 1,000 samples; inference latency is one sample's forward pass.
public enum TablesBenchmark {
    public struct Task: Sendable {
        /// As printed: Text, Retrieval, Image, Pathfinder.
        public var name: String
        /// The LRA task of the presets.
        public var preset: String
        public var length: Int
        public var pair: Bool
        public var objective: ModelTaskShape.Objective
        public var outputs: Int
        /// Sequences per training step: full run and `--quick` (the LRA batches 16 / 32 / 256 / 256, scaled to a CPU).
        public var batch: Int
        public var quickBatch: Int
    }

    public static let tasks: [Task] = [
        Task(name: "Text", preset: "text", length: 4096, pair: false, objective: .binary, outputs: 1, batch: 2, quickBatch: 1),
        Task(name: "Retrieval", preset: "retrieval", length: 4096, pair: true, objective: .binary, outputs: 1, batch: 2, quickBatch: 1),
        Task(name: "Image", preset: "image", length: 1024, pair: false, objective: .classes, outputs: 10, batch: 16, quickBatch: 4),
        Task(name: "Pathfinder", preset: "pathfinder", length: 1024, pair: false, objective: .binary, outputs: 1, batch: 16, quickBatch: 4),
    ]

    /// The model labels of the tables, in order; `transformer` is the reference of the ratios.
    public static let modelLabels = ["transformer", "performer", "permuteformer", "paramixer-chord", "paramixer-cdil"]

    public static let samplesPerReport = 1000.0

    /// The setup paragraph with the training batch of each task (`batches` in the order of `tasks`).
    public static func setup(batches: [(task: String, batch: Int)]) -> String {
        setup + " Training batches in this run: " + batches.map { "\($0.task) \($0.batch)" }.joined(separator: ", ") + "."
    }

    static let setup = """
        Shapes of the LRA tasks: Text N = 4096, Retrieval two documents of 4096, Image and Pathfinder 1024; random byte \
        tokens, CLS first. Models: the LRA presets with one layer (one block) — Transformer, Performer, PermuteFormer at \
        the task's LRA width (Text D 512, 8 heads, FFN 2048; Retrieval D 128, 4 heads, FFN 512; Image D 64, 4 heads, FFN 128; \
        Pathfinder D 128, 8 heads, FFN 128), Paramixer with CHORD or CDIL at its preset (Text D 32, H 128, CLS; Image D 32, \
        H 32, FLATTEN; Pathfinder D 64, H 32, FLATTEN; it has no two-document head for Retrieval). Training: full steps \
        (loss, backward, Adam), reported per 1,000 samples. Inference: one sample's forward pass, on a twin of the model that \
        the training steps leave unchanged (a deployed model: Paramixer keeps the learned positions' part of its factor \
        MLPs between calls). Memory: tensor bytes at the peak of a training step and of an inference call.
        """

    /// The task's model shape: byte tokens (vocabulary 259, PAD 0).
    public static func shape(_ task: Task) -> ModelTaskShape {
        ModelTaskShape(input: .tokens(vocabulary: 259, paddingIndex: 0), objective: task.objective, length: task.length,
                       outputs: task.outputs, pair: task.pair)
    }

    public static func group(_ task: Task, batch: Int) -> ModelBenchShape {
        ModelBenchShape(name: task.name, shape: shape(task), forwardBatch: 1, trainingBatch: batch, tokenRange: 3..<259, cls: 1)
    }

    /// The models of `task`: each preset's options with one layer.
    public static func specs(_ task: Task) throws -> [ModelBenchSpec] {
        func preset(_ name: String) throws -> ModelOptions {
            var o = try RunPreset.named(name).settings.modelOptions
            o.layers = 1
            return o
        }
        // Retrieval has no Paramixer preset (no two-document head): Text's options, which the registry then refuses.
        let paramixer = try preset("paramixer-\(task.preset == "retrieval" ? "text" : task.preset)")
        var cdil = paramixer
        cdil.linkProtocol = .cdil
        return [
            ModelBenchSpec(label: "transformer", model: "transformer", options: try preset("lra-\(task.preset)-transformer")),
            ModelBenchSpec(label: "performer", model: "performer", options: try preset("lra-\(task.preset)-performer")),
            ModelBenchSpec(label: "permuteformer", model: "permuteformer", options: try preset("lra-\(task.preset)-permuteformer")),
            ModelBenchSpec(label: "paramixer-chord", model: "paramixer", options: paramixer),
            ModelBenchSpec(label: "paramixer-cdil", model: "paramixer", options: cdil),
        ]
    }

    /// Table 2 (training) or Table 3 (inference): per task and model the time, its ratio to the
    /// Transformer's (median of per-round ratios, IQR), peak memory and its ratio, and the PyTorch twin.
    public static func table(_ rows: [ModelBenchRow], training: Bool, withTorch: Bool) -> TextTable {
        let unit = training ? "s / 1k samples" : "ms / sample"
        var headers = ["task", "model", unit, "÷ Transformer (IQR)", "CPU " + unit, "peak MiB", "÷ Transformer"]
        if withTorch { headers += ["torch \(unit)", "torch ÷ Swift (IQR)"] }
        var t = TextTable(headers: headers, leftAligned: [0, 1])
        for r in rows {
            var cells = [r.group, r.label]
            if let skipped = r.skipped {
                // The reason goes last, so that it does not widen the numeric columns.
                t.append(cells + Array(repeating: "–", count: headers.count - 3) + ["skipped: " + skipped])
                continue
            }
            let reference = rows.first { $0.group == r.group && $0.label == "transformer" && $0.skipped == nil }
            let (mine, theirs) = training ? (r.training, reference?.training) : (r.forward, reference?.forward)
            let (peak, referencePeak) = training ? (r.trainingPeakBytes, reference?.trainingPeakBytes) : (r.inferencePeakBytes, reference?.inferencePeakBytes)
            cells += [format(mine, row: r, training: training),
                      r.label == "transformer" ? "1" : ratio(pairedRatio(mine?.samples, theirs?.samples)),
                      format(mine?.bestCPU, row: r, training: training),
                      peak.map { formatNumber(Double($0) / 1_048_576, decimals: 1) } ?? "–",
                      (peak != nil && referencePeak != nil) ? formatNumber(Double(peak!) / Double(referencePeak!), decimals: 2) : "–"]
            if withTorch {
                let torch = training ? r.torchTraining : r.torchForward
                cells += [torch.map { format($0, row: r, training: training) } ?? (r.torchError.map { "– (\($0.prefix(40)))" } ?? "–"),
                          ratio(pairedRatio(torch?.samples, mine?.samples))]
            }
            t.append(cells)
        }
        return t
    }

    /// Seconds per 1,000 samples (training) or milliseconds per sample (inference), from the median call.
    static func format(_ t: CaseTiming?, row: ModelBenchRow, training: Bool) -> String { format(t?.median, row: row, training: training) }

    /// The same for the seconds of one call.
    static func format(_ seconds: Double?, row: ModelBenchRow, training: Bool) -> String {
        guard let seconds else { return "–" }
        return training ? formatNumber(seconds / Double(row.trainingBatch) * samplesPerReport, decimals: 1)
                        : formatNumber(seconds / Double(row.forwardBatch) * 1e3, decimals: 1)
    }
}
