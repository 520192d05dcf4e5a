"""float_quantize against torch's own casts (every fp32 input), its float64 twin, IEEE rules built
from first principles, and stochastic rounding's statistics; opcheck, torch.compile, CUDA == CPU."""
import pytest
import torch

from vitfast.ops import float_quantize, float_quantize_ref
from vitfast.ops.float_quantize import float_format_limits
from tests.values import adversarial_fp32, assert_same_bits, needs_cuda

# torch's fp32 -> float8_e4m3fn cast sends overflow to NaN in torch 2.11 (seen on the GPU machine) and
# saturates to +-448 in 2.14: each of our two modes is held to the torch it runs under.
E4M3_CAST_SATURATES = bool(torch.tensor([1e4]).to(torch.float8_e4m3fn).float().isfinite())

# (exp, man, saturate, finite) of each torch dtype's cast.
CASTS = {
    torch.float16: (5, 10, False, False),
    torch.bfloat16: (8, 7, False, False),
    torch.float8_e5m2: (5, 2, False, False),
    torch.float8_e4m3fn: (4, 3, E4M3_CAST_SATURATES, True),
}


def by_cast(x, dtype):
    return x.to(dtype).to(x.dtype)


def rounding_sample(man):
    """fp32 bit patterns that meet every rounding case of a format with `man` mantissa bits: every sign,
    exponent and top min(man, 10) mantissa bits, under each low-bit pattern that sits at, just below or
    just above a tie at any lower bit (and 0, all ones), so ties of subnormal targets, whose rounding bit
    moves up, are met too."""
    top = min(man, 10)
    low_bits = 23 - top
    lows = {0, (1 << low_bits) - 1}
    for k in range(low_bits):
        lows |= {1 << k, (1 << k) - 1, (1 << k) + 1}
    lows = torch.tensor(sorted(v for v in lows if v < 1 << low_bits), dtype=torch.int64)
    heads = torch.arange(1 << (9 + top), dtype=torch.int64) << low_bits  # sign, exponent, top mantissa bits
    patterns = (heads[:, None] | lows[None, :]).flatten()
    return (patterns - (1 << 32) * (patterns >= 1 << 31)).to(torch.int32).view(torch.float32)


@pytest.mark.parametrize("dtype", list(CASTS), ids=str)
def test_every_rounding_case_of_fp32_inputs_matches_torch_cast(dtype):
    """The short variant of the sweep below: tens of millions of inputs instead of 2^32."""
    exp, man, saturate, finite = CASTS[dtype]
    for x in rounding_sample(man).split(1 << 22):
        assert_same_bits(float_quantize(x, exp, man, saturate=saturate, finite=finite), by_cast(x, dtype), x)


@pytest.mark.long
@pytest.mark.parametrize("dtype", list(CASTS), ids=str)
def test_every_fp32_input_matches_torch_cast(dtype):
    """All 2^32 fp32 bit patterns: ties, subnormals, +-0, overflow, inf, NaN. 2^22 at a time: buffers
    small enough for the allocator to reuse (fresh 64 MB ones cost more in page faults than the work)."""
    exp, man, saturate, finite = CASTS[dtype]
    chunk = 1 << 22
    base = torch.arange(chunk, dtype=torch.int32)
    patterns = torch.empty(chunk, dtype=torch.int32)
    x = patterns.view(torch.float32)
    for start in range(-(1 << 31), 1 << 31, chunk):  # signed starts: base + start never overflows int32
        torch.add(base, start, out=patterns)
        y = float_quantize(x, exp, man, saturate=saturate, finite=finite)
        assert_same_bits(y, by_cast(x, dtype), x)


@pytest.mark.parametrize("in_dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("dtype", list(CASTS), ids=str)
def test_every_16bit_input_matches_torch_cast(in_dtype, dtype):
    """fp16 and bf16 inputs: exact rounding, then stored in the input's dtype."""
    exp, man, saturate, finite = CASTS[dtype]
    x = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(in_dtype)
    y = float_quantize(x, exp, man, saturate=saturate, finite=finite)
    assert_same_bits(y, x.float().to(dtype).float().to(in_dtype), x)


FORMATS = [(5, 10), (8, 7), (5, 2), (4, 3), (8, 10), (8, 23), (8, 0), (7, 23), (6, 9), (3, 1), (2, 5), (1, 3), (4, 0)]


FLAGS = [(False, True, False), (True, True, False), (False, False, False), (False, True, True), (True, False, True)]


@pytest.mark.parametrize("rounding", ["nearest", "nearest_away", "stochastic"])
@pytest.mark.parametrize("exp,man,saturate,subnormals,finite",
                         [(e, m, *flags) for e, m in FORMATS for flags in FLAGS if not (flags[2] and e == 8)])
def test_matches_float64_twin(exp, man, rounding, saturate, subnormals, finite):
    x = adversarial_fp32()
    torch.manual_seed(exp * 100 + man)
    seed = torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)
    y = torch.ops.vitfast.float_quantize(x, exp, man, rounding, saturate, subnormals, finite,
                                         seed if rounding == "stochastic" else None)
    assert_same_bits(y, float_quantize_ref(x, exp, man, rounding, saturate, subnormals, seed, finite=finite), x)


def representable(exp, man, finite=False):
    """Every non-negative finite value of FloatingPoint(exp, man), enumerated from its encoding."""
    bias = 2 ** (exp - 1) - 1
    values = []
    for field in range(2**exp):
        for mant in range(2**man):
            if field == 2**exp - 1 and (not finite or mant == 2**man - 1):
                continue  # inf / NaN encodings
            if field == 0:
                values.append(mant / 2**man * 2.0 ** (1 - bias))
            else:
                values.append((1 + mant / 2**man) * 2.0 ** (field - bias))
    return torch.tensor(sorted(values), dtype=torch.float64)


@pytest.mark.parametrize("exp,man,finite", [(3, 2, False), (4, 3, False), (4, 3, True), (2, 1, False), (5, 4, False),
                                            (3, 0, False), (1, 2, False), (6, 1, True)])
def test_ieee_rules_from_the_encoding(exp, man, finite):
    """Representable values stay; midpoints go to the even neighbour; just off a midpoint goes to the
    nearer one; past max + half a step overflows to inf (NaN if finite), or max when saturating."""
    v = representable(exp, man, finite)
    assert v.max().item() == float_format_limits(exp, man, finite)[1]
    q = lambda t, **kw: float_quantize(t.float(), exp, man, finite=finite, **kw).double()  # noqa: E731
    assert torch.equal(q(v), v) and torch.equal(q(-v), -v)
    lo, hi = v[:-1], v[1:]
    mid = (lo + hi) / 2
    even = torch.where(torch.arange(len(lo)) % 2 == 0, lo, hi)  # encodings alternate even/odd
    assert torch.equal(q(mid), even)
    assert torch.equal(q(torch.nextafter(mid.float(), lo.float()).double()), lo)
    assert torch.equal(q(torch.nextafter(mid.float(), hi.float()).double()), hi)
    top = v[-1]
    emin = float_format_limits(exp, man, finite)[0]
    step = 2.0 ** (max(int(torch.floor(torch.log2(top))), emin) - man)  # spacing at max, unbounded exponent
    over = torch.tensor([top + step / 2 * 1.0001, top * 4, float("inf")], dtype=torch.float64)
    expect = float("nan") if finite else float("inf")
    assert torch.equal(q(over).isnan(), torch.full((3,), finite)) and (finite or bool((q(over) == expect).all()))
    assert bool((q(over, saturate=True) == top).all())
    tiny = v[v > 0][0]
    assert q(torch.tensor([tiny / 2], dtype=torch.float64)).item() == 0.0  # a tie with 0 goes to 0 (even)
    assert q(torch.tensor([-tiny / 4], dtype=torch.float64)).item() == 0.0
    assert torch.signbit(q(torch.tensor([-tiny / 4], dtype=torch.float64))).item()


def test_subnormals_off_flushes_after_rounding():
    min_normal = 2.0**-14
    x = torch.tensor([min_normal, min_normal * 0.75, min_normal * (1 - 2**-12), -min_normal / 3])
    y = float_quantize(x, 5, 10, subnormals=False)
    assert y.tolist() == [min_normal, 0.0, min_normal, -0.0] and torch.signbit(y[3])


@pytest.mark.parametrize("exp,man", [(5, 10), (8, 7), (4, 3), (5, 2)])
def test_stochastic_is_unbiased(exp, man):
    """E[q(x)] = x: the mean of 20000 draws per value is within 5 standard errors of x."""
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(64, generator=g) * 2.0 ** torch.randint(-8, 4, (64,), generator=g)).float()
    if exp < 8:
        x = torch.cat([x, torch.tensor([1.3 * 2.0**-15, 3.3 * 2.0**-17, -1.7 * 2.0**-20])])  # subnormal results
    draws = float_quantize(x.expand(20000, -1), exp, man, "stochastic", generator=g).double()
    lo, hi = draws.min(0).values, draws.max(0).values
    assert bool(((draws == lo) | (draws == hi)).all()), "more than two outcomes for one input"
    assert bool(((lo <= x.double()) & (x.double() <= hi)).all()), "outcomes do not bracket the input"
    mean, se = draws.mean(0), draws.std(0) / 20000**0.5
    assert bool(((mean - x.double()).abs() <= 5 * se).all()), ((mean - x.double()).abs() / se).max()
    assert bool((lo < hi).sum() >= len(x) - 2), "expected nearly every input to sit between two values"


def test_stochastic_reproducible_and_layout_independent():
    x = torch.randn(33, 65)
    torch.manual_seed(3)
    a = float_quantize(x, 5, 2, "stochastic")
    torch.manual_seed(3)
    b = float_quantize(x, 5, 2, "stochastic")
    c = float_quantize(x, 5, 2, "stochastic")
    assert_same_bits(a, b)
    assert not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    assert_same_bits(float_quantize(x, 5, 2, "stochastic", generator=g1),
                     float_quantize(x, 5, 2, "stochastic", generator=g2))
    # A strided view draws the same random word per element as its contiguous copy.
    xt = torch.randn(65, 33).t()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert_same_bits(float_quantize(xt, 5, 2, "stochastic", generator=g1),
                     float_quantize(xt.contiguous(), 5, 2, "stochastic", generator=g2))


@pytest.mark.parametrize("make", [lambda: torch.randn(7, 9).t(), lambda: torch.randn(4, 6, 5)[:, ::2, 1:],
                                  lambda: torch.tensor(1.2345), lambda: torch.randn(0, 3),
                                  lambda: torch.randn(5, 8, dtype=torch.float16)[:, ::3]])
def test_any_shape_and_stride(make):
    x = make()
    y = float_quantize(x, 4, 3)
    assert y.shape == x.shape and y.dtype == x.dtype and y.is_contiguous()
    assert_same_bits(y, float_quantize_ref(x, 4, 3))


@pytest.mark.parametrize("args", [(5, 10, "nearest"), (4, 3, "stochastic"), (8, 7, "nearest_away")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_opcheck(args, dtype):
    exp, man, rounding = args
    seed = torch.tensor(42) if rounding == "stochastic" else None
    for x in (torch.randn(3, 17, dtype=dtype), torch.randn(4, 6, dtype=dtype, requires_grad=True).t()):
        torch.library.opcheck(torch.ops.vitfast.float_quantize.default,
                              (x, exp, man, rounding, False, True, False, seed))


def test_torch_compile_matches_eager():
    x = torch.randn(1000) * 1000
    fn = torch.compile(lambda t: float_quantize(t * 2, 4, 3) + float_quantize(t, 5, 2, "nearest_away"), fullgraph=True)
    assert_same_bits(fn(x), float_quantize(x * 2, 4, 3) + float_quantize(x, 5, 2, "nearest_away"))
    st = torch.compile(lambda t: float_quantize(t, 5, 2, "stochastic"), fullgraph=True)
    torch.manual_seed(0)
    a = st(x)
    torch.manual_seed(0)
    assert_same_bits(a, st(x))


@pytest.mark.parametrize("call,error,match", [
    (lambda x: float_quantize(x, 0, 3), ValueError, "exp must be in 1..8, got 0"),
    (lambda x: float_quantize(x, 9, 3), ValueError, "exp must be in 1..8"),
    (lambda x: float_quantize(x, 5, 24), ValueError, "man must be in 0..23, got 24"),
    (lambda x: float_quantize(x, 5, -1), ValueError, "man must be in 0..23"),
    (lambda x: float_quantize(x, 5.0, 2), TypeError, "exp must be an int"),
    (lambda x: float_quantize(x, 5, 2, rounding="up"), ValueError, "rounding must be one of"),
    (lambda x: float_quantize(x, 8, 2, finite=True), ValueError, "finite=True needs exp < 8"),
    (lambda x: float_quantize(x.double(), 5, 2), TypeError, "x must be a float32, float16 or bfloat16 tensor"),
    (lambda x: float_quantize(x.int(), 5, 2), TypeError, "x must be a float32, float16 or bfloat16"),
    (lambda x: float_quantize(x.tolist(), 5, 2), TypeError, "x must be a torch.Tensor"),
    (lambda x: float_quantize(x, 5, 2, "stochastic", generator=3), TypeError, "generator must be"),
    # The kernels' own checks, for calls that bypass the wrapper.
    (lambda x: torch.ops.vitfast.float_quantize(x, 5, 30, "nearest", False, True, False, None), RuntimeError,
     "man must be in 0..23, got 30"),
    (lambda x: torch.ops.vitfast.float_quantize(x, 5, 2, "stochastic", False, True, False, None), RuntimeError,
     "seed is required"),
    (lambda x: torch.ops.vitfast.float_quantize(x.long(), 5, 2, "nearest", False, True, False, None), RuntimeError,
     "x must be a float32"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(4))


@needs_cuda
@pytest.mark.parametrize("rounding", ["nearest", "nearest_away", "stochastic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("exp,man,saturate,finite", [(5, 10, False, False), (8, 7, False, False), (4, 3, True, True),
                                                     (5, 2, False, False), (3, 1, False, False), (7, 20, True, False)])
def test_cuda_matches_cpu(rounding, dtype, exp, man, saturate, finite):
    x = adversarial_fp32().to(dtype)
    for view in (x, x[1:], x[: len(x) // 2 * 2].view(2, -1).t()):  # aligned, misaligned, strided
        seed = torch.tensor(1234)
        s = seed if rounding == "stochastic" else None
        a = torch.ops.vitfast.float_quantize(view, exp, man, rounding, saturate, True, finite, s)
        b = torch.ops.vitfast.float_quantize(view.cuda(), exp, man, rounding, saturate, True, finite, s)
        assert_same_bits(b.cpu(), a)


@needs_cuda
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_every_length_and_offset_of_the_vector_loop(rounding, dtype):
    """The kernels' loop (csrc/quant/group_map.cuh) reads 16 bytes at a time (4 fp32 or 8 fp16/bf16
    elements), two vectors per thread per step, and goes element by element through a misaligned
    view and the tail. Lengths on either side of each boundary, every start offset within a vector
    (an 8-byte-aligned bf16 view included), and a length past one whole grid stride, CUDA == CPU."""
    g = torch.Generator().manual_seed(6)
    x = torch.cat([adversarial_fp32(2000, generator=g), torch.randn(6000, generator=g)]).to(dtype)
    seed = torch.tensor(99) if rounding == "stochastic" else None
    xc = x.cuda()
    for offset in range(8):
        for n in (1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65, 4095, 4097, 7777):
            a = torch.ops.vitfast.float_quantize(x[offset:offset + n], 8, 3, rounding, False, True, False, seed)
            b = torch.ops.vitfast.float_quantize(xc[offset:offset + n], 8, 3, rounding, False, True, False, seed)
            assert_same_bits(b.cpu(), a)
    big = torch.randn(5_000_003, generator=g).to(dtype)  # > 132 SMs x 8 blocks x 256 threads x 2 x 8 elements
    a = torch.ops.vitfast.float_quantize(big, 5, 2, rounding, False, True, False, seed)
    assert_same_bits(torch.ops.vitfast.float_quantize(big.cuda(), 5, 2, rounding, False, True, False, seed).cpu(), a)


@needs_cuda
def test_cuda_every_fp32_input_matches_torch_cast():
    chunk = 1 << 22
    base = torch.arange(chunk, dtype=torch.int64, device="cuda")
    for dtype, (exp, man, saturate, finite) in CASTS.items():
        for start in range(0, 1 << 32, chunk):
            x = (base + start).to(torch.int32).view(torch.float32)
            assert_same_bits(float_quantize(x, exp, man, saturate=saturate, finite=finite), by_cast(x, dtype))
