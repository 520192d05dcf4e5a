"""Self-tests of layer_norm (LayerNorm over the last dimension, optionally fused with the residual add
before it: the output, the sum, dx, dweight, dbias and the residual's gradient) and layer_norm_fp8
(LayerNorm into e4m3 codes with a static scale).

layer_norm: the 2x-PyTorch rule of tests/ops/test_layer_norm.py (our relative error against float64
at most twice that of F.layer_norm at the same precision, plus 2e-6 on the outputs and 1e-5 on the
gradients; the float64 reference normalises the sum as x's dtype rounds it, the op's definition), the
sum bit for bit x + residual in x's dtype, a 16-bit model's own gamma and beta bit for
bit their float32 copies, the forward without statistics bit for bit the one with them. Every width of
layer_norm_fixed.cuh (192-1280) and widths around and between them, the any-width kernels' small ones,
their last cached width (1536) and the uncached ones above; fp32 / fp16 / bf16 with the parameters in
x's dtype and in float32; rows at odd counts and many persistent rounds; large-mean rows, where a
one-pass variance cancels. (The op takes multiples of 8 alone: the kernels read 16-byte vectors.)

layer_norm_fp8: against layer_norm_fp8_ref, bit for bit where the ATen composite runs (the CPU, float32
x, widths without a fixed kernel) and, where the CUDA kernel runs, tests/ops/test_layer_norm_fp8.py's
rule (fp32 statistics summed in another order: a code at most one e4m3 step from the twin's, on under
1e-3 of the elements); saturation to +-448, NaN confined to its row, and the codes within half a step of
a float64 LayerNorm.

On the GPU the float64 references run on the GPU and the errors are measured there (the many-row cases
move ~250 MB per tensor); on the CPU the same cases run at fewer rows."""
import math

import torch
import torch.nn.functional as F

from ... import ops
from .common import assert_2x_torch, assert_same_bits
from . import SelfTest

# budget_s: estimates (485 and 137 cases, mostly of a few hundred rows), not yet timed on a GPU.
SELFTESTS = {
    # In layer_norm's process only layer_norm runs: any of its five kernels (fixed-width forward and
    # backward, any-width forward, dx, dweight/dbias) shows the family ran; the widths reach all five.
    "layer_norm": SelfTest(kernels=("layer_norm_fwd_fixed", "layer_norm_bwd_fixed", "layer_norm_fwd_kernel",
                                    "layer_norm_bwd_dx_kernel", "layer_norm_bwd_params_kernel"),
                           budget_s=15.0,
                           replaces="test_layer_norm.py: 124 tests, 26 s on the H200 (2026-11-27)"),
    # The FP8 op launches one template, layer_norm_fwd_fixed<T, D, false, false, uint8_t> (fp16 / bf16 x
    # at the fixed widths; anything else runs the composite); in this family's process no other op of
    # ours that launches it runs, so a layer_norm_fwd_fixed launch is the FP8 kernel.
    "layer_norm_fp8": SelfTest(kernels=("layer_norm_fwd_fixed",), budget_s=8.0,
                               replaces="test_layer_norm_fp8.py: 40 tests, 24 s on the H200 (2026-11-27)"),
}

EPS = 1e-5
FIXED_WIDTHS = (192, 256, 384, 512, 768, 1024, 1280)  # layer_norm_fixed.cuh's kFixedWidths
# The any-width kernels: tiny rows, either side of the fixed widths (an odd count of 8-element vectors
# at 200, 776, 1000), past 1280, the last cached width (6 vectors a lane), then the uncached kernels.
OTHER_WIDTHS = (8, 40, 184, 200, 776, 1000, 1288, 1536, 1544, 2048, 4104)
NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# (x's dtype, the parameters' dtype): a 16-bit model's own parameters, and float32 ones (autocast's)
COMBOS = ((torch.float32, torch.float32), (torch.float16, torch.float16), (torch.float16, torch.float32),
          (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32))
QUICK_COMBOS = (COMBOS[0], COMBOS[2], COMBOS[3])
FLOOR_OUT, FLOOR_GRAD = 2e-6, 1e-5  # tests/ops/test_layer_norm.py's floors of the 2x-PyTorch rule
# test_cuda_many_rows_and_cpu_agreement: max |ours - the other device's| over max |y|
AGREE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def on_gpu(device):
    return torch.device(device).type != "cpu"


def lead_shape(device, kind):
    """The leading dimensions (rows) of a case: the GPU's sizes, or a few rows on the CPU. Odd counts
    leave a ragged last block or persistent round."""
    gpu = on_gpu(device)
    return {"rows": (3, 197) if gpu else (3, 5), "strided": (4, 96) if gpu else (4, 6),
            "agree": (64, 197) if gpu else (4, 33)}[kind]


def many_rows(device, quick):
    # 25,219: several rounds of the persistent blocks at every width (each warp walks many rows, the
    # next one prefetched); 4,099: a ragged last round over warps of 4, 2 or 1 rows.
    rows = (25219, 4099) if on_gpu(device) else (515, 67)
    return rows[:1] if quick else rows


def describe(D, rows, dtype, pdtype, residual, what, extra=""):
    params = "" if pdtype is None else f" params={NAMES[pdtype]}"
    return f"D={D} rows={rows} {NAMES[dtype]}{params} residual={'yes' if residual else 'no'} {what}{extra}"


def inputs(shape, dtype, pdtype, device, residual, seed, loc=1.5, spread=3.0, rspread=1.0):
    """x (a mean and a scale to remove: statistics must be computed, not assumed), the residual, weight
    and bias, drawn on `device` (the many-row cases' inputs, drawn on the CPU, would take seconds)."""
    g = torch.Generator(device).manual_seed(seed)
    D = shape[-1]
    x = (torch.randn(shape, generator=g, device=device) * spread + loc).to(dtype)
    r = (torch.randn(shape, generator=g, device=device) * rspread).to(dtype) if residual else None
    w = (torch.rand(D, generator=g, device=device) + 0.5).to(pdtype)
    b = torch.randn(D, generator=g, device=device).to(pdtype)
    return x, r, w, b


def eager(x, w, b, r, rounded=None):
    """PyTorch's LayerNorm of x (+ r) at the inputs' precision; float64 inputs give the reference, which
    normalises the sum as x's dtype rounds it (`rounded`: the op's definition). Its rounding error is a
    constant added to the exact sum, so the gradients are the sum's: at a large mean the rounding moves
    a row's values by a good part of its spread, an error ours and PyTorch's would share, loosening the
    2x rule to nothing."""
    s = x if r is None else x + r
    if rounded is not None:
        s = s + (rounded.detach().to(s.dtype) - s.detach())
    if w.dtype != s.dtype:
        # float32 parameters with a 16-bit x (autocast's): PyTorch's CUDA LayerNorm refuses the mix and its
        # CPU one computes in float32 and rounds once to x's dtype, which this does on either device
        y = F.layer_norm(s.float(), (s.shape[-1],), w.float(), b.float(), EPS).to(s.dtype)
        return [s, y] if r is not None else [y]
    y = F.layer_norm(s, (s.shape[-1],), w, b, EPS)
    return [s, y] if r is not None else [y]


def run_layer_norm(D, lead, dtype, pdtype, residual, backward, device, seed, loc=1.5, spread=3.0,
                   strided=False, slack=0.0, what=""):
    """Forward (the sum and the output) and, with backward, the gradients of x, residual, weight and
    bias with incoming gradients on both outputs (the sum feeds the next residual add in a block).
    Without backward no input needs a gradient: the kernels that write no statistics run."""
    # a large-mean sum keeps x's ratio of mean to spread: its residual at x's spread
    x, r, w, b = inputs(tuple(lead) + (D,), dtype, pdtype, device, residual, seed, loc, spread,
                        1.0 if slack == 0 else spread)
    leaves = [t for t in (x, r, w, b) if t is not None]
    names = [n for n, t in zip(("x", "residual", "weight", "bias"), (x, r, w, b)) if t is not None]
    for t in leaves:
        t.requires_grad_(backward)
    doubles = [t.detach().double().requires_grad_(backward) for t in leaves]
    x64, r64, w64, b64 = doubles if residual else (doubles[0], None, doubles[1], doubles[2])
    view = (lambda t: t.transpose(0, 1)) if strided else (lambda t: t)  # a strided x (and residual)
    ours = ops.layer_norm(view(x), w, b, EPS, residual=None if r is None else view(r))
    ours = list(ours) if residual else [ours]
    theirs = eager(view(x), w, b, None if r is None else view(r))
    ref = eager(view(x64), w64, b64, None if r64 is None else view(r64), theirs[0] if residual else None)
    for name, a, t, e in zip(("sum", "out") if residual else ("out",), ours, theirs, ref):
        assert_2x_torch(a, t, e, FLOOR_OUT + slack, f"{what}: {name}")
    if residual:  # the sum is x + residual rounded once to x's dtype: what the unfused add stores
        assert_same_bits(ours[0], theirs[0], f"{what}: sum against x + residual")
    if not backward:
        return
    g = torch.Generator(device).manual_seed(seed + 1)
    dys = [torch.randn(t.shape, generator=g, device=device).to(dtype) for t in ours]
    g_ours = torch.autograd.grad(ours, leaves, dys)
    g_theirs = torch.autograd.grad(theirs, leaves, dys)
    g_ref = torch.autograd.grad(ref, doubles, [d.double() for d in dys])
    for name, a, t, e in zip(names, g_ours, g_theirs, g_ref):
        assert_2x_torch(a, t, e, FLOOR_GRAD + slack, f"{what}: d{name}")


def check_parameters_as_copies(D, lead, dtype, residual, device, seed, what):
    """A 16-bit model's gamma and beta (read by the fixed-width kernels in their own dtype) give bit for
    bit what their float32 copies give: the outputs, dx, dresidual and the parameters' gradients."""
    x, r, w, b = inputs(tuple(lead) + (D,), dtype, dtype, device, residual, seed)
    w32, b32 = (t.float().requires_grad_() for t in (w, b))
    for t in (x, r, w, b):
        if t is not None:
            t.requires_grad_()
    leaves = [t for t in (x, r) if t is not None]
    outs = [ops.layer_norm(x, ww, bb, EPS, residual=r) for ww, bb in ((w, b), (w32, b32))]
    outs = [list(o) if residual else [o] for o in outs]
    for name, a, e in zip(("sum", "out") if residual else ("out",), *outs):
        assert_same_bits(a, e, f"{what}: {name} with {NAMES[dtype]} parameters against float32 copies")
    g = torch.Generator(device).manual_seed(seed + 1)
    dys = [torch.randn(x.shape, generator=g, device=device).to(dtype) for _ in outs[0]]
    grads = torch.autograd.grad(outs[0], leaves + [w, b], dys)
    grads32 = torch.autograd.grad(outs[1], leaves + [w32, b32], dys)
    for name, a, e in zip(["x", "residual"][:len(leaves)] + ["weight", "bias"], grads, grads32):
        if a.dtype != dtype:
            raise AssertionError(f"{what}: d{name} is {a.dtype}, not the parameters' {dtype}")
        assert_same_bits(a, e.to(dtype), f"{what}: d{name} with {NAMES[dtype]} parameters against float32 copies")


def check_statistics_off(D, lead, dtype, device, seed, what):
    """stats=False (no backward to read them) writes no mean or rstd and the same sum and output bits."""
    x, r, w, b = inputs(tuple(lead) + (D,), dtype, dtype, device, True, seed)
    out, s, mean, rstd = torch.ops.vitfast.layer_norm.default(x, r, w, b, EPS, False)
    out2, s2, mean2, rstd2 = torch.ops.vitfast.layer_norm.default(x, r, w, b, EPS, True)
    rows = x.numel() // D
    if mean.numel() or rstd.numel() or mean2.shape != (rows,) or rstd2.shape != (rows,):
        raise AssertionError(f"{what}: statistics of {mean.numel()}, {rstd.numel()} elements without and "
                             f"{tuple(mean2.shape)}, {tuple(rstd2.shape)} with them, for {rows} rows")
    assert_same_bits(out, out2, f"{what}: out without statistics against with them")
    assert_same_bits(s, s2, f"{what}: sum without statistics against with them")


def check_agreement(D, lead, dtype, device, seed, what):
    """The GPU's sum bit for bit the CPU op's and its output within AGREE of it (max over max |y|); on
    the CPU the op against layer_norm_ref, the pure-PyTorch twin."""
    x, r, w, b = inputs(tuple(lead) + (D,), dtype, dtype, device, True, seed)
    s, y = ops.layer_norm(x, w, b, EPS, residual=r)
    if on_gpu(device):
        s2, y2 = ops.layer_norm(x.cpu(), w.cpu(), b.cpu(), EPS, residual=r.cpu())
    else:
        s2, y2 = ops.layer_norm_ref(x, w, b, EPS, residual=r)
    assert_same_bits(s, s2, f"{what}: sum against the other one's")
    apart = (y.cpu().float() - y2.float()).abs().max().item()
    if not apart <= AGREE[dtype] * y2.float().abs().max().item():
        raise AssertionError(f"{what}: out {apart:.3e} apart at most, over {AGREE[dtype]:.1e} of max |y|")


def check_no_rows(D, dtype, device, what):
    """No rows: empty outputs, and zero gradients of the weight and bias (the launchers start nothing)."""
    x, r, w, b = (t.requires_grad_() for t in inputs((0, D), dtype, dtype, device, True, 1))
    s, y = ops.layer_norm(x, w, b, EPS, residual=r)
    if s.shape != (0, D) or y.shape != (0, D):
        raise AssertionError(f"{what}: shapes {tuple(s.shape)}, {tuple(y.shape)}")
    dx, dr, dw, db = torch.autograd.grad([s, y], [x, r, w, b], [torch.ones_like(s), torch.ones_like(y)])
    if dx.shape != (0, D) or dr.shape != (0, D) or bool(dw.any()) or bool(db.any()):
        raise AssertionError(f"{what}: dx {tuple(dx.shape)}, dresidual {tuple(dr.shape)}, "
                             f"|dweight| {dw.abs().max().item()}, |dbias| {db.abs().max().item()}")


def layer_norm_cases(device, quick):
    widths = (192, 768, 1000, 4104) if quick else FIXED_WIDTHS + OTHER_WIDTHS
    passes = (True,) if quick else (False, True)  # fwd (no statistics written), fwd+bwd
    lead = lead_shape(device, "rows")
    rows = math.prod(lead)
    for D in widths:
        for dtype, pdtype in QUICK_COMBOS if quick else COMBOS:
            for residual in (False, True):
                for backward in passes:
                    what = describe(D, rows, dtype, pdtype, residual, "fwd+bwd" if backward else "fwd")
                    a = (D, lead, dtype, pdtype, residual, backward, device, D * 7 + rows)
                    yield what, (lambda a=a, what=what: run_layer_norm(*a, what=what))
    # many rows: the fixed widths' persistent rounds, and the any-width kernels' many blocks (1000)
    many = ((768, torch.bfloat16, torch.bfloat16),) if quick else tuple(
        (D, dt, dt) for D in (192, 384, 768, 1280) for dt in (torch.bfloat16, torch.float16)) + (
        (768, torch.float32, torch.float32), (1000, torch.bfloat16, torch.float32))
    for n in many_rows(device, quick):
        for D, dtype, pdtype in many:
            for backward in passes:
                what = describe(D, n, dtype, pdtype, True, "fwd+bwd" if backward else "fwd", " (many rows)")
                yield what, (lambda a=(D, (n,), dtype, pdtype, True, backward, device, D + n), what=what:
                             run_layer_norm(*a, what=what))
    # Large mean, small spread: a one-pass variance (E[x^2] - mean^2 in fp32) cancels to noise (it fails
    # every one of these cases; bf16's rows at 1000 +- 1 are a few levels 4 apart). fp32 statistics place
    # the mean within a few ulps of |mean|, so the bound grows by 32 ulps of mean/spread (~2e-3 at 1000/1).
    large = {torch.float32: (1000.0, 1.0), torch.float16: (1000.0, 2.0), torch.bfloat16: (1000.0, 1.0)}
    for D in (768, 1000) if quick else (192, 768, 1000, 1280, 4104):
        for dtype, (loc, spread) in large.items():
            if quick and (D == 768) != (dtype == torch.float32):
                continue
            slack = 32 * 2.0 ** -24 * loc / spread
            for residual in (False, True):
                for backward in passes:
                    extra = f" (large mean: {loc:g} +- {spread:g})"
                    what = describe(D, rows, dtype, dtype, residual, "fwd+bwd" if backward else "fwd", extra)
                    yield what, (lambda a=(D, lead, dtype, dtype, residual, backward, device, D + 11), what=what,
                                 k=dict(loc=loc, spread=spread, slack=slack): run_layer_norm(*a, what=what, **k))
    # a strided x and residual (the launcher makes them dense)
    slead = lead_shape(device, "strided")
    for D, dtype in ((256, torch.bfloat16),) if quick else ((256, torch.bfloat16), (1000, torch.float16)):
        what = describe(D, math.prod(slead), dtype, dtype, True, "fwd+bwd", " (x and residual transposed)")
        yield what, (lambda a=(D, slead, dtype, dtype, True, True, device, 5), what=what:
                     run_layer_norm(*a, strided=True, what=what))
    # a 16-bit model's parameters against their float32 copies: the fixed widths read them as they are,
    # 1000 (the any-width kernels) reads float32 copies
    for D in (768,) if quick else (192, 768, 1000):
        for dtype in (torch.bfloat16,) if quick else (torch.bfloat16, torch.float16):
            for residual in (True,) if quick else (False, True):
                what = describe(D, rows, dtype, dtype, residual, "fwd+bwd", " (parameters as float32 copies)")
                yield what, (lambda a=(D, lead, dtype, residual, device, D + 2), what=what:
                             check_parameters_as_copies(*a, what))
    for D in (768,) if quick else (192, 768, 1000):
        for dtype in (torch.bfloat16,) if quick else (torch.float32, torch.bfloat16):
            what = describe(D, rows, dtype, dtype, True, "fwd", " (statistics off and on)")
            yield what, (lambda a=(D, lead, dtype, device, D + 3), what=what: check_statistics_off(*a, what))
    alead = lead_shape(device, "agree")
    for dtype in (torch.bfloat16,) if quick else (torch.float32, torch.float16, torch.bfloat16):
        what = describe(768, math.prod(alead), dtype, dtype, True, "fwd",
                        " (against the CPU op)" if on_gpu(device) else " (against layer_norm_ref)")
        yield what, (lambda a=(768, alead, dtype, device, 4), what=what: check_agreement(*a, what))
    for D in (768,) if quick else (768, 1000):
        what = describe(D, 0, torch.bfloat16, torch.bfloat16, True, "fwd+bwd", " (no rows)")
        yield what, (lambda a=(D, torch.bfloat16, device), what=what: check_no_rows(*a, what))


# ---- layer_norm_fp8

SCALES = (2.0 ** -4, 0.037, 1.0)
FP8_OTHER_WIDTHS = (8, 104, 1000, 1288)  # the composite on a GPU too (and float32 x at every width)


def fp8_inputs(rows, D, dtype, pdtype, device, seed):
    g = torch.Generator(device).manual_seed(seed)
    x = (torch.randn(rows, D, generator=g, device=device) * 3 + 1.5).to(dtype)  # a mean and a scale to remove
    w = (torch.rand(D, generator=g, device=device) + 0.5).to(pdtype)
    b = torch.randn(D, generator=g, device=device).to(pdtype)
    return x, w, b


def runs_kernel(device, dtype, D):
    """Whether the CUDA kernel (not the composite) makes layer_norm_fp8's codes."""
    return on_gpu(device) and dtype != torch.float32 and D in FIXED_WIDTHS


def assert_codes(out, ref, kernel, what):
    """Bit for bit where the composite ran; where the kernel ran, NaN where the twin has it and each code
    at most one e4m3 step (2^(e-3) in the binade 2^e of the larger) from the twin's, on under 1e-3 of
    the elements: its fp32 statistics are summed in another order, so a y / scale at a rounding boundary
    may fall to the other side."""
    if not kernel:
        assert_same_bits(out, ref, what)
        return
    if out.shape != ref.shape or out.dtype != ref.dtype:
        raise AssertionError(f"{what}: {tuple(out.shape)} {out.dtype} against {tuple(ref.shape)} {ref.dtype}")
    o, r = out.float(), ref.float()
    nan = o.isnan()
    if not torch.equal(nan, r.isnan()):
        raise AssertionError(f"{what}: NaN at {int((nan != r.isnan()).sum())} places where the twin differs")
    apart = (o - r).abs().masked_fill(nan, 0)
    e = torch.floor(torch.log2(torch.maximum(o.abs(), r.abs()).masked_fill(nan, 1).clamp_min(2.0 ** -6)))
    over = apart > torch.exp2(e - 3)
    if bool(over.any()):
        bad = over.flatten().nonzero()[:4].flatten()
        raise AssertionError(f"{what}: {int(over.sum())} codes over one step from the twin's, e.g. "
                             f"{o.flatten()[bad].tolist()} against {r.flatten()[bad].tolist()}")
    differ = (apart > 0).float().mean().item()
    if not differ < 1e-3:
        raise AssertionError(f"{what}: {differ:.2e} of the codes differ from the twin's (at most 1e-3)")


def check_fp8_twin(rows, D, dtype, pdtype, scale, device, seed, what):
    x, w, b = fp8_inputs(rows, D, dtype, pdtype, device, seed)
    s = torch.tensor([scale], device=device)
    assert_codes(ops.layer_norm_fp8(x, w, b, s), ops.layer_norm_fp8_ref(x, w, b, s),
                 runs_kernel(device, dtype, D), what)


def check_fp8_float64(rows, D, dtype, device, what):
    """Each code within half an e4m3 step of a float64 LayerNorm / scale (plus fp32's rounding of it)."""
    x, w, b = fp8_inputs(rows, D, dtype, torch.float32, device, 1)
    scale = torch.tensor([2.0 ** -5], device=device)
    out = ops.layer_norm_fp8(x, w, b, scale).double() * scale.double()
    y = F.layer_norm(x.double(), (D,), w.double(), b.double(), EPS)
    e = torch.floor(torch.log2((y / scale.double()).abs().clamp_min(2.0 ** -6)))
    half_step = torch.exp2(e - 4) * scale.double()
    over = (out - y).abs() > half_step * (1 + 1e-5) + 1e-5 * y.abs()
    if bool(over.any()):
        bad = over.flatten().nonzero()[:4].flatten()
        raise AssertionError(f"{what}: {int(over.sum())} codes over half a step from float64's, e.g. "
                             f"{out.flatten()[bad].tolist()} against {y.flatten()[bad].tolist()}")


def check_fp8_saturation(rows, D, dtype, device, what):
    """|y / scale| far over 448 saturates to +-448; a NaN in x spoils its own row alone."""
    x, w, b = fp8_inputs(rows, D, dtype, torch.float32, device, 3)
    x[1, 7] = float("nan")
    s = torch.tensor([1.0], device=device)
    out = ops.layer_norm_fp8(x, w * 1000, b, s)
    o = out.float()
    if not bool(o[1].isnan().all()) or bool(o[torch.arange(rows, device=device) != 1].isnan().any()):
        raise AssertionError(f"{what}: NaN in {int(o.isnan().any(1).sum())} rows, not row 1 alone")
    if o[0].abs().max().item() != 448.0:
        raise AssertionError(f"{what}: row 0's largest |code| {o[0].abs().max().item()}, not 448")
    assert_codes(out, ops.layer_norm_fp8_ref(x, w * 1000, b, s), runs_kernel(device, dtype, D), what)


def check_fp8_parameters(rows, D, dtype, device, what):
    """A 16-bit model's weight and bias, read in their own dtype, give the codes their float32 copies give."""
    x, w, b = fp8_inputs(rows, D, dtype, dtype, device, 5)
    s = torch.tensor([2.0 ** -4], device=device)
    assert_same_bits(ops.layer_norm_fp8(x, w, b, s), ops.layer_norm_fp8(x, w.float(), b.float(), s), what)


def check_fp8_shapes(rows, D, dtype, device, what):
    """(2, rows, D) gives the codes of its (2 * rows, D) rows; a transposed x is read as it lies; no rows
    give an empty (0, D)."""
    x, w, b = fp8_inputs(2 * rows, D, dtype, torch.float32, device, 7)
    s = torch.tensor([0.25], device=device)
    out = ops.layer_norm_fp8(x.view(2, rows, D), w, b, s)
    if out.shape != (2, rows, D) or out.dtype != torch.float8_e4m3fn:
        raise AssertionError(f"{what}: {tuple(out.shape)} {out.dtype}")
    assert_same_bits(out.view(-1, D), ops.layer_norm_fp8(x, w, b, s), f"{what}: 3-D against 2-D")
    strided = x.view(2, rows, D).transpose(0, 1)
    assert_codes(ops.layer_norm_fp8(strided, w, b, s), ops.layer_norm_fp8_ref(strided, w, b, s),
                 runs_kernel(device, dtype, D), f"{what}: transposed")
    if ops.layer_norm_fp8(x[:0], w, b, s).shape != (0, D):
        raise AssertionError(f"{what}: no rows")


def fp8_cases(device, quick):
    gpu = on_gpu(device)
    rows = 3001 if gpu else 51
    widths = (192, 768, 1280, 104) if quick else FIXED_WIDTHS + FP8_OTHER_WIDTHS
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    for D in widths:
        for dtype in dtypes[:2] if quick and D != 768 else dtypes:
            for scale in SCALES[:1] if quick else SCALES:
                # float32 parameters: the FP8 chain's (its LayerNorm under autocast)
                what = describe(D, rows, dtype, torch.float32, False, "fwd", f" scale={scale:g}")
                yield what, (lambda a=(rows, D, dtype, torch.float32, scale, device, D), what=what:
                             check_fp8_twin(*a, what))
            if dtype != torch.float32 and not quick:  # a 16-bit model's own parameters
                what = describe(D, rows, dtype, dtype, False, "fwd", f" scale={SCALES[0]:g}")
                yield what, (lambda a=(rows, D, dtype, dtype, SCALES[0], device, D + 1), what=what:
                             check_fp8_twin(*a, what))
    for D, dtype in ((384, torch.bfloat16),) if quick else ((384, torch.bfloat16), (104, torch.float16)):
        what = describe(D, 64, dtype, torch.float32, False, "fwd", " scale=0.03125 (against float64)")
        yield what, (lambda a=(64, D, dtype, device), what=what: check_fp8_float64(*a, what))
    srows = 20011 if gpu else 37  # beyond one persistent round
    for D in (768,) if quick else (192, 768, 1280):
        for dtype in (torch.bfloat16,) if quick else (torch.bfloat16, torch.float16):
            what = describe(D, srows, dtype, torch.float32, False, "fwd", " (saturation, a NaN row)")
            yield what, (lambda a=(srows, D, dtype, device), what=what: check_fp8_saturation(*a, what))
    prows = 999 if gpu else 33
    for D in (768,) if quick else (192, 768, 1280):
        for dtype in (torch.bfloat16,) if quick else (torch.bfloat16, torch.float16):
            what = describe(D, prows, dtype, dtype, False, "fwd", " (parameters as float32 copies)")
            yield what, (lambda a=(prows, D, dtype, device), what=what: check_fp8_parameters(*a, what))
    for D, dtype in ((192, torch.bfloat16),) if quick else ((192, torch.bfloat16), (1024, torch.float16)):
        what = describe(D, 2 * 197, dtype, torch.float32, False, "fwd", " (3-D, transposed, no rows)")
        yield what, (lambda a=(197, D, dtype, device), what=what: check_fp8_shapes(*a, what))


def cases(family, device, quick=False):
    """(name, check) pairs of `family` on `device`."""
    if family == "layer_norm_fp8":
        yield from fp8_cases(device, quick)
        return
    yield from layer_norm_cases(device, quick)
