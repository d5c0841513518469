"""XXH3-64 (seed 0, the default secret) of short inputs, compiled (numba): content_hash of many short texts.

content_hash is `xxhash.xxh3_64_intdigest` of each text's joined words. The library hashes at memory speed, but a
Python call per text costs ~0.3-0.5 µs, more than hashing a one-line text: 3.2 of the 12 CPU ms per MiB of all
features on one-line documents. Here the inputs of up to 240 bytes, XXH3's short and mid-size paths (a handful
of multiplications each, no stripes), are hashed in one call for the whole batch; longer ones are left to the
library, whose call is then a small part of the work. The algorithm is XXH3's specification (xxhash.h, v0.8),
checked against the library on every length from 0 to 240 (tests/test_features.py).
"""

from __future__ import annotations

import numpy as np

from prep.text._feature_kernel import _load8_low as _read64  # the little-endian 64-bit word at data[at]
from prep.text._numba import njit

# What this module hashes; a longer input is the library's.
SHORT_MAX = 240

_P32_1, _P32_2, _P32_3 = np.uint64(0x9E3779B1), np.uint64(0x85EBCA77), np.uint64(0xC2B2AE3D)
_P64_1, _P64_2, _P64_3 = np.uint64(0x9E3779B185EBCA87), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)
_MX1, _MX2 = np.uint64(0x165667919E3779F9), np.uint64(0x9FB21C651E98DF25)
_LOW32 = np.uint64(0xFFFFFFFF)
# XXH3's default secret (XXH3_kSecret), the first 136 bytes (XXH3_SECRET_SIZE_MIN): all that inputs up to 240
# bytes read
_SECRET = np.frombuffer(bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671fcb79e64eccc0e578825ad07dccff7221"
    "b8084674f743248ee03590e6813a264c3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364eac5ac8334d3ebc3"), np.uint8)

_helper = njit(cache=True, nogil=True, _nrt=False)


@njit(cache=True, nogil=True)
def short_hashes(data, offsets):  # noqa: ANN001, ANN201 - numba arrays
    """XXH3-64 of each input data[offsets[i]:offsets[i + 1]] of up to SHORT_MAX bytes (0 for a longer one), and
    the indices of the longer ones."""
    n = len(offsets) - 1
    out = np.zeros(n, np.uint64)
    longer = np.zeros(n, np.int64)
    k = 0
    for i in range(n):
        a, e = offsets[i], offsets[i + 1]
        if e - a > SHORT_MAX:
            longer[k] = i
            k += 1
        else:
            out[i] = _hash(data, a, e - a)
    return out, longer[:k]


@_helper
def _hash(data, at, size):  # noqa: ANN001, ANN201 - numba array and scalars
    """XXH3_64bits of data[at:at + size], size <= 240."""
    length = np.uint64(size)
    if size > 128:
        acc = length * _P64_1
        for i in range(8):
            acc += _mix16(data, at + 16 * i, 16 * i)
        last = _mix16(data, at + size - 16, 136 - 17)  # XXH3_SECRET_SIZE_MIN - XXH3_MIDSIZE_LASTOFFSET
        acc = _avalanche(acc)
        for i in range(8, size // 16):
            last += _mix16(data, at + 16 * i, 16 * (i - 8) + 3)  # XXH3_MIDSIZE_STARTOFFSET
        return _avalanche(acc + last)
    if size > 16:
        acc = length * _P64_1
        if size > 32:
            if size > 64:
                if size > 96:
                    acc += _mix16(data, at + 48, 96)
                    acc += _mix16(data, at + size - 64, 112)
                acc += _mix16(data, at + 32, 64)
                acc += _mix16(data, at + size - 48, 80)
            acc += _mix16(data, at + 16, 32)
            acc += _mix16(data, at + size - 32, 48)
        acc += _mix16(data, at, 0)
        acc += _mix16(data, at + size - 16, 16)
        return _avalanche(acc)
    if size > 8:
        low = _read64(data, at) ^ (_secret64(24) ^ _secret64(32))
        high = _read64(data, at + size - 8) ^ (_secret64(40) ^ _secret64(48))
        return _avalanche(length + _swap64(low) + high + _mul_fold(low, high))
    if size >= 4:
        first, last = _read32(data, at), _read32(data, at + size - 4)
        keyed = (last + (first << np.uint64(32))) ^ (_secret64(8) ^ _secret64(16))
        return _rrmxmx(keyed, length)
    if size:
        c1, c2, c3 = np.uint64(data[at]), np.uint64(data[at + (size >> 1)]), np.uint64(data[at + size - 1])
        combined = (c1 << np.uint64(16)) | (c2 << np.uint64(24)) | c3 | (length << np.uint64(8))
        return _xxh64_avalanche(combined ^ (_secret32(0) ^ _secret32(4)))
    return _xxh64_avalanche(_secret64(56) ^ _secret64(64))


@_helper
def _read32(data, at):  # noqa: ANN001, ANN201 - numba array and scalar
    """The little-endian 32-bit word at data[at] (its 64-bit twin is the features' `_load8_low`)."""
    value = np.uint64(0)
    for t in range(4):
        value |= np.uint64(data[at + t]) << np.uint64(8 * t)
    return value


@_helper
def _secret64(at):  # noqa: ANN001, ANN201 - numba scalar
    return _read64(_SECRET, at)


@_helper
def _secret32(at):  # noqa: ANN001, ANN201 - numba scalar
    return _read32(_SECRET, at)


@_helper
def _mix16(data, at, secret_at):  # noqa: ANN001, ANN201 - numba array and scalars
    """XXH3_mix16B with seed 0."""
    return _mul_fold(_read64(data, at) ^ _secret64(secret_at), _read64(data, at + 8) ^ _secret64(secret_at + 8))


@_helper
def _mul_fold(a, b):  # noqa: ANN001, ANN201 - numba scalars
    """The 128-bit product of a and b, its low and high halves xor-ed (XXH3_mul128_fold64), from 32-bit halves."""
    a_lo, a_hi, b_lo, b_hi = a & _LOW32, a >> np.uint64(32), b & _LOW32, b >> np.uint64(32)
    lo_lo, hi_lo, lo_hi, hi_hi = a_lo * b_lo, a_hi * b_lo, a_lo * b_hi, a_hi * b_hi
    cross = (lo_lo >> np.uint64(32)) + (hi_lo & _LOW32) + lo_hi
    upper = (hi_lo >> np.uint64(32)) + (cross >> np.uint64(32)) + hi_hi
    lower = (cross << np.uint64(32)) | (lo_lo & _LOW32)
    return lower ^ upper


@_helper
def _swap64(x):  # noqa: ANN001, ANN201 - numba scalar
    value = np.uint64(0)
    for t in range(8):
        value |= ((x >> np.uint64(8 * t)) & np.uint64(0xFF)) << np.uint64(56 - 8 * t)
    return value


@_helper
def _rotl(x, r):  # noqa: ANN001, ANN201 - numba scalars
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@_helper
def _avalanche(h):  # noqa: ANN001, ANN201 - numba scalar
    h ^= h >> np.uint64(37)
    h *= _MX1
    return h ^ (h >> np.uint64(32))


@_helper
def _xxh64_avalanche(h):  # noqa: ANN001, ANN201 - numba scalar
    h ^= h >> np.uint64(33)
    h *= _P64_2
    h ^= h >> np.uint64(29)
    h *= _P64_3
    return h ^ (h >> np.uint64(32))


@_helper
def _rrmxmx(h, length):  # noqa: ANN001, ANN201 - numba scalars
    h ^= _rotl(h, 49) ^ _rotl(h, 24)
    h *= _MX2
    h ^= (h >> np.uint64(35)) + length
    h *= _MX2
    return h ^ (h >> np.uint64(28))
