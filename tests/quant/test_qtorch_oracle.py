"""vitfast's quantizers against qtorch 0.3.0, used as a second oracle where qtorch is well defined.

qtorch's quirks (read from its quant_cpu sources and confirmed by running it), and so what is left out:
- float_quantize "nearest" rounds ties half AWAY from zero (it adds half an ulp to the magnitude bits
  and truncates): that is vitfast's "nearest_away". It saturates at the all-ones exponent (not IEEE's
  max), double-rounds subnormals and mangles man=23, so only binades well inside the normal range
  are compared.
- fixed_point_quantize (CPU) computes nearbyint((a + 0.5f) - 0.5) on the float a = x * 2^fl. The float
  add a + 0.5f rounds, which (a) sends odd integers a in [2^23, 2^24) to the next even one
  (clamp=False: 8388609 -> 8388610), (b) sends a = 0.5 + 2^-24 to 0 instead of 1. Those scaled
  magnitudes are left out. Its sign of a zero result depends on the same add (-0.3 -> -0 but
  -2^-30 -> +0), so zeros are compared as +0 (a fixed-point word has no -0 anyway).
- block_quantize adds 6 * 2^E (E: the block max's exponent) in float32, rounds the sum half UP (toward
  +inf) by bit arithmetic and subtracts again. The float add rounds x to 2^(E-21) first, so values
  within 2^(wl-24) steps of a tie can round the other way, and ties go to +inf (vitfast: to even).
  wl >= 23 is undefined behaviour in qtorch (1 << -1) and returns garbage. Its dim=-1 means "the
  whole tensor" (vitfast: dim=None).
  So only values at least 2^(wl-23) steps away from a tie are compared, and by value (sign of zero aside).
"""
from unittest import mock

import pytest
import torch

# qtorch compiles its C++ extension on first import (~15 s) and, when CUDA is available, its CUDA
# kernels too (minutes). These tests use it on CPU only, so CUDA is hidden during the import (qtorch
# then aliases quant_cuda to quant_cpu). A failed build skips the module rather than erroring.
with mock.patch("torch.cuda.is_available", return_value=False):
    try:
        Q = pytest.importorskip("qtorch.quant")
    except Exception as e:  # e.g. a compiler error from torch.utils.cpp_extension.load
        pytest.skip(f"qtorch is installed but unusable (its C++ extension must build): {e}", allow_module_level=True)
import qtorch  # noqa: E402

from vitfast.ops import block_quantize, fixed_point_quantize, float_quantize  # noqa: E402
from vitfast.quant import BlockFloatingPoint, FixedPoint, FloatingPoint, Quantizer, quantize  # noqa: E402


def bits(t):
    return t.contiguous().view(torch.int32)


def assert_bits_equal(a, b, x):
    bad = bits(a) != bits(b)
    assert not bad.any(), (f"{int(bad.sum())} mismatches, e.g. x={x[bad][:4].tolist()} "
                           f"vitfast={a[bad][:4].tolist()} qtorch={b[bad][:4].tolist()}")


# ---------------------------------------------------------------------------------------------------
# Floating point
# ---------------------------------------------------------------------------------------------------
FLOAT_FORMATS = [(5, 10), (8, 7), (5, 2), (4, 3), (6, 9), (8, 10)]


def float_case(exp, man, n=20000, seed=0):
    """Random normals times powers of two, kept to binades emin+1 .. bias-1 (no subnormals; nothing rounds
    past 2^bias, which both libraries represent), plus exact ties (m + 1/2) ulp of both signs."""
    g = torch.Generator().manual_seed(seed + 100 * exp + man)
    bias = 2 ** (exp - 1) - 1
    lo, hi = 2.0 ** (2 - bias), 2.0**bias
    k = torch.randint(3 - bias, bias - 1, (n,), generator=g).double()
    x = torch.randn(n, generator=g, dtype=torch.float64) * torch.exp2(k)
    x = x[(x.abs() >= lo) & (x.abs() < hi)]
    e = torch.randint(2 - bias, bias, (n // 4,), generator=g).double()
    m = torch.randint(2**man, 2 ** (man + 1), (n // 4,), generator=g).double()
    sign = torch.randint(0, 2, (n // 4,), generator=g).double() * 2 - 1
    ties = sign * (m + 0.5) * torch.exp2(e - man)  # exact in fp32: man + 2 <= 24 bits
    return torch.cat([x, ties]).float()


def tie_mask(x, man):
    """x lies exactly halfway between two neighbours of a man-bit mantissa."""
    a = x.double().abs()
    _, e2 = torch.frexp(a)
    t = a / torch.exp2(e2.double() - 1 - man)
    return t - torch.floor(t) == 0.5


@pytest.mark.parametrize("exp,man", FLOAT_FORMATS)
def test_float_nearest_away_is_qtorch_nearest(exp, man):
    x = float_case(exp, man)
    assert tie_mask(x, man).sum() >= 1000  # the ties are really there
    assert_bits_equal(float_quantize(x, exp, man, "nearest_away"), Q.float_quantize(x, exp, man, "nearest"), x)


@pytest.mark.parametrize("exp,man", FLOAT_FORMATS)
def test_float_nearest_matches_qtorch_off_ties(exp, man):
    x = float_case(exp, man, seed=1)
    tie = tie_mask(x, man)
    ours, theirs = float_quantize(x, exp, man, "nearest"), Q.float_quantize(x, exp, man, "nearest")
    assert_bits_equal(ours[~tie], theirs[~tie], x[~tie])
    # At ties vitfast goes to the even neighbour: half an ulp away, even mantissa.
    q, xt = ours[tie].double(), x[tie].double()
    _, e2 = torch.frexp(xt)
    assert torch.equal((q - xt).abs(), torch.exp2(e2.double() - 2 - man))
    _, eq = torch.frexp(q)
    assert torch.all(torch.remainder(q.abs() / torch.exp2(eq.double() - 1 - man), 2) == 0)
    assert (ours[tie] != theirs[tie]).any()  # ...where qtorch, half away, differs half the time


# ---------------------------------------------------------------------------------------------------
# Fixed point
# ---------------------------------------------------------------------------------------------------
FIXED_FORMATS = [(8, 4), (8, 0), (4, 2), (16, 8), (12, 10), (24, 12), (6, -2)]


def fixed_case(wl, fl, n=8000, seed=0):
    """Normals spanning 2^-fl-3 .. 8x the range (so clamping matters), exact ties (j + 1/2) 2^-fl inside
    and outside the range, and the range ends; minus the scaled magnitudes where qtorch's float add
    a + 0.5f misrounds (see the module docstring)."""
    g = torch.Generator().manual_seed(seed + 1000 * wl + fl)
    k = torch.randint(-fl - 3, wl - fl + 3, (n,), generator=g).double()
    x = torch.randn(n, generator=g, dtype=torch.float64) * torch.exp2(k)
    j = torch.randint(-(2**wl), 2**wl, (n // 4,), generator=g).double()
    ends = torch.tensor([-(2.0 ** (wl - 1)), -(2.0 ** (wl - 1)) + 1, 2.0 ** (wl - 1) - 1, 2.0 ** (wl - 1)])
    x = torch.cat([x, (j + 0.5) * 2.0**-fl, ends * 2.0**-fl, (ends + 0.5) * 2.0**-fl, (ends - 0.5) * 2.0**-fl])
    s = (x * 2.0**fl).abs()
    ok = ~((s > 0.5) & (s < 0.5 + 2.0**-20)) & ~((s >= 2.0**23) & (s < 2.0**24))
    return x[ok].float()


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("clamp", [True, False])
@pytest.mark.parametrize("wl,fl", FIXED_FORMATS)
def test_fixed_point_nearest_matches_qtorch_cpu(wl, fl, clamp, symmetric):
    x = fixed_case(wl, fl)
    ours = fixed_point_quantize(x, wl, fl, clamp=clamp, symmetric=symmetric, rounding="nearest")
    theirs = Q.fixed_point_quantize(x, wl, fl, clamp=clamp, symmetric=symmetric, rounding="nearest")
    assert_bits_equal(ours + 0.0, theirs + 0.0, x)  # + 0.0: -0 -> +0, nothing else changes


def test_fixed_point_exact_where_qtorch_misrounds():
    # qtorch gives 0, 8388610 and -8388608 here (its a + 0.5f rounding); the exact answers:
    x = torch.tensor([0.5 + 2.0**-24, 2.0**23 + 1, -(2.0**23 + 1)])
    out = fixed_point_quantize(x, 32, 0, clamp=False)
    assert_bits_equal(out, torch.tensor([1.0, 2.0**23 + 1, -(2.0**23 + 1)]), x)


# ---------------------------------------------------------------------------------------------------
# Block floating point
# ---------------------------------------------------------------------------------------------------
def block_case(seed=0):
    """Rows of normals at scales 2^-20 .. 2^20, so per-slice exponents differ."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp2(torch.randint(-20, 20, (32, 1, 1), generator=g).float())
    return torch.randn(32, 17, 5, generator=g) * scale


def block_step(x, wl, dim):
    """2^(E + 2 - wl), E = floor(log2 max |x|) over the group (whole tensor, or each slice along dim)."""
    a = x.double().abs()
    others = [d for d in range(x.dim()) if d != dim]  # (amax over an empty list would reduce everything)
    m = a.amax() if dim is None else a.amax(dim=others, keepdim=True) if others else a
    _, e2 = torch.frexp(m)
    return torch.exp2(e2.double() - 1 + 2 - wl).expand(x.shape)


@pytest.mark.parametrize("dim", [None, 0, 1])
@pytest.mark.parametrize("wl", [2, 3, 4, 6, 8, 12, 16, 20])
def test_block_nearest_matches_qtorch_off_ties(wl, dim):
    x = block_case(seed=wl)
    t = x.double() / block_step(x, wl, dim)
    clear = ((t - torch.floor(t)) - 0.5).abs() > 2.0 ** (wl - 23)  # far from any tie, even after qtorch's add
    assert clear.float().mean() > 0.7
    ours = block_quantize(x, wl, dim=dim)
    theirs = Q.block_quantize(x, wl, dim=-1 if dim is None else dim, rounding="nearest")
    bad = clear & (ours != theirs)  # by value: -0 == +0
    assert not bad.any(), f"x={x[bad][:4].tolist()} vitfast={ours[bad][:4].tolist()} qtorch={theirs[bad][:4].tolist()}"


# ---------------------------------------------------------------------------------------------------
# qtorch number objects in vitfast.quant
# ---------------------------------------------------------------------------------------------------
NUMBER_PAIRS = [
    (qtorch.FloatingPoint(5, 10), FloatingPoint(5, 10)),
    (qtorch.FloatingPoint(4, 3), FloatingPoint(4, 3)),
    (qtorch.FixedPoint(8, 4), FixedPoint(8, 4)),
    (qtorch.FixedPoint(6, 3, clamp=False, symmetric=True), FixedPoint(6, 3, clamp=False, symmetric=True)),
    (qtorch.FixedPoint(6, 3, clamp=True, symmetric=True), FixedPoint(6, 3, clamp=True, symmetric=True)),
    (qtorch.BlockFloatingPoint(8), BlockFloatingPoint(8)),  # qtorch dim=-1: one block, our dim=None
    (qtorch.BlockFloatingPoint(6, dim=0), BlockFloatingPoint(6, dim=0)),
    (qtorch.BlockFloatingPoint(6, dim=1), BlockFloatingPoint(6, dim=1)),
]
IDS = [repr(q) for q, _ in NUMBER_PAIRS]


def small_input(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 6, 5, generator=g) * 3


@pytest.mark.parametrize("qnum,ours", NUMBER_PAIRS, ids=IDS)
def test_qtorch_numbers_in_quantize(qnum, ours):
    x = small_input()
    for rounding in ("nearest", "nearest_away"):
        assert_bits_equal(quantize(x, qnum, rounding), quantize(x, ours, rounding), x)


@pytest.mark.parametrize("qnum,ours", NUMBER_PAIRS, ids=IDS)
def test_qtorch_numbers_in_quantizer(qnum, ours):
    x = small_input(1)
    grad = small_input(2)
    results = []
    for fwd, bwd in [(qnum, qnum), (ours, ours)]:
        xi = x.clone().requires_grad_()
        y = Quantizer(fwd, bwd)(xi)
        y.backward(grad)
        results.append((y.detach(), xi.grad))
    (y1, g1), (y2, g2) = results
    assert_bits_equal(y1, y2, x)
    assert_bits_equal(g1, g2, grad)
    assert not torch.equal(g1, grad)  # the gradient really was quantized


@pytest.mark.parametrize("qnum,ours", NUMBER_PAIRS, ids=IDS)
def test_quantizer_matches_qtorch_quantizer(qnum, ours):
    # qtorch's own straight-through Quantizer, nearest both ways; its float "nearest" is our
    # "nearest_away", and on these inputs (no ties) fixed and block rounding agree.
    x, grad = small_input(3), small_input(4)
    rounding = "nearest_away" if isinstance(ours, FloatingPoint) else "nearest"
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = Quantizer(qnum, qnum, rounding, rounding)(xa)
    yb = Q.Quantizer(qnum, qnum, "nearest", "nearest")(xb)
    ya.backward(grad)
    yb.backward(grad)
    assert torch.equal(ya.detach(), yb.detach())
    assert torch.equal(xa.grad, xb.grad)
