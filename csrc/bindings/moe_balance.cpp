// Bindings of the MoE balancing kernels and expert choice (csrc/moe/balance.h, expert_choice.h).
#include "../moe/balance.h"
#include "../moe/expert_choice.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

CK_BINDINGS(bind_moe_balance) {
  m.def(
      "moe_load_balancing_loss",
      [](const In& probs, const In& ids, int64_t T, int64_t E, int64_t k, bool first_only, const Out& loss,
         const Out& fraction, uintptr_t stream) {
        backend::load_balancing_loss(as_array(probs, "probs"), as_array(ids, "ids"), T, E, k, first_only,
                                     as_array(loss, "loss"), as_array(fraction, "fraction"),
                                     stream_of(stream, probs));
      },
      nb::arg("probs").noconvert(), nb::arg("ids").noconvert(), nb::arg("T"), nb::arg("E"), nb::arg("k"),
      nb::arg("first_only"), nb::arg("loss").noconvert(), nb::arg("fraction").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "moe_z_loss",
      [](const In& logits, int64_t T, int64_t E, const Out& loss, const Out& lse, uintptr_t stream) {
        backend::z_loss(as_array(logits, "logits"), T, E, as_array(loss, "loss"), as_array(lse, "lse"),
                        stream_of(stream, logits));
      },
      nb::arg("logits").noconvert(), nb::arg("T"), nb::arg("E"), nb::arg("loss").noconvert(),
      nb::arg("lse").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "moe_z_loss_backward",
      [](const In& logits, const In& lse, const In& grad, int64_t T, int64_t E, const Out& grad_logits,
         uintptr_t stream) {
        backend::z_loss_backward(as_array(logits, "logits"), as_array(lse, "lse"), as_array(grad, "grad"), T, E,
                                 as_array(grad_logits, "grad_logits"), stream_of(stream, logits));
      },
      nb::arg("logits").noconvert(), nb::arg("lse").noconvert(), nb::arg("grad").noconvert(), nb::arg("T"),
      nb::arg("E"), nb::arg("grad_logits").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "moe_update_expert_bias",
      [](const Out& bias, const In& counts, int64_t E, double rate, uintptr_t stream) {
        backend::update_expert_bias(as_array(bias, "bias"), as_array(counts, "counts"), E, rate,
                                    stream_of(stream, bias));
      },
      nb::arg("bias").noconvert(), nb::arg("counts").noconvert(), nb::arg("E"), nb::arg("rate"),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "moe_expert_choice",
      [](const In& scores, int64_t T, int64_t E, int64_t C, const Out& weights, const Out& token_ids,
         uintptr_t stream) {
        backend::expert_choice(as_array(scores, "scores"), T, E, C, as_array(weights, "weights"),
                               as_array(token_ids, "token_ids"), stream_of(stream, scores));
      },
      nb::arg("scores").noconvert(), nb::arg("T"), nb::arg("E"), nb::arg("capacity"),
      nb::arg("weights").noconvert(), nb::arg("token_ids").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
