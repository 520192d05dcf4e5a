"""The Hopper attention backward (csrc/attention/sm90/attention_bwd_sm90.cuh): which cases take it
(attention_path.h, asked on any machine), and on an H100/H200 every gradient against the fp64 reference
with the FlashAttention rule, for every N it takes and the lengths around it (one CTA per head, and
heads split into key groups whose dQ shares are added in fp32), every head dim, both dtypes, both bias
shapes (the bias gradient is dS per (b, h), or for a bias broadcast over the batch dS reduced
into fp32 partial sums per batch slot),
views of one qkv projection and both output layouts, and against the mma.sync backward. The CUDA tests
skip without a GPU; the sm90-only ones skip on other GPUs, where the same tests run the mma.sync
kernel."""
import pytest
import torch

from vitfast.ops import attention, attention_ref
from tests.ops.test_attention import assert_flash_rule, check_against_reference, make_inputs, run, SLACK
from tests.ops.test_attention_sm90 import needs_hopper, SM90_HEAD_DIMS, with_and_without_sm90

path = torch.ops.vitfast.attention_path


# ---- the choice, on any machine ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_backward_takes_sm90_at_every_length_up_to_4096(dtype):
    for N in list(range(1, 601)) + [1024, 1025, 4096]:
        for d in SM90_HEAD_DIMS:
            assert path(9, 0, dtype, N, d, sm90_built=True, backward=True) == "sm90", (N, d)
    for N in (4097, 8192):
        assert path(9, 0, dtype, N, 64, sm90_built=True, backward=True) == "mma_sync", N


def test_backward_elsewhere_takes_the_mma_sync_kernel_or_aten():
    bf16, fp16 = torch.bfloat16, torch.float16
    for cc in ((8, 0), (8, 9), (10, 0)):
        assert path(*cc, bf16, 197, 64, sm90_built=True, backward=True) == "mma_sync", cc
    assert path(9, 0, bf16, 197, 64, sm90_built=False, backward=True) == "mma_sync"
    # the gradient through returned logits and fp16 accumulators are the mma.sync kernel's alone
    assert path(9, 0, bf16, 197, 64, logits=True, sm90_built=True, backward=True) == "mma_sync"
    assert path(9, 0, fp16, 197, 64, accumulate_fp16=True, sm90_built=True, backward=True) == "mma_sync"
    for dtype in (torch.float32, torch.float64):
        assert path(9, 0, dtype, 197, 64, sm90_built=True, backward=True) == "aten"


# ---- on the GPU ----------------------------------------------------------------------------------------


@needs_hopper
@pytest.mark.parametrize("d", SM90_HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_sm90_backward_every_length_to_300(d, dtype):
    """Every N from 1 to 300 (each key tile, every partial last key block and query chunk, and the key
    groups past a CTA's reach, their last group one key to a full group wide): out, dq, dk, dv."""
    for N in range(1, 301):
        check_against_reference(1, 2, N, d, dtype, "cuda", seed=N)


@needs_hopper
@pytest.mark.parametrize("d", SM90_HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_sm90_backward_key_groups(d, dtype):
    """Heads split into 2 to 32 key groups: dQ's shares added by TMA reduce-add into fp32."""
    for N in (385, 512, 513, 577, 1025, 4096):
        check_against_reference(1, 2, N, d, dtype, "cuda", seed=N + d)


@needs_hopper
@pytest.mark.parametrize("N", (257, 577))
@pytest.mark.parametrize("bias_shape", ["full", "heads"])
@pytest.mark.parametrize("d", (64, 80))
def test_sm90_backward_key_groups_bias_gradient(N, bias_shape, d):
    """dS per (b, h) from every key group into its own columns of the bias gradient."""
    B, H = 2, 3
    shape = {"full": (B, H, N, N), "heads": (1, H, N, N)}[bias_shape]
    check_against_reference(B, H, N, d, torch.bfloat16, "cuda", bias_shape=shape, seed=N + d)


@needs_hopper
@pytest.mark.parametrize("N", (1, 7, 50, 64, 65, 128, 129, 192, 193, 197, 256))
@pytest.mark.parametrize("bias_shape", ["full", "heads", "batch", "one"])
@pytest.mark.parametrize("d", SM90_HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_sm90_backward_bias_gradient_every_shape(N, bias_shape, d, dtype):
    """dS stored per (b, h) in q's dtype for a (B, H, N, N) bias; for one broadcast over the batch
    ((1, H, N, N), (1, 1, N, N)) reduced into fp32 partial sums per batch slot, its rows padded to 4
    queries (N = 1, 7, 197 ...); for (B, 1, N, N) in fp32 and summed over the heads."""
    B, H = 2, 3
    shape = {"full": (B, H, N, N), "heads": (1, H, N, N), "batch": (B, 1, N, N), "one": (1, 1, N, N)}[bias_shape]
    check_against_reference(B, H, N, d, dtype, "cuda", bias_shape=shape, seed=N + d)


@needs_hopper
@pytest.mark.parametrize("B, H, N, d", [(32, 12, 197, 64), (300, 1, 50, 64), (16, 16, 257, 80), (20, 12, 577, 64)])
def test_sm90_backward_batch_broadcast_bias_large_batch(B, H, N, d):
    """A (1, H, N, N) bias's gradient summed over a batch larger than its slots (13 at B 32 x H 12,
    134 at H 1, 4 and 5 with key groups on an H100): several batch entries add into each slot, one
    head or many, one key group or several."""
    check_against_reference(B, H, N, d, torch.bfloat16, "cuda", bias_shape=(1, H, N, N), seed=B)


@needs_hopper
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "heads_bias"])
@pytest.mark.parametrize("d", SM90_HEAD_DIMS)
def test_sm90_head_per_warpgroup_at_64_keys(d, bias):
    """N <= 64: the forward's consumers take alternate heads over four stages, the backward's (d <= 96)
    every other head whole, its dQ and its bias partial sums included. One head in all, CTAs with an
    odd and an even count of heads (one consumer taking one more), many phases of each barrier."""
    for B, H, N in ((1, 1, 50), (133, 1, 64), (97, 5, 1), (300, 3, 50), (41, 7, 33)):
        shape = (1, H, N, N) if bias else None
        check_against_reference(B, H, N, d, torch.bfloat16, "cuda", bias_shape=shape, seed=B + N)


@needs_hopper
@pytest.mark.parametrize("B, H, N, d", [(33, 5, 129, 64), (40, 4, 160, 80), (64, 12, 197, 64), (256, 3, 50, 64),
                                        (8, 40, 256, 32), (40, 6, 100, 128), (16, 12, 577, 64), (24, 8, 257, 80)],
                         ids=lambda x: str(x))
def test_sm90_backward_many_heads_per_cta(B, H, N, d):
    """More heads than SMs: each persistent CTA walks the K/V and chunk barriers through many phases,
    with one or two K/V stages and one or two key blocks per warpgroup. Its forward runs first (the
    first GPU run's failure at (33, 5, 129) was the forward's), each shape named."""
    check_against_reference(B, H, N, d, torch.bfloat16, "cuda", seed=B)


@needs_hopper
@pytest.mark.parametrize("N", (50, 197, 577))
def test_sm90_backward_reads_out_and_grad_out_as_they_lie(N):
    """out in the (B, N, H, d) layout and dO as its transposed view: both read through TMA strides, the
    same gradients bit for bit as from contiguous tensors; dQ too where one CTA finishes a head (N <= 256
    at d = 64), else within a rounding (its key groups' fp32 shares are added by TMA reduce-add in no
    fixed order)."""
    q, k, v, bias = make_inputs(2, 3, N, 64, torch.bfloat16, "cuda", (1, 3, N, N))
    dout = torch.randn(2, 3, N, 64, device="cuda").bfloat16()
    out, lse, _ = torch.ops.vitfast.attention_fwd(q, k, v, bias, 0.125, False, False, True)  # (B, N, H, d)
    out_view = out.transpose(1, 2)
    dout_view = dout.transpose(1, 2).contiguous().transpose(1, 2)
    a = torch.ops.vitfast.attention_bwd(dout_view, None, q, k, v, bias, out_view, lse, 0.125, False, True)
    b = torch.ops.vitfast.attention_bwd(dout, None, q.contiguous(), k.contiguous(), v.contiguous(), bias,
                                        out_view.contiguous(), lse, 0.125, False, True)
    for name, x, y in zip(("dq", "dk", "dv", "dbias"), a, b):
        if name == "dq" and N > 256:
            torch.testing.assert_close(x, y, rtol=2**-7, atol=1e-6, msg=lambda m: f"dq: {m}")
        else:
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")


@needs_hopper
@pytest.mark.parametrize("scale", [0.125, 0.0, -0.3])
def test_sm90_backward_every_scale_sign(scale):
    q, k, v, _ = make_inputs(2, 3, 197, 64, torch.bfloat16, "cuda")
    dout = torch.randn(2, 3, 197, 64, device="cuda").bfloat16()
    ours = run(attention, q, k, v, None, dout, scale=scale)
    ref = run(attention_ref, q.double(), k.double(), v.double(), None, dout, scale=scale)
    pt = run(lambda *a, **kw: attention_ref(*a, upcast=False, **kw), q, k, v, None, dout, scale=scale)
    for name, a, b, c in zip(("dq", "dk", "dv"), ours[2], pt[2], ref[2]):
        assert_flash_rule(a, b, c, f"{name} scale={scale}", SLACK[torch.bfloat16] * max(1.0, c.abs().max().item()))


@needs_hopper
@pytest.mark.parametrize("N", (197, 577))
def test_sm90_and_mma_sync_backwards_agree(N):
    """VITFAST_ATTENTION_SM90=0 (read once per process) runs both mma.sync kernels on the same inputs."""
    script = (
        "import sys, torch, vitfast\n"
        "from vitfast.ops import attention\n"
        "torch.manual_seed(0)\n"
        f"x = torch.randn(4, {N}, 3, 12, 64, device='cuda').bfloat16().requires_grad_()\n"
        f"bias = torch.randn(1, 12, {N}, {N}, device='cuda').bfloat16().requires_grad_()\n"
        "q, k, v = x.permute(2, 0, 3, 1, 4).unbind(0)\n"
        "out = attention(q, k, v, bias)\n"
        "out.backward(torch.randn_like(out))\n"
        "torch.save([x.grad.cpu(), bias.grad.cpu()], sys.argv[1])\n")
    for a, b in zip(*with_and_without_sm90(script)):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)
