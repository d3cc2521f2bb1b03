// Bindings of the coordinate-wise rules (csrc/aggregate/coord.h). X is passed as (parts, n): see
// aggregate_rows.h. rule: "median", "trimmed_mean", "meamed" or "phocas"; even: "mean", "lower", "upper".
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>

#include "../aggregate/coord.h"
#include "aggregate_rows.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

ck::CoordArgs coord_args(const std::string& rule, const std::string& even, int64_t f) {
  ck::CoordArgs args;
  if (rule == "median") args.rule = ck::CoordRule::median;
  else if (rule == "trimmed_mean") args.rule = ck::CoordRule::trimmed_mean;
  else if (rule == "meamed") args.rule = ck::CoordRule::meamed;
  else if (rule == "phocas") args.rule = ck::CoordRule::phocas;
  else throw ck::ValueError("rule: expected median, trimmed_mean, meamed or phocas, got " + rule);
  if (even == "mean") args.even = ck::EvenMedian::mean;
  else if (even == "lower") args.even = ck::EvenMedian::lower;
  else if (even == "upper") args.even = ck::EvenMedian::upper;
  else throw ck::ValueError("even: expected 'mean', 'lower' or 'upper', got " + even);
  args.f = f;
  return args;
}

CK_BINDINGS(bind_aggregate_coord) {
  m.def(
      "aggregate_coordinate_rule",
      [](const std::vector<In>& parts, int64_t n, const std::string& rule, const std::string& even, int64_t f,
         const Out& out, uintptr_t stream) {
        const ck::CoordArgs args = coord_args(rule, even, f);
        backend::coordinate_rule(rows_from(parts, n), args, as_array(out, "out"), stream_of(stream, out));
      },
      nb::arg("parts").noconvert(), nb::arg("n"), nb::arg("rule"), nb::arg("even"), nb::arg("f"),
      nb::arg("out").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
