// The same tiny module bound with nanobind or pybind11 (BENCH_PYBIND11), to measure what one
// call costs in each: a no-op, and ewise_add on a small buffer with needle's size checks.
#include <cstdint>
#include <vector>

#ifdef BENCH_PYBIND11
#include <pybind11/pybind11.h>
namespace bind = pybind11;
#define BENCH_MODULE(name, m) PYBIND11_MODULE(name, m)
#else
#include <nanobind/nanobind.h>
namespace bind = nanobind;
#define BENCH_MODULE(name, m) NB_MODULE(name, m)
#endif

struct Array {
  explicit Array(int64_t size) : data(static_cast<std::size_t>(size)) {}
  std::vector<float> data;
};

void ewise_add(const Array& a, const Array& b, Array& out) {
  if (a.data.size() != out.data.size() || b.data.size() != out.data.size()) {
    throw bind::value_error("ewise_add: sizes differ");
  }
  for (std::size_t i = 0; i < out.data.size(); ++i) out.data[i] = a.data[i] + b.data[i];
}

BENCH_MODULE(BENCH_NAME, m) {
  bind::class_<Array>(m, "Array").def(bind::init<int64_t>());
  m.def("noop", [] {});
  m.def("ewise_add", &ewise_add);
}
