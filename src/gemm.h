// Matrix products on needle's threads: NumPy's own BLAS, called directly, one row block per
// chunk of parallel_for.
//
// Why not let the BLAS thread itself: OpenBLAS partitions a product statically over its
// threads, which spin while they wait. On a busy machine one descheduled thread stalls the
// whole product, and between products its spinning threads took the cores from needle's
// kernels (a Transformer step ran 3.4x slower at the default thread count than on one thread
// beside one other busy process). Called on needle's pool instead — the BLAS itself on one
// thread — a product is row blocks claimed one at a time, and the caller never waits for a
// thread the system has not scheduled. The blocks are fixed by the sizes alone, so a product
// has the same bits at any thread count.
//
// The BLAS is NumPy's (found and handed over by needle.backends.threads): the CBLAS
// ?gemm of its ILP64 OpenBLAS, whose integers are 64-bit. Without it, products go through
// numpy.matmul as before.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <type_traits>

#include "parallel.h"

namespace needle {

/// How a product is cut into blocks, by its sizes and this machine's CPU count (never by the
/// thread count in use, so the bits never depend on it): at least kGemmGrain multiply-adds
/// and kGemmMinWidth rows or columns per block, at most gemm_max_blocks() blocks. Each block
/// costs a BLAS call that repacks the other operand and runs shorter panels: on the products
/// of the 512-wide MLP ResNet (1000 rows), 2 blocks took 2-3% longer than one call, 4 blocks
/// 5%, 16 blocks 18%.
constexpr int64_t kGemmGrain = int64_t{1} << 20;
constexpr int64_t kGemmMinWidth = 64;

/// One block per CPU, up to 16.
inline int64_t gemm_max_blocks() {
  static const int64_t blocks =
      std::clamp<int64_t>(static_cast<int64_t>(std::thread::hardware_concurrency()), 1, 16);
  return blocks;
}

/// The width of a product's blocks along an axis of `size`, for `work` multiply-adds in all.
inline int64_t gemm_block(int64_t size, int64_t work) {
  const int64_t blocks = std::clamp<int64_t>(work / kGemmGrain, 1, gemm_max_blocks());
  return std::max(kGemmMinWidth, (size + blocks - 1) / blocks);
}

enum CblasConstants : int { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };

template <typename T>
using Gemm = void (*)(int order, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                      const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

/// The BLAS's sgemm and dgemm, or null until set.
struct BlasGemm {
  Gemm<float> sgemm = nullptr;
  Gemm<double> dgemm = nullptr;

  template <typename T>
  Gemm<T> get() const {
    if constexpr (std::is_same_v<T, float>) {
      return sgemm;
    } else {
      return dgemm;
    }
  }
};

inline BlasGemm& blas_gemm() {
  static BlasGemm gemm;
  return gemm;
}

/// A 2-D operand as the BLAS reads it: its transpose flag and leading dimension, given its
/// element strides; false when neither a row-major nor a column-major layout fits.
inline bool blas_layout(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
                        int* trans, int64_t* ld) {
  if (col_stride == 1 && row_stride >= std::max<int64_t>(1, cols)) {
    *trans = kNoTrans;
    *ld = row_stride;
    return true;
  }
  if (row_stride == 1 && col_stride >= std::max<int64_t>(1, rows)) {
    *trans = kTrans;
    *ld = col_stride;
    return true;
  }
  return false;
}

/// c (m, p, compact) = a (m, n) @ b (n, p) for strided a and b, in row blocks on needle's
/// threads; false (nothing written) when there is no BLAS or a layout the BLAS cannot read.
/// Every size must be >= 1.
template <typename T>
bool gemm(const T* a, int64_t a_rs, int64_t a_cs, const T* b, int64_t b_rs, int64_t b_cs, T* c,
          int64_t m, int64_t n, int64_t p) {
  const Gemm<T> call = blas_gemm().get<T>();
  int trans_a, trans_b;
  int64_t lda, ldb;
  if (call == nullptr || !blas_layout(m, n, a_rs, a_cs, &trans_a, &lda) ||
      !blas_layout(n, p, b_rs, b_cs, &trans_b, &ldb)) {
    return false;
  }
  // One BLAS call per block, whichever thread runs it (parallel_for hands a thread whole
  // chunks, several at once when it runs alone): the blocks decide the bits. Blocks of rows
  // of a (each call repacks b) or of columns of b (each call repacks a), whichever operand
  // is the cheaper to repack.
  const int64_t work = m * n * p;
  if (m * n > n * p) {
    const int64_t rows = gemm_block(m, work);
    parallel_for(m, rows, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; r += rows) {
        call(kRowMajor, trans_a, trans_b, std::min(rows, last - r), p, n, T(1), a + r * a_rs, lda,
             b, ldb, T(0), c + r * p, p);
      }
    });
  } else {
    const int64_t cols = gemm_block(p, work);
    parallel_for(p, cols, [&](int64_t first, int64_t last) {
      for (int64_t j = first; j < last; j += cols) {
        call(kRowMajor, trans_a, trans_b, m, std::min(cols, last - j), n, T(1), a, lda,
             b + j * b_cs, ldb, T(0), c + j, p);
      }
    });
  }
  return true;
}

}  // namespace needle
