// Kernels of needle's CPU backend: plain C++ over raw buffers that trusts its inputs.
//
// Everything here is a template over the element type T. The strided kernels, the elementwise
// add, mul, maximum and comparisons and the reductions also serve int32_t, int64_t and bool; the
// rest is only ever built for float and double. The binding layer
// (ndarray_backend_cpu.cc) validates sizes, dtypes and strided ranges before calling in, so no
// function below checks anything.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "parallel.h"
#include "simd.h"

namespace needle {

/// The most dimensions a strided view may have (the spec asks for at least 8).
constexpr int kMaxDims = 16;

/// A validated strided view: element idx lives at offset + Σ idx[d]·strides[d].
struct Layout {
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> strides{};
  int64_t offset = 0;
  int64_t size = 1;  // prod(shape); 1 for a 0-d view
};

/// Returns `v` with size-1 dimensions dropped and neighbours that step like one dimension
/// merged (strides[d] == strides[d+1]·shape[d+1]). Row-major order is unchanged, and the inner
/// loop of `walk` gets longer (a compact view becomes a single run).
inline Layout collapse(const Layout& v) {
  Layout c;
  c.offset = v.offset;
  c.size = v.size;
  for (int d = 0; d < v.ndim; ++d) {
    if (v.shape[d] == 1) continue;
    bool merges = c.ndim > 0 && c.strides[c.ndim - 1] == v.strides[d] * v.shape[d];
    if (merges) {
      c.shape[c.ndim - 1] *= v.shape[d];
      c.strides[c.ndim - 1] = v.strides[d];
    } else {
      c.shape[c.ndim] = v.shape[d];
      c.strides[c.ndim] = v.strides[d];
      ++c.ndim;
    }
  }
  return c;
}

template <typename Visit>
void walk_rows(const Layout& v, int64_t first, int64_t last, Visit& visit);

/// THE strided walker: calls visit(k, pos) for every element of `v`, k counting in row-major
/// order and pos = offset + Σ idx·strides. compact, ewise_setitem, ewise_add_setitem,
/// scalar_setitem and to_numpy are all this walk with a one-line visitor. With `parallel`,
/// chunks of inner rows run on several threads, each element visited once: only for visitors
/// that write to element k alone, or to positions that are all distinct.
template <typename Visit>
void walk(const Layout& view, Visit visit, bool parallel) {
  if (view.size == 0) return;
  const Layout v = collapse(view);
  if (v.ndim == 0) {  // a single element
    visit(int64_t{0}, v.offset);
    return;
  }
  // Chunks of whole inner rows, so every row is one vectorisable loop.
  const int64_t row = v.shape[v.ndim - 1];
  const int64_t rows_per_chunk = parallel ? std::max<int64_t>(1, kGrain / row) : v.size / row;
  parallel_for(v.size / row, rows_per_chunk,
               [&](int64_t first, int64_t last) { walk_rows(v, first, last, visit); });
}

/// True when no two elements of the view share a position, so writes to them can run in
/// parallel: sorted by |stride|, each dimension steps past everything the smaller ones span.
inline bool distinct_positions(const Layout& v) {
  std::array<std::pair<int64_t, int64_t>, kMaxDims> dims{};  // (|stride|, size)
  int count = 0;
  for (int d = 0; d < v.ndim; ++d) {
    if (v.shape[d] > 1)
      dims[count++] = {v.strides[d] < 0 ? -v.strides[d] : v.strides[d], v.shape[d]};
  }
  std::sort(dims.begin(), dims.begin() + count);
  int64_t span = 1;
  for (int i = 0; i < count; ++i) {
    if (dims[i].first < span) return false;
    span = dims[i].first * dims[i].second;
  }
  return true;
}

/// walk's visits for the inner rows [first, last) of the collapsed view v (ndim >= 1).
template <typename Visit>
void walk_rows(const Layout& v, int64_t first, int64_t last, Visit& visit) {
  const int inner = v.ndim - 1;
  const int64_t n = v.shape[inner], step = v.strides[inner];
  std::array<int64_t, kMaxDims> idx{};  // counter over the outer dimensions, at row `first`
  int64_t base = v.offset;
  for (int64_t d = inner - 1, rest = first; d >= 0; --d) {
    idx[d] = rest % v.shape[d];
    rest /= v.shape[d];
    base += idx[d] * v.strides[d];
  }
  for (int64_t r = first; r < last; ++r) {
    const int64_t k = r * n;
    // The unit-stride case is split off so the compiler emits a plain (vectorisable) copy.
    if (step == 1) {
      for (int64_t i = 0; i < n; ++i) visit(k + i, base + i);
    } else {
      for (int64_t i = 0; i < n; ++i) visit(k + i, base + i * step);
    }
    for (int d = inner - 1; d >= 0; --d) {  // odometer increment, innermost outer dim first
      base += v.strides[d];
      if (++idx[d] < v.shape[d]) break;
      base -= v.strides[d] * v.shape[d];
      idx[d] = 0;
    }
  }
}

// ---- the strided kernels -------------------------------------------------------------------

/// out[k] = a[pos_k]: gather the view of `a` into compact `out`.
template <typename T>
void compact(const T* a, T* out, const Layout& v) {
  walk(v, [&](int64_t k, int64_t pos) { out[k] = a[pos]; }, true);
}

/// out[pos_k] = a[k]: scatter compact `a` into the view of `out`.
template <typename T>
void ewise_setitem(const T* a, T* out, const Layout& v) {
  // a view that repeats a position keeps its last write: that needs the one-thread order
  walk(v, [&](int64_t k, int64_t pos) { out[pos] = a[k]; }, distinct_positions(v));
}

/// out[pos_k] += a[k]: add compact `a` into the view of `out` (a view without repeated
/// positions, so each element is added once, as NumPy's `view += a` does).
template <typename T>
void ewise_add_setitem(const T* a, T* out, const Layout& v) {
  walk(v, [&](int64_t k, int64_t pos) { out[pos] += a[k]; }, distinct_positions(v));
}

/// out[pos_k] = val for every element of the view.
template <typename T>
void scalar_setitem(T val, T* out, const Layout& v) {
  walk(v, [&](int64_t, int64_t pos) { out[pos] = val; }, distinct_positions(v));
}

// ---- elementwise kernels on compact buffers -------------------------------------------------

/// out[i] = op(a[i], b[i]).
template <typename T, typename Op>
void ewise(const T* a, const T* b, T* out, int64_t n, Op op) {
  parallel_for(n, kGrain, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) out[i] = op(a[i], b[i]);
  });
}

/// out[i] = op(a[i], val).
template <typename T, typename Op>
void scalar(const T* a, T val, T* out, int64_t n, Op op) {
  parallel_for(n, kGrain, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) out[i] = op(a[i], val);
  });
}

/// out[i] = op(a[i]).
template <typename T, typename Op>
void unary(const T* a, T* out, int64_t n, Op op) {
  parallel_for(n, kGrain, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) out[i] = op(a[i]);
  });
}

// The functors the bindings hand to ewise/scalar/unary. Results keep the operands' type, so a
// float32 kernel computes in float32 (powf, expf, ...) exactly as NumPy's float32 loops do.

/// NumPy's maximum: NaN if either operand is NaN.
struct Maximum {
  template <typename T>
  // `|`, not `||`: no short-circuit branch, so the loops over it vectorise
  T operator()(T x, T y) const {
    return ((x != x) | (x > y)) ? x : y;
  }
};
/// 1 where equal, else 0 (in the operands' type).
struct Equal {
  template <typename T>
  T operator()(T x, T y) const {
    return x == y ? T(1) : T(0);
  }
};
/// 1 where x >= y, else 0.
struct GreaterEqual {
  template <typename T>
  T operator()(T x, T y) const {
    return x >= y ? T(1) : T(0);
  }
};
/// C pow: NaN for a negative base with a fractional exponent, exact signs for integral ones.
struct Power {
  template <typename T>
  T operator()(T x, T y) const {
    return std::pow(x, y);
  }
};
struct Log {
  template <typename T>
  T operator()(T x) const {
    return std::log(x);
  }
};
struct Exp {
  template <typename T>
  T operator()(T x) const {
    return std::exp(x);
  }
};
struct Tanh {
  template <typename T>
  T operator()(T x) const {
    return std::tanh(x);
  }
};

// ---- reductions -----------------------------------------------------------------------------

/// Sum of f(i) for i in [0, n) in eight interleaved lanes, combined in a fixed order: the same
/// bits on every run, more accurate than one running sum and vectorisable without -ffast-math.
/// Every kernel that sums reuses this order, so a fused kernel adds exactly as reduce_sum does.
template <typename T, typename Term>
T lane_sum(int64_t n, Term f) {
  T lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] += f(i + l);
  }
  T tail = 0;
  for (; i < n; ++i) tail += f(i);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])) + tail;
}

/// Sum of x[0:n] in lane_sum's order.
template <typename T>
T sum(const T* x, int64_t n) {
  return lane_sum<T>(n, [x](int64_t i) { return x[i]; });
}

/// Column sums of the (n, d) matrix with entries f(i, j), each column in lane_sum's order
/// (row i goes to lane i % 8, rows past the last multiple of 8 to the tail), walking the
/// matrix row by row. `scratch` holds 9·d elements.
template <typename T, typename Term>
void column_lane_sums(int64_t n, int64_t d, Term f, T* out, T* scratch) {
  // One thread: these sums stream the matrix once at memory speed, which a second thread
  // reading other columns of the same rows did not improve (it made them slower).
  std::fill(scratch, scratch + 9 * d, T(0));
  const int64_t full = n - n % 8;
  for (int64_t i = 0; i < n; ++i) {
    T* acc = scratch + (i < full ? i % 8 : 8) * d;
    for (int64_t j = 0; j < d; ++j) acc[j] += f(i, j);
  }
  for (int64_t j = 0; j < d; ++j) {
    const T* l = scratch + j;
    out[j] = ((l[0] + l[d]) + (l[2 * d] + l[3 * d])) +
             ((l[4 * d] + l[5 * d]) + (l[6 * d] + l[7 * d])) + l[8 * d];
  }
}

/// Max of x[0:n], n >= 1; NaN propagates as in NumPy. Eight interleaved running maxima, as
/// lane_sum keeps sums, so the loop vectorises (one running max is a chain of dependent
/// compares, five times slower); the maximum does not depend on the order it is taken in.
template <typename T>
T max(const T* x, int64_t n) {
  T best = x[0];
  int64_t i = 1;
  if (n >= 16) {
    T lanes[8];
    for (int l = 0; l < 8; ++l) lanes[l] = x[l];
    for (i = 8; i + 8 <= n; i += 8) {
      for (int l = 0; l < 8; ++l) lanes[l] = Maximum{}(lanes[l], x[i + l]);
    }
    best = lanes[0];
    for (int l = 1; l < 8; ++l) best = Maximum{}(best, lanes[l]);
  }
  for (; i < n; ++i) best = Maximum{}(best, x[i]);
  return best;
}

/// Outputs per chunk of a reduction over `rs` elements each: about kGrain elements read.
inline int64_t outputs_per_chunk(int64_t rs) { return std::max<int64_t>(1, kGrain / (rs + 1)); }

/// out[i] = sum of a[i·rs : (i+1)·rs] (0 when rs == 0); each output summed by one thread.
template <typename T>
void reduce_sum(const T* a, T* out, int64_t out_size, int64_t rs) {
  parallel_for(out_size, outputs_per_chunk(rs), [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) out[i] = sum(a + i * rs, rs);
  });
}

/// out[i] = max of a[i·rs : (i+1)·rs]; rs >= 1.
template <typename T>
void reduce_max(const T* a, T* out, int64_t out_size, int64_t rs) {
  parallel_for(out_size, outputs_per_chunk(rs), [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) out[i] = max(a + i * rs, rs);
  });
}

// ---- tiled matmul (the course's hand-written loop) ----------------------------

/// The course's tiled layout and back: `tiled` is (rows/T, cols/T, T, T), each tile a
/// contiguous T×T block in row-major tile order; `rowmajor` is the (rows, cols) matrix.
/// matmul_tiled converts with these so that its product runs in the BLAS, not a tile loop.
template <typename T, int64_t TILE>
void untile(const T* tiled, T* rowmajor, int64_t rows, int64_t cols) {
  const int64_t col_tiles = cols / TILE;
  for (int64_t i = 0; i < rows; ++i) {
    const T* tile_row = tiled + ((i / TILE) * col_tiles * TILE + i % TILE) * TILE;
    for (int64_t J = 0; J < col_tiles; ++J) {
      std::copy(tile_row + J * TILE * TILE, tile_row + J * TILE * TILE + TILE,
                rowmajor + i * cols + J * TILE);
    }
  }
}

template <typename T, int64_t TILE>
void retile(const T* rowmajor, T* tiled, int64_t rows, int64_t cols) {
  const int64_t col_tiles = cols / TILE;
  for (int64_t i = 0; i < rows; ++i) {
    T* tile_row = tiled + ((i / TILE) * col_tiles * TILE + i % TILE) * TILE;
    for (int64_t J = 0; J < col_tiles; ++J) {
      std::copy(rowmajor + i * cols + J * TILE, rowmajor + i * cols + J * TILE + TILE,
                tile_row + J * TILE * TILE);
    }
  }
}

// ---- fused optimizer updates (project extras) ---------------------------------------------
// One pass per parameter instead of a dozen elementwise kernels. Each element goes through
// the same float operations, in the same order, as needle.optim's array formula (NumPy casts
// the Python-float hyper-parameters to T first, and so do the bindings), so the results are
// bit-identical to it. The build uses -ffp-contract=off so no step is fused into an FMA.

/// SGD: g = p·wd + grad; u = u·m + g·(1 − m); out = p − u·lr. Updates u in place.
template <typename T>
void sgd_update(const T* p, const T* grad, T* u, T* out, int64_t n, T lr, T momentum,
                T one_minus_momentum, T weight_decay) {
  parallel_for(n, kGrain, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      T g = p[i] * weight_decay;
      g = g + grad[i];
      T ui = u[i] * momentum;
      g = g * one_minus_momentum;
      ui = ui + g;
      u[i] = ui;
      out[i] = p[i] - ui * lr;
    }
  });
}

/// Adam hyper-parameters, already cast to T (bias1 = 1 − β1^t, bias2 = 1 − β2^t).
template <typename T>
struct AdamScalars {
  T lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, bias1, bias2;
};

#if defined(__SSE2__)
/// adam_update's float arithmetic four elements at a time in SSE2 (the x86-64 baseline, so no
/// ISA flag): the same IEEE operations in the same order, so the same bits. Written out because
/// the compiler will not vectorise the loop itself: std::sqrt may set errno, and the flag that
/// waives that (-fno-math-errno) belongs to the unsafe-math family this build avoids. Returns
/// how many leading elements it updated.
inline int64_t adam_update_sse2(const float* p, const float* grad, float* m, float* v, float* out,
                                int64_t n, const AdamScalars<float>& c) {
  const __m128 wd = _mm_set1_ps(c.weight_decay), beta1 = _mm_set1_ps(c.beta1);
  const __m128 rest1 = _mm_set1_ps(c.one_minus_beta1), beta2 = _mm_set1_ps(c.beta2);
  const __m128 rest2 = _mm_set1_ps(c.one_minus_beta2), bias1 = _mm_set1_ps(c.bias1);
  const __m128 bias2 = _mm_set1_ps(c.bias2), lr = _mm_set1_ps(c.lr), eps = _mm_set1_ps(c.eps);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128 pi = _mm_loadu_ps(p + i);
    const __m128 g = _mm_add_ps(_mm_mul_ps(pi, wd), _mm_loadu_ps(grad + i));
    const __m128 mi = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(m + i), beta1), _mm_mul_ps(g, rest1));
    const __m128 vi =
        _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(v + i), beta2), _mm_mul_ps(_mm_mul_ps(g, g), rest2));
    _mm_storeu_ps(m + i, mi);
    _mm_storeu_ps(v + i, vi);
    const __m128 m_hat = _mm_mul_ps(_mm_div_ps(mi, bias1), lr);
    const __m128 v_hat = _mm_add_ps(_mm_sqrt_ps(_mm_div_ps(vi, bias2)), eps);
    _mm_storeu_ps(out + i, _mm_sub_ps(pi, _mm_div_ps(m_hat, v_hat)));
  }
  return i;
}
#endif

template <typename T>
void adam_update_range(const T* p, const T* grad, T* m, T* v, T* out, int64_t n,
                       const AdamScalars<T>& c);

/// Adam: g = p·wd + grad; m = m·β1 + g·(1 − β1); v = v·β2 + g²·(1 − β2);
/// out = p − (m/bias1)·lr / (sqrt(v/bias2) + eps). Updates m and v in place.
template <typename T>
void adam_update(const T* p, const T* grad, T* m, T* v, T* out, int64_t n,
                 const AdamScalars<T>& c) {
  // chunks of a multiple of 4 elements, so the SSE2 part covers the same elements anywhere
  parallel_for(n, kGrain, [&](int64_t first, int64_t last) {
    adam_update_range(p + first, grad + first, m + first, v + first, out + first, last - first, c);
  });
}

/// adam_update on one contiguous range.
template <typename T>
void adam_update_range(const T* p, const T* grad, T* m, T* v, T* out, int64_t n,
                       const AdamScalars<T>& c) {
  int64_t i = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) i = adam_update_sse2(p, grad, m, v, out, n, c);
#endif
  for (; i < n; ++i) {
    T g = p[i] * c.weight_decay;
    g = g + grad[i];
    T scratch = g * c.one_minus_beta1;
    T mi = m[i] * c.beta1;
    mi = mi + scratch;
    m[i] = mi;
    T g2 = g * g;
    g2 = g2 * c.one_minus_beta2;
    T vi = v[i] * c.beta2;
    vi = vi + g2;
    v[i] = vi;
    T m_hat = mi / c.bias1;
    T v_hat = std::sqrt(vi / c.bias2) + c.eps;
    m_hat = m_hat * c.lr;
    out[i] = p[i] - m_hat / v_hat;
  }
}

// ---- fused batch norm (project extras) --------------------------------------------------------
// Training batch norm of a compact (n, d) matrix, statistics per column, in one kernel each way
// instead of a dozen array operations. Column sums run over the rows in order (deterministic).

/// out = xhat·weight + bias with xhat = (x − mean)·inv_std, mean and biased var per column,
/// inv_std = 1 / sqrt(var + eps). Writes xhat, mean, var and inv_std too.
template <typename T>
void batchnorm_forward(const T* x, const T* weight, const T* bias, T* out, T* xhat, T* mean, T* var,
                       T* inv_std, int64_t n, int64_t d, T eps) {
  std::fill(mean, mean + d, T(0));
  std::fill(var, var + d, T(0));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) mean[j] += x[i * d + j];
  }
  for (int64_t j = 0; j < d; ++j) mean[j] /= static_cast<T>(n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) {
      const T c = x[i * d + j] - mean[j];
      var[j] += c * c;
    }
  }
  for (int64_t j = 0; j < d; ++j) {
    var[j] /= static_cast<T>(n);
    inv_std[j] = T(1) / std::sqrt(var[j] + eps);
  }
  // Two loops per row, not one: with seven arrays in one loop the compiler gives up the
  // run-time overlap checks it needs to vectorise (and the kernel ran at a third of the speed).
  for (int64_t i = 0; i < n; ++i) {
    T* h = xhat + i * d;
    for (int64_t j = 0; j < d; ++j) h[j] = (x[i * d + j] - mean[j]) * inv_std[j];
    for (int64_t j = 0; j < d; ++j) out[i * d + j] = h[j] * weight[j] + bias[j];
  }
}

/// grad_bias = Σ_rows g; grad_weight = Σ_rows g·xhat;
/// grad_x = (g·n − grad_bias − xhat·grad_weight)·(weight·inv_std / n), the last factor computed
/// once per column into `scale` (d elements) instead of once per element.
template <typename T>
void batchnorm_backward(const T* g, const T* xhat, const T* weight, const T* inv_std, T* grad_x,
                        T* grad_weight, T* grad_bias, T* scale, int64_t n, int64_t d) {
  std::fill(grad_weight, grad_weight + d, T(0));
  std::fill(grad_bias, grad_bias + d, T(0));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) {
      grad_bias[j] += g[i * d + j];
      grad_weight[j] += g[i * d + j] * xhat[i * d + j];
    }
  }
  const T nn = static_cast<T>(n);
  for (int64_t j = 0; j < d; ++j) scale[j] = weight[j] * inv_std[j] / nn;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) {
      const T centred = g[i * d + j] * nn - grad_bias[j] - xhat[i * d + j] * grad_weight[j];
      grad_x[i * d + j] = centred * scale[j];
    }
  }
}

// ---- fused dropout mask, layer norm and softmax loss (project extras) ------------------------
// Each replaces a chain of array operations with one kernel doing the same float operations in
// the same order (sums in lane_sum's order), so the results are the bits of the composition.

/// out[i] = x[i] · mask[i], where fill(start, len, m) writes mask[start, start + len) to m.
/// The mask is made 256 elements at a time, then multiplied in a second loop, so that both
/// loops vectorise: with the mask's select inside the product, one loop became a branch per
/// element (3 ms instead of 0.1 ms for 512k elements of random sign). The mask is written to
/// `kept` (n elements) when it is needed later, else to a stack buffer.
template <typename T, typename Fill>
void multiply_by_mask(const T* x, T* out, T* kept, int64_t n, Fill fill) {
  constexpr int64_t kChunk = 256;
  parallel_for(n, kGrain, [&](int64_t first, int64_t last) {
    T buffer[kChunk];
    for (int64_t start = first; start < last; start += kChunk) {
      const int64_t len = std::min(kChunk, last - start);
      T* m = kept != nullptr ? kept + start : buffer;
      fill(start, len, m);
      for (int64_t i = 0; i < len; ++i) out[start + i] = x[start + i] * m[i];
    }
  });
}

/// Dropout in one pass from float64 uniform draws u: the scaled mask
/// mask = T([float(u) <= keep] / keep) (1/keep or 0, in float32 as the course's float32 `rand`
/// makes it, whatever the model's dtype), kept for the backward pass, and out = x · mask.
template <typename T>
void dropout(const double* u, const T* x, T* mask, T* out, int64_t n, float keep) {
  multiply_by_mask(x, out, mask, n, [u, keep](int64_t start, int64_t len, T* m) {
    for (int64_t i = 0; i < len; ++i) {
      m[i] = static_cast<T>((static_cast<float>(u[start + i]) <= keep ? 1.0f : 0.0f) / keep);
    }
  });
}

/// ReLU's gradient mask: mask = [a > 0] (1 or 0; NaN gives 0, as the NDArray's `>` does).
template <typename T>
void relu_mask(const T* a, T* mask, int64_t n) {
  for (int64_t i = 0; i < n; ++i) mask[i] = a[i] > T(0) ? T(1) : T(0);
}

/// ReLU's gradient: out = g · [a > 0], the product with the 1-or-0 mask, so the bits of
/// `g * (a > 0)`: −0 for a negative g and NaN for an infinite or NaN g where the mask is 0.
template <typename T>
void relu_backward(const T* g, const T* a, T* out, int64_t n) {
  multiply_by_mask(g, out, static_cast<T*>(nullptr), n,
                   [a](int64_t start, int64_t len, T* m) { relu_mask(a + start, m, len); });
}

/// Layer norm of the rows of x (n, d): xhat = (x − mean)·inv_std with the row's mean and
/// biased variance, inv_std = (var + eps)^(−1/2); out = xhat·weight + bias (per column).
template <typename T>
void layernorm_forward(const T* x, const T* weight, const T* bias, T* out, T* xhat, T* inv_std,
                       int64_t n, int64_t d, T eps) {
  const T width = static_cast<T>(d);
  parallel_for(n, outputs_per_chunk(d), [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const T* row = x + i * d;
      T* h = xhat + i * d;
      const T mean = sum(row, d) / width;
      for (int64_t j = 0; j < d; ++j) h[j] = row[j] - mean;
      const T var = lane_sum<T>(d, [h](int64_t j) { return h[j] * h[j]; }) / width;
      const T scale = std::pow(var + eps, T(-0.5));
      inv_std[i] = scale;
      for (int64_t j = 0; j < d; ++j) {
        h[j] = h[j] * scale;
        out[i * d + j] = h[j] * weight[j] + bias[j];
      }
    }
  });
}

/// Gradients of layernorm_forward for out_grad g (n, d): grad_bias = Σ_rows g,
/// grad_weight = Σ_rows g·xhat, and per row with gx = g·weight:
/// grad_x = (gx·d − Σ gx − xhat·Σ gx·xhat)·(inv_std / d). `scratch` holds 9·d elements.
template <typename T>
void layernorm_backward(const T* g, const T* xhat, const T* weight, const T* inv_std, T* grad_x,
                        T* grad_weight, T* grad_bias, T* scratch, int64_t n, int64_t d) {
  column_lane_sums<T>(
      n, d, [g, d](int64_t i, int64_t j) { return g[i * d + j]; }, grad_bias, scratch);
  column_lane_sums<T>(
      n, d, [g, xhat, d](int64_t i, int64_t j) { return g[i * d + j] * xhat[i * d + j]; },
      grad_weight, scratch);
  const T width = static_cast<T>(d);
  parallel_for(n, outputs_per_chunk(d), [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const T* gi = g + i * d;
      const T* h = xhat + i * d;
      T* gx = grad_x + i * d;  // holds g·weight until the last loop overwrites it
      for (int64_t j = 0; j < d; ++j) gx[j] = gi[j] * weight[j];
      const T sum_gx = sum(gx, d);
      const T sum_gx_xhat = lane_sum<T>(d, [gx, h](int64_t j) { return gx[j] * h[j]; });
      const T factor = inv_std[i] / width;
      for (int64_t j = 0; j < d; ++j) {
        gx[j] = (gx[j] * width - sum_gx - h[j] * sum_gx_xhat) * factor;
      }
    }
  });
}

/// e^x for float x ≤ 0 (a softmax's shifted logits) with no library call and no branch, so
/// the compiler vectorises the loop around it: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in
/// two for an exact product), e^r by a degree-7 polynomial (Cephes' expf coefficients), 2^n
/// put into the exponent bits. Within 2 ulp of the correctly rounded value; 0 below ln(FLT_MIN)
/// (where e^x would be subnormal) and for −inf; NaN for NaN. Portable SSE2 arithmetic, no FMA;
/// the one select is done on integer bits (a float select would be a branch unless the
/// compiler may assume that comparisons never trap, an unsafe-math flag this build avoids).
inline float exp_nonpositive(float x) {
  const float kShift = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + kShift;
  const float n = t - kShift;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = (p * r) * r + r + 1.0f;
  uint32_t bits, x_bits;  // t's bits are those of kShift plus n (unsigned: wraps, never UB)
  std::memcpy(&bits, &t, sizeof bits);
  std::memcpy(&x_bits, &x, sizeof x_bits);
  const uint32_t scale_bits = (bits - 0x4B400000u + 127u) << 23;  // n + 127 as the exponent
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  const float value = p * scale;
  uint32_t value_bits;
  std::memcpy(&value_bits, &value, sizeof value_bits);
  // x < ln(FLT_MIN) or x = −inf: a negative float's bits grow with its magnitude, up to −inf's
  // 0xFF800000 (a negative NaN's are larger still and keep its NaN)
  const uint32_t underflow =
      static_cast<uint32_t>(x_bits > 0xC2AEAC50u) & static_cast<uint32_t>(x_bits <= 0xFF800000u);
  value_bits &= underflow - 1u;  // all ones to keep the value, zero to give +0.0
  float result;
  std::memcpy(&result, &value_bits, sizeof result);
  return result;
}

/// e^x for x ≤ 0: the vectorisable float version above, the library's exp for double.
template <typename T>
T exp_nonpositive_any(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return exp_nonpositive(x);
  } else {
    return std::exp(x);
  }
}

/// Rows [first, last) of softmax_cross_entropy: their rows of grad and entries of per_example.
template <typename T>
void softmax_cross_entropy_rows(const T* logits, const int64_t* labels, T* grad, T* per_example,
                                int64_t first, int64_t last, int64_t k, T lowest, T scale) {
  for (int64_t i = first; i < last; ++i) {
    const T* row = logits + i * k;
    T* p = grad + i * k;
    const T peak = max(row, k);
    for (int64_t j = 0; j < k; ++j) p[j] = exp_nonpositive_any(row[j] - peak);
    const T total = sum(p, k);
    for (int64_t j = 0; j < k; ++j) p[j] = p[j] / total;
    const T picked = Maximum{}(row[labels[i]] - peak, lowest);
    per_example[i] = std::log(total) - picked;
    p[labels[i]] = p[labels[i]] - T(1);
    for (int64_t j = 0; j < k; ++j) p[j] = p[j] * scale;  // the row is still in cache
  }
}

/// softmax_cross_entropy_rows for float, compiled for AVX2 (simd.h): e^x costs arithmetic, not
/// memory, and eight lanes do it in 0.6 of four lanes' time.
NEEDLE_TARGET_AVX2 inline void softmax_cross_entropy_rows_avx2(const float* logits,
                                                               const int64_t* labels, float* grad,
                                                               float* per_example, int64_t first,
                                                               int64_t last, int64_t k,
                                                               float lowest, float scale) {
  softmax_cross_entropy_rows(logits, labels, grad, per_example, first, last, k, lowest, scale);
}

/// Mean softmax cross-entropy of logits (n, k) against labels (n,) in [0, k), returned; also
/// writes grad = (softmax − one_hot)·(1/n) (n, k), the gradient for out_grad = 1 (rounded as the
/// composition's (softmax − one_hot)·(out_grad / n) is for out_grad = 1).
/// The target logit (less the row max) is clipped below at `lowest`, as the composition does.
/// The composition's operations in its order, except e^x (exp_nonpositive_any, ≤ 2 ulp from
/// the library's in float32), which dominates the cost at a 10,000-way output.
template <typename T>
T softmax_cross_entropy(const T* logits, const int64_t* labels, T* grad, T* per_example, int64_t n,
                        int64_t k, T lowest) {
  const T scale = T(1) / static_cast<T>(n);
  parallel_for(n, outputs_per_chunk(k), [&](int64_t first, int64_t last) {
    if constexpr (std::is_same_v<T, float>) {
      if (use_avx2()) {
        softmax_cross_entropy_rows_avx2(logits, labels, grad, per_example, first, last, k, lowest,
                                        scale);
        return;
      }
    }
    softmax_cross_entropy_rows(logits, labels, grad, per_example, first, last, k, lowest, scale);
  });
  return sum(per_example, n) / static_cast<T>(n);
}

// ---- NumPy's legacy uniform draws (the course's np.random.rand) -----------------------------
// The Mersenne Twister MT19937 as NumPy's RandomState runs it, on NumPy's own state: a draw
// made here leaves the generator exactly where np.random.rand would, and gives the same
// numbers, without NumPy's call through a function pointer per 32-bit word.

constexpr int kMtWords = 624;

/// The generator's state as NumPy's MT19937 keeps it in memory: 624 words and the position of
/// the next one (624: all used, refill first).
struct Mt19937State {
  uint32_t key[kMtWords];
  int pos;
};

/// Refills the 624 words: the generator's recurrence, x[i] from x[i], x[i + 1], x[i + 397].
inline void mt19937_twist(uint32_t* key) {
  constexpr int kShift = 397;
  constexpr uint32_t kMatrix = 0x9908b0dfu, kUpper = 0x80000000u, kLower = 0x7fffffffu;
  const auto next = [](uint32_t current, uint32_t following, uint32_t far) {
    const uint32_t y = (current & kUpper) | (following & kLower);
    return far ^ (y >> 1) ^ ((0u - (y & 1u)) & kMatrix);
  };
  int i = 0;
  for (; i < kMtWords - kShift; ++i) key[i] = next(key[i], key[i + 1], key[i + kShift]);
  for (; i < kMtWords - 1; ++i) key[i] = next(key[i], key[i + 1], key[i + kShift - kMtWords]);
  key[kMtWords - 1] = next(key[kMtWords - 1], key[0], key[kShift - 1]);
}

/// The output of one state word (MT19937's tempering).
inline uint32_t mt19937_temper(uint32_t y) {
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  return y ^ (y >> 18);
}

/// out[0:n) = the next n uniform doubles in [0, 1) as NumPy's random_sample makes them: two
/// consecutive outputs a, b give ((a >> 5)·2^26 + (b >> 6)) / 2^53, exact in double.
inline void mt19937_uniform_portable(Mt19937State& state, double* out, int64_t n) {
  constexpr int64_t kChunk = kMtWords / 2;  // doubles per pass: the words are tempered in bulk
  uint32_t words[2 * kChunk];
  for (int64_t done = 0; done < n;) {
    const int64_t count = std::min(kChunk, n - done);
    for (int64_t w = 0; w < 2 * count;) {
      if (state.pos >= kMtWords) {
        mt19937_twist(state.key);
        state.pos = 0;
      }
      const int64_t take = std::min<int64_t>(kMtWords - state.pos, 2 * count - w);
      const uint32_t* key = state.key + state.pos;
      for (int64_t i = 0; i < take; ++i) words[w + i] = mt19937_temper(key[i]);
      state.pos += static_cast<int>(take);
      w += take;
    }
    for (int64_t i = 0; i < count; ++i) {
      const auto high = static_cast<int32_t>(words[2 * i] >> 5);
      const auto low = static_cast<int32_t>(words[2 * i + 1] >> 6);
      out[done + i] = (high * 67108864.0 + low) / 9007199254740992.0;
    }
    done += count;
  }
}

/// mt19937_uniform_portable compiled for AVX2 (simd.h): integer words and exact conversions,
/// so the same draws, in 0.7 of the time.
NEEDLE_TARGET_AVX2 inline void mt19937_uniform_avx2(Mt19937State& state, double* out, int64_t n) {
  mt19937_uniform_portable(state, out, n);
}

/// The next n draws of np.random.rand into out, on the widest vectors in use.
inline void mt19937_uniform(Mt19937State& state, double* out, int64_t n) {
  if (use_avx2()) {
    mt19937_uniform_avx2(state, out, n);
  } else {
    mt19937_uniform_portable(state, out, n);
  }
}

// ---- row gather and scatter-add (the embedding; project extras) -----------------------------

/// out[k] = table[ids[k]] for rows of d elements; ids already checked to lie in the table.
template <typename T>
void take_rows(const T* table, const int64_t* ids, T* out, int64_t count, int64_t d) {
  parallel_for(count, outputs_per_chunk(d), [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      std::copy(table + ids[k] * d, table + (ids[k] + 1) * d, out + k * d);
    }
  });
}

/// out = zeros (num_rows, d), then out[ids[k]] += rows[k] for k in order (repeats accumulate).
template <typename T>
void add_rows(const T* rows, const int64_t* ids, T* out, int64_t count, int64_t num_rows,
              int64_t d) {
  std::fill(out, out + num_rows * d, T(0));
  for (int64_t k = 0; k < count; ++k) {
    T* target = out + ids[k] * d;
    const T* source = rows + k * d;
    for (int64_t j = 0; j < d; ++j) target[j] += source[j];
  }
}

// ---- fused LSTM cell gates (project extra) --------------------------------------------------
// One LSTM step's gate arithmetic, forward and backward, in one kernel each instead of about
// twenty array operations; each element goes through the composition's operations in order.

/// The ops' overflow-safe sigmoid: e = exp(−max(a, −a)); ([a ≥ 0] + (1 − [a ≥ 0])·e) / (1 + e).
template <typename T>
T sigmoid(T a) {
  const T e = std::exp(-Maximum{}(a, -a));
  const T positive = a >= 0 ? T(1) : T(0);
  return (positive + (T(1) - positive) * e) / (T(1) + e);
}

/// From the pre-activation pre (batch, 4·hidden) in gate blocks i, f, g, o and the cell state
/// c (batch, hidden): act = (σ(i), σ(f), tanh(g), σ(o)) (batch, 4·hidden), c' = f·c + i·g,
/// tanh_c = tanh(c'), h' = o·tanh_c.
template <typename T>
void lstm_cell_forward(const T* pre, const T* c, T* act, T* h_out, T* c_out, T* tanh_c,
                       int64_t batch, int64_t hidden) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* p = pre + b * 4 * hidden;
    T* a = act + b * 4 * hidden;
    for (int64_t j = 0; j < 4 * hidden; ++j) {
      a[j] = j / hidden == 2 ? std::tanh(p[j]) : sigmoid(p[j]);
    }
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t k = b * hidden + j;
      const T c_new = a[hidden + j] * c[k] + a[j] * a[2 * hidden + j];
      const T t = std::tanh(c_new);
      c_out[k] = c_new;
      tanh_c[k] = t;
      h_out[k] = a[3 * hidden + j] * t;
    }
  }
}

/// The gradients of lstm_cell_forward: from those of h' and c' (batch, hidden), the gradient of
/// the pre-activation (batch, 4·hidden) and of the previous cell state c (batch, hidden).
template <typename T>
void lstm_cell_backward(const T* grad_h, const T* grad_c, const T* c, const T* act, const T* tanh_c,
                        T* grad_pre, T* grad_c_prev, int64_t batch, int64_t hidden) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* a = act + b * 4 * hidden;
    T* gp = grad_pre + b * 4 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t k = b * hidden + j;
      const T i = a[j], f = a[hidden + j], g = a[2 * hidden + j], o = a[3 * hidden + j];
      const T t = tanh_c[k];
      const T total = grad_c[k] + grad_h[k] * o * (T(1) - t * t);  // through σ' and tanh'
      gp[j] = total * g * i * (T(1) - i);
      gp[hidden + j] = total * c[k] * f * (T(1) - f);
      gp[2 * hidden + j] = total * i * (T(1) - g * g);
      gp[3 * hidden + j] = grad_h[k] * t * o * (T(1) - o);
      grad_c_prev[k] = total * f;
    }
  }
}

// ---- sums over rows and row broadcasts without a transposed copy (project extras) -----------

/// out[j] = Σ_i a[i, j] over the rows of the compact (rows, cols) matrix a, each column in
/// lane_sum's order: the bits of reduce_sum on the transposed copy, without making it.
/// `scratch` holds 9·cols elements.
template <typename T>
void reduce_sum_rows(const T* a, T* out, int64_t rows, int64_t cols, T* scratch) {
  column_lane_sums<T>(
      rows, cols, [a, cols](int64_t i, int64_t j) { return a[i * cols + j]; }, out, scratch);
}

/// out[i, j] = a[i, j] + row[j] for the compact (rows, cols) matrix a: a bias added to every
/// row without materialising its broadcast.
template <typename T>
void add_row(const T* a, const T* row, T* out, int64_t rows, int64_t cols) {
  parallel_for(rows, outputs_per_chunk(cols), [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      for (int64_t j = 0; j < cols; ++j) out[i * cols + j] = a[i * cols + j] + row[j];
    }
  });
}

}  // namespace needle
