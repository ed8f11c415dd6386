import Foundation

/// Exact (O(N²)) softmax self-attention, the Transformer baseline of the PermuteFormer LRA code
/// (`cpcp1998/PermuteFormer`, `long_range_arena/models/bert_prenorm.py`, HF-BERT self-attention):
/// scores = QKᵀ/√Dh + (1 − mask)·(−10000), softmax over keys, dropout on the probabilities, ·V,
/// heads merged, then the output projection (`BertSelfOutput.dense`, here `output`).
/// Positions are the model's business (learned or sinusoidal absolute embeddings).
public final class SoftmaxAttention: Module, SequenceMixer {
    public let query: Linear
    public let key: Linear
    public let value: Linear
    public let output: Linear
    let attentionDropout: Dropout
    public let heads: Int
    public let dimensions: Int

    /// The additive bias of a masked key, as HF BERT's extended attention mask.
    public static let maskBias: Float = -10000

    public init(dimensions: Int, heads: Int, attentionDropout: Float = 0, generator: inout RandomGenerator) {
        checkHeads(dimensions: dimensions, heads: heads, name: "SoftmaxAttention")
        query = referenceLinear(dimensions, dimensions, generator: &generator)
        key = referenceLinear(dimensions, dimensions, generator: &generator)
        value = referenceLinear(dimensions, dimensions, generator: &generator)
        output = referenceLinear(dimensions, dimensions, generator: &generator)
        self.attentionDropout = Dropout(probability: attentionDropout, generator: &generator)
        self.heads = heads
        self.dimensions = dimensions
    }

    public func callAsFunction(_ x: Variable, keyMask: Tensor?) -> Variable {
        checkMixerInput(x, keyMask: keyMask, dimensions: dimensions, name: "SoftmaxAttention")
        let b = x.shape[0], n = x.shape[1]
        // 1/√Dh folded into Q (N·D multiplies instead of N²·H).
        let q = splitHeads(query(x) * (1 / Float(dimensions / heads).squareRoot()), heads: heads)
        let k = splitHeads(key(x), heads: heads), v = splitHeads(value(x), heads: heads)
        var scores = matmul(q, k, transposeB: true)                                   // [B, H, N, N]
        if let keyMask {
            var bias = Tensor(uninitializedShape: [b, 1, 1, n])
            let count = b * n
            bias.withUnsafeMutablePointer { p in
                for i in 0..<count { p[i] = (1 - keyMask.pointer[i]) * Self.maskBias }
            }
            scores = scores + Variable(bias)
        }
        let probabilities = attentionDropout(softmax(scores, axis: -1))
        return output(mergeHeads(matmul(probabilities, v)))
    }
}
