"""Expert capacity, the balancing losses (Switch load-balancing loss, ST-MoE z-loss) and DeepSeek-V3's
aux-loss-free expert-bias update.

Capacity: how many (token, slot) pairs an expert takes, by the formula of each anchor library.

Exact by default: the factor is read as the decimal number it is written as (a float as its shortest
round-trip decimal, so ``1.1`` is 11/10; ints, Fractions and Decimals as they are), and every floor and
ceiling is taken on exact rationals. ``exact=False`` instead evaluates each anchor's own floating-point
expression, operation for operation, so that a port gets the very capacity the anchor computes, quirks
included (see ``capacity``).
"""

from __future__ import annotations

import decimal
import fractions
import math
import numbers

import numpy as np

from .. import _backend, _checks, _eager, _torch_ops

FORMULAS = ("megatron", "deepspeed", "tutel", "megablocks")


def _factor(factor) -> fractions.Fraction:
    if isinstance(factor, bool) or not isinstance(factor, (numbers.Real, decimal.Decimal)):
        raise TypeError(f"factor: expected a real number, got {type(factor).__name__}")
    if isinstance(factor, numbers.Rational):
        exact = fractions.Fraction(int(factor.numerator), int(factor.denominator))
    elif isinstance(factor, decimal.Decimal):
        if not factor.is_finite():
            raise ValueError(f"factor: expected a finite number > 0, got {factor}")
        exact = fractions.Fraction(factor)
    else:
        value = float(factor)
        if not math.isfinite(value):
            raise ValueError(f"factor: expected a finite number > 0, got {value}")
        exact = fractions.Fraction(repr(value))  # the decimal the caller wrote, not the binary approximation
    if exact <= 0:
        raise ValueError(f"factor: expected a finite number > 0, got {factor}")
    return exact


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _exact(T: int, k: int, E: int, f: fractions.Fraction, formula: str) -> int:
    p, q = f.numerator, f.denominator
    if formula in ("megatron", "deepspeed"):  # the same number; the anchors round differently on the way
        return _ceil_div(T * k * p, E * q)
    if formula == "tutel":
        return k * ((p * _ceil_div(T, E)) // q)
    return (p * k * T) // (q * E)  # megablocks


def _anchor(T: int, k: int, E: int, factor: float, formula: str) -> int:
    if formula == "megatron":  # moe_utils.get_capacity(num_tokens=T * k, ...), Python floats
        return math.ceil(((T * k) / E) * factor)
    if formula == "deepspeed":  # sharded_moe._capacity(gates, torch.tensor(factor * k), ...): float32 tensors
        product = np.float32(T / E) * np.float32(factor * k)
        return int(math.ceil(float(product)))
    if formula == "tutel":  # fast_dispatch.extract_critical
        return k * int(factor * ((T + E - 1) // E))
    return int(factor * (k * T / E))  # megablocks ParallelMLP.expert_capacity


def capacity(T: int, k: int, E: int, factor, min_capacity: int = 0, align: int = 1,
             formula: str = "megatron", exact: bool = True) -> int:
    """The capacity of each expert when T tokens each pick k of E experts, as a Python int.

    formula (exact rationals; f = factor):
      "megatron"    ceil(T*k/E * f)            (Megatron-Core get_capacity(T*k, E, f))
      "deepspeed"   ceil(T/E * f*k)            (DeepSpeed sharded_moe._capacity with factor f*k)
      "tutel"       k * floor(f * ceil(T/E))   (Tutel extract_critical)
      "megablocks"  floor(f * k*T/E)           (MegaBlocks expert_capacity)
    then max(min_capacity, .) rounded up to a multiple of align. "megatron" and "deepspeed" are the same
    number in exact arithmetic.

    exact=False evaluates the anchors' own floating-point expressions instead (same order of operations;
    float64 for Megatron, Tutel and MegaBlocks, float32 tensors for DeepSpeed, whose capacity_factor is a
    float32 torch.tensor). They differ from the exact value where a rounded product crosses an integer:
    Megatron (T*k/E = 100, f = 1.1): ceil(110.00000000000001) = 111, exact 110; DeepSpeed (T = 100,
    E = 8, k = 1, f = 1.2): float32(12.5) * float32(1.2) = 15.000001, ceil 16, exact 15; Tutel and
    MegaBlocks (T*k/E = 100, f = 1.15): int(114.99999999999999) = 114, exact 115. Zero or negative factors
    (Tutel's and MegaBlocks' "no capacity" conventions) are refused: capacity is for capacity-bounded
    routing.

    T >= 0, 1 <= k <= E; factor: a real number > 0; min_capacity >= 0; align >= 1.
    """
    T = _checks.integer(T, "T", 0)
    E = _checks.integer(E, "E", 1)
    k = _checks.integer(k, "k", 1, E)
    f = _factor(factor)
    min_capacity = _checks.integer(min_capacity, "min_capacity", 0)
    align = _checks.integer(align, "align", 1)
    if formula not in FORMULAS:
        raise ValueError(f"formula: expected one of {', '.join(map(repr, FORMULAS))}, got {formula!r}")
    if not isinstance(exact, bool):
        raise TypeError(f"exact: expected a bool, got {type(exact).__name__}")
    value = _exact(T, k, E, f, formula) if exact else _anchor(T, k, E, float(factor), formula)
    value = max(min_capacity, value)
    return _ceil_div(value, align) * align


# ---- shared checks ------------------------------------------------------------------------------------

def _acc(x) -> str:
    return "float64" if _backend.dtype_name(x) == "float64" else "float32"


def _matrix(x, name: str) -> tuple[int, int]:
    """A contiguous float [T, E] array with E >= 1; returns (T, E)."""
    _checks.float_array(x, name)
    shape = tuple(x.shape)
    if len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D [tokens, experts] array, got shape {shape}")
    if shape[1] < 1:
        raise ValueError(f"{name}: expected at least one expert (column), got shape {shape}")
    _checks.integer(shape[0] * shape[1], f"{name}.size", 0, _checks.MAX_SIZE)
    return int(shape[0]), int(shape[1])


def _ids_in_range(ids, E: int, name: str) -> None:
    """Index range check where the kernel cannot raise (CUDA; skipped under torch.compile): reads two numbers
    back from the device. The CPU kernels check as they count."""
    if _backend.device(ids)[0] == "cpu" or _backend.is_compiling() or _backend.numel(ids) == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= E:
        raise ValueError(f"{name}: expected expert ids in [0, {E}), got values in [{low}, {high}]")


# ---- load-balancing loss (Switch Transformer) ---------------------------------------------------------

def _lbl_kernel(probs, ids, first_only: bool):
    T, E = int(probs.shape[0]), int(probs.shape[1])
    k = int(ids.shape[1]) if len(ids.shape) == 2 else 1
    loss, fraction = _backend.empty(probs, 1, _acc(probs)), _backend.empty(probs, E, _acc(probs))
    _backend.module(probs).moe_load_balancing_loss(probs, ids, T, E, k, first_only, loss, fraction,
                                                   _backend.stream(probs))
    return _backend.finish(probs, loss.reshape(())), _backend.finish(probs, fraction)


def _lbl_fake(probs, ids, first_only):
    torch = _torch_ops.torch
    acc = torch.float64 if probs.dtype == torch.float64 else torch.float32
    return probs.new_empty((), dtype=acc), probs.new_empty(probs.shape[1], dtype=acc)


def _lbl_setup(ctx, inputs, output):
    probs = inputs[0]
    ctx.shape, ctx.dtype = probs.shape, probs.dtype
    ctx.save_for_backward(output[1])


def _lbl_backward(ctx, grad_loss, grad_fraction):
    (fraction,) = ctx.saved_tensors
    T, E = ctx.shape
    if T == 0:
        return fraction.new_zeros(ctx.shape, dtype=ctx.dtype), None, None
    # d loss / d probs[t, i] = E f_i / T, the same for every token
    row = (grad_loss * (E / T)) * fraction
    return row.to(ctx.dtype).expand(T, E).contiguous(), None, None


_lbl_op = _torch_ops.define("moe_load_balancing_loss", "(Tensor probs, Tensor ids, bool first_only) -> (Tensor, Tensor)",
                            _lbl_kernel, _lbl_fake, backward=_lbl_backward, setup_context=_lbl_setup)


def load_balancing_loss(probs, ids, num_experts: int | None = None, first_choice_only: bool = False):
    """Switch Transformer's auxiliary load-balancing loss: E * sum_i f_i * P_i.

    f_i = (number of (token, slot) pairs routed to expert i) / (T k), P_i = mean_t probs[t, i]. With
    first_choice_only, f_i counts each token's first choice ids[:, 0] only, over T (DeepSpeed top-2 and
    Tutel's gshard loss). Unscaled: multiply by the aux-loss coefficient yourself. As Megatron-Core's
    switch_load_balancing_loss_func (with its coefficient 1). One fused pass over probs and ids; 0 for T = 0.

    probs: [T, E] float32, float64, float16 or bfloat16 (the router's full score matrix), contiguous.
    ids: [T, k] (or [T] for k = 1) int32 or int64 expert ids in [0, E), same framework and device.
    num_experts: E, optional (must equal probs.shape[1]).
    Returns a 0-d float32 array (float64 for float64 probs). Differentiable w.r.t. probs (torch): the
    gradient is E f_i / T for every token. Deterministic: sums over fixed row chunks in a fixed order.
    """
    te, tk = _eager.float_matrix(probs), _eager.index_matrix(ids)
    if (te is not None and (tk is not None and tk[0] == te[0] or _eager.index_vector(ids, te[0]))
            and (num_experts is None or (type(num_experts) is int and num_experts == te[1]))
            and type(first_choice_only) is bool and _eager.plain_cpu(probs, ids, differentiable=(probs,))):
        return _lbl_eager(probs, ids, first_choice_only)  # the checks below, passed
    T, E = _matrix(probs, "probs")
    if num_experts is not None and _checks.integer(num_experts, "num_experts", 1) != E:
        raise ValueError(f"num_experts: expected probs.shape[1] = {E}, got {num_experts}")
    _checks.same_place(probs, ids, "probs", "ids")
    if _backend.dtype_name(ids) not in _backend.INDEX_DTYPES:
        raise TypeError(f"ids: expected dtype int32 or int64, got {_backend.dtype_name(ids)}")
    _checks.contiguous(ids, "ids")
    shape = tuple(ids.shape)
    if len(shape) not in (1, 2) or shape[0] != T or (len(shape) == 2 and shape[1] < 1):
        raise ValueError(f"ids: expected shape [{T}, k] with k >= 1 (or [{T}]), got {shape}")
    if not isinstance(first_choice_only, bool):
        raise TypeError(f"first_choice_only: expected a bool, got {type(first_choice_only).__name__}")
    _ids_in_range(ids, E, "ids")
    if not _backend.is_torch(probs):
        return _lbl_kernel(probs, ids, first_choice_only)[0]
    if _eager.plain_cpu(probs, ids, differentiable=(probs,)):
        return _lbl_eager(probs, ids, first_choice_only)
    return _lbl_op(probs, ids, first_choice_only)[0]


def _lbl_eager(probs, ids, first_only: bool):
    """_lbl_kernel's loss for plain CPU torch tensors (see _eager)."""
    torch = _torch_ops.torch
    T, E = probs.shape
    k = int(ids.shape[1]) if ids.dim() == 2 else 1
    acc = torch.float64 if probs.dtype == torch.float64 else torch.float32
    loss, fraction = torch.empty((), dtype=acc), torch.empty(E, dtype=acc)
    dl = _eager.dl
    _backend._cpu.moe_load_balancing_loss(dl(probs), dl(ids), T, E, k, first_only, dl(loss), dl(fraction), 0)
    return loss


# ---- z-loss (ST-MoE) ----------------------------------------------------------------------------------

def _z_kernel(logits):
    T, E = int(logits.shape[0]), int(logits.shape[1])
    loss, lse = _backend.empty(logits, 1, _acc(logits)), _backend.empty(logits, T, _acc(logits))
    _backend.module(logits).moe_z_loss(logits, T, E, loss, lse, _backend.stream(logits))
    return _backend.finish(logits, loss.reshape(())), _backend.finish(logits, lse)


def _z_fake(logits):
    torch = _torch_ops.torch
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return logits.new_empty((), dtype=acc), logits.new_empty(logits.shape[0], dtype=acc)


def _z_backward_kernel(logits, lse, grad):
    T, E = int(logits.shape[0]), int(logits.shape[1])
    out = _backend.empty(logits, T * E)
    _backend.module(logits).moe_z_loss_backward(logits, lse, grad, T, E, out, _backend.stream(logits))
    return out.reshape(T, E)


_z_backward_op = _torch_ops.define("moe_z_loss_backward", "(Tensor logits, Tensor lse, Tensor grad) -> Tensor",
                                   _z_backward_kernel, lambda logits, lse, grad: logits.new_empty(logits.shape))


def _z_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output[1])


def _z_backward(ctx, grad_loss, grad_lse):
    logits, lse = ctx.saved_tensors
    return _z_backward_op(logits, lse, grad_loss.reshape(1).to(lse.dtype).contiguous())


_z_op = _torch_ops.define("moe_z_loss", "(Tensor logits) -> (Tensor, Tensor)", _z_kernel, _z_fake,
                          backward=_z_backward, setup_context=_z_setup)


def z_loss(logits):
    """ST-MoE's router z-loss: mean over tokens of logsumexp(logits[t, :])^2 (0 for T = 0), unscaled.

    As Megatron-Core's z_loss_func (coefficient 1). One pass over logits, float32 math for float32,
    float16 and bfloat16 (float64 for float64); logsumexp as torch.logsumexp (a row with +inf gives inf,
    an all -inf row gives -inf, so the loss is inf; NaN propagates).

    logits: [T, E] float32, float64, float16 or bfloat16, contiguous. Returns a 0-d float32 array (float64
    for float64 logits). Differentiable w.r.t. logits (torch): 2/T * lse_t * softmax(logits_t).
    """
    if _eager.float_matrix(logits) is not None and _eager.plain_cpu(logits, differentiable=(logits,)):
        return _z_eager(logits)  # _matrix's checks, passed
    _matrix(logits, "logits")
    if not _backend.is_torch(logits):
        return _z_kernel(logits)[0]
    if _eager.plain_cpu(logits, differentiable=(logits,)):
        return _z_eager(logits)
    return _z_op(logits)[0]


def _z_eager(logits):
    """_z_kernel's loss for plain CPU torch tensors (see _eager)."""
    torch = _torch_ops.torch
    T, E = logits.shape
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    loss, lse = torch.empty((), dtype=acc), torch.empty(T, dtype=acc)
    _backend._cpu.moe_z_loss(_eager.dl(logits), T, E, _eager.dl(loss), _eager.dl(lse), 0)
    return loss


# ---- aux-loss-free balancing (DeepSeek-V3) ------------------------------------------------------------

def _bias_kernel(bias, counts, rate: float) -> None:
    E = int(bias.shape[-1])
    _backend.module(bias).moe_update_expert_bias(bias, counts, E, rate, _backend.stream(bias))


_bias_op = _torch_ops.define("moe_update_expert_bias_", "(Tensor(a!) bias, Tensor counts, float rate) -> ()",
                             _bias_kernel, lambda bias, counts, rate: None, mutates_args=("bias",))

_COUNT_DTYPES = ("int32", "int64", "float32", "float64")


def update_expert_bias_(bias, counts, rate: float):
    """DeepSeek-V3's auxiliary-loss-free balancing step, in place: bias += rate * sign(mean(counts) - counts).

    The mean is over the last axis (experts), so a stack of layers [L, E] updates in one call. The sign is
    exact (sum(counts) - E * counts[j], integers for integer counts); the update is bias + float32(rate) *
    sign in float32, as Megatron-Core's _update_expert_bias. Underloaded experts go up, overloaded down.

    bias: float32 [..., E], contiguous, writable. counts: int32, int64, float32 or float64, bias' shape,
    same framework and device (tokens per expert, e.g. plan's counts). rate: a finite real number.
    Returns bias.
    """
    fw = _backend.framework(bias, "bias")
    if _backend.dtype_name(bias) != "float32":
        raise TypeError(f"bias: expected dtype float32, got {_backend.dtype_name(bias)}")
    _checks.contiguous(bias, "bias")
    _checks.writable(bias, "bias")
    _checks.same_place(bias, counts, "bias", "counts")
    if _backend.dtype_name(counts) not in _COUNT_DTYPES:
        raise TypeError(f"counts: expected dtype int32, int64, float32 or float64, got {_backend.dtype_name(counts)}")
    _checks.contiguous(counts, "counts")
    if len(bias.shape) < 1 or bias.shape[-1] < 1:
        raise ValueError(f"bias: expected shape [..., E] with E >= 1, got {tuple(bias.shape)}")
    if tuple(counts.shape) != tuple(bias.shape):
        raise ValueError(f"counts: expected bias' shape {tuple(bias.shape)}, got {tuple(counts.shape)}")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(float(rate)):
        raise (TypeError if not isinstance(rate, numbers.Real) or isinstance(rate, bool) else ValueError)(
            f"rate: expected a finite real number, got {rate!r}")
    (_bias_op if fw == "torch" else _bias_kernel)(bias, counts, float(rate))
    return bias
