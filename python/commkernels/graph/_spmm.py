"""spmm, sddmm and edge_softmax over a Graph's cached CSR by destination (backward over its CSC).

Node features are (N, ...) rows; with per-head edge values ((E, H) weights or scores) the features are
(N, H, ...) and each head uses its own edge values. Every destination row is reduced by one thread in
slot order (the in-edges by ascending edge id): deterministic, no atomics, also in the backward.
"""

from __future__ import annotations

import math

from .. import _backend, _checks, _torch_ops
from ._graph import Graph, convert_like
from ._scatter import _CODE, _reshape, _scatter_op

_SPMM_REDUCES = ("sum", "mean", "max", "min")


def _check_graph(graph, like, name: str = "x", rows: bool = True) -> Graph:
    if not isinstance(graph, Graph):
        raise TypeError(f"graph: expected a commkernels.graph.Graph, got {type(graph).__name__}")
    if rows and (len(like.shape) < 1 or int(like.shape[0]) != graph.num_nodes):
        raise ValueError(f"{name}: expected {graph.num_nodes} rows (graph.num_nodes), got shape {tuple(like.shape)}")
    return graph.to(like)


def _edge_values(values, like, graph: Graph, name: str):
    """(E,) or (E, H) per-edge values as like's framework, device and dtype (contiguous; a torch tensor is
    cast and made contiguous differentiably)."""
    _backend.framework(values, name)
    if _backend.dtype_name(values) not in _backend.FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32, float64, float16 or bfloat16, got {_backend.dtype_name(values)}")
    if len(values.shape) not in (1, 2) or int(values.shape[0]) != graph.num_edges:
        raise ValueError(f"{name}: expected shape ({graph.num_edges},) or ({graph.num_edges}, heads), "
                         f"got {tuple(values.shape)}")
    if _backend.is_torch(like):
        if not _backend.is_torch(values) or values.device != like.device:
            raise TypeError(f"{name}: expected a torch tensor on {like.device} like the features")
        return values.to(like.dtype).contiguous()
    if _backend.framework(like, "x") != "jax":
        _checks.same_place(like, values, "x", name)
    return convert_like(values, like, _backend.dtype_name(like))


def _heads_of(x, edge_values, name: str) -> tuple[int, int]:
    """(heads, D) for features x given per-edge values: heads = edge_values.shape[1] when 2-D (x must then be
    (N, heads, ...)), else 1."""
    feat = tuple(int(s) for s in x.shape[1:])
    if edge_values is not None and len(edge_values.shape) == 2:
        heads = int(edge_values.shape[1])
        if len(feat) < 1 or feat[0] != heads:
            raise ValueError(f"x: expected shape (N, {heads}, ...) for {name} with {heads} heads, got {tuple(x.shape)}")
        return heads, math.prod(feat[1:])
    return 1, math.prod(feat)


# ---- kernels ------------------------------------------------------------------------------------------

def _spmm_kernel(x, indptr, indices, eid, cindptr, cindices, ceid, weight, slots: bool, heads: int, reduce: int):
    rows = int(indptr.shape[0]) - 1
    f = math.prod(int(s) for s in x.shape[1:])
    d = f // heads if heads else 0
    out = _backend.empty(x, rows * f)
    arg = _backend.empty(x, rows * f if reduce in (2, 3) else 0, "int64")
    _backend.module(x).graph_spmm(x, heads, d, indptr, indices, eid, weight, slots, reduce, out, arg,
                                  _backend.stream(x))
    shape = (rows, *x.shape[1:])
    return _reshape(x, out, shape), _reshape(x, arg, shape if reduce in (2, 3) else (0,))


def _spmm_fake(x, indptr, indices, eid, cindptr, cindices, ceid, weight, slots, heads, reduce):
    shape = (indptr.shape[0] - 1, *x.shape[1:])
    return x.new_empty(shape), x.new_empty(shape if reduce in (2, 3) else (0,), dtype=_torch_ops.torch.int64)


def _sddmm_kernel(a, b, indptr, indices, eid, cindptr, cindices, ceid, heads: int):
    e = int(indices.shape[0])
    d = math.prod(int(s) for s in a.shape[1:]) // heads
    out = _backend.empty(a, e * heads)
    _backend.module(a).graph_sddmm(a, b, heads, d, indptr, indices, eid, out, _backend.stream(a))
    return _reshape(a, out, (e, heads))


def _sddmm_fake(a, b, indptr, indices, eid, cindptr, cindices, ceid, heads):
    return a.new_empty((indices.shape[0], heads))


def _softmax_kernel(scores, indptr, eid, dst, heads: int):
    out = _backend.empty(scores, _backend.numel(scores))
    _backend.module(scores).graph_edge_softmax(scores, heads, indptr, eid, dst, out, _backend.stream(scores))
    return _reshape(scores, out, scores.shape)


def _softmax_fake(scores, indptr, eid, dst, heads):
    return scores.new_empty(scores.shape)


def _softmax_backward_kernel(y, grad, indptr, eid, dst, heads: int):
    out = _backend.empty(y, _backend.numel(y))
    _backend.module(y).graph_edge_softmax_backward(y, grad, heads, indptr, eid, dst, out, _backend.stream(y))
    return _reshape(y, out, y.shape)


def _softmax_backward_fake(y, grad, indptr, eid, dst, heads):
    return y.new_empty(y.shape)


# ---- autograd -----------------------------------------------------------------------------------------

def _spmm_setup(ctx, inputs, output):
    x, indptr, indices, eid, cindptr, cindices, ceid, weight, slots, heads, reduce = inputs
    ctx.heads, ctx.reduce, ctx.x_shape, ctx.w_shape, ctx.slots = heads, reduce, x.shape, weight.shape, slots
    ctx.save_for_backward(x, indptr, indices, eid, cindptr, cindices, ceid, weight,
                          output[1] if reduce in (2, 3) else None)


def _spmm_backward(ctx, grad_out, grad_arg):
    torch = _torch_ops.torch
    x, indptr, indices, eid, cindptr, cindices, ceid, weight, arg = ctx.saved_tensors
    heads, reduce = ctx.heads, ctx.reduce
    n = x.shape[0]
    e = indices.shape[0]
    g = grad_out.contiguous()
    want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[7] and weight.numel() > 0
    grad_x = grad_w = None
    nones = (None,) * 3
    if ctx.slots and weight.numel():  # weights given in CSR slot order: back to edge order for the CSC
        in_slots = weight
        weight = torch.empty_like(in_slots)
        weight[eid] = in_slots
    if reduce in (0, 1):
        if reduce == 1:
            deg = (indptr[1:] - indptr[:-1]).clamp(min=1).to(g.dtype)
            g = (g / deg.reshape((-1,) + (1,) * (g.dim() - 1))).contiguous()
        if want_x:  # the transposed product over the CSC: grad_x[j] = sum over out-edges e of w_e g[dst(e)]
            grad_x = _spmm_op(g, cindptr, cindices, ceid, indptr, indices, eid, weight, False, heads, 0)[0]
        if want_w:
            grad_w = _sddmm_op(g, x, indptr, indices, eid, cindptr, cindices, ceid, heads).reshape(ctx.w_shape)
        return grad_x, None, None, None, None, None, None, grad_w, *nones
    # max / min: the gradient goes to the edge that gave each output element; contributions are summed by
    # the deterministic scatter (element order), never by atomics
    src_of_edge = torch.empty(e + 1, dtype=torch.int64, device=x.device)
    src_of_edge[eid] = indices.long()
    src_of_edge[e] = 0
    f = g[0].numel() if g.dim() > 1 else 1
    a = arg.reshape(n, heads, -1)
    valid = a < e
    w_full = None
    if weight.numel():
        w2 = weight.reshape(e, -1)
        w_full = torch.cat([w2, w2.new_zeros((1, w2.shape[1]))])  # row e: the empty rows' sentinel
    head = torch.arange(heads, device=x.device).reshape(1, heads, 1)
    g3 = g.reshape(n, heads, -1)
    src = src_of_edge[a]
    if want_x:
        contrib = g3 * valid
        if w_full is not None:
            contrib = contrib * (w_full[a, head] if w_full.shape[1] > 1 else w_full[a, 0])
        col = torch.arange(f, device=x.device).reshape(1, heads, -1)
        target = (src * f + col).reshape(-1)
        grad_x = _scatter_op(contrib.reshape(-1, 1).contiguous(), target, n * f, 0)[0].reshape(ctx.x_shape)
    if want_w:
        x3 = x.reshape(n, heads, -1)
        contrib = g3 * valid * x3[src, head, torch.arange(x3.shape[2], device=x.device).reshape(1, 1, -1)]
        wheads = ctx.w_shape[1] if len(ctx.w_shape) == 2 else 1
        target = (a * wheads + (head if wheads > 1 else 0)).expand_as(a).reshape(-1)
        grad_w = _scatter_op(contrib.reshape(-1, 1).contiguous(), target, (e + 1) * wheads, 0)[0]
        grad_w = grad_w[: e * wheads].reshape(ctx.w_shape)
    return grad_x, None, None, None, None, None, None, grad_w, *nones


def _sddmm_setup(ctx, inputs, output):
    a, b, indptr, indices, eid, cindptr, cindices, ceid, heads = inputs
    ctx.heads = heads
    ctx.save_for_backward(a, b, indptr, indices, eid, cindptr, cindices, ceid)


def _sddmm_backward(ctx, grad):
    a, b, indptr, indices, eid, cindptr, cindices, ceid = ctx.saved_tensors
    g = grad.contiguous()
    grad_a = grad_b = None
    if ctx.needs_input_grad[0]:  # grad_a[i] = sum over in-edges of g_e b[src(e)]
        grad_a = _spmm_op(b, indptr, indices, eid, cindptr, cindices, ceid, g, False, ctx.heads, 0)[0]
    if ctx.needs_input_grad[1]:  # grad_b[j] = sum over out-edges of g_e a[dst(e)]: the CSC
        grad_b = _spmm_op(a, cindptr, cindices, ceid, indptr, indices, eid, g, False, ctx.heads, 0)[0]
    return grad_a, grad_b, None, None, None, None, None, None, None


def _softmax_setup(ctx, inputs, output):
    scores, indptr, eid, dst, heads = inputs
    ctx.heads = heads
    ctx.save_for_backward(output, indptr, eid, dst)


def _softmax_backward(ctx, grad):
    y, indptr, eid, dst = ctx.saved_tensors
    return _softmax_backward_op(y, grad.contiguous(), indptr, eid, dst, ctx.heads), None, None, None, None


_spmm_op = _torch_ops.define(
    "spmm", "(Tensor x, Tensor indptr, Tensor indices, Tensor eid, Tensor cindptr, Tensor cindices, Tensor ceid, "
    "Tensor weight, bool weight_in_slots, int heads, int reduce) -> (Tensor, Tensor)", _spmm_kernel, _spmm_fake,
    backward=_spmm_backward, setup_context=_spmm_setup)
_sddmm_op = _torch_ops.define(
    "sddmm", "(Tensor a, Tensor b, Tensor indptr, Tensor indices, Tensor eid, Tensor cindptr, Tensor cindices, "
    "Tensor ceid, int heads) -> Tensor", _sddmm_kernel, _sddmm_fake, backward=_sddmm_backward,
    setup_context=_sddmm_setup)
_softmax_backward_op = _torch_ops.define(
    "edge_softmax_backward", "(Tensor y, Tensor grad, Tensor indptr, Tensor eid, Tensor dst, int heads) -> Tensor",
    _softmax_backward_kernel, _softmax_backward_fake)
_softmax_op = _torch_ops.define(
    "edge_softmax", "(Tensor scores, Tensor indptr, Tensor eid, Tensor dst, int heads) -> Tensor", _softmax_kernel,
    _softmax_fake, backward=_softmax_backward, setup_context=_softmax_setup)


def _contiguous_index(a):
    return a.contiguous() if _backend.is_torch(a) else a


def _graph_tensors(g: Graph, like):
    csr = g.csr
    if _backend.is_torch(like):
        csc = g.csc
        return (csr.indptr, csr.indices, csr.eid, csc.indptr, csc.indices, csc.eid)
    return (csr.indptr, csr.indices, csr.eid, None, None, None)


# ---- public API ---------------------------------------------------------------------------------------

def spmm(graph: Graph, x, edge_weight=None, reduce: str = "sum"):
    """out[i] = reduce over the in-edges e of i (src(e) -> i) of w_e * x[src(e)]: the sparse product W x.

    x: (N, ...) node features, float32/float64/float16/bfloat16 (16-bit types accumulate in float32).
    edge_weight: (E,) in edge order, or (E, H) with x (N, H, ...) (one weight per edge and head); None uses
    graph.edge_weight, or 1 for an unweighted graph. Cast to x's dtype.
    reduce: "sum", "mean" (sum / in-degree), "max", "min". Empty rows give 0. "max"/"min" return (out, arg)
    with arg (int64, out's shape) the edge id that gave each element (lowest edge id on ties, E for an
    empty row). Differentiable for torch tensors in x and edge_weight; the backward runs the transposed
    product over the graph's cached CSC (sum/mean) or sends each element's gradient to its arg edge
    (max/min), summed by the deterministic scatter.
    """
    _checks.float_array(x, "x")
    g = _check_graph(graph, x)
    if reduce not in _SPMM_REDUCES:
        raise ValueError(f"reduce: expected one of {', '.join(_SPMM_REDUCES)}, got {reduce!r}")
    code = _CODE[reduce]
    weight, slots = edge_weight, False
    if weight is None and g.edge_weight is not None:
        weight = g.edge_weight
        # the graph's own weights, when no gradient must reach them: its cached CSR-ordered copy, read
        # sequentially (as a prebuilt sparse matrix holds them)
        slots = not (_backend.is_torch(weight) and weight.requires_grad)
    if weight is not None:
        weight = _edge_values(weight, x, g, "edge_weight")
        if slots:
            weight = _edge_values(g.weight_csr, x, g, "edge_weight")
    heads, _ = _heads_of(x, weight, "edge_weight")
    if weight is None:
        weight = _backend.empty(x, 0)
    arrays = _graph_tensors(g, x)
    if _backend.is_torch(x):
        out, arg = _spmm_op(x, *arrays, weight, slots, heads, code)
    else:
        out, arg = _spmm_kernel(x, *arrays, weight, slots, heads, code)
    return (out, arg) if code in (2, 3) else out


def sddmm(graph: Graph, a, b):
    """Per-edge dot products out[e] = a[dst(e)] . b[src(e)], in the graph's edge order.

    a, b: (N, D) -> out (E,); or (N, H, D) -> out (E, H) (one dot per head). Same dtype (float32, float64,
    float16 or bfloat16; 16-bit types accumulate in float32). Differentiable in a and b for torch tensors:
    grad a = spmm(graph, b, grad), grad b = the transposed spmm over the CSC.
    """
    _checks.float_array(a, "a")
    _checks.float_array(b, "b")
    _checks.same_place(a, b, "a", "b")
    if _backend.dtype_name(a) != _backend.dtype_name(b):
        raise TypeError(f"b: expected a's dtype {_backend.dtype_name(a)}, got {_backend.dtype_name(b)}")
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"b: expected a's shape {tuple(a.shape)}, got {tuple(b.shape)}")
    if len(a.shape) not in (2, 3):
        raise ValueError(f"a: expected (N, D) or (N, H, D), got shape {tuple(a.shape)}")
    g = _check_graph(graph, a, "a")
    heads = int(a.shape[1]) if len(a.shape) == 3 else 1
    arrays = _graph_tensors(g, a)
    if _backend.is_torch(a):
        out = _sddmm_op(a, b, *arrays, heads)
    else:
        out = _sddmm_kernel(a, b, *arrays, heads)
    return out.reshape(-1) if len(a.shape) == 2 else out


def edge_softmax(graph: Graph, scores):
    """Softmax of per-edge scores over each node's in-edges: out[e] = exp(s_e) / sum over in-edges e' of
    dst(e) of exp(s_e'), computed with one pass of an online max and sum per node, then the write (on the CPU
    both passes stream the edges in edge order; each node's statistics see its edges in ascending edge id,
    as a walk of the CSR would, so the result does not depend on the thread count).

    scores: (E,) or (E, H) in edge order (float32, float64, float16, bfloat16; accumulated in float32).
    -inf scores get 0; a node whose in-edges are all -inf gets 0 on each (never NaN); NaN scores make their
    node's outputs NaN; a +inf score gives NaN. Differentiable for torch tensors (one pass per node:
    grad_s = y (g - sum y g)).
    """
    _checks.float_array(scores, "scores")
    if len(scores.shape) not in (1, 2):
        raise ValueError(f"scores: expected (E,) or (E, H), got shape {tuple(scores.shape)}")
    g = _check_graph(graph, scores, "scores", rows=False)
    if int(scores.shape[0]) != g.num_edges:
        raise ValueError(f"scores: expected {g.num_edges} rows (graph.num_edges), got {int(scores.shape[0])}")
    heads = int(scores.shape[1]) if len(scores.shape) == 2 else 1
    csr = g.csr
    dst = _contiguous_index(g.dst)
    if _backend.is_torch(scores):
        return _softmax_op(scores, csr.indptr, csr.eid, dst, heads)
    return _softmax_kernel(scores, csr.indptr, csr.eid, dst, heads)
