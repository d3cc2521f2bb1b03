"""Server-side recompression with the server's own error feedback, as in MASHA (both directions
compressed) and 1-bit Adam: aggregate the workers' sparse messages, add the server residual, recompress
with top-k, keep what was not sent."""

from __future__ import annotations

from .. import _backend, _checks
from ._aggregate import sparse_aggregate
from ._sparse import _MAX_SIZE, SparseMsg, ef_topk_

_DTYPES = ("float32", "float64", "float16", "bfloat16")


class ServerCompressor:
    """The server side of bidirectional compression.

    ``step(msgs)`` sums (or averages) the workers' SparseMsgs into a dense buffer, then sends
    ``ef_topk_(buffer, residual, k)``: p = residual + aggregate, the message is topk(p, k), and the
    server residual keeps p with the sent entries zeroed (EF14 on the server).

    Deterministic: the aggregate is one sparse_aggregate pass into the buffer (each element added up in
    message list order, no atomics) in the accumulation dtype: float32, or float64 when ``dtype`` is
    float64. Message indices must be strictly ascending in [0, size), as every SparseMsg the library makes
    is (ValueError otherwise). The buffer and the residual are allocated once, here.

    size: elements of the dense vector. k: entries per downlink message, 0 <= k <= size.
    dtype: the wire dtype of the downlink values (float32, float64, float16 or bfloat16). For a 16-bit
    dtype the values are rounded to it, and the rounding error goes back into the residual, so nothing
    is lost. like: an array whose framework and device the server uses (NumPy on the CPU by default).
    """

    def __init__(self, size: int, k: int, dtype: str = "float32", like=None):
        self.size = _checks.integer(size, "size", 0, _MAX_SIZE)
        self.k = _checks.integer(k, "k", 0, self.size)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype: expected one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.dtype = dtype
        self.acc_dtype = "float64" if dtype == "float64" else "float32"
        if like is None:
            like = _backend.empty_on("numpy", "cpu", 0, "float32")
        fw = _backend.framework(like, "like")
        if fw == "jax":
            raise TypeError("like: JAX arrays are immutable; the server keeps state in place: "
                            "pass a NumPy, torch or CuPy array")
        self._like = like
        self.buffer = _zeros(_backend.empty(like, self.size, self.acc_dtype))
        self.residual = _zeros(_backend.empty(like, self.size, self.acc_dtype))

    def aggregate(self, msgs, average: bool = True):
        """The dense sum (or mean) of msgs, in the server's buffer (overwritten, returned): one
        sparse_aggregate pass, after the values are cast to the accumulation dtype where they differ
        (k values per message, not the dense vector)."""
        msgs = [self._check(msg, j) for j, msg in enumerate(msgs)]
        if not msgs:
            return _zeros(self.buffer)
        return sparse_aggregate(msgs, self.size, average=average, out=self.buffer)

    def step(self, msgs, average: bool = True) -> SparseMsg:
        """Aggregates msgs (mean when ``average``, else sum), adds the residual, recompresses; returns the
        downlink SparseMsg (values in ``dtype``, indices int32 ascending) and updates the residual."""
        g = self.aggregate(msgs, average)
        msg = ef_topk_(g, self.residual, self.k)
        if self.dtype == self.acc_dtype:
            return msg
        values, indices = msg.values, msg.indices
        if _backend.is_torch(values):
            import torch

            sent = values.to(getattr(torch, self.dtype))
            self.residual[indices] += values - sent.to(values.dtype)
        else:
            sent = values.astype(self.dtype)
            self.residual[indices] += values - sent.astype(values.dtype)
        return SparseMsg(sent, indices, self.size)

    def reset(self) -> None:
        """Forgets the residual."""
        _zeros(self.residual)

    def _check(self, msg, j: int):
        name = f"msgs[{j}]"
        if not isinstance(msg, SparseMsg):
            raise TypeError(f"{name}: expected a SparseMsg, got {type(msg).__name__}")
        values, indices, size = msg
        _checks.same_place(self._like, values, "the server's arrays", f"{name}.values")
        _checks.same_place(values, indices, f"{name}.values", f"{name}.indices")
        if _backend.dtype_name(values) not in _DTYPES:
            raise TypeError(f"{name}.values: expected a floating-point dtype, got {_backend.dtype_name(values)}")
        if _backend.dtype_name(indices) not in _backend.INDEX_DTYPES:
            raise TypeError(f"{name}.indices: expected int32 or int64, got {_backend.dtype_name(indices)}")
        if size != self.size:
            raise ValueError(f"{name}.size: expected {self.size}, got {size}")
        if _backend.numel(values) != _backend.numel(indices):
            raise ValueError(f"{name}: {_backend.numel(values)} values but {_backend.numel(indices)} indices")
        if _backend.dtype_name(values) != self.acc_dtype:
            values = values.to(self.buffer.dtype) if _backend.is_torch(values) else values.astype(self.acc_dtype)
        if _backend.dtype_name(indices) != "int64":  # one index dtype for sparse_aggregate
            indices = indices.long() if _backend.is_torch(indices) else indices.astype("int64")
        return SparseMsg(values.reshape(-1), indices.reshape(-1), size)


def _zeros(a):
    if _backend.is_torch(a):
        a.zero_()
    else:
        a.fill(0)
    return a
