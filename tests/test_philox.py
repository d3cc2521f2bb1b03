"""Philox4x32-10: the reference and the compiled block function against Random123's known answers and each other."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commkernels import _backend
from commkernels.reference import compress as ref

# Random123 kat_vectors, "philox4x32 10": counter (4 words), key (2 words), expected output (4 words).
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

word = st.integers(0, 2**32 - 1)
counters = st.tuples(word, word, word, word)
keys = st.tuples(word, word)


def kernel(ctr, key) -> tuple[int, ...]:
    return tuple(int(v) for v in _backend._cpu.philox4x32_10(list(ctr), list(key)))


@pytest.mark.parametrize("ctr, key, expected", KAT)
def test_reference_known_answers(ctr, key, expected):
    assert tuple(int(v) for v in ref.philox4x32_10(ctr, key)) == expected


@pytest.mark.parametrize("ctr, key, expected", KAT)
def test_kernel_known_answers(ctr, key, expected):
    assert kernel(ctr, key) == expected


@given(counters, keys)
def test_kernel_equals_reference(ctr, key):
    assert kernel(ctr, key) == tuple(int(v) for v in ref.philox4x32_10(ctr, key))


@given(st.lists(counters, min_size=1, max_size=64), keys)
def test_reference_vectorised_equals_scalar(ctrs, key):
    columns = [np.array([c[j] for c in ctrs], dtype=np.uint64) for j in range(4)]
    batch = ref.philox4x32_10(columns, key)
    assert batch.shape == (4, len(ctrs)) and batch.dtype == np.uint32
    for n, ctr in enumerate(ctrs):
        assert tuple(int(v) for v in batch[:, n]) == kernel(ctr, key)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), word, word)
def test_stream_layout(seed, step, a, b):
    # philox(seed, step, a, b) is the block function at counter (a, b, step lo, step hi), key (seed lo, seed hi).
    expected = kernel((a, b, step & 0xFFFFFFFF, step >> 32), (seed & 0xFFFFFFFF, seed >> 32))
    assert tuple(int(v) for v in ref.philox(seed, step, a, b)) == expected


def test_kernel_rejects_words_out_of_range():
    with pytest.raises(TypeError):
        _backend._cpu.philox4x32_10([2**32, 0, 0, 0], [0, 0])
    with pytest.raises(TypeError):
        _backend._cpu.philox4x32_10([0, 0, 0], [0, 0])
