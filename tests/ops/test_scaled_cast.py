"""scaled_cast against torch's own fp8 casts (every fp16 value), its twin, the emulation's rounding
(float_quantize / fixed_point_quantize of x / scale), per-row scales, bad input, opcheck,
torch.compile, CUDA == CPU and no host synchronisation."""
import pytest
import torch

from vitfast.ops import fixed_point_quantize, float_quantize, scaled_cast, scaled_cast_ref
from tests.values import adversarial_fp32, assert_same_bits, needs_cuda

DTYPES = [torch.float8_e4m3fn, torch.float8_e5m2, torch.int8]
QMAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0, torch.int8: 127.0}


def codes(t):
    return t.view(torch.uint8) if t.dtype != torch.int8 else t


def emulation(x, scale, dtype):
    """What vitfast.quant.scaled computes: the 8-bit grid value of x / scale, in fp32."""
    v = x.float() / scale
    if dtype == torch.int8:
        return fixed_point_quantize(v, 8, 0, clamp=True, symmetric=True)
    exp, man = (4, 3) if dtype == torch.float8_e4m3fn else (5, 2)
    return float_quantize(v, exp, man, saturate=True, finite=dtype == torch.float8_e4m3fn)


def sample():
    g = torch.Generator().manual_seed(3)
    x = adversarial_fp32(4000, generator=g)
    ties = torch.arange(-300, 300) + 0.5  # integer ties (int8) at scale 1
    return torch.cat([x, ties, torch.tensor([448.0, 464.0, 480.0, -57344.0, 61440.0, 2.0**-10, 2.0**-17])])


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_every_fp16_value_casts_as_torch_does_within_range(dtype):
    """At scale 1, in range, scaled_cast is the IEEE round-to-nearest-even cast torch implements."""
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16)
    inside = x.float().abs() <= QMAX[dtype]
    got = scaled_cast(x, torch.ones(()), dtype)
    ref = x[inside].to(dtype)
    assert torch.equal(codes(got[inside]), codes(ref))
    over = ~inside & ~torch.isnan(x)
    assert torch.equal(got[over].float(), torch.sign(x[over].float()) * QMAX[dtype]), "saturates"
    assert torch.isnan(got[torch.isnan(x)].float()).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xdtype", [torch.float32, torch.float16, torch.bfloat16])
def test_equals_its_twin_and_the_emulation(dtype, xdtype):
    x = sample().to(xdtype)
    for scale in (torch.tensor(1.0), torch.tensor(0.037), torch.tensor(3.0e4)):
        got = scaled_cast(x, scale, dtype)
        assert got.dtype == dtype and got.shape == x.shape
        assert torch.equal(codes(got), codes(scaled_cast_ref(x, scale, dtype)))
        emu = emulation(x, scale, dtype)
        finite = ~torch.isnan(emu)
        assert torch.equal(got.float()[finite], emu[finite]), "the value of the code is the emulation's"
        assert torch.isnan(got.float()[~finite]).all() if dtype != torch.int8 else (got[~finite] == 0).all()


# fp32 exponent fields where the fp8 encoder's cases meet: fp32 subnormals and the smallest normals,
# the target's subnormal range with a binade either side, 1.0's, the binade holding the largest
# finite value and the one that saturates, inf/NaN.
BOUNDARY_FIELDS = {torch.float8_e4m3fn: [0, 1, *range(116, 123), 127, 135, 136, 255],
                   torch.float8_e5m2: [0, 1, *range(109, 115), 127, 142, 143, 255]}


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_every_mantissa_where_the_fp8_cases_meet(dtype):
    """The fp8 encoder (selects on the fp32 pattern, subnormals by an add) against the emulation's
    rounding (float_quantize), for all 2^23 mantissas of each boundary binade, random signs."""
    g = torch.Generator().manual_seed(5)
    mantissas = torch.arange(1 << 23, dtype=torch.int32)
    for field in BOUNDARY_FIELDS[dtype]:
        signs = torch.randint(0, 2, mantissas.shape, generator=g, dtype=torch.int32) << 31
        x = ((field << 23) | mantissas | signs).view(torch.float32)
        got = scaled_cast(x, torch.ones(()), dtype).float()
        assert_same_bits(got, emulation(x, 1.0, dtype), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_row_scales(dtype):
    g = torch.Generator().manual_seed(4)
    w = torch.randn(37, 5, 3, generator=g) * torch.logspace(-3, 3, 37)[:, None, None]
    s = w.reshape(37, -1).abs().amax(1) / QMAX[dtype]
    got = scaled_cast(w, s, dtype)
    assert torch.equal(codes(got), codes(scaled_cast_ref(w, s, dtype)))
    row_max = got.float().reshape(37, -1).abs().amax(1)
    assert torch.equal(row_max, torch.full_like(row_max, QMAX[dtype])), "each row's amax maps to qmax"


def test_bad_input_names_the_argument():
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="dtype must be one of"):
        scaled_cast(x, torch.ones(()), torch.float16)
    with pytest.raises(TypeError, match="scale must be a float32 tensor"):
        scaled_cast(x, 0.5, torch.int8)
    with pytest.raises(TypeError, match="scale must be a float32 tensor"):
        scaled_cast(x, torch.ones((), dtype=torch.float64), torch.int8)
    with pytest.raises(ValueError, match="scale must hold 1 value or x.size\\(0\\)"):
        scaled_cast(x, torch.ones(3), torch.int8)
    with pytest.raises(TypeError, match="x must be a float32, float16 or bfloat16"):
        scaled_cast(x.double(), torch.ones(()), torch.int8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    x = torch.randn(6, 10) * 50
    torch.library.opcheck(torch.ops.vitfast.scaled_cast.default, (x, torch.tensor(0.1), dtype))
    torch.library.opcheck(torch.ops.vitfast.scaled_cast.default, (x, torch.rand(6) + 0.01, dtype))


def test_torch_compile_matches_eager():
    def f(t):
        s = t.abs().amax() / 448.0
        return scaled_cast(t, s, torch.float8_e4m3fn).float() * s

    x = torch.randn(33, 17)
    assert torch.equal(torch.compile(f, fullgraph=True)(x), f(x))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xdtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_equals_cpu(dtype, xdtype):
    x = sample().to(xdtype)
    for scale in (torch.tensor(0.037), torch.tensor(1.0)):
        assert torch.equal(codes(scaled_cast(x.cuda(), scale.cuda(), dtype)).cpu(), codes(scaled_cast(x, scale, dtype)))
    w = torch.randn(65, 33) * 4  # per row, odd row length: the unaligned tail path
    s = torch.rand(65) + 0.01
    assert torch.equal(codes(scaled_cast(w.cuda(), s.cuda(), dtype)).cpu(), codes(scaled_cast(w, s, dtype)))
    odd = x.cuda()[1:]  # misaligned start
    assert torch.equal(codes(scaled_cast(odd, scale.cuda(), dtype)).cpu(), codes(scaled_cast(x[1:], scale, dtype)))
    # NaNs of both signs (a GPU's division returns a positive canonical NaN, an x86 one keeps the sign)
    bits = {torch.float32: [0x7FC00000, -0x00400000, 0x7F800001], torch.float16: [0x7E00, -0x0200, 0x7C01],
            torch.bfloat16: [0x7FC0, -0x0040, 0x7F81]}[xdtype]
    int_dtype = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[xdtype]
    nans = torch.tensor(bits, dtype=int_dtype).view(xdtype).repeat(4)
    for s in (torch.tensor(0.5), torch.tensor(-2.0)):
        assert torch.equal(codes(scaled_cast(nans.cuda(), s.cuda(), dtype)).cpu(), codes(scaled_cast(nans, s, dtype)))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [1, 2, 3, 4, 5, 7])
def test_cuda_per_row_scales_across_rows_inside_a_group_of_four(cols, dtype):
    # The kernel finds each group of four's rows with one division and a step per boundary: rows
    # shorter than four cross one or more boundaries inside a group.
    g = torch.Generator().manual_seed(cols)
    w = torch.randn(41, cols, generator=g) * 8
    s = torch.rand(41, generator=g) + 0.05
    assert torch.equal(codes(scaled_cast(w.cuda(), s.cuda(), dtype)).cpu(), codes(scaled_cast(w, s, dtype)))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xdtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_every_length_and_offset_of_the_vector_loop(dtype, xdtype):
    """As float_quantize's test of the shared loop: lengths around each vector boundary, every start
    offset within a vector, per-tensor and per-row scales (rows of 5 cross groups and vectors)."""
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(8000, generator=g) * 50).to(xdtype)
    xc, scale = x.cuda(), torch.tensor(0.37)
    for offset in range(8):
        for n in (1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 65, 4095, 4097, 7775):
            v = x[offset:offset + n]
            assert torch.equal(codes(scaled_cast(xc[offset:offset + n], scale.cuda(), dtype)).cpu(),
                               codes(scaled_cast(v, scale, dtype)))
            if n % 5 == 0:
                rows = torch.rand(n // 5, generator=g) + 0.1
                w, wc = v.reshape(-1, 5), xc[offset:offset + n].reshape(-1, 5)
                assert torch.equal(codes(scaled_cast(wc, rows.cuda(), dtype)).cpu(), codes(scaled_cast(w, rows, dtype)))


@needs_cuda
def test_cuda_dynamic_scale_needs_no_host_synchronisation():
    x = torch.randn(197 * 8, 768, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        s = x.abs().amax() / 448.0
        y = scaled_cast(x, s, torch.float8_e4m3fn)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(codes(y).cpu(), codes(scaled_cast(x.cpu(), s.cpu(), torch.float8_e4m3fn)))
