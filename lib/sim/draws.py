"""Counter-based random numbers: a draw is a hash of (seed, stream, patient, draw number). Pure.

The simulator keeps no generator object per patient. A patient's draws are numbered, and draw
``n`` of a stream is ``splitmix64(key + n * gamma)`` with ``key = stream_key(seed, tag, index)``,
so a patient's randomness depends only on the seed, the patient's index and how many draws it
has used: not on the cohort's size, nor on which worker simulates it.

The scalar functions (plain Python integers) serve the per-reading work; :func:`uniforms` is the
same hash over a numpy array, for the per-patient attributes of a whole cohort at once. Both give
the same bits: integer arithmetic modulo 2**64 and one exact scaling to a float.
"""

from __future__ import annotations

import math

import numpy as np

_M64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_TO_UNIT = 2.0**-53
_TO_UNIT32 = 2.0**-32
_TWO_PI = 2.0 * math.pi


def mix64(x: int) -> int:
    """The splitmix64 finaliser: a bijection of 64-bit integers that scatters every bit."""
    x = ((x ^ (x >> 30)) * _C1) & _M64
    x = ((x ^ (x >> 27)) * _C2) & _M64
    return x ^ (x >> 31)


def stream_key(seed: int, tag: int, index: int) -> int:
    """The key of one patient's stream of draws (``tag`` names the stream's purpose)."""
    k = mix64((seed * _GAMMA + tag) & _M64)
    return mix64((k + (index + 1) * _C2) & _M64)


def bits(key: int, n: int) -> int:
    """Draw ``n`` of a stream: 64 random bits."""
    x = (key + n * _GAMMA) & _M64
    x = ((x ^ (x >> 30)) * _C1) & _M64
    x = ((x ^ (x >> 27)) * _C2) & _M64
    return x ^ (x >> 31)


def uniform(key: int, n: int) -> float:
    """Draw ``n`` as a uniform float in [0, 1) (53 bits)."""
    return (bits(key, n) >> 11) * _TO_UNIT


def normal(key: int, n: int) -> float:
    """Draw ``n`` as a standard normal (Box-Muller on the two 32-bit halves of one draw)."""
    x = bits(key, n)
    u1 = ((x >> 32) + 0.5) * _TO_UNIT32
    u2 = (x & 0xFFFFFFFF) * _TO_UNIT32
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)


# ------------------------------------------------------------------------------ vectorised
def _mix64_np(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_C1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(_C2)
    return x ^ (x >> np.uint64(31))


def stream_keys(seed: int, tag: int, indexes: np.ndarray) -> np.ndarray:
    """:func:`stream_key` of many patients (uint64)."""
    k = np.uint64(mix64((seed * _GAMMA + tag) & _M64))
    with np.errstate(over="ignore"):
        return _mix64_np(k + (indexes.astype(np.uint64) + np.uint64(1)) * np.uint64(_C2))


def uniforms(seed: int, tag: int, indexes: np.ndarray, n: int = 0) -> np.ndarray:
    """:func:`uniform` draw ``n`` of many patients' streams ``(seed, tag, index)``."""
    return uniforms_of(stream_keys(seed, tag, indexes), n)


def bits_of(keys: np.ndarray, n: int) -> np.ndarray:
    """:func:`bits` draw ``n`` of the streams ``keys`` (uint64)."""
    with np.errstate(over="ignore"):
        return _mix64_np(keys + np.uint64((n * _GAMMA) & _M64))


def uniforms_of(keys: np.ndarray, n: int) -> np.ndarray:
    """:func:`uniform` draw ``n`` of the streams ``keys`` (the same floats)."""
    return (bits_of(keys, n) >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def normals_of(keys: np.ndarray, n: int) -> list[float]:
    """:func:`normal` draw ``n`` of the streams ``keys``: the hashes in numpy, the
    logarithm and cosine by :mod:`math` per value, so the floats are :func:`normal`'s own."""
    x = bits_of(keys, n)
    u1 = ((x >> np.uint64(32)).astype(np.float64) + 0.5) * _TO_UNIT32
    u2 = (x & np.uint64(0xFFFFFFFF)).astype(np.float64) * _TO_UNIT32
    sqrt, log, cos = math.sqrt, math.log, math.cos
    return [
        sqrt(-2.0 * log(a)) * cos(_TWO_PI * b)
        for a, b in zip(u1.tolist(), u2.tolist(), strict=True)
    ]
