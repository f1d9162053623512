// Kernels of needle's CPU backend: plain C++ over raw buffers that trusts its inputs.
//
// Everything here is a template over the element type T (float or double). The binding layer
// (ndarray_backend_cpu.cc) validates sizes, dtypes and strided ranges before calling in, so no
// function below checks anything.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>

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

/// THE strided walker: calls visit(k, pos) for every element of `v`, k counting in row-major
/// order and pos = offset + Σ idx·strides. compact, ewise_setitem, scalar_setitem and
/// to_numpy are all this walk with a one-line visitor.
template <typename Visit>
void walk(const Layout& view, Visit visit) {
  if (view.size == 0) return;
  const Layout v = collapse(view);
  if (v.ndim == 0) {  // a single element
    visit(int64_t{0}, v.offset);
    return;
  }
  const int inner = v.ndim - 1;
  const int64_t n = v.shape[inner], step = v.strides[inner];
  std::array<int64_t, kMaxDims> idx{};  // counter over the outer dimensions
  int64_t base = v.offset;
  for (int64_t k = 0; k < v.size; k += n) {
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
  walk(v, [&](int64_t k, int64_t pos) { out[k] = a[pos]; });
}

/// out[pos_k] = a[k]: scatter compact `a` into the view of `out`.
template <typename T>
void ewise_setitem(const T* a, T* out, const Layout& v) {
  walk(v, [&](int64_t k, int64_t pos) { out[pos] = a[k]; });
}

/// out[pos_k] = val for every element of the view.
template <typename T>
void scalar_setitem(T val, T* out, const Layout& v) {
  walk(v, [&](int64_t, int64_t pos) { out[pos] = val; });
}

// ---- elementwise kernels on compact buffers -------------------------------------------------

/// out[i] = op(a[i], b[i]).
template <typename T, typename Op>
void ewise(const T* a, const T* b, T* out, int64_t n, Op op) {
  for (int64_t i = 0; i < n; ++i) out[i] = op(a[i], b[i]);
}

/// out[i] = op(a[i], val).
template <typename T, typename Op>
void scalar(const T* a, T val, T* out, int64_t n, Op op) {
  for (int64_t i = 0; i < n; ++i) out[i] = op(a[i], val);
}

/// out[i] = op(a[i]).
template <typename T, typename Op>
void unary(const T* a, T* out, int64_t n, Op op) {
  for (int64_t i = 0; i < n; ++i) out[i] = op(a[i]);
}

// The functors the bindings hand to ewise/scalar/unary. Results keep the operands' type, so a
// float32 kernel computes in float32 (powf, expf, ...) exactly as NumPy's float32 loops do.

/// NumPy's maximum: NaN if either operand is NaN.
struct Maximum {
  template <typename T>
  T operator()(T x, T y) const { return (x != x || x > y) ? x : y; }
};
/// 1 where equal, else 0 (in the operands' type).
struct Equal {
  template <typename T>
  T operator()(T x, T y) const { return x == y ? T(1) : T(0); }
};
/// 1 where x >= y, else 0.
struct GreaterEqual {
  template <typename T>
  T operator()(T x, T y) const { return x >= y ? T(1) : T(0); }
};
/// C pow: NaN for a negative base with a fractional exponent, exact signs for integral ones.
struct Power {
  template <typename T>
  T operator()(T x, T y) const { return std::pow(x, y); }
};
struct Log {
  template <typename T>
  T operator()(T x) const { return std::log(x); }
};
struct Exp {
  template <typename T>
  T operator()(T x) const { return std::exp(x); }
};
struct Tanh {
  template <typename T>
  T operator()(T x) const { return std::tanh(x); }
};

// ---- reductions -----------------------------------------------------------------------------

/// Sum of x[0:n] in eight interleaved lanes, combined in a fixed order: the same bits on every
/// run, more accurate than one running sum and vectorisable without -ffast-math.
template <typename T>
T sum(const T* x, int64_t n) {
  T lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] += x[i + l];
  }
  T tail = 0;
  for (; i < n; ++i) tail += x[i];
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])) + tail;
}

/// Max of x[0:n], n >= 1; NaN propagates as in NumPy.
template <typename T>
T max(const T* x, int64_t n) {
  T best = x[0];
  for (int64_t i = 1; i < n; ++i) best = Maximum{}(best, x[i]);
  return best;
}

/// out[i] = sum of a[i·rs : (i+1)·rs] (0 when rs == 0).
template <typename T>
void reduce_sum(const T* a, T* out, int64_t out_size, int64_t rs) {
  for (int64_t i = 0; i < out_size; ++i) out[i] = sum(a + i * rs, rs);
}

/// out[i] = max of a[i·rs : (i+1)·rs]; rs >= 1.
template <typename T>
void reduce_max(const T* a, T* out, int64_t out_size, int64_t rs) {
  for (int64_t i = 0; i < out_size; ++i) out[i] = max(a + i * rs, rs);
}

// ---- tiled matmul (the course's hand-written loop; see spec §8.1) ----------------------------

/// acc += a_tile @ b_tile for contiguous row-major TILE×TILE blocks.
template <typename T, int64_t TILE>
void tile_multiply_add(const T* a, const T* b, T* acc) {
  for (int64_t i = 0; i < TILE; ++i) {
    for (int64_t k = 0; k < TILE; ++k) {
      const T aik = a[i * TILE + k];
      for (int64_t j = 0; j < TILE; ++j) acc[i * TILE + j] += aik * b[k * TILE + j];
    }
  }
}

/// Tiled (m,n)@(n,p): a is (m/T, n/T, T, T), b is (n/T, p/T, T, T), out is (m/T, p/T, T, T),
/// each tile a contiguous T×T block in row-major tile order. Every out tile is overwritten
/// (zeros when n == 0), since the caller's buffer is uninitialised. The tile is summed in a
/// local array: it cannot alias `a` or `b`, which is what lets the compiler vectorise.
template <typename T, int64_t TILE>
void matmul_tiled(const T* a, const T* b, T* out, int64_t m, int64_t n, int64_t p) {
  const int64_t mt = m / TILE, nt = n / TILE, pt = p / TILE, block = TILE * TILE;
  for (int64_t i = 0; i < mt; ++i) {
    for (int64_t j = 0; j < pt; ++j) {
      T acc[TILE * TILE] = {};
      for (int64_t k = 0; k < nt; ++k) {
        tile_multiply_add<T, TILE>(a + (i * nt + k) * block, b + (k * pt + j) * block, acc);
      }
      std::copy(acc, acc + block, out + (i * pt + j) * block);
    }
  }
}

}  // namespace needle
