// The cache of large host output buffers (csrc/common/host_pool.h), handed out as CPU torch tensors.
#include <nanobind/stl/string.h>

#include <string>

#include "../common/host_pool.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace pool = ck::host_pool;

CK_BINDINGS(bind_host_pool) {
  // A new 1-D CPU torch tensor of n elements whose memory, once the tensor dies, returns to the cache.
  m.def("host_buffer", [](int64_t n, const std::string& dtype) {
    nb::dlpack::dtype dt;
    size_t item = 0;
    if (dtype == "float32") dt = nb::dtype<float>(), item = 4;
    else if (dtype == "float64") dt = nb::dtype<double>(), item = 8;
    else if (dtype == "float16") dt = {uint8_t(nb::dlpack::dtype_code::Float), 16, 1}, item = 2;
    else if (dtype == "bfloat16") dt = {uint8_t(nb::dlpack::dtype_code::Bfloat), 16, 1}, item = 2;
    else if (dtype == "int32") dt = nb::dtype<int32_t>(), item = 4;
    else if (dtype == "int64") dt = nb::dtype<int64_t>(), item = 8;
    else if (dtype == "uint8") dt = nb::dtype<uint8_t>(), item = 1;
    else throw ck::TypeError("dtype: expected float32, float64, float16, bfloat16, int32, int64 or uint8, got " + dtype);
    ck::check(n >= 0, "n: expected n >= 0");
    pool::Block* block = pool::take(size_t(n) * item);
    nb::capsule owner;
    try {
      owner = nb::capsule(block, [](void* b) noexcept { pool::give_back(static_cast<pool::Block*>(b)); });
    } catch (...) {
      pool::give_back(block);
      throw;
    }
    const size_t shape[1] = {size_t(n)};
    return nb::ndarray<nb::pytorch, nb::c_contig, nb::device::cpu>(block->data, 1, shape, owner, nullptr, dt,
                                                                   nb::device::cpu::value);
  }, nb::arg("n"), nb::arg("dtype"));
  m.def("host_pool_release", [] { return pool::release(); });
  m.def("host_pool_held", [] { return pool::held(); });
}

}  // namespace
