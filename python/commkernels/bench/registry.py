"""The benchmark families.

A family is a name (what ``--family`` takes) and the modules ``commkernels.bench.<module>`` that build its
cases, each with a function ``cases(device: str, quick: bool, sizes: list[int] | None) ->
list[harness.Case]``; to add rows, write a module and list it under its family here. Importing this module
imports nothing heavy (the CLI parser reads FAMILIES).
"""

from __future__ import annotations

import importlib

FAMILIES = {
    "compress": ("compress", "compress_quantize", "compress_wire"),
    "aggregate": ("aggregate_coord", "aggregate_gram", "aggregate_side"),
    "moe": ("moe", "moe_balance"),
    "graph": ("graph_mix", "graph_mp"),
    "distributed": ("distributed",),
}


def cases(family: str, device: str, quick: bool, sizes=None) -> list:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    found = []
    for name in FAMILIES[family]:
        module = importlib.import_module(f"{__package__}.{name}")
        found += module.cases(device=device, quick=quick, sizes=sizes)
    return found
