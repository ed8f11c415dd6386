import Foundation
import Testing
import LongMixerTestSupport
@testable import LongMixerCore
@testable import LongMixerWideKernels

/// Every path of GELU, softmax and layer norm — 8 lanes (AVX2) and, where the CPU has it, 16 lanes
/// (AVX-512), each with ordinary and with streaming stores — against the plain references, on outputs
/// that start on and off cache-line boundaries, with 1 and 2 threads. The public kernels choose the
/// path by output size and CPU; these tests force each one.
@Suite("GELU, softmax and layer norm: every store and vector-width path", .serialized)
struct StreamingKernelPathTests {
    /// 64-byte-aligned buffer of `count` floats plus `offset` floats in front (so `base + offset` is
    /// misaligned by `offset` floats), filled with NaN.
    final class Buffer {
        let raw: UnsafeMutableRawPointer
        let pointer: UnsafeMutablePointer<Float>
        let count: Int
        init(count: Int, offset: Int) {
            raw = .allocate(byteCount: (count + offset + 16) * 4, alignment: 64)
            let base = raw.bindMemory(to: Float.self, capacity: count + offset + 16)
            base.initialize(repeating: .nan, count: count + offset + 16)
            pointer = base + offset
            self.count = count
        }
        deinit { raw.deallocate() }
        var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
    }

    func randomArray(_ count: Int, seed: UInt64, low: Float, high: Float) -> [Float] {
        var g = RandomGenerator(seed: seed)
        return (0..<count).map { _ in low + (high - low) * g.nextUniform() }
    }

    func worstError(_ a: [Float], _ b: [Float], floor: Float) -> Float {
        var worst: Float = 0
        for i in a.indices {
            let e = abs(a[i] - b[i]) / max(abs(b[i]), floor)
            if e.isNaN || e > worst { worst = e.isNaN ? .infinity : e }
        }
        return worst
    }

    // Each check runs as two tests, 8 lanes everywhere and 16 lanes where AVX-512 runs (skipped elsewhere).
    @Test("GELU, 8 lanes") func geluAVX2() { geluPaths(wide: false) }
    @Test("GELU, 16 lanes", requiresAVX512) func geluAVX512() { geluPaths(wide: true) }
    @Test("softmax, 8 lanes") func softmaxAVX2() { softmaxPaths(wide: false) }
    @Test("softmax, 16 lanes", requiresAVX512) func softmaxAVX512() { softmaxPaths(wide: true) }
    @Test("layer norm, 8 lanes") func layerNormAVX2() { layerNormPaths(wide: false) }
    @Test("layer norm, 16 lanes", requiresAVX512) func layerNormAVX512() { layerNormPaths(wide: true) }

    /// GELU on one vector width, ordinary and streaming stores: equal to the scalar form bit for bit.
    func geluPaths(wide: Bool) {
        let wideKernel: WideUnaryKernel = { WideKernels.gelu(out: $0, x: $1, range: $2, streaming: $3) }
        withEachThreadCount { t in
            for count in [1, 15, 16, 17, 100, 2 * elementwiseGrain + 77] {
                let x = randomArray(count, seed: 41, low: -7, high: 7)
                var reference = [Float](repeating: 0, count: count)
                x.withUnsafeBufferPointer { xp in
                    reference.withUnsafeMutableBufferPointer { mapReference(GELUFunction.self, out: $0.baseAddress!, x: xp.baseAddress!, count: count) }
                }
                for streaming in [false, true] {
                    for offset in [0, 3] {
                        let out = Buffer(count: count, offset: offset)
                        x.withUnsafeBufferPointer { xp in
                            mapKernel(GELUFunction.self, out: out.pointer, x: xp.baseAddress!, count: count,
                                      streaming: streaming, wide: wide ? wideKernel : nil)
                        }
                        #expect(out.array == reference,
                                "GELU n \(count) wide \(wide) streaming \(streaming) offset \(offset), \(t) threads")
                    }
                }
            }
        }
    }

    /// Softmax rows on one vector width, ordinary and streaming stores, against the reference.
    func softmaxPaths(wide: Bool) {
        withEachThreadCount { t in
            for (rows, n) in [(3, 7), (5, 16), (4, 33), (9, 64), (70, 1024), (3, 1000)] {
                var x = randomArray(rows * n, seed: 42, low: -30, high: 30)
                if n >= 3 { x[n + 1] = -.infinity }   // a masked entry → probability 0
                var reference = [Float](repeating: 0, count: rows * n)
                x.withUnsafeBufferPointer { xp in
                    reference.withUnsafeMutableBufferPointer { softmaxForwardReference(y: $0.baseAddress!, x: xp.baseAddress!, rows: rows, n: n) }
                }
                for streaming in [false, true] {
                    for offset in [0, 5] {
                        let y = Buffer(count: rows * n, offset: offset)
                        x.withUnsafeBufferPointer { xp in
                            softmaxForward(y: y.pointer, x: xp.baseAddress!, rows: rows, n: n, streaming: streaming, wide: wide)
                        }
                        let context = "softmax [\(rows), \(n)] wide \(wide) streaming \(streaming) offset \(offset), \(t) threads"
                        #expect(worstError(y.array, reference, floor: 1e-6) < 2e-5, "\(context)")
                        if n >= 3 { #expect(y.array[n + 1] == 0, "\(context): masked entry") }
                    }
                }
            }
        }
    }

    /// Layer norm rows on one vector width, ordinary and streaming stores, against the reference.
    func layerNormPaths(wide: Bool) {
        withEachThreadCount { t in
            for (rows, n) in [(1, 1), (3, 7), (5, 16), (4, 33), (9, 64), (6, 127), (70, 1024)] {
                let x = randomArray(rows * n, seed: 43, low: 95, high: 105)   // offset mean: two-pass variance
                let gamma = randomArray(n, seed: 44, low: 0.5, high: 1.5), beta = randomArray(n, seed: 45, low: -1, high: 1)
                var yRef = [Float](repeating: 0, count: rows * n), meanRef = [Float](repeating: 0, count: rows), rstdRef = meanRef
                x.withUnsafeBufferPointer { xp in
                    gamma.withUnsafeBufferPointer { gp in
                        beta.withUnsafeBufferPointer { bp in
                            yRef.withUnsafeMutableBufferPointer { yp in
                                meanRef.withUnsafeMutableBufferPointer { mp in
                                    rstdRef.withUnsafeMutableBufferPointer { rp in
                                        layerNormForwardReference(y: yp.baseAddress!, mean: mp.baseAddress!, rstd: rp.baseAddress!, x: xp.baseAddress!,
                                                                  gamma: gp.baseAddress!, beta: bp.baseAddress!, rows: rows, n: n, epsilon: 1e-5)
                                    }
                                }
                            }
                        }
                    }
                }
                for streaming in [false, true] {
                    for offset in [0, 1] {
                        let y = Buffer(count: rows * n, offset: offset)
                        var mean = [Float](repeating: .nan, count: rows), rstd = mean
                        x.withUnsafeBufferPointer { xp in
                            gamma.withUnsafeBufferPointer { gp in
                                beta.withUnsafeBufferPointer { bp in
                                    mean.withUnsafeMutableBufferPointer { mp in
                                        rstd.withUnsafeMutableBufferPointer { rp in
                                            layerNormForward(y: y.pointer, mean: mp.baseAddress!, rstd: rp.baseAddress!, x: xp.baseAddress!,
                                                             gamma: gp.baseAddress!, beta: bp.baseAddress!, rows: rows, n: n, epsilon: 1e-5,
                                                             streaming: streaming, wide: wide)
                                        }
                                    }
                                }
                            }
                        }
                        let context = "layer norm [\(rows), \(n)] wide \(wide) streaming \(streaming) offset \(offset), \(t) threads"
                        #expect(worstError(y.array, yRef, floor: 1) < 5e-4, "\(context): y")
                        #expect(worstError(mean, meanRef, floor: 1e-3) < 1e-6, "\(context): mean")
                        #expect(worstError(rstd, rstdRef, floor: 1e-3) < 5e-4, "\(context): rstd")
                    }
                }
            }
        }
    }

    @Test("rows are streamed only when large and on cache-line boundaries")
    func rowStreamingNeedsLineAlignedRows() {
        let big = StreamingStores.thresholdBytes == .max ? 0 : StreamingStores.thresholdBytes / 4 / 1024
        let p = UnsafeMutablePointer<Float>(bitPattern: 1 << 20)!
        if big > 0 {
            #expect(StreamingStores.shouldStreamRows(p, rows: big, n: 1024))
            #expect(!StreamingStores.shouldStreamRows(p + 4, rows: big, n: 1024))
            #expect(!StreamingStores.shouldStreamRows(p, rows: big, n: 1000))
        }
        #expect(!StreamingStores.shouldStreamRows(p, rows: 4, n: 1024))
    }
}
