"""lp_matmul (FP16_16 / FP16_32): the CPU emulation against its twin bit for bit; fp16 accumulation
within the error bound derived for it (vitfast.ops.lp_matmul's docstring) and measurably worse than fp32
accumulation where it must be; epilogues; opcheck; argument errors; on CUDA the HMMA kernels against the
bound and against torch's own fp16 accumulation (allow_fp16_accumulation)."""
import pytest
import torch
import torch.nn.functional as F

from vitfast.ops import lp_linear, lp_matmul, lp_matmul_ref
from vitfast.ops.lp_matmul import fp16_accumulation_bound
from tests.ops.precision import assert_2x_torch, rel_err
from tests.values import needs_cuda

U16 = 2.0**-11


def operands(M, K, N, device="cpu", seed=0, positive=False):
    g = torch.Generator().manual_seed(seed + M * 3 + K * 5 + N * 7)
    if positive:
        a, b = torch.rand(M, K, generator=g), torch.rand(K, N, generator=g)
    else:
        a, b = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)
    return a.half().to(device), b.half().to(device)


def exact(a, b):
    return a.cpu().double() @ b.cpu().double()


def assert_within_fp16_accumulation_bound(y, a, b, ulp_rounding=False):
    """|y - exact| <= bound + the output's own rounding (u16 |result|), elementwise. ulp_rounding (the
    GPU): the tensor core's accumulator rounding direction is not documented, so allow a whole ulp."""
    ref = exact(a, b)
    bound = fp16_accumulation_bound(a.cpu(), b.cpu(), ulp_rounding) * (1 + U16) + U16 * ref.abs() + 2.0**-24
    err = (y.cpu().double() - ref).abs()
    assert bool((err <= bound).all()), (err - bound).max().item()


@pytest.mark.parametrize("M,K,N", [(1, 8, 1), (5, 24, 7), (33, 64, 40), (16, 200, 9), (8, 1032, 12)])
def test_cpu_emulation_equals_its_twin_bit_for_bit(M, K, N):
    a, b = operands(M, K, N)
    bias = torch.randn(N)
    r = torch.randn(M, N).half()
    for kw in (dict(), dict(bias=bias, epilogue="bias"), dict(bias=bias, epilogue="gelu"),
               dict(epilogue="gelu_tanh"), dict(bias=bias, epilogue="residual", residual=r),
               dict(out_dtype=torch.float32)):
        y, y_ref = lp_matmul(a, b, **kw), lp_matmul_ref(a, b, **kw)
        assert y.dtype == y_ref.dtype and torch.equal(y, y_ref), kw


@pytest.mark.parametrize("M,K,N", [(16, 64, 16), (8, 1024, 8), (4, 4096, 4)])
def test_cpu_fp16_accumulation_within_its_bound(M, K, N):
    for positive in (False, True):
        a, b = operands(M, K, N, positive=positive)
        assert_within_fp16_accumulation_bound(lp_matmul(a, b), a, b)


def test_fp16_accumulator_loses_what_fp32_keeps():
    """2048 then K/16 - 1 chunks summing to 1 each: in fp16, 2048 + 1 rounds back to 2048 (ties to even;
    truncation agrees), so the fp16 accumulator never moves; fp32 accumulation gets 2048 + 63 -> 2112
    in fp16. Output-only rounding (myrtle-vision's FP16_16) would give 2112 too."""
    K = 1024
    a = torch.ones(1, K).half()
    b = torch.full((K, 1), 1 / 16).half()
    b[:16] = 128.0
    assert lp_matmul(a, b).item() == 2048.0
    assert lp_matmul(a, b, accumulate="fp32").item() == 2111.0
    assert lp_matmul(a, b, accumulate="fp32", out_dtype=torch.float16).item() == 2112.0


def test_fp16_accumulation_differs_measurably_from_fp32_on_long_positive_sums():
    a, b = operands(16, 4096, 16, positive=True)  # running sums near 1024: fp16 spacing 0.5
    ref = exact(a, b)
    e16 = rel_err(lp_matmul(a, b), ref)
    e32 = rel_err(lp_matmul(a, b, accumulate="fp32", out_dtype=torch.float16), ref)  # output rounding only
    assert e16 > 4 * e32, (e16, e32)
    assert e16 < 2 * 256 * U16  # and still well inside the bound's order (C = 256 roundings)


def test_fp32_accumulation_matches_float64():
    a, b = operands(20, 768, 30)
    y = lp_matmul(a, b, accumulate="fp32")
    assert y.dtype == torch.float32
    assert rel_err(y, exact(a, b)) < 1e-6


def test_linear_layout_and_casting():
    """lp_linear takes an nn.Linear weight (N, K) as stored; float32 operands are rounded to fp16."""
    x, w, bias = torch.randn(2, 3, 64), torch.randn(48, 64), torch.randn(48)
    y = lp_linear(x, w, bias, epilogue="bias", accumulate="fp32")
    assert y.shape == (2, 3, 48) and y.dtype == torch.float32
    assert torch.equal(y, lp_matmul(x, w.t(), bias, epilogue="bias", accumulate="fp32"))
    assert torch.equal(lp_linear(x, w), lp_matmul_ref(x.half(), w.t().half()))


def test_empty_inner_dimension_gives_the_epilogue_of_zero():
    a, b = torch.zeros(3, 0).half(), torch.zeros(0, 5).half()
    bias = torch.randn(5)
    torch.testing.assert_close(lp_matmul(a, b, bias, epilogue="gelu"), F.gelu(bias).half().expand(3, 5))
    assert lp_matmul(torch.zeros(0, 8).half(), torch.ones(8, 4).half()).shape == (0, 4)


def test_opcheck():
    a, b = operands(6, 32, 10)
    w = b.t().contiguous()
    bias, r = torch.randn(10), torch.randn(6, 10)
    for args in [(a, w, None, "none", None, True, torch.float16), (a, w, bias, "gelu", None, False, torch.float32),
                 (a, w, bias, "residual", r, False, torch.float32)]:
        torch.library.opcheck(torch.ops.vitfast.lp_matmul.default, args,
                              test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_bad_arguments_name_the_argument():
    a, b = operands(4, 16, 8)
    with pytest.raises(ValueError, match="K"):
        lp_matmul(a[:, :12], b[:12])
    with pytest.raises(ValueError, match="b.shape"):
        lp_matmul(a, b[:8])
    with pytest.raises(ValueError, match="accumulate"):
        lp_matmul(a, b, accumulate="fp8")
    with pytest.raises(ValueError, match="epilogue"):
        lp_matmul(a, b, epilogue="relu")
    with pytest.raises(ValueError, match="bias"):
        lp_matmul(a, b, epilogue="bias")
    with pytest.raises(ValueError, match="residual"):
        lp_matmul(a, b, epilogue="residual")
    with pytest.raises(TypeError, match="out_dtype"):
        lp_matmul(a, b, out_dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="a must"):
        lp_matmul(a.long(), b)
    w = b.t().contiguous()
    with pytest.raises(RuntimeError, match="x must be float16"):
        torch.ops.vitfast.lp_matmul(a.float(), w, None, "none", None, True, torch.float16)
    with pytest.raises(RuntimeError, match="multiple of 8"):
        torch.ops.vitfast.lp_matmul(a[:, :12], w[:, :12], None, "none", None, True, torch.float16)
    with pytest.raises(RuntimeError, match="epilogue"):
        torch.ops.vitfast.lp_matmul(a, w, None, "relu", None, True, torch.float16)
    with pytest.raises(RuntimeError, match="residual"):
        torch.ops.vitfast.lp_matmul(a, w, None, "residual", None, True, torch.float16)


CUDA_SHAPES = [(1, 8, 1), (7, 24, 9), (128, 128, 128), (197, 768, 2304), (394, 3072, 768), (300, 1032, 1000),
               (4096, 64, 130), (129, 4096, 257)]


@needs_cuda
@pytest.mark.parametrize("M,K,N", CUDA_SHAPES)
def test_cuda_fp16_accumulation_within_bound_and_near_cublas_fp16(M, K, N):
    a, b = operands(M, K, N, "cuda")
    y = lp_matmul(a, b)
    assert y.dtype == torch.float16
    assert_within_fp16_accumulation_bound(y, a, b, ulp_rounding=True)
    ref = exact(a, b)
    old = torch.backends.cuda.matmul.allow_fp16_accumulation
    try:
        torch.backends.cuda.matmul.allow_fp16_accumulation = True
        theirs = a @ b
    finally:
        torch.backends.cuda.matmul.allow_fp16_accumulation = old
    # Same format, same kind of accumulator: within 2x of cuBLAS's COMPUTE_16F error, or (cuBLAS may
    # split K, which shortens each fp16 running sum) within the typical error of C = K / 16 random-sign
    # fp16 roundings, u16 * sqrt(C), plus the output's rounding.
    C = -(-K // 16)
    assert_2x_torch(y, theirs, ref, floor=U16 * (C**0.5 + 1), what="vs cuBLAS fp16 accumulation")


@needs_cuda
@pytest.mark.parametrize("M,K,N", CUDA_SHAPES)
def test_cuda_fp32_accumulation_within_2x_torch(M, K, N):
    a, b = operands(M, K, N, "cuda")
    for out_dtype in (torch.float32, torch.float16):
        y = lp_matmul(a, b, accumulate="fp32", out_dtype=out_dtype)
        assert y.dtype == out_dtype
        assert_2x_torch(y, (a @ b).to(out_dtype), exact(a, b), floor=1e-6)


@needs_cuda
@pytest.mark.parametrize("n", [1, 8])  # 8 outputs: an H100/H200 runs the sm90 kernel (HGMMA.F16), 1: mma.sync
def test_cuda_fp16_accumulator_is_real(n):
    K = 1024
    a = torch.ones(n, K, device="cuda").half()
    b = torch.full((K, n), 1 / 16, device="cuda").half()
    b[:16] = 128.0
    assert (lp_matmul(a, b) == 2048.0).all()  # 2048 + 1 is 2048 in fp16, rounded to nearest or truncated
    assert (lp_matmul(a, b, accumulate="fp32") == 2111.0).all()
    a, b = operands(64, 4096, 64, "cuda", positive=True)
    ref = exact(a, b)
    assert rel_err(lp_matmul(a, b), ref) > 4 * rel_err(lp_matmul(a, b, accumulate="fp32", out_dtype=torch.float16), ref)


@needs_cuda
@pytest.mark.parametrize("accumulate", ["fp16", "fp32"])
def test_cuda_epilogues_match_the_cpu_emulation(accumulate):
    a, b = operands(197, 384, 300, "cuda")
    bias = torch.randn(300, device="cuda")
    r = torch.randn(197, 300, device="cuda")
    for kw in (dict(bias=bias, epilogue="bias"), dict(bias=bias, epilogue="gelu"), dict(epilogue="gelu_tanh"),
               dict(bias=bias, epilogue="residual", residual=r), dict(out_dtype=torch.float32)):
        y = lp_matmul(a, b, accumulate=accumulate, **kw).cpu().double()
        cpu = lp_matmul(a.cpu(), b.cpu(), accumulate=accumulate,
                        **{k: (v.cpu() if torch.is_tensor(v) else v) for k, v in kw.items()}).double()
        # Both are within the bound of the same sum: they differ by at most twice it (plus outputs' rounding).
        lim = 2 * fp16_accumulation_bound(a.cpu(), b.cpu()) + 4 * U16 * cpu.abs() + 1e-3
        if accumulate == "fp32":
            lim = 4 * U16 * cpu.abs() + 1e-4
        assert bool(((y - cpu).abs() <= lim).all()), kw
