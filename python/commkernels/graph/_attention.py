"""Fused graph attention: SDDMM -> edge softmax -> SpMM in one pass per destination node.

For each node i and head h, over its in-edges e (source j):
    logit_e = scale * q[i, h] . k[j, h] + edge_bias[e, h],  a = softmax over the in-edges,
    out[i, h] = sum_e a_e v[j, h].
The forward keeps an online max and sum per (node, head) (flash-attention style) and writes only out and the
per-node log-sum-exp; the backward recomputes the logits from it, over the CSR (grad q, grad bias) and the
CSC (grad k, grad v): no (E, D) array is ever materialised, and no atomics are used.
"""

from __future__ import annotations

import math

from .. import _backend, _checks, _torch_ops
from ._scatter import _reshape
from ._spmm import _check_graph, _edge_values


def _lse_dtype(q) -> str:
    return "float64" if _backend.dtype_name(q) == "float64" else "float32"


def _forward_kernel(q, k, v, bias, indptr, indices, eid, cindptr, cindices, ceid, scale: float):
    n, heads, d = (int(s) for s in q.shape)
    dv = int(v.shape[2])
    out = _backend.empty(q, n * heads * dv)
    lse = _backend.empty(q, n * heads, _lse_dtype(q))
    _backend.module(q).graph_attention_forward(q, k, v, bias, heads, d, dv, scale, indptr, indices, eid, out, lse,
                                               _backend.stream(q))
    return _reshape(q, out, (n, heads, dv)), _reshape(q, lse, (n, heads))


def _forward_fake(q, k, v, bias, indptr, indices, eid, cindptr, cindices, ceid, scale):
    torch = _torch_ops.torch
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2])), q.new_empty((q.shape[0], q.shape[1]), dtype=lse_dtype)


def _backward_kernel(q, k, v, bias, out, lse, grad_out, indptr, indices, eid, cindptr, cindices, ceid, scale: float,
                     want_bias: bool):
    n, heads, d = (int(s) for s in q.shape)
    dv = int(v.shape[2])
    mod, stream = _backend.module(q), _backend.stream(q)
    grad_q, grad_k = _backend.empty(q, n * heads * d), _backend.empty(q, n * heads * d)
    grad_v = _backend.empty(q, n * heads * dv)
    grad_bias = _backend.empty(q, _backend.numel(bias) if want_bias else 0)
    delta = _backend.empty(q, n * heads, _lse_dtype(q))
    mod.graph_attention_backward_dst(q, k, v, bias, out, grad_out, lse, heads, d, dv, scale, indptr, indices, eid,
                                     grad_q, grad_bias, delta, stream)
    mod.graph_attention_backward_src(q, k, v, bias, grad_out, lse, delta, heads, d, dv, scale, cindptr, cindices,
                                     ceid, grad_k, grad_v, stream)
    return (grad_q.reshape(q.shape), grad_k.reshape(k.shape), grad_v.reshape(v.shape),
            grad_bias.reshape(bias.shape) if want_bias else grad_bias)


def _backward_fake(q, k, v, bias, out, lse, grad_out, indptr, indices, eid, cindptr, cindices, ceid, scale, want_bias):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            bias.new_empty(bias.shape if want_bias else (0,)))


def _setup(ctx, inputs, output):
    q, k, v, bias, indptr, indices, eid, cindptr, cindices, ceid, scale = inputs
    ctx.scale = scale
    ctx.save_for_backward(q, k, v, bias, output[0], output[1], indptr, indices, eid, cindptr, cindices, ceid)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, bias, out, lse, indptr, indices, eid, cindptr, cindices, ceid = ctx.saved_tensors
    want_bias = bool(ctx.needs_input_grad[3]) and bias.numel() > 0
    gq, gk, gv, gb = _backward_op(q, k, v, bias, out, lse, grad_out.contiguous(), indptr, indices, eid, cindptr,
                                  cindices, ceid, ctx.scale, want_bias)
    return gq, gk, gv, (gb if want_bias else None), None, None, None, None, None, None, None


_backward_op = _torch_ops.define(
    "graph_attention_backward",
    "(Tensor q, Tensor k, Tensor v, Tensor bias, Tensor out, Tensor lse, Tensor grad_out, Tensor indptr, "
    "Tensor indices, Tensor eid, Tensor cindptr, Tensor cindices, Tensor ceid, float scale, bool want_bias) "
    "-> (Tensor, Tensor, Tensor, Tensor)", _backward_kernel, _backward_fake)
_forward_op = _torch_ops.define(
    "graph_attention",
    "(Tensor q, Tensor k, Tensor v, Tensor bias, Tensor indptr, Tensor indices, Tensor eid, Tensor cindptr, "
    "Tensor cindices, Tensor ceid, float scale) -> (Tensor, Tensor)", _forward_kernel, _forward_fake,
    backward=_backward, setup_context=_setup)


def graph_attention(graph, q, k, v, edge_bias=None, scale: float | None = None, return_lse: bool = False):
    """Attention of every node over its in-neighbours, fused (SDDMM -> edge softmax -> SpMM).

    q, k: (N, H, D) or (N, D) (one head); v: (N, H, Dv) or (N, Dv); one dtype (float32, float64, float16,
    bfloat16; 16-bit types accumulate in float32). edge_bias: None, (E,) (every head) or (E, H), added to the
    logits in edge order: a learned graph (CommFormer) passes its edge logits here, and -inf masks an edge.
    scale: multiplies q . k (default 1 / sqrt(D)).
    Returns out, shaped like v (N, H, Dv) / (N, Dv); with return_lse also the per-node log-sum-exp of the
    logits (N, H) in float32 (float64 for float64). A node with no in-edge, or only -inf logits, gets 0 and
    lse -inf. Differentiable for torch tensors in q, k, v and edge_bias, with a deterministic backward that
    recomputes the logits (only out and lse are saved).
    """
    for a, name in ((q, "q"), (k, "k"), (v, "v")):
        _checks.float_array(a, name)
    _checks.same_place(q, k, "q", "k")
    _checks.same_place(q, v, "q", "v")
    dtype = _backend.dtype_name(q)
    for a, name in ((k, "k"), (v, "v")):
        if _backend.dtype_name(a) != dtype:
            raise TypeError(f"{name}: expected q's dtype {dtype}, got {_backend.dtype_name(a)}")
    single = len(q.shape) == 2
    if len(q.shape) not in (2, 3) or len(v.shape) != len(q.shape):
        raise ValueError(f"q, v: expected (N, H, D) and (N, H, Dv) (or (N, D) and (N, Dv)), got {tuple(q.shape)} "
                         f"and {tuple(v.shape)}")
    if tuple(k.shape) != tuple(q.shape):
        raise ValueError(f"k: expected q's shape {tuple(q.shape)}, got {tuple(k.shape)}")
    if single:
        q, k, v = (a.reshape(a.shape[0], 1, a.shape[1]) for a in (q, k, v))
    if int(v.shape[0]) != int(q.shape[0]) or int(v.shape[1]) != int(q.shape[1]):
        raise ValueError(f"v: expected {int(q.shape[0])} rows and {int(q.shape[1])} heads like q, got {tuple(v.shape)}")
    if int(q.shape[2]) < 1 or int(v.shape[2]) < 1 or int(q.shape[2]) > 1024 or int(v.shape[2]) > 1024:
        raise ValueError("q, v: expected head dimensions D, Dv in [1, 1024]")
    g = _check_graph(graph, q, "q")
    heads = int(q.shape[1])
    if edge_bias is None:
        bias = _backend.empty(q, 0)
    else:
        bias = _edge_values(edge_bias, q, g, "edge_bias")
        if len(bias.shape) == 2 and int(bias.shape[1]) != heads:
            raise ValueError(f"edge_bias: expected (E,) or (E, {heads}), got {tuple(bias.shape)}")
    if scale is None:
        scale = 1.0 / math.sqrt(int(q.shape[2]))
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number, got {scale!r}")
    csr = g.csr
    if _backend.is_torch(q):
        csc = g.csc
        out, lse = _forward_op(q, k, v, bias, csr.indptr, csr.indices, csr.eid, csc.indptr, csc.indices, csc.eid,
                               float(scale))
    else:
        out, lse = _forward_kernel(q, k, v, bias, csr.indptr, csr.indices, csr.eid, None, None, None, float(scale))
    if single:
        out, lse = out.reshape(out.shape[0], out.shape[2]), lse.reshape(-1)
    return (out, lse) if return_lse else out
