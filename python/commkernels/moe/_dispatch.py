"""plan, permute, combine: moving tokens to expert-sorted rows and back, gather-based, with autograd."""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import _backend, _checks, _eager, _torch_ops

_MAX = (1 << 31) - 1
DROP_POLICIES = ("position", "score")


class Plan(NamedTuple):
    """Where each (token, slot) pair of a routing goes: arrays in the caller's framework and device.

    counts [E] int64: pairs kept per expert. offsets [E+1] int64: expert e owns rows [offsets[e],
    offsets[e+1]); its first counts[e] rows hold its pairs in token order, the rest are padding.
    row_of [T, k] int32: the row of pair (t, j), -1 when dropped. src_of [rows] int32: the pair t*k + j held
    by a row, T*k (the sentinel, as vLLM's sorted_token_ids) for a padding row. block_expert [rows / align]
    int32 (None when align = 1): the expert of each block of align rows, -1 for padding blocks (grouped GEMMs).

    rows is known on the host without reading anything back: E * round_up(capacity, align) with a capacity
    (expert e owns rows [e*Cp, (e+1)*Cp)); else T*k when align = 1 (no padding), or the upper bound
    T*k + E*(align - 1) when align > 1, the rows from offsets[E] on being padding.

    With align = block_size and no capacity, (src_of, block_expert, offsets[E]) are vLLM's
    moe_align_block_size outputs (sorted_token_ids with sentinel T*k, expert_ids, num_tokens_post_padded).
    """

    counts: Any
    offsets: Any
    row_of: Any
    src_of: Any
    block_expert: Any
    num_experts: int
    capacity: int | None
    align: int

    @property
    def num_tokens(self) -> int:
        return int(self.row_of.shape[0])

    @property
    def k(self) -> int:
        return int(self.row_of.shape[1])

    @property
    def rows(self) -> int:
        return int(self.src_of.shape[0])


def num_rows(tokens: int, k: int, num_experts: int, capacity: int | None, align: int) -> int:
    """The rows of a plan (see Plan), computable on the host from the sizes alone."""
    if capacity is not None:
        return num_experts * (-(-capacity // align) * align)
    return tokens * k + (num_experts * (align - 1) if align > 1 else 0)


# ---- plan ---------------------------------------------------------------------------------------------

def _plan_kernel(ids, num_experts, capacity, by_score, align, weights):
    tokens, k = tuple(ids.shape)
    rows = num_rows(tokens, k, num_experts, None if capacity < 0 else capacity, align)
    counts, offsets = _backend.empty(ids, num_experts, "int64"), _backend.empty(ids, num_experts + 1, "int64")
    row_of, src_of = _backend.empty(ids, tokens * k, "int32"), _backend.empty(ids, rows, "int32")
    block_expert = _backend.empty(ids, rows // align if align > 1 else 0, "int32")
    _backend.module(ids).moe_plan(ids, tokens, k, num_experts, capacity, by_score, align, weights, counts, offsets,
                                  row_of, src_of, block_expert if align > 1 else None, _backend.stream(ids))
    out = (counts, offsets, row_of.reshape(tokens, k), src_of, block_expert)
    return tuple(_backend.finish(ids, a) for a in out)


def _plan_fake(ids, num_experts, capacity, by_score, align, weights):
    torch = _torch_ops.torch
    tokens, k = ids.shape
    rows = num_rows(tokens, k, num_experts, None if capacity < 0 else capacity, align)
    return (ids.new_empty(num_experts, dtype=torch.int64), ids.new_empty(num_experts + 1, dtype=torch.int64),
            ids.new_empty((tokens, k), dtype=torch.int32), ids.new_empty(rows, dtype=torch.int32),
            ids.new_empty(rows // align if align > 1 else 0, dtype=torch.int32))


_plan_op = _torch_ops.define(
    "moe_plan",
    "(Tensor ids, int num_experts, int capacity, bool by_score, int align, Tensor? weights) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    _plan_kernel, _plan_fake)


def plan(ids, num_experts: int, capacity: int | None = None, drop_policy: str = "position", align: int = 1,
         weights=None) -> Plan:
    """The dispatch plan of a routing: a deterministic stable counting sort of the T*k (token, slot) pairs
    by expert, keeping token order (then slot order) inside each expert. See Plan for the layout.

    capacity: None (no drops) or the most pairs an expert keeps. drop_policy: "position" (the earliest
    pairs win, as Megatron-Core / Switch) or "score" (the pairs of largest ``weights`` win, ties to the
    earlier pair, NaN counting as the largest; needs weights [T, k] float32/float64, e.g. route's).
    align: pad each expert's rows to a multiple of align (grouped GEMM blocks, vLLM's
    moe_align_block_size); block_expert is then filled.

    No host synchronisation: the output sizes depend only on T, k, E, capacity and align. ids: [T, k]
    int32 or int64, contiguous, in [0, num_experts): out-of-range ids raise ValueError on the CPU; on the
    GPU (which cannot raise without a read-back) they are dropped (row_of = -1, counted nowhere).
    """
    tk = _eager.index_matrix(ids)
    if (tk is not None and weights is None and drop_policy == "position" and tk[0] * tk[1] <= _MAX - 1
            and _eager.small_int(num_experts, 1, _MAX) and _eager.small_int(align, 1, _MAX)
            and (capacity is None or _eager.small_int(capacity, 0, _MAX))
            and num_rows(tk[0], tk[1], num_experts, capacity, align) <= _MAX and _eager.plain_cpu(ids)):
        # the checks below, passed
        counts, offsets, row_of, src_of, block_expert = _plan_eager(
            ids, num_experts, -1 if capacity is None else capacity, False, align, None)
        return Plan(counts, offsets, row_of, src_of, block_expert, num_experts, capacity, align)
    _backend.framework(ids, "ids")
    if _backend.dtype_name(ids) not in _backend.INDEX_DTYPES:
        raise TypeError(f"ids: expected int32 or int64, got {_backend.dtype_name(ids)}")
    _checks.contiguous(ids, "ids")
    if len(ids.shape) != 2 or ids.shape[1] < 1:
        raise ValueError(f"ids: expected a [T, k] array with k >= 1, got shape {tuple(ids.shape)}")
    tokens, k = tuple(ids.shape)
    _checks.integer(tokens * k, "T * k", 0, _MAX - 1)
    num_experts = _checks.integer(num_experts, "num_experts", 1, _MAX)
    align = _checks.integer(align, "align", 1, _MAX)
    if capacity is not None:
        capacity = _checks.integer(capacity, "capacity", 0, _MAX)
    if drop_policy not in DROP_POLICIES:
        raise ValueError(f"drop_policy: expected 'position' or 'score', got {drop_policy!r}")
    by_score = drop_policy == "score" and capacity is not None
    if drop_policy == "score" and weights is None:
        raise ValueError("weights: drop_policy='score' needs the routing weights [T, k]")
    if by_score:
        _checks.same_place(ids, weights, "ids", "weights")
        _checks.contiguous(weights, "weights")
        if _backend.dtype_name(weights) not in ("float32", "float64"):
            raise TypeError(f"weights: expected float32 or float64, got {_backend.dtype_name(weights)}")
        if tuple(weights.shape) != (tokens, k):
            raise ValueError(f"weights: expected shape {(tokens, k)} like ids, got {tuple(weights.shape)}")
        if _backend.is_torch(weights):
            weights = weights.detach()
    else:
        weights = None
    _checks.integer(num_rows(tokens, k, num_experts, capacity, align), "rows", 0, _MAX)
    args = (ids, num_experts, -1 if capacity is None else capacity, by_score, align, weights)
    if not _backend.is_torch(ids):
        kernel = _plan_kernel
    else:
        kernel = _plan_eager if _eager.plain_cpu(ids, weights) else _plan_op
    counts, offsets, row_of, src_of, block_expert = kernel(*args)
    return Plan(counts, offsets, row_of, src_of, block_expert if align > 1 else None, num_experts, capacity, align)


def _plan_eager(ids, num_experts, capacity, by_score, align, weights):
    """_plan_kernel for plain CPU torch tensors (see _eager): no dispatcher, capsules for nanobind, and no
    block_expert array when align = 1."""
    torch = _torch_ops.torch
    tokens, k = ids.shape
    rows = num_rows(tokens, k, num_experts, None if capacity < 0 else capacity, align)
    counts, offsets = torch.empty(num_experts, dtype=torch.int64), torch.empty(num_experts + 1, dtype=torch.int64)
    row_of, src_of = torch.empty((tokens, k), dtype=torch.int32), torch.empty(rows, dtype=torch.int32)
    block_expert = torch.empty(rows // align, dtype=torch.int32) if align > 1 else None
    dl = _eager.dl
    _backend._cpu.moe_plan(dl(ids), tokens, k, num_experts, capacity, by_score, align, dl(weights), dl(counts),
                           dl(offsets), dl(row_of), dl(src_of), dl(block_expert), 0)
    return counts, offsets, row_of, src_of, block_expert


# ---- permute, combine and their gradients -------------------------------------------------------------

_output = _backend.output_buffer  # large CPU torch outputs from the host buffer cache


def release_cached_memory() -> int:
    """Frees the host buffers kept for commkernels' large CPU torch outputs; returns the bytes freed.

    permute, combine and their gradients (and aggregate's results) take outputs of 8 MiB or more (CPU torch
    tensors) from a cache: when such an output dies its memory is kept, at most min(RAM / 8, 4 GiB) of it,
    and the next output of the same size reuses it, since touching a fresh mapping costs a page fault per
    4 KiB page. Call this to hand the unused buffers back to the system (buffers still in use return to the
    cache when they die). The same as ``commkernels.release_cached_memory``."""
    return _backend.release_cached_memory()


def _sizes(row_of, src_of, hidden):
    tokens, k = tuple(row_of.shape)
    return tokens, k, int(src_of.shape[0]), hidden


def _permute_kernel(x, src_of, row_of, weights):
    tokens, k, rows, hidden = _sizes(row_of, src_of, x.shape[1])
    out = _output(x, rows * hidden)
    _backend.module(x).moe_permute(x, src_of, weights, tokens, k, rows, hidden, out, _backend.stream(x))
    return _backend.finish(x, out.reshape(rows, hidden))


def _permute_fake(x, src_of, row_of, weights):
    return x.new_empty((src_of.shape[0], x.shape[1]))


def _combine_kernel(y, row_of, src_of, weights):
    tokens, k, rows, hidden = _sizes(row_of, src_of, y.shape[1])
    out = _output(y, tokens * hidden)
    _backend.module(y).moe_combine(y, row_of, weights, tokens, k, rows, hidden, out, _backend.stream(y))
    return _backend.finish(y, out.reshape(tokens, hidden))


def _combine_fake(y, row_of, src_of, weights):
    return y.new_empty((row_of.shape[0], y.shape[1]))


def _pair_dots_kernel(a, b, row_of, src_of, dtype):
    tokens, k, rows, hidden = _sizes(row_of, src_of, a.shape[1])
    out = _backend.empty(a, tokens * k, str(dtype).removeprefix("torch."))
    _backend.module(a).moe_pair_dots(a, b, row_of, tokens, k, rows, hidden, out, _backend.stream(a))
    return out.reshape(tokens, k)


def _pair_dots_fake(a, b, row_of, src_of, dtype):
    return a.new_empty(tuple(row_of.shape), dtype=dtype)


def _move_setup(ctx, inputs, output):
    ctx.save_for_backward(*(a for a in inputs if not isinstance(a, _torch_ops.torch.dtype)))


# pair_dots: d[t, j] = dot(a[t], b[row_of[t, j]]).  da = combine(b, g);  db = permute(a, g)
def _pair_dots_backward(ctx, grad):
    a, b, row_of, src_of = ctx.saved_tensors
    grad = grad.contiguous()
    ga = _combine_op(b, row_of, src_of, grad) if ctx.needs_input_grad[0] else None
    gb = _permute_op(a, src_of, row_of, grad) if ctx.needs_input_grad[1] else None
    return ga, gb, None, None, None


_pair_dots_op = _torch_ops.define(
    "moe_pair_dots", "(Tensor a, Tensor b, Tensor row_of, Tensor src_of, ScalarType dtype) -> Tensor",
    _pair_dots_kernel, _pair_dots_fake, backward=_pair_dots_backward, setup_context=_move_setup)


# permute: out[r] = w[s] x[s // k] (s = src_of[r]).  dx = combine(g, w);  dw[t, j] = dot(x[t], g[row_of[t, j]])
def _permute_backward(ctx, grad):
    x, src_of, row_of, weights = ctx.saved_tensors
    grad = grad.contiguous()
    gx = _combine_op(grad, row_of, src_of, weights) if ctx.needs_input_grad[0] else None
    gw = None
    if weights is not None and ctx.needs_input_grad[3]:
        gw = _pair_dots_op(x, grad, row_of, src_of, weights.dtype)
    return gx, None, None, gw


# combine_backward: both gradients of combine at once, gy = permute(g, w) and gw = pair_dots(g, y), in one
# pass over the tokens (g[t] read once for its k rows). Its own gradients, given (ggy, ggw):
#   dy = permute(g, ggw);  dg = combine(ggy, w) + combine(y, ggw);  dw = pair_dots(g, ggy)
def _combine_backward_kernel(y, grad, row_of, src_of, weights):
    tokens, k, rows, hidden = _sizes(row_of, src_of, y.shape[1])
    grad_y, grad_w = _output(y, rows * hidden), _backend.empty(weights, tokens * k)
    _backend.module(y).moe_combine_backward(y, grad, row_of, src_of, weights, tokens, k, rows, hidden, grad_y, grad_w,
                                            _backend.stream(y))
    return grad_y.reshape(rows, hidden), grad_w.reshape(tokens, k)


def _combine_backward_fake(y, grad, row_of, src_of, weights):
    return y.new_empty(tuple(y.shape)), weights.new_empty(tuple(weights.shape))


def _combine_backward_backward(ctx, ggy, ggw):
    y, grad, row_of, src_of, weights = ctx.saved_tensors
    need_y, need_grad, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[4]
    ggy = None if ggy is None else ggy.contiguous()
    ggw = None if ggw is None else ggw.contiguous()
    dy = _permute_op(grad, src_of, row_of, ggw) if need_y and ggw is not None else None
    dg = None
    if need_grad:
        if ggy is not None:
            dg = _combine_op(ggy, row_of, src_of, weights)
        if ggw is not None:
            part = _combine_op(y, row_of, src_of, ggw)
            dg = part if dg is None else dg + part
    dw = _pair_dots_op(grad, ggy, row_of, src_of, weights.dtype) if need_w and ggy is not None else None
    return dy, dg, None, None, dw


_combine_backward_op = _torch_ops.define(
    "moe_combine_backward",
    "(Tensor y, Tensor grad, Tensor row_of, Tensor src_of, Tensor weights) -> (Tensor, Tensor)",
    _combine_backward_kernel, _combine_backward_fake, backward=_combine_backward_backward, setup_context=_move_setup)


# combine: out[t] = sum_j w[t, j] y[row_of[t, j]].  dy = permute(g, w);  dw[t, j] = dot(g[t], y[row_of[t, j]])
def _combine_backward(ctx, grad):
    y, row_of, src_of, weights = ctx.saved_tensors
    grad = grad.contiguous()
    need_y, need_w = ctx.needs_input_grad[0], weights is not None and ctx.needs_input_grad[3]
    if need_y and need_w:
        gy, gw = _combine_backward_op(y, grad, row_of, src_of, weights)
        return gy, None, None, gw
    gy = _permute_op(grad, src_of, row_of, weights) if need_y else None
    gw = _pair_dots_op(grad, y, row_of, src_of, weights.dtype) if need_w else None
    return gy, None, None, gw


_permute_op = _torch_ops.define("moe_permute", "(Tensor x, Tensor src_of, Tensor row_of, Tensor? weights) -> Tensor",
                                _permute_kernel, _permute_fake, backward=_permute_backward, setup_context=_move_setup)
_combine_op = _torch_ops.define("moe_combine", "(Tensor y, Tensor row_of, Tensor src_of, Tensor? weights) -> Tensor",
                                _combine_kernel, _combine_fake, backward=_combine_backward, setup_context=_move_setup)


def _permute_out_kernel(x, src_of, row_of, weights, out):
    tokens, k, rows, hidden = _sizes(row_of, src_of, x.shape[1])
    _backend.module(x).moe_permute(x, src_of, weights, tokens, k, rows, hidden, out, _backend.stream(x))


def _combine_out_kernel(y, row_of, src_of, weights, out):
    tokens, k, rows, hidden = _sizes(row_of, src_of, y.shape[1])
    _backend.module(y).moe_combine(y, row_of, weights, tokens, k, rows, hidden, out, _backend.stream(y))


def _no_fake(*args):
    return None


_permute_out_op = _torch_ops.define(
    "moe_permute_out", "(Tensor x, Tensor src_of, Tensor row_of, Tensor? weights, Tensor(a!) out) -> ()",
    _permute_out_kernel, _no_fake, mutates_args=("out",))
_combine_out_op = _torch_ops.define(
    "moe_combine_out", "(Tensor y, Tensor row_of, Tensor src_of, Tensor? weights, Tensor(a!) out) -> ()",
    _combine_out_kernel, _no_fake, mutates_args=("out",))


def _check_out(out, like, shape, name: str, differentiable) -> None:
    _checks.same_place(like, out, name, "out")
    _checks.contiguous(out, "out")
    _checks.writable(out, "out")
    if _backend.dtype_name(out) != _backend.dtype_name(like):
        raise TypeError(f"out: expected dtype {_backend.dtype_name(like)} like {name}, got {_backend.dtype_name(out)}")
    if tuple(out.shape) != shape:
        raise ValueError(f"out: expected shape {shape}, got {tuple(out.shape)}")
    torch = _torch_ops.torch
    if _backend.is_torch(out) and torch.is_grad_enabled() and any(
            a is not None and a.requires_grad for a in differentiable):
        raise ValueError("out: not supported while autograd records (the inputs require grad); leave out=None")


def _check_plan(p, like, name: str):
    if not isinstance(p, Plan):
        raise TypeError(f"plan: expected a commkernels.moe.Plan, got {type(p).__name__}")
    _checks.same_place(like, p.row_of, name, "plan.row_of")
    _checks.same_place(like, p.src_of, name, "plan.src_of")


def _check_weights(weights, like, p: Plan, name: str):
    if weights is None:
        return None
    _checks.same_place(like, weights, name, "weights")
    _checks.contiguous(weights, "weights")
    if _backend.dtype_name(weights) not in ("float32", "float64"):
        raise TypeError(f"weights: expected float32 or float64, got {_backend.dtype_name(weights)}")
    if tuple(weights.shape) != (p.num_tokens, p.k):
        raise ValueError(f"weights: expected shape {(p.num_tokens, p.k)}, got {tuple(weights.shape)}")
    return weights


def permute(x, plan: Plan, weights=None, out=None):
    """Rows in expert order: out [rows, h], out[r] = x[plan.src_of[r] // k] (times weights[t, j] of that pair
    when ``weights`` is given); padding rows are zero. Gather-based (each output row written once, no
    atomics). Differentiable for torch tensors: the gradient of x is combine(grad, plan, weights).

    x: [T, h] float32, float64, float16 or bfloat16, contiguous, T = plan.num_tokens. weights: optional
    [T, k] float32 or float64. out: optional [rows, h] array of x's dtype to write into and return (reuse it
    step after step: a fresh large buffer costs more in page faults than the copy; not while autograd
    records). Without out, a CPU torch output of 8 MiB or more comes from commkernels' cache of host
    buffers (see release_cached_memory).
    """
    _checks.float_array(x, "x")
    _check_plan(plan, x, "x")
    if len(x.shape) != 2 or x.shape[0] != plan.num_tokens:
        raise ValueError(f"x: expected shape [{plan.num_tokens}, h] (T of the plan), got {tuple(x.shape)}")
    weights = _check_weights(weights, x, plan, "x")
    args = (x, plan.src_of, plan.row_of, weights)
    if out is not None:
        _check_out(out, x, (plan.rows, x.shape[1]), "x", (x, weights))
        (_permute_out_op if _backend.is_torch(x) else _permute_out_kernel)(*args, out)
        return out
    return _permute_op(*args) if _backend.is_torch(x) else _permute_kernel(*args)


def combine(y, plan: Plan, weights=None, out=None):
    """Tokens back from expert rows: out [T, h], out[t] = sum over the kept slots j of weights[t, j] *
    y[plan.row_of[t, j]] (unit weights when None), accumulated in float32 (float64 for float64) in slot
    order; a token whose slots were all dropped gets zeros. Gather-based, deterministic, no atomics.
    Differentiable for torch tensors w.r.t. y (a weighted permute) and weights (row dot products); with
    both needed they come from one fused pass over the tokens (commkernels::moe_combine_backward).

    y: [rows, h] float32, float64, float16 or bfloat16, contiguous, rows = plan.rows. weights: [T, k]
    float32 or float64 (e.g. route's weights), or None. out: optional [T, h] array of y's dtype to write
    into and return (as permute's; not while autograd records). Without out, large CPU torch outputs come
    from the host buffer cache, as permute's.
    """
    _checks.float_array(y, "y")
    _check_plan(plan, y, "y")
    if len(y.shape) != 2 or y.shape[0] != plan.rows:
        raise ValueError(f"y: expected shape [{plan.rows}, h] (the plan's rows), got {tuple(y.shape)}")
    weights = _check_weights(weights, y, plan, "y")
    args = (y, plan.row_of, plan.src_of, weights)
    if out is not None:
        _check_out(out, y, (plan.num_tokens, y.shape[1]), "y", (y, weights))
        (_combine_out_op if _backend.is_torch(y) else _combine_out_kernel)(*args, out)
        return out
    return _combine_op(*args) if _backend.is_torch(y) else _combine_kernel(*args)
