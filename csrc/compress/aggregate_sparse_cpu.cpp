// Sparse aggregation on the CPU: the output is split into chunks; each chunk binary-searches, in every
// message, the first index it owns, then walks the output in L1-sized tiles, adding each message's
// entries that fall in the tile in message order. One pass over the output, one over each message.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common/parallel.h"
#include "aggregate_sparse.h"

namespace ck::CK_BACKEND {
namespace {

// Output elements per tile: large enough that each message has a few cache lines of entries per tile
// (so that walking 64 messages stays streaming), small enough to stay in L2.
constexpr int64_t kTile = int64_t(1) << 15;

// Every message's indices strictly ascending and in [0, size): (message, chunk) tasks in one parallel
// loop (one parallel region, not one per message: each region costs a fork and a barrier, which with
// many messages, or on a loaded machine, adds up). The error names the first bad message, in order.
template <class Index>
void check_indices(const std::vector<Array>& indices, int64_t size) {
  struct Task {
    int64_t message, begin, end;
  };
  std::vector<Task> tasks;
  for (size_t m = 0; m < indices.size(); ++m) {
    const int64_t k = indices[m].size;
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(64, k / (1 << 15)));
    for (int64_t c = 0; c < chunks; ++c)
      tasks.push_back(Task{int64_t(m), k / chunks * c + std::min(c, k % chunks), k / chunks * (c + 1) + std::min(c + 1, k % chunks)});
  }
  std::vector<char> bad(tasks.size(), 0);
  parallel_for(int64_t(tasks.size()), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const Task task = tasks[size_t(t)];
      const Index* idx = static_cast<const Index*>(indices[size_t(task.message)].data);
      bool ok = true;
      int64_t prev = task.begin == 0 ? -1 : int64_t(idx[task.begin - 1]);
      for (int64_t j = task.begin; j < task.end; ++j) {
        ok &= (int64_t(idx[j]) > prev) & (int64_t(idx[j]) < size);
        prev = int64_t(idx[j]);
      }
      bad[size_t(t)] = !ok;
    }
  });
  for (size_t t = 0; t < tasks.size(); ++t) check(!bad[t], bad_indices_message(tasks[t].message, size));
}

template <class T, class Index>
void aggregate(const std::vector<Array>& values, const std::vector<Array>& indices, int64_t size, bool average,
               T* out) {
  using A = acc_t<T>;
  const size_t count = values.size();
  const A divisor = A(count);
  const int chunks = int(std::max<int64_t>(1, std::min<int64_t>(4 * max_threads(), size / kTile)));
  parallel_chunks(size, chunks, [&](int, int64_t begin, int64_t end) {
    std::vector<int64_t> cursor(count);
    for (size_t m = 0; m < count; ++m) {
      const Index* idx = static_cast<const Index*>(indices[m].data);
      cursor[m] = std::lower_bound(idx, idx + indices[m].size, Index(begin)) - idx;
    }
    std::vector<A> buffer(std::is_same_v<T, A> ? 0 : size_t(std::min(kTile, end - begin)));
    for (int64_t tile = begin; tile < end; tile += kTile) {
      const int64_t len = std::min(kTile, end - tile);
      // float32 / float64 add straight into the output tile (it is the accumulator's type); 16-bit types
      // add into a float32 tile buffer and are rounded once at the end.
      A* acc = std::is_same_v<T, A> ? reinterpret_cast<A*>(out + tile) : buffer.data();
      for (int64_t j = 0; j < len; ++j) acc[j] = A(0);
      for (size_t m = 0; m < count; ++m) {
        const Index* idx = static_cast<const Index*>(indices[m].data);
        const T* val = static_cast<const T*>(values[m].data);
        const int64_t k = indices[m].size;
        int64_t j = cursor[m];
        for (; j < k && int64_t(idx[j]) < tile + len; ++j) acc[int64_t(idx[j]) - tile] += A(to_acc(val[j]));
        cursor[m] = j;
      }
      if (average)
        for (int64_t j = 0; j < len; ++j) out[tile + j] = from_acc<T>(acc[j] / divisor);
      else if constexpr (!std::is_same_v<T, A>)
        for (int64_t j = 0; j < len; ++j) out[tile + j] = from_acc<T>(acc[j]);
    }
  });
}

}  // namespace

void sparse_aggregate(const std::vector<Array>& values, const std::vector<Array>& indices, int64_t size,
                      bool average, const Array& out, Stream) {
  with_sparse_aggregate_args(values, indices, size, out, [&](auto vtag, auto itag) {
    using T = typename decltype(vtag)::type;
    using Index = typename decltype(itag)::type;
    check_indices<Index>(indices, size);
    aggregate<T, Index>(values, indices, size, average, static_cast<T*>(out.data));
  });
}

}  // namespace ck::CK_BACKEND
