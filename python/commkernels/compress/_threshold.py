"""Threshold selection (the entries with |x| > v) and estimates of the threshold that keeps about k."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _backend, _checks, _torch_ops
from ._sparse import SparseMsg, _gather_backward, _gather_setup, _randk_kernel, _topk_kernel

_MAX_SIZE = (1 << 31) - 1
_MAX_UINT64 = (1 << 64) - 1
_CHUNK = 1 << 16  # elements per chunk of the count and write passes (at most 1024 chunks)
SAMPLE_FRACTION = 0.01  # estimate_threshold(method="sample") looks at max(SAMPLE_MIN, 1% of x) entries
SAMPLE_MIN = 1000


def _chunks(n: int) -> int:
    return max(1, min(1024, n // _CHUNK))


def _total(counts) -> int:
    return int(counts.sum())


def _threshold_kernel(x, v: float):
    x = x.reshape(-1)
    n = _backend.numel(x)
    mod, stream = _backend.module(x), _backend.stream(x)
    counts = _backend.empty(x, _chunks(n), "int64")
    mod.threshold_count(x, v, counts, stream)
    total = _total(counts)  # a CUDA array is read back here: the output size depends on the data
    values, indices = _backend.empty(x, total), _backend.empty(x, total, "int32")
    mod.threshold_write(x, v, counts, values, indices, stream)
    return _backend.finish(x, values), _backend.finish(x, indices)


def _threshold_fake(x, v):
    n = _torch_ops.torch.library.get_ctx().new_dynamic_size()
    return x.new_empty(n), x.new_empty(n, dtype=_torch_ops.torch.int32)


_threshold_op = _torch_ops.define("threshold", "(Tensor x, float v) -> (Tensor, Tensor)", _threshold_kernel,
                                  _threshold_fake, backward=_gather_backward, setup_context=_gather_setup)


def threshold(x, v: float) -> SparseMsg:
    """The entries of x (flattened) with |x| > v, as a SparseMsg (indices ascending int32).

    The comparison is exact, as if |x| and v were compared in float64; NaN never passes; with v < 0 every
    non-NaN entry passes. Variable size: a count pass and an ordered write pass over fixed chunks of x, so
    the result does not depend on the thread count (on CUDA the count is read back to size the output).
    Differentiable for torch tensors (the gradient flows to the selected entries).

    x: float32, float64, float16 or bfloat16, contiguous, fewer than 2^31 elements. v: a real number.
    """
    _checks.float_array(x, "x")
    _checks.integer(_backend.numel(x), "x.size", 0, _MAX_SIZE)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"v: expected a real number, got {type(v).__name__}")
    v = float(v)
    if math.isnan(v):
        raise ValueError("v: expected a number, got NaN")
    values, indices = _threshold_op(x, v) if _backend.is_torch(x) else _threshold_kernel(x, v)
    return SparseMsg(values, indices, _backend.numel(x))


def _kth_largest(values) -> float:
    """The smallest magnitude among top-k values, NaN counting as the largest (NaN if every one is NaN)."""
    if _backend.is_torch(values):
        mag = values.detach().abs().to(dtype=_torch_ops.torch.float64).cpu().numpy()
    elif _backend.framework(values, "values") == "cupy":
        mag = np.abs(values.get().astype(np.float64))
    else:
        mag = np.abs(np.asarray(values).astype(np.float64))
    if mag.size == 0:
        return math.inf
    finite = mag[~np.isnan(mag)]  # not np.nanmin: it returns NaN for some signalling-NaN payloads
    return float(finite.min()) if finite.size else math.nan


def sample_size(n: int) -> int:
    """How many entries estimate_threshold(method="sample") looks at: min(n, max(1000, ceil(n / 100)))."""
    return min(n, max(SAMPLE_MIN, math.ceil(n * SAMPLE_FRACTION)))


def estimate_threshold(x, k: int, method: str = "exact", seed: int = 0, step: int = 0) -> float:
    """A threshold v such that threshold(x, v) keeps about k entries, as a Python float.

    method "exact": the k-th largest |x| (NaN counts as the largest, as in topk; inf for k = 0), computed
    by topk's select. Then threshold(x, v) keeps the entries strictly above it: k minus those that tie
    with the k-th.
    method "sample" (DGC, Lin et al. 2018): the ceil(k m / n)-th largest |x| among m = sample_size(n) =
    min(n, max(1000, ceil(n / 100))) distinct entries drawn as randk_indices(n, m, seed, step) does
    (Philox keyed (seed, step)); O(m) work after the sample. Exact when m = n.
    seed, step: integers in [0, 2^64), used by "sample" only. The result is read back to the host.
    """
    _checks.float_array(x, "x")
    n = _checks.integer(_backend.numel(x), "x.size", 0, _MAX_SIZE)
    k = _checks.integer(k, "k", 0, n)
    seed = _checks.integer(seed, "seed", 0, _MAX_UINT64)
    step = _checks.integer(step, "step", 0, _MAX_UINT64)
    if method not in ("exact", "sample"):
        raise ValueError(f"method: expected 'exact' or 'sample', got {method!r}")
    if k == 0:
        return math.inf
    flat = x.reshape(-1)
    # The kernels directly, not the torch custom ops: the result is a host float, with nothing to trace or
    # differentiate, and the ops' dispatch cost more than the sample's own work at d = 1e6.
    if _backend.is_torch(flat):
        flat = flat.detach().contiguous()
    if method == "exact":
        return _kth_largest(_topk_kernel(flat, k)[0])
    m = sample_size(n)
    sample = _randk_kernel(flat, m, seed, step, False)[0]
    return _kth_largest(_topk_kernel(sample, min(m, math.ceil(k * m / n)))[0])
