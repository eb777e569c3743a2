"""exp and log for numba kernels, made of IEEE-754 additions, multiplications and divisions
only, so that they give the same bits on every CPU and with every C library (a libm's exp
and log differ between its versions and between its FMA and non-FMA builds, and numpy's
between its SIMD paths), and so that the compiler can vectorise loops that call them.
Both are accurate to a few units in the last place of a float64 (tests/test_hmm.py).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

LN2 = 0.6931471805599453  # constants written out rather than left to the C library
LOG_2PI = 1.8378770664093453  # log(2 pi)
LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * LN2_HI is exact for |k| < 2**11
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e+00
SQRT_HALF = 0.7071067811865476
SHIFTER = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer
# Taylor terms 1/i! of e**r (|r| <= ln2 / 2) and 1/(2i+1) of log m = 2 atanh(z) (|z| <= 0.172)
E0, E1, E2, E3, E4, E5, E6, E7, E8, E9, E10, E11, E12, E13 = (1.0 / math.factorial(i) for i in range(14))
L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11 = (1.0 / (2 * i + 1) for i in range(12))


@intrinsic
def _from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bit pattern is the int64 `bits`."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _to_bits(typingctx, x):
    """The IEEE-754 bit pattern of the float64 `x`, as an int64."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@numba.njit(cache=True)
def exp(y):
    """e**y; below -708 (where e**y leaves the normal range) the result is e**-708."""
    y = min(max(y, -708.0), 709.0)
    t = y * INV_LN2 + SHIFTER  # the low bits of t hold k = round(y / ln 2)
    k = t - SHIFTER
    r = (y - k * LN2_HI) - k * LN2_LO
    p = ((((((((((((E13 * r + E12) * r + E11) * r + E10) * r + E9) * r + E8) * r + E7) * r + E6) * r + E5)
                * r + E4) * r + E3) * r + E2) * r + E1) * r + E0
    return p * _from_bits((_to_bits(t) + 1023) << 52)  # p * 2**k


@numba.njit(cache=True)
def log(x):
    """Natural logarithm of x >= 0 (-inf at 0)."""
    if x <= 0.0:
        return -math.inf
    if x < 2.2250738585072014e-308:  # subnormal: scale into the normal range first
        return log_normal(x * 18014398509481984.0) - 54 * LN2
    return log_normal(x)


@numba.njit(cache=True)
def log_normal(x):
    """Natural logarithm of a positive normal (not subnormal) float64; branch-free."""
    bits = _to_bits(x)
    e = ((bits >> 52) & 0x7FF) - 1022
    m = _from_bits((bits & 0xFFFFFFFFFFFFF) | (1022 << 52))  # x = m * 2**e, 0.5 <= m < 1
    low = m < SQRT_HALF
    m = 2.0 * m if low else m
    e = e - 1 if low else e
    z = (m - 1.0) / (m + 1.0)
    z2 = z * z
    s = ((((((((((L11 * z2 + L10) * z2 + L9) * z2 + L8) * z2 + L7) * z2 + L6) * z2 + L5) * z2 + L4) * z2 + L3)
          * z2 + L2) * z2 + L1) * z2 + L0
    return e * LN2_HI + (e * LN2_LO + 2.0 * z * s)


@numba.njit(cache=True)
def log_rows(v):
    """[N] sums over each row of v [N, D] of log v[n, d], in order of d (no SIMD-width-dependent
    rounding)."""
    out = np.zeros(v.shape[0])
    for i in range(v.shape[0]):
        for d in range(v.shape[1]):
            out[i] += log(v[i, d])
    return out
