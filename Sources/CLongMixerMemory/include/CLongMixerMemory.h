// Memory-hierarchy helpers that Swift has no spelling for: non-temporal (streaming) stores, a store
// fence, a software prefetch and glibc's heap thresholds. Everything is `static inline` in this header, so Swift imports the
// functions and inlines them into its own loops (checked in the release binary's disassembly:
// `vmovntps` inside the kernels, no calls). The instructions chosen follow the *calling* module's
// target CPU: a 16-lane store from LongMixerWideKernels (built for AVX-512) is one `vmovntps zmm`;
// an 8-lane store from LongMixerCore (AVX2) is one `vmovntps ymm`; portable (SSE2) builds get
// `movntps xmm` pairs.
//
// A streaming store writes a whole cache line to memory without reading it first (an ordinary store
// to a line that is not cached reads it from DRAM: "write-allocate"), and does not leave it in the
// caches. Kernels use it only for outputs much larger than the last-level cache. Streaming stores
// are weakly ordered: every thread that issued them calls `lm_store_fence()` before its results are
// handed to another thread.
#ifndef CLONGMIXERMEMORY_H
#define CLONGMIXERMEMORY_H

typedef float lm_float8 __attribute__((ext_vector_type(8)));
typedef float lm_float16 __attribute__((ext_vector_type(16)));

/// Streaming store of 8 floats; `p` must be 32-byte aligned.
static inline __attribute__((always_inline)) void lm_stream8(float *p, lm_float8 v) {
    __builtin_nontemporal_store(v, (lm_float8 *)p);
}

/// Streaming store of 16 floats; `p` must be 64-byte aligned.
static inline __attribute__((always_inline)) void lm_stream16(float *p, lm_float16 v) {
    __builtin_nontemporal_store(v, (lm_float16 *)p);
}

/// Orders this thread's earlier streaming stores before its later stores (`sfence` on x86-64).
static inline __attribute__((always_inline)) void lm_store_fence(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_sfence();
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/// Prefetch of the cache line holding `p` into all cache levels, for reading.
static inline __attribute__((always_inline)) void lm_prefetch(const void *p) {
    __builtin_prefetch(p, 0, 3);
}

/// Fixes glibc's mmap threshold and heap trim threshold (instead of its adaptive ones), so freed blocks below
/// `mmap_threshold` stay in the heap for reuse unless more than `trim_threshold` bytes are free at its top.
/// No effect with a C library without these settings.
#if defined(__linux__)
#include <malloc.h>
#endif
static inline void lm_keep_heap(int mmap_threshold, int trim_threshold) {
#if defined(M_MMAP_THRESHOLD) && defined(M_TRIM_THRESHOLD)
    mallopt(M_MMAP_THRESHOLD, mmap_threshold);
    mallopt(M_TRIM_THRESHOLD, trim_threshold);
#else
    (void)mmap_threshold; (void)trim_threshold;
#endif
}

#endif
