import Foundation
import Testing
import LongMixerTraining
@testable import LongMixerModels
import LongMixerCore
import LongMixerNN
import LongMixerData

/// Opt-in end-to-end learning checks (`LONGMIXER_SLOW_TESTS=1 swift test --filter Slow`): the
/// attention models actually learn small order-sensitive tasks with Adam.
@Suite("SlowAttentionLearning", .enabled(if: ProcessInfo.processInfo.environment["LONGMIXER_SLOW_TESTS"] == "1"))
struct SlowAttentionLearningTests {
    /// [CLS] a b c … [SEP]; label 1 iff a > b. Needs positions (a bag of tokens cannot tell a from b).
    static func orderBatch(_ size: Int, generator: inout RandomGenerator) -> (IntTensor, IntTensor) {
        var ids: [Int32] = [], labels: [Int32] = []
        for _ in 0..<size {
            var row = [Int32(1)]
            for _ in 0..<6 { row.append(Int32(3 + generator.nextInt(below: 10))) }
            while row[1] == row[2] { row[2] = Int32(3 + generator.nextInt(below: 10)) }
            row.append(2)
            ids += row
            labels.append(row[1] > row[2] ? 1 : 0)
        }
        return (IntTensor(shape: [size, 8], scalars: ids), IntTensor(shape: [size], scalars: labels))
    }

    @Test("encoders learn an order-sensitive comparison (PermuteFormer 1D, softmax, RoPE)",
          arguments: [MixerKind.permuteFormer, .softmax, .ropePerformer])
    func encoderLearnsOrder(kind: MixerKind) throws {
        let c = EncoderConfiguration(vocabularySize: 13, dimensions: 32, heads: 2, layers: 2, feedForwardDimensions: 64, dropout: 0,
                                     mixer: MixerConfiguration(kind: kind), maxPositions: 16, head: .classification, classes: 2)
        var g = RandomGenerator(seed: 7)
        let model = try EncoderClassifier(configuration: c, generator: &g)
        let optimizer = Adam(parameters: model.parameters(), learningRate: 2e-3)
        var data = RandomGenerator(seed: 8)
        for _ in 0..<400 {
            let (ids, labels) = Self.orderBatch(32, generator: &data)
            optimizer.zeroGradients()
            try crossEntropy(logits: model(.tokens(ids)), targets: labels).backward()
            optimizer.step()
        }
        model.eval()
        let (ids, labels) = Self.orderBatch(256, generator: &data)
        let logits = model(.tokens(ids)).value
        var correct = 0
        for r in 0..<256 where (logits[flat: 2 * r + 1] > logits[flat: 2 * r] ? 1 : 0) == labels.scalars[r] { correct += 1 }
        #expect(Double(correct) / 256 > 0.9, "\(kind): accuracy \(Double(correct) / 256)")
    }

    @Test("the causal PermuteFormer LM learns a periodic byte pattern and generation continues it")
    func languageModelLearnsPattern() throws {
        var c = try LanguageModelConfiguration.preset("tiny")
        c.dropout = 0
        var g = RandomGenerator(seed: 9)
        let model = try CausalLanguageModel(configuration: c, generator: &g)
        let optimizer = Adam(parameters: model.parameters(), learningRate: 3e-3)
        let pattern = Array("abcde".utf8).map { Int32($0) + 3 }
        var data = RandomGenerator(seed: 10)
        var last: Float = .infinity
        for _ in 0..<250 {
            var ids: [Int32] = []
            for _ in 0..<8 {
                let offset = data.nextInt(below: 5)
                ids += [1] + (0..<23).map { pattern[($0 + offset) % 5] }
            }
            optimizer.zeroGradients()
            let batch = IntTensor(shape: [8, 24], scalars: ids)
            let loss = try model.objective.nextTokenLoss(logits: model(batch), ids: batch)
            try loss.backward()
            optimizer.step()
            last = loss.value.scalar
        }
        #expect(last < 0.3, "final training loss \(last)")
        model.eval()
        var sampler = RandomGenerator(seed: 11)
        let continuation = model.generate(prompt: ByteVocabulary.encode("cdeab"), count: 10, temperature: 0, generator: &sampler)
        #expect(ByteVocabulary.decode(continuation) == "cdeabcdeab")
    }
}
