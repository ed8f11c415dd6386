import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels
@testable import LongMixerBenchmarks

/// The statistics behind the benchmarks' verdicts (the timings themselves are never asserted).
@Suite("Benchmark statistics")
struct BenchmarkingTests {
    @Test func quartilesUseNearestRanks() throws {
        #expect(Quartiles([]) == nil)
        let one = try #require(Quartiles([3]))
        #expect((one.lower, one.median, one.upper) == (3, 3, 3))
        // Unsorted input; n = 8: ranks (n−1)/4 = 1, n/2 = 4, 3n/4 = 6 of the sorted values 1…8.
        let q = try #require(Quartiles([8, 1, 7, 2, 6, 3, 5, 4]))
        #expect((q.lower, q.median, q.upper) == (2, 5, 7))
    }

    /// Paired statistics need every sample, in round order, for every case.
    @Test func timerKeepsOneSamplePerRoundInRoundOrder() throws {
        var order: [String] = []
        let cases = [BenchmarkCase("a") { order.append("a") }, BenchmarkCase("b") { order.append("b") }]
        let stats = BenchmarkTimer.measure(cases, repeats: 5, warmUp: 1, minimumSampleSeconds: 0)
        for s in stats {
            let samples = try #require(s.roundSamples)
            #expect(samples.count == 5 && s.samples == 5 && s.callsPerSample == 1)
            #expect(samples.min() == s.best && samples.allSatisfy { $0 >= 0 })
        }
        // Warm-up a, b, then rounds interleaved a, b, a, b, …
        #expect(order == ["a", "b"] + Array(repeating: ["a", "b"], count: 5).flatMap { $0 })
    }

    /// `bench core --only paramixer` keeps only the Paramixer factor table, each row against the GEMM rate.
    @Test func coreTablesShowOnlyTheGroupsThatRan() throws {
        let timing = TimingStatistics(best: 0.002, median: 0.002, samples: 1, callsPerSample: 1)
        var fused = BenchmarkRecord(group: "paramixer", name: "CHORD, B 4 · N 4096", variant: "fused kernel", threads: 1,
                                    timing: timing, work: 60e6, rateUnit: "GFLOP/s")
        fused.percentOfReference = 40
        let gemm = BenchmarkRecord(group: "paramixer-info", name: "2048x512 · 512x2048", variant: "BLAS.gemm", threads: 1,
                                   timing: timing, work: 150e6, rateUnit: "GFLOP/s")
        let tables = CoreBenchmarkTables.tables([fused, gemm], withTargets: false)
        #expect(tables.map { $0.0 } == ["Paramixer factor (f-MLP, sparse product, residual) vs the BLAS.gemm rate"])
        let rendered = try #require(tables.first).1.render()
        #expect(rendered.contains("fused kernel") && rendered.contains("30.0") && rendered.contains("40.0"))
        #expect(!rendered.contains("2048x512"))
    }

    /// `bench core --only attention`: the fused attention's forward and backward against the GEMM rate.
    @Test func coreTablesShowTheAttentionKernels() throws {
        let timing = TimingStatistics(best: 0.25, median: 0.25, samples: 1, callsPerSample: 1)
        var records: [BenchmarkRecord] = []
        for (call, percent) in [("forward", 78.5), ("backward", 71.26)] {
            var r = BenchmarkRecord(group: "attention", name: "softmax, B 1 · H 8 · N 4096 · Dh 64", variant: call, threads: 2,
                                    timing: timing, work: 34.4e9, rateUnit: "GFLOP/s")
            r.percentOfReference = percent
            records.append(r)
        }
        records.append(BenchmarkRecord(group: "attention-info", name: "2048x512 · (2048x512)ᵀ", variant: "BLAS.gemm", threads: 2,
                                       timing: timing, work: 4.3e9, rateUnit: "GFLOP/s"))
        let tables = CoreBenchmarkTables.tables(records, withTargets: false)
        #expect(tables.map { $0.0 } == ["Fused softmax attention (model FLOPs) vs the BLAS.gemm rate"])
        let rendered = try #require(tables.first).1.render()
        #expect(rendered.contains("forward") && rendered.contains("backward") && rendered.contains("137.6")
                && rendered.contains("78.5") && rendered.contains("71.3"))
        #expect(!rendered.contains("2048x512"))
    }

    /// The multiply-add peak gets a table of its own and gives both GEMM sides a share of it, per thread count.
    @Test func coreTablesGiveGemmsAsAShareOfThePeak() throws {
        func record(_ group: String, _ variant: String, threads: Int, seconds: Double, flops: Double) -> BenchmarkRecord {
            BenchmarkRecord(group: group, name: group == "peak" ? "8-lane fused multiply-adds" : "4096x512 · 512x512", variant: variant,
                            threads: threads, timing: TimingStatistics(best: seconds, median: seconds, samples: 1, callsPerSample: 1),
                            work: flops, rateUnit: "GFLOP/s")
        }
        var ours = record("gemm", "BLAS.gemm", threads: 1, seconds: 0.02, flops: 1.6e9)   // 80 GFLOP/s
        ours.reference = "cblas_sgemm"
        ours.percentOfReference = 80.0 / 90.0 * 100
        let raw = record("gemm", "cblas_sgemm", threads: 1, seconds: 0.02, flops: 1.8e9)   // 90 GFLOP/s
        let peak = record("peak", "peak", threads: 1, seconds: 0.01, flops: 1e9)           // 100 GFLOP/s
        let tables = CoreBenchmarkTables.tables([peak, ours, raw], withTargets: false)
        #expect(tables.map { $0.0 } == ["Multiply-add peak: the limit of every GEMM", "GEMM: our path vs raw cblas_sgemm"])
        let gemm = tables[1].1
        #expect(gemm.headers.suffix(2) == ["ours % of peak", "raw % of peak"])
        #expect(gemm.rows.map { Array($0.suffix(2)) } == [["80.0", "90.0"]])
        #expect(tables[0].1.rows == [["8-lane fused multiply-adds", "1", "10.000", "100.0"]])
        // A run from before the peak was measured: no peak columns.
        #expect(!CoreBenchmarkTables.tables([ours, raw], withTargets: false)[0].1.headers.contains("ours % of peak"))
    }
}
