import Foundation

/// The tables of `longmixer bench core` from its records (also what `bench report` renders).
public enum CoreBenchmarkTables {
    /// Variant prefix of the STREAM rows with streaming (non-temporal) stores.
    public static let streamingVariant = "streaming stores, "
    public static let dramTitle = "DRAM bandwidth"


    /// The GEMM, memory-bound and DRAM tables; `withTargets` adds the target columns.
    public static func tables(_ records: [BenchmarkRecord], withTargets: Bool) -> [(String, TextTable)] {
        // The multiply-add peak per thread count (runs from before it was measured have none).
        let peaks = records.filter { $0.group == "peak" }
        func peak(_ threads: Int) -> Double? { peaks.first { $0.threads == threads }?.rate }
        var gemm = TextTable(headers: ["GEMM (M×K · K×N)", "our entry point", "threads", "ours ms", "ours GFLOP/s",
                                       "raw ms", "raw GFLOP/s", "ours % of raw"] + (withTargets ? ["target"] : [])
                                       + (peaks.isEmpty ? [] : ["ours % of peak", "raw % of peak"]))
        let gemmOurs = records.filter { $0.group == "gemm" && $0.reference != nil }
        for r in gemmOurs {
            guard let raw = records.first(where: { $0.group == "gemm" && $0.name == r.name && $0.threads == r.threads && $0.reference == nil })
            else { continue }
            gemm.append([r.name, r.variant, "\(r.threads)", formatMilliseconds(r.timing.best), formatNumber(r.rate),
                         formatMilliseconds(raw.timing.best), formatNumber(raw.rate),
                         formatNumber(r.percentOfReference ?? 0)]
                        + (withTargets ? [r.targetPercent.map { "≥ \(formatNumber($0, decimals: 0)) %: \(verdict(r))" } ?? "–"] : [])
                        + (peaks.isEmpty ? [] : [peak(r.threads).map { formatNumber(100 * r.rate / $0) } ?? "–",
                                                 peak(r.threads).map { formatNumber(100 * raw.rate / $0) } ?? "–"]))
        }
        gemm.leftAligned = [0, 1]
        var peakTable = TextTable(headers: ["multiply-add peak", "threads", "ms", "GFLOP/s"])
        for r in peaks { peakTable.append([r.name, "\(r.threads)", formatMilliseconds(r.timing.best), formatNumber(r.rate)]) }

        var memory = TextTable(headers: ["kernel", "threads", "MB moved", "kernel ms", "kernel GB/s", "% DRAM"]
                               + (withTargets ? ["target ≥ 60 % (2T)"] : [])
                               + ["% DRAM paired (IQR)", "% DRAM ord.", "op ms (fresh out)", "op GB/s", "op % DRAM"])
        for r in records where r.group == "memory" && r.variant.hasPrefix("kernel") {
            guard let op = records.first(where: { $0.group == "memory" && $0.name == r.name && $0.threads == r.threads && $0.variant.hasPrefix("op") })
            else { continue }
            // For information: against the best copy/triad with ordinary stores only (the reference before
            // the kernels used streaming stores).
            let ordinary = records.filter { $0.group == "dram" && $0.threads == r.threads && !$0.variant.hasPrefix(streamingVariant) }
                .map(\.rate).max() ?? .nan
            memory.append([r.name, "\(r.threads)", formatNumber(r.work / 1e6, decimals: 0), formatMilliseconds(r.timing.best),
                           formatNumber(r.rate), formatNumber(r.percentOfReference ?? 0)] + (withTargets ? [verdict(r)] : []) + [
                           r.pairedPercentOfReference.map { "\(formatNumber($0.median)) (\(formatNumber($0.lower))–\(formatNumber($0.upper)))" } ?? "–",
                           formatNumber(100 * r.rate / ordinary),
                           formatMilliseconds(op.timing.best), formatNumber(op.rate), formatNumber(op.percentOfReference ?? 0)])
        }

        var dram = TextTable(headers: ["DRAM bandwidth (STREAM-like)", "threads", "MB moved", "ms", "GB/s"])
        for r in records where r.group.hasPrefix("dram") {
            dram.append(["\(r.name) (\(r.variant))", "\(r.threads)", formatNumber(r.work / 1e6, decimals: 0),
                         formatMilliseconds(r.timing.best), formatNumber(r.rate)])
        }
        var paramixer = TextTable(headers: ["Paramixer factor, no graph", "path", "threads", "ms", "GFLOP/s", "% of GEMM rate"])
        for r in records where r.group == "paramixer" {
            paramixer.append([r.name, r.variant, "\(r.threads)", formatMilliseconds(r.timing.best), formatNumber(r.rate),
                              formatNumber(r.percentOfReference ?? 0)])
        }
        paramixer.leftAligned = [0, 1]
        var attention = TextTable(headers: ["fused attention kernel", "call", "threads", "ms", "GFLOP/s", "% of GEMM rate"])
        for r in records where r.group == "attention" {
            attention.append([r.name, r.variant, "\(r.threads)", formatMilliseconds(r.timing.best), formatNumber(r.rate),
                              formatNumber(r.percentOfReference ?? 0)])
        }
        attention.leftAligned = [0, 1]
        // Tables of groups the run left out (`--only`) are not shown.
        return [("Multiply-add peak: the limit of every GEMM", peakTable),
                ("GEMM: our path vs raw cblas_sgemm", gemm),
                ("Paramixer factor (f-MLP, sparse product, residual) vs the BLAS.gemm rate", paramixer),
                ("Fused softmax attention (model FLOPs) vs the BLAS.gemm rate", attention),
                ("Memory-bound kernels vs DRAM bandwidth", memory),
                (dramTitle, dram)].filter { !$0.1.rows.isEmpty }
    }

    /// One line per thread count of the STREAM-like rates (what the benchmark page shows instead of the
    /// DRAM table), e.g. "2 threads: copy 23.3 GB/s, triad 27.1; streaming stores: copy 39.5, triad 39.5;
    /// glibc memcpy 23.8".
    public static func dramSummary(_ records: [BenchmarkRecord]) -> [String] {
        Array(Set(records.filter { $0.group.hasPrefix("dram") }.map(\.threads))).sorted().map { threads in
            let rows = records.filter { $0.group.hasPrefix("dram") && $0.threads == threads }
            func rate(_ name: String, streaming: Bool) -> String {
                rows.first { $0.group == "dram" && $0.name == name && $0.variant.hasPrefix(streamingVariant) == streaming }
                    .map { formatNumber($0.rate) } ?? "–"
            }
            var line = "\(threads) thread\(threads == 1 ? "" : "s"): copy \(rate("STREAM copy", streaming: false)) GB/s, "
                + "triad \(rate("STREAM triad", streaming: false)); streaming stores: copy \(rate("STREAM copy", streaming: true)), "
                + "triad \(rate("STREAM triad", streaming: true))"
            if let memcpy = rows.first(where: { $0.group == "dram-info" }) { line += "; glibc memcpy \(formatNumber(memcpy.rate))" }
            return line
        }
    }

    public static func verdict(_ r: BenchmarkRecord) -> String {
        guard let met = r.meetsTarget else { return "–" }
        return met ? "met" : "MISSED"
    }

    public static func targetSummary(_ records: [BenchmarkRecord]) -> [String] {
        let judged = records.filter { $0.meetsTarget != nil }
        let missed = judged.filter { $0.meetsTarget == false }
        var lines = ["targets: \(judged.count - missed.count) of \(judged.count) met"]
        for r in missed {
            lines.append("  missed: \(r.group) \(r.name) [\(r.variant)] \(r.threads)T: "
                         + "\(formatNumber(r.percentOfReference ?? 0)) % of \(r.reference ?? "reference") (target \(formatNumber(r.targetPercent ?? 0, decimals: 0)) %)")
        }
        return lines
    }
}
