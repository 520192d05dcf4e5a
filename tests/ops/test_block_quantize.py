"""block_quantize against an exact rational reference, its float64 twin, per-tensor / per-slice /
per-block grouping, all-zero and non-finite blocks, opcheck, torch.compile, CUDA == CPU."""
import math
from fractions import Fraction

import pytest
import torch

from vitfast.ops import block_quantize, block_quantize_ref
from tests.values import assert_same_bits, needs_cuda


def rational_block(values, wl):
    """One group, exactly: shared exponent of the largest finite magnitude, ties to even."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    m = max(finite, default=0.0)
    if m == 0:
        return list(values)
    e = math.frexp(m)[1] - 1
    step = Fraction(2) ** (e + 2 - wl)
    kmax = 2 ** (wl - 1) - 1
    return [float(min(max(round(Fraction(v) / step), -kmax), kmax) * step) if math.isfinite(v) else v for v in values]


def data(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 2.0 ** torch.randint(-6, 6, shape, generator=g)
    return x


@pytest.mark.parametrize("wl", [2, 4, 8, 12, 24])
def test_whole_tensor_matches_rationals(wl):
    x = torch.cat([data((500,)), torch.tensor([0.375, -0.625, 1.5, 0.0, -0.0])])
    y = block_quantize(x, wl)
    assert_same_bits(y, torch.tensor(rational_block(x.tolist(), wl)), x)


@pytest.mark.parametrize("dim", [0, 1, -1, 2])
def test_slices_share_an_exponent_along_dim(dim):
    x = data((5, 6, 7), seed=dim + 10)
    y = block_quantize(x, 6, dim=dim)
    for i in range(x.shape[dim]):
        sl = x.select(dim, i)
        got = y.select(dim, i).flatten().tolist()
        assert got == rational_block(sl.flatten().tolist(), 6)


@pytest.mark.parametrize("block_size", [1, 4, 5, 7, 32])
def test_blocks_of_consecutive_elements(block_size):
    x = data((3, 7, 4), seed=block_size)
    y = block_quantize(x, 8, dim=1, block_size=block_size)
    for a in range(3):
        for c in range(4):
            col = x[a, :, c].tolist()
            want = sum((rational_block(col[i:i + block_size], 8) for i in range(0, 7, block_size)), [])
            assert y[a, :, c].tolist() == want


def test_zero_and_non_finite_groups():
    x = torch.tensor([[0.0, 0.0, -0.0], [1.0, float("inf"), 0.3], [float("nan"), 2.0, -5.0]])
    y = block_quantize(x, 4, dim=0)
    assert_same_bits(y[0], x[0])  # an all-zero block stays zero: no 0/0 scale, no NaN
    assert y[1, 1].item() == float("inf") and math.isnan(y[2, 0].item())
    assert y[1].tolist()[0::2] == rational_block([1.0, 0.3], 4)
    assert y[2].tolist()[1:] == rational_block([2.0, -5.0], 4)


@pytest.mark.parametrize("dim,block_size", [(None, None), (0, None), (1, 3), (-1, 16)])
@pytest.mark.parametrize("rounding", ["nearest", "nearest_away", "stochastic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_matches_float64_twin(dim, block_size, rounding, dtype):
    x = data((9, 20)).to(dtype)
    x[2] = 0
    x[3, 4] = float("inf")
    seed = torch.tensor(2024)
    y = torch.ops.vitfast.block_quantize(x, 5, dim, block_size, rounding, seed if rounding == "stochastic" else None)
    assert_same_bits(y, block_quantize_ref(x, 5, dim, block_size, rounding, seed), x)


def test_stochastic_is_unbiased():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(40, generator=g) * 3 + 0.5
    x[0] = 3.8  # fixes the shared exponent at 1; 3.8 / 2^-3 = 30.4 stays below the clamp at 31
    draws = block_quantize(x.expand(20000, -1).contiguous(), 6, dim=1, rounding="stochastic", generator=g).double()
    se = draws.std(0) / 20000**0.5
    assert bool(((draws.mean(0) - x.double()).abs() <= 5 * se + 1e-12).all())


@pytest.mark.parametrize("args", [(8, None, None, "nearest"), (6, 0, None, "stochastic"), (8, 1, 4, "nearest_away")])
def test_opcheck(args):
    wl, dim, block_size, rounding = args
    seed = torch.tensor(1) if rounding == "stochastic" else None
    for x in (torch.randn(6, 10), torch.randn(10, 6, dtype=torch.float16, requires_grad=True).t()):
        torch.library.opcheck(torch.ops.vitfast.block_quantize.default, (x, wl, dim, block_size, rounding, seed))


def test_torch_compile_matches_eager():
    x = torch.randn(8, 64)
    fn = torch.compile(lambda t: block_quantize(t, 8, dim=-1, block_size=32), fullgraph=True)
    assert_same_bits(fn(x), block_quantize(x, 8, dim=-1, block_size=32))


@pytest.mark.parametrize("call,error,match", [
    (lambda x: block_quantize(x, 1), ValueError, "wl must be in 2..32, got 1"),
    (lambda x: block_quantize(x, 8, dim=2), ValueError, "dim must be in -1..0, got 2"),
    (lambda x: block_quantize(x, 8, block_size=4), ValueError, "block_size needs dim"),
    (lambda x: block_quantize(x, 8, dim=0, block_size=0), ValueError, "block_size must be in 1.."),
    (lambda x: block_quantize(x, 8, rounding="Nearest"), ValueError, "rounding must be one of"),
    (lambda x: block_quantize(x.to(torch.int8), 8), TypeError, "x must be a float32, float16 or bfloat16"),
    (lambda x: torch.ops.vitfast.block_quantize(x, 40, None, None, "nearest", None), RuntimeError,
     "wl must be in 2..32, got 40"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(4))


@needs_cuda
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("dim,block_size", [(None, None), (0, None), (1, 32), (2, 5)])
def test_cuda_matches_cpu(rounding, dim, block_size):
    x = data((7, 70, 9))
    seed = torch.tensor(77) if rounding == "stochastic" else None
    a = torch.ops.vitfast.block_quantize(x, 8, dim, block_size, rounding, seed)
    b = torch.ops.vitfast.block_quantize(x.cuda(), 8, dim, block_size, rounding, seed)
    assert_same_bits(b.cpu(), a)
