// Vector gathers (`vgatherdps`), which Swift has no spelling for, fused with ReLU + ε and its gradient,
// and the cycle rotations of the PermuteFormer feature permutation that feed them
// (LongMixerCore/Kernels/PermutationKernels.swift, `reluFeatureHeadsForward/Backward`).
// As in CLongMixerMemory.h, everything is `static inline` and the instructions follow the *calling*
// module's target CPU: 16 lanes (zmm) from LongMixerWideKernels (AVX-512), 8 lanes (ymm) from
// LongMixerCore (AVX2), scalar loops in portable (SSE2) builds.
#ifndef CLONGMIXERGATHER_H
#define CLONGMIXERGATHER_H

#include <stdint.h>

/// How far (in 32-bit words) `lm_rotate_cycles` may read past the end of its source row and write past
/// the end of its destination row (its copies move whole 8-lane vectors): callers pad both by this much.
#define LM_GATHER_PAD 8

// 8 lanes of 32 bits; may_alias: the same copies move int32 indices and float gradients.
typedef int32_t lm_word8v __attribute__((__vector_size__(32), __aligned__(4), __may_alias__));

/// dst[i] = src[i] for i < n 32-bit words, in whole 8-lane vectors: also reads src and writes dst up
/// to round-up(n, 8). dst must not overlap src.
static inline __attribute__((always_inline)) void lm_copy_words(void *dst, const void *src, long n) {
    for (long i = 0; i < n; i += 8) *(lm_word8v *)((int32_t *)dst + i) = *(const lm_word8v *)((const int32_t *)src + i);
}

/// Rotates a row of 32-bit words along cycles: for each cycle [start, end) (ends in `cycle_ends`, the
/// first starting at 0) of length ℓ with shift = shifts[c] (0 ≤ shift < ℓ),
///   dst[start + i] = src[start + (i + shift) mod ℓ]   (backward = 0),
///   dst[start + i] = src[start + (i − shift) mod ℓ]   (backward ≠ 0),
/// as two contiguous copies per cycle. Reads src and writes dst up to LM_GATHER_PAD − 1 words past the last
/// end, so both are padded.
static inline __attribute__((always_inline)) void lm_rotate_cycles(void *dst, const void *src, const int32_t *cycle_ends,
                                                                   const int32_t *shifts, long cycles, int backward) {
    int32_t *d = (int32_t *)dst;
    const int32_t *s = (const int32_t *)src;
    long start = 0;
    for (long c = 0; c < cycles; c++) {
        long end = cycle_ends[c], shift = shifts[c];
        if (backward && shift != 0) shift = end - start - shift;
        // Increasing destinations, so each copy overwrites the previous one's overshoot.
        lm_copy_words(d + start, s + start + shift, end - start - shift);
        if (shift != 0) lm_copy_words(d + end - shift, s + start, shift);
        start = end;
    }
}

#if defined(__AVX512F__)
typedef float lm_gather_vf __attribute__((__vector_size__(64), __aligned__(4)));
typedef int32_t lm_gather_vi __attribute__((__vector_size__(64), __aligned__(4)));
#define LM_GATHER_LANES 16
static inline __attribute__((always_inline)) lm_gather_vf lm_gather_vector(const float *base, const int32_t *index) {
    return __builtin_ia32_gathersiv16sf((lm_gather_vf){0}, base, *(const lm_gather_vi *)index, (unsigned short)0xFFFF, 4);
}
#elif defined(__AVX2__)
typedef float lm_gather_vf __attribute__((__vector_size__(32), __aligned__(4)));
typedef int32_t lm_gather_vi __attribute__((__vector_size__(32), __aligned__(4)));
#define LM_GATHER_LANES 8
static inline __attribute__((always_inline)) lm_gather_vf lm_gather_vector(const float *base, const int32_t *index) {
    const lm_gather_vi all = {-1, -1, -1, -1, -1, -1, -1, -1};
    return __builtin_ia32_gatherd_ps256((lm_gather_vf){0}, base, *(const lm_gather_vi *)index, (lm_gather_vf)all, 4);
}
#endif

/// dst[i] = φ(base[index[i]]) for i < n, φ(v) = (v < 0 ? +0 : v) + ε: bitwise LongMixerCore's ReLU
/// followed by + ε (NaN stays NaN, −0 gives ε). Reads index[0 ..< n] and writes dst[0 ..< n] only.
static inline __attribute__((always_inline)) void lm_gather_relu_epsilon(float *dst, const float *base, const int32_t *index,
                                                                         long n, float epsilon) {
    long i = 0;
#if defined(LM_GATHER_LANES)
    for (; i + LM_GATHER_LANES <= n; i += LM_GATHER_LANES) {
        lm_gather_vf v = lm_gather_vector(base, index + i);
        lm_gather_vi negative = v < 0;
        *(lm_gather_vf *)(dst + i) = (lm_gather_vf)((lm_gather_vi)v & ~negative) + epsilon;
    }
#endif
    for (; i < n; i++) {
        float v = base[index[i]];
        dst[i] = (v < 0 ? 0.0f : v) + epsilon;
    }
}

/// dst[i] += ReLU'(x[i]) · base[index[i]] for i < n: bitwise LongMixerCore's ReLU gradient on rows of
/// n floats, whose 8-lane part (i < n − n mod 8) passes the gradient where !(x ≤ 0) (so for NaN x) and
/// whose scalar tail where x > 0. Reads index[0 ..< n] and writes dst[0 ..< n] only.
static inline __attribute__((always_inline)) void lm_gather_relu_gradient_add(float *dst, const float *x, const float *base,
                                                                              const int32_t *index, long n) {
    long i = 0;
#if defined(LM_GATHER_LANES)
    for (; i + LM_GATHER_LANES <= n; i += LM_GATHER_LANES) {
        lm_gather_vf g = lm_gather_vector(base, index + i);
        lm_gather_vi inactive = *(const lm_gather_vf *)(x + i) <= 0;
        *(lm_gather_vf *)(dst + i) = *(const lm_gather_vf *)(dst + i) + (lm_gather_vf)((lm_gather_vi)g & ~inactive);
    }
#endif
    long vectorEnd = n - n % 8;
    for (; i < vectorEnd; i++) { float g = base[index[i]]; dst[i] += x[i] <= 0 ? 0.0f : g; }
    for (; i < n; i++) { float g = base[index[i]]; dst[i] += x[i] > 0 ? g : 0.0f; }
}

#endif
