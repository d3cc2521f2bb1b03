"""The kernels inside torch.distributed (``shared/specs/distributed.md``).

DDP communication hooks, each a state class and a hook function for
``ddp_model.register_comm_hook(state, hook)``:

| state, hook | what a rank sends per bucket of d elements | collective |
|---|---|---|
| ``TopKState``, ``topk_hook`` | k values + k int32 indices (ef_topk_, EF), or a pack()ed buffer | all_gather |
| ``RandKState``, ``randk_hook`` | k values (indices from the shared seed) | all_reduce |
| ``SignState``, ``sign_hook`` | ceil(d / 8) sign bytes + a float32 scale (worker and server EF) | all_gather |
| ``QsgdState``, ``qsgd_hook`` | packed QSGD codes + float32 norms | all_gather |
| ``PowerSGDState``, ``powersgd_hook`` | rank-r P and Q (+ the uncompressed parts) | 2 all_reduces |

Every state counts the payload bytes it handed to collectives (``bytes_last_step``, ``bytes_total``,
``dense_bytes_last_step``) and keys its error-feedback state by parameters, so it survives DDP's bucket
rebuild (``_state``).

Collectives (``_collectives``): ``robust_all_reduce(tensor, rule, f, group)`` (all_gather, then a
``commkernels.aggregate`` rule: the same result on every rank), ``gossip(tensor, graph, step, group)``
(one mixing round with neighbours only, batch_isend_irecv; static, time-varying or one-peer exponential
graphs) and ``push_sum`` (directed graphs), ``dispatch(x, plan, group)`` / ``combine(y, dispatched)``
(expert parallel, all_to_all_single with split sizes from an MoE plan's counts).

Importing this module imports torch. The hook modules do not use ``from __future__ import annotations``:
DDP's ``register_comm_hook`` checks the hooks' annotations as objects.
"""

from ._collectives import (Dispatched, combine, dispatch, gossip, mixing_matrix, one_peer_exponential, push_sum,
                           robust_all_reduce)
from ._powersgd_hook import PowerSGDState, powersgd_hook
from ._quantized_hooks import QsgdState, SignState, qsgd_hook, rank_seed, sign_hook
from ._sparse_hooks import RandKState, TopKState, randk_hook, topk_hook
from ._state import HookState, Layout, Residuals

__all__ = [
    "HookState", "Layout", "Residuals",
    "TopKState", "topk_hook", "RandKState", "randk_hook",
    "SignState", "sign_hook", "QsgdState", "qsgd_hook", "rank_seed",
    "PowerSGDState", "powersgd_hook",
    "robust_all_reduce", "gossip", "push_sum", "mixing_matrix", "one_peer_exponential",
    "dispatch", "combine", "Dispatched",
]
