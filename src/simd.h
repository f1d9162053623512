// Wider vectors where the CPU has them, with the same bits as the portable build.
//
// The module is compiled for baseline x86-64 (SSE2, four floats a vector) so that it runs on
// any x86-64 CPU. A kernel whose cost is arithmetic rather than memory (the softmax loss's e^x
// over a 10,000-way output) can also be compiled for AVX2 (eight floats): the kernel's body is
// a template written once, called a second time from a function marked NEEDLE_TARGET_AVX2,
// which inlines everything it calls (flatten) so that the whole body is compiled for AVX2,
// and the caller picks the instance with use_avx2(). Every operation is
// still one IEEE operation on one element in the same order (no FMA: the build disables
// contraction, and sums keep lane_sum's explicit order), so both instances give the same bits;
// tests compare them through set_vector_width.
#pragma once

#include <atomic>

namespace needle {

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define NEEDLE_HAS_AVX2_PATH 1
#define NEEDLE_TARGET_AVX2 __attribute__((target("avx2"), flatten))
#else
#define NEEDLE_HAS_AVX2_PATH 0
#define NEEDLE_TARGET_AVX2
#endif

/// True when this CPU runs AVX2 instructions.
inline bool cpu_has_avx2() {
#if NEEDLE_HAS_AVX2_PATH
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

/// The switch between the two instances: on where the CPU allows, unless turned off.
inline std::atomic<bool>& avx2_enabled() {
  static std::atomic<bool> enabled{cpu_has_avx2()};
  return enabled;
}

/// Whether kernels with an AVX2 instance use it now.
inline bool use_avx2() { return avx2_enabled().load(std::memory_order_relaxed); }

/// Widest float vector the kernels use, in bits: 256 (AVX2) or 128 (the portable build).
/// Asking for 256 on a CPU without AVX2 keeps 128.
inline int set_vector_width(int bits) {
  avx2_enabled().store(bits >= 256 && cpu_has_avx2(), std::memory_order_relaxed);
  return use_avx2() ? 256 : 128;
}

}  // namespace needle
