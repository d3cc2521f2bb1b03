"""pack / unpack against the reference (commkernels.reference.wire), exact round trips, and a fuzzed decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from commkernels import compress
from commkernels.compress import SparseMsg
from commkernels.compress import _wire
from commkernels.reference import wire as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
SIGNED = {"float64": torch.int64, "float32": torch.int32, "float16": torch.int16, "bfloat16": torch.int16}
CODECS = ("auto", "raw", "delta", "bitmap")


def value_bytes(values) -> bytes:
    if isinstance(values, torch.Tensor):
        if values.numel() == 0:
            return b""
        return values.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return np.ascontiguousarray(values).tobytes()


def buf_bytes(buf) -> bytes:
    return (buf.numpy() if isinstance(buf, torch.Tensor) else np.asarray(buf)).tobytes()


@st.composite
def messages(draw, frameworks=("numpy", "torch")):
    dtype = draw(st.sampled_from(DTYPES))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(frameworks))
    size = draw(st.one_of(st.integers(0, 70), st.integers(0, 5000), st.sampled_from([1, 8, 9, 2**31 - 1])))
    kind = draw(st.sampled_from(["random", "dense", "ends", "runs"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "random" or size > 100_000:
        k = draw(st.integers(0, min(size, 400)))
        if size > 100_000:
            idx = np.unique(np.concatenate([[0, size - 1], rng.integers(0, size, k)]))[: max(k, 0)]
        else:
            idx = np.sort(rng.choice(size, k, replace=False))
    elif kind == "dense":  # k = size, or nearly
        idx = np.arange(size)[rng.random(size) < draw(st.sampled_from([1.0, 0.9, 0.5]))]
    elif kind == "ends":
        idx = np.unique(np.array([0, size - 1] if size else [], dtype=np.int64))
    else:  # runs of consecutive indices and large gaps
        mask = np.zeros(size, bool)
        for start in rng.integers(0, max(size, 1), 5):
            mask[start:start + int(rng.integers(1, 40))] = True
        idx = np.flatnonzero(mask)
    k = idx.size
    bits = rng.integers(0, 2**16 if dtype in ("float16", "bfloat16") else 2**32, k, dtype=np.uint64)
    index_dtype = draw(st.sampled_from(["int32", "int64"]))
    if framework == "numpy":
        values = bits.astype({"float32": np.uint32, "float64": np.uint64, "float16": np.uint16}[dtype]).view(dtype)
        indices = idx.astype(index_dtype)
    else:
        values = torch.from_numpy(bits.astype(np.int64)).to(SIGNED[dtype]).view(getattr(torch, dtype))
        indices = torch.from_numpy(idx.astype(index_dtype))
    return SparseMsg(values, indices, size), dtype


@given(messages(), st.sampled_from(CODECS))
def test_pack_matches_reference_and_round_trips(case, codec):
    msg, dtype = case
    if codec == "bitmap" and msg.size > 10**6:
        codec = "delta"
    buf = compress.pack(msg, codec)
    assert type(buf) is type(msg.values) and buf.dtype == (torch.uint8 if isinstance(buf, torch.Tensor) else np.uint8)
    expected = ref.pack(value_bytes(msg.values), dtype, msg.indices, msg.size, codec)
    assert buf_bytes(buf) == expected
    assert len(expected) == compress.nbytes(msg, codec)
    if codec == "auto":
        assert msg.nbytes == len(expected)
        assert len(expected) == min(compress.nbytes(msg, c) for c in ("raw", "delta", "bitmap") if c != "bitmap" or msg.size <= 10**6)
    got = compress.unpack(buf)
    assert got.size == msg.size
    assert type(got.values) is type(msg.values) and str(got.values.dtype) == str(msg.values.dtype)
    assert value_bytes(got.values) == value_bytes(msg.values)  # bit for bit, NaN payloads included
    np.testing.assert_array_equal(np.asarray(got.indices), np.asarray(msg.indices))
    assert str(got.indices.dtype).endswith("int32")


def test_auto_tie_order_and_choices():
    # k = 8 of size 64: raw 32 B, bitmap 8 B, delta >= 8 B -> delta (ties go to delta before bitmap)
    msg = SparseMsg(np.ones(8, np.float32), np.arange(0, 64, 8, dtype=np.int32), 64)
    assert compress.nbytes(msg, "delta") == compress.nbytes(msg, "bitmap")
    assert buf_bytes(compress.pack(msg))[7] == 1
    # a dense message: bitmap
    msg = SparseMsg(np.ones(1000, np.float32), np.arange(1000, dtype=np.int32), 1000)
    assert buf_bytes(compress.pack(msg))[7] == 2
    # two far-apart indices in a huge size: delta (2 + 5 bytes) beats raw (8)
    msg = SparseMsg(np.ones(2, np.float32), np.array([3, 2**31 - 2], np.int32), 2**31 - 1)
    assert buf_bytes(compress.pack(msg))[7] == 1 and compress.nbytes(msg) == 40 + 8 + 1 + 5
    # one index: raw (4) ties with nothing smaller; empty message: raw (0 bytes)
    assert buf_bytes(compress.pack(SparseMsg(np.ones(0, np.float32), np.zeros(0, np.int32), 0)))[7] == 0


@pytest.mark.parametrize("codec", ["raw", "delta", "bitmap"])
def test_large_message_round_trip(codec):
    # Big enough for the parallel chunked encoders and decoders (several chunks).
    rng = np.random.default_rng(1)
    size = 3_000_000
    idx = np.flatnonzero(rng.random(size) < 0.05).astype(np.int32)
    msg = SparseMsg(rng.standard_normal(idx.size).astype(np.float32), idx, size)
    buf = compress.pack(msg, codec)
    assert buf.tobytes() == ref.pack(msg.values.tobytes(), "float32", idx, size, codec)
    got = compress.unpack(buf)
    np.testing.assert_array_equal(got.indices, idx)
    np.testing.assert_array_equal(got.values, msg.values)


def test_topk_messages_round_trip_all_frameworks():
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(2).standard_normal(10_000).astype(np.float32)
    for arr in (x, torch.from_numpy(x), jax.numpy.asarray(x)):
        msg = compress.topk(arr, 100)
        buf = compress.pack(msg)
        assert type(buf) is type(msg.values)
        got = compress.unpack(buf)
        assert type(got.values) is type(msg.values)
        np.testing.assert_array_equal(np.asarray(got.values), np.asarray(msg.values))
        np.testing.assert_array_equal(np.asarray(got.indices), np.asarray(msg.indices))


def test_numpy_bfloat16_buffer():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    msg = compress.topk(torch.randn(50, dtype=torch.bfloat16), 5)
    got = compress.unpack(compress.pack(msg).numpy())
    assert got.values.dtype == ml_dtypes.bfloat16
    assert got.values.tobytes() == value_bytes(msg.values)
    assert buf_bytes(compress.pack(got)) == buf_bytes(compress.pack(msg))  # and back


def test_cuda_message_packs_on_host(device):
    x = torch.randn(1000, device=device)
    msg = compress.topk(x, 10)
    buf = compress.pack(msg)
    assert buf.device.type == "cpu"
    got = compress.unpack(buf)
    torch.testing.assert_close(got.values, msg.values.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(got.indices, msg.indices.cpu(), rtol=0, atol=0)


# ---- adversarial buffers ------------------------------------------------------------------------------

def check_valid_or_value_error(data: bytes):
    """unpack either raises ValueError or returns a well-formed message consistent with the buffer."""
    try:
        got = compress.unpack(np.frombuffer(data, dtype=np.uint8).copy())
    except ValueError:
        return False
    idx = got.indices
    assert got.values.size == idx.size <= got.size
    assert np.all(np.diff(idx.astype(np.int64)) > 0) and (idx.size == 0 or (idx[0] >= 0 and idx[-1] < got.size))
    return True


@given(messages(frameworks=("numpy",)), st.sampled_from(CODECS), st.data())
def test_truncated_or_extended_buffer_raises(case, codec, data):
    msg, _ = case
    if codec == "bitmap" and msg.size > 10**6:
        codec = "raw"
    full = buf_bytes(compress.pack(msg, codec))
    cut = data.draw(st.integers(0, len(full) - 1))
    with pytest.raises(ValueError, match="buf"):
        compress.unpack(np.frombuffer(full[:cut], dtype=np.uint8).copy())
    with pytest.raises(ValueError, match="past the end"):
        compress.unpack(np.frombuffer(full + b"\0", dtype=np.uint8).copy())


@given(messages(frameworks=("numpy",)), st.sampled_from(CODECS), st.data())
def test_corrupted_buffer_never_reads_out_of_bounds(case, codec, data):
    msg, _ = case
    if msg.size > 10**5:
        return
    buf = bytearray(buf_bytes(compress.pack(msg, codec)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(1, 255)), min_size=1, max_size=4))
    for pos, mask in flips:
        buf[pos] ^= mask
    check_valid_or_value_error(bytes(buf))


@given(st.binary(max_size=200), st.sampled_from([0, 1, 2]), st.integers(0, 300), st.integers(0, 300))
def test_garbage_payload_after_valid_header(payload, codec, size, count):
    # A well-formed header in front of arbitrary bytes: every structural check is on the payload itself.
    value_len = min(count, len(payload) // 4) * 4
    count = value_len // 4
    header = _wire.HEADER.pack(b"CKWF", 1, 1, 1, codec, size, count, value_len, len(payload) - value_len)
    check_valid_or_value_error(header + payload)


@pytest.mark.parametrize("field, value, match", [
    (0, b"XXXX", "magic"), (1, 2, "version"), (2, 9, "kind"), (3, 7, "dtype"), (4, 5, "codec"),
    (5, 2**31, "size"), (6, 11, "count"), (7, 12, "value bytes"), (8, 3, "index bytes")])
def test_corrupted_header_fields(field, value, match):
    msg = SparseMsg(np.arange(4, dtype=np.float32), np.array([1, 3, 5, 9], np.int32), 10)
    fields = list(_wire.HEADER.unpack(buf_bytes(compress.pack(msg, "raw"))[:40]))
    body = buf_bytes(compress.pack(msg, "raw"))[40:]
    fields[field] = value
    if field in (7, 8):  # keep the total length consistent, so that the lengths' meaning is what fails
        body = body + b"\0" * max(0, fields[7] + fields[8] - len(body))
        body = body[:fields[7] + fields[8]]
    with pytest.raises(ValueError, match=match):
        compress.unpack(np.frombuffer(_wire.HEADER.pack(*fields) + body, dtype=np.uint8).copy())


@pytest.mark.parametrize("index_bytes, match", [
    (b"\x01\x00", "zero gap|shortest"), (b"\x01\x80\x00", "shortest"), (b"\x01\xff\xff\xff\xff\x7f", "overflow|past"),
    (b"\x01\x81", "past"), (b"\x05\x05", ">= size"), (b"\x01\x01\x00", "left over|zero gap")])
def test_corrupted_varints(index_bytes, match):
    count = 2
    header = _wire.HEADER.pack(b"CKWF", 1, 1, 1, 1, 8, count, 4 * count, len(index_bytes))
    with pytest.raises(ValueError, match=match):
        compress.unpack(np.frombuffer(header + bytes(8) + index_bytes, dtype=np.uint8).copy())


def test_corrupted_bitmap_and_raw():
    header = _wire.HEADER.pack(b"CKWF", 1, 1, 1, 2, 10, 1, 4, 2)
    with pytest.raises(ValueError, match="past size"):
        compress.unpack(np.frombuffer(header + bytes(4) + b"\x00\x04", dtype=np.uint8).copy())
    with pytest.raises(ValueError, match="bits set"):
        compress.unpack(np.frombuffer(header + bytes(4) + b"\x03\x00", dtype=np.uint8).copy())
    header = _wire.HEADER.pack(b"CKWF", 1, 1, 1, 0, 10, 2, 8, 8)
    for idx in ([3, 3], [4, 2], [1, 10]):
        with pytest.raises(ValueError, match="raw indices"):
            compress.unpack(np.frombuffer(header + bytes(8) + np.array(idx, "<u4").tobytes(), dtype=np.uint8).copy())


# ---- bad arguments ------------------------------------------------------------------------------------

def test_bad_arguments():
    good = SparseMsg(np.ones(3, np.float32), np.array([0, 2, 4], np.int32), 5)
    with pytest.raises(TypeError, match="msg"):
        compress.pack((good.values, good.indices, 5))
    with pytest.raises(ValueError, match="index_codec"):
        compress.pack(good, "zip")
    with pytest.raises(ValueError, match="ascending"):
        compress.pack(good._replace(indices=np.array([0, 4, 2], np.int32)), "raw")
    with pytest.raises(ValueError, match="ascending"):
        compress.pack(good._replace(indices=np.array([0, 2, 2], np.int32)), "bitmap")
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        compress.pack(good._replace(indices=np.array([0, 2, 5], np.int32)), "delta")
    with pytest.raises(ValueError, match="msg"):
        compress.pack(good._replace(size=2))
    with pytest.raises(TypeError, match="msg.indices"):
        compress.pack(good._replace(indices=good.indices.astype(np.float32)))
    with pytest.raises(TypeError, match="msg.values"):
        compress.pack(good._replace(values=good.values.astype(np.int32)))
    with pytest.raises(TypeError, match="uint8"):
        compress.unpack(np.zeros(50, np.int8))
    with pytest.raises(TypeError, match="buf"):
        compress.unpack(b"CKWF")
    with pytest.raises(ValueError, match="truncated"):
        compress.unpack(np.zeros(10, np.uint8))


# ---- large messages: the parallel chunks of the encoders and decoders ---------------------------------

def _chunk_edges(k: int) -> list[int]:
    chunks = max(1, min(1024, k // (1 << 14)))
    return sorted({k // chunks * c + min(c, k % chunks) for c in range(1, chunks)} | {1, k - 1})


@pytest.mark.parametrize("codec", ["raw", "delta", "bitmap"])
def test_large_message_with_one_bad_index_is_refused(codec):
    rng = np.random.default_rng(11)
    size = 2_000_000
    idx = np.flatnonzero(rng.random(size) < 0.1).astype(np.int32)
    k = idx.size
    values = np.zeros(k, np.float32)
    for j in _chunk_edges(k)[:6] + list(rng.integers(1, k, 3)):
        bad = idx.copy()
        bad[j] = bad[j - 1]  # a repeat exactly at (or near) a chunk edge
        with pytest.raises(ValueError, match="ascending"):
            compress.pack(SparseMsg(values, bad, size), codec)


def test_large_corrupted_raw_and_bitmap_payloads_are_refused():
    rng = np.random.default_rng(12)
    size = 2_000_000
    idx = np.flatnonzero(rng.random(size) < 0.1).astype(np.int32)
    msg = SparseMsg(np.zeros(idx.size, np.float32), idx, size)
    start = 40 + 4 * idx.size
    raw = buf_bytes(compress.pack(msg, "raw"))
    for j in _chunk_edges(idx.size)[:6]:
        data = bytearray(raw)
        data[start + 4 * j:start + 4 * j + 4] = data[start + 4 * (j - 1):start + 4 * j]  # a repeated index
        with pytest.raises(ValueError, match="raw indices"):
            compress.unpack(np.frombuffer(bytes(data), np.uint8).copy())
    bitmap = buf_bytes(compress.pack(msg, "bitmap"))
    for byte in (start, start + 100_000, len(bitmap) - 1):
        data = bytearray(bitmap)
        data[byte] ^= 0x01
        with pytest.raises(ValueError, match="bits set"):
            compress.unpack(np.frombuffer(bytes(data), np.uint8).copy())


def test_large_delta_payload_parallel_decode_matches_the_sequential_parse():
    # An index payload above 2^17 bytes decodes in parallel chunks; flipped bytes must give either
    # ValueError or exactly the message the byte-by-byte parse (the reference) reads.
    rng = np.random.default_rng(13)
    size = 20_000_000
    idx = np.flatnonzero(rng.random(size) < 0.02).astype(np.int32)
    msg = SparseMsg(np.zeros(idx.size, np.float16), idx, size)
    full = buf_bytes(compress.pack(msg, "delta"))
    start = 40 + 2 * idx.size
    assert len(full) - start > 1 << 17
    np.testing.assert_array_equal(compress.unpack(np.frombuffer(full, np.uint8).copy()).indices, idx)
    accepted = 0
    for trial in range(40):
        data = bytearray(full)
        for pos in rng.integers(start, len(full), int(rng.integers(1, 3))):
            data[pos] ^= int(rng.integers(1, 256)) if trial % 2 else 0x80  # 0x80: moves a varint boundary
        if check_valid_or_value_error(bytes(data)):
            accepted += 1
            got = compress.unpack(np.frombuffer(bytes(data), np.uint8).copy())
            want = ref.decode_indices(bytes(data[start:]), idx.size, size, "delta")
            np.testing.assert_array_equal(got.indices, want)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_varint_gaps_of_every_length_match_reference(index_dtype):
    # Gaps of 1 to 5 varint bytes mixed, and long runs of each: the 16-at-a-time encoder and decoder,
    # their fall-backs (a 5-byte gap among 16) and the chunk boundaries all meet the reference bytes.
    rng = np.random.default_rng(7)
    widths = np.concatenate([rng.integers(0, 3, 3000), np.zeros(500, int), np.full(500, 1), np.full(300, 2),
                             np.full(150, 3), rng.choice(4, 2000, p=[0.3, 0.3, 0.3, 0.1])])
    widths[[1700, 2509, 5000]] = 4  # three 5-byte gaps, at different places in a group of 16
    # w + 1 varint bytes: gaps from [2^(7w), 2^(7w) + 2^(7w - 2)) (small enough to sum below 2^31), 1 to 127 for w = 0
    low = np.maximum(1, (1 << (7 * widths)) * (widths > 0))
    high = np.where(widths == 0, 128, low + (1 << np.maximum(0, 7 * widths - 2)))
    gaps = rng.integers(low, high)
    idx = np.cumsum(gaps)
    size = 2**31 - 1
    assert idx[-1] < size and len(idx) == len(widths)
    idx = idx.astype(index_dtype)
    msg = SparseMsg(rng.standard_normal(idx.size).astype(np.float32), idx, size)
    buf = compress.pack(msg, "delta")
    assert buf.tobytes() == ref.pack(msg.values.tobytes(), "float32", idx, size, "delta")
    got = compress.unpack(buf)
    np.testing.assert_array_equal(got.indices, idx)
    np.testing.assert_array_equal(got.values, msg.values)


WIRE_DISPATCH_SCRIPT = r"""
import hashlib, numpy as np
from commkernels import compress
rng = np.random.default_rng(11)
out = []
for size, k in ((1000, 400), (10**6, 10**4), (3 * 10**6, 150_000), (2**31 - 1, 5000)):
    idx = np.unique(rng.integers(0, size, k))
    for dtype in (np.int32, np.int64):
        msg = compress.SparseMsg(rng.standard_normal(idx.size).astype(np.float32), idx.astype(dtype), size)
        buf = compress.pack(msg, "delta")
        out.append(hashlib.sha256(buf.tobytes()).hexdigest())
        for _ in range(20):  # corrupted payloads: the same indices or the same error
            bad = buf.copy()
            pos = rng.integers(40 + 4 * idx.size, bad.size, 2)
            bad[pos] = rng.integers(0, 256, 2)
            try:
                out.append(hashlib.sha256(compress.unpack(bad).indices.tobytes()).hexdigest())
            except ValueError as error:
                out.append(str(error))
print("\n".join(out))
"""


def test_wire_avx512_paths_match_baseline_paths(run_python):
    avx512, baseline = (run_python(WIRE_DISPATCH_SCRIPT, avx512) for avx512 in (True, False))
    assert avx512 == baseline and avx512.strip()
