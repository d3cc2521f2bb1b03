"""Expert capacity and the balancing losses.

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

from .. import _checks

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
