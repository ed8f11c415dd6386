import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerData

/// Exact (O(N²)) softmax self-attention, the Transformer baseline of the PermuteFormer LRA code
/// (`cpcp1998/PermuteFormer`, `long_range_arena/models/bert_prenorm.py`, HF-BERT self-attention):
/// scores = QKᵀ/√Dh + (1 − mask)·(−10000), softmax over keys, dropout on the probabilities, ·V,
/// heads merged, then the output projection (`BertSelfOutput.dense`, here `output`).
/// Positions are the model's business (learned or sinusoidal absolute embeddings).
/// Without active attention dropout (probability 0, or eval mode) the attention runs as the fused
/// `scaledDotProductAttention` of LongMixerCore (no [B, H, N, N] tensor is kept); with it, unfused.
public class SoftmaxAttention: Module, SequenceMixer, ProjectedAttention {
    public let query: Linear
    public let key: Linear
    public let value: Linear
    public let output: Linear
    let attentionDropout: Dropout
    public let heads: Int
    public let dimensions: Int

    /// The additive bias of a masked key, as HF BERT's extended attention mask.
    public static let maskBias: Float = attentionMaskedKeyBias   // −10000, shared with the fused kernel

    /// Whether key j > query i is masked out (`CausalSoftmaxAttention`).
    var isCausal: Bool { false }

    /// [N, N] with −∞ above the diagonal (fairseq's future mask).
    static func causalBias(_ n: Int) -> Tensor {
        var t = Tensor(zeros: [n, n])
        t.withUnsafeMutablePointer { p in
            for i in 0..<n { for j in (i + 1)..<max(n, i + 1) { p[i * n + j] = -.infinity } }
        }
        return t
    }

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
        let scale = 1 / Float(dimensions / heads).squareRoot()
        if attentionDropout.probability == 0 || !attentionDropout.isTraining {
            // Fused kernel: never materialises the [B, H, N, N] scores or probabilities (O(N) memory per
            // head instead of O(N²)), recomputing them block by block in the backward pass.
            let q = splitHeads(query(x), heads: heads), k = splitHeads(key(x), heads: heads)
            let v = splitHeads(value(x), heads: heads)
            return output(mergeHeads(scaledDotProductAttention(queries: q, keys: k, values: v, keyMask: keyMask,
                                                               causal: isCausal, scale: scale)))
        }
        // Attention dropout in training: the unfused path. The fused backward recomputes the
        // probabilities from Q, K and the saved row statistics, and would need the forward's dropout mask
        // again; the unfused path keeps the dropped probabilities it multiplied V with.
        // 1/√Dh folded into Q (N·D multiplies instead of N²·H).
        let q = splitHeads(query(x) * scale, heads: heads)
        let k = splitHeads(key(x), heads: heads), v = splitHeads(value(x), heads: heads)
        var scores = matmul(q, k, transposeB: true)                                   // [B, H, N, N]
        if isCausal { scores = scores + Variable(Self.causalBias(n)) }
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

/// Causal softmax attention, the Transformer LM baseline of the PermuteFormer LM experiments
/// (`language_model/run_transformer.sh`: fairseq `transformer_lm`, scaled dot product, future mask
/// −∞, attention dropout 0). Generation keeps every past key and value (O(t) memory per layer),
/// unlike the O(1) state of the linear mixers.
public final class CausalSoftmaxAttention: SoftmaxAttention, CausalSequenceMixer {
    override var isCausal: Bool { true }

    public override func callAsFunction(_ x: Variable, keyMask: Tensor?) -> Variable {
        check(keyMask == nil, "CausalSoftmaxAttention: key padding masks are not supported by the causal mixer (pad at the end instead)")
        return super.callAsFunction(x, keyMask: nil)
    }

    public func makeState(batch: Int) -> CausalMixerState { .keyValueCache(keys: nil, values: nil) }

    public func step(_ x: Variable, position: Int, state: inout CausalMixerState) -> Variable {
        check(x.rank == 3 && x.shape[1] == 1 && x.shape[2] == dimensions,
              "CausalSoftmaxAttention.step: input must be [B, 1, \(dimensions)], got \(x.shape)")
        guard case .keyValueCache(let pastKeys, let pastValues) = state else {
            fatalError("CausalSoftmaxAttention.step: expected a key/value cache state, got \(state)")
        }
        let q = splitHeads(query(x) * (1 / Float(dimensions / heads).squareRoot()), heads: heads).value   // [B, H, 1, Dh]
        let k = splitHeads(key(x), heads: heads).value, v = splitHeads(value(x), heads: heads).value
        let keys = pastKeys.map { Tensor.concatenate([$0, k], axis: 2) } ?? k
        let values = pastValues.map { Tensor.concatenate([$0, v], axis: 2) } ?? v
        state = .keyValueCache(keys: keys, values: values)
        let probabilities = softmax(Variable(Tensor.matmul(q, keys, transposeB: true)), axis: -1)          // [B, H, 1, t]
        return output(mergeHeads(Variable(Tensor.matmul(probabilities.value, values))))
    }
}
