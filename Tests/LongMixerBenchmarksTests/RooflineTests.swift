import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels
import LongMixerBenchmarks

/// The FLOP counts behind the roofline columns of `bench attention` and `bench paramixer`, written out
/// multiply-add by multiply-add on small shapes.
@Suite("Roofline FLOP counts")
struct RooflineTests {
    /// D 8, 2 heads (Dh 4), FFN 16, N 5, binary head.
    func encoder(_ kind: MixerKind, featureMultiplier: Int? = nil, randomFeatures: Int? = nil, layers: Int = 1) -> EncoderConfiguration {
        EncoderConfiguration(dimensions: 8, heads: 2, layers: layers, feedForwardDimensions: 16,
                             mixer: MixerConfiguration(kind: kind, featureMultiplier: featureMultiplier, randomFeatures: randomFeatures),
                             head: .binary, classes: 1)
    }

    @Test func softmaxEncoder() {
        let n: Double = 5
        let projections: Double = 4 * (2 * n * 8 * 8)          // Q, K, V, output: [5, 8]·[8, 8]
        let attention: Double = 2 * (2 * n * n * 4 + 2 * n * n * 4)   // per head Q·Kᵀ [5, 4]·[4, 5] and P·V [5, 5]·[5, 4]
        let ffn: Double = 2 * n * 8 * 16 + 2 * n * 16 * 8
        let poolerAndHead: Double = 2 * 8 * 8 + 2 * 8
        let flops = Roofline.encoderFlops(encoder(.softmax), length: 5)
        #expect(flops.forward == projections + attention + ffn + poolerAndHead)
        #expect(flops.training == 3 * flops.forward)
        // Layers add their blocks only.
        let two = Roofline.encoderFlops(encoder(.softmax, layers: 2), length: 5)
        #expect(two.forward == 2 * (projections + attention + ffn) + poolerAndHead)
    }

    @Test func performerEncoder() {
        let n: Double = 5, f: Double = 8                       // 2 × Dh features per head
        let projections: Double = 2 * (2 * n * 8 * 16) + 2 * (2 * n * 8 * 8)   // Q, K to 2·D; V, output
        let attention: Double = 2 * (2 * n * f * 5 + 2 * n * f * 5)   // per head Kᵀ·[V | 1] and Q·(Kᵀ[V | 1]), 4 + 1 columns
        let ffn: Double = 2 * n * 8 * 16 + 2 * n * 16 * 8
        let poolerAndHead: Double = 2 * 8 * 8 + 2 * 8
        let flops = Roofline.encoderFlops(encoder(.performer, featureMultiplier: 2), length: 5)
        #expect(flops.forward == projections + attention + ffn + poolerAndHead)
        // PermuteFormer and RoPE count the same products.
        #expect(Roofline.encoderFlops(encoder(.permuteFormer, featureMultiplier: 2), length: 5) == flops)
        #expect(Roofline.encoderFlops(encoder(.ropePerformer, featureMultiplier: 2), length: 5) == flops)
    }

    @Test func favorEncoder() {
        let n: Double = 5, f: Double = 4, m: Double = 3        // F = Dh, 3 random features
        let projections: Double = 4 * (2 * n * 8 * 8)
        let features: Double = 2 * (2 * (2 * n * f * m))       // per head Ω·x' for queries and keys
        let attention: Double = 2 * (4 * n * m * 5)
        let ffn: Double = 2 * n * 8 * 16 + 2 * n * 16 * 8
        let poolerAndHead: Double = 2 * 8 * 8 + 2 * 8
        let flops = Roofline.encoderFlops(encoder(.favor, randomFeatures: 3), length: 5)
        #expect(flops.forward == projections + features + attention + ffn + poolerAndHead)
    }

    @Test func paramixer() {
        let c = ParamixerConfiguration(vocabularySize: 16, length: 8, embeddingSize: 4, hiddenSize: 6, blocks: 2, outputCount: 3)
        // 3 factors of 2 links: per block g (4 → 6 → 4) and per factor f (4 → 6 → 2) + sparse product.
        let g: Double = 2 * 8 * 4 * 6 + 2 * 8 * 6 * 4
        let factorMLP: Double = 2 * 8 * 4 * 6 + 2 * 8 * 6 * 2
        let factor: Double = factorMLP + 2 * 8 * 2 * 4
        let head: Double = 2 * (8 * 4) * 3
        let flops = Roofline.paramixerFlops(c, factors: 3, links: 2)
        #expect(flops.forward == 2 * (g + 3 * factor) + head)
        #expect(flops.training == 3 * flops.forward)
    }

    @Test func percentIsBoundOverMeasured() throws {
        // 2 GFLOP at 100 GFLOP/s = 20 ms; measured 40 ms → 50 %.
        #expect(try #require(Roofline.percent(flops: 2e9, gflops: 100, seconds: 0.04)) == 50)
        #expect(Roofline.percent(flops: 2e9, gflops: 100, seconds: nil) == nil)
    }
}
