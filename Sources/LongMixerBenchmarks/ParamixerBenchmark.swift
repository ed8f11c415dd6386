import Foundation
import LongMixerModels
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerTraining

/// Timing of the Paramixer model and of its sparse-factor kernels (no CLI wiring here; a caller
/// prints or stores the rows). Times are the best of several runs after one warm-up, so they
/// estimate the undisturbed cost on a shared machine.
public enum ParamixerBenchmark {
    /// One model measurement: forward, and forward + loss + backward, per sequence.
    public struct ModelRow: Codable, Sendable {
        public var length: Int
        public var batch: Int
        public var factors: Int
        public var links: Int
        public var forwardSecondsPerSequence: Double
        public var forwardBackwardSecondsPerSequence: Double
        /// Peak bytes in live tensors during one training step on the batch (forward + loss +
        /// backward), including the parameters and their gradients.
        public var trainingStepPeakBytes: Int?
        /// Model FLOPs per sequence, forward (`Roofline.paramixerFlops`; a training step counts 3×).
        public var forwardFlops: Double?
    }

    /// One kernel measurement: the fused sparse-factor forward and backward (dW + dV) on [B, N, D].
    public struct KernelRow: Codable, Sendable {
        public var length: Int
        public var dimensions: Int
        public var links: Int
        public var batch: Int
        public var multiplyAdds: Int
        public var forwardSeconds: Double
        public var backwardSeconds: Double
        public var forwardNanosecondsPerMultiplyAdd: Double { forwardSeconds * 1e9 / Double(multiplyAdds) }
        /// Forward + backward (the backward does two multiply-adds per forward one).
        public var forwardBackwardNanosecondsPerMultiplyAdd: Double { (forwardSeconds + backwardSeconds) * 1e9 / Double(multiplyAdds) }
    }

    /// Best wall time of `body` over repetitions (one warm-up; at least `minimumRepetitions`, and
    /// more until `minimumSeconds` of measured time).
    public static func bestTime(minimumRepetitions: Int = 3, minimumSeconds: Double = 0.3, _ body: () throws -> Void) rethrows -> Double {
        try body()
        var best = Double.infinity, total = 0.0, runs = 0
        while runs < minimumRepetitions || total < minimumSeconds {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            best = min(best, seconds)
            total += seconds
            runs += 1
        }
        return best
    }

    /// Paramixer (D = `embeddingSize`, H = `hiddenSize`, CHORD, FLATTEN, `blocks` blocks, 10 classes)
    /// on random tokens, for each N in `lengths`; the batch holds about `tokensPerBatch` tokens.
    public static func model(lengths: [Int] = (7...16).map { 1 << $0 }, embeddingSize: Int = 32, hiddenSize: Int = 32,
                             blocks: Int = 1, linkProtocol: LinkProtocol = .chord, tokensPerBatch: Int = 1 << 15,
                             seed: UInt64 = 42) throws -> [ModelRow] {
        var rows: [ModelRow] = []
        var generator = RandomGenerator(seed: seed)
        for n in lengths {
            let configuration = ParamixerConfiguration(vocabularySize: 16, length: n, embeddingSize: embeddingSize, hiddenSize: hiddenSize,
                                                       blocks: blocks, linkProtocol: linkProtocol, outputCount: 10)
            let model = try Paramixer(configuration: configuration, generator: &generator)
            let batch = max(1, tokensPerBatch / n)
            var ids = IntTensor(zeros: [batch, n])
            for i in 0..<ids.count { ids.scalars[i] = Int32(generator.nextInt(below: 16)) }
            let targets = IntTensor((0..<batch).map { _ in generator.nextInt(below: 10) })
            let input = SequenceInput.tokens(ids)
            let forward = withoutGradient { bestTime { _ = model(input) } }
            let forwardBackward = try bestTime {
                model.zeroGradients()
                try crossEntropy(logits: model(input), targets: targets).backward()
            }
            model.zeroGradients()
            TensorMemory.resetPeak()
            try crossEntropy(logits: model(input), targets: targets).backward()
            let peak: Int? = TensorMemory.peakBytes
            model.zeroGradients()
            rows.append(ModelRow(length: n, batch: batch, factors: model.factorCount, links: model.linkCount,
                                 forwardSecondsPerSequence: forward / Double(batch),
                                 forwardBackwardSecondsPerSequence: forwardBackward / Double(batch),
                                 trainingStepPeakBytes: peak,
                                 forwardFlops: Roofline.paramixerFlops(configuration, factors: model.factorCount,
                                                                       links: model.linkCount).forward))
        }
        return rows
    }

    /// The fused kernels alone on random data, with CHORD offsets for N.
    public static func kernel(length n: Int, dimensions d: Int, batch: Int = 1, seed: UInt64 = 7) throws -> KernelRow {
        let offsets = try LinkProtocols.offsets(.chord, length: n, factor: 0)
        let l = offsets.count
        var generator = RandomGenerator(seed: seed)
        let w = Tensor.normal([batch, n, l], generator: &generator)
        let v = Tensor.normal([batch, n, d], generator: &generator)
        let g = Tensor.normal([batch, n, d], generator: &generator)
        var out = Tensor(zeros: [batch, n, d]), dW = Tensor(zeros: [batch, n, l]), dV = Tensor(zeros: [batch, n, d])
        let forward = offsets.withUnsafeBufferPointer { off in
            out.withUnsafeMutablePointer { o in
                bestTime {
                    sparseFactorForward(out: o, weights: w.pointer, values: v.pointer, offsets: off.baseAddress!,
                                        batch: batch, length: n, links: l, dimensions: d)
                }
            }
        }
        let backward = offsets.withUnsafeBufferPointer { off in
            dW.withUnsafeMutablePointer { dw in
                dV.withUnsafeMutablePointer { dv in
                    bestTime {
                        sparseFactorBackward(dWeights: dw, dValues: dv, dOut: g.pointer, weights: w.pointer, values: v.pointer,
                                             offsets: off.baseAddress!, batch: batch, length: n, links: l, dimensions: d)
                    }
                }
            }
        }
        return KernelRow(length: n, dimensions: d, links: l, batch: batch, multiplyAdds: batch * n * l * d,
                         forwardSeconds: forward, backwardSeconds: backward)
    }

    /// Least-squares slope of log(y) against log(x): the growth exponent of y ∝ x^k.
    public static func growthExponent(_ points: [(x: Double, y: Double)]) -> Double? {
        let valid = points.filter { $0.x > 0 && $0.y > 0 }
        guard valid.count >= 2 else { return nil }
        let lx = valid.map { Foundation.log($0.x) }, ly = valid.map { Foundation.log($0.y) }
        let mx = lx.reduce(0, +) / Double(lx.count), my = ly.reduce(0, +) / Double(ly.count)
        var sxy = 0.0, sxx = 0.0
        for (a, b) in zip(lx, ly) { sxy += (a - mx) * (b - my); sxx += (a - mx) * (a - mx) }
        return sxx > 0 ? sxy / sxx : nil
    }
}
