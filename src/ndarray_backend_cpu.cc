// needle's compiled CPU backend: the Array buffer, validation at the Python boundary, and the
// nanobind bindings of the backend API (docs/backends.md). Kernels live in kernels.h.
//
// Every binding first checks its arguments (dtypes, sizes, the range a strided view reaches)
// and raises TypeError/ValueError; only then does it call a kernel, which trusts its input.

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <pmmintrin.h>
#include <xmmintrin.h>
#define NEEDLE_HAS_MXCSR 1
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "gemm.h"
#include "kernels.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace needle {

constexpr int64_t kTileSize = 8;
constexpr std::size_t kAlignment = 64;  // one cache line; also a full AVX-512 vector

/// The element types of a buffer. Floats are what the kernels compute in; the integer and
/// boolean types hold labels, token ids, masks and counts, and take only the kernels that make
/// sense for them (copies, views, +, *, maximum, comparisons, sum and max).
enum class DType { float32, float64, int32, int64, bool_ };

struct DTypeInfo {
  DType dtype;
  const char* name;
  std::size_t itemsize;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::float32, "float32", 4}, {DType::float64, "float64", 8}, {DType::int32, "int32", 4},
    {DType::int64, "int64", 8},     {DType::bool_, "bool", 1},
};

const DTypeInfo& info(DType d) {
  for (const DTypeInfo& i : kDTypes) {
    if (i.dtype == d) return i;
  }
  return kDTypes[0];  // unreachable: every enumerator is listed
}

const char* dtype_name(DType d) { return info(d).name; }

bool is_float(DType d) { return d == DType::float32 || d == DType::float64; }

DType parse_dtype(const std::string& name) {
  for (const DTypeInfo& i : kDTypes) {
    if (name == i.name) return i.dtype;
  }
  throw nb::type_error(
      ("Array: unsupported dtype '" + name + "'; expected float32, float64, int32, int64 or bool")
          .c_str());
}

/// Where Array buffers come from: fresh aligned memory, or a recently freed large buffer of
/// exactly the same size.
///
/// Why a cache: a training step allocates the same large temporaries (im2col matrices, conv
/// outputs, their gradients) every step. A fresh large block is a new mmap whose first write
/// faults in every page, which cost ~1 ms per 4 MB here and put the `nd` SmallCNN step ~15%
/// behind NumPy's (NumPy's arrays get the same faults, cushioned by glibc's heap reuse and
/// huge pages). Freed buffers of at least kMinBytes are therefore kept, up to kMaxBytes in
/// all, and handed out again for the same byte size; beyond the cap they are freed.
class BufferPool {
 public:
  static constexpr std::size_t kMinBytes = std::size_t{1} << 20;
  static constexpr std::size_t kMaxBytes = std::size_t{256} << 20;

  void* allocate(std::size_t bytes) {
    if (bytes >= kMinBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      // the most recently freed buffer of this size: its lines are the likeliest still cached
      auto [first, last] = free_.equal_range(bytes);
      if (first != last) {
        const auto it = std::prev(last);
        void* p = it->second;
        free_.erase(it);
        cached_ -= bytes;
        return p;
      }
    }
    // operator new with an alignment throws std::bad_alloc (MemoryError) when memory runs out.
    void* p = ::operator new(std::max<std::size_t>(bytes, 1), std::align_val_t(kAlignment));
    advise_huge_pages(p, bytes);
    return p;
  }

  void release(void* p, std::size_t bytes) {
    if (bytes >= kMinBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= kMaxBytes) {
        free_.emplace(bytes, p);
        cached_ += bytes;
        return;
      }
    }
    ::operator delete(p, std::align_val_t(kAlignment));
  }

  /// Frees every cached buffer; returns how many bytes that gave back.
  std::size_t clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, p] : free_) ::operator delete(p, std::align_val_t(kAlignment));
    free_.clear();
    return std::exchange(cached_, 0);
  }

  std::size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

 private:
  /// Asks Linux for transparent huge pages on a large block, as NumPy does for its arrays:
  /// fewer, cheaper page faults on the first write. Only a hint; failure changes nothing.
  static void advise_huge_pages([[maybe_unused]] void* p, [[maybe_unused]] std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr std::uintptr_t kPage = 4096, kHugeMin = std::uintptr_t{1} << 22;
    if (bytes < kHugeMin) return;
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t begin = (start + kPage - 1) & ~(kPage - 1), end = start + bytes;
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
  }

  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;  // byte size -> cached buffer
  std::size_t cached_ = 0;
};

/// The process's pool. Intentionally never destroyed: Arrays may outlive module teardown.
BufferPool& buffer_pool() {
  static BufferPool* pool = new BufferPool();
  return *pool;
}

/// A flat, aligned, uninitialised buffer of `size` elements of one dtype.
class Array {
 public:
  Array(int64_t size, const std::string& dtype) : size_(size), dtype_(parse_dtype(dtype)) {
    if (size < 0) {
      throw nb::value_error(("Array: size must be >= 0, got " + std::to_string(size)).c_str());
    }
    if (size > std::numeric_limits<int64_t>::max() / 8) {
      throw nb::value_error(("Array: size " + std::to_string(size) + " is too large").c_str());
    }
    data_ = buffer_pool().allocate(bytes());
  }
  ~Array() { buffer_pool().release(data_, bytes()); }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;

  int64_t size() const { return size_; }
  DType dtype() const { return dtype_; }
  std::size_t bytes() const { return static_cast<std::size_t>(size_) * info(dtype_).itemsize; }
  std::uintptr_t ptr() const { return reinterpret_cast<std::uintptr_t>(data_); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  int64_t size_;
  DType dtype_;
  void* data_ = nullptr;
};

/// Calls f(T{}) with T the C++ type of `d`, for kernels that take every dtype: the one place
/// dtypes turn into templates.
template <typename F>
void dispatch_any(DType d, F&& f) {
  switch (d) {
    case DType::float32: f(float{}); break;
    case DType::float64: f(double{}); break;
    case DType::int32: f(int32_t{}); break;
    case DType::int64: f(int64_t{}); break;
    case DType::bool_: f(bool{}); break;
  }
}

/// dispatch_any for the kernels that compute in floating point: an integer or boolean buffer
/// raises TypeError naming the kernel `fn` (the templates are never built for those types).
template <typename F>
void dispatch_float(const char* fn, DType d, F&& f) {
  if (d == DType::float32) {
    f(float{});
  } else if (d == DType::float64) {
    f(double{});
  } else {
    throw nb::type_error((std::string(fn) + ": dtype " + dtype_name(d) +
                          " is not supported; this kernel computes in float32 or float64 "
                          "(convert with astype('float32'))")
                             .c_str());
  }
}

/// A Python number as the scalar of a kernel of element type T: floats through double, the
/// integer and boolean types exactly through int64 (a double would round ids above 2**53).
template <typename T>
T scalar_as(const char* fn, nb::handle value) {
  if constexpr (std::is_floating_point_v<T>) {
    double v;
    if (!nb::try_cast(value, v)) {
      throw nb::type_error((std::string(fn) + ": expected a real scalar").c_str());
    }
    return static_cast<T>(v);
  } else {
    int64_t v;
    if (!nb::try_cast(value, v)) {
      throw nb::type_error((std::string(fn) +
                            ": an integer or boolean array needs an integer "
                            "scalar, got " +
                            nb::inst_name(value).c_str())
                               .c_str());
    }
    if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
        v > static_cast<int64_t>(std::numeric_limits<T>::max())) {
      throw nb::value_error((std::string(fn) + ": the scalar " + std::to_string(v) +
                             " does not fit the array's dtype")
                                .c_str());
    }
    return static_cast<T>(v);
  }
}

// ---- validation at the boundary -------------------------------------------------------------

[[noreturn]] void value_error(const char* fn, const std::string& what) {
  throw nb::value_error((std::string(fn) + ": " + what).c_str());
}

void check_same_dtype(const char* fn, std::initializer_list<const Array*> arrays) {
  DType first = (*arrays.begin())->dtype();
  for (const Array* a : arrays) {
    if (a->dtype() != first) {
      throw nb::type_error((std::string(fn) + ": all arrays must share one dtype, got " +
                            dtype_name(first) + " and " + dtype_name(a->dtype()) +
                            "; convert one with astype()")
                               .c_str());
    }
  }
}

void check_size(const char* fn, const char* name, const Array& a, int64_t expected) {
  if (a.size() != expected) {
    value_error(fn, std::string(name) + ".size is " + std::to_string(a.size()) + ", expected " +
                        std::to_string(expected));
  }
}

void check_nonnegative(const char* fn, const char* name, int64_t v) {
  if (v < 0) value_error(fn, std::string(name) + " must be >= 0, got " + std::to_string(v));
}

/// x·y, raising ValueError instead of overflowing.
int64_t checked_mul(const char* fn, int64_t x, int64_t y) {
  int64_t r;
  if (__builtin_mul_overflow(x, y, &r)) value_error(fn, "sizes overflow 64-bit indexing");
  return r;
}

int64_t checked_add(const char* fn, int64_t x, int64_t y) {
  int64_t r;
  if (__builtin_add_overflow(x, y, &r)) value_error(fn, "strides overflow 64-bit indexing");
  return r;
}

std::string format_tuple(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() == 1 ? ",)" : ")");
}

/// Checks a strided view of a buffer of `buffer_size` elements and returns its Layout: equal
/// shape/strides lengths, at most kMaxDims dimensions, shape >= 0, and every position
/// offset + Σ idx·strides (its min and max, given negative strides) inside the buffer.
Layout check_view(const char* fn, const std::vector<int64_t>& shape,
                  const std::vector<int64_t>& strides, int64_t offset, int64_t buffer_size) {
  if (shape.size() != strides.size()) {
    value_error(fn, "shape " + format_tuple(shape) + " and strides " + format_tuple(strides) +
                        " have different lengths");
  }
  if (shape.size() > static_cast<std::size_t>(kMaxDims)) {
    value_error(fn, "at most " + std::to_string(kMaxDims) + " dimensions are supported, got " +
                        std::to_string(shape.size()));
  }
  Layout v;
  v.ndim = static_cast<int>(shape.size());
  v.offset = offset;
  int64_t lowest = offset, highest = offset;
  for (int d = 0; d < v.ndim; ++d) {
    check_nonnegative(fn, "every shape entry", shape[d]);
    v.shape[d] = shape[d];
    v.strides[d] = strides[d];
    v.size = checked_mul(fn, v.size, shape[d]);
    if (shape[d] == 0) continue;
    int64_t reach = checked_mul(fn, shape[d] - 1, strides[d]);
    (reach < 0 ? lowest : highest) = checked_add(fn, reach < 0 ? lowest : highest, reach);
  }
  if (v.size > 0 && (lowest < 0 || highest >= buffer_size)) {
    value_error(fn, "the view shape=" + format_tuple(shape) + ", strides=" + format_tuple(strides) +
                        ", offset=" + std::to_string(offset) + " reaches elements " +
                        std::to_string(lowest) + ".." + std::to_string(highest) +
                        " of a buffer of size " + std::to_string(buffer_size));
  }
  return v;
}

// ---- binding factories: validate, dispatch on dtype, call one kernel ------------------------

/// Which dtypes a kernel takes: every one, or only the floating-point ones.
enum class Takes { any, floats };

/// Calls f(T{}) for the dtype `d` of a kernel `fn` that takes `takes`.
template <Takes takes, typename F>
void dispatch(const char* fn, DType d, F&& f) {
  if constexpr (takes == Takes::any) {
    dispatch_any(d, std::forward<F>(f));
  } else {
    dispatch_float(fn, d, std::forward<F>(f));
  }
}

/// Binds name(a, b, out): out[i] = op(a[i], b[i]) on compact buffers of one size.
template <Takes takes, typename Op>
void def_ewise(nb::module_& m, const char* name, Op op, const char* doc) {
  m.def(
      name,
      [name, op](const Array& a, const Array& b, Array& out) {
        check_same_dtype(name, {&a, &b, &out});
        check_size(name, "a", a, out.size());
        check_size(name, "b", b, out.size());
        dispatch<takes>(name, out.dtype(), [&](auto t) {
          using T = decltype(t);
          ewise(a.as<T>(), b.as<T>(), out.as<T>(), out.size(), op);
        });
      },
      "a"_a, "b"_a, "out"_a, doc);
}

/// Binds name(a, val, out): out[i] = op(a[i], T(val)), the scalar cast to the dtype first.
template <Takes takes, typename Op>
void def_scalar(nb::module_& m, const char* name, Op op, const char* doc) {
  m.def(
      name,
      [name, op](const Array& a, nb::handle val, Array& out) {
        check_same_dtype(name, {&a, &out});
        check_size(name, "a", a, out.size());
        dispatch<takes>(name, out.dtype(), [&](auto t) {
          using T = decltype(t);
          scalar(a.as<T>(), scalar_as<T>(name, val), out.as<T>(), out.size(), op);
        });
      },
      "a"_a, "val"_a, "out"_a, doc);
}

/// Binds name(a, out): out[i] = op(a[i]), a floating-point function.
template <typename Op>
void def_unary(nb::module_& m, const char* name, Op op, const char* doc) {
  m.def(
      name,
      [name, op](const Array& a, Array& out) {
        check_same_dtype(name, {&a, &out});
        check_size(name, "a", a, out.size());
        dispatch_float(name, out.dtype(), [&](auto t) {
          using T = decltype(t);
          unary(a.as<T>(), out.as<T>(), out.size(), op);
        });
      },
      "a"_a, "out"_a, doc);
}

/// Binds name(a, out, reduce_size) for reduce_sum / reduce_max (every dtype).
template <typename Kernel>
void def_reduce(nb::module_& m, const char* name, Kernel kernel, bool allow_empty,
                const char* doc) {
  m.def(
      name,
      [name, kernel, allow_empty](const Array& a, Array& out, int64_t reduce_size) {
        check_same_dtype(name, {&a, &out});
        check_nonnegative(name, "reduce_size", reduce_size);
        check_size(name, "a", a, checked_mul(name, out.size(), reduce_size));
        if (!allow_empty && reduce_size == 0 && out.size() > 0) {
          value_error(name, "cannot reduce over 0 elements (reduce_size=0)");
        }
        dispatch_any(out.dtype(), [&](auto t) {
          using T = decltype(t);
          kernel(a.as<T>(), out.as<T>(), out.size(), reduce_size);
        });
      },
      "a"_a, "out"_a, "reduce_size"_a, doc);
}

/// Checks the handles of a (m,n)@(n,p) product.
void check_matmul(const char* fn, const Array& a, const Array& b, const Array& out, int64_t m,
                  int64_t n, int64_t p) {
  check_same_dtype(fn, {&a, &b, &out});
  check_nonnegative(fn, "m", m);
  check_nonnegative(fn, "n", n);
  check_nonnegative(fn, "p", p);
  check_size(fn, "a", a, checked_mul(fn, m, n));
  check_size(fn, "b", b, checked_mul(fn, n, p));
  check_size(fn, "out", out, checked_mul(fn, m, p));
}

// ---- NumPy interop --------------------------------------------------------------------------

/// A zero-copy C-contiguous NumPy view of `a`'s buffer with `shape`, valid while `a` lives.
template <typename T>
nb::object numpy_view(const Array& a, std::initializer_list<int64_t> shape) {
  std::vector<std::size_t> dims(shape.begin(), shape.end());
  nb::ndarray<nb::numpy, T> view(a.as<T>(), dims.size(), dims.data(), nb::handle());
  return nb::cast(view, nb::rv_policy::reference);
}

/// A zero-copy NumPy (rows, cols) view of `a`'s buffer, valid while `a` lives.
template <typename T>
nb::object numpy_view(const Array& a, int64_t rows, int64_t cols) {
  return numpy_view<T>(a, {rows, cols});
}

/// numpy.matmul, looked up once. Intentionally never freed: it must outlive module teardown.
nb::object& numpy_matmul() {
  static nb::object* fn = new nb::object(nb::module_::import_("numpy").attr("matmul"));
  return *fn;
}

/// (m,n)@(n,p) through NumPy's BLAS (OpenBLAS in NumPy's wheels) on zero-copy views.
void py_matmul(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p) {
  check_matmul("matmul", a, b, out, m, n, p);
  dispatch_float("matmul", out.dtype(), [&](auto t) {
    using T = decltype(t);
    if (m > 0 && n > 0 && p > 0 &&
        gemm(a.as<T>(), n, int64_t{1}, b.as<T>(), p, int64_t{1}, out.as<T>(), m, n, p)) {
      return;
    }
    numpy_matmul()(numpy_view<T>(a, m, n), numpy_view<T>(b, n, p),
                   "out"_a = numpy_view<T>(out, m, p));
  });
}

/// A zero-copy NumPy (rows, cols) view with element `strides` of `a`'s buffer at `offset`;
/// the caller has checked that it stays inside the buffer (check_view).
template <typename T>
nb::object numpy_strided_view(const Array& a, const Layout& v) {
  std::size_t shape[2] = {static_cast<std::size_t>(v.shape[0]),
                          static_cast<std::size_t>(v.shape[1])};
  int64_t strides[2] = {v.strides[0], v.strides[1]};
  nb::ndarray<nb::numpy, T> view(a.as<T>() + v.offset, 2, shape, nb::handle(), strides);
  return nb::cast(view, nb::rv_policy::reference);
}

/// Project extra: (m,n)@(n,p) on strided 2-D views of `a` and `b` into compact `out`. NumPy's
/// matmul hands a view with one unit stride (row-major, or a transpose of a compact matrix)
/// to the BLAS as it is, with no copy; other layouts are still right, only slower.
void py_matmul_strided(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p,
                       const std::vector<int64_t>& a_strides, int64_t a_offset,
                       const std::vector<int64_t>& b_strides, int64_t b_offset) {
  const char* fn = "matmul_strided";
  check_same_dtype(fn, {&a, &b, &out});
  check_nonnegative(fn, "m", m);
  check_nonnegative(fn, "n", n);
  check_nonnegative(fn, "p", p);
  check_size(fn, "out", out, checked_mul(fn, m, p));
  const Layout va = check_view(fn, {m, n}, a_strides, a_offset, a.size());
  const Layout vb = check_view(fn, {n, p}, b_strides, b_offset, b.size());
  if (va.size == 0 || vb.size == 0) {  // the empty view may sit at any offset: nothing to read
    std::fill(out.as<char>(), out.as<char>() + out.bytes(), 0);  // 0 bits are 0.0
    return;
  }
  dispatch_float(fn, out.dtype(), [&](auto t) {
    using T = decltype(t);
    if (gemm(a.as<T>() + va.offset, va.strides[0], va.strides[1], b.as<T>() + vb.offset,
             vb.strides[0], vb.strides[1], out.as<T>(), m, n, p)) {
      return;
    }
    numpy_matmul()(numpy_strided_view<T>(a, va), numpy_strided_view<T>(b, vb),
                   "out"_a = numpy_view<T>(out, m, p));
  });
}

/// Project extra: a stack of `batch` compact (m,n)@(n,p) products in one call, NumPy's matmul
/// looping over the stack in C (one BLAS call per product) instead of Python doing it.
void py_matmul_batched(const Array& a, const Array& b, Array& out, int64_t batch, int64_t m,
                       int64_t n, int64_t p) {
  const char* fn = "matmul_batched";
  check_same_dtype(fn, {&a, &b, &out});
  for (auto [name, v] : {std::pair{"batch", batch}, {"m", m}, {"n", n}, {"p", p}}) {
    check_nonnegative(fn, name, v);
  }
  check_size(fn, "a", a, checked_mul(fn, batch, checked_mul(fn, m, n)));
  check_size(fn, "b", b, checked_mul(fn, batch, checked_mul(fn, n, p)));
  check_size(fn, "out", out, checked_mul(fn, batch, checked_mul(fn, m, p)));
  dispatch_float(fn, out.dtype(), [&](auto t) {
    using T = decltype(t);
    const Gemm<T> call = blas_gemm().get<T>();
    if (call == nullptr || m == 0 || n == 0 || p == 0) {
      numpy_matmul()(numpy_view<T>(a, {batch, m, n}), numpy_view<T>(b, {batch, n, p}),
                     "out"_a = numpy_view<T>(out, {batch, m, p}));
      return;
    }
    // whole products per chunk: the attention's thousands of small ones, several at a time
    const T* pa = a.as<T>();
    const T* pb = b.as<T>();
    T* pc = out.as<T>();
    const int64_t per_chunk = std::max<int64_t>(1, kGemmGrain / (m * n * p));
    parallel_for(batch, per_chunk, [&](int64_t first, int64_t last) {
      for (int64_t k = first; k < last; ++k) {
        call(kRowMajor, kNoTrans, kNoTrans, m, p, n, T(1), pa + k * m * n, n, pb + k * n * p, p,
             T(0), pc + k * m * p, p);
      }
    });
  });
}

void py_matmul_tiled(const Array& a, const Array& b, Array& out, int64_t m, int64_t n, int64_t p) {
  check_matmul("matmul_tiled", a, b, out, m, n, p);
  if (m % kTileSize || n % kTileSize || p % kTileSize) {
    value_error("matmul_tiled", "m, n, p must be multiples of the tile size " +
                                    std::to_string(kTileSize) + ", got m=" + std::to_string(m) +
                                    ", n=" + std::to_string(n) + ", p=" + std::to_string(p));
  }
  // out-tile (I, J) = Σ_K a(I,K) @ b(K,J) is the tiled form of the row-major product, so the
  // operands are untiled, multiplied by the BLAS (a loop over 8×8 tiles is ~10× slower) and
  // the result tiled again; every element of `out` is written.
  dispatch_float("matmul_tiled", out.dtype(), [&](auto t) {
    using T = decltype(t);
    const std::string dtype = dtype_name(out.dtype());
    Array a_rows(m * n, dtype), b_rows(n * p, dtype), out_rows(m * p, dtype);
    untile<T, kTileSize>(a.as<T>(), a_rows.as<T>(), m, n);
    untile<T, kTileSize>(b.as<T>(), b_rows.as<T>(), n, p);
    if (m == 0 || n == 0 || p == 0 ||
        !gemm(a_rows.as<T>(), n, int64_t{1}, b_rows.as<T>(), p, int64_t{1}, out_rows.as<T>(), m, n,
              p)) {
      numpy_matmul()(numpy_view<T>(a_rows, m, n), numpy_view<T>(b_rows, n, p),
                     "out"_a = numpy_view<T>(out_rows, m, p));
    }
    retile<T, kTileSize>(out_rows.as<T>(), out.as<T>(), m, p);
  });
}

using AnyArray = nb::ndarray<nb::ro, nb::device::cpu>;

/// True when `x` is C-contiguous: as in NumPy, length-1 dimensions and empty arrays may have
/// any strides.
bool is_c_contiguous(const AnyArray& x) {
  if (x.size() == 0) return true;
  int64_t expected = 1;
  for (std::size_t d = x.ndim(); d-- > 0;) {
    if (x.shape(d) != 1 && x.stride(d) != expected) return false;
    expected *= static_cast<int64_t>(x.shape(d));
  }
  return true;
}

void from_numpy(const AnyArray& x, Array& out) {
  bool same_dtype = false;
  dispatch_any(out.dtype(), [&](auto t) { same_dtype = x.dtype() == nb::dtype<decltype(t)>(); });
  if (!same_dtype) {
    throw nb::type_error((std::string("from_numpy: the array's dtype differs from out's ") +
                          dtype_name(out.dtype()) +
                          "; pass np.ascontiguousarray(x, dtype=out.dtype)")
                             .c_str());
  }
  if (!is_c_contiguous(x)) {
    value_error("from_numpy", "the array is not C-contiguous; pass np.ascontiguousarray(x)");
  }
  if (static_cast<int64_t>(x.size()) < out.size()) {
    value_error("from_numpy", "the array has " + std::to_string(x.size()) +
                                  " elements, fewer than out.size " + std::to_string(out.size()));
  }
  if (out.size() > 0) std::memcpy(out.as<char>(), x.data(), out.bytes());
}

nb::object to_numpy(const Array& a, const std::vector<int64_t>& shape,
                    const std::vector<int64_t>& strides, int64_t offset) {
  const Layout v = check_view("to_numpy", shape, strides, offset, a.size());
  std::vector<std::size_t> dims(shape.begin(), shape.end());
  nb::object result;
  dispatch_any(a.dtype(), [&](auto t) {
    using T = decltype(t);
    T* data = new T[std::max<int64_t>(v.size, 1)];
    nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<T*>(p); });
    compact(a.as<T>(), data, v);
    result = nb::cast(nb::ndarray<nb::numpy, T>(data, dims.size(), dims.data(), owner));
  });
  return result;
}

// ---- denormals (project extra) --------------------------------------------------------------

constexpr unsigned kFtzDaz = 0x8040;  // MXCSR bits 15 (flush-to-zero) and 6 (denormals-are-zero)

bool set_flush_denormal(bool enabled) {
#ifdef NEEDLE_HAS_MXCSR
  const unsigned csr = _mm_getcsr();
  _mm_setcsr(enabled ? (csr | kFtzDaz) : (csr & ~kFtzDaz));
  return true;
#else
  (void)enabled;
  return false;
#endif
}

bool get_flush_denormal() {
#ifdef NEEDLE_HAS_MXCSR
  return (_mm_getcsr() & kFtzDaz) == kFtzDaz;
#else
  return false;
#endif
}

}  // namespace needle

using namespace needle;

// The strided bindings share one shape: (buffer args..., shape, strides, offset).
#define NEEDLE_VIEW_ARGS "shape"_a, "strides"_a, "offset"_a

using Arrays = std::initializer_list<const Array*>;

/// Checks the handles of a fused optimizer update: one dtype, every buffer of out's size.
/// One buffer per parameter, in the parameters' order (the optimizer kernels' lists).
using Buffers = std::vector<Array*>;

/// Checks the optimizer kernels' lists: one entry per parameter in each, no None, and each
/// parameter's buffers of one dtype and size (its `out`'s). Everything is checked before any
/// parameter is updated, so a bad call changes nothing.
void check_update(const char* fn, std::initializer_list<const Buffers*> lists,
                  const Buffers& outs) {
  const auto refuse_none = [fn](const Buffers& list) {
    for (const Array* a : list) {
      if (a == nullptr) value_error(fn, "got None in a buffer list");
    }
  };
  refuse_none(outs);
  for (const Buffers* list : lists) {
    if (list->size() != outs.size()) {
      value_error(fn, "the buffer lists differ in length (" + std::to_string(list->size()) +
                          " and " + std::to_string(outs.size()) + "); one entry per parameter");
    }
    refuse_none(*list);
  }
  for (std::size_t i = 0; i < outs.size(); ++i) {
    if (!is_float(outs[i]->dtype())) {
      throw nb::type_error((std::string(fn) + ": parameter " + std::to_string(i) + " is " +
                            dtype_name(outs[i]->dtype()) +
                            "; parameters are float32 or "
                            "float64")
                               .c_str());
    }
    for (const Buffers* list : lists) {
      const Array& a = *(*list)[i];
      if (a.dtype() != outs[i]->dtype()) {
        throw nb::type_error(
            (std::string(fn) + ": parameter " + std::to_string(i) + "'s buffers differ in dtype")
                .c_str());
      }
      if (a.size() != outs[i]->size()) {
        value_error(fn, "parameter " + std::to_string(i) + "'s buffers differ in size (" +
                            std::to_string(a.size()) + " and " + std::to_string(outs[i]->size()) +
                            ")");
      }
    }
  }
}

void py_sgd_update(const Buffers& params, const Buffers& grads, const Buffers& u,
                   const Buffers& outs, double lr, double momentum, double weight_decay) {
  check_update("sgd_update", {&params, &grads, &u}, outs);
  for (std::size_t i = 0; i < outs.size(); ++i) {
    dispatch_float("sgd_update", outs[i]->dtype(), [&](auto t) {
      using T = decltype(t);
      sgd_update(params[i]->as<T>(), grads[i]->as<T>(), u[i]->as<T>(), outs[i]->as<T>(),
                 outs[i]->size(), static_cast<T>(lr), static_cast<T>(momentum),
                 static_cast<T>(1 - momentum), static_cast<T>(weight_decay));
    });
  }
}

void py_adam_update(const Buffers& params, const Buffers& grads, const Buffers& m, const Buffers& v,
                    const Buffers& outs, double lr, double beta1, double beta2, double eps,
                    double weight_decay, double bias1, double bias2) {
  check_update("adam_update", {&params, &grads, &m, &v}, outs);
  for (std::size_t i = 0; i < outs.size(); ++i) {
    dispatch_float("adam_update", outs[i]->dtype(), [&](auto tag) {
      using T = decltype(tag);
      const AdamScalars<T> c{
          static_cast<T>(lr),           static_cast<T>(beta1),     static_cast<T>(1 - beta1),
          static_cast<T>(beta2),        static_cast<T>(1 - beta2), static_cast<T>(eps),
          static_cast<T>(weight_decay), static_cast<T>(bias1),     static_cast<T>(bias2)};
      adam_update(params[i]->as<T>(), grads[i]->as<T>(), m[i]->as<T>(), v[i]->as<T>(),
                  outs[i]->as<T>(), outs[i]->size(), c);
    });
  }
}

void py_batchnorm_forward(const Array& x, const Array& weight, const Array& bias, Array& out,
                          Array& xhat, Array& mean, Array& var, Array& inv_std, int64_t n,
                          int64_t d, double eps) {
  const char* fn = "batchnorm_forward";
  check_same_dtype(fn, {&x, &weight, &bias, &out, &xhat, &mean, &var, &inv_std});
  if (n < 1) value_error(fn, "needs at least one row, got n=" + std::to_string(n));
  check_nonnegative(fn, "d", d);
  const int64_t nd = checked_mul(fn, n, d);
  for (const Array* a : Arrays{&x, &out, &xhat}) check_size(fn, "an (n, d) buffer", *a, nd);
  for (const Array* a : Arrays{&weight, &bias, &mean, &var, &inv_std}) {
    check_size(fn, "a (d,) buffer", *a, d);
  }
  dispatch_float(fn, out.dtype(), [&](auto t) {
    using T = decltype(t);
    batchnorm_forward(x.as<T>(), weight.as<T>(), bias.as<T>(), out.as<T>(), xhat.as<T>(),
                      mean.as<T>(), var.as<T>(), inv_std.as<T>(), n, d, static_cast<T>(eps));
  });
}

void py_batchnorm_backward(const Array& g, const Array& xhat, const Array& weight,
                           const Array& inv_std, Array& grad_x, Array& grad_weight,
                           Array& grad_bias, int64_t n, int64_t d) {
  const char* fn = "batchnorm_backward";
  check_same_dtype(fn, {&g, &xhat, &weight, &inv_std, &grad_x, &grad_weight, &grad_bias});
  check_nonnegative(fn, "n", n);
  check_nonnegative(fn, "d", d);
  const int64_t nd = checked_mul(fn, n, d);
  for (const Array* a : Arrays{&g, &xhat, &grad_x}) check_size(fn, "an (n, d) buffer", *a, nd);
  for (const Array* a : Arrays{&weight, &inv_std, &grad_weight, &grad_bias}) {
    check_size(fn, "a (d,) buffer", *a, d);
  }
  dispatch_float(fn, g.dtype(), [&](auto t) {
    using T = decltype(t);
    std::vector<T> scale(static_cast<std::size_t>(d));
    batchnorm_backward(g.as<T>(), xhat.as<T>(), weight.as<T>(), inv_std.as<T>(), grad_x.as<T>(),
                       grad_weight.as<T>(), grad_bias.as<T>(), scale.data(), n, d);
  });
}

using Ids = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

/// Checks that every id lies in [0, num_rows): the kernels index memory with them.
void check_ids(const char* fn, const Ids& ids, int64_t num_rows) {
  const int64_t* data = ids.data();
  for (std::size_t k = 0; k < ids.shape(0); ++k) {
    if (data[k] < 0 || data[k] >= num_rows) {
      value_error(fn, "ids[" + std::to_string(k) + "] = " + std::to_string(data[k]) +
                          " is out of range for " + std::to_string(num_rows) +
                          " rows; expected 0 <= id < " + std::to_string(num_rows));
    }
  }
}

/// Checks an (n, d) row-wise kernel's buffers: `rows` of n·d elements, `per_column` of d.
void check_rows(const char* fn, Arrays rows, Arrays per_column, int64_t n, int64_t d) {
  check_nonnegative(fn, "n", n);
  check_nonnegative(fn, "d", d);
  const int64_t nd = checked_mul(fn, n, d);
  for (const Array* a : rows) check_size(fn, "an (n, d) buffer", *a, nd);
  for (const Array* a : per_column) check_size(fn, "a (d,) buffer", *a, d);
}

void py_dropout(const AnyArray& u, const Array& x, Array& mask, Array& out, double keep) {
  const char* fn = "dropout";
  if (u.dtype() != nb::dtype<double>() || !is_c_contiguous(u)) {
    throw nb::type_error(
        "dropout: u must be a C-contiguous float64 NumPy array (the draws "
        "of np.random.rand)");
  }
  check_same_dtype(fn, {&x, &mask, &out});
  check_size(fn, "mask", mask, out.size());
  check_size(fn, "x", x, out.size());
  if (static_cast<int64_t>(u.size()) != out.size()) {
    value_error(fn, "u has " + std::to_string(u.size()) + " draws for " +
                        std::to_string(out.size()) + " elements");
  }
  if (!(keep > 0 && keep <= 1)) {
    value_error(fn, "keep must be in (0, 1], got " + std::to_string(keep));
  }
  dispatch_float(fn, out.dtype(), [&](auto t) {
    using T = decltype(t);
    dropout(static_cast<const double*>(u.data()), x.as<T>(), mask.as<T>(), out.as<T>(), out.size(),
            static_cast<float>(keep));
  });
}

using Doubles = nb::ndarray<double, nb::c_contig, nb::device::cpu>;

/// Fills `out` with the next uniform draws of NumPy's MT19937 bit generator `bitgen` (the
/// global one: np.random.get_bit_generator()), advancing its state as np.random.rand would.
/// Only a numpy.random.MT19937 is accepted: its state is read in place, at the address NumPy
/// gives through its ctypes interface. The caller holds the generator's lock.
void py_mt19937_uniform(nb::handle bitgen, nb::handle out_array) {
  const char* fn = "mt19937_uniform";
  const nb::handle type = bitgen.type();
  const std::string name = nb::cast<std::string>(type.attr("__module__")) + "." +
                           nb::cast<std::string>(type.attr("__name__"));
  if (name != "numpy.random._mt19937.MT19937") {
    throw nb::type_error(
        (std::string(fn) + ": expected a numpy.random.MT19937 bit generator, got " + name).c_str());
  }
  Doubles out;
  if (!nb::try_cast(out_array, out, /*convert=*/false) || !nb::hasattr(out_array, "flags") ||
      !nb::cast<bool>(out_array.attr("flags").attr("writeable"))) {
    throw nb::type_error(
        (std::string(fn) + ": out must be a writeable C-contiguous float64 NumPy array").c_str());
  }
  const auto address = nb::cast<std::uintptr_t>(bitgen.attr("ctypes").attr("state_address"));
  auto& state = *reinterpret_cast<Mt19937State*>(address);
  if (state.pos < 0 || state.pos > kMtWords) {
    value_error(fn,
                "the generator's position " + std::to_string(state.pos) + " is outside [0, 624]");
  }
  mt19937_uniform(state, out.data(), static_cast<int64_t>(out.size()));
}

void py_relu_backward(const Array& g, const Array& a, Array& out) {
  check_same_dtype("relu_backward", {&g, &a, &out});
  check_size("relu_backward", "g", g, out.size());
  check_size("relu_backward", "a", a, out.size());
  dispatch_float("relu_backward", out.dtype(), [&](auto t) {
    using T = decltype(t);
    relu_backward(g.as<T>(), a.as<T>(), out.as<T>(), out.size());
  });
}

void py_layernorm_forward(const Array& x, const Array& weight, const Array& bias, Array& out,
                          Array& xhat, Array& inv_std, int64_t n, int64_t d, double eps) {
  const char* fn = "layernorm_forward";
  check_same_dtype(fn, {&x, &weight, &bias, &out, &xhat, &inv_std});
  if (d < 1) value_error(fn, "needs at least one column, got d=" + std::to_string(d));
  check_rows(fn, {&x, &out, &xhat}, {&weight, &bias}, n, d);
  check_size(fn, "inv_std", inv_std, n);
  dispatch_float(fn, out.dtype(), [&](auto t) {
    using T = decltype(t);
    layernorm_forward(x.as<T>(), weight.as<T>(), bias.as<T>(), out.as<T>(), xhat.as<T>(),
                      inv_std.as<T>(), n, d, static_cast<T>(eps));
  });
}

void py_layernorm_backward(const Array& g, const Array& xhat, const Array& weight,
                           const Array& inv_std, Array& grad_x, Array& grad_weight,
                           Array& grad_bias, int64_t n, int64_t d) {
  const char* fn = "layernorm_backward";
  check_same_dtype(fn, {&g, &xhat, &weight, &inv_std, &grad_x, &grad_weight, &grad_bias});
  check_rows(fn, {&g, &xhat, &grad_x}, {&weight, &grad_weight, &grad_bias}, n, d);
  check_size(fn, "inv_std", inv_std, n);
  dispatch_float(fn, g.dtype(), [&](auto t) {
    using T = decltype(t);
    std::vector<T> scratch(static_cast<std::size_t>(9 * d));
    layernorm_backward(g.as<T>(), xhat.as<T>(), weight.as<T>(), inv_std.as<T>(), grad_x.as<T>(),
                       grad_weight.as<T>(), grad_bias.as<T>(), scratch.data(), n, d);
  });
}

void py_softmax_cross_entropy(const Array& logits, const Ids& labels, Array& grad, Array& loss,
                              int64_t n, int64_t k) {
  const char* fn = "softmax_cross_entropy";
  check_same_dtype(fn, {&logits, &grad, &loss});
  if (n < 1 || k < 1) {
    value_error(fn, "needs n >= 1 rows and k >= 1 classes, got n=" + std::to_string(n) +
                        ", k=" + std::to_string(k));
  }
  check_rows(fn, {&logits, &grad}, {}, n, k);
  check_size(fn, "loss", loss, 1);
  if (static_cast<int64_t>(labels.shape(0)) != n) {
    value_error(fn, "got " + std::to_string(labels.shape(0)) + " labels for " + std::to_string(n) +
                        " rows");
  }
  check_ids(fn, labels, k);
  dispatch_float(fn, logits.dtype(), [&](auto t) {
    using T = decltype(t);
    std::vector<T> per_example(static_cast<std::size_t>(n));
    loss.as<T>()[0] =
        softmax_cross_entropy(logits.as<T>(), labels.data(), grad.as<T>(), per_example.data(), n, k,
                              -std::numeric_limits<T>::max());
  });
}

void py_take_rows(const Array& table, const Ids& ids, Array& out, int64_t num_rows, int64_t d) {
  const char* fn = "take_rows";
  check_same_dtype(fn, {&table, &out});
  check_nonnegative(fn, "num_rows", num_rows);
  check_nonnegative(fn, "d", d);
  check_size(fn, "table", table, checked_mul(fn, num_rows, d));
  const int64_t count = static_cast<int64_t>(ids.shape(0));
  check_size(fn, "out", out, checked_mul(fn, count, d));
  check_ids(fn, ids, num_rows);
  dispatch_float(fn, out.dtype(), [&](auto t) {
    using T = decltype(t);
    take_rows(table.as<T>(), ids.data(), out.as<T>(), count, d);
  });
}

void py_add_rows(const Array& rows, const Ids& ids, Array& out, int64_t num_rows, int64_t d) {
  const char* fn = "add_rows";
  check_same_dtype(fn, {&rows, &out});
  check_nonnegative(fn, "num_rows", num_rows);
  check_nonnegative(fn, "d", d);
  const int64_t count = static_cast<int64_t>(ids.shape(0));
  check_size(fn, "rows", rows, checked_mul(fn, count, d));
  check_size(fn, "out", out, checked_mul(fn, num_rows, d));
  check_ids(fn, ids, num_rows);
  dispatch_float(fn, out.dtype(), [&](auto t) {
    using T = decltype(t);
    add_rows(rows.as<T>(), ids.data(), out.as<T>(), count, num_rows, d);
  });
}

/// Checks an LSTM cell kernel's buffers: `wide` of batch·4·hidden elements, `narrow` of
/// batch·hidden.
void check_lstm(const char* fn, Arrays wide, Arrays narrow, int64_t batch, int64_t hidden) {
  check_nonnegative(fn, "batch", batch);
  check_nonnegative(fn, "hidden", hidden);
  const int64_t rows = checked_mul(fn, batch, hidden);
  const int64_t wide_size = checked_mul(fn, rows, 4);
  for (const Array* a : wide) check_size(fn, "a (batch, 4*hidden) buffer", *a, wide_size);
  for (const Array* a : narrow) check_size(fn, "a (batch, hidden) buffer", *a, rows);
}

void py_lstm_cell_forward(const Array& pre, const Array& c, Array& act, Array& h_out, Array& c_out,
                          Array& tanh_c, int64_t batch, int64_t hidden) {
  const char* fn = "lstm_cell_forward";
  check_same_dtype(fn, {&pre, &c, &act, &h_out, &c_out, &tanh_c});
  check_lstm(fn, {&pre, &act}, {&c, &h_out, &c_out, &tanh_c}, batch, hidden);
  dispatch_float(fn, pre.dtype(), [&](auto t) {
    using T = decltype(t);
    lstm_cell_forward(pre.as<T>(), c.as<T>(), act.as<T>(), h_out.as<T>(), c_out.as<T>(),
                      tanh_c.as<T>(), batch, hidden);
  });
}

void py_lstm_cell_backward(const Array& grad_h, const Array& grad_c, const Array& c,
                           const Array& act, const Array& tanh_c, Array& grad_pre,
                           Array& grad_c_prev, int64_t batch, int64_t hidden) {
  const char* fn = "lstm_cell_backward";
  check_same_dtype(fn, {&grad_h, &grad_c, &c, &act, &tanh_c, &grad_pre, &grad_c_prev});
  check_lstm(fn, {&act, &grad_pre}, {&grad_h, &grad_c, &c, &tanh_c, &grad_c_prev}, batch, hidden);
  dispatch_float(fn, act.dtype(), [&](auto t) {
    using T = decltype(t);
    lstm_cell_backward(grad_h.as<T>(), grad_c.as<T>(), c.as<T>(), act.as<T>(), tanh_c.as<T>(),
                       grad_pre.as<T>(), grad_c_prev.as<T>(), batch, hidden);
  });
}

void py_reduce_sum_rows(const Array& a, Array& out, int64_t rows, int64_t cols) {
  const char* fn = "reduce_sum_rows";
  check_same_dtype(fn, {&a, &out});
  check_rows(fn, {&a}, {&out}, rows, cols);
  dispatch_float(fn, out.dtype(), [&](auto t) {
    using T = decltype(t);
    std::vector<T> scratch(static_cast<std::size_t>(9 * cols));
    reduce_sum_rows(a.as<T>(), out.as<T>(), rows, cols, scratch.data());
  });
}

void py_add_row(const Array& a, const Array& row, Array& out, int64_t rows, int64_t cols) {
  const char* fn = "add_row";
  check_same_dtype(fn, {&a, &row, &out});
  check_rows(fn, {&a, &out}, {&row}, rows, cols);
  dispatch_float(fn, out.dtype(), [&](auto t) {
    using T = decltype(t);
    add_row(a.as<T>(), row.as<T>(), out.as<T>(), rows, cols);
  });
}

NB_MODULE(ndarray_backend_cpu, m) {
  m.doc() = R"(needle's compiled CPU backend (C++17, nanobind): the course's backend API.

Array(size, dtype="float32") is a flat, 64-byte-aligned, uninitialised buffer of float32, float64,
int32, int64 or bool elements. Copies, views, setitem, add, mul, maximum, the comparisons, fill and
the reductions take every dtype; the other kernels compute in floating point and raise TypeError
for an integer or boolean buffer.
Kernels write into `out` and return None. compact / ewise_setitem / scalar_setitem / to_numpy
take (shape, strides, offset) in elements (strides may be 0 or negative, up to 16 dims); the
other kernels take compact buffers. Arguments are validated: TypeError for mixed dtypes,
ValueError for wrong sizes or a view reaching outside its buffer.

Project extras:
  set_flush_denormal(enabled) -> bool: set the FTZ+DAZ bits of this thread's MXCSR (x86-64);
      returns False (unsupported) on other architectures.
  get_flush_denormal() -> bool: whether FTZ+DAZ are both set for this thread.
  matmul_strided(a, b, out, m, n, p, a_strides, a_offset, b_strides, b_offset): A @ B for
      strided 2-D views, transposed views read by the BLAS in place.
  ewise_add_setitem(a, out, shape, strides, offset): out's view += compact a.
  release_cached_buffers() -> int, cached_buffer_bytes() -> int: the pool of freed large
      buffers that new Arrays of the same size reuse.
  mt19937_uniform(bitgen, out): np.random.rand's draws from NumPy's MT19937 state, in place.
  set_vector_width(bits) -> int, get_vector_width() -> int: AVX2 (256) or SSE2 (128) for the
      kernels compiled both ways; the same bits either way.)";
  // Arrays still referenced at interpreter exit (module globals, caches, uncollected cycles) are
  // normal for Python, not a refcount bug here; nanobind would list each one on stderr.
  nb::set_leak_warnings(false);
  m.attr("__device_name__") = "cpu";
  m.attr("__tile_size__") = kTileSize;

  nb::class_<Array>(m, "Array", "A flat, aligned, uninitialised buffer of `size` elements.")
      .def(nb::init<int64_t, const std::string&>(), "size"_a, "dtype"_a = "float32")
      .def_prop_ro("size", &Array::size, "Number of elements.")
      .def_prop_ro(
          "dtype", [](const Array& a) { return dtype_name(a.dtype()); },
          "'float32', 'float64', 'int32', 'int64' or 'bool'.")
      .def("ptr", &Array::ptr, "Base address of the buffer, as an int.");

  m.def(
      "fill",
      [](Array& out, nb::handle val) {
        dispatch_any(out.dtype(), [&](auto t) {
          using T = decltype(t);
          std::fill(out.as<T>(), out.as<T>() + out.size(), scalar_as<T>("fill", val));
        });
      },
      "out"_a, "val"_a, "Set every element of out to val (cast to out's dtype).");

  m.def(
      "compact",
      [](const Array& a, Array& out, const std::vector<int64_t>& shape,
         const std::vector<int64_t>& strides, int64_t offset) {
        check_same_dtype("compact", {&a, &out});
        const Layout v = check_view("compact", shape, strides, offset, a.size());
        check_size("compact", "out", out, v.size);
        dispatch_any(out.dtype(),
                     [&](auto t) { compact(a.as<decltype(t)>(), out.as<decltype(t)>(), v); });
      },
      "a"_a, "out"_a, NEEDLE_VIEW_ARGS, "out[k] = a[offset + Σ idx_k·strides], k row-major.");

  m.def(
      "ewise_setitem",
      [](const Array& a, Array& out, const std::vector<int64_t>& shape,
         const std::vector<int64_t>& strides, int64_t offset) {
        check_same_dtype("ewise_setitem", {&a, &out});
        const Layout v = check_view("ewise_setitem", shape, strides, offset, out.size());
        check_size("ewise_setitem", "a", a, v.size);
        dispatch_any(out.dtype(),
                     [&](auto t) { ewise_setitem(a.as<decltype(t)>(), out.as<decltype(t)>(), v); });
      },
      "a"_a, "out"_a, NEEDLE_VIEW_ARGS, "out[offset + Σ idx_k·strides] = a[k] (compact a).");

  m.def(
      "ewise_add_setitem",
      [](const Array& a, Array& out, const std::vector<int64_t>& shape,
         const std::vector<int64_t>& strides, int64_t offset) {
        check_same_dtype("ewise_add_setitem", {&a, &out});
        const Layout v = check_view("ewise_add_setitem", shape, strides, offset, out.size());
        check_size("ewise_add_setitem", "a", a, v.size);
        dispatch_any(out.dtype(), [&](auto t) {
          ewise_add_setitem(a.as<decltype(t)>(), out.as<decltype(t)>(), v);
        });
      },
      "a"_a, "out"_a, NEEDLE_VIEW_ARGS,
      "Project extra: out[offset + Σ idx_k·strides] += a[k] (compact a), the in-place add of\n"
      "a view; the view must not repeat a position (no zero strides or overlaps).");

  m.def(
      "scalar_setitem",
      [](int64_t size, nb::handle val, Array& out, const std::vector<int64_t>& shape,
         const std::vector<int64_t>& strides, int64_t offset) {
        check_nonnegative("scalar_setitem", "size", size);
        const Layout v = check_view("scalar_setitem", shape, strides, offset, out.size());
        if (size != v.size) {
          value_error("scalar_setitem", "size is " + std::to_string(size) + ", prod(shape) is " +
                                            std::to_string(v.size));
        }
        dispatch_any(out.dtype(), [&](auto t) {
          using T = decltype(t);
          scalar_setitem(scalar_as<T>("scalar_setitem", val), out.as<T>(), v);
        });
      },
      "size"_a, "val"_a, "out"_a, NEEDLE_VIEW_ARGS,
      "out[offset + Σ idx·strides] = val over the view; size must be prod(shape).");

  m.def("to_numpy", &to_numpy, "a"_a, NEEDLE_VIEW_ARGS,
        "A new NumPy array of `shape` holding the view's elements (always a copy).");
  m.def("from_numpy", &from_numpy, "x"_a, "out"_a,
        "Copy the first out.size values of a C-contiguous NumPy array of out's dtype.");

  def_ewise<Takes::any>(m, "ewise_add", std::plus<>{}, "out = a + b");
  def_ewise<Takes::any>(m, "ewise_mul", std::multiplies<>{}, "out = a * b");
  def_ewise<Takes::floats>(m, "ewise_div", std::divides<>{}, "out = a / b");
  def_ewise<Takes::any>(m, "ewise_maximum", Maximum{}, "out = maximum(a, b) (NaN propagates)");
  def_ewise<Takes::any>(m, "ewise_eq", Equal{}, "out = 1 where a == b else 0");
  def_ewise<Takes::any>(m, "ewise_ge", GreaterEqual{}, "out = 1 where a >= b else 0");
  def_ewise<Takes::floats>(m, "ewise_power", Power{}, "out = pow(a, b)");

  def_scalar<Takes::any>(m, "scalar_add", std::plus<>{}, "out = a + val");
  def_scalar<Takes::any>(m, "scalar_mul", std::multiplies<>{}, "out = a * val");
  def_scalar<Takes::floats>(m, "scalar_div", std::divides<>{}, "out = a / val");
  def_scalar<Takes::floats>(m, "scalar_power", Power{}, "out = pow(a, val) (C pow semantics)");
  def_scalar<Takes::any>(m, "scalar_maximum", Maximum{}, "out = maximum(a, val)");
  def_scalar<Takes::any>(m, "scalar_eq", Equal{}, "out = 1 where a == val else 0");
  def_scalar<Takes::any>(m, "scalar_ge", GreaterEqual{}, "out = 1 where a >= val else 0");

  def_unary(m, "ewise_log", Log{}, "out = log(a)");
  def_unary(m, "ewise_exp", Exp{}, "out = exp(a)");
  def_unary(m, "ewise_tanh", Tanh{}, "out = tanh(a)");

  def_reduce(
      m, "reduce_sum", [](auto... args) { reduce_sum(args...); }, true,
      "out[i] = sum(a[i*reduce_size:(i+1)*reduce_size])");
  def_reduce(
      m, "reduce_max", [](auto... args) { reduce_max(args...); }, false,
      "out[i] = max(a[i*reduce_size:(i+1)*reduce_size]); reduce_size >= 1");

  m.def("matmul", &py_matmul, "a"_a, "b"_a, "out"_a, "m"_a, "n"_a, "p"_a,
        "out = a @ b for row-major (m,n) and (n,p), through NumPy's BLAS; overwrites out.");
  m.def("matmul_strided", &py_matmul_strided, "a"_a, "b"_a, "out"_a, "m"_a, "n"_a, "p"_a,
        "a_strides"_a, "a_offset"_a, "b_strides"_a, "b_offset"_a,
        "Project extra: out = A @ B for the (m,n) view A of a and the (n,p) view B of b\n"
        "(element strides and offsets, range-checked) into compact (m,p) out, through NumPy's\n"
        "BLAS; a transposed view (one unit stride) is read in place, without a copy.");
  m.def(
      "matmul_tiled", &py_matmul_tiled, "a"_a, "b"_a, "out"_a, "m"_a, "n"_a, "p"_a,
      "Tiled (m,n)@(n,p) on the (r/8, c/8, 8, 8) layout (the course's tiling); zeroes out itself.");

  m.def("sgd_update", &py_sgd_update, "params"_a, "grads"_a, "u"_a, "outs"_a, "lr"_a, "momentum"_a,
        "weight_decay"_a,
        "Project extra: needle's SGD step for a list of parameters in one call, one pass each;\n"
        "each argument but the scalars is a list with one buffer per parameter (u updated in\n"
        "place, the new parameters written to outs).");
  m.def("adam_update", &py_adam_update, "params"_a, "grads"_a, "m"_a, "v"_a, "outs"_a, "lr"_a,
        "beta1"_a, "beta2"_a, "eps"_a, "weight_decay"_a, "bias1"_a, "bias2"_a,
        "Project extra: needle's Adam step for a list of parameters in one call, one pass\n"
        "each; lists as in sgd_update (m, v updated in place); bias1 = 1 - beta1**t and\n"
        "bias2 = 1 - beta2**t are the bias corrections.");
  m.def("batchnorm_forward", &py_batchnorm_forward, "x"_a, "weight"_a, "bias"_a, "out"_a, "xhat"_a,
        "mean"_a, "var"_a, "inv_std"_a, "n"_a, "d"_a, "eps"_a,
        "Project extra: training batch norm of x (n, d), statistics per column, in one pass.");
  m.def("batchnorm_backward", &py_batchnorm_backward, "g"_a, "xhat"_a, "weight"_a, "inv_std"_a,
        "grad_x"_a, "grad_weight"_a, "grad_bias"_a, "n"_a, "d"_a,
        "Project extra: the gradients of batchnorm_forward for out_grad g.");
  m.def("dropout", &py_dropout, "u"_a, "x"_a, "mask"_a, "out"_a, "keep"_a,
        "Project extra: dropout in one pass from the float64 NumPy draws u: mask = [u <= keep]\n"
        "/ keep in float32 (u and keep rounded to it first, as a float32 rand makes them), cast\n"
        "to mask's dtype, and out = x * mask.");
  m.def("relu_backward", &py_relu_backward, "g"_a, "a"_a, "out"_a,
        "Project extra: ReLU's gradient out = g * [a > 0] in one pass.");
  m.def("layernorm_forward", &py_layernorm_forward, "x"_a, "weight"_a, "bias"_a, "out"_a, "xhat"_a,
        "inv_std"_a, "n"_a, "d"_a, "eps"_a,
        "Project extra: layer norm of the rows of x (n, d) in one pass per row; writes out,\n"
        "xhat (n, d) and inv_std (n,).");
  m.def("layernorm_backward", &py_layernorm_backward, "g"_a, "xhat"_a, "weight"_a, "inv_std"_a,
        "grad_x"_a, "grad_weight"_a, "grad_bias"_a, "n"_a, "d"_a,
        "Project extra: the gradients of layernorm_forward for out_grad g.");
  m.def("softmax_cross_entropy", &py_softmax_cross_entropy, "logits"_a, "labels"_a, "grad"_a,
        "loss"_a, "n"_a, "k"_a,
        "Project extra: mean softmax cross-entropy of logits (n, k) against int64 labels (n,)\n"
        "into loss (1,), and its gradient grad = (softmax - one_hot) / n (n, k), in one pass\n"
        "per row.");
  m.def("take_rows", &py_take_rows, "table"_a, "ids"_a, "out"_a, "num_rows"_a, "d"_a,
        "Project extra: out[k] = table[ids[k]] for a (num_rows, d) table and int64 ids;\n"
        "an id outside [0, num_rows) raises ValueError.");
  m.def("add_rows", &py_add_rows, "rows"_a, "ids"_a, "out"_a, "num_rows"_a, "d"_a,
        "Project extra: out = zeros (num_rows, d); out[ids[k]] += rows[k] in order of k.");
  m.def("lstm_cell_forward", &py_lstm_cell_forward, "pre"_a, "c"_a, "act"_a, "h_out"_a, "c_out"_a,
        "tanh_c"_a, "batch"_a, "hidden"_a,
        "Project extra: one LSTM step's gates from the pre-activation (batch, 4*hidden), blocks\n"
        "i, f, g, o, and c: writes act (the activated gates), h', c' and tanh(c').");
  m.def("lstm_cell_backward", &py_lstm_cell_backward, "grad_h"_a, "grad_c"_a, "c"_a, "act"_a,
        "tanh_c"_a, "grad_pre"_a, "grad_c_prev"_a, "batch"_a, "hidden"_a,
        "Project extra: the gradients of lstm_cell_forward: grad_pre (batch, 4*hidden) and the\n"
        "previous cell state's gradient, from those of h' and c'.");
  m.def("matmul_batched", &py_matmul_batched, "a"_a, "b"_a, "out"_a, "batch"_a, "m"_a, "n"_a, "p"_a,
        "Project extra: out[k] = a[k] @ b[k] for k < batch, compact (batch,m,n) and (batch,n,p)\n"
        "buffers, through NumPy's BLAS in one call.");
  m.def("reduce_sum_rows", &py_reduce_sum_rows, "a"_a, "out"_a, "rows"_a, "cols"_a,
        "Project extra: out[j] = sum over i of a[i, j] for a compact (rows, cols) a, in\n"
        "reduce_sum's order (the bits of reduce_sum on the transpose, without copying it).");
  m.def("add_row", &py_add_row, "a"_a, "row"_a, "out"_a, "rows"_a, "cols"_a,
        "Project extra: out[i, j] = a[i, j] + row[j] for a compact (rows, cols) a.");
  m.def(
      "release_cached_buffers", []() { return buffer_pool().clear(); },
      "Project extra: free the cached large buffers of deleted Arrays (the pool reuses\n"
      "blocks >= 1 MiB of the same size, up to 256 MiB); returns the bytes freed.");
  m.def(
      "cached_buffer_bytes", []() { return buffer_pool().cached_bytes(); },
      "Project extra: bytes held by the pool of freed large buffers.");
  m.def(
      "use_blas",
      [](std::uintptr_t sgemm, std::uintptr_t dgemm) {
        blas_gemm().sgemm = reinterpret_cast<Gemm<float>>(sgemm);
        blas_gemm().dgemm = reinterpret_cast<Gemm<double>>(dgemm);
      },
      "sgemm"_a, "dgemm"_a,
      "Project extra: the addresses of the ILP64 CBLAS sgemm and dgemm (64-bit integers) that\n"
      "matrix products call directly, in row blocks on the kernels' threads; 0, 0 goes back to\n"
      "numpy.matmul. The BLAS should run each call on one thread.");
  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1) value_error("set_num_threads", "needs n >= 1, got " + std::to_string(n));
        ThreadPool::instance().set_threads(n);
      },
      "n"_a,
      "Project extra: the threads the kernels use, the caller included (1: no other thread).\n"
      "Results are the same bits at any count.");
  m.def(
      "get_num_threads", []() { return ThreadPool::instance().threads(); },
      "Project extra: the threads the kernels use, the caller included.");
  m.def("mt19937_uniform", &py_mt19937_uniform, "bitgen"_a, "out"_a,
        "Project extra: fill the float64 array out with the next uniform draws of NumPy's\n"
        "MT19937 bit generator, advancing it exactly as np.random.rand(*out.shape) would.");
  m.def("set_vector_width", &set_vector_width, "bits"_a,
        "Project extra: the widest float vectors kernels use, 256 (AVX2, where the CPU has it)\n"
        "or 128 (SSE2); returns the width in use. Results are the same bits at either.");
  m.def(
      "get_vector_width", []() { return use_avx2() ? 256 : 128; },
      "Project extra: the widest float vectors kernels use now, in bits (256 or 128).");
  m.def("set_flush_denormal", &set_flush_denormal, "enabled"_a,
        "Set (True) or clear FTZ+DAZ in this thread's MXCSR; False if unsupported here.");
  m.def("get_flush_denormal", &get_flush_denormal,
        "True when FTZ+DAZ are both set for this thread (always False off x86-64).");
}
