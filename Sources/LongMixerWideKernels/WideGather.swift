import CLongMixerGather

extension WideKernels {
    /// dst[i] = φ(base[index[i]]) for i < count, φ = ReLU + ε (`lm_gather_relu_epsilon`, compiled here
    /// with 16-lane gathers). index: [count], each in base's bounds; dst: [count]
    /// One call per row of LongMixerCore's PermuteFormer feature op (`reluFeatureHeadsForward`).
    @inline(never)
    public static func gatherReLUPlusEpsilon(dst: UnsafeMutablePointer<Float>, base: UnsafePointer<Float>, index: UnsafePointer<Int32>,
                                             count: Int, epsilon: Float) {
        lm_gather_relu_epsilon(dst, base, index, count, epsilon)
    }

    /// dst[i] += ReLU'(x[i]) · base[index[i]] for i < count (`lm_gather_relu_gradient_add`, 16 lanes).
    /// index: [count], each in base's bounds; dst, x: [count]
    @inline(never)
    public static func gatherReLUGradientAdd(dst: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, base: UnsafePointer<Float>,
                                             index: UnsafePointer<Int32>, count: Int) {
        lm_gather_relu_gradient_add(dst, x, base, index, count)
    }
}
