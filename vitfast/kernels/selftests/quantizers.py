"""Self-tests of the quantizers (float_quantize, fixed_point_quantize, block_quantize) and scaled_cast:
bit for bit against the CPU kernels on the GPU (stochastic rounding included: one Philox stream on every
device), against the pure-PyTorch twins on the CPU. Inputs are every fp16 and bf16 bit pattern and fp32
patterns drawn over every exponent (subnormals, +-0, inf, NaN, ties), at odd lengths and strided."""
import torch

from ... import ops
from .common import assert_same_bits
from . import SelfTest

SELFTESTS = {
    "quantizers": SelfTest(kernels=("elementwise_kernel", "block_"), budget_s=8.0,
                           replaces="test_float_quantize.py, test_fixed_point_quantize.py, test_block_quantize.py: "
                                    "441 tests, 167 s on the H200 (2026-11-27; every fp32 input: 128 s)"),
    "scaled_cast": SelfTest(kernels=("scaled_cast_kernel",), budget_s=4.0,
                            replaces="test_scaled_cast.py: 55 tests, 73 s on the H200 (2026-11-27)"),
}
ROUNDINGS = ("nearest", "nearest_away", "stochastic")
# (exp, man, saturate, subnormals, finite): fp16, bf16, e5m2, e4m3fn, and narrow and odd formats
FLOAT_FORMATS = [(5, 10, False, True, False), (8, 7, False, True, False), (5, 2, True, True, False),
                 (4, 3, True, True, True), (3, 1, False, False, False), (8, 0, False, True, False),
                 (2, 5, True, False, False), (6, 9, False, True, True)]
FIXED_FORMATS = [(8, 4, True, False), (8, 0, True, True), (16, 8, True, False), (4, 2, False, False),
                 (24, 20, True, True)]
BLOCKS = [((33, 70), None, None), ((33, 70), 0, None), ((33, 70), 1, None), ((64, 256), 1, 32),
          ((17, 100), 1, 7), ((5, 6, 40), 2, 16)]


def every_16bit(dtype):
    """Every bit pattern of fp16 or bf16."""
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


def fp32_sample(n, generator):
    """n fp32 values: uniform bit patterns (every exponent: subnormals, inf, NaN), normals scaled over
    2^-140..2^120, halfway points of narrow formats, and the specials."""
    patterns = torch.randint(-(2**31), 2**31, (n // 2,), dtype=torch.int64, generator=generator)
    uniform = patterns.to(torch.int32).view(torch.float32)
    scaled = torch.randn(n // 4, generator=generator) * torch.exp2(
        torch.randint(-140, 120, (n // 4,), generator=generator).float())
    ties = (torch.randint(-2**12, 2**12, (n // 4,), generator=generator).float() + 0.5) * torch.exp2(
        torch.randint(-24, 16, (n // 4,), generator=generator).float())
    specials = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 448.0, 464.0, 480.0,
                             57344.0, 61440.0, 65504.0, 65520.0, 2.0**-149, -(2.0**-126), 3.4028235e38])
    return torch.cat([uniform, scaled, ties, specials])


def inputs(quick, generator):
    """(name, tensor) pairs: every fp16 and bf16 pattern, fp32 samples at an odd length, and a strided
    fp32 view."""
    n = (1 << 14) if quick else (1 << 18)
    x32 = fp32_sample(n, generator)
    out = [("fp32", x32), ("fp32 strided", fp32_sample(2 * n + 2, generator)[::2])]
    if not quick:
        out += [("every fp16", every_16bit(torch.float16)), ("every bf16", every_16bit(torch.bfloat16))]
    return out


def seed_for(rounding, k):
    return torch.tensor(0x5EED0000 + k, dtype=torch.int64) if rounding == "stochastic" else None


def against(device, kernel, twin):
    """A case: our op on `device` against the CPU kernel (device cuda) or the twin (device cpu)."""
    def check(x, what):
        got = kernel(x.to(device))
        want = kernel(x) if device != "cpu" else twin(x)
        assert_same_bits(got, want, what)
    return check


def float_cases(device, quick, generator):
    xs = inputs(quick, generator)
    for k, (exp, man, sat, sub, fin) in enumerate(FLOAT_FORMATS[:3] if quick else FLOAT_FORMATS):
        for rounding in ROUNDINGS:
            seed = seed_for(rounding, k)
            check = against(device,
                            lambda x, a=(exp, man, rounding, sat, sub, fin, seed): torch.ops.vitfast.float_quantize(x, *a),
                            lambda x, a=(exp, man, rounding, sat, sub, seed), f=fin: ops.float_quantize_ref(x, *a, finite=f))
            for name, x in xs:
                what = f"float_quantize({exp},{man}, saturate={sat}, subnormals={sub}, finite={fin}) {rounding} {name}"
                yield what, (lambda check=check, x=x, what=what: check(x, what))


def fixed_cases(device, quick, generator):
    xs = inputs(quick, generator)
    for k, (wl, fl, clamp, sym) in enumerate(FIXED_FORMATS[:2] if quick else FIXED_FORMATS):
        for rounding in ROUNDINGS:
            seed = seed_for(rounding, 100 + k)
            check = against(device,
                            lambda x, a=(wl, fl, clamp, sym, rounding, seed): torch.ops.vitfast.fixed_point_quantize(x, *a),
                            lambda x, a=(wl, fl, clamp, sym, rounding, seed): ops.fixed_point_quantize_ref(x, *a))
            for name, x in xs:
                # scaled into the word's range, so the rounding (not only the clamp) is what is compared
                x = x * 2.0 ** (wl - fl - 8) if x.dtype == torch.float32 else x
                what = f"fixed_point_quantize(wl={wl}, fl={fl}, clamp={clamp}, symmetric={sym}) {rounding} {name}"
                yield what, (lambda check=check, x=x, what=what: check(x, what))


def block_cases(device, quick, generator):
    for k, (shape, dim, size) in enumerate(BLOCKS[:3] if quick else BLOCKS):
        x = torch.randn(shape, generator=generator) * torch.exp2(torch.randint(-20, 20, shape, generator=generator))
        x.view(-1)[:4] = torch.tensor([0.0, float("inf"), float("nan"), -0.0])
        for wl in (8, 4):
            for rounding in ROUNDINGS:
                seed = seed_for(rounding, 200 + k)
                check = against(device,
                                lambda x, a=(wl, dim, size, rounding, seed): torch.ops.vitfast.block_quantize(x, *a),
                                lambda x, a=(wl, dim, size, rounding, seed): ops.block_quantize_ref(x, *a))
                for dtype in (torch.float32, torch.bfloat16):
                    what = f"block_quantize(wl={wl}, dim={dim}, block_size={size}) {rounding} {tuple(shape)} {dtype}"
                    xd = x.to(dtype)
                    yield what, (lambda check=check, xd=xd, what=what: check(xd, what))


def scaled_cast_cases(device, quick, generator):
    xs = inputs(quick, generator)
    rows = torch.randn(65, 33, generator=generator) * 100
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.int8):
        for scale in (torch.tensor(1.0), torch.tensor(0.037), torch.tensor(3.0e4)):
            check = against(device, lambda x, s=scale, d=dtype: ops.scaled_cast(x, s.to(x.device), d),
                            lambda x, s=scale, d=dtype: ops.scaled_cast_ref(x, s, d))
            for name, x in xs:
                for xdtype in (torch.float32, torch.bfloat16) if x.dtype == torch.float32 else (x.dtype,):
                    what = f"scaled_cast to {dtype} at scale {scale.item():g} {name} as {xdtype}"
                    xd = x.to(xdtype)
                    yield what, (lambda check=check, xd=xd, what=what: check(xd, what))
        per_row = torch.rand(65, generator=generator) + 0.01  # one scale per row
        check = against(device, lambda x, s=per_row, d=dtype: ops.scaled_cast(x, s.to(x.device), d),
                        lambda x, s=per_row, d=dtype: ops.scaled_cast_ref(x, s, d))
        what = f"scaled_cast to {dtype} with a scale per row"
        yield what, (lambda check=check, what=what: check(rows, what))


def cases(family, device, quick=False):
    """(name, check) pairs of `family` on `device`."""
    generator = torch.Generator().manual_seed(20261127)
    if family == "scaled_cast":
        yield from scaled_cast_cases(device, quick, generator)
        return
    yield from float_cases(device, quick, generator)
    yield from fixed_cases(device, quick, generator)
    yield from block_cases(device, quick, generator)
