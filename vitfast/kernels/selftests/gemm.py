"""Self-tests of the GEMM families: gemm_mma (the mma.sync kernel behind linear_gelu, linear_residual and
lp_matmul), gemm_sm90 (CUTLASS's Hopper kernels behind the same ops, in every configuration built) and
fp8_gemm_sm90 (fp8_linear's Hopper kernels). Distilled from tests/ops/test_linear_fused.py,
test_lp_matmul.py, test_gemm_sm90.py and test_fp8_linear.py, with their tolerances:
- linear_gelu / linear_residual: the output and every gradient within twice PyTorch's error at the same
  precision against float64 (floors 2e-6 and 1e-5; 2^-10.99 for the sm90 tanh GELU's tanh.approx.f32);
- lp_matmul: fp16 accumulation within its error bound (a whole ulp per chunk on the GPU) and near cuBLAS's
  own fp16 accumulation, fp32 accumulation within 2x PyTorch's, the epilogues near the CPU emulation;
- fp8_linear: against fp8_linear_ref within the FP8 accumulation bound (one bf16 or e4m3 step more where
  the two sums round apart); on the CPU bit for bit.
Shapes: odd M (ragged last tiles of 64 / 128 rows), N off the tile widths, the shortest K each kernel
takes, ViT widths at M ~ 197 x batch; shapes are filtered through gemm_path so that a case of a family
runs that family's kernel (the fallback paths are no case). On the CPU the same cases run at small
sizes, the CPU ops against the twins."""
import contextlib
import warnings

import torch
import torch.nn.functional as F

from ... import ops
from ...ops.fp8_linear import fp8_accumulation_bound
from ...ops.lp_matmul import fp16_accumulation_bound
from .common import assert_2x_torch, assert_same_bits, relative_error
from . import SelfTest

SELFTESTS = {
    "gemm_mma": SelfTest(env={"VITFAST_GEMM_SM90": "0"}, capability=(8, 0), kernels=("mma_gemm_kernel", "gelu_grad_kernel"),
                         budget_s=20.0,
                         replaces="test_linear_fused.py + test_lp_matmul.py: 83 tests, 17 + 13 s on the H200 "
                                  "(2026-11-27)"),
    # the MMA atoms of the bf16 / fp16 wgmma kernels: fp8_linear's are F32E4M3E4M3
    "gemm_sm90": SelfTest(capability=(9, 0), exact_capability=True, kernels=("F32BF16BF16", "F32F16F16", "F16F16F16"),
                          budget_s=30.0,
                          replaces="test_gemm_sm90.py + test_linear_fused.py + test_lp_matmul.py: 244 tests, "
                                   "43 + 15 + 12 s on the H200 (2026-11-27)"),
    "fp8_gemm_sm90": SelfTest(capability=(9, 0), exact_capability=True, kernels=("F32E4M3E4M3",), budget_s=25.0,
                              replaces="test_fp8_linear.py: 128 tests, 68 s on the H200 (2026-11-27)"),
}
H16, BF16, F32, E4M3 = torch.float16, torch.bfloat16, torch.float32, torch.float8_e4m3fn
U16 = 2.0**-11
TANH_FLOOR = 2.0**-10.99  # the sm90 kernels' tanh GELU runs on tanh.approx.f32 (relative error <= 2^-10.99)

# (M, K, N). gemm_mma: test_linear_fused.py's CUDA cases and ViT widths; N 9 and 1000 are off every tile
LINEAR_MMA = [(1, 8, 8), (7, 24, 9), (1000, 40, 130), (128, 128, 128), (197, 192, 768), (394, 384, 1536),
              (394, 768, 3072), (130, 3072, 768), (257, 1024, 1000), (197, 1024, 4096), (197, 4096, 1024)]
LINEAR_CPU = [(1, 8, 8), (7, 24, 9), (33, 40, 130), (67, 64, 96)]
# gemm_sm90, training: the shapes above that the sm90 kernels take (K >= 64, N % 8 == 0), and K = 1032
LINEAR_SM90 = [(128, 128, 128), (197, 192, 768), (394, 384, 1536), (394, 768, 3072), (130, 3072, 768),
               (257, 1024, 1000), (197, 1024, 4096), (197, 4096, 1024), (300, 1032, 1000)]
LINEAR_SM90_CPU = [(67, 64, 96), (45, 72, 136)]
# gemm_sm90, inference (test_gemm_sm90.py): 8 images of 197 tokens, 12.3 tiles of 128 rows
VIT_SM90 = [(1576, K, N) for K, N in [(192, 768), (768, 192), (384, 1536), (768, 3072), (3072, 768), (1280, 5120),
                                       (64, 1000)]]
VIT_SM90_CPU = [(23, 64, 96), (23, 192, 64)]
# every configuration: ragged M (333, 1000, 4100) and N for every tile width (576 / 128, 1000 / 192 and / 256)
CONFIG_SHAPES = [(1576, 768, 768), (333, 192, 576), (1000, 64, 1000), (4100, 384, 1152)]
CONFIG_SHAPES_CPU = [(67, 64, 96), (45, 72, 136)]
SM90_KINDS = ("act", "act_tanh", "act_aux", "act_aux_tanh", "residual", "residual_f32")
# lp_matmul (test_lp_matmul.py's CUDA shapes); the CPU twin loops over K in Python: small ones there
LP_SHAPES = [(1, 8, 1), (7, 24, 9), (128, 128, 128), (197, 768, 2304), (394, 3072, 768), (300, 1032, 1000),
             (4096, 64, 130), (129, 4096, 257)]
LP_SHAPES_CPU = [(1, 8, 1), (5, 24, 7), (16, 200, 9), (8, 1032, 12), (33, 64, 40), (9, 1032, 24)]
# fp8_linear (test_fp8_linear.py): K % 16 == 0 and N % 16 == 0 (TMA rows of e4m3), K = 208 not a whole k-tile;
# 1 to 24 k-tiles of 128, odd counts (K = 384, 640, 272) among them: the mainloop's order ends otherwise there
FP8_SHAPES = [(1576, 768, 2304), (1576, 768, 3072), (1576, 3072, 768), (1576, 768, 768), (50, 192, 576),
              (77, 208, 48), (1, 16, 16), (96, 384, 256), (200, 640, 128), (64, 272, 64)]
FP8_SHAPES_CPU = [(37, 48, 32), (77, 208, 48), (1, 16, 16)]
# (activation, out_dtype, residual): the FP8 chain's epilogues, which the kernels are built for
FP8_EPILOGUES = [("none", BF16, False), ("gelu", E4M3, False), ("gelu_tanh", E4M3, False), ("none", BF16, True)]
# quick=True: (family, device) -> a few of the shapes above
QUICK = {
    ("gemm_mma", "linear"): [(7, 24, 9), (394, 768, 3072)], ("gemm_mma", "linear cpu"): [(7, 24, 9)],
    ("gemm_sm90", "linear"): [(394, 768, 3072)], ("gemm_sm90", "linear cpu"): [(45, 72, 136)],
    ("gemm_sm90", "config"): [(333, 192, 576)], ("gemm_sm90", "config cpu"): [(45, 72, 136)],
    ("gemm_mma", "lp"): [(129, 4096, 257)], ("gemm_mma", "lp cpu"): [(33, 64, 40)],
    ("gemm_sm90", "lp"): [(197, 768, 2304)], ("gemm_sm90", "lp cpu"): [(9, 1032, 24)],
    ("fp8_gemm_sm90", "fp8"): [(50, 192, 576)], ("fp8_gemm_sm90", "fp8 cpu"): [(37, 48, 32)],
}


def _dt(dtype):
    return str(dtype).removeprefix("torch.")


def _shape(M, K, N):
    return f"M={M} K={K} N={N}"


# ---- comparisons (on the tensors' device: common's copies to the CPU would spend the GPU budget on transfers)

def assert_within(got, want, limit, what):
    """|got - want| <= limit elementwise (limit a tensor or a number), NaN nowhere."""
    diff = (got.detach().double() - want.detach().double()).abs()
    limit = torch.as_tensor(limit, dtype=torch.float64, device=diff.device).expand_as(diff)
    bad = ~(diff <= limit)
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.numel()} values outside the bound, e.g. "
                             f"{got.flatten()[i].item()!r} against {want.flatten()[i].item()!r} "
                             f"(apart {diff.flatten()[i].item():.3e}, bound {limit.flatten()[i].item():.3e})")


# ---- linear_gelu and linear_residual

def make(M, K, N, dtype, device, bias=True, seed=0):
    """test_linear_fused.py's operands: x, weight (scaled by 1/sqrt(K)), bias, residual."""
    g = torch.Generator().manual_seed(seed + M + 7 * K + 13 * N)
    x = torch.randn(M, K, generator=g).to(device, dtype)
    w = (torch.randn(N, K, generator=g) / K**0.5).to(device, dtype)
    b = torch.randn(N, generator=g).to(device, dtype) if bias else None
    r = torch.randn(M, N, generator=g).to(device, dtype)
    return x, w, b, r


def check_linear(fn, twin, args, names, what, floor=2e-6, grad=True, autocast=None):
    """fn(*args) (our op) against twin(*args) (PyTorch at the same precision) and twin on float64 copies:
    the output and, with grad, each argument's gradient (through the op's C++ autograd node) within 2x
    PyTorch's error (test_linear_fused.py's check). autocast: run both under autocast to that dtype."""
    args = [None if a is None else a.detach().requires_grad_(grad) for a in args]
    device = args[0].device
    with torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext():
        ours, theirs = fn(*args), twin(*args)
    dargs = [None if a is None else a.detach().double().requires_grad_(grad) for a in args]
    ref = twin(*dargs)
    assert_2x_torch(ours, theirs, ref, floor, f"{what}: output")
    if not grad:
        return
    leaves = [a for a in args if a is not None]
    dy = torch.randn(ours.shape, generator=torch.Generator().manual_seed(3)).to(device, ours.dtype)
    go = torch.autograd.grad(ours, leaves, dy)
    gt = torch.autograd.grad(theirs, leaves, dy)
    gr = torch.autograd.grad(ref, [a for a in dargs if a is not None], dy.double())
    for name, a, t, e in zip([n for n, a in zip(names, args) if a is not None], go, gt, gr):
        assert_2x_torch(a, t, e, 1e-5, f"{what}: gradient of {name}")


# epilogue name -> (op, approximate, bias, residual: None, "same" (x's dtype) or "f32")
EPILOGUES = {
    "bias+GELU(erf)": ("linear_gelu", "none", True, None),
    "bias+GELU(tanh)": ("linear_gelu", "tanh", True, None),
    "GELU(erf), no bias": ("linear_gelu", "none", False, None),
    "bias+residual": ("linear_residual", None, True, "same"),
    "residual, no bias": ("linear_residual", None, False, "same"),
    "bias+residual into float32": ("linear_residual", None, True, "f32"),
}


def linear_check(device, M, K, N, dtype, epilogue, config, grad, sm90):
    """One op, epilogue and configuration at (M, K, N)."""
    op, approximate, bias, residual = EPILOGUES[epilogue]
    x, w, b, r = make(M, K, N, dtype, device, bias)
    what = f"{op} {_shape(M, K, N)} {_dt(dtype)} {epilogue} config={config}"
    if op == "linear_gelu":
        floor = TANH_FLOOR if sm90 and approximate == "tanh" else 2e-6
        check_linear(lambda x, w, b: ops.linear_gelu(x, w, b, approximate, config=config),
                     lambda x, w, b: ops.linear_gelu_ref(x, w, b, approximate), (x, w, b), ("x", "weight", "bias"),
                     what, floor, grad)
    else:
        r = r.float() if residual == "f32" else r
        check_linear(lambda x, w, b, r: ops.linear_residual(x, w, b, r, config=config), ops.linear_residual_ref,
                     (x, w, b, r), ("x", "weight", "bias", "residual"), what, 2e-6, grad)


def takes(family, dtype, M, N, K, accumulate_fp16=False, out_f32=False):
    """Whether gemm_path sends the case to `family`'s kernel (on an H100 / H200 for gemm_sm90, else an
    A100), so that no case of a family runs another path."""
    major, want = ((9, "sm90") if family == "gemm_sm90" else (8, "mma_sync"))
    return torch.ops.vitfast.gemm_path(major, 0, dtype, M, N, K, accumulate_fp16, out_f32, sm90_built=True) == want


def linear_cases(family, device, quick):
    """linear_gelu and linear_residual: forward and backward at every shape, dtype and epilogue (the
    default configuration); on gemm_sm90 also test_gemm_sm90.py's inference cases at M = 1576."""
    sm90, cpu = family == "gemm_sm90", device == "cpu"
    shapes = (LINEAR_SM90_CPU if cpu else LINEAR_SM90) if sm90 else (LINEAR_CPU if cpu else LINEAR_MMA)
    epilogues = [e for e in EPILOGUES if e != "bias+residual into float32"]
    dtypes = (H16, BF16)
    if quick:
        shapes = QUICK[family, "linear cpu" if cpu else "linear"]
        epilogues, dtypes = ["bias+GELU(erf)", "bias+residual"], ((H16, BF16) if not sm90 else (BF16,))
    for M, K, N in shapes:
        for dtype in dtypes:
            if not takes(family, dtype, M, N, K):
                continue
            for epi in epilogues:
                what = f"{EPILOGUES[epi][0]} {_shape(M, K, N)} {_dt(dtype)} {epi} config=auto forward+backward"
                yield what, (lambda a=(device, M, K, N, dtype, epi, "auto", True, sm90): linear_check(*a))
    if sm90 and not quick:
        for M, K, N in (VIT_SM90_CPU if cpu else VIT_SM90):
            for dtype in dtypes:
                for epi in ["bias+GELU(erf)", "bias+GELU(tanh)", "bias+residual", "residual, no bias",
                            "bias+residual into float32"]:
                    if not takes(family, dtype, M, N, K, out_f32=epi.endswith("float32")):
                        continue
                    what = f"{EPILOGUES[epi][0]} {_shape(M, K, N)} {_dt(dtype)} {epi} config=auto forward"
                    yield what, (lambda a=(device, M, K, N, dtype, epi, "auto", False, sm90): linear_check(*a))
    if not quick:
        yield from linear_extra_cases(family, device)


def saved_pre_check(device, M, K, N, bit_equal):
    """linear_gelu storing the pre-activation (training's forward): the linear within one bf16 rounding of
    the largest value, GELU of it rounded once; on sm90 the output bit for bit that of the kernel that
    stores nothing (test_linear_fused.py, test_gemm_sm90.py)."""
    x, w, b, _ = make(M, K, N, BF16, device)
    out, pre = torch.ops.vitfast.linear_gelu(x, w, b, "none", True)
    lin = F.linear(x.float(), w.float(), b.float())
    assert_within(pre, lin, 2**-7 * lin.abs().max().item(), "the stored pre-activation against the fp32 linear")
    want = F.gelu(pre.float()).to(BF16).float()  # erff and PyTorch's erf may differ by an fp32 ulp
    assert_within(out, want, 1e-6 + 2**-7 * want.abs(), "the output against GELU of the stored pre-activation")
    if bit_equal:
        assert_same_bits(out, torch.ops.vitfast.linear_gelu(x, w, b, "none", False)[0],
                         "the output against that of the kernel that stores no pre-activation")


def unaligned_bias_check(device, M, K, N, dtype):
    """The bias read in the operands' dtype; a bias view 2 bytes past a 16-byte boundary gives the same bits
    (test_linear_fused.py)."""
    x, w, b, r = make(M, K, N, dtype, device)
    out_r, out_g = ops.linear_residual(x, w, b, r), ops.linear_gelu(x, w, b)
    d = [t.double() for t in (x, w, b, r)]
    assert_2x_torch(out_r, ops.linear_residual_ref(x, w, b, r), ops.linear_residual_ref(*d), 2e-6, "residual")
    assert_2x_torch(out_g, ops.linear_gelu_ref(x, w, b), ops.linear_gelu_ref(*d[:3]), 2e-6, "GELU")
    unaligned = torch.cat([b.new_zeros(1), b])[1:]
    if unaligned.data_ptr() % 16 == 0:
        raise AssertionError("the bias view meant to be unaligned is 16-byte aligned")
    assert_same_bits(ops.linear_residual(x, w, unaligned, r), out_r, "residual with the unaligned bias")
    assert_same_bits(ops.linear_gelu(x, w, unaligned), out_g, "GELU with the unaligned bias")


def strided_check(device):
    """A transposed (non-contiguous) x and the fp32 residual stream (test_linear_fused.py)."""
    _, w, b, _ = make(64, 128, 96, BF16, device)
    g = torch.Generator().manual_seed(11)
    xs = torch.randn(128, 64, generator=g).to(device, BF16).t()
    r = torch.randn(64, 96, generator=g).to(device)
    check_linear(ops.linear_residual, ops.linear_residual_ref, (xs, w, b, r), ("x", "weight", "bias", "residual"),
                 "linear_residual with a transposed x into float32", grad=False)


def autocast_check(device, M, K, N, op):
    """float32 parameters under autocast to bf16: the operands and the bias cast as F.linear's are (the
    bias epilogue in the operands' dtype), linear_residual into the float32 residual stream."""
    x, w, b, r = make(M, K, N, F32, device)
    if op == "linear_gelu":
        check_linear(ops.linear_gelu, ops.linear_gelu_ref, (x, w, b), ("x", "weight", "bias"),
                     f"linear_gelu under autocast {_shape(M, K, N)}", autocast=BF16)
    else:
        check_linear(ops.linear_residual, ops.linear_residual_ref, (x, w, b, r), ("x", "weight", "bias", "residual"),
                     f"linear_residual under autocast {_shape(M, K, N)}", autocast=BF16)


def linear_extra_cases(family, device):
    sm90, cpu = family == "gemm_sm90", device == "cpu"
    pre = (30, 64, 56) if cpu else ((1000, 768, 3072) if sm90 else (300, 256, 520))
    yield (f"linear_gelu {_shape(*pre)} bfloat16 bias+GELU(erf) storing the pre-activation config=auto forward",
           lambda a=(device, *pre, sm90): saved_pre_check(*a))
    shape = (16, 64, 24) if cpu else (256, 192, 768)
    for dtype in (H16, BF16):
        yield (f"linear_residual and linear_gelu {_shape(*shape)} {_dt(dtype)} bias (in x's dtype, and a view 2 "
               f"bytes off 16-byte alignment)+residual / +GELU(erf) config=auto forward",
               lambda a=(device, *shape, dtype): unaligned_bias_check(*a))
    yield ("linear_residual M=64 K=128 N=96 bfloat16 transposed x, bias+residual into float32 config=auto forward",
           lambda d=device: strided_check(d))
    shape = (23, 64, 48) if cpu else (394, 768, 768)
    for op in ("linear_gelu", "linear_residual"):
        epi = "bias+GELU(erf)" if op == "linear_gelu" else "bias+residual into float32"
        yield (f"{op} {_shape(*shape)} float32 under autocast to bfloat16 {epi} config=auto forward+backward",
               lambda a=(device, *shape, op): autocast_check(*a))


# ---- gemm_sm90: every configuration built for every kernel kind

def config_check(device, kind, config, M, K, N, dtype):
    """test_gemm_sm90.py's test_every_configuration_within_2x_torch; the kinds that serve training (the
    stored pre-activation, the residual) also through the op's gradient, in the same configuration."""
    what = f"{kind} {_shape(M, K, N)} {_dt(dtype)} config={config}"
    if not kind.startswith("act"):
        epi = "bias+residual into float32" if kind == "residual_f32" else "bias+residual"
        linear_check(device, M, K, N, dtype, epi, config, True, True)
        return
    approximate = "tanh" if kind.endswith("tanh") else "none"
    epi = "bias+GELU(tanh)" if approximate == "tanh" else "bias+GELU(erf)"
    if "aux" not in kind:
        linear_check(device, M, K, N, dtype, epi, config, False, True)
        return
    x, w, b, _ = make(M, K, N, dtype, device)
    out, pre = torch.ops.vitfast.linear_gelu(x, w, b, approximate, True, config)
    assert_2x_torch(out, ops.linear_gelu_ref(x, w, b, approximate),
                    ops.linear_gelu_ref(x.double(), w.double(), b.double(), approximate),
                    TANH_FLOOR if approximate == "tanh" else 2e-6, f"{what}: output")
    lin = F.linear(x.float(), w.float(), b.float())  # the stored pre-activation: within one rounding of the largest
    assert_within(pre, lin, 2**-7 * lin.abs().max().item(), f"{what}: the stored pre-activation")
    linear_check(device, M, K, N, dtype, epi, config, True, True)  # the public op with a gradient: this kind


def config_cases(device, quick):
    shapes = CONFIG_SHAPES_CPU if device == "cpu" else CONFIG_SHAPES
    dtypes = (H16, BF16)
    if quick:
        shapes, dtypes = QUICK["gemm_sm90", "config cpu" if device == "cpu" else "config"], (BF16,)
    for kind in SM90_KINDS:
        passes = "forward+backward" if "aux" in kind or kind.startswith("residual") else "forward"
        for config in torch.ops.vitfast.sm90_configs(kind):
            for M, K, N in shapes:
                for dtype in dtypes:
                    what = (f"{'linear_gelu' if kind.startswith('act') else 'linear_residual'} {_shape(M, K, N)} "
                            f"{_dt(dtype)} kind={kind} config={config} {passes}")
                    yield what, (lambda a=(device, kind, config, M, K, N, dtype): config_check(*a))


# ---- lp_matmul (FP16_16 / FP16_32)

def lp_operands(M, K, N, device, seed=0, positive=False):
    g = torch.Generator().manual_seed(seed + M * 3 + K * 5 + N * 7)
    a, b = ((torch.rand(M, K, generator=g), torch.rand(K, N, generator=g)) if positive else
            (torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)))
    return a.half().to(device), b.half().to(device)


def lp_fp16_check(device, M, K, N):
    """fp16 accumulation within the bound of lp_matmul's docstring (the GPU's rounding direction is not
    documented: a whole ulp per chunk) plus the output's rounding; on the GPU within 2x cuBLAS's own fp16
    accumulation's error or the typical error of K / 16 roundings; on the CPU lp_matmul_ref bit for bit."""
    a, b = lp_operands(M, K, N, device)
    y = ops.lp_matmul(a, b)
    if y.dtype != H16:
        raise AssertionError(f"an {y.dtype} output for fp16 accumulation")
    ref = a.double() @ b.double()
    bound = fp16_accumulation_bound(a, b, device != "cpu") * (1 + U16) + U16 * ref.abs() + 2.0**-24
    assert_within(y, ref, bound, "the fp16-accumulated product against the exact one")
    if device == "cpu":
        assert_same_bits(y, ops.lp_matmul_ref(a, b), "the CPU emulation against lp_matmul_ref")
        return
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "allow_fp16_accumulation"):  # older PyTorch: the bound alone
        return
    old = matmul.allow_fp16_accumulation
    try:
        matmul.allow_fp16_accumulation = True
        theirs = a @ b
    finally:
        matmul.allow_fp16_accumulation = old
    C = -(-K // 16)  # cuBLAS may split K: the typical error of C random-sign fp16 roundings, and the output's
    assert_2x_torch(y, theirs, ref, U16 * (C**0.5 + 1), "against cuBLAS's fp16 accumulation")


def lp_fp32_check(device, M, K, N, out_dtype):
    a, b = lp_operands(M, K, N, device)
    y = ops.lp_matmul(a, b, accumulate="fp32", out_dtype=out_dtype)
    assert_2x_torch(y, (a @ b).to(out_dtype), a.double() @ b.double(), 1e-6, "fp32 accumulation")


def lp_real_accumulator_check(device, n):
    """2048 then chunks of 1: an fp16 accumulator never moves from 2048 (2048 + 1 rounds back, to nearest
    or truncated), fp32 accumulation reaches 2111 (test_lp_matmul.py)."""
    K = 1024
    a = torch.ones(n, K, device=device).half()
    b = torch.full((K, n), 1 / 16, device=device).half()
    b[:16] = 128.0
    y16, y32 = ops.lp_matmul(a, b), ops.lp_matmul(a, b, accumulate="fp32")
    if not bool((y16 == 2048.0).all()):
        raise AssertionError(f"fp16 accumulation gave {y16.flatten()[:4].tolist()} where the accumulator stays 2048")
    if not bool((y32 == 2111.0).all()):
        raise AssertionError(f"fp32 accumulation gave {y32.flatten()[:4].tolist()} where the sum is 2111")


def lp_positive_check(device, M, K, N):
    """Long positive sums: fp16 accumulation measurably (4x) worse than fp32's output rounding alone."""
    a, b = lp_operands(M, K, N, device, positive=True)
    ref = a.double() @ b.double()
    e16 = relative_error(ops.lp_matmul(a, b), ref)
    e32 = relative_error(ops.lp_matmul(a, b, accumulate="fp32", out_dtype=H16), ref)
    if not e16 > 4 * e32:
        raise AssertionError(f"fp16 accumulation's error {e16:.3e} is not 4x fp32's {e32:.3e}: no fp16 accumulator")


LP_EPILOGUES = {"bias": ("bias", True), "bias+GELU(erf)": ("gelu", True), "GELU(tanh), no bias": ("gelu_tanh", False),
                "bias+residual": ("residual", True), "no epilogue": (None, False)}  # name -> (epilogue, bias)
# (epilogue, out_dtype; None: the accumulation's default, float16 for fp16 and float32 for fp32)
LP_EPILOGUE_CASES = [("bias", None), ("bias+GELU(erf)", None), ("GELU(tanh), no bias", None), ("bias+residual", None),
                     ("no epilogue", F32)]
LP_EPILOGUE_CASES_SM90 = [("bias", None), ("bias+GELU(erf)", None), ("bias+residual", None), ("bias+GELU(erf)", H16)]


def lp_epilogue_check(device, M, K, N, accumulate, name, out_dtype, sm90):
    """The epilogues against the CPU emulation (test_lp_matmul.py, test_gemm_sm90.py): both within the
    accumulation's bound of the same sum, so apart by at most twice it plus the outputs' rounding; on the
    CPU lp_matmul_ref bit for bit (fp16 accumulation) or within that of fp32 sums in another order."""
    epilogue, with_bias = LP_EPILOGUES[name]
    g = torch.Generator().manual_seed(5)
    a = torch.randn(M, K, generator=g).half()
    b = (torch.randn(K, N, generator=g) / (K**0.5 if sm90 else 1)).half()
    bias, r = torch.randn(N, generator=g), torch.randn(M, N, generator=g)
    kw = dict(epilogue=epilogue, accumulate=accumulate, out_dtype=out_dtype, bias=bias if with_bias else None,
              residual=r if epilogue == "residual" else None)
    if device == "cpu":
        y, want = ops.lp_matmul(a, b, **kw), ops.lp_matmul_ref(a, b, **kw)
        if accumulate == "fp16":
            assert_same_bits(y, want, "the CPU emulation against lp_matmul_ref")
            return
    else:
        y = ops.lp_matmul(a.to(device), b.to(device),
                          **{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in kw.items()})
        want = ops.lp_matmul(a, b, **kw).to(device)  # the CPU emulation
        a, b = a.to(device), b.to(device)
    want = want.double()
    if sm90:  # same products; fp32 sums differ by order only, fp16 ones by their blocking (each within K u16 |a||b|)
        bound = (a.double().abs() @ b.double().abs()) * (K * U16 if accumulate == "fp16" else 1e-5)
        limit = 2 * bound + 4 * U16 * want.abs() + 1e-3
    else:
        limit = (2 * fp16_accumulation_bound(a, b) + 4 * U16 * want.abs() + 1e-3 if accumulate == "fp16"
                 else 4 * U16 * want.abs() + 1e-4)
    assert_within(y, want, limit, "against the CPU emulation")


def lp_cases(family, device, quick):
    sm90, cpu = family == "gemm_sm90", device == "cpu"
    shapes = LP_SHAPES_CPU if cpu else LP_SHAPES
    if quick:
        shapes = QUICK[family, "lp cpu" if cpu else "lp"]
    for M, K, N in shapes:
        if takes(family, H16, M, N, K, accumulate_fp16=True):
            yield (f"lp_matmul {_shape(M, K, N)} float16 fp16 accumulation, no epilogue, into float16 config=auto "
                   f"forward", lambda a=(device, M, K, N): lp_fp16_check(*a))
        for out_dtype in (F32, H16):
            if takes(family, H16, M, N, K, out_f32=out_dtype == F32) and not (quick and out_dtype == H16):
                yield (f"lp_matmul {_shape(M, K, N)} float16 fp32 accumulation, no epilogue, into {_dt(out_dtype)} "
                       f"config=auto forward", lambda a=(device, M, K, N, out_dtype): lp_fp32_check(*a))
    for n in (1, 8):  # 1 output: mma.sync alone; 8: the sm90 kernel where it runs
        if takes(family, H16, n, n, 1024, accumulate_fp16=True) and not (quick and sm90):
            yield (f"lp_matmul M={n} K=1024 N={n} float16 fp16 and fp32 accumulation of 2048 + 1s, no epilogue "
                   f"config=auto forward", lambda a=(device, n): lp_real_accumulator_check(*a))
    if quick:
        return
    shape = (16, 4096, 16) if cpu else (64, 4096, 64)
    if takes(family, H16, shape[0], shape[2], shape[1], accumulate_fp16=True):
        yield (f"lp_matmul {_shape(*shape)} float16 positive operands, fp16 against fp32 accumulation, no epilogue "
               f"config=auto forward", lambda a=(device, *shape): lp_positive_check(*a))
    shape = (33, 64, 40) if cpu else ((394, 768, 3072) if sm90 else (197, 384, 300))
    M, K, N = shape
    for accumulate in ("fp16", "fp32"):
        seen = set()
        for name, out_dtype in (LP_EPILOGUE_CASES_SM90 if sm90 else LP_EPILOGUE_CASES):
            out_dtype = out_dtype or (H16 if accumulate == "fp16" else F32)
            if (name, out_dtype) in seen or not takes(family, H16, M, N, K, accumulate == "fp16", out_dtype == F32):
                continue
            seen.add((name, out_dtype))
            yield (f"lp_matmul {_shape(M, K, N)} float16 {accumulate} accumulation, {name}, into {_dt(out_dtype)} "
                   f"config=auto forward, against the CPU emulation",
                   lambda a=(device, M, K, N, accumulate, name, out_dtype, sm90): lp_epilogue_check(*a))


# ---- fp8_linear

def fp8_codes(shape, seed, scale):
    """e4m3 codes of N(0, scale) values, made on the CPU (scaled_cast's CUDA kernel is another family's)."""
    g = torch.Generator().manual_seed(seed)
    return ops.scaled_cast(torch.randn(shape, generator=g) * scale, torch.ones(1), E4M3)


def fp8_operands(M, K, N, seed=0, residual=True):
    """test_fp8_linear.py's: x codes of N(0, 4), weight codes of N(0, 8), x's scale 2^-3, the weight's per
    output feature, an fp32 bias, a bf16 residual."""
    g = torch.Generator().manual_seed(seed + 1)
    x8, w8 = fp8_codes((M, K), seed, 4.0), fp8_codes((N, K), seed + 2, 8.0)
    sa = torch.tensor([2.0**-3])
    sb = torch.rand(N, generator=g) * 0.01 + 0.001
    bias = torch.randn(N, generator=g)
    res = torch.randn(M, N, generator=g).to(BF16) if residual else None
    return x8, w8, sa, sb, bias, res


def e4m3_step(t):
    """The spacing of e4m3 codes at |t|: 2^(e - 3), subnormals' 2^-9 below 2^-6."""
    return torch.exp2(torch.floor(torch.log2(t.abs().clamp_min(2.0**-6))) - 3)


@contextlib.contextmanager
def _kernel_only():
    """vitfast's warnings (the composite's "built for the FP8 chain's epilogues", a refused case) as errors:
    an fp8_linear case runs the kernel or fails (test_fp8_linear.py does the same)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="vitfast")
        yield


def fp8_check(device, M, K, N, activation, out_dtype, residual, config, bias="float32", scale_b="per channel",
              lead=None):
    """fp8_linear against fp8_linear_ref: on the GPU within the accumulation bound (and a bf16 or e4m3 step
    where the two sums round apart, rarely), the amax within the bound's largest; on the CPU bit for bit.
    lead: x's leading dimensions (their product M)."""
    x8, w8, sa, sb, b, r = fp8_operands(M, K, N, residual=residual)
    b = None if bias is None else b.to(getattr(torch, bias))
    if scale_b == "per tensor":
        sb = torch.full((N,), 0.004)
    if lead is not None:
        x8, r = x8.reshape(*lead, K), (None if r is None else r.reshape(*lead, N))
    x8, w8, sa, sb = (t.to(device) for t in (x8, w8, sa, sb))
    b, r = (None if t is None else t.to(device) for t in (b, r))
    out_scale = 2.0**-3
    kw = dict(residual=r, activation=activation, out_dtype=out_dtype, amax=True,
              out_scale=torch.tensor([out_scale], device=device) if out_dtype == E4M3 else None)
    with _kernel_only():
        out, m = ops.fp8_linear(x8, w8, sa, sb, b, config=config, **kw)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False  # the twin's products in fp32
        ref, mref = ops.fp8_linear_ref(x8, w8, sa, sb, b, **kw)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    if out.shape != ref.shape or out.dtype != ref.dtype:
        raise AssertionError(f"{tuple(out.shape)} {out.dtype} against {tuple(ref.shape)} {ref.dtype}")
    if device == "cpu":
        assert_same_bits(out, ref, "output against fp8_linear_ref")
        assert_same_bits(m, mref, "amax against fp8_linear_ref")
        return
    acc = fp8_accumulation_bound(x8, w8, sa, sb, config)  # that configuration's accumulation
    o, want = out.float().reshape(-1, N), ref.float().reshape(-1, N)
    if out_dtype == E4M3:  # codes: act(v) / out_scale rounded to nearest even
        assert_within(o, want, e4m3_step(torch.maximum(o.abs(), want.abs())) + acc / out_scale,
                      "e4m3 output against fp8_linear_ref")
        # rounding apart only near a boundary (truncation would part half): 1% of the codes where the
        # sum is promoted every 4 wgmma's, in proportion for the fast accumulation's longer sums
        most = 1e-2 * max(1, torch.ops.vitfast.fp8_promotion_interval(config, K) / 4)
        apart = (o != want).float().mean().item()
        if not apart < most:
            raise AssertionError(f"e4m3 output: {apart:.2%} of the codes differ from fp8_linear_ref's "
                                 f"(at most {most:.0%})")
    else:  # one bf16 step where the two sums round apart
        assert_within(o, want, want.abs() * 2**-7 + acc, "bf16 output against fp8_linear_ref")
    assert_within(m, mref, acc.max().item(), "amax against fp8_linear_ref's")


def fp8_saturation_check(device):
    """GELU(448) / 0.5 saturates to 448, NaN stays NaN and makes the amax NaN (test_fp8_linear.py's, through
    GELU into e4m3: the kernels hold no activation-free e4m3 output, whose case is the composite's)."""
    one = torch.ones(1)
    x8 = ops.scaled_cast(torch.tensor([[1.0] + [0.0] * 15, [float("nan")] + [0.0] * 15]), one, E4M3).to(device)
    w8 = ops.scaled_cast(torch.tensor([[448.0] + [0.0] * 15] * 16), one, E4M3).to(device)
    one, ones = one.to(device), torch.ones(16, device=device)
    with _kernel_only():
        out, m = ops.fp8_linear(x8, w8, one, ones, activation="gelu", out_dtype=E4M3,
                                out_scale=torch.tensor([0.5], device=device), amax=True)
        if not (bool((out[0].float() == 448).all()) and bool(out[1].float().isnan().all()) and bool(m.isnan().all())):
            raise AssertionError(f"row 0 {out[0].float().tolist()[:4]} (448s), row 1 {out[1].float().tolist()[:4]} "
                                 f"(NaNs), amax {m.item()} (NaN)")
        _, m = ops.fp8_linear(x8[:1], w8, one, ones, amax=True)
    if m.item() != 448.0:
        raise AssertionError(f"amax {m.item()} where the largest output is 448")


def fp8_ties_check(device):
    """Ties round to even: GELU(v) = v exactly in fp32 for v >= 6, and 8.5 lies halfway between e4m3's 8 and 9
    (even: 8), 9.5 between 9 and 10 (even: 10); 8.75 rounds to 9 (test_fp8_linear.py's case, through GELU)."""
    one = torch.ones(1)
    x8 = ops.scaled_cast(torch.ones(1, 16), one, E4M3).to(device)
    w = torch.zeros(16, 16)
    w[:4, 0] = 1.0
    w8 = ops.scaled_cast(w, one, E4M3).to(device)
    sb = torch.ones(16)
    sb[:4] = torch.tensor([8.0, 8.5, 9.5, 8.75])  # v = 1 x 1 x sb[n]: exact
    with _kernel_only():
        out = ops.fp8_linear(x8, w8, one.to(device), sb.to(device), activation="gelu", out_dtype=E4M3,
                             out_scale=one.to(device))
    got = out[0, :4].float().tolist()
    if got != [8.0, 8.0, 10.0, 9.0]:
        raise AssertionError(f"{got} where ties round to even: [8.0, 8.0, 10.0, 9.0]")


def fp8_kind(activation, out_dtype, residual):
    return ("fp8_residual" if residual else "fp8_act" if out_dtype != E4M3
            else "fp8_act_e4m3_tanh" if activation == "gelu_tanh" else "fp8_act_e4m3")


def _fp8_name(M, K, N, activation, out_dtype, residual, config, bias="float32", scale_b="per channel", lead=None):
    shape = f"x {'x'.join(map(str, lead))}x{K} N={N}" if lead else _shape(M, K, N)
    epi = "+residual" if residual else {"none": "", "gelu": "+GELU(erf)", "gelu_tanh": "+GELU(tanh)"}[activation]
    return (f"fp8_linear {shape} float8_e4m3fn into {_dt(out_dtype)} bias={bias}{epi} scale_b {scale_b} amax "
            f"config={config} forward")


def fp8_cases(device, quick):
    shapes = FP8_SHAPES_CPU if device == "cpu" else FP8_SHAPES
    if quick:
        shapes = QUICK["fp8_gemm_sm90", "fp8 cpu" if device == "cpu" else "fp8"]
    for M, K, N in shapes:
        for activation, out_dtype, residual in FP8_EPILOGUES:
            for config in ["auto", *torch.ops.vitfast.sm90_configs(fp8_kind(activation, out_dtype, residual))]:
                if device != "cpu" and torch.ops.vitfast.fp8_path(9, 0, M, N, K, sm90_built=True) != "sm90":
                    continue
                args = (M, K, N, activation, out_dtype, residual, config)
                yield _fp8_name(*args), (lambda a=(device, *args): fp8_check(*a))
    yield ("fp8_linear M=2 K=16 N=16 float8_e4m3fn into float8_e4m3fn (+GELU) and bfloat16, saturation and NaN, "
           "amax config=auto forward", lambda d=device: fp8_saturation_check(d))
    if quick:
        return
    yield ("fp8_linear M=1 K=16 N=16 float8_e4m3fn into float8_e4m3fn +GELU(erf), ties to even config=auto forward",
           lambda d=device: fp8_ties_check(d))
    cpu = device == "cpu"
    variants = [  # (M, K, N, activation, out_dtype, residual, config, bias, scale_b, lead)
        (*((37, 48, 32) if cpu else (77, 208, 48)), "none", BF16, False, "auto", None, "per channel", None),
        (*((37, 48, 32) if cpu else (77, 208, 48)), "gelu", E4M3, False, "auto", "bfloat16", "per channel", None),
        (*((37, 48, 32) if cpu else (50, 192, 576)), "none", BF16, True, "auto", "float32", "per tensor", None),
        (*((6, 32, 16) if cpu else (394, 768, 768)), "none", BF16, False, "auto", "float32", "per channel",
         (2, 3) if cpu else (2, 197)),
    ]
    if not cpu:  # ViT-B/16 at batch 256: fc1 + GELU into e4m3, fc2 + residual
        variants += [(256 * 197, 768, 3072, "gelu", E4M3, False, "auto", "float32", "per channel", None),
                     (256 * 197, 3072, 768, "none", BF16, True, "auto", "float32", "per channel", None)]
    for args in variants:
        yield _fp8_name(*args), (lambda a=(device, *args): fp8_check(*a))


# ---- gelu_grad_bias: linear_gelu's backward pass (gemm_mma's kernel linear_gelu_backward_kernels.cu)

# (M, N): ViT-B's fc1 rows at batch 8, a ragged last block of rows, one row, the 16-byte minimum of each
# dtype's row (8 fp16/bf16, 4 float32), N off the 256-column strips, M past a row block
GELU_GRAD_SHAPES = [(8 * 197, 3072), (200, 1000), (1, 8), (129, 264), (300, 4)]
GELU_GRAD_SHAPES_CPU = [(37, 64), (1, 8), (9, 4)]


def gelu_grad_check(device, M, N, dtype, approximate):
    """dpre against ATen's gelu_backward bit for bit (the same formula in float, rounded once; one unit
    of the dtype apart on at most 1 in 1,000 outputs, where the two compilers contract differently), and
    the bias gradient against the float64 sum of that dpre within fp32 accumulation and one rounding."""
    g = torch.Generator().manual_seed(M * 31 + N)
    dout = torch.randn(M, N, generator=g).to(device, dtype)
    pre = (torch.randn(M, N, generator=g) * 3).to(device, dtype)
    dpre, dbias = torch.ops.vitfast.gelu_grad_bias(dout, pre, approximate, True)
    want = torch.ops.aten.gelu_backward(dout, pre, approximate=approximate)
    if device == "cpu":
        assert_same_bits(dpre, want, "dpre against ATen's gelu_backward")
    else:
        step = torch.finfo(dtype).eps * want.float().abs().clamp_min(torch.finfo(dtype).tiny)
        apart = (dpre.float() - want.float()).abs()
        if not ((apart <= step).all() and (apart > 0).float().mean() <= 1e-3):
            raise AssertionError(f"dpre against ATen's gelu_backward: {(apart > step).sum().item()} outputs more than "
                                 f"a unit apart, {(apart > 0).sum().item()} differ")
    exact = dpre.double().sum(0)
    limit = torch.finfo(dtype).eps * exact.abs() + M * 2.0**-24 * dpre.double().abs().sum(0) + 1e-30
    if not ((dbias.double() - exact).abs() <= limit).all():
        raise AssertionError(f"bias gradient off the sum of dpre by {(dbias.double() - exact).abs().max().item():.3g}")
    empty = torch.ops.vitfast.gelu_grad_bias(dout, pre, approximate, False)[1]
    assert empty.numel() == 0, "no bias gradient asked, one returned"


def gelu_grad_cases(device, quick):
    shapes = GELU_GRAD_SHAPES_CPU if device == "cpu" else GELU_GRAD_SHAPES
    for M, N in shapes[:2] if quick else shapes:
        for dtype in (BF16, H16, F32):
            if N * torch.tensor([], dtype=dtype).element_size() % 16:
                continue
            for approximate in ("none", "tanh"):
                yield (f"gelu_grad_bias M={M} N={N} {_dt(dtype)} GELU({approximate}) gradient and bias gradient",
                       (lambda a=(device, M, N, dtype, approximate): gelu_grad_check(*a)))


def cases(family, device, quick=False):
    """(name, check) pairs of `family` on `device`."""
    if family == "fp8_gemm_sm90":
        yield from fp8_cases(device, quick)
        return
    yield from linear_cases(family, device, quick)
    if family == "gemm_mma":
        yield from gelu_grad_cases(device, quick)
    if family == "gemm_sm90":
        yield from config_cases(device, quick)
    yield from lp_cases(family, device, quick)
