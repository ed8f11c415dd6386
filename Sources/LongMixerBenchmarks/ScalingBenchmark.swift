import Foundation
import LongMixerCore
import LongMixerModels
import LongMixerData

/// `longmixer bench scaling`: every model on one stack and one shape family, time and memory against
/// N, with fitted growth exponents (Paramixer's scalability comparison with the X-formers).
///
/// Shape family: random tokens (vocabulary 16), 10 classes, CLS pooling for every model; each model at
/// the registry's small CPU defaults (Paramixer D = H = 32, one block; the encoders D 32, one layer,
/// 2 heads, FFN 64). A batch holds about `tokensPerBatch` tokens (at least one sequence), so short
/// sequences are not timed one dispatch at a time; times and memory are per sequence.
public enum ScalingBenchmark {
    public static let models: [ModelBenchSpec] = [
        ModelBenchSpec(label: "paramixer-chord", model: "paramixer", options: ModelOptions(linkProtocol: .chord, pooling: .cls)),
        ModelBenchSpec(label: "paramixer-cdil", model: "paramixer", options: ModelOptions(linkProtocol: .cdil, pooling: .cls)),
        ModelBenchSpec(label: "transformer", model: "transformer", options: ModelOptions(pooling: .cls)),
        ModelBenchSpec(label: "performer", model: "performer", options: ModelOptions(pooling: .cls)),
        ModelBenchSpec(label: "permuteformer", model: "permuteformer", options: ModelOptions(pooling: .cls)),
        ModelBenchSpec(label: "favor", model: "favor", options: ModelOptions(pooling: .cls)),
        ModelBenchSpec(label: "rope", model: "rope", options: ModelOptions(pooling: .cls)),
        ModelBenchSpec(label: "paramixer-chord-apc", model: "paramixer",
                       options: ModelOptions(linkProtocol: .chord, pooling: .cls, positions: .learned)),
        ModelBenchSpec(label: "paramixer-cdil-apc", model: "paramixer",
                       options: ModelOptions(linkProtocol: .cdil, pooling: .cls, positions: .learned)),
        ModelBenchSpec(label: "paramixer-chord-adding", model: "paramixer", options: ModelOptions(linkProtocol: .chord)),
        ModelBenchSpec(label: "paramixer-cdil-adding", model: "paramixer", options: ModelOptions(linkProtocol: .cdil)),
    ]
    /// `bench scaling`'s default: one row per model (no -apc or -adding variants).
    public static let scalingModels = models.map(\.label).filter { !$0.hasSuffix("-apc") && !isAdding($0) }
    /// `bench paramixer`'s default: both link protocols without and with learned positions, and on the Adding shape.
    public static let paramixerModels = ["paramixer-chord", "paramixer-cdil", "paramixer-chord-apc", "paramixer-cdil-apc",
                                         "paramixer-chord-adding", "paramixer-cdil-adding"]

    /// Whether the model of `label` runs on the Adding problem's shape (`addingShape`) instead of the tokens.
    public static func isAdding(_ label: String) -> Bool { label.hasSuffix("-adding") }

    public static let fullLengths = (7...16).map { 1 << $0 }
    public static let quickLengths = [256, 1024, 4096, 16384]
    public static let defaultTokensPerBatch = 1 << 14
    public static let vocabulary = 16

    public static let setup = """
        Random tokens (vocabulary 16), 10 classes, CLS pooling; registry defaults: Paramixer D = H = 32, one block, \
        ⌈log₂N⌉ factors (CHORD or CDIL); encoders D 32, one pre-LN layer, 2 heads, FFN 64. Batch: about 16,384 tokens \
        (at least one sequence) unless --batch-size is given; -apc: Paramixer with learned positions (APC). Forward: eval mode, \
        no graph, on a twin of the model that the training steps leave unchanged (a deployed model); Paramixer's factors on the \
        fused kernel (AVX2; the composed ops on AVX-512). Its f-MLPs run once per vocabulary entry (token input without \
        positions); with learned positions (-apc) their first layer runs once per token, and its position part W1·p + b1 is kept \
        between calls (made again when the parameters change). Training step: loss, backward, Adam; the same paths, except that \
        the position part is computed in every step, so the split pays when the two tables have at most half as many rows as \
        the batch has positions (here: from three sequences), else the first layer runs per position. \
        -adding: the Adding problem's shape and the model of `longmixer train --task adding --model paramixer` (two \
        real-valued features per position, one regression output, FLATTEN), whose f-MLPs' first layer folds into the \
        input projection (2 inputs instead of D). \
        Memory: tensor bytes at the peak of one training step, per sequence.
        """

    public static func shape(length: Int, batch: Int) -> ModelBenchShape {
        ModelBenchShape(name: "N = \(length)",
                        shape: ModelTaskShape(input: .tokens(vocabulary: vocabulary, paddingIndex: nil), objective: .classes, length: length, outputs: 10),
                        forwardBatch: batch, trainingBatch: batch, tokenRange: 0..<vocabulary)
    }

    /// The Adding problem's shape: (value, marker) pairs [B, N, 2], one regression output (random inputs and targets).
    public static func addingShape(length: Int, batch: Int) -> ModelBenchShape {
        ModelBenchShape(name: "N = \(length)", shape: ModelTaskShape(input: .features(2), objective: .regression, length: length, outputs: 1),
                        forwardBatch: batch, trainingBatch: batch, tokenRange: 0..<1)
    }

    public static func batch(length: Int, batchSize: Int?, tokensPerBatch: Int = defaultTokensPerBatch) -> Int {
        batchSize ?? max(1, tokensPerBatch / length)
    }

    /// Softmax attention is skipped where one B·H·N² float32 score tensor would exceed `limitGiB` (the fused
    /// kernel keeps none, but a materialising implementation would, and the time grows as N²).
    public static func softmaxSkip(_ spec: ModelBenchSpec, length: Int, batch: Int, limitGiB: Double) -> String? {
        guard let entry = try? ModelRegistry.entry(spec.model), entry.mixer == .softmax else { return nil }
        let heads = spec.options.heads ?? ModelRegistry.withDefaults(spec.options, family: .encoder).heads ?? 1
        let gib = Double(batch) * Double(heads) * Double(length) * Double(length) * 4 / Double(1 << 30)
        guard gib > limitGiB else { return nil }
        return "N² scores \(formatNumber(gib, decimals: 1)) GiB > --softmax-limit-gib \(formatNumber(limitGiB, decimals: 1))"
    }

    /// Growth exponents per model over N ≥ `fitFrom`: forward and training time per sequence, and
    /// training-step memory per sequence.
    public static func fits(_ rows: [ModelBenchRow], fitFrom: Int) -> [GrowthFit] {
        var out: [GrowthFit] = []
        let labels = rows.map(\.label).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        for label in labels {
            let mine = rows.filter { $0.label == label && $0.length >= fitFrom && $0.skipped == nil }
            let quantities: [(String, (ModelBenchRow) -> Double?)] = [
                ("forward", { $0.forwardPerSequence?.median }),
                ("training", { $0.trainingPerSequence?.median }),
                ("memory", { r in r.trainingPeakBytes.map { Double($0) / Double(r.trainingBatch) } }),
            ]
            for (quantity, value) in quantities {
                let points = mine.compactMap { r in value(r).map { (x: Double(r.length), y: $0) } }
                guard let k = growthExponent(points) else { continue }
                out.append(GrowthFit(label: label, quantity: quantity, fromLength: Int(points.map(\.x).min()!),
                                     toLength: Int(points.map(\.x).max()!), points: points.count, exponent: k))
            }
        }
        return out
    }

    /// Least-squares slope of log(y) against log(x): the growth exponent of y ∝ x^k (nil below two points).
    public static func growthExponent(_ points: [(x: Double, y: Double)]) -> Double? {
        let valid = points.filter { $0.x > 0 && $0.y > 0 }
        guard Set(valid.map(\.x)).count >= 2 else { return nil }
        let lx = valid.map { Foundation.log($0.x) }, ly = valid.map { Foundation.log($0.y) }
        let mx = lx.reduce(0, +) / Double(lx.count), my = ly.reduce(0, +) / Double(ly.count)
        var sxy = 0.0, sxx = 0.0
        for (a, b) in zip(lx, ly) { sxy += (a - mx) * (b - my); sxx += (a - mx) * (a - mx) }
        return sxx > 0 ? sxy / sxx : nil
    }

    public static func fitTable(_ fits: [GrowthFit]) -> TextTable {
        var t = TextTable(headers: ["model", "forward k", "training k", "memory k", "fitted over N"])
        let labels = fits.map(\.label).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        for label in labels {
            func k(_ q: String) -> String { fits.first { $0.label == label && $0.quantity == q }.map { formatNumber($0.exponent, decimals: 2) } ?? "–" }
            let any = fits.first { $0.label == label }!
            t.append([label, k("forward"), k("training"), k("memory"), "\(any.fromLength) … \(any.toLength) (\(any.points) lengths)"])
        }
        return t
    }

    /// What the project expects of the exponents (`--check-targets`): Paramixer ≤ 1.15, the linear-attention
    /// models ≤ 1.1, softmax attention about 2 (1.8 … 2.2), on training time per sequence.
    public static func targetLines(_ fits: [GrowthFit]) -> [String] {
        var lines: [String] = []
        for f in fits where f.quantity == "training" {
            let (ok, target): (Bool, String)
            switch f.label {
            case let l where l.hasPrefix("paramixer"): (ok, target) = (f.exponent <= 1.15, "≤ 1.15")
            case "transformer": (ok, target) = (f.exponent >= 1.8 && f.exponent <= 2.2, "≈ 2 (1.8 … 2.2)")
            default: (ok, target) = (f.exponent <= 1.1, "≤ 1.1")
            }
            lines.append("  \(f.label): training-time exponent \(formatNumber(f.exponent, decimals: 2)), target \(target): \(ok ? "met" : "MISSED")")
        }
        return lines
    }

    /// Training time and memory per sequence against N, log-log, one line per model.
    public static func plot(_ rows: [ModelBenchRow], subtitle: String) -> SVGPlot {
        let labels = rows.map(\.label).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        func series(_ value: (ModelBenchRow) -> Double?) -> [SVGPlot.Series] {
            labels.map { label in
                SVGPlot.Series(name: label, points: rows.filter { $0.label == label && $0.skipped == nil }
                    .compactMap { r in value(r).map { (x: Double(r.length), y: $0) } })
            }
        }
        return SVGPlot(title: "Training step per sequence against N", subtitle: subtitle, panels: [
            SVGPlot.Panel(title: "Time (median)", xLabel: "sequence length N", yLabel: "ms per sequence",
                          series: series { $0.trainingPerSequence.map { $0.median * 1e3 } }),
            SVGPlot.Panel(title: "Peak tensor memory", xLabel: "sequence length N", yLabel: "MiB per sequence",
                          series: series { r in r.trainingPeakBytes.map { Double($0) / Double(r.trainingBatch) / 1_048_576 } }),
        ])
    }
}

/// Tables of model rows against N (`bench scaling`, `bench paramixer`, `bench attention`).
public enum ModelBenchTables {
    /// Per model and N: batch, per-sequence forward and training time (median; IQR of the training step),
    /// best CPU time, memory, the GEMM roofline (with `gemm`), and the PyTorch twin with paired torch ÷ Swift ratios;
    /// with `ceilings` (and `gemm`), the torch ÷ Swift ratios at 100 % of the roofline (`Roofline.torchCeiling`).
    public static func lengths(_ rows: [ModelBenchRow], withTorch: Bool, gemm: Roofline.GemmRate?, ceilings: Bool = false) -> TextTable {
        var headers = ["model", "N", "batch", "fwd ms/seq", "train ms/seq (IQR)", "CPU fwd", "CPU train", "train MiB/seq", "infer MiB"]
        if gemm != nil { headers += ["roofline fwd", "roofline train"] }
        if withTorch { headers += ["torch fwd ms/seq", "torch train ms/seq", "torch ÷ Swift fwd (IQR)", "torch ÷ Swift train (IQR)"] }
        let ceilingRate = withTorch && ceilings ? gemm : nil
        if ceilingRate != nil { headers += ["ceiling fwd", "ceiling train"] }
        var t = TextTable(headers: headers)
        for r in rows {
            var cells = [r.label, "\(r.length)", "\(r.trainingBatch)"]
            if let skipped = r.skipped {
                // The reason goes last, so that it does not widen the numeric columns.
                t.append(cells + Array(repeating: "–", count: headers.count - 4) + ["skipped: " + skipped])
                continue
            }
            let (forward, training) = (r.forwardPerSequence, r.trainingPerSequence)
            cells += [milliseconds(forward), millisecondsWithIQR(training),
                      forward?.bestCPU.map(formatMilliseconds) ?? "–", training?.bestCPU.map(formatMilliseconds) ?? "–",
                      r.trainingPeakBytes.map { formatNumber(Double($0) / Double(r.trainingBatch) / 1_048_576, decimals: 2) } ?? "–",
                      r.inferencePeakBytes.map { formatNumber(Double($0) / 1_048_576, decimals: 1) } ?? "–"]
            if let gemm {
                func roofline(_ flops: Double?, _ t: CaseTiming?) -> String {
                    guard let flops, let p = Roofline.percent(flops: flops, gflops: gemm.gflops, seconds: t?.median) else { return "–" }
                    return formatNumber(p) + " %"
                }
                cells += [roofline(r.forwardFlops, forward), roofline(r.forwardFlops.map { 3 * $0 }, training)]
            }
            if withTorch {
                cells += [milliseconds(r.torchForwardPerSequence), milliseconds(r.torchTrainingPerSequence),
                          ratio(pairedRatio(r.torchForward?.samples, r.forward?.samples)),
                          ratio(pairedRatio(r.torchTraining?.samples, r.training?.samples))]
            }
            if let rate = ceilingRate {
                func ceiling(_ flops: Double?, _ torch: CaseTiming?) -> String {
                    Roofline.torchCeiling(flops: flops, gflops: rate.gflops, torch: torch).map { formatNumber($0, decimals: 2) + "×" } ?? "–"
                }
                cells += [ceiling(r.forwardFlops, r.torchForwardPerSequence), ceiling(r.forwardFlops.map { 3 * $0 }, r.torchTrainingPerSequence)]
            }
            t.append(cells)
        }
        return t
    }
}

/// Milliseconds of a median, or "–".
func milliseconds(_ t: CaseTiming?) -> String { t.map { formatMilliseconds($0.median) } ?? "–" }

/// "12.345 (11.9–13.0)": median and interquartile range in ms.
func millisecondsWithIQR(_ t: CaseTiming?) -> String {
    t.map { "\(formatMilliseconds($0.median)) (\(formatMilliseconds($0.lowerQuartile))–\(formatMilliseconds($0.upperQuartile)))" } ?? "–"
}

/// "1.23× (1.10–1.31)": a paired ratio's median and interquartile range.
func ratio(_ q: Quartiles?) -> String {
    q.map { "\(formatNumber($0.median, decimals: 2))× (\(formatNumber($0.lower, decimals: 2))–\(formatNumber($0.upper, decimals: 2)))" } ?? "–"
}
