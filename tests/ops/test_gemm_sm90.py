"""The Hopper GEMMs (csrc/gemm/sm90/, CUTLASS TMA + wgmma) behind linear_gelu, linear_residual and
lp_matmul: which path each case takes (gemm_path.h, asked on any machine), which configuration (tile,
cluster, schedule: sm90_config.h) runs a shape, what each kernel refuses before its launch, the HGMMA
instructions of every configuration in the built binary (cuobjdump, no GPU needed), and on an H100/H200
the results of every configuration against float64 within 2x PyTorch's error, with the kernels seen
running in the profiler."""
import re

import pytest
import torch
import torch.nn.functional as F

import vitfast
from vitfast.ops import linear_gelu, linear_gelu_ref, linear_residual, linear_residual_ref, lp_matmul
from tests.ops.precision import assert_2x_torch
from tests.values import sm90_kernels_sass

path = torch.ops.vitfast.gemm_path
H16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
VIT = [(192, 768), (768, 192), (384, 1536), (1536, 384), (768, 3072), (3072, 768), (1024, 4096), (4096, 1024),
       (1280, 5120), (5120, 1280), (768, 2304), (384, 1152)]  # (K, N) of fc1, fc2 and qkv at ViT widths


@pytest.mark.parametrize("K,N", VIT)
@pytest.mark.parametrize("dtype", [H16, BF16])
def test_vit_shapes_take_the_sm90_kernels_on_a_hopper_gpu(K, N, dtype):
    M = 256 * 197
    assert path(9, 0, dtype, M, N, K, sm90_built=True) == "sm90"
    if dtype == H16:
        assert path(9, 0, dtype, M, N, K, accumulate_fp16=True, sm90_built=True) == "sm90"
    for major, minor in [(8, 0), (8, 6), (8, 9), (10, 0), (12, 0)]:  # sm_90a code runs on 9.0 alone
        assert path(major, minor, dtype, M, N, K, sm90_built=True) == "mma_sync"
    assert path(9, 0, dtype, M, N, K, sm90_built=False) == "mma_sync"


@pytest.mark.parametrize("case,expected", [
    (dict(dtype=F32), "aten"),  # linear_gelu / linear_residual on fp32: ATen's ops
    (dict(K=100), "aten"),  # K % 8: no 16-byte rows for cp.async or TMA
    (dict(K=0), "aten"),
    (dict(dtype=BF16, accumulate_fp16=True), "aten"),  # an fp16 accumulator takes fp16 operands only
    (dict(N=1000), "sm90"),
    (dict(N=1001), "mma_sync"),  # an output row of 2002 bytes: no TMA store
    (dict(N=12), "mma_sync"),
    (dict(K=56), "mma_sync"),  # shorter than one k-tile of 64
    (dict(K=64), "sm90"),
    (dict(out_f32=True), "sm90"),  # fp32 outputs: lp_matmul FP16_32's default, an fp32 residual stream
    (dict(dtype=H16, out_f32=True, accumulate_fp16=True), "mma_sync"),  # FP16_16 into float32: no such kernel
    (dict(M=1), "sm90"),
    (dict(M=2**31), "mma_sync"),  # CUTLASS's problem shape is int
])
def test_edge_cases_go_where_the_kernels_take_them(case, expected):
    args = dict(major=9, minor=0, dtype=BF16, M=50432, N=768, K=3072, sm90_built=True) | case
    assert path(args.pop("major"), args.pop("minor"), args.pop("dtype"), args.pop("M"), args.pop("N"),
                args.pop("K"), **args) == expected


# ---- configurations (sm90_config.h): the default per shape class, explicit requests, what is built

config = torch.ops.vitfast.sm90_config
KINDS = ["act", "act_tanh", "act_aux", "act_aux_tanh", "residual", "residual_f32", "fp16_acc_act", "fp16_acc_residual",
         "fp32_acc_act", "fp32_output"]
M_B256 = 256 * 197  # ViT at batch 256


@pytest.mark.parametrize("kind,M,N,gelu,expected", [
    # fc1 + GELU: the cooperative tiles that beat ping-pong 2.6x on the H100 (2026-11-24), 128x192 where N
    # is a multiple of 192 (0.830 ms at ViT-B against 0.850 for 128x128)
    ("act", M_B256, 3072, True, "coop_128x192"),
    ("act", M_B256, 1536, True, "coop_128x192"),
    ("act", M_B256, 1024, True, "coop_128x128"),  # not a multiple of 192
    ("act_aux", M_B256, 3072, True, "coop_128x128"),  # 128x192 is not built to store the pre-activation
    ("act_tanh", M_B256, 3072, True, "coop_128x128"),
    ("residual", M_B256, 768, False, "coop_128x256_2x1"),  # fc2 / proj at ViT-B
    ("residual", M_B256, 1280, False, "coop_128x256_2x1"),  # ViT-H
    ("residual", M_B256, 192, False, "coop_128x192"),  # ViT-Ti
    ("residual", M_B256, 576, False, "coop_128x192"),  # 4.5 tiles of 128, 3 of 192
    ("residual", M_B256, 384, False, "coop_128x128"),  # ViT-S: 3 tiles of 128
    ("residual_f32", M_B256, 192, False, "coop_128x192"),
    ("residual", 8 * 197, 768, False, "pingpong_64x128"),  # batch 8: 78 tiles of 128x128 for 132 SMs
    ("act", 8 * 197, 3072, True, "coop_128x192"),  # 312 tiles: enough
    ("act", 2 * 197, 3072, True, "pingpong_64x128"),  # 96 tiles
    ("act_aux", 2 * 197, 3072, True, "coop_128x128"),  # no small-M kernel stores the pre-activation
    ("residual_f32", 8 * 197, 768, False, "coop_128x256_2x1"),
    ("fp16_acc_act", M_B256, 3072, True, "coop_128x128"),  # lp_matmul's kernels: one configuration
    ("fp16_acc_residual", 8, 768, False, "coop_128x128"),
    ("fp32_acc_act", M_B256, 2304, False, "coop_128x128"),
    ("fp32_output", M_B256, 2304, False, "coop_128x128"),
])
def test_the_default_configuration_per_shape_class(kind, M, N, gelu, expected):
    assert config(kind, M, N, gelu) == expected


def test_the_small_m_rule_follows_the_sm_count():
    assert config("residual", 8 * 197, 768, sms=132) == "pingpong_64x128"
    assert config("residual", 8 * 197, 768, sms=64) == "coop_128x256_2x1"  # 78 tiles fill 64 SMs


@pytest.mark.parametrize("kind", KINDS)
def test_an_explicit_configuration_is_taken_as_asked(kind):
    for name in torch.ops.vitfast.sm90_configs(kind):
        assert config(kind, M_B256, 768, True, name) == name


def test_the_built_configurations():
    """What the dispatch can choose (csrc/gemm/sm90_config.h): tanh GELU and lp_matmul's kernels in the
    general tile alone."""
    built = {k: torch.ops.vitfast.sm90_configs(k) for k in KINDS}
    assert built["act"] == ["coop_128x128", "pingpong_128x128_2x1", "coop_128x256_2x1", "coop_128x192",
                            "pingpong_64x128", "pingpong_128x128_2x1_epi64x64", "pingpong_128x128_2x1_epi64x128"]
    assert built["act_aux"] == ["coop_128x128", "pingpong_128x128_2x1", "coop_128x256_2x1",
                                "pingpong_128x128_2x1_epi64x128"]
    assert built["residual"] == ["coop_128x128", "coop_128x256_2x1", "coop_128x192", "pingpong_64x128"]
    assert built["residual_f32"] == ["coop_128x128", "coop_128x256_2x1", "coop_128x192"]
    for kind in ("act_tanh", "act_aux_tanh", "fp16_acc_act", "fp16_acc_residual", "fp32_acc_act", "fp32_output"):
        assert built[kind] == ["coop_128x128"], kind


@pytest.mark.parametrize("kind,name,message", [
    ("act", "coop_256x128", "config must be one of 'auto', 'coop_128x128'"),
    ("act_aux", "coop_128x192", "config 'coop_128x192' is not built for GELU storing the pre-activation; "
                                "built: 'auto', 'coop_128x128', 'pingpong_128x128_2x1', 'coop_128x256_2x1', "
                                "'pingpong_128x128_2x1_epi64x128'"),
    ("residual_f32", "pingpong_64x128", "is not built for the residual epilogue into float32"),
    ("act_tanh", "coop_128x192", "is not built for tanh GELU"),
    ("gelu", "auto", "kind must be one of act, act_tanh, act_aux"),
])
def test_a_configuration_that_is_not_built_is_refused_in_one_line(kind, name, message):
    with pytest.raises(RuntimeError, match=re.escape(message)):
        config(kind, M_B256, 768, True, name)


# ---- what each kernel refuses before its launch (gemm_path.h: sm90_refusal, mma_sync_refusal)

refusal = torch.ops.vitfast.gemm_refusal
A, B, OUT, RES, PRE, BIAS = 0x10000, 0x20000, 0x30000, 0x40000, 0x50000, 0x60000  # 16-byte aligned addresses


def test_aligned_tensors_are_taken_by_both_kernels():
    for path in ("sm90", "mma_sync"):
        assert refusal(path, M_B256, 768, 3072, A, B, OUT, residual=RES, bias=BIAS) is None
        assert refusal(path, M_B256, 3072, 768, A, B, OUT, pre=PRE, bias=BIAS) is None
        assert refusal(path, M_B256, 768, 3072, A, B, OUT, residual=RES, out_f32=True) is None


@pytest.mark.parametrize("case,reason", [
    (dict(a=A + 8), "a is not 16-byte aligned"),  # a view 4 bf16 elements into its storage
    (dict(b=B + 2), "b (the weight) is not 16-byte aligned"),
    (dict(out=OUT + 8), "the output is not 16-byte aligned"),
    (dict(residual=RES + 4), "the residual is not 16-byte aligned"),
    (dict(pre=PRE + 8), "the pre-activation output is not 16-byte aligned"),
    (dict(bias=BIAS + 4), "the bias is not 16-byte aligned"),  # read in 16-byte vectors by the epilogue
    (dict(K=100), "rows of a and b are not a multiple of 16 bytes (K)"),  # a TMA stride of 200 bytes
    (dict(N=1001), "rows of the output are not a multiple of 16 bytes (N)"),
    (dict(M=0), "M, N and K must lie in [1, 2^31)"),
    (dict(M=2**31), "M, N and K must lie in [1, 2^31)"),  # TMA's sizes and CUTLASS's int problem shape
])
def test_each_sm90_refusal(case, reason):
    args = dict(M=M_B256, N=768, K=3072, a=A, b=B, out=OUT, residual=RES, pre=None, bias=BIAS) | case
    if "pre" in case:
        args["residual"] = None
    assert refusal("sm90", **args) == reason


@pytest.mark.parametrize("case,reason", [
    (dict(a=A + 8), "a is not 16-byte aligned"),  # cp.async moves 16-byte chunks
    (dict(b=B + 8), "b (the weight) is not 16-byte aligned"),
    (dict(K=100), "K is not a multiple of 8"),
    (dict(out=OUT + 2), "the output is not aligned to a pair of elements"),
])
def test_each_mma_sync_refusal(case, reason):
    args = dict(M=1000, N=768, K=3072, a=A, b=B, out=OUT) | case
    assert refusal("mma_sync", **args) == reason


def test_mma_sync_takes_what_only_tma_refuses():
    # the mma.sync kernel reads the residual and bias per element and writes pairs: 4-byte alignment is enough
    assert refusal("mma_sync", 1000, 768, 3072, A, B, OUT + 4, residual=RES + 2, bias=BIAS + 4) is None
    assert refusal("sm90", 1000, 768, 3072, A, B, OUT + 4, residual=RES + 2, bias=BIAS + 4) is not None


def test_the_build_default_is_this_build():
    built = torch.ops.vitfast.sm90_kernels_built()
    assert path(9, 0, BF16, 4096, 768, 768) == ("sm90" if built else "mma_sync")


# ---- SASS of the built binary (cuobjdump runs without a GPU)

@pytest.fixture(scope="module")
def sm90_sass():
    # fp8_linear's kernels (float_e4m3 operands): tests/ops/test_fp8_linear.py
    kernels = sm90_kernels_sass(lambda name: "GemmUniversal" in name and "float_e4m3" not in name)
    if kernels is None:
        pytest.skip("needs cuobjdump and a build with the sm90 kernels (CUTLASS headers, 90 in VITFAST_CUDA_ARCHS)")
    return kernels


def hgmma(body):
    return re.findall(r"HGMMA\.(\d+x\d+x\d+)\.(\w+)(?:\.(\w+))?", body)


# Kernels per built configuration of a kind: linear_gelu's and linear_residual's six kinds in bf16 and
# fp16 (one epilogue each); lp_matmul's (fp16 operands) with no activation or GELU, or the residual.
PER_CONFIG = {**{k: 2 for k in KINDS[:6]}, "fp16_acc_act": 2, "fp16_acc_residual": 1, "fp32_acc_act": 2,
              "fp32_output": 2}


def test_the_sm90_kernels_issue_hgmma(sm90_sass):
    two_dtypes = sum(len(torch.ops.vitfast.sm90_configs(k)) for k in KINDS[:6])
    assert two_dtypes == 20 and len(sm90_sass) == 2 * two_dtypes + 7, list(sm90_sass)
    for name, body in sm90_sass.items():
        assert hgmma(body), f"no HGMMA in {name[:120]}"
        assert "HMMA" not in body.replace("HGMMA", ""), "an mma.sync instruction in a wgmma kernel"
        assert "UTMALDG" in body, "the operands are not loaded by TMA"


def signature(name, body):
    """(schedule, HGMMA shapes, TMA loads multicast?, pieces the epilogue stores a tile in): what tells
    the configurations apart in the SASS. Each piece is two barriers of the threads that store it (one
    before its registers go to shared memory, one before its TMA store), the mainloop two of its own."""
    schedule = "pingpong" if "Pingpong" in name else "coop" if "Cooperative" in name else "?"
    pieces = (len(re.findall(r"\bBAR\.", body)) - 2) // 2
    return schedule, tuple(sorted({s for s, _, _ in hgmma(body)})), "UTMALDG.3D.MULTICAST" in body, pieces


# A 2x1 cluster multicasts each weight tile to both CTAs; a warpgroup's wgmma is 64 rows high. CUTLASS
# stores a 16-bit tile in pieces of 64x32 per warpgroup (ping-pong) or 128x32 (cooperative).
SIGNATURES = {
    "coop_128x128": ("coop", ("64x128x16",), False, 4),
    "pingpong_128x128_2x1": ("pingpong", ("64x128x16",), True, 8),
    "coop_128x256_2x1": ("coop", ("64x256x16",), True, 8),
    "coop_128x192": ("coop", ("64x192x16",), False, 6),
    "pingpong_64x128": ("pingpong", ("64x128x16",), False, 4),
    "pingpong_128x128_2x1_epi64x64": ("pingpong", ("64x128x16",), True, 4),
    "pingpong_128x128_2x1_epi64x128": ("pingpong", ("64x128x16",), True, 2),
}


def test_each_configuration_is_built_as_named(sm90_sass):
    expected = {}
    for kind in KINDS:
        for name in torch.ops.vitfast.sm90_configs(kind):
            expected[SIGNATURES[name]] = expected.get(SIGNATURES[name], 0) + PER_CONFIG[kind]
    found = {}
    for name, body in sm90_sass.items():
        found[signature(name, body)] = found.get(signature(name, body), 0) + 1
    assert found == expected


def epilogue_of(name):
    """What a kernel's epilogue was compiled to do, from its mangled name (gemm_sm90.cuh's trees)."""
    m = re.search(r"Gelu(?:Aux)?ILb([01])E", name)  # Gelu<tanh?, Round> or the aux operation BiasGeluAux<tanh?, ...>
    gelu = ("erf", "tanh")[int(m.group(1))] if m else None
    return ("aux-" if "BiasGeluAux" in name else "") + (gelu or ("residual" if "Sm90SrcFetch" in name else "none"))


def test_each_epilogue_is_compiled_for_its_activation_alone(sm90_sass):
    """No run-time activation switch: an identity or residual epilogue holds no MUFU at all, exact GELU
    only erff's exponentials (MUFU.EX2), tanh GELU only tanh.approx (MUFU.TANH); none keeps CUTLASS's
    alpha / beta nodes (LinComb)."""
    seen = set()
    for name, body in sm90_sass.items():
        epi = epilogue_of(name)
        seen.add(epi)
        mufu = set(re.findall(r"MUFU\.(\w+)", body))
        assert mufu == {"none": set(), "residual": set(), "erf": {"EX2"}, "tanh": {"TANH"}}[epi.removeprefix("aux-")], \
            (epi, mufu, name[:160])
        assert "LinComb" not in name and "homogeneous_multiply_add" not in name, name[:160]
        assert "10ActivationE" not in name  # the old run-time functor
    assert seen == {"none", "residual", "erf", "tanh", "aux-erf", "aux-tanh"}


def test_fp16_16_kernels_accumulate_in_fp16_and_the_others_in_fp32(sm90_sass):
    kinds = {}
    for name, body in sm90_sass.items():
        acc = {a for _, a, _ in hgmma(body)}
        kind = "F16F16F16" if "F16F16F16" in name else "F32BF16BF16" if "F32BF16BF16" in name else "F32F16F16"
        kinds.setdefault(kind, set()).update(acc)
    # HGMMA.64x128x16.F16 sums into fp16 registers; .F32 into fp32 ones
    assert kinds == {"F16F16F16": {"F16"}, "F32F16F16": {"F32"}, "F32BF16BF16": {"F32"}}, kinds


# ---- on an H100 / H200

hopper = pytest.mark.skipif(
    not (torch.cuda.is_available() and vitfast.has_cuda_kernels() and torch.ops.vitfast.sm90_kernels_built()
         and torch.cuda.get_device_capability() == (9, 0)),
    reason="needs an H100/H200 (compute capability 9.0) and a build with the sm90 kernels")


def ran_cutlass(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = fn()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return out, any("cutlass" in n and "GemmUniversal" in n for n in names)


def operands(M, K, N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed + M + 7 * K + 13 * N)
    x = torch.randn(M, K, generator=g).to("cuda", dtype)
    w = (torch.randn(N, K, generator=g) / K**0.5).to("cuda", dtype)
    b = torch.randn(N, generator=g).to("cuda", dtype)
    r = torch.randn(M, N, generator=g).to("cuda", dtype)
    return x, w, b, r


@hopper
@pytest.mark.parametrize("dtype", [H16, BF16], ids=str)
@pytest.mark.parametrize("K,N", [(192, 768), (768, 192), (384, 1536), (768, 3072), (3072, 768), (1280, 5120),
                                 (64, 1000)])
def test_sm90_linear_gelu_and_residual_within_2x_torch(K, N, dtype):
    M = 1576  # 8 images of 197 tokens: 12.3 tiles of 128 rows, a ragged last tile
    x, w, b, r = operands(M, K, N, dtype)
    for approximate in ("none", "tanh"):
        out, cutlass = ran_cutlass(lambda: linear_gelu(x, w, b, approximate))
        assert cutlass
        # tanh GELU runs on tanh.approx.f32 (relative error <= 2^-10.99): 0.5 |v| 2^-10.99 more, relative to
        # |GELU(v)| >= |v| / 2 where it matters (v > 0), at most 2^-10.99 of the result
        assert_2x_torch(out, F.gelu(F.linear(x, w, b), approximate=approximate),
                        linear_gelu_ref(x.double(), w.double(), b.double(), approximate), what=f"gelu {approximate}",
                        floor=2e-6 if approximate == "none" else 2.0**-10.99)
    out, cutlass = ran_cutlass(lambda: linear_residual(x, w, b, r))
    assert cutlass
    assert_2x_torch(out, F.linear(x, w, b) + r, linear_residual_ref(x.double(), w.double(), b.double(), r.double()))
    out, _ = ran_cutlass(lambda: linear_residual(x, w, None, r))
    assert_2x_torch(out, F.linear(x, w) + r, linear_residual_ref(x.double(), w.double(), None, r.double()))
    r32 = r.float()  # the fp32 residual stream of autocast training: one rounding, into float32
    out, cutlass = ran_cutlass(lambda: linear_residual(x, w, b, r32))
    assert cutlass and out.dtype == torch.float32
    assert_2x_torch(out, F.linear(x, w, b).float() + r32,
                    linear_residual_ref(x.double(), w.double(), b.double(), r32.double()))


@hopper
def test_sm90_saved_pre_activation_is_the_rounded_linear_and_gelu_reads_it():
    x, w, b, _ = operands(1000, 768, 3072, BF16)
    (out, pre), cutlass = ran_cutlass(lambda: torch.ops.vitfast.linear_gelu(x, w, b, "none", True))
    assert cutlass
    lin = F.linear(x.float(), w.float(), b.float())
    assert (pre.float() - lin).abs().max() <= 2**-7 * lin.abs().max()
    # GELU of the stored (rounded) pre-activation, one rounding: erff and PyTorch's erf may differ by an fp32 ulp
    torch.testing.assert_close(out.float(), F.gelu(pre.float()).bfloat16().float(), atol=1e-6, rtol=2**-7)
    torch.testing.assert_close(torch.ops.vitfast.linear_gelu(x, w, b, "none", False)[0], out, atol=0, rtol=0)


@hopper
@pytest.mark.parametrize("accumulate", ["fp16", "fp32"])
def test_sm90_lp_matmul_epilogues_match_the_cpu_emulation(accumulate):
    g = torch.Generator().manual_seed(5)
    a = torch.randn(394, 768, generator=g).half()
    b = (torch.randn(768, 3072, generator=g) / 768**0.5).half()
    bias, r = torch.randn(3072, generator=g), torch.randn(394, 3072, generator=g).half()
    out16 = dict(out_dtype=torch.float16)  # FP16_32's default output is float32, FP16_16's fp16: both
    for kw in (dict(bias=bias, epilogue="bias"), dict(bias=bias, epilogue="gelu"), dict(epilogue="gelu_tanh"),
               dict(bias=bias, epilogue="residual", residual=r), dict(bias=bias, epilogue="gelu", **out16)):
        if accumulate == "fp32" and kw.get("epilogue") == "residual":
            kw["residual"] = r.float()  # the residual comes in the output's dtype
        gpu = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in kw.items()}
        y, cutlass = ran_cutlass(lambda: lp_matmul(a.cuda(), b.cuda(), accumulate=accumulate, **gpu))
        # mma.sync runs tanh GELU (no sm90 kernel built) and FP16_32's residual with a bias: the sm90 residual
        # kernels read their bias in the operands' dtype (linear_residual's), lp_matmul adds a float32 one
        mma = kw.get("epilogue") == "gelu_tanh" or (accumulate == "fp32" and kw.get("epilogue") == "residual")
        assert cutlass == (not mma), kw
        cpu = lp_matmul(a, b, accumulate=accumulate, **kw).double()
        u16 = 2.0**-11
        # same products; fp32 sums differ by order only, fp16 ones by their blocking (each within K u16 |a||b|)
        bound = (a.double().abs() @ b.double().abs()) * (768 * u16 if accumulate == "fp16" else 1e-5)
        lim = 2 * bound + 4 * u16 * cpu.abs() + 1e-3
        assert bool(((y.cpu().double() - cpu).abs() <= lim).all()), kw


@hopper
@pytest.mark.parametrize("dtype", [H16, BF16], ids=str)
@pytest.mark.parametrize("kind", ["act", "act_aux"])
def test_sm90_exact_gelu_of_every_16_bit_input(kind, dtype):
    """gelu_poly.h through the kernels, on every 16-bit value: row i of x holds value i in its first column
    and zeros elsewhere, the weight's first column is ones, so each output row is GELU(value i). Within
    one unit of the correctly rounded GELU above the cut (-5.5), -0 below it; against torch's CUDA F.gelu
    within one unit above -3.5 (below, torch's float32 1 + erf cancels: tests/ops/test_gelu_poly.py)."""
    from tests.ops.test_gelu_poly import OFF_BY_ONE, every, exact, ulps

    v = every(dtype).cuda()
    x = torch.zeros(v.numel(), 64, dtype=dtype, device="cuda")
    x[:, 0] = v
    w = torch.zeros(128, 64, dtype=dtype, device="cuda")
    w[:, 0] = 1
    for name in torch.ops.vitfast.sm90_configs(kind):
        (out, _), ran = ran_schedules(lambda: torch.ops.vitfast.linear_gelu(x, w, None, "none", kind == "act_aux", name))
        assert ran == {name.split("_")[0]}, (name, ran)
        assert torch.equal(out[:, :1].expand_as(out).nan_to_num(), out.nan_to_num()), name  # NaN rows too
        ours, vf = out[:, 0].cpu(), v.float().cpu()
        finite = vf.isfinite()
        d = ulps(ours, exact(v.cpu(), dtype))[finite]
        above = vf[finite] >= -5.5
        assert d[above].max() <= 1 and int((d[above] == 1).sum()) <= OFF_BY_ONE[dtype], (name, int((d[above] == 1).sum()))
        assert (ours.float()[finite][~above] == 0).all(), name
        torch_gelu = F.gelu(v.float()).to(dtype).cpu()
        near = finite & (vf >= -3.5) & (vf.abs() < 1e38)
        assert ulps(ours, torch_gelu)[near].max() <= 1, name
        assert ours.float()[vf == float("inf")].eq(float("inf")).all() and ours.float()[vf.isnan()].isnan().all(), name


def ran_schedules(fn):
    """fn()'s result and the schedules ("pingpong" / "coop") of the CUTLASS kernels it ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = fn()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and "GemmUniversal" in e.name]
    return out, {"pingpong" if "Pingpong" in n else "coop" for n in names}


@hopper
@pytest.mark.parametrize("dtype", [H16, BF16], ids=str)
@pytest.mark.parametrize("kind", ["act", "act_tanh", "act_aux", "act_aux_tanh", "residual", "residual_f32"])
@pytest.mark.parametrize("M,K,N", [(1576, 768, 768), (333, 192, 576), (1000, 64, 1000), (4100, 384, 1152)])
def test_every_configuration_within_2x_torch(kind, M, K, N, dtype):
    # ragged last tiles in M (333, 1000, 4100 rows) and in N for every tile width (576 / 128, 1000 / 192 and / 256);
    # each GELU kind in the configurations built for it (tanh GELU in coop_128x128 alone)
    x, w, b, r = operands(M, K, N, dtype)
    for name in torch.ops.vitfast.sm90_configs(kind):
        if kind.startswith("act"):
            approximate = "tanh" if kind.endswith("tanh") else "none"
            (out, pre), ran = ran_schedules(
                lambda: torch.ops.vitfast.linear_gelu(x, w, b, approximate, "aux" in kind, name))
            assert_2x_torch(out, F.gelu(F.linear(x, w, b), approximate=approximate),
                            linear_gelu_ref(x.double(), w.double(), b.double(), approximate), what=name,
                            floor=2e-6 if approximate == "none" else 2.0**-10.99)  # tanh.approx.f32: as above
            if "aux" in kind:  # the stored pre-activation: the linear within one rounding of the largest
                lin = F.linear(x.float(), w.float(), b.float())
                assert (pre.float() - lin).abs().max() <= 2**-7 * lin.abs().max(), name
        else:
            res = r.float() if kind == "residual_f32" else r
            out, ran = ran_schedules(lambda: linear_residual(x, w, b, res, config=name))
            assert out.dtype == res.dtype
            assert_2x_torch(out, F.linear(x, w, b).to(res.dtype) + res,
                            linear_residual_ref(x.double(), w.double(), b.double(), res.double()), what=name)
        assert ran == {name.split("_")[0]}, (name, ran)


@hopper
def test_the_default_configuration_is_the_one_that_runs():
    x, w, b, r = operands(8 * 197, 768, 768, BF16)  # batch 8: pingpong_64x128 by default
    _, ran = ran_schedules(lambda: linear_residual(x, w, b, r))
    assert ran == {"pingpong"}
    x, w, b, r = operands(4096, 768, 768, BF16)  # 192 tiles: coop_128x256_2x1
    _, ran = ran_schedules(lambda: linear_residual(x, w, b, r))
    assert ran == {"coop"}
