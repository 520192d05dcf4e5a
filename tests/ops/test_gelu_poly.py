"""The exact GELU for the Hopper GEMMs' 16- and 8-bit epilogues (csrc/gemm/gelu_poly.h), compiled for the
host from the header and run on every bf16 and fp16 input: rounded to the input's
format, it is the correctly rounded GELU (from float64) but for a few counted inputs, each within one
unit in the last place, and the cut's neighbourhood below -5.5; against torch's F.gelu it differs only
where torch's float32 `1 + erf(v / sqrt 2)` has lost its digits (v < -3.5). The host build's exp2f is not
the GPU's ex2.approx: these counts are the polynomial's; the kernels' own, on every 16-bit input, come
with the kernels (csrc/gemm/NOTES.md, "The GELU epilogue at the product's cost")."""
import ctypes
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.ops.host_build import host_library

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
SOURCE = """
#include "gemm/gelu_poly.h"
extern "C" void gelu_poly_n(const float* v, float* out, long n) {
  for (long i = 0; i < n; ++i) out[i] = vitfast::gemm::gelu_poly(v[i]);
}
"""


@pytest.fixture(scope="module")
def gelu_poly(tmp_path_factory):
    # -ffp-contract=off: the header's fmaf calls are its only fused operations, as nvcc compiles them
    fn = host_library(tmp_path_factory.mktemp("gelu_poly"), "gelu_poly", SOURCE, "-ffp-contract=off").gelu_poly_n
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]

    def run(v):
        v = np.ascontiguousarray(v, dtype=np.float32)
        out = np.empty_like(v)
        fn(v.ctypes.data, out.ctypes.data, v.size)
        return out
    return run


def every(dtype):
    """Every value of a 16-bit float format, NaNs and infinities included."""
    return torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)


def ulps(a, b):
    """|a - b| in units of the format's last place, counted across zero (-0 and +0 are 0 apart)."""
    def ordered(t):
        i = t.view(torch.int16).to(torch.int32)
        return torch.where(i < 0, -(i & 0x7FFF), i)
    return (ordered(a) - ordered(b)).abs()


def exact(v, dtype):
    return (v.double() * 0.5 * torch.erfc(-v.double() / math.sqrt(2))).to(dtype)


# dtype -> at most this many inputs at or above the cut round one unit away from the correctly rounded GELU
OFF_BY_ONE = {torch.bfloat16: 80, torch.float16: 16}  # 64 and 7 on the host (exp2f)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_16_bit_input_rounds_to_the_correctly_rounded_gelu(gelu_poly, dtype):
    v = every(dtype)
    ours = torch.from_numpy(gelu_poly(v.float().numpy())).to(dtype)
    finite = v.float().isfinite()
    d = ulps(ours, exact(v, dtype))[finite]
    vf = v.float()[finite]
    in_range = vf >= -5.5
    assert d[in_range].max() <= 1, vf[in_range][d[in_range] > 1]
    off_by_one = int((d[in_range] == 1).sum())
    assert off_by_one <= OFF_BY_ONE[dtype], off_by_one
    # below the cut ours is -0: the exact GELU there is below 1.1e-7 in magnitude
    below = vf < -5.5
    assert (ours.float()[finite][below] == 0).all()
    assert exact(v, torch.float64).abs()[finite][below].max() < 1.1e-7


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ours_differs_from_torch_only_where_torch_s_float32_erf_cancels(gelu_poly, dtype):
    v = every(dtype)
    ours = torch.from_numpy(gelu_poly(v.float().numpy())).to(dtype)
    torch_gelu = torch.nn.functional.gelu(v.float()).to(dtype)  # float32 GELU of the rounded input, rounded once
    finite = v.float().isfinite() & (v.float().abs() < 1e38)  # torch's 0.5 * v * (1 + erf) overflows above
    d = ulps(ours, torch_gelu)[finite]
    vf = v.float()[finite]
    assert d[vf >= -3.5].max() <= 1, vf[(vf >= -3.5) & (d > 1)]
    share = float((d[vf >= -3.5] > 0).float().mean())
    assert share < 0.005, share  # equal on more than 99.5% of the inputs above -3.5
    # below -3.5 the differences are torch's: there ours is the closer of the two to the exact GELU
    worse = (ulps(ours, exact(v, dtype))[finite] > ulps(torch_gelu, exact(v, dtype))[finite]) & (vf < -3.5) & (vf >= -5.5)
    assert not worse.any(), vf[worse]


def test_non_finite_inputs_and_zeros(gelu_poly):
    """+inf stays +inf; -inf and NaN give NaN (as torch's 0.5 * v * (1 + erf) does); the zeros keep their
    sign; far below the cut -0, far above v itself."""
    v = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, -1e30, 1e30, 3e38], dtype=np.float32)
    out = gelu_poly(v)
    assert out[0] == np.inf and np.isnan(out[1]) and np.isnan(out[2])
    assert out[3] == 0 and not np.signbit(out[3]) and out[4] == 0 and np.signbit(out[4])
    assert out[5] == 0 and out[6] == np.float32(1e30) and out[7] == np.float32(3e38)


def test_float32_inputs_of_the_fp8_path(gelu_poly):
    """fp8_linear's GELU takes the unrounded float32 value: 2^-18 relative to the exact GELU on a dense
    sample of [-5.5, 8] (every 97th float32; above 2^-100, where the product is no float32 subnormal), and
    within 1.1e-7 of it below."""
    x = torch.arange(0, 2**31 - 2**23, 97, dtype=torch.int64).to(torch.int32).view(torch.float32)
    x = torch.cat([x, -x])
    x = x[x.abs() <= 8]
    ours = torch.from_numpy(gelu_poly(x.numpy())).double()
    want = exact(x, torch.float64)
    inside = x >= -5.5
    rel = ((ours - want).abs() / want.abs())[inside & (x.abs() >= 2**-100)]
    assert rel.max() < 2**-18, float(rel.max())  # the float32 Horner sum's rounding, near the cut
    assert (ours - want).abs()[~inside].max() < 1.1e-7


def test_the_header_holds_the_tool_s_coefficients():
    import gelu_coefficients

    line = gelu_coefficients.table(gelu_coefficients.coefficients())
    text = (ROOT / "csrc" / "gemm" / "gelu_poly.h").read_text()
    assert " ".join(line.split()) in " ".join(text.split()), line
