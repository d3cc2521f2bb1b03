"""The benchmark families.

A family is a module ``commkernels.bench.<name>`` with a function
``cases(device: str, quick: bool, sizes: list[int] | None) -> list[harness.Case]``; to add one, write the
module and add its name here. Importing this module imports nothing heavy (the CLI parser reads FAMILIES).
"""

from __future__ import annotations

import importlib

FAMILIES = ("compress", "compress_quantize", "compress_wire", "graph_mix", "graph_mp")


def cases(family: str, device: str, quick: bool, sizes=None) -> list:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    module = importlib.import_module(f"{__package__}.{family}")
    return module.cases(device=device, quick=quick, sizes=sizes)
