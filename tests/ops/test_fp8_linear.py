"""fp8_linear: the op against its pure-PyTorch twin and against the definition computed independently
(float64 sums of the decoded e4m3 values), its rounding (nearest even, saturation, NaN), its amax, its
argument checks and kernel choice, the SASS of its Hopper kernels (cuobjdump, no GPU needed), and on an
H100/H200 the kernels against the emulation."""
import re
import warnings

import pytest
import torch

import vitfast
from vitfast.kernels.selftests.gemm import fp8_check, fp8_kind
from vitfast.ops import fp8_linear, fp8_linear_ref, scaled_cast
from vitfast.ops.fp8_linear import fp8_accumulation_fraction
from tests.values import kernel_resources, said_in_a_fresh_process, sm90_kernels_sass

E4M3 = torch.float8_e4m3fn
BF16 = torch.bfloat16


def codes(shape, seed, scale=1.0, device="cpu"):
    """e4m3 codes of N(0, scale) values (never NaN: |x| <= 448 after the cast's saturation)."""
    g = torch.Generator().manual_seed(seed)
    return scaled_cast((torch.randn(shape, generator=g) * scale).to(device), torch.ones(1, device=device), E4M3)


def operands(M, K, N, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed + 1)
    x8, w8 = codes((M, K), seed, 4.0, device), codes((N, K), seed + 2, 8.0, device)
    sa = torch.tensor([2.0**-3], device=device)
    sb = (torch.rand(N, generator=g) * 0.01 + 0.001).to(device)
    bias = torch.randn(N, generator=g).to(device)
    res = torch.randn(M, N, generator=g).to(device, BF16)
    return x8, w8, sa, sb, bias, res


def exact(x8, w8, sa, sb, bias=None):
    """v of the definition in float64: the e4m3 products and their sums exactly."""
    v = (x8.double() @ w8.double().t()) * sa.double() * sb.double()
    return v if bias is None else v + bias.double()


def same(a, b):
    """Equal bit for bit, e4m3 codes compared as bytes (NaN codes included)."""
    if a.dtype == E4M3:
        return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    return torch.equal(a, b)


# ---- the CPU op (fp8_linear.h's composite) and its twin

@pytest.mark.parametrize("activation,out_dtype,residual", [
    ("none", BF16, False), ("gelu", BF16, False), ("gelu", E4M3, False), ("gelu_tanh", E4M3, False),
    ("none", E4M3, False), ("none", BF16, True)])
@pytest.mark.parametrize("bias", [True, False])
def test_the_op_equals_its_twin_bit_for_bit(activation, out_dtype, residual, bias):
    x8, w8, sa, sb, b, r = operands(37, 48, 32)
    kw = dict(residual=r if residual else None, activation=activation, out_dtype=out_dtype,
              out_scale=torch.tensor([2.0**-2]) if out_dtype == E4M3 else None, amax=True)
    out, m = fp8_linear(x8, w8, sa, sb, b if bias else None, **kw)
    ref, mref = fp8_linear_ref(x8, w8, sa, sb, b if bias else None, **kw)
    assert out.dtype == out_dtype and out.shape == (37, 32)
    assert same(out, ref) and torch.equal(m, mref)


def test_outputs_follow_the_definition():
    x8, w8, sa, sb, b, r = operands(64, 96, 48, seed=3)
    v = exact(x8, w8, sa, sb, b)
    # bf16: the fp32 value within one rounding of the exact one, then rounded once more to bf16
    out = fp8_linear(x8, w8, sa, sb, b)
    assert torch.equal(out, v.float().to(BF16)) or (out.double() - v).abs().max() <= 2**-7 * v.abs().max()
    # residual: v + r rounded once into bf16
    s = fp8_linear(x8, w8, sa, sb, b, residual=r)
    assert ((s.double() - (v + r.double())).abs() <= (v + r.double()).abs() * 2**-8 + 1e-5).all()
    # e4m3 with a power-of-two scale: scaled_cast (an exact division) of GELU's fp32 value
    scale = torch.tensor([2.0**-4])
    g = torch.nn.functional.gelu(v.float())
    out8 = fp8_linear(x8, w8, sa, sb, b, activation="gelu", out_dtype=E4M3, out_scale=scale)
    assert same(out8, scaled_cast(g, scale, E4M3))


def test_amax_is_the_largest_magnitude_before_the_outputs_rounding():
    x8, w8, sa, sb, b, r = operands(20, 32, 16, seed=5)
    v = exact(x8, w8, sa, sb, b)
    _, m = fp8_linear(x8, w8, sa, sb, b, amax=True)
    assert abs(m.item() - v.abs().max().item()) <= 1e-5 * v.abs().max().item()
    _, m = fp8_linear(x8, w8, sa, sb, b, activation="gelu", out_dtype=E4M3, out_scale=torch.tensor([1.0]), amax=True)
    g = torch.nn.functional.gelu(v)
    assert abs(m.item() - g.abs().max().item()) <= 1e-5 * g.abs().max().item()
    _, m = fp8_linear(x8, w8, sa, sb, b, residual=r, amax=True)
    assert abs(m.item() - (v + r.double()).abs().max().item()) <= 1e-4
    assert fp8_linear(x8[:0], w8, sa, sb, b, amax=True)[1].item() == 0  # no rows: 0


def test_e4m3_outputs_saturate_and_keep_nan():
    x8 = scaled_cast(torch.tensor([[1.0, 0.0], [float("nan"), 0.0], [-1.0, 0.0]]), torch.ones(1), E4M3)
    w8 = scaled_cast(torch.tensor([[448.0, 0.0], [0.5, 0.0]]), torch.ones(1), E4M3)
    one = torch.ones(1)
    out, m = fp8_linear(x8, w8, one, torch.ones(2), out_dtype=E4M3, out_scale=torch.tensor([0.5]), amax=True)
    # 448 / 0.5 = 896 saturates to 448; 0.5 / 0.5 = 1; NaN stays NaN; amax sees the NaN
    assert out[0].float().tolist() == [448.0, 1.0] and out[2].float().tolist() == [-448.0, -1.0]
    assert out[1].float().isnan().all() and m.isnan().all()


def test_ties_round_to_even():
    # x = 1, weights 1 + 2^-4 ... : v = 1.0625 lies halfway between e4m3's 1.0 and 1.125: even (1.0)
    x8 = scaled_cast(torch.ones(1, 16), torch.ones(1), E4M3)
    w = torch.zeros(16, 16)
    w[0, 0], w[1, 0], w[2, 0] = 1.0, 1.0, 1.0
    w8 = scaled_cast(w, torch.ones(1), E4M3)
    sb = torch.ones(16)
    sb[1], sb[2] = 1.0625, 1.1875  # 1.0625 -> 1.0 (even), 1.1875 -> 1.25 (even)
    out = fp8_linear(x8, w8, torch.ones(1), sb, out_dtype=E4M3, out_scale=torch.ones(1))
    assert out[0, :3].float().tolist() == [1.0, 1.0, 1.25]


def test_any_leading_shape_and_the_fake():
    x8, w8, sa, sb, b, _ = operands(2 * 3 * 5, 32, 16)
    x8 = x8.reshape(2, 3, 5, 32)
    out = fp8_linear(x8, w8, sa, sb, b, activation="gelu", out_dtype=E4M3, out_scale=torch.ones(1))
    assert out.shape == (2, 3, 5, 16) and out.dtype == E4M3
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fx = mode.from_tensor(x8)
        fo, fm = torch.ops.vitfast.fp8_linear.default(fx, mode.from_tensor(w8), mode.from_tensor(sa),
                                                      mode.from_tensor(sb), None, None, "none", BF16, None, True,
                                                      "auto")
        assert fo.shape == (2, 3, 5, 16) and fo.dtype == BF16 and fm.shape == (1,)


# ---- bad input: one clear line

@pytest.mark.parametrize("change,error,message", [
    (dict(x=torch.zeros(4, 32)), TypeError, "x must be a torch.float8_e4m3fn tensor, got torch.float32"),
    (dict(w=torch.zeros(16, 32, dtype=torch.float8_e5m2)), TypeError, "weight must be a torch.float8_e4m3fn"),
    (dict(w=torch.zeros(16, 31, dtype=E4M3)), ValueError, "weight must be (N, K) with K = x's last dimension"),
    (dict(sa=torch.ones(2)), ValueError, "scale_a must hold one value"),
    (dict(sb=torch.ones(15)), ValueError, "scale_b must hold shape (16,)"),
    (dict(sb=torch.ones(16, dtype=torch.float64)), TypeError, "scale_b must be a float32 tensor"),
    (dict(bias=torch.ones(16, dtype=torch.float16)), ValueError, "bias must be a float32 or bfloat16 tensor"),
    (dict(activation="relu"), ValueError, "activation must be one of ('none', 'gelu', 'gelu_tanh')"),
    (dict(out_dtype=torch.float16), TypeError, "out_dtype must be torch.bfloat16 or torch.float8_e4m3fn"),
    (dict(out_dtype=E4M3), ValueError, "out_scale must be given exactly when out_dtype is torch.float8_e4m3fn"),
    (dict(out_scale=torch.ones(1)), ValueError, "out_scale must be given exactly when"),
    (dict(residual=torch.zeros(4, 16)), ValueError, "residual must be a bfloat16 tensor of the output's shape"),
    (dict(residual=torch.zeros(4, 16, dtype=BF16), activation="gelu"), ValueError, "a residual takes"),
    (dict(config="coop_128x256_2x1"), ValueError, "config must be one of 'auto', 'coop_128x128', 'pingpong_64x128'"),
])
def test_bad_arguments_are_one_clear_line(change, error, message):
    args = dict(x=torch.zeros(4, 32, dtype=E4M3), w=torch.zeros(16, 32, dtype=E4M3), sa=torch.ones(1),
                sb=torch.ones(16), bias=None, residual=None, activation="none", out_dtype=BF16, out_scale=None,
                config="auto")
    args.update(change)
    with pytest.raises(error, match=re.escape(message)):
        fp8_linear(args["x"], args["w"], args["sa"], args["sb"], args["bias"], residual=args["residual"],
                   activation=args["activation"], out_dtype=args["out_dtype"], out_scale=args["out_scale"],
                   config=args["config"])


def test_the_ops_own_checks_name_the_argument():
    x8, w8 = torch.zeros(4, 32, dtype=E4M3), torch.zeros(16, 32, dtype=E4M3)
    op = torch.ops.vitfast.fp8_linear.default
    with pytest.raises(RuntimeError, match="fp8_linear: out_scale is needed for an e4m3 output"):
        op(x8, w8, torch.ones(1), torch.ones(16), None, None, "none", E4M3, None, False, "auto")
    with pytest.raises(RuntimeError, match="fp8_linear: a residual's sum is written in bfloat16"):
        op(x8, w8, torch.ones(1), torch.ones(16), None, torch.zeros(4, 16, dtype=BF16), "none", E4M3, torch.ones(1),
           False, "auto")
    with pytest.raises(RuntimeError, match="config 'coop_128x192' is not built for FP8 products with GELU into e4m3"):
        op(x8, w8, torch.ones(1), torch.ones(16), None, None, "gelu", E4M3, torch.ones(1), False, "coop_128x192")


# ---- which kernel, which configuration (gemm_path.h, sm90_config.h)

M_B256 = 256 * 197


@pytest.mark.parametrize("major,minor,M,N,K,expected", [
    (9, 0, M_B256, 2304, 768, "sm90"), (9, 0, M_B256, 768, 3072, "sm90"), (9, 0, 1, 16, 16, "sm90"),
    (9, 0, M_B256, 768, 208, "sm90"),  # K % 16 == 0 but not a whole number of 128-deep k-tiles: TMA fills zeros
    (9, 0, M_B256, 1000, 768, "aten"),  # N % 16
    (9, 0, M_B256, 768, 100, "aten"),  # K % 16
    (8, 9, M_B256, 768, 768, "aten"),  # Ada: sm_90a code does not run there
    (10, 0, M_B256, 768, 768, "aten"), (8, 0, M_B256, 768, 768, "aten"),
])
def test_the_fp8_path(major, minor, M, N, K, expected):
    assert torch.ops.vitfast.fp8_path(major, minor, M, N, K, sm90_built=True) == expected
    assert torch.ops.vitfast.fp8_path(9, 0, M, N, K, sm90_built=False) == "aten"


FP8_KINDS = ("fp8_act", "fp8_act_e4m3", "fp8_act_e4m3_tanh", "fp8_residual")


def test_the_built_fp8_configurations_and_defaults():
    for kind in ("fp8_act", "fp8_act_e4m3"):  # qkv and fc1: larger store pieces, and ping-pong's fast accumulation
        assert torch.ops.vitfast.sm90_configs(kind) == ["coop_128x128", "pingpong_64x128", "coop_128x128_epi128x64",
                                                        "pingpong_128x128_2x1_fastaccum"]
    assert torch.ops.vitfast.sm90_configs("fp8_residual") == ["coop_128x128", "pingpong_64x128"]
    assert torch.ops.vitfast.sm90_configs("fp8_act_e4m3_tanh") == ["coop_128x128"]  # where a model asks for it
    config = torch.ops.vitfast.sm90_config
    # the H100's tables (2026-11-24): the cooperative tile beat ping-pong with GELU (0.753 ms against 1.13)
    assert config("fp8_act_e4m3", M_B256, 3072, True) == "coop_128x128"
    assert config("fp8_act", M_B256, 2304, False) == "coop_128x128"  # qkv (0.466 against 0.684)
    assert config("fp8_residual", M_B256, 768, False) == "coop_128x128"
    assert config("fp8_act", 8 * 197, 768, False) == "pingpong_64x128"  # 78 tiles of 128x128 for 132 SMs


# ---- SASS of the built binary (cuobjdump runs without a GPU)

@pytest.fixture(scope="module")
def fp8_sass():
    kernels = sm90_kernels_sass(lambda name: "GemmUniversal" in name and "float_e4m3" in name)
    if kernels is None:
        pytest.skip("needs cuobjdump and a build with the sm90 kernels (CUTLASS headers, 90 in VITFAST_CUDA_ARCHS)")
    return kernels, kernel_resources(kernels)


def test_fp8_kernels_issue_qgmma_on_e4m3_with_fp32_accumulators(fp8_sass):
    kernels, resources = fp8_sass
    built = sum(len(torch.ops.vitfast.sm90_configs(k)) for k in FP8_KINDS)
    assert len(kernels) == built == 11
    for name, body in kernels.items():
        assert set(re.findall(r"QGMMA\.\w+\.\w+\.\w+\.\w+", body)) == {"QGMMA.64x128x32.F32.E4M3.E4M3"}, name[:120]
        assert "HGMMA" not in body and "HMMA" not in body
        assert "UTMALDG" in body
        assert resources[name] == (168, 0, 0), "registers / stack / local (spills) of " + name[:120]


def test_the_fp8_mainloop_adds_each_k_tile_while_the_next_runs(fp8_sass):
    """fp8_mainloop.cuh: a k-tile's four QGMMA issued from five places (fp8_promotions.h's first two
    k-tiles, the loop's two, an odd count's last), each partial sum read after warpgroup.wait<1> (the
    next k-tile queued) but the last one's (wait<0>, in three places). CUTLASS's own FP8 mainloop issues
    from two places and waits for every group (wait<0>) before each promotion. The fast-accumulation
    kernels run CUTLASS's plain mainloop: no promotion, a k-tile's eight QGMMA (two 64-row halves of the
    warpgroup's 128) from two places, one wait<1> in the loop, one wait<0> after it."""
    kernels, _ = fp8_sass
    for name, body in kernels.items():
        if "FP8FastAccum" in name:
            assert "Fp8OverlappedMainloop" not in name and "MainloopSm90TmaGmmaWarpSpecializedFP8" not in name
            assert len(re.findall(r"QGMMA\.", body)) == 2 * 8, name[:160]
            assert re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x\d+)", body) == ["0x1", "0x0"], name[:160]
            continue
        assert "Fp8OverlappedMainloop" in name, name[:160]
        assert len(re.findall(r"QGMMA\.", body)) == 5 * 4, name[:160]
        waits = re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x\d+)", body)
        assert (waits.count("0x1"), waits.count("0x0")) == (4, 3), (waits, name[:160])
        # the previous k-tile's additions start after the next k-tile's QGMMA, with no drain between
        overlapped = re.search(r"QGMMA[^\n]*gsb0[^\n]*\n(?:[^\n]*\n){0,4}?[^\n]*WARPGROUP\.DEPBAR\.LE gsb0, 0x1"
                               r"[^\n]*\n(?:(?![^\n]*DEPBAR)[^\n]*\n){0,3}?[^\n]*FADD", body)
        assert overlapped, name[:160]


def test_the_fp8_epilogues_are_compiled_for_the_chain(fp8_sass):
    """qkv (no activation into bf16) and the residual kernels hold no MUFU; fc1's only GELU's (EX2 for
    erf, TANH for tanh); x's scale is folded in: no scalar broadcast but fc1's e4m3 output's 1 / scale."""
    kernels, _ = fp8_sass
    for name, body in kernels.items():
        mufu = set(re.findall(r"MUFU\.(\w+)", body))
        want = {"EX2"} if "GeluILb0E" in name else {"TANH"} if "GeluILb1E" in name else set()
        assert mufu == want, (mufu, name[:160])
        assert ("Sm90ScalarBroadcast" in name) == ("Gelu" in name), name[:160]  # e4m3 outputs alone


def test_e4m3_outputs_are_converted_with_saturation(fp8_sass):
    kernels, _ = fp8_sass
    # cvt.rn.satfinite (nearest even, +-448, NaN kept) in the e4m3-output kernels, bf16 packing in the others
    e4m3_out = [b for b in kernels.values() if "F2FP.SATFINITE.E4M3.F32" in b]
    assert len(e4m3_out) == sum(len(torch.ops.vitfast.sm90_configs(k)) for k in FP8_KINDS[1:3])
    assert all("F2FP.BF16.F32.PACK_AB" in b for b in kernels.values() if b not in e4m3_out)
    for body in kernels.values():  # the amax: reduced across the warp, one atomic per warp
        assert "SHFL.BFLY" in body and "REDG.E.MAX.S32" in body


# ---- on an H100 / H200

hopper = pytest.mark.skipif(
    not (torch.cuda.is_available() and vitfast.has_cuda_kernels() and torch.ops.vitfast.sm90_kernels_built()
         and torch.cuda.get_device_capability() == (9, 0)),
    reason="needs an H100/H200 (compute capability 9.0) and a build with the sm90 kernels")


def test_the_accumulation_bound_covers_what_the_h100_measured():
    assert torch.ops.vitfast.fp8_promotion_interval() == 4  # one 128-deep k-tile of 32-deep wgmmas
    assert fp8_accumulation_fraction(768) >= 2.0**-13.8 and fp8_accumulation_fraction(3072) >= 2.0**-16.0
    assert fp8_accumulation_fraction(768) <= 2.0**-10.5  # and stays a bound worth testing against


def test_the_fast_accumulation_bound_counts_every_wgmma_of_the_sum():
    """pingpong_128x128_2x1_fastaccum sums the whole K on the tensor cores: its bound is K / 32 wgmma's
    worth, 6x the promoted kernels' at K = 768, and grows with K (built for qkv and fc1 alone)."""
    fast = "pingpong_128x128_2x1_fastaccum"
    assert [torch.ops.vitfast.fp8_promotion_interval(fast, K) for K in (16, 32, 48, 768, 1024)] == [1, 1, 2, 24, 32]
    assert torch.ops.vitfast.fp8_promotion_interval("coop_128x128", 3072) == 4
    assert fp8_accumulation_fraction(768, fast) == pytest.approx(6 * fp8_accumulation_fraction(768), rel=1e-3)
    assert fp8_accumulation_fraction(1024, fast) <= 2.0**-7.8
    with pytest.raises(RuntimeError, match="config must be one of"):
        torch.ops.vitfast.fp8_promotion_interval("fastaccum", 768)
    assert fast not in torch.ops.vitfast.sm90_configs("fp8_residual")  # fc2's K is 4x the width


@hopper
@pytest.mark.parametrize("config", ["auto", "coop_128x128", "pingpong_64x128", "coop_128x128_epi128x64",
                                    "pingpong_128x128_2x1_fastaccum"])
@pytest.mark.parametrize("activation,out_dtype,residual", [("none", BF16, False), ("gelu", E4M3, False),
                                                           ("gelu_tanh", E4M3, False), ("none", BF16, True)])
@pytest.mark.parametrize("M,K,N", [(1576, 768, 2304), (1576, 768, 3072), (1576, 3072, 768), (1576, 768, 768),
                                   (50, 192, 576), (77, 208, 48), (1, 16, 16),
                                   (96, 384, 256), (200, 640, 128), (64, 272, 64)])  # odd k-tile counts too
def test_sm90_fp8_linear_matches_the_emulation(M, K, N, activation, out_dtype, residual, config):
    """The package check's case: the kernel against fp8_linear_ref within its configuration's accumulation
    bound (vitfast.kernels.selftests.gemm.fp8_check), the amax too."""
    if config not in ("auto", *torch.ops.vitfast.sm90_configs(fp8_kind(activation, out_dtype, residual))):
        pytest.skip(f"{config} is not built for {activation} into {out_dtype}{' + residual' if residual else ''}")
    fp8_check("cuda", M, K, N, activation, out_dtype, residual, config)


@hopper
def test_sm90_fp8_linear_at_vit_b_batch_256():
    fp8_check("cuda", M_B256, 768, 3072, "gelu", E4M3, False, "auto")
    fp8_check("cuda", M_B256, 3072, 768, "none", BF16, True, "auto")


@hopper
def test_sm90_fp8_saturation_nan_and_amax_on_the_gpu():
    x8 = scaled_cast(torch.tensor([[1.0] + [0.0] * 15, [float("nan")] + [0.0] * 15]).cuda(),
                     torch.ones(1, device="cuda"), E4M3)
    w8 = scaled_cast(torch.tensor([[448.0] + [0.0] * 15] * 16).cuda(), torch.ones(1, device="cuda"), E4M3)
    one = torch.ones(1, device="cuda")
    out, m = fp8_linear(x8, w8, one, torch.ones(16, device="cuda"), out_dtype=E4M3,
                        out_scale=torch.tensor([0.5], device="cuda"), amax=True)
    assert (out[0].float() == 448).all() and out[1].float().isnan().all() and m.isnan().all()
    _, m = fp8_linear(x8[:1], w8, one, torch.ones(16, device="cuda"), amax=True)
    assert m.item() == 448.0


@hopper
@pytest.mark.parametrize("activation,out_dtype", [("gelu", "torch.bfloat16"), ("none", "torch.float8_e4m3fn")])
def test_sm90_fp8_epilogues_not_built_run_the_composite_with_one_warning(activation, out_dtype):
    """The kernels are built for the FP8 chain's epilogues; GELU into bf16 or nothing into e4m3 (valid
    arguments the chain never makes) run the composite, which defines the op."""
    script = (
        "import torch\n"
        "from vitfast.ops import fp8_linear, fp8_linear_ref\n"
        "from tests.ops.test_fp8_linear import operands, same\n"
        "x8, w8, sa, sb, b, _ = operands(64, 64, 64, device='cuda')\n"
        f"kw = dict(activation='{activation}', out_dtype={out_dtype})\n"
        "if kw['out_dtype'] == torch.float8_e4m3fn: kw['out_scale'] = torch.ones(1, device='cuda')\n"
        "out = fp8_linear(x8, w8, sa, sb, b, **kw)\n"
        "fp8_linear(x8, w8, sa, sb, b, **kw)\n"
        "assert same(out, fp8_linear_ref(x8, w8, sa, sb, b, **kw))\n")
    assert said_in_a_fresh_process(script, "fp8_linear's Hopper kernels are built for the FP8 chain's epilogues") == 1


@hopper
def test_sm90_fp8_refused_operands_run_the_composite_with_one_warning():
    script = (
        "import warnings, torch\n"
        "from vitfast.ops import fp8_linear, fp8_linear_ref\n"
        "from tests.ops.test_fp8_linear import operands, same\n"
        "x8, w8, sa, sb, b, _ = operands(64, 48, 40, device='cuda')  # N % 16 != 0\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    out = fp8_linear(x8, w8, sa, sb, b)\n"
        "    fp8_linear(x8, w8, sa, sb, b)\n"
        "print(*(str(w.message) for w in caught), sep='\\n')\n"
        "assert same(out, fp8_linear_ref(x8, w8, sa, sb, b))\n")
    assert said_in_a_fresh_process(script, "fp8_linear's FP8 kernels need") == 1
