"""pack / unpack of the quantized messages (SignMsg, TernMsg, QsgdMsg, NaturalMsg): bytes against the
reference (commkernels.reference.wire), exact round trips, hand-checked tiny buffers, a fuzzed decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from commkernels import compress
from commkernels.compress import NaturalMsg, QsgdMsg, SignMsg, TernMsg
from commkernels.compress import _wire
from commkernels.reference import wire as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
KINDS = ("sign", "tern", "qsgd", "natural")
CLASSES = {SignMsg: "sign", TernMsg: "tern", QsgdMsg: "qsgd", NaturalMsg: "natural"}
DECOMPRESS = {SignMsg: compress.sign_decompress, TernMsg: compress.terngrad_decompress,
              QsgdMsg: compress.qsgd_decompress, NaturalMsg: compress.natural_decompress}


def as_bytes(a) -> bytes:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if a.numel() else b""
    return np.ascontiguousarray(np.asarray(a)).tobytes()


def floats_of(msg):
    return {SignMsg: lambda m: m.scale, TernMsg: lambda m: m.scale, QsgdMsg: lambda m: m.norms,
            NaturalMsg: lambda m: None}[type(msg)](msg)


def codes_of(msg):
    return msg.bits if isinstance(msg, SignMsg) else msg.codes


def reference_bytes(msg) -> bytes:
    kind = CLASSES[type(msg)]
    floats = floats_of(msg)
    floats = None if floats is None else np.frombuffer(as_bytes(floats), np.float32)
    extra = dict(levels=msg.levels, bucket_size=msg.bucket_size) if kind == "qsgd" else {}
    return ref.pack_quantized(kind, floats, as_bytes(codes_of(msg)), msg.size, **extra)


def assert_same_message(got, msg):
    assert type(got) is type(msg)
    for field in msg._fields:
        a, b = getattr(msg, field), getattr(got, field)
        if isinstance(a, int):
            assert type(b) is int and a == b, field
        else:
            assert str(a.dtype) == str(b.dtype), field
            assert as_bytes(a) == as_bytes(b), field  # bit for bit: NaN payloads included
    assert as_bytes(DECOMPRESS[type(msg)](got)) == as_bytes(DECOMPRESS[type(msg)](msg))


def make_input(draw, size: int, dtype: str, framework: str, seed: int):
    rng = np.random.default_rng(seed)
    style = draw(st.sampled_from(["normal", "normal", "wide", "zeros", "special"]))
    x = rng.standard_normal(size)
    if style == "wide":
        x *= 2.0 ** rng.integers(-40, 40, size)
    elif style == "zeros":
        x *= rng.random(size) < 0.1
    elif style == "special" and size:
        x[rng.integers(0, size, 3)] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0], 3)
    if dtype == "bfloat16" or framework == "torch":
        return torch.from_numpy(x).to(getattr(torch, dtype))
    with np.errstate(over="ignore"):
        return x.astype(dtype)


@st.composite
def quantized_messages(draw, frameworks=("numpy", "torch"), max_size=100_000):
    kind = draw(st.sampled_from(KINDS))
    dtype = draw(st.sampled_from(DTYPES))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(frameworks))
    size = draw(st.one_of(st.integers(0, 70), st.integers(0, 5000),
                          st.sampled_from([0, 1, 7, 8, 9, 1023, max_size])))
    seed, step = draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1))
    x = make_input(draw, size, dtype, framework, draw(st.integers(0, 2**32 - 1)))
    if kind == "sign":
        return compress.sign_compress(x, draw(st.sampled_from(["l1", "l2", None])))
    if kind == "tern":
        return compress.terngrad(x, seed, step)
    if kind == "natural":
        return compress.natural_compress(x, seed, step)
    levels = draw(st.one_of(st.sampled_from([1, 2, 3, 4, 7, 8, 15, 16, 127, 255, 256, 65535]), st.integers(1, 65535)))
    bucket_size = draw(st.one_of(st.sampled_from([1, 2, 3, 7, 8, 512, 100_000, 2**40]), st.integers(1, 3000)))
    return compress.qsgd(x, levels, seed, step, bucket_size)


@given(quantized_messages(), st.sampled_from(["auto", "raw", "delta", "bitmap"]))
def test_pack_matches_reference_and_round_trips(msg, codec):
    buf = compress.pack(msg, codec)
    codes = codes_of(msg)
    assert type(buf) is type(codes) and buf.dtype == (torch.uint8 if isinstance(buf, torch.Tensor) else np.uint8)
    expected = reference_bytes(msg)
    assert as_bytes(buf) == expected
    assert compress.nbytes(msg, codec) == msg.nbytes == len(expected)
    got = compress.unpack(buf)
    assert_same_message(got, msg)
    assert as_bytes(compress.pack(got)) == expected  # and back
    kind, floats, code_bytes, size, levels, bucket_size = ref.unpack_quantized(expected)
    assert (kind, code_bytes, size) == (CLASSES[type(msg)], as_bytes(codes), msg.size)
    if kind == "qsgd":
        assert (levels, bucket_size) == (msg.levels, msg.bucket_size)


def test_error_feedback_messages_round_trip():
    rng = np.random.default_rng(3)
    g = rng.standard_normal(10_001).astype(np.float32)
    for make in (lambda r: compress.sign_compress_ef_(g, r, "l2"), lambda r: compress.terngrad_ef_(g, r, 1, 2),
                 lambda r: compress.qsgd_ef_(g, r, 6, 1, 2, 100), lambda r: compress.natural_compress_ef_(g, r, 1, 2)):
        msg = make(rng.standard_normal(g.size).astype(np.float32))
        buf = compress.pack(msg)
        assert buf.tobytes() == reference_bytes(msg) and msg.nbytes == buf.size
        assert_same_message(compress.unpack(buf), msg)


# ---- hand-checked buffers -----------------------------------------------------------------------------

def _hex(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


HAND_CHECKED = [
    # elements 0 and 2 negative (bits 0b101), scale 0.5: [-0.5, 0.5, -0.5]
    (SignMsg(np.array([0x05], np.uint8), np.array([0.5], np.float32), 3),
     "434b5746 01 02 01 01 0300000000000000 0000000000000000 0400000000000000 0100000000000000"
     "0000003f 05", [-0.5, 0.5, -0.5]),
    # codes 1, 3, 0, 1 | 3 (2 bits each, LSB first): 0x4d, 0x03; scale 2
    (TernMsg(np.array([0x4D, 0x03], np.uint8), np.array([2.0], np.float32), 5),
     "434b5746 01 03 01 02 0500000000000000 0000000000000000 0400000000000000 0200000000000000"
     "00000040 4d03", [2, -2, 0, 2, -2]),
    # levels 3 (3-bit codes), buckets of 2, norms 1 and 2; codes 0b011 (xi 1, negative), 0b110 (xi 3), 0:
    # 3 | 6 << 3 = 0x33, then one bit of code 2 and 7 zero padding bits; count = 3 | 2 << 16
    (QsgdMsg(np.array([0x33, 0x00], np.uint8), np.array([1.0, 2.0], np.float32), 3, 3, 2),
     "434b5746 01 04 01 03 0300000000000000 0300020000000000 0800000000000000 0200000000000000"
     "0000803f 00000040 3300", [-1 / 3, 1, 0]),
    # codes 0 (zero), 100 (2^0), 0x80 | 101 (-2^1)
    (NaturalMsg(np.array([0, 100, 0xE5], np.uint8), 3),
     "434b5746 01 05 01 08 0300000000000000 0000000000000000 0000000000000000 0300000000000000"
     "0064e5", [0, 1, -2]),
]


@pytest.mark.parametrize("msg, hexbytes, dense", HAND_CHECKED, ids=["sign", "tern", "qsgd", "natural"])
def test_hand_checked_bytes(msg, hexbytes, dense):
    buf = compress.pack(msg)
    assert buf.tobytes() == _hex(hexbytes) == reference_bytes(msg)
    assert msg.nbytes == len(_hex(hexbytes))
    got = compress.unpack(buf)
    assert_same_message(got, msg)
    np.testing.assert_allclose(DECOMPRESS[type(msg)](got), np.array(dense, np.float32), rtol=1e-7)


def test_bytes_per_element_at_one_million():
    d = 10**6
    x = np.random.default_rng(4).standard_normal(d).astype(np.float32)
    assert compress.sign_compress(x).nbytes == 40 + 4 + d // 8
    assert compress.terngrad(x, 1, 2).nbytes == 40 + 4 + d // 4
    assert compress.natural_compress(x, 1, 2).nbytes == 40 + d
    for levels, width in ((1, 2), (15, 5), (255, 9)):
        msg = compress.qsgd(x, levels, 1, 2, 512)
        assert msg.nbytes == 40 + 4 * 1954 + d * width // 8 == len(compress.pack(msg))


# ---- frameworks ---------------------------------------------------------------------------------------

def test_every_framework_round_trips():
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(5).standard_normal(1000).astype(np.float32)
    for arr in (x, torch.from_numpy(x), jax.numpy.asarray(x)):
        for msg in (compress.sign_compress(arr), compress.terngrad(arr, 1, 2), compress.qsgd(arr, 7, 1, 2, 64),
                    compress.natural_compress(arr, 1, 2)):
            buf = compress.pack(msg)
            assert type(buf) is type(codes_of(msg))
            got = compress.unpack(buf)
            assert type(codes_of(got)) is type(codes_of(msg))
            assert_same_message(got, msg)


def test_cuda_message_packs_on_host(device):
    x = torch.randn(1000, device=device)
    for msg in (compress.sign_compress(x), compress.terngrad(x, 1, 2), compress.qsgd(x, 7, 1, 2, 64),
                compress.natural_compress(x, 1, 2)):
        buf = compress.pack(msg)
        assert buf.device.type == "cpu" and msg.nbytes == buf.numel()
        got = compress.unpack(buf)
        assert codes_of(got).device.type == "cpu"
        assert as_bytes(codes_of(got)) == as_bytes(codes_of(msg))
        if floats_of(msg) is not None:
            assert as_bytes(floats_of(got)) == as_bytes(floats_of(msg))


# ---- adversarial buffers ------------------------------------------------------------------------------

def check_valid_or_value_error(data: bytes) -> bool:
    """unpack either raises ValueError or returns a well-formed message (that packs back to `data`)."""
    try:
        got = compress.unpack(np.frombuffer(data, dtype=np.uint8).copy())
    except ValueError:
        return False
    if isinstance(got, compress.SparseMsg):
        return True
    assert type(got) in CLASSES
    assert got.nbytes == len(data)
    assert compress.pack(got).tobytes() == data  # so every field has the length its size demands
    assert DECOMPRESS[type(got)](got).size == got.size
    return True


@given(quantized_messages(frameworks=("numpy",), max_size=5000), st.data())
def test_truncated_or_extended_buffer_raises(msg, data):
    full = as_bytes(compress.pack(msg))
    cut = data.draw(st.integers(0, len(full) - 1))
    with pytest.raises(ValueError, match="buf"):
        compress.unpack(np.frombuffer(full[:cut], dtype=np.uint8).copy())
    with pytest.raises(ValueError, match="past the end"):
        compress.unpack(np.frombuffer(full + b"\0", dtype=np.uint8).copy())


@given(quantized_messages(frameworks=("numpy",), max_size=5000), st.data())
def test_corrupted_buffer_never_reads_out_of_bounds(msg, data):
    buf = bytearray(as_bytes(compress.pack(msg)))
    # bytes of the header and of the last code byte (the padding bits) are hit most often
    positions = st.one_of(st.integers(0, len(buf) - 1), st.integers(0, 39), st.just(len(buf) - 1))
    flips = data.draw(st.lists(st.tuples(positions, st.integers(1, 255)), min_size=1, max_size=4))
    for pos, mask in flips:
        buf[pos] ^= mask
    check_valid_or_value_error(bytes(buf))


@given(st.sampled_from([2, 3, 4, 5]), st.integers(0, 20), st.integers(0, 300),
       st.one_of(st.just(0), st.integers(0, 2**64 - 1), st.integers(0, 2**22)), st.integers(0, 200),
       st.binary(max_size=300))
def test_garbage_after_well_formed_header(kind, width, size, count, len0, payload):
    # A header whose lengths add up, in front of arbitrary bytes: the parameter and content checks decide.
    len0 = min(len0, len(payload))
    header = _wire.HEADER.pack(b"CKWF", 1, kind, 1, width, size, count, len0, len(payload) - len0)
    check_valid_or_value_error(header + payload)


@given(st.sampled_from(KINDS), st.integers(0, 3000), st.integers(1, 65535), st.integers(1, 5000), st.data())
def test_any_payload_of_the_right_lengths_is_accepted_iff_padding_and_signs_are_clean(kind, size, levels,
                                                                                       bucket_size, data):
    width = ref.code_width(kind, levels)
    n_codes = (size * width + 7) // 8
    n_floats = {"sign": 1, "tern": 1, "natural": 0, "qsgd": -(-size // bucket_size)}[kind]
    codes = bytearray(data.draw(st.binary(min_size=n_codes, max_size=n_codes)))
    floats = np.frombuffer(data.draw(st.binary(min_size=4 * n_floats, max_size=4 * n_floats)), "<f4")
    clean_padding = data.draw(st.booleans())
    used = size * width % 8
    if clean_padding and used:
        codes[-1] &= (1 << used) - 1
    buf = ref.pack_quantized(kind, floats, bytes(codes), size, levels, bucket_size)
    accepted = check_valid_or_value_error(buf)
    dirty = used and codes[-1] >> used
    with np.errstate(invalid="ignore"):
        negative = bool(np.any(floats < 0))
    assert accepted == (not dirty and not negative)


QSGD = QsgdMsg(np.array([0x33, 0x00], np.uint8), np.array([1.0, 2.0], np.float32), 3, 3, 2)
SIGN = SignMsg(np.array([0x05], np.uint8), np.array([0.5], np.float32), 3)


@pytest.mark.parametrize("msg, field, value, match", [
    (QSGD, 3, 2, "dtype"), (QSGD, 4, 4, "code width"), (QSGD, 6, 2 << 16, "levels"), (QSGD, 6, 3, "bucket_size"),
    (QSGD, 6, 3 | 1 << 16, "norms bytes"), (QSGD, 6, 7 | 2 << 16, "code width"), (QSGD, 5, 5, "norms bytes"),
    (QSGD, 5, 2**31, "size"), (SIGN, 6, 1, "count"), (SIGN, 4, 2, "code width"), (SIGN, 2, 3, "code width"),
    (SIGN, 2, 5, "code width"), (SIGN, 5, 9, "code bytes"), (SIGN, 7, 8, "scale bytes"), (SIGN, 2, 4, "levels")])
def test_corrupted_header_fields(msg, field, value, match):
    full = compress.pack(msg).tobytes()
    fields = list(_wire.HEADER.unpack(full[:40]))
    body = full[40:]
    fields[field] = value
    if field in (7, 8):  # keep the total length consistent, so that the lengths' meaning is what fails
        body = (body + b"\0" * max(0, fields[7] + fields[8] - len(body)))[:fields[7] + fields[8]]
    with pytest.raises(ValueError, match=match):
        compress.unpack(np.frombuffer(_wire.HEADER.pack(*fields) + body, dtype=np.uint8).copy())


@pytest.mark.parametrize("msg, last, match", [
    (SIGN, 0x0D, "padding"), (QSGD, 0x02, "padding"),
    (TernMsg(np.array([0x4D, 0x03], np.uint8), np.array([2.0], np.float32), 5), 0x07, "padding")])
def test_padding_bits_are_refused(msg, last, match):
    data = bytearray(compress.pack(msg).tobytes())
    data[-1] = last
    with pytest.raises(ValueError, match=match):
        compress.unpack(np.frombuffer(bytes(data), np.uint8).copy())
    codes = np.frombuffer(bytes(data[-codes_of(msg).size:]), np.uint8).copy()
    bad = msg._replace(bits=codes) if isinstance(msg, SignMsg) else msg._replace(codes=codes)
    with pytest.raises(ValueError, match=match):
        compress.pack(bad)


@pytest.mark.parametrize("value", [-1.0, -np.inf, -1e-45])
def test_negative_scale_or_norm_is_refused(value):
    for msg, offset in ((SIGN, 40), (QSGD, 44)):
        data = bytearray(compress.pack(msg).tobytes())
        data[offset:offset + 4] = np.float32(value).tobytes()
        with pytest.raises(ValueError, match="negative"):
            compress.unpack(np.frombuffer(bytes(data), np.uint8).copy())
    with pytest.raises(ValueError, match="negative"):
        compress.pack(SIGN._replace(scale=np.array([value], np.float32)))


def test_non_finite_scales_round_trip():
    # the compressors give NaN and +inf scales for non-finite input: they travel as they are
    for scale in (np.nan, np.inf, 0.0, -0.0):
        msg = SIGN._replace(scale=np.array([scale], np.float32))
        assert_same_message(compress.unpack(compress.pack(msg)), msg)
    x = np.array([1.0, np.nan, 2.0], np.float32)
    for msg in (compress.sign_compress(x), compress.terngrad(x, 1, 2), compress.qsgd(x, 3, 1, 2, 2)):
        assert_same_message(compress.unpack(compress.pack(msg)), msg)


# ---- bad arguments ------------------------------------------------------------------------------------

def test_bad_arguments():
    with pytest.raises(TypeError, match="msg.bits"):
        compress.pack(SIGN._replace(bits=SIGN.bits.view(np.int8)))
    with pytest.raises(ValueError, match="msg.bits"):
        compress.pack(SIGN._replace(size=9))
    with pytest.raises(TypeError, match="msg.scale"):
        compress.pack(SIGN._replace(scale=SIGN.scale.astype(np.float64)))
    with pytest.raises(ValueError, match="msg.scale"):
        compress.pack(SIGN._replace(scale=np.ones(2, np.float32)))
    with pytest.raises(ValueError, match="msg.norms"):
        compress.pack(QSGD._replace(bucket_size=1))
    with pytest.raises(ValueError, match="msg.levels"):
        compress.pack(QSGD._replace(levels=0))
    with pytest.raises(ValueError, match="msg.levels"):
        compress.nbytes(QSGD._replace(levels=65536))
    with pytest.raises(ValueError, match="msg.bucket_size"):
        compress.pack(QSGD._replace(bucket_size=2**48))
    with pytest.raises(TypeError, match="msg.size"):
        compress.pack(QSGD._replace(size=3.0))
    with pytest.raises(ValueError, match="msg.codes"):
        compress.pack(NaturalMsg(np.zeros(4, np.uint8), 3))
    with pytest.raises(TypeError, match="msg.scale"):
        compress.pack(SignMsg(SIGN.bits, torch.from_numpy(SIGN.scale), 3))
    with pytest.raises(ValueError, match="index_codec"):
        compress.pack(SIGN, "zip")
    with pytest.raises(TypeError, match="msg"):
        compress.pack(tuple(SIGN))
    # the largest bucket_size the format holds
    big = QSGD._replace(norms=np.array([1.0], np.float32), bucket_size=2**48 - 1)
    assert_same_message(compress.unpack(compress.pack(big)), big)
