// nearest.h on the CPU: coordinates split over threads; each column gathered, sorted and reduced alone.
#include <vector>

#include "../common/parallel.h"
#include "nearest.h"

namespace ck::CK_BACKEND {

void nearest_median_mean(const Rows& rows, int64_t beta, const Array& out, Stream) {
  check_nearest_args(rows, beta, out);
  dispatch_float(rows.dtype, "X", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const RowView<T> view = host_view<T>(rows);
    T* o = static_cast<T*>(out.data);
    const int theta = int(rows.n);
    parallel_for(rows.d, 4096, [&](int64_t j0, int64_t j1) {
      std::vector<A> v(static_cast<size_t>(theta));
      for (int64_t j = j0; j < j1; ++j) {
        for (int i = 0; i < theta; ++i) v[size_t(i)] = to_acc(view.row(i)[j]);
        nearest_sort(v.data(), theta);
        o[j] = from_acc<T>(nearest_median_mean_sorted(v.data(), theta, int(beta)));
      }
    });
  });
}

}  // namespace ck::CK_BACKEND
