"""The Hopper attention forward (csrc/attention/sm90/): which cases take it (attention_path.h, asked on
any machine), and on an H100/H200 its output and log-sum-exp against the fp64 reference with the
FlashAttention rule, for every N it takes and the lengths around it, both head dims, both dtypes, with
and without a bias of either shape, on views of one qkv projection and on contiguous tensors, and the
gradients the backward computes from its log-sum-exp. The CUDA tests skip without a GPU; the
sm90-only ones skip on other GPUs, where the same tests run the mma.sync kernel."""
import os
import subprocess
import sys

import pytest
import torch

from vitfast.kernels import gate, records
from vitfast.ops import attention, attention_ref
from tests.ops.test_attention import (assert_flash_rule, check_against_reference, fp16_accumulation_bound,
                                      make_inputs, poison, SLACK)
from tests.values import needs_cuda

path = torch.ops.vitfast.attention_path
SM90_HEAD_DIMS = (32, 64, 80, 96, 128)  # every head dim the CUDA kernels take


# ---- the choice, on any machine ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_hopper_forward_takes_every_length_up_to_4096_at_every_head_dim(dtype):
    """A head's K and V whole up to 256 keys, streamed in key tiles beyond (attention_fwd_long_sm90.cuh)."""
    for N in list(range(1, 601)) + [1024, 1025, 4095, 4096]:
        for d in SM90_HEAD_DIMS:
            assert path(9, 0, dtype, N, d, sm90_built=True) == "sm90", (N, d)
    for N in (4097, 8192, 1 << 20):
        assert path(9, 0, dtype, N, 64, sm90_built=True) == "mma_sync", N


def test_everything_else_takes_the_mma_sync_kernel_or_aten():
    bf16, fp16 = torch.bfloat16, torch.float16
    assert path(8, 0, bf16, 197, 64, sm90_built=True) == "mma_sync"  # A100: no sm_90a code runs there
    assert path(8, 9, bf16, 197, 64, sm90_built=True) == "mma_sync"
    assert path(10, 0, bf16, 197, 64, sm90_built=True) == "mma_sync"  # sm_90a code is Hopper's alone
    assert path(9, 0, bf16, 197, 64, sm90_built=False) == "mma_sync"
    assert path(9, 0, bf16, 197, 64, logits=True, sm90_built=True) == "mma_sync"
    for dtype in (torch.float32, torch.float64):
        assert path(9, 0, dtype, 197, 64, sm90_built=True) == "aten"


def test_fp16_accumulation_forward_on_hopper_backward_on_mma_sync():
    """wgmma has fp16 accumulators for float16 operands: the key-tiled forward takes accumulate="fp16"
    at every N; the backward (fp32 accumulators only) leaves it to the mma.sync kernel."""
    fp16 = torch.float16
    for N in list(range(1, 300)) + [577, 4096]:
        for d in SM90_HEAD_DIMS:
            assert path(9, 0, fp16, N, d, accumulate_fp16=True, sm90_built=True) == "sm90", (N, d)
            assert path(9, 0, fp16, N, d, accumulate_fp16=True, sm90_built=True, backward=True) == "mma_sync"
    assert path(9, 0, fp16, 4097, 64, accumulate_fp16=True, sm90_built=True) == "mma_sync"
    assert path(8, 0, fp16, 197, 64, accumulate_fp16=True, sm90_built=True) == "mma_sync"
    assert path(9, 0, fp16, 197, 64, accumulate_fp16=True, sm90_built=False) == "mma_sync"


def test_default_answer_follows_the_build():
    expected = "sm90" if torch.ops.vitfast.sm90_kernels_built() else "mma_sync"
    assert path(9, 0, torch.bfloat16, 197, 64) == expected


# ---- on the GPU ----------------------------------------------------------------------------------------


def on_hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0) and \
        torch.ops.vitfast.sm90_kernels_built()


def sm90_may_run():
    """The Hopper kernels run where a sitting recorded them at these sources, or under
    VITFAST_UNVERIFIED_KERNELS=1 (vitfast.kernels.gate), which a sitting's test files run under."""
    return on_hopper() and gate.allowed("attention_sm90", records.device_key(), warn=False)


needs_hopper = pytest.mark.skipif(not sm90_may_run(), reason="needs an H100/H200, the sm90 kernels, and a record "
                                  "of them on this GPU kind at these sources or VITFAST_UNVERIFIED_KERNELS=1")


def lse_ref(q, k, bias, scale):
    s = (q.double() @ k.double().transpose(-2, -1)) * scale
    if bias is not None:
        s = s + bias.double()
    return torch.logsumexp(s, dim=-1)


def check_forward(B, H, N, d, dtype, bias_shape=None, fused=True, seed=0):
    """out (FlashAttention rule) and lse (fp32 rounding of a sum of N exponentials) of one call."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v, bias = make_inputs(B, H, N, d, dtype, "cuda", bias_shape, fused=fused, generator=g)
    check_forward_with(q, k, v, bias, d**-0.5, f"N={N} d={d}")


def check_forward_with(q, k, v, bias, scale, what):
    poison("cuda")
    out, lse, _ = torch.ops.vitfast.attention_fwd(q, k, v, bias, scale, False, False)
    ref = attention_ref(q.double(), k.double(), v.double(), None if bias is None else bias.double(), scale)
    pt = attention_ref(q, k, v, bias, scale, upcast=False)
    assert_flash_rule(out, pt, ref, f"out {what}", SLACK[q.dtype])
    want = lse_ref(q, k, bias, scale)
    # fp32 logits, ex2.approx and an fp32 sum of N terms: ~1e-5 at these sizes; a wrong base, scale or
    # row is off by O(1).
    tol = 1e-4 * (1 + want.abs())
    bad = (lse.double() - want).abs() > tol
    assert not bad.any(), f"lse {what}: {bad.sum().item()} rows off, worst {(lse.double() - want).abs().max()}"


@needs_hopper
@pytest.mark.parametrize("d", SM90_HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_sm90_every_length_to_300(d, dtype):
    """Every N from 1 to 300: the four key-tile sizes, every width of the 8-key tail, and past 256 the
    key-tiled kernel's two tiles, every width of its last 64-key chunk."""
    for N in range(1, 301):
        check_forward(2, 3, N, d, dtype, seed=N)


# N's 64-key chunks over the key-tiled kernel's tiles (at most 4 chunks at d <= 64, 3 at 80/96, 2 at
# 128): one tile shorter than the rest, all equal, the last chunk one key wide or full, many tiles.
LONG_LENGTHS = (257, 320, 385, 448, 513, 577, 640, 769, 1025, 2049, 4096)


@needs_hopper
@pytest.mark.parametrize("d", SM90_HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_sm90_long_lengths(d, dtype):
    for N in LONG_LENGTHS:
        check_forward(2, 3, N, d, dtype, seed=N + d)


@needs_hopper
@pytest.mark.parametrize("d", (64, 128))
def test_sm90_long_online_softmax_rescales(d):
    """A bias that makes each row's maximum grow tile by tile (O and the row sum rescaled at every
    key tile), one that puts the maximum in the first tile, rows whose first key tiles are all -inf
    (rescaled from nothing) and rows of -inf logits throughout (NaN, as eager's)."""
    B, H, N = 2, 3, 577
    q, k, v, _ = make_inputs(B, H, N, d, torch.bfloat16, "cuda")
    keys = torch.arange(N, device="cuda", dtype=torch.float32)
    for ramp in (keys / 16, -keys / 16):
        bias = ramp.expand(1, H, N, N).to(torch.bfloat16)
        check_forward_with(q, k, v, bias, d**-0.5, f"ramp {ramp[1].item():+}")
    bias = torch.zeros(1, H, N, N, device="cuda", dtype=torch.bfloat16)
    bias[0, :, 3:40, :400] = float("-inf")  # the first tiles' keys masked for these rows
    bias[0, 1, 7] = float("-inf")           # one row masked everywhere
    out, lse, _ = torch.ops.vitfast.attention_fwd(q, k, v, bias, d**-0.5, False, False)
    assert torch.isnan(out[:, 1, 7]).all() and (lse[:, 1, 7] == float("-inf")).all()
    keep = torch.ones(N, dtype=torch.bool, device="cuda")
    keep[7] = False
    ref = attention_ref(q.double(), k.double(), v.double(), bias.double(), d**-0.5)
    pt = attention_ref(q, k, v, bias, d**-0.5, upcast=False)
    assert_flash_rule(out[:, 1, keep], pt[:, 1, keep], ref[:, 1, keep], "masked first tiles", SLACK[torch.bfloat16])
    assert_flash_rule(out[:, 0], pt[:, 0], ref[:, 0], "masked first tiles", SLACK[torch.bfloat16])


@needs_hopper
@pytest.mark.parametrize("N", (1, 7, 50, 64, 65, 128, 129, 192, 193, 197, 256, 257, 577, 1025))
@pytest.mark.parametrize("bias_shape", ["full", "heads"])
@pytest.mark.parametrize("d", SM90_HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_sm90_bias_both_shapes(N, bias_shape, d, dtype):
    B, H = 2, 3
    shape = {"full": (B, H, N, N), "heads": (1, H, N, N)}[bias_shape]
    check_forward(B, H, N, d, dtype, bias_shape=shape, seed=N + d)


@needs_hopper
@pytest.mark.parametrize("N", (1, 50, 65, 197, 256, 257, 577))
@pytest.mark.parametrize("d", SM90_HEAD_DIMS)
def test_sm90_contiguous_and_qkv_view_layouts_agree_bitwise(N, d):
    q, k, v, bias = make_inputs(2, 3, N, d, torch.bfloat16, "cuda", (1, 3, N, N))
    a = attention(q, k, v, bias)
    b = attention(q.contiguous(), k.contiguous(), v.contiguous(), bias)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    check_forward(2, 3, N, d, torch.bfloat16, fused=False, seed=N)


@needs_hopper
@pytest.mark.parametrize("N", (1, 50, 197, 256, 257, 577))
@pytest.mark.parametrize("d", SM90_HEAD_DIMS)
@pytest.mark.parametrize("bias_shape", [None, "full", "heads"])
def test_sm90_gradients_from_its_lse(N, d, bias_shape):
    """The backward rebuilds P from the forward's lse: every gradient checks it once more."""
    B, H = 2, 3
    shape = {None: None, "full": (B, H, N, N), "heads": (1, H, N, N)}[bias_shape]
    check_against_reference(B, H, N, d, torch.bfloat16, "cuda", bias_shape=shape, seed=N)


# More tiles than SMs, each shape named: (33, 5, 129) and the other 129..192 lengths give CTAs three
# tiles whose second Q halves all lie past N on 132 SMs (H100 SXM, H200) and on 114 (H100 PCIe) -
# the case of the first GPU run's launch failure (csrc/attention/NOTES.md); the rest walk every
# other kernel's stages through many phases.
MANY_TILES = [(33, 5, 129), (40, 4, 160), (67, 2, 192), (64, 12, 197), (256, 3, 50), (8, 16, 256), (16, 12, 577),
              (7, 5, 300)]


@needs_hopper
@pytest.mark.parametrize("B, H, N", MANY_TILES, ids=lambda x: str(x))
def test_sm90_many_tiles_per_cta(B, H, N):
    """More tiles than SMs: each persistent CTA walks both stages' barriers through many phases."""
    check_forward(B, H, N, 64, torch.bfloat16, seed=B)
    check_forward(B, H, N, 80, torch.float16, seed=H)


def check_fp16_accumulation(N, d, bias_shape=None, seed=0):
    """accumulate="fp16" on the sm90 forward: within the derived bound of fp16 accumulation (which
    fp32 accumulators would meet too: the test of their effect is the next one), finite, and an lse
    the mma.sync backward rebuilds P from (each column of dv sums to N when dout = 1)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    B, H = 2, 2
    q, k, v, _ = make_inputs(B, H, N, d, torch.float16, "cuda", generator=g)
    shape = {None: None, "full": (B, H, N, N), "heads": (1, H, N, N)}[bias_shape]
    bias = None if shape is None else torch.randn(shape, device="cuda", generator=g).half()
    q, k, v = q * 3, k * 3, v + 4  # large q kᵀ and p v sums: where fp16 accumulators lose bits
    scale = d**-0.5
    ref = attention_ref(q.double(), k.double(), v.double(), None if bias is None else bias.double(), scale)
    poison("cuda")
    o16 = attention(q, k, v, bias, accumulate="fp16").double()
    assert torch.isfinite(o16).all(), f"N={N} d={d}"
    err, bound = (o16 - ref).abs(), fp16_accumulation_bound(q, k, v, scale, bias)
    assert (err <= bound).all(), f"N={N} d={d}: over the bound by {(err - bound).max().item()}"
    q1, k1, v1 = (t.detach().requires_grad_() for t in (q, k, v))
    attention(q1, k1, v1, bias, accumulate="fp16").float().sum().backward()
    torch.testing.assert_close(v1.grad.float().sum(-2), torch.full((B, H, d), float(N), device="cuda"),
                               rtol=1e-2, atol=0)


@needs_hopper
@pytest.mark.parametrize("d", SM90_HEAD_DIMS)
def test_sm90_fp16_accumulation_every_length(d):
    """Every N from 1 to 300 (one key tile, then two at d = 128), then 3 to 32 key tiles."""
    for N in list(range(1, 301)) + [385, 577, 1025, 2049]:
        check_fp16_accumulation(N, d, seed=N + d)


@needs_hopper
@pytest.mark.parametrize("N", (1, 50, 197, 257, 577))
@pytest.mark.parametrize("bias_shape", ["full", "heads"])
@pytest.mark.parametrize("d", (64, 80, 128))
def test_sm90_fp16_accumulation_with_bias(N, bias_shape, d):
    check_fp16_accumulation(N, d, bias_shape, seed=N)


@needs_hopper
@pytest.mark.parametrize("N", (197, 577, 1025))
@pytest.mark.parametrize("d", (64, 128))
def test_sm90_fp16_accumulators_are_really_used(N, d):
    """fp16 accumulators lose bits that fp32 ones keep: on these inputs the error is over twice fp32's
    (the kernel really accumulates in fp16), and it matches the CPU emulation's size of error."""
    g = torch.Generator(device="cuda").manual_seed(N)
    q, k, v, _ = make_inputs(2, 2, N, d, torch.float16, "cuda", generator=g)
    q, k, v = q * 3, k * 3, v + 4
    ref = attention_ref(q.double(), k.double(), v.double(), scale=d**-0.5)
    e16 = (attention(q, k, v, accumulate="fp16").double() - ref).abs().max()
    e32 = (attention(q, k, v).double() - ref).abs().max()
    emu = (attention_ref(q.cpu(), k.cpu(), v.cpu(), accumulate="fp16").double() - ref.cpu()).abs().max()
    assert e16 > 2 * e32, (e16.item(), e32.item())
    assert emu / 4 < e16 < 4 * emu, (e16.item(), emu.item())


@needs_hopper
@pytest.mark.parametrize("N", (197, 577))
def test_sm90_without_lse_writes_the_same_out(N):
    """No backward to come (with_lse=False): the kernels skip the lse, out is the same bit for bit."""
    q, k, v, bias = make_inputs(2, 3, N, 64, torch.bfloat16, "cuda", (1, 3, N, N))
    op = torch.ops.vitfast.attention_fwd.default
    a, lse, _ = op(q, k, v, bias, 0.125, False, False, True, True)
    b, none, _ = op(q, k, v, bias, 0.125, False, False, True, False)
    assert lse.shape == (2, 3, N) and none.numel() == 0
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_hopper
def test_sm90_rows_of_minus_inf_give_nan_like_eager():
    q, k, v, _ = make_inputs(1, 2, 197, 64, torch.bfloat16, "cuda")
    bias = torch.zeros(1, 2, 197, 197, device="cuda", dtype=torch.bfloat16)
    bias[0, 1, 5] = float("-inf")
    out, lse, _ = torch.ops.vitfast.attention_fwd(q, k, v, bias, 0.125, False, False)
    assert torch.isnan(out[0, 1, 5]).all() and torch.isfinite(out[0, 0]).all()
    assert lse[0, 1, 5].item() == float("-inf")
    assert torch.isfinite(out[0, 1, :5]).all() and torch.isfinite(out[0, 1, 6:]).all()


def with_and_without_sm90(script):
    """What `script` saves to the path it is given, run in a process with the sm90 kernels and in one
    with VITFAST_ATTENTION_SM90=0 (read once per process), both with every kernel allowed to run."""
    results = []
    for flag in ("1", "0"):
        target = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"vitfast_sm90_{flag}_{os.getpid()}.pt")
        env = dict(os.environ, VITFAST_ATTENTION_SM90=flag, VITFAST_UNVERIFIED_KERNELS="1")
        subprocess.run([sys.executable, "-c", script, target], check=True, env=env)
        results.append(torch.load(target))
        os.remove(target)
    return results


@needs_hopper
@pytest.mark.parametrize("N", (197, 577))
def test_sm90_and_mma_sync_kernels_agree(N):
    """VITFAST_ATTENTION_SM90=0 (read once per process) runs the mma.sync kernel on the same inputs."""
    script = (
        "import torch, vitfast\n"
        "from vitfast.ops import attention\n"
        "torch.manual_seed(0)\n"
        f"x = torch.randn(4, {N}, 3, 12, 64, device='cuda').bfloat16()\n"
        "q, k, v = x.permute(2, 0, 3, 1, 4).unbind(0)\n"
        "torch.save(attention(q, k, v).cpu(), __import__('sys').argv[1])\n")
    with_sm90, without = with_and_without_sm90(script)
    torch.testing.assert_close(with_sm90.float(), without.float(), rtol=1e-2, atol=1e-2)


@needs_cuda
@pytest.mark.parametrize("N, d", [(1, 64), (50, 64), (197, 64), (256, 80), (257, 64), (577, 64), (197, 32), (65, 128)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_out_layout_bnhd_every_kernel(N, d, dtype):
    """(B, N, H, d) output from whichever kernel runs (sm90 or mma.sync): the same values and gradients
    as the (B, H, N, d) output."""
    q, k, v, bias = make_inputs(2, 3, N, d, dtype, "cuda", (1, 3, N, N))
    q, k, v, bias = (t.detach().requires_grad_() for t in (q, k, v, bias))
    a = attention(q, k, v, bias, out_layout="bnhd")
    b = attention(q, k, v, bias)
    assert a.shape == (2, N, 3, d) and a.is_contiguous()
    torch.testing.assert_close(a, b.transpose(1, 2), rtol=0, atol=0)
    g = torch.randn_like(a)
    ga = torch.autograd.grad(a, (q, k, v, bias), g)
    gb = torch.autograd.grad(b, (q, k, v, bias), g.transpose(1, 2).contiguous())
    for x, y in zip(ga, gb):  # dq and dbias sum with atomics: the order may change the last bit
        torch.testing.assert_close(x, y, rtol=1e-2, atol=1e-3)


@needs_cuda
@pytest.mark.parametrize("scale", [0.125, 0.0, -0.3, 2.0])
@pytest.mark.parametrize("N", [50, 197, 577])
def test_cuda_every_scale_sign(N, scale):
    """The mma.sync kernel's plain path takes row maxima over raw q kᵀ, valid for scale > 0 only; 0
    and negative scales take the general one. The sm90 kernel scales before its max."""
    q, k, v, _ = make_inputs(2, 3, N, 64, torch.bfloat16, "cuda")
    out = attention(q, k, v, scale=scale)
    ref = attention_ref(q.double(), k.double(), v.double(), scale=scale)
    pt = attention_ref(q, k, v, scale=scale, upcast=False)
    assert_flash_rule(out, pt, ref, f"out scale={scale}", SLACK[torch.bfloat16])
