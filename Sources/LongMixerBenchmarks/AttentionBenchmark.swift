import Foundation
import LongMixerCore
import LongMixerModels

/// `longmixer bench attention`: the attention family at the width of the LRA Text model (the
/// PermuteFormer paper's efficiency setting) against N, on the `ModelBenchmark` engine.
public enum AttentionBenchmarkSetup {
    /// Registry models on 1D token sequences that the PyTorch side also has (not the orthogonal ablation).
    public static let mixers = ["transformer", "performer", "permuteformer", "favor", "rope"]

    public static let setup = """
        Encoder at the LRA Text width: D 512, 8 heads, FFN 2048, pre-LN, binary head through the CLS pooler, byte \
        vocabulary, dropout 0; Performer, PermuteFormer and RoPE with Q/K at 4 × Dh = 256 features per head, FAVOR+ \
        with m = 64 random features; learned positions for Transformer, Performer and FAVOR+, none for PermuteFormer \
        and RoPE. Random byte tokens after CLS, no padding. Forward: eval mode, no graph. Training step: loss, \
        backward, Adam.
        """

    public static func specs(_ names: [String], layers: Int) -> [ModelBenchSpec] {
        names.map {
            ModelBenchSpec(label: $0, model: $0, options: ModelOptions(dimensions: 512, layers: layers, heads: 8, feedForward: 2048, dropout: 0))
        }
    }

    public static func shape(length: Int, batch: Int) -> ModelBenchShape {
        ModelBenchShape(name: "N = \(length)",
                        shape: ModelTaskShape(input: .tokens(vocabulary: 259, paddingIndex: 0), objective: .binary, length: length, outputs: 1),
                        forwardBatch: batch, trainingBatch: batch, tokenRange: 3..<259, cls: 1)
    }

    /// PermuteFormer's time over Performer's per N: medians of per-round ratios, forward and training step.
    public static func overheadTable(_ rows: [ModelBenchRow]) -> TextTable {
        var t = TextTable(headers: ["N", "forward", "training step"])
        for (p, q) in pairs(rows) {
            t.append(["\(p.length)", ratio(pairedRatio(q.forward?.samples, p.forward?.samples)),
                      ratio(pairedRatio(q.training?.samples, p.training?.samples))])
        }
        return t
    }

    /// Performer and PermuteFormer rows of the same N.
    static func pairs(_ rows: [ModelBenchRow]) -> [(performer: ModelBenchRow, permuteFormer: ModelBenchRow)] {
        rows.filter { $0.label == "performer" && $0.skipped == nil }.compactMap { p in
            rows.first { $0.label == "permuteformer" && $0.length == p.length && $0.skipped == nil }.map { (p, $0) }
        }
    }

    /// The project's targets (`--check-targets`): PermuteFormer within 3 % of Performer; forward and training
    /// step at least 1.25× faster than PyTorch's below N 4096 and 1.5× from N 4096 (medians of per-round
    /// ratios); from N 4096 a training step at ≥ 80 % of the GEMM roofline (with `gemm`).
    public static func targetLines(_ rows: [ModelBenchRow], gemm: Roofline.GemmRate? = nil) -> [String] {
        var lines: [String] = []
        for (p, q) in pairs(rows) {
            for (what, a, b) in [("forward", q.forward, p.forward), ("training step", q.training, p.training)] {
                guard let r = pairedRatio(a?.samples, b?.samples) else { continue }
                lines.append("  N = \(p.length): PermuteFormer overhead over Performer, \(what): \(formatNumber(100 * (r.median - 1))) %, "
                             + "target ≤ 3 %: \(r.median <= 1.03 ? "met" : "MISSED")")
            }
        }
        for r in rows {
            let target = r.length >= 4096 ? 1.5 : 1.25
            for (what, torch, ours, flops, torchPerSequence) in [
                ("forward", r.torchForward, r.forward, r.forwardFlops, r.torchForwardPerSequence),
                ("training step", r.torchTraining, r.training, r.forwardFlops.map { 3 * $0 }, r.torchTrainingPerSequence)] {
                guard let q = pairedRatio(torch?.samples, ours?.samples) else { continue }
                // Where it is missed: the ratio at 100 % of the GEMM roofline, which no work outside the GEMMs can pass.
                let ceiling = q.median >= target ? nil : gemm.flatMap { Roofline.torchCeiling(flops: flops, gflops: $0.gflops, torch: torchPerSequence) }
                lines.append("  \(r.label) N = \(r.length): PyTorch ÷ Swift \(what) \(formatNumber(q.median, decimals: 2))×, "
                             + "target ≥ \(target)×: \(q.median >= target ? "met" : "MISSED")"
                             + (ceiling.map { " (at 100 % of the GEMM roofline: \(formatNumber($0, decimals: 2))×)" } ?? ""))
            }
            if r.length >= 4096, let gemm, let flops = r.forwardFlops,
               let percent = Roofline.percent(flops: 3 * flops, gflops: gemm.gflops, seconds: r.trainingPerSequence?.median) {
                lines.append("  \(r.label) N = \(r.length): training step at \(formatNumber(percent)) % of the GEMM roofline, "
                             + "target ≥ 80 %: \(percent >= 80 ? "met" : "MISSED")")
            }
        }
        return lines
    }
}
