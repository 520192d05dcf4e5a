"""fixed_point_quantize against an exact rational reference (fractions.Fraction, ties to even), its
float64 twin, stochastic statistics, opcheck, torch.compile, CUDA == CPU."""
from fractions import Fraction

import pytest
import torch

from vitfast.ops import fixed_point_quantize, fixed_point_quantize_ref
from tests.values import adversarial_fp32, assert_same_bits, needs_cuda


def rational_fixed(x, wl, fl, clamp=True, symmetric=False, away=False):
    """The exact answer, one value at a time, with Python's exact rationals."""
    out = []
    hi = 2 ** (wl - 1) - 1
    lo = -hi if symmetric else -(2 ** (wl - 1))
    for v in x.double().tolist():
        if v != v:
            out.append(v)
            continue
        if v in (float("inf"), float("-inf")):
            out.append(((hi if v > 0 else lo) * 2.0**-fl) if clamp else v)
            continue
        t = Fraction(v) * Fraction(2) ** fl
        k = (int(t + Fraction(1, 2)) if t >= 0 else -int(-t + Fraction(1, 2))) if away else round(t)
        if clamp:
            k = min(max(k, lo), hi)
        out.append(float(Fraction(k) * Fraction(2) ** -fl))
    return torch.tensor(out, dtype=torch.float64).to(x.dtype)


def sample(dtype=torch.float32, n=3000):
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(n, generator=g) * 2.0 ** torch.randint(-12, 12, (n,), generator=g),
                   torch.arange(-64, 64) / 8 + 1 / 16,  # ties at fl=3
                   torch.arange(-64, 64) / 4 + 1 / 8,  # ties at fl=2
                   torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e30, -1e30, 1e-30])])
    return x.to(dtype)


@pytest.mark.parametrize("wl,fl", [(8, 4), (8, 0), (4, 2), (16, 8), (24, 12), (2, 1), (1, 0), (8, -2), (6, 9), (32, 16)])
@pytest.mark.parametrize("clamp,symmetric", [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("rounding", ["nearest", "nearest_away"])
def test_matches_exact_rationals(wl, fl, clamp, symmetric, rounding):
    if symmetric and wl < 2:
        pytest.skip("symmetric needs wl >= 2")
    x = sample()
    y = fixed_point_quantize(x, wl, fl, clamp, symmetric, rounding)
    assert_same_bits(y, rational_fixed(x, wl, fl, clamp, symmetric, away=rounding == "nearest_away"), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_inputs(dtype):
    x = sample(dtype)
    assert_same_bits(fixed_point_quantize(x, 8, 4), rational_fixed(x, 8, 4))


@pytest.mark.parametrize("wl,fl,clamp", [(8, 4, True), (12, 3, False), (5, 7, True)])
def test_matches_float64_twin_including_stochastic(wl, fl, clamp):
    x = adversarial_fp32(4000)
    for rounding in ("nearest", "nearest_away", "stochastic"):
        seed = torch.tensor(99)
        y = torch.ops.vitfast.fixed_point_quantize(x, wl, fl, clamp, False, rounding,
                                                   seed if rounding == "stochastic" else None)
        assert_same_bits(y, fixed_point_quantize_ref(x, wl, fl, clamp, False, rounding, seed), x)


def test_stochastic_is_unbiased_and_reproducible():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, generator=g) * 8 - 4
    draws = fixed_point_quantize(x.expand(20000, -1), 8, 3, rounding="stochastic", generator=g).double()
    step = 2.0**-3
    assert bool(((draws - torch.floor(x.double() / step) * step).abs() <= step).all())
    se = draws.std(0) / 20000**0.5
    assert bool(((draws.mean(0) - x.double()).abs() <= 5 * se + 1e-12).all())
    torch.manual_seed(5)
    a = fixed_point_quantize(x, 8, 3, rounding="stochastic")
    torch.manual_seed(5)
    assert_same_bits(a, fixed_point_quantize(x, 8, 3, rounding="stochastic"))


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_opcheck(rounding):
    seed = torch.tensor(7) if rounding == "stochastic" else None
    for x in (torch.randn(5, 7), torch.randn(6, 4, dtype=torch.bfloat16, requires_grad=True).t()):
        torch.library.opcheck(torch.ops.vitfast.fixed_point_quantize.default, (x, 8, 4, True, False, rounding, seed))


def test_torch_compile_matches_eager():
    x = torch.randn(300) * 10
    fn = torch.compile(lambda t: fixed_point_quantize(t, 8, 3, symmetric=True), fullgraph=True)
    assert_same_bits(fn(x), fixed_point_quantize(x, 8, 3, symmetric=True))


@pytest.mark.parametrize("call,error,match", [
    (lambda x: fixed_point_quantize(x, 0, 0), ValueError, "wl must be in 1..53, got 0"),
    (lambda x: fixed_point_quantize(x, 54, 0), ValueError, "wl must be in 1..53"),
    (lambda x: fixed_point_quantize(x, 8, 300), ValueError, "fl must be in -256..256, got 300"),
    (lambda x: fixed_point_quantize(x, 1, 0, symmetric=True), ValueError, "symmetric fixed point needs wl >= 2"),
    (lambda x: fixed_point_quantize(x, 8, 2, rounding="floor"), ValueError, "rounding must be one of"),
    (lambda x: fixed_point_quantize(x.half().double(), 8, 2), TypeError, "x must be a float32, float16 or bfloat16"),
    (lambda x: torch.ops.vitfast.fixed_point_quantize(x, 99, 2, True, False, "nearest", None), RuntimeError,
     "wl must be in 1..53, got 99"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(4))


@needs_cuda
@pytest.mark.parametrize("rounding", ["nearest", "nearest_away", "stochastic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_matches_cpu(rounding, dtype):
    x = adversarial_fp32().to(dtype)
    seed = torch.tensor(3) if rounding == "stochastic" else None
    for args in ((8, 4, True, False), (16, 10, False, False), (6, 2, True, True)):
        a = torch.ops.vitfast.fixed_point_quantize(x[1:], *args, rounding, seed)
        b = torch.ops.vitfast.fixed_point_quantize(x.cuda()[1:], *args, rounding, seed)
        assert_same_bits(b.cpu(), a)
