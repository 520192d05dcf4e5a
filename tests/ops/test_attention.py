"""vitfast.ops.attention against an fp64 reference with the FlashAttention rule (our error at most 2x
the error of plain PyTorch at the same precision), forward and every gradient (q, k, v, bias, and
through the returned logits); strided qkv views, broadcast biases, accumulate modes, bad arguments,
opcheck, torch.compile, and the models' "vitfast" backend. CUDA tests mirror the CPU ones and skip
without a GPU."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import vitfast
from vitfast.layers import set_model_backend, use_backend
from vitfast.ops import attention, attention_ref, attention_support
from vitfast.ops.attention import CUDA_HEAD_DIMS
from tests.values import needs_cuda

LENGTHS = (1, 7, 50, 63, 65, 127, 129, 197, 257, 577, 1000)


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def poison(device):
    """Fill freed allocator memory with NaN so that an output element the kernel never writes shows."""
    size = 1 << (24 if device == "cuda" else 20)
    blocks = [torch.full((size,), float("nan"), device=device) for _ in range(4)]
    blocks.clear()


def make_inputs(B, H, N, d, dtype, device, bias_shape=None, fused=True, generator=None, bias_scale=1.0):
    """Fresh random q, k, v (strided views of one fused qkv projection when fused) and bias; logits of
    order one, so the softmax is neither flat nor one-hot."""
    g = generator
    if fused:
        qkv = torch.randn(B, N, 3, H, d, generator=g, device=device).to(dtype)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    else:
        q, k, v = (torch.randn(B, H, N, d, generator=g, device=device).to(dtype) for _ in range(3))
    bias = None
    if bias_shape is not None:
        bias = (bias_scale * torch.randn(*bias_shape, generator=g, device=device)).to(dtype)
    return q, k, v, bias


def leaves(*ts):
    return [None if t is None else t.detach().requires_grad_() for t in ts]


def run(fn, q, k, v, bias, dout, dlogits=None, **kw):
    """Forward (out, logits) and gradients (dq, dk, dv, dbias) of fn."""
    q, k, v, bias = leaves(q, k, v, bias)
    res = fn(q, k, v, bias, return_logits=dlogits is not None, **kw)
    out, logits = res if dlogits is not None else (res, None)
    loss = (out.double() * dout.double()).sum()
    if logits is not None:
        loss = loss + (logits.double() * dlogits.double()).sum()
    inputs = [t for t in (q, k, v, bias) if t is not None]
    grads = torch.autograd.grad(loss, inputs)
    grads = list(grads) + [None] * (4 - len(grads))
    return out, logits, grads


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


def assert_flash_rule(ours, pt, ref, what, slack=0.0):
    """||ours - ref||_max <= 2 ||pt - ref||_max (+ slack, for exact-ish fp32/fp64 comparisons)."""
    assert torch.isfinite(ours.double()).all(), f"{what}: non-finite values (an unwritten element?)"
    e, e_pt = max_err(ours, ref), max_err(pt, ref)
    assert e <= 2 * e_pt + slack, f"{what}: error {e:.3g} > 2 x PyTorch's {e_pt:.3g} (+{slack:.1g})"


def rounding_slack(ref, dtype):
    """FlashAttention's slack for a gradient (its tests' dq_atol): twice the largest rounding error of the
    reference's values held in dtype, (x + 0.3) - 0.3 - x there, about two of dtype's steps at the
    gradient's size. Kernels that round P and dS to dtype for their products (FlashAttention's and ours,
    mma.sync and sm90 alike) land a step or two from the exact value where PyTorch's result may be close
    by luck: bf16 d 80 N 245 seed 245 puts both our kernels at 2.4x PyTorch's dk error (one key)."""
    c = ref.to(dtype)
    return 2 * ((c + 0.3) - 0.3 - c).abs().max().item()


# Absolute slack on top of the 2x rule, for values PyTorch may get exactly right by luck (N = 1).
SLACK = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 1e-6, torch.bfloat16: 1e-6}


def check_against_reference(B, H, N, d, dtype, device, bias_shape=None, return_logits=False, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    q, k, v, bias = make_inputs(B, H, N, d, dtype, device, bias_shape, generator=g)
    dout = torch.randn(B, H, N, d, generator=g, device=device).to(dtype)
    dlogits = torch.randn(B, H, N, N, generator=g, device=device).to(dtype) if return_logits else None
    poison(device)
    ours = run(attention, q, k, v, bias, dout, dlogits)
    ref = run(attention_ref, *(None if t is None else t.double() for t in (q, k, v, bias)), dout, dlogits)
    pt = run(lambda *a, **kw: attention_ref(*a, upcast=False, **kw), q, k, v, bias, dout, dlogits)
    assert ours[0].shape == (B, H, N, d) and ours[0].dtype == dtype
    slack = SLACK[dtype]
    case = f" at B={B} H={H} N={N} d={d} {str(dtype).removeprefix('torch.')}"  # loops over N name the failing one
    assert_flash_rule(ours[0], pt[0], ref[0], "out" + case, slack)
    if return_logits:
        assert ours[1].shape == (B, H, N, N) and ours[1].dtype == dtype
        assert_flash_rule(ours[1], pt[1], ref[1], "logits" + case, slack)
    # dS = P o (dP - rowsum(dO o O)): two fp32 sums of the same d products in different orders. Where
    # they cancel exactly (N = 1: dS = 0, so dq = dk = dbias = 0) PyTorch may be exact by luck, and we
    # are held to the typical fp32 rounding of that difference, 4 sqrt(d) u32 |dO||V|: through scale
    # |k| or |q| into dq and dk, summed over the entries a broadcast bias gathers into dbias.
    cancel_ds = 4 * d**0.5 * 2.0**-24 * (dout.double().abs() @ v.double().abs().transpose(-2, -1)).max().item()
    cancel = cancel_ds * (d**-0.5) * max(q.abs().max().item(), k.abs().max().item())
    for name, a, b, c in zip(("dq", "dk", "dv", "dbias"), ours[2], pt[2], ref[2]):
        if c is None:
            continue
        assert a.shape == c.shape, (name, a.shape, c.shape)
        floor = {"dq": cancel, "dk": cancel, "dbias": cancel_ds * (B * H * N * N) / c.numel()}.get(name, 0.0)
        slack_grad = slack * max(1.0, c.abs().max().item()) + floor + rounding_slack(c, a.dtype)
        assert_flash_rule(a, b, c, name + case, slack_grad)


# ---- CPU: correctness ----------------------------------------------------------------------------


@pytest.mark.parametrize("N", LENGTHS)
def test_every_length_fp32(N):
    """Every length (with a head dim cycling through the CUDA ones), fp32, forward and all gradients."""
    d = CUDA_HEAD_DIMS[LENGTHS.index(N) % len(CUDA_HEAD_DIMS)]
    check_against_reference(1, 2 if N < 500 else 1, N, d, torch.float32, "cpu", bias_shape=(1, 1, N, N), seed=N)


@pytest.mark.parametrize("d", CUDA_HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_every_head_dim_low_precision(d, dtype):
    check_against_reference(2, 2, 65, d, dtype, "cpu", bias_shape=(2, 2, 65, 65), seed=d)


@pytest.mark.parametrize("bias_shape", [(1, 3, 50, 50), (2, 1, 50, 50), (1, 1, 50, 50), (50, 50), (3, 50, 50)])
def test_broadcast_bias_gradient_comes_back_in_its_shape(bias_shape):
    check_against_reference(2, 3, 50, 32, torch.bfloat16, "cpu", bias_shape=bias_shape, seed=len(bias_shape))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_return_logits_and_gradient_through_them(dtype):
    """DVT feeds the logits to the next stage: their gradient must reach q, k and the bias."""
    check_against_reference(2, 2, 63, 64, dtype, "cpu", bias_shape=(2, 2, 63, 63), return_logits=True)


def test_float64_gradcheck():
    g = torch.Generator().manual_seed(3)
    q, k, v, bias = leaves(*make_inputs(1, 2, 7, 8, torch.float64, "cpu", (1, 2, 7, 7), generator=g))
    assert torch.autograd.gradcheck(lambda *a: attention(*a, return_logits=True), (q, k, v, bias))


def test_strided_views_are_not_copied_and_match_contiguous():
    q, k, v, bias = make_inputs(2, 3, 50, 32, torch.float32, "cpu", (1, 3, 50, 50))
    assert not q.is_contiguous()
    a = attention(q, k, v, bias)
    b = attention(q.contiguous(), k.contiguous(), v.contiguous(), bias)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_out_layout_bnhd_is_the_same_tensor_laid_out_for_the_projection(dtype):
    """out_layout="bnhd": a contiguous (B, N, H, d) holding exactly the (B, H, N, d) result, with the
    same gradients (the backward reads it through a transposed view)."""
    q, k, v, bias = make_inputs(2, 3, 50, 32, dtype, "cpu", (1, 3, 50, 50))
    q, k, v, bias = leaves(q, k, v, bias)
    a = attention(q, k, v, bias, out_layout="bnhd")
    b = attention(q, k, v, bias)
    assert a.shape == (2, 50, 3, 32) and a.is_contiguous()
    torch.testing.assert_close(a, b.transpose(1, 2), rtol=0, atol=0)
    g = torch.randn_like(a)
    ga = torch.autograd.grad(a, (q, k, v, bias), g)
    gb = torch.autograd.grad(b, (q, k, v, bias), g.transpose(1, 2))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    out, logits = attention(q, k, v, bias, return_logits=True, out_layout="bnhd")
    assert out.shape == (2, 50, 3, 32) and logits.shape == (2, 3, 50, 50)
    torch.testing.assert_close(attention_ref(q, k, v, bias, out_layout="bnhd"), a, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="out_layout"):
        attention(q, k, v, out_layout="bshd")


def test_scale_and_masking_bias():
    """A -inf bias masks keys; scale defaults to d**-0.5; SDPA agrees."""
    q, k, v, _ = make_inputs(2, 2, 33, 32, torch.float32, "cpu")
    mask = torch.zeros(33, 33)
    mask[:, 20:] = float("-inf")
    for scale in (None, 0.3):
        ours = attention(q, k, v, mask, scale=scale)
        torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale),
                                   rtol=1e-5, atol=1e-5)


# ---- accumulate ------------------------------------------------------------------------------------


def fp16_accumulation_bound(q, k, v, scale, bias=None):
    """Derived elementwise bound on |out_fp16acc - out_exact| (see attention_cpu.cpp's semantics).
    q kᵀ: ceil(d/16) roundings of a running sum bounded by sum|q||k|, each <= u|partial| with
    u = 2^-11, so |ds| <= ceil(d/16) u scale sum_k|q||k| =: eps_s (per row, max over keys); the softmax
    then moves out by at most 2 eps_s max|v|. p v: rounding p to fp16 (u relative) and ceil(N/16)
    roundings of sums bounded by sum p|v| give (1 + ceil(N/16)) u (p|v|)/l. Plus one output rounding."""
    u = 2.0**-11
    qd, kd, vd = q.double(), k.double(), v.double()
    d, N = q.shape[-1], q.shape[-2]
    eps_s = math.ceil(d / 16) * u * scale * (qd.abs() @ kd.abs().transpose(-2, -1)).amax(-1, keepdim=True)
    eye = torch.eye(N, dtype=torch.float64, device=q.device).expand(*q.shape[:2], N, N)
    p = attention_ref(qd, kd, eye, None if bias is None else bias.double(), scale=scale)
    pv = p @ vd.abs()
    return 2 * eps_s * vd.abs().amax(-2, keepdim=True) + (1 + math.ceil(N / 16)) * u * pv + u * pv + 1e-6


def test_accumulate_fp16_differs_from_fp32_and_stays_within_its_bound():
    g = torch.Generator().manual_seed(5)
    # Large |q kᵀ| and a long reduction: fp16 accumulators lose bits that fp32 keeps.
    q, k, v, _ = make_inputs(1, 2, 577, 128, torch.float16, "cpu", generator=g)
    q, k = q * 3, k * 3
    v = v + 4  # a mean far from zero: p v sums grow, and so does the fp16 rounding of the running sum
    scale = 128**-0.5
    ref = attention_ref(q.double(), k.double(), v.double(), scale=scale)
    o16 = attention(q, k, v, accumulate="fp16").double()
    o32 = attention(q, k, v, accumulate="fp32").double()
    torch.testing.assert_close(attention(q, k, v), o32.half(), rtol=0, atol=0)  # None means fp32
    e16, e32 = (o16 - ref).abs(), (o32 - ref).abs()
    assert e16.max() > 4 * e32.max(), (e16.max().item(), e32.max().item())
    assert (e16 <= fp16_accumulation_bound(q, k, v, scale)).all()
    torch.testing.assert_close(o16.half(), attention_ref(q, k, v, accumulate="fp16"), rtol=0, atol=0)
    # The backward rebuilds p from the same fp16-accumulated logits as the forward's lse: rows of p
    # sum to one, so with dout = 1 every column of dv sums to N.
    q1, k1, v1 = leaves(q, k, v)
    attention(q1, k1, v1, accumulate="fp16").float().sum().backward()
    torch.testing.assert_close(v1.grad.float().sum(-2), torch.full((1, 2, 128), 577.0), rtol=2e-3, atol=0)


# ---- arguments -------------------------------------------------------------------------------------


def test_bad_arguments_raise_naming_the_argument():
    q, k, v, _ = make_inputs(1, 2, 9, 16, torch.float32, "cpu", fused=False)
    cases = [
        (TypeError, "q must be a float", dict(q=q.int())),
        (TypeError, "k must have q's dtype", dict(k=k.double())),
        (ValueError, "v must be 4-D", dict(v=v[0])),
        (ValueError, "k must have q's shape", dict(k=k[:, :, :5])),
        (ValueError, "v must have q's shape", dict(v=torch.randn(1, 2, 9, 8))),
        (ValueError, "k must be on q's device", dict(k=k.to("meta"))),
        (TypeError, "q must be a torch.Tensor", dict(q=q.tolist())),
        (ValueError, "bias must be broadcastable", dict(bias=torch.randn(1, 2, 9, 8))),
        (ValueError, "bias must be broadcastable", dict(bias=torch.randn(3, 2, 9, 9))),
        (ValueError, "bias must be broadcastable", dict(bias=torch.randn(9))),
        (TypeError, "bias must be a floating-point", dict(bias=torch.ones(9, 9, dtype=torch.long))),
        (ValueError, "accumulate must be", dict(accumulate="bf16")),
        (ValueError, "accumulate='fp16' needs float16", dict(accumulate="fp16")),
        (TypeError, "scale must be a float", dict(scale="0.1")),
        (TypeError, "return_logits must be a bool", dict(return_logits=1)),
    ]
    for exc, msg, kw in cases:
        args = {**dict(q=q, k=k, v=v), **{k_: v_ for k_, v_ in kw.items() if k_ in "qkv"}}
        rest = {k_: v_ for k_, v_ in kw.items() if k_ not in "qkv"}
        with pytest.raises(exc, match=msg):
            attention(args["q"], args["k"], args["v"], **rest)


def test_direct_operator_calls_are_checked_in_cpp():
    q, k, v, _ = make_inputs(1, 2, 9, 16, torch.float16, "cpu", fused=False)
    op = torch.ops.vitfast.attention_fwd.default
    for args, msg in [((q.int(), k, v, None), "q must be a float16"),
                      ((q, k.float(), v, None), "k must have q's dtype"),
                      ((q, k, v[0], None), "v must be 4-D"),
                      ((q, k[:, :1], v, None), "k must have q's shape"),
                      ((q, k, v, torch.randn(1, 1, 9, 9)), "bias must have q's dtype"),
                      ((q, k, v, torch.randn(1, 3, 9, 9).half()), "bias must have shape")]:
        with pytest.raises(RuntimeError, match=msg):
            op(*args, 0.25, False, False)
    with pytest.raises(RuntimeError, match="accumulate='fp16' needs float16"):
        op(q.bfloat16(), k.bfloat16(), v.bfloat16(), None, 0.25, False, True)
    out, lse, _ = op(q, k, v, None, 0.25, False, False)
    with pytest.raises(RuntimeError, match="lse must be"):
        torch.ops.vitfast.attention_bwd.default(out, None, q, k, v, None, out, lse.double(), 0.25, False, False)
    with pytest.raises(RuntimeError, match="bias_grad=True needs a bias"):
        torch.ops.vitfast.attention_bwd.default(out, None, q, k, v, None, out, lse, 0.25, False, True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_lse_only_when_a_backward_will_read_it(dtype, monkeypatch):
    """with_lse=False: the same out, an empty lse, and a backward through it says why it cannot run.
    attention() asks for the lse exactly when grad mode is on and an input needs a gradient."""
    q, k, v, bias = make_inputs(2, 3, 17, 16, dtype, "cpu", (1, 3, 17, 17))
    op = torch.ops.vitfast.attention_fwd.default
    out, lse, _ = op(q, k, v, bias, 0.25, False, False, False, True)
    out2, lse2, _ = op(q, k, v, bias, 0.25, False, False, False, False)
    assert lse.shape == (2, 3, 17) and lse2.numel() == 0
    torch.testing.assert_close(out, out2, rtol=0, atol=0)
    torch.library.opcheck(op, (q, k, v, bias, 0.25, False, False, False, False))
    qg = q.detach().requires_grad_()
    out3, _, _ = op(qg, k, v, bias, 0.25, False, False, False, False)
    with pytest.raises(RuntimeError, match="with_lse=False"):
        out3.sum().backward()

    asked = []

    class Recorded:  # the real operator, its with_lse argument noted
        @staticmethod
        def default(*args):
            asked.append(args[-1])
            return op(*args)

    monkeypatch.setattr(torch.ops.vitfast, "attention_fwd", Recorded)  # attention() looks it up per call
    attention(q, k, v)
    attention(qg, k, v)
    with torch.no_grad():
        attention(qg, k, v)
    attention(q, k, v, bias.detach().requires_grad_())
    assert asked == [False, True, False, True]


def test_support_reasons():
    q, k, v, _ = make_inputs(1, 2, 9, 16, torch.float32, "cpu")
    assert attention_support(q, k, v) is None
    assert "dropout" in attention_support(q, k, v, dropout_p=0.1)
    assert "probs" in attention_support(q, k, v, return_attn="probs")
    assert "bias" in attention_support(q, k, v, torch.randn(2, 9))


# ---- registration: opcheck, torch.compile ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_opcheck(dtype):
    q, k, v, bias = leaves(*make_inputs(2, 2, 17, 16, dtype, "cpu", (1, 2, 17, 17)))
    torch.library.opcheck(torch.ops.vitfast.attention_fwd.default, (q, k, v, bias, 0.25, True, False))
    torch.library.opcheck(torch.ops.vitfast.attention_fwd.default, (q, k, v, None, 0.25, False, False))
    out, lse, _ = torch.ops.vitfast.attention_fwd.default(q, k, v, bias, 0.25, False, False)
    dout = torch.randn_like(out)
    torch.library.opcheck(torch.ops.vitfast.attention_bwd.default,
                          (dout, None, q.detach(), k.detach(), v.detach(), bias.detach(), out.detach(),
                           lse.detach(), 0.25, False, True), test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_autocast_leaves_the_op_alone(amp):
    """Under autocast the op sees its inputs unchanged and computes exactly as outside it (its fp32
    log-sum-exp stays fp32), forward and backward."""
    q, k, v, bias = make_inputs(2, 3, 17, 32, amp, "cpu", bias_shape=(1, 3, 17, 17))
    dout = torch.randn(2, 3, 17, 32).to(amp)
    plain = run(attention, q, k, v, bias, dout)
    with torch.autocast("cpu", dtype=amp):
        inside = run(attention, q, k, v, bias, dout)
    pairs = [(plain[0], inside[0])] + list(zip(plain[2], inside[2]))
    for a, b in pairs:
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_torch_compile_fullgraph_forward_and_backward():
    q, k, v, bias = make_inputs(2, 2, 33, 32, torch.float32, "cpu", (1, 2, 33, 33))

    def f(q, k, v, bias):
        out, logits = attention(q, k, v, bias, return_logits=True)
        return out.sum() + logits.square().mean()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a, b = leaves(q, k, v, bias), leaves(q, k, v, bias)
    torch.testing.assert_close(compiled(*a), f(*b))
    ga = torch.autograd.grad(compiled(*a), a)
    gb = torch.autograd.grad(f(*b), b)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


# ---- the models' "vitfast" backend ----------------------------------------------------------------


def test_vit_vitfast_backend_matches_eager_forward_and_gradients():
    torch.manual_seed(0)
    m = vitfast.create_model("vit_tiny_patch16_224", img_size=64, depth=2, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    results = {}
    for backend in ("eager", "vitfast"):
        set_model_backend(m, backend)
        m.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback: the fused op must run
            y = m(x)
        y.square().sum().backward()
        results[backend] = (y.detach(), {n: p.grad.clone() for n, p in m.named_parameters()})
    (ya, ga), (yb, gb) = results["eager"], results["vitfast"]
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], rtol=1e-4, atol=1e-5, msg=n)


def test_vitfast_backend_output_reaches_the_projection_without_a_copy():
    from vitfast.layers import attention_core

    q, k, v, bias = make_inputs(2, 3, 50, 32, torch.float32, "cpu", (1, 3, 50, 50))
    for return_attn in (None, "logits"):
        out, _ = attention_core(q, k, v, 32**-0.5, bias, backend="vitfast", return_attn=return_attn)
        assert out.shape == (2, 3, 50, 32)
        flat = out.transpose(1, 2).reshape(2, 50, 96)
        assert flat.data_ptr() == out.data_ptr() and flat.is_contiguous()  # a view: no copy for the projection
        torch.testing.assert_close(out, attention(q, k, v, bias), rtol=0, atol=0)


def test_vitfast_backend_logits_bias_and_fallbacks():
    from vitfast.layers import Attention, attention_core

    torch.manual_seed(1)
    attn = Attention(64, num_heads=2, qkv_bias=True, backend="vitfast")
    x = torch.randn(2, 9, 64)
    bias = torch.randn(2, 2, 9, 9, requires_grad=True)
    out, logits = attn(x, attn_bias=bias, return_attn="logits")
    attn.backend = "eager"
    ref_out, ref_logits = attn(x, attn_bias=bias, return_attn="logits")
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    q, k, v, _ = make_inputs(1, 2, 9, 16, torch.float32, "cpu")
    with pytest.warns(UserWarning, match="dropout"):
        attention_core(q, k, v, 0.25, dropout_p=0.5, backend="vitfast")
    with pytest.warns(UserWarning, match="probs"):
        _, probs = attention_core(q, k, v, 0.25, backend="vitfast", return_attn="probs")
    assert torch.allclose(probs.sum(-1), torch.ones(1, 2, 9))


def test_dvt_trains_with_the_vitfast_backend():
    """DVT: relationship reuse feeds stage 1's logits (return_logits) as stage 2's bias; the loss of
    the last exit must reach stage 1 through them, and match eager."""
    torch.manual_seed(0)
    m = vitfast.create_model("dvt_t2t_vit_12", img_size=64, depth=2, num_classes=10, feature_reuse=False).train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    grads = {}
    for backend in ("eager", "vitfast"):
        m.zero_grad()
        torch.manual_seed(1)  # the same drop-path draws for both backends
        with use_backend(backend):
            outs = m(x)
            F.cross_entropy(outs[2], y).backward()
        grads[backend] = (torch.stack(outs).detach(), m.less_less_token.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads["vitfast"][0], grads["eager"][0], rtol=1e-4, atol=1e-5)
    assert grads["vitfast"][1].abs().sum() > 0
    torch.testing.assert_close(grads["vitfast"][1], grads["eager"][1], rtol=1e-3, atol=1e-6)


def test_benchmark_script_smoke():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "benchmarks/bench_attention.py", "--device", "cpu", "--quick"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "vitfast" in out.stdout and "TFLOP/s" in out.stdout


# ---- CUDA: the fused kernels (skipped without a GPU) -----------------------------------------------


@needs_cuda
@pytest.mark.parametrize("N", LENGTHS + (2048, 4096))
@pytest.mark.parametrize("d", CUDA_HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_every_length_head_dim_dtype(N, d, dtype):
    B, H = (3, 4) if N <= 1000 else (1, 2)
    check_against_reference(B, H, N, d, dtype, "cuda", seed=N * 7 + d)


@needs_cuda
@pytest.mark.parametrize("N", (1, 50, 65, 197, 257, 577, 1000))
@pytest.mark.parametrize("bias_shape", ["full", "batch", "heads", "shared"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_bias_logits_and_their_gradients(N, bias_shape, dtype):
    B, H = 2, 3
    shape = {"full": (B, H, N, N), "batch": (B, 1, N, N), "heads": (1, H, N, N), "shared": (N, N)}[bias_shape]
    check_against_reference(B, H, N, 64, dtype, "cuda", bias_shape=shape, return_logits=True, seed=N)


@needs_cuda
@pytest.mark.parametrize("d", CUDA_HEAD_DIMS)
def test_cuda_fp32_and_fp64_take_the_reference_path(d):
    for dtype in (torch.float32, torch.float64):
        check_against_reference(2, 2, 65, d, dtype, "cuda", bias_shape=(1, 2, 65, 65))


@needs_cuda
def test_cuda_matches_cpu_and_strided_views():
    q, k, v, bias = make_inputs(3, 4, 197, 64, torch.float16, "cuda", (1, 4, 197, 197))
    a = attention(q, k, v, bias)
    b = attention(q.contiguous(), k.contiguous(), v.contiguous(), bias)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same kernel, same order: bitwise
    c = attention(q.cpu(), k.cpu(), v.cpu(), bias.cpu())
    torch.testing.assert_close(a.cpu(), c, rtol=2e-3, atol=2e-3)


@needs_cuda
def test_cuda_is_deterministic_in_the_forward_and_close_in_the_backward():
    q, k, v, bias = make_inputs(2, 3, 257, 80, torch.bfloat16, "cuda", (1, 3, 257, 257))
    dout = torch.randn_like(q)
    a = run(attention, q, k, v, bias, dout)
    b = run(attention, q, k, v, bias, dout)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    for x, y in zip(a[2], b[2]):  # dq and dbias sum with atomics: the order may change the last bit
        torch.testing.assert_close(x, y, rtol=1e-2, atol=1e-3)


@needs_cuda
@pytest.mark.parametrize("N", (50, 197, 577, 1000))
@pytest.mark.parametrize("d", (64, 128))
def test_cuda_accumulate_fp16(N, d):
    g = torch.Generator(device="cuda").manual_seed(N)
    q, k, v, _ = make_inputs(2, 2, N, d, torch.float16, "cuda", generator=g)
    q, k, v = q * 3, k * 3, v + 4
    scale = d**-0.5
    ref = attention_ref(q.double(), k.double(), v.double(), scale=scale)
    poison("cuda")
    o16 = attention(q, k, v, accumulate="fp16").double()
    o32 = attention(q, k, v, accumulate="fp32").double()
    e16, e32 = (o16 - ref).abs(), (o32 - ref).abs()
    assert torch.isfinite(o16).all()
    if N >= 197:
        assert e16.max() > 2 * e32.max(), (e16.max().item(), e32.max().item())
    assert (e16 <= fp16_accumulation_bound(q, k, v, scale)).all(), (e16 - fp16_accumulation_bound(q, k, v, scale)).max()
    # The backward rebuilds p with fp16 accumulators too, so it matches the forward's lse: with
    # dout = 1, each column of dv sums to N.
    q1, k1, v1 = leaves(q, k, v)
    attention(q1, k1, v1, accumulate="fp16").float().sum().backward()
    torch.testing.assert_close(v1.grad.float().sum(-2), torch.full((2, 2, d), float(N), device="cuda"),
                               rtol=1e-2, atol=0)


@needs_cuda
def test_cuda_bad_arguments():
    q, k, v, _ = make_inputs(1, 2, 9, 64, torch.float16, "cuda")
    with pytest.raises(ValueError, match="k must be on q's device"):
        attention(q, k.cpu(), v)
    with pytest.raises(ValueError, match="head dim must be one of"):
        attention(q[..., :48], k[..., :48], v[..., :48])
    op = torch.ops.vitfast.attention_fwd.default
    with pytest.raises(RuntimeError, match="head dim"):
        op(q[..., :48], k[..., :48], v[..., :48], None, 0.1, False, False)
    with pytest.raises(RuntimeError, match="k must be on q's device"):
        op(q, k.cpu(), v, None, 0.1, False, False)
    misaligned = torch.randn(1, 2, 9, 65, device="cuda").half()[..., 1:]
    out = attention(misaligned, misaligned, misaligned)  # copied to an aligned layout, still right
    torch.testing.assert_close(out, attention_ref(misaligned, misaligned, misaligned), rtol=2e-3, atol=2e-3)


@needs_cuda
def test_cuda_opcheck_and_compile():
    q, k, v, bias = leaves(*make_inputs(2, 2, 65, 64, torch.bfloat16, "cuda", (1, 2, 65, 65)))
    torch.library.opcheck(torch.ops.vitfast.attention_fwd.default, (q, k, v, bias, 0.125, True, False))
    f = torch.compile(lambda q, k, v, b: attention(q, k, v, b).float().square().sum(), fullgraph=True)
    a, b = leaves(q, k, v, bias), leaves(q, k, v, bias)
    torch.testing.assert_close(f(*a), attention(*b).float().square().sum())


@needs_cuda
def test_cuda_vit_backend_matches_eager_in_half_precision():
    import copy

    torch.manual_seed(0)
    m = vitfast.create_model("vit_tiny_patch16_224", num_classes=10).cuda().half().eval()
    x = torch.randn(4, 3, 224, 224, device="cuda").half()
    with torch.no_grad():
        ref = set_model_backend(copy.deepcopy(m).double(), "eager")(x.double())
        pt = set_model_backend(m, "eager")(x)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error")
        ours = set_model_backend(m, "vitfast")(x)
    assert max_err(ours, ref) <= 2 * max_err(pt, ref)


@needs_cuda
def test_cuda_float32_models_fall_back_to_sdpa():
    q, k, v, _ = make_inputs(1, 2, 9, 64, torch.float32, "cuda")
    assert "SDPA is faster" in attention_support(q, k, v)
