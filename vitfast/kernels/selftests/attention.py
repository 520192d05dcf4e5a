"""Self-tests of the fused attention kernels: "attention_mma" (the mma.sync forward and backward, any sm_80+
GPU; VITFAST_ATTENTION_SM90=0 makes them the ones that run on a Hopper GPU too) and "attention_sm90" (the
wgmma/TMA kernels of csrc/attention/sm90/, an H100/H200 only). The cases are those of the GPU tests that
found our defects (tests/ops/test_attention*.py, csrc/attention/NOTES.md): more heads than SMs (B * H = 1..4
x the SM count + 3, N in 129..192: the persistent CTAs' barrier phases), odd lengths, every key-tile and
key-group boundary, every head dim, fp16 and bf16, no bias and each bias shape (its gradient included),
q, k, v as views of one qkv projection and contiguous, both output layouts, the lse a backward reads,
the logits and their gradient (mma.sync), fp16 accumulators, every scale sign and masked rows.

Each case holds ours to the FlashAttention rule against attention_ref in float64 on the same device:
max|ours - ref| <= 2 max|pt - ref| + slack, where pt is the same computation in plain PyTorch at the
inputs' precision (attention_ref(upcast=False)). On the CPU the same cases (fewer heads, long N cut)
compare the CPU operator with the twin."""
import math

import torch

from ... import ops
from .common import assert_same_bits
from . import SelfTest

SELFTESTS = {
    "attention_mma": SelfTest(env={"VITFAST_ATTENTION_SM90": "0"}, budget_s=25.0,
                              kernels=("attention_fwd_kernel", "attention_bwd_kernel"),
                              replaces="test_attention.py: 254 tests, 38 s on the H200 (2026-11-27, "
                                       "VITFAST_ATTENTION_SM90=0)"),
    # The sm90 names alone: where these kernels refuse a case the mma.sync ones run it (a warning), and
    # the cases would pass without proving this family.
    "attention_sm90": SelfTest(capability=(9, 0), exact_capability=True, budget_s=35.0,
                               kernels=("attention_fwd_sm90_kernel", "attention_fwd_long_sm90_kernel",
                                        "attention_bwd_sm90_kernel"),
                               replaces="test_attention_sm90.py + test_attention_bwd_sm90.py: 1,015 tests, "
                                        "61 + 70 s on the H200 (2026-11-27)"),
}

HEAD_DIMS = (32, 64, 80, 96, 128)  # every head dim the CUDA kernels take (ops.attention.CUDA_HEAD_DIMS)
DTYPES = (torch.float16, torch.bfloat16)
NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}
CPU_SMS = 4  # the SM count the many-tile cases are sized for on the CPU
# Absolute slack on top of the 2x rule, for values PyTorch may get exactly right by luck (N = 1).
SLACK = 1e-6
BIAS_KINDS = (None, "full", "heads", "batch", "one", "shared")


def bias_shape(kind, B, H, N):
    """The tests' bias shapes: per (b, h), broadcast over the batch, over the heads, over both, 2-D."""
    return {None: None, "full": (B, H, N, N), "heads": (1, H, N, N), "batch": (B, 1, N, N),
            "one": (1, 1, N, N), "shared": (N, N)}[kind]


def sm_count(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return CPU_SMS


def fit(device, B, H, N, keep_heads=False):
    """The shape a case runs at: as given on a GPU; on the CPU (the twin, on 2 cores: the cases' own test)
    at most 2 x 2 heads unless keep_heads (the many-tile cases, sized by CPU_SMS), N past 320 cut to a
    quarter."""
    if torch.device(device).type == "cuda":
        return B, H, N
    B, H = (B, H) if keep_heads else (min(B, 2), min(H, 2))
    return B, H, N if N <= 320 else N // 4 + 1


def many_heads(sms, k):
    """(B, H) with B * H = k x sms + 3: three work items past k full waves of persistent CTAs."""
    heads = k * sms + 3
    H = 3 if heads % 3 == 0 else 1
    return heads // H, H


def describe(kind, shape, d, dtype, bias, fused, layout="bhnd", extra=""):
    """A case's name: (B, H, N) as run (and as a GPU runs it, where the CPU's is smaller), d, dtype, bias,
    layouts and what else it checks."""
    (B, H, N), gpu = shape
    if bias in BIAS_KINDS:
        label = f"bias {bias_shape(bias, B, H, N)}" if bias else "no bias"
    else:
        label = bias  # a special bias, named by its case
    parts = [f"B={B} H={H} N={N}" + ("" if gpu == (B, H, N) else " (B={} H={} N={} on a GPU)".format(*gpu)),
             f"d={d}", NAMES[dtype], label, "qkv views" if fused else "contiguous q k v"]
    if layout != "bhnd":
        parts.append(f"out_layout={layout}")
    if extra:
        parts.append(extra)
    return f"attention {kind}: " + ", ".join(parts)


# ---- inputs and the rule ---------------------------------------------------------------------------


def make_inputs(B, H, N, d, dtype, device, bias, fused, seed):
    """q, k, v (strided views of one fused (B, N, 3, H, d) projection when fused) and a bias, logits of
    order one; and the generator, for what the case draws next."""
    g = torch.Generator(device=device).manual_seed(seed)
    if fused:
        q, k, v = torch.randn(B, N, 3, H, d, generator=g, device=device).to(dtype).permute(2, 0, 3, 1, 4).unbind(0)
    else:
        q, k, v = (torch.randn(B, H, N, d, generator=g, device=device).to(dtype) for _ in range(3))
    shape = bias_shape(bias, B, H, N)
    b = None if shape is None else torch.randn(shape, generator=g, device=device).to(dtype)
    return q, k, v, b, g


def poison(device):
    """Fill freed allocator memory with NaN, so an output element a kernel never writes shows."""
    size = 1 << (24 if torch.device(device).type == "cuda" else 16)
    blocks = [torch.full((size,), float("nan"), device=device) for _ in range(4)]
    blocks.clear()


def doubles(*ts):
    return [None if t is None else t.double() for t in ts]


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


def flash_rule(ours, pt, ref, what, slack):
    """FlashAttention's rule: max|ours - ref| <= 2 max|pt - ref| + slack (pt: plain PyTorch at the inputs'
    precision; ref: float64), and every value finite (a NaN here is an unwritten or corrupt element)."""
    if tuple(ours.shape) != tuple(ref.shape):
        raise AssertionError(f"{what}: shape {tuple(ours.shape)} against {tuple(ref.shape)}")
    bad = ~torch.isfinite(ours.detach().double())
    if bool(bad.any()):
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.numel()} values not finite (an unwritten element?)")
    e, e_pt = max_err(ours.detach(), ref.detach()), max_err(pt.detach(), ref.detach())
    if not e <= 2 * e_pt + slack:
        raise AssertionError(f"{what}: max error {e:.3g} over 2 x PyTorch's {e_pt:.3g} (+{slack:.2g})")


def rounding_slack(ref, dtype):
    """The tests' (FlashAttention's dq_atol) slack for a gradient: twice the largest rounding error of the
    reference's values held in dtype, about two of dtype's steps at the gradient's size. Kernels that round
    P and dS to dtype land a step or two off where PyTorch may be close by luck (bf16 d 80 N 245: 2.4x)."""
    c = ref.to(dtype)
    return 2 * ((c + 0.3) - 0.3 - c).abs().max().item()


def lse_ref(q, k, bias, scale):
    s = (q.double() @ k.double().transpose(-2, -1)) * scale
    return torch.logsumexp(s if bias is None else s + bias.double(), dim=-1)


def check_lse(lse, want, what):
    """fp32 logits, exp2 and an fp32 sum of N terms: ~1e-5 here; a wrong base, scale or row is off by O(1)."""
    lse, want = lse.double(), want.to(lse.device)
    if tuple(lse.shape) != tuple(want.shape):
        raise AssertionError(f"{what}: lse shape {tuple(lse.shape)} against {tuple(want.shape)}")
    inf = torch.isinf(want)
    bad = torch.where(inf, lse != want, ~((lse - want).abs() <= 1e-4 * (1 + want.abs())))
    if bool(bad.any()):
        worst = (lse - want)[~inf].abs().max().item() if bool((~inf).any()) else float("nan")
        raise AssertionError(f"{what}: lse off in {int(bad.sum())} of {bad.numel()} rows, worst by {worst:.3g}")


def as_bhnd(out, layout, B, H, N, d, what):
    """out in the (B, H, N, d) view; a "bnhd" result must be a contiguous (B, N, H, d)."""
    if layout == "bnhd":
        if tuple(out.shape) != (B, N, H, d) or not out.is_contiguous():
            raise AssertionError(f"{what}: out_layout='bnhd' gave {tuple(out.shape)}, "
                                 f"contiguous={out.is_contiguous()}")
        return out.transpose(1, 2)
    return out


# ---- the checks ---------------------------------------------------------------------------------------


def check_forward(device, B, H, N, d, dtype, bias, fused, layout, logits, scale, seed, what):
    """The inference path (no gradient wanted: no lse) by the rule, its logits too; then the operator with
    the lse a backward reads: the same out bit for bit (either layout), and the lse in float64."""
    q, k, v, b, _ = make_inputs(B, H, N, d, dtype, device, bias, fused, seed)
    s = d**-0.5 if scale is None else scale
    poison(device)
    res = ops.attention(q, k, v, b, scale=scale, return_logits=logits, out_layout=layout)
    out, lg = res if logits else (res, None)
    out = as_bhnd(out, layout, B, H, N, d, what)
    ref = ops.attention_ref(*doubles(q, k, v, b), scale=scale, return_logits=logits)
    pt = ops.attention_ref(q, k, v, b, scale=scale, return_logits=logits, upcast=False)
    if logits:
        flash_rule(lg, pt[1], ref[1], f"{what}: logits", SLACK)
        ref, pt = ref[0], pt[0]
    flash_rule(out, pt, ref, f"{what}: out", SLACK)
    b4 = None if b is None else b.reshape((1,) * (4 - b.dim()) + tuple(b.shape))
    # return_logits as above: the mma.sync kernel without logits, bias or scale <= 0 takes another path
    out2, lse, _ = torch.ops.vitfast.attention_fwd.default(q, k, v, b4, float(s), logits, False, False, True)
    assert_same_bits(out2, out, f"{what}: out written with the lse (bhnd) against without")
    check_lse(lse, lse_ref(q, k, b, s), what)


def leaves(*ts):
    return [None if t is None else t.detach().requires_grad_() for t in ts]


def run(fn, q, k, v, bias, dout, dlogits, scale, layout="bhnd", what=""):
    """Forward (out as (B, H, N, d), logits) and gradients (dq, dk, dv, dbias) of fn."""
    q, k, v, bias = leaves(q, k, v, bias)
    res = fn(q, k, v, bias, scale=scale, return_logits=dlogits is not None, out_layout=layout)
    out, logits = res if dlogits is not None else (res, None)
    out = as_bhnd(out, layout, *q.shape, what)
    loss = (out.double() * dout.double()).sum()
    if logits is not None:
        loss = loss + (logits.double() * dlogits.double()).sum()
    grads = list(torch.autograd.grad(loss, [t for t in (q, k, v, bias) if t is not None]))
    return out, logits, grads + [None] * (4 - len(grads))


def check_backward(device, B, H, N, d, dtype, bias, fused, layout, logits, scale, seed, what):
    """The training path: out (and logits) and dq, dk, dv, dbias by the rule, each gradient with the tests'
    slack: a rounding step of dtype, and where dS = P o (dP - rowsum(dO o O)) cancels (N = 1: dq = dk =
    dbias = 0) the typical fp32 rounding of that difference, 4 sqrt(d) u32 |dO||V|, carried into dq and dk
    by |scale| |k| or |q| and summed over the entries a broadcast bias gathers into dbias."""
    q, k, v, b, g = make_inputs(B, H, N, d, dtype, device, bias, fused, seed)
    dout = torch.randn(B, H, N, d, generator=g, device=device).to(dtype)
    dlogits = torch.randn(B, H, N, N, generator=g, device=device).to(dtype) if logits else None
    s = d**-0.5 if scale is None else scale
    poison(device)
    ours = run(ops.attention, q, k, v, b, dout, dlogits, scale, layout, what)
    ref = run(ops.attention_ref, *doubles(q, k, v, b), dout, dlogits, scale)
    pt = run(lambda *a, **kw: ops.attention_ref(*a, upcast=False, **kw), q, k, v, b, dout, dlogits, scale)
    flash_rule(ours[0], pt[0], ref[0], f"{what}: out", SLACK)
    if logits:
        flash_rule(ours[1], pt[1], ref[1], f"{what}: logits", SLACK)
    cancel_ds = 4 * d**0.5 * 2.0**-24 * (dout.double().abs() @ v.double().abs().transpose(-2, -1)).max().item()
    cancel = cancel_ds * abs(s) * max(q.abs().max().item(), k.abs().max().item())
    for name, a, p, c in zip(("dq", "dk", "dv", "dbias"), ours[2], pt[2], ref[2]):
        if c is None:
            continue
        floor = {"dq": cancel, "dk": cancel, "dbias": cancel_ds * (B * H * N * N) / c.numel()}.get(name, 0.0)
        slack = SLACK * max(1.0, c.abs().max().item()) + floor + rounding_slack(c, a.dtype)
        flash_rule(a, p, c, f"{what}: {name}", slack)


def fp16_accumulation_bound(q, k, v, scale, bias=None):
    """The tests' derived elementwise bound on |out_fp16acc - out_exact| (attention_cpu.cpp's semantics):
    q kᵀ in ceil(d/16) roundings of a running sum, each <= u |partial| (u = 2^-11), so |ds| <= eps_s :=
    ceil(d/16) u scale max_k sum|q||k|, moving out by at most 2 eps_s max|v|; p v: p rounded to fp16 and
    ceil(N/16) roundings of sums bounded by sum p|v|; plus one output rounding."""
    u = 2.0**-11
    qd, kd, vd = doubles(q, k, v)
    d, N = q.shape[-1], q.shape[-2]
    eps_s = math.ceil(d / 16) * u * scale * (qd.abs() @ kd.abs().transpose(-2, -1)).amax(-1, keepdim=True)
    eye = torch.eye(N, dtype=torch.float64, device=q.device).expand(*q.shape[:2], N, N)
    p = ops.attention_ref(qd, kd, eye, None if bias is None else bias.double(), scale=scale)
    pv = p @ vd.abs()
    return 2 * eps_s * vd.abs().amax(-2, keepdim=True) + (1 + math.ceil(N / 16)) * u * pv + u * pv + 1e-6


def check_fp16_accumulation(device, B, H, N, d, bias, used, emulated, seed, what):
    """accumulate="fp16": finite and within the derived bound (large q kᵀ and p v sums, where fp16
    accumulators lose bits); where `used`, over twice fp32's error (they are really fp16), and where
    `emulated`, within 4x the CPU emulation's error; and an lse the backward (fp32 accumulation, the
    mma.sync kernel's on every GPU) rebuilds P from: with dout = 1 each column of dv sums to N."""
    q, k, v, b, _ = make_inputs(B, H, N, d, torch.float16, device, bias, True, seed)
    q, k, v = q * 3, k * 3, v + 4
    scale = d**-0.5
    ref = ops.attention_ref(*doubles(q, k, v, b), scale=scale)
    poison(device)
    o16 = ops.attention(q, k, v, b, accumulate="fp16").double()
    if not bool(torch.isfinite(o16).all()):
        raise AssertionError(f"{what}: non-finite values")
    err, bound = (o16 - ref).abs(), fp16_accumulation_bound(q, k, v, scale, b)
    if not bool((err <= bound).all()):
        raise AssertionError(f"{what}: over the fp16 accumulation bound by {(err - bound).max().item():.3g}")
    e16 = err.max().item()
    if used:
        e32 = max_err(ops.attention(q, k, v, b), ref)
        if not e16 > 2 * e32:
            raise AssertionError(f"{what}: error {e16:.3g} not over 2 x fp32 accumulation's {e32:.3g}")
    if emulated:
        emu = max_err(ops.attention_ref(q, k, v, b, accumulate="fp16"), ref)
        if not emu / 4 < e16 < 4 * emu:
            raise AssertionError(f"{what}: error {e16:.3g} not within 4x of the emulation's {emu:.3g}")
    q1, k1, v1 = leaves(q, k, v)
    ops.attention(q1, k1, v1, b, accumulate="fp16").float().sum().backward()
    sums = v1.grad.double().sum(-2)
    off = ((sums - N).abs() / N).max().item()
    if not off <= 1e-2:
        raise AssertionError(f"{what}: a column of dv (dout = 1) sums to N within {off:.3g}, over 1e-2")


def check_masked(device, B, H, N, d, kind, seed, what):
    """Biases that make each row's maximum grow key tile by key tile (O and l rescaled at every tile), put
    it in the first tile, or mask the first tiles' keys of some rows and every key of one (NaN out and an
    lse of -inf, as eager's softmax), out and lse by the rule elsewhere."""
    q, k, v, _, _ = make_inputs(B, H, N, d, torch.bfloat16, device, None, True, seed)
    keys = torch.arange(N, device=device, dtype=torch.float32)
    if kind == "masked":
        bias = torch.zeros(1, H, N, N, device=device)
        bias[0, :, 3:40, :min(400, N - N // 4)] = float("-inf")  # the first tiles' keys and part of one
        bias[0, H - 1, 7] = float("-inf")
    else:
        bias = (keys / 16 if kind == "ramp up" else -keys / 16).expand(1, H, N, N)
    bias = bias.to(torch.bfloat16)
    s = d**-0.5
    poison(device)
    out, lse, _ = torch.ops.vitfast.attention_fwd.default(q, k, v, bias, s, False, False, False, True)
    ref = ops.attention_ref(*doubles(q, k, v, bias), scale=s)
    pt = ops.attention_ref(q, k, v, bias, scale=s, upcast=False)
    rows = torch.isfinite(ref).all(-1)
    if not bool(torch.isnan(out[~rows]).all()):
        raise AssertionError(f"{what}: a row whose keys are all masked is not NaN")
    flash_rule(out[rows], pt[rows], ref[rows], f"{what}: out", SLACK)
    check_lse(lse, lse_ref(q, k, bias, s), what)
    with torch.no_grad():
        assert_same_bits(ops.attention(q, k, v, bias, scale=s), out, f"{what}: out without the lse against with")


def check_views(device, B, H, N, d, dtype, bias, seed, what):
    """q, k, v as views of one qkv projection read through their strides: the same bits as contiguous."""
    q, k, v, b, _ = make_inputs(B, H, N, d, dtype, device, bias, True, seed)
    a = ops.attention(q, k, v, b)
    c = ops.attention(q.contiguous(), k.contiguous(), v.contiguous(), b)
    assert_same_bits(a, c, f"{what}: views against contiguous")


# ---- the cases ----------------------------------------------------------------------------------------


def forward(device, B, H, N, d, dtype, bias=None, fused=True, layout="bhnd", logits=False, scale=None,
            seed=0, keep_heads=False):
    """A (name, check) pair of check_forward at the shape fit() gives (the shape the name says)."""
    shape = fit(device, B, H, N, keep_heads)
    extra = ", ".join(x for x in ("logits" if logits else "", "" if scale is None else f"scale={scale}") if x)
    what = describe("forward", (shape, (B, H, N)), d, dtype, bias, fused, layout, extra)
    return what, lambda: check_forward(device, *shape, d, dtype, bias, fused, layout, logits, scale, seed, what)


def backward(device, B, H, N, d, dtype, bias=None, fused=True, layout="bhnd", logits=False, scale=None,
             seed=0, keep_heads=False):
    shape = fit(device, B, H, N, keep_heads)
    extra = ", ".join(x for x in ("logits and their gradient" if logits else "",
                                  "" if scale is None else f"scale={scale}") if x)
    what = describe("forward+backward", (shape, (B, H, N)), d, dtype, bias, fused, layout, extra)
    return what, lambda: check_backward(device, *shape, d, dtype, bias, fused, layout, logits, scale, seed, what)


def fp16_accumulation(device, B, H, N, d, bias=None, used=False, emulated=False, seed=0):
    shape = fit(device, B, H, N)
    extra = ", ".join(x for x in ("over 2x fp32's error" if used else "", "near the emulation's" if emulated else "")
                      if x)
    what = describe("forward (accumulate='fp16') + dv", (shape, (B, H, N)), d, torch.float16, bias, True,
                    extra=extra)
    return what, lambda: check_fp16_accumulation(device, *shape, d, bias, used, emulated, seed, what)


def masked(device, B, H, N, d, kind, seed=0):
    shape = fit(device, B, H, N)
    what = describe("forward", (shape, (B, H, N)), d, torch.bfloat16,
                    f"{kind} bias (1, {shape[1]}, {shape[2]}, {shape[2]})", True)
    return what, lambda: check_masked(device, *shape, d, kind, seed, what)


def views(device, B, H, N, d, dtype, bias, seed=0):
    shape = fit(device, B, H, N)
    what = describe("forward", (shape, (B, H, N)), d, dtype, bias, True, extra="bits against contiguous q k v")
    return what, lambda: check_views(device, *shape, d, dtype, bias, seed, what)


def combos():
    """(i, (dtype, d)): every dtype and head dim."""
    return enumerate((dtype, d) for dtype in DTYPES for d in HEAD_DIMS)


def some(lengths, i, quick, every):
    """All of lengths, or (quick) every `every`-th from the i-th: each combo its own few."""
    return lengths[i % every::every] if quick else lengths


def many_tile_cases(device, quick, lengths):
    """B * H = k x SMs + 3 for k = 1..4 (heads kept on the CPU too: its stand-in SM count is small). At N
    in 129..192 each head's 192-key tile has a 64-row half past N: with an even SM count the odd CTAs get
    only such halves, three of them at k = 1 (the first GPU run's launch failure, NOTES.md)."""
    sms = sm_count(device)
    for k in ((1, 4) if quick else (1, 2, 3, 4)):
        B, H = many_heads(sms, k)
        for j, N in enumerate(lengths[:1] if quick else lengths):
            dtype, d, bias = (torch.bfloat16, 64, None) if (k + j) % 2 else (torch.float16, 80, "heads")
            yield forward(device, B, H, N, d, dtype, bias, layout="bnhd" if j == 2 else "bhnd", seed=k * 100 + N,
                          keep_heads=True)
            if not quick or k == 1:
                yield backward(device, B, H, N, HEAD_DIMS[(k + j) % 5], DTYPES[j % 2], seed=k * 100 + N + 1,
                               keep_heads=True)


def mma_cases(device, quick):
    """tests/ops/test_attention.py's CUDA tests, which run the mma.sync kernels under VITFAST_ATTENTION_SM90=0:
    every length, head dim and dtype; each bias shape with the logits and their gradient; fp16 accumulators;
    every scale sign (the plain path takes its row maxima over raw q kᵀ, valid for scale > 0 only)."""
    lengths = (1, 7, 50, 63, 65, 127, 129, 160, 192, 197, 257, 577, 1000, 2048)
    biases = (None, "heads", "full", "shared", "batch")
    for i, (dtype, d) in combos():
        for j, N in enumerate(some(lengths, i, quick, 14)):
            yield forward(device, *((3, 4) if N <= 1000 else (1, 2)), N, d, dtype, biases[(i + j) % 5],
                          fused=(i + j) % 2 == 0, layout="bnhd" if (i + j) % 3 == 0 else "bhnd",
                          logits=(i + j) % 4 == 1, seed=N * 7 + d)
        for j, N in enumerate(some(lengths, i + 7, quick, 14)):
            yield backward(device, *((3, 4) if N <= 1000 else (1, 2)), N, d, dtype, fused=(i + j) % 2 == 1,
                           layout="bnhd" if (i + j) % 3 == 1 else "bhnd", seed=N * 7 + d + 1)
    bias_lengths = (1, 50, 65, 197, 257, 577, 1000)
    for i, dtype in enumerate(DTYPES):
        for j, bias in enumerate(("full", "batch", "heads", "shared", "one")):
            for m, N in enumerate(some(bias_lengths, i * 5 + j, quick, 7)):
                if not quick or i == j % 2:
                    yield backward(device, 2, 3, N, HEAD_DIMS[(i + j + m) % 5], dtype, bias, logits=True, seed=N + j)
    yield from many_tile_cases(device, quick, (129, 160, 192, 197))
    for N in ((577,) if quick else (50, 197, 577, 1000)):
        for d in ((64,) if quick else (64, 128)):
            yield fp16_accumulation(device, 2, 2, N, d, used=N >= 197, seed=N)
    for scale in ((0.0, -0.3) if quick else (0.125, 0.0, -0.3, 2.0)):
        for N in ((197,) if quick else (50, 197, 577)):
            yield forward(device, 2, 3, N, 64, torch.bfloat16, scale=scale, seed=N)
    for d in ((64,) if quick else HEAD_DIMS):
        yield views(device, 3, 4, 197, d, torch.float16, "heads", seed=d)
    for d in ((64,) if quick else (64, 128)):
        for kind in (("masked",) if quick else ("ramp up", "ramp down", "masked")):
            yield masked(device, 2, 3, 577, d, kind, seed=d)


def sm90_cases(device, quick):
    """tests/ops/test_attention_sm90.py and test_attention_bwd_sm90.py: the whole-head forward's key tiles
    (8-key tail, 64/128/192/256) and the key-tiled one's 64-key chunks past 256; the backward's whole heads,
    key groups (d <= 64 above 256 keys, else above 128), a head per warpgroup at <= 64 keys, many heads per
    CTA and bias gradients of every shape (fp32 partial sums per batch slot where broadcast); the forward's
    fp16 accumulators, its online-softmax rescaling, masked rows and every scale sign."""
    fwd_lengths = (1, 2, 7, 8, 9, 17, 33, 63, 64, 65, 100, 127, 128, 129, 160, 191, 192, 193, 200, 255, 256, 257,
                   300, 320, 385, 448, 513, 577, 640, 769, 1025, 2049, 4096)
    biases = (None, "full", "heads")
    for i, (dtype, d) in combos():
        for j, N in enumerate(some(fwd_lengths, i * 3, quick, 17)):
            yield forward(device, *((2, 3) if N <= 1025 else (1, 2)), N, d, dtype, biases[(i + j) % 3],
                          fused=(i + j) % 2 == 0, layout="bnhd" if (i + j) % 4 == 0 else "bhnd", seed=N + d)
    bwd_lengths = (1, 7, 33, 50, 63, 64, 65, 100, 128, 129, 160, 192, 193, 197, 245, 255, 256, 257, 300,
                   385, 512, 513, 577, 1025, 4096)
    for i, (dtype, d) in combos():
        for j, N in enumerate(some(bwd_lengths, i * 3 + 1, quick, 13)):
            yield backward(device, *((1, 2) if N <= 1025 else (1, 1)), N, d, dtype, fused=(i + j) % 2 == 0,
                           layout="bnhd" if (i + j) % 3 == 0 else "bhnd", seed=N)
    bias_lengths = (1, 7, 50, 64, 65, 128, 129, 192, 193, 197, 256, 257, 577)
    shapes = ("full", "heads", "batch", "one")
    for i, (dtype, d) in combos():
        for j, N in enumerate(some(bias_lengths, i * 5, quick, 13)):
            yield backward(device, 2, 3, N, d, dtype, shapes[(i + j) % 4], fused=(i + j) % 2 == 1, seed=N + d)
    # a batch-broadcast bias's gradient summed over a batch larger than its slots
    big = ((32, 12, 197, 64), (300, 1, 50, 64), (16, 16, 257, 80), (20, 12, 577, 64))
    for B, H, N, d in big[:1] if quick else big:
        yield backward(device, B, H, N, d, torch.bfloat16, "heads", seed=B)
    # N <= 64: a head per consumer warpgroup, odd and even counts of heads per CTA
    small = ((1, 1, 50), (133, 1, 64), (97, 5, 1), (300, 3, 50), (41, 7, 33))
    for m, (B, H, N) in enumerate(small[1:2] if quick else small):
        for n, d in enumerate((HEAD_DIMS[m],) if quick else HEAD_DIMS):
            yield backward(device, B, H, N, d, torch.bfloat16, "heads" if (m + n) % 2 else None, seed=B + N)
    yield from many_tile_cases(device, quick, (129, 160, 192, 50, 257, 577))
    acc_lengths = (1, 7, 64, 65, 128, 129, 192, 193, 256, 257, 300, 385, 577, 1025, 2049)
    for j, N in enumerate(acc_lengths[4::5] if quick else acc_lengths):
        for n, d in enumerate((HEAD_DIMS[j],) if quick else HEAD_DIMS):
            yield fp16_accumulation(device, 2, 2, N, d, biases[(j + n) % 3], seed=N + d)
    for N in ((197,) if quick else (197, 577, 1025)):
        for d in ((64,) if quick else (64, 128)):
            yield fp16_accumulation(device, 2, 2, N, d, used=True, emulated=True, seed=N)
    for d in ((64,) if quick else (64, 128)):
        for kind in (("masked",) if quick else ("ramp up", "ramp down", "masked")):
            yield masked(device, 2, 3, 577, d, kind, seed=d)
    for m, N in enumerate((257,) if quick else (1, 50, 197, 256, 257, 577)):
        yield views(device, 2, 3, N, HEAD_DIMS[m % 5], torch.bfloat16, "heads", seed=N)
    for scale in ((-0.3,) if quick else (0.125, 0.0, -0.3, 2.0)):
        for N in ((197,) if quick else (50, 197, 577)):
            yield forward(device, 2, 3, N, 64, torch.bfloat16, scale=scale, seed=N)
        if scale != 2.0:  # the backward test's scales
            yield backward(device, 2, 3, 197, 64, torch.bfloat16, scale=scale, seed=7)


def cases(family, device, quick=False):
    """(name, check) pairs of `family` on `device`."""
    if family == "attention_mma":
        yield from mma_cases(device, quick)
    elif family == "attention_sm90":
        yield from sm90_cases(device, quick)
    else:
        raise ValueError(f"no attention family {family!r}")
