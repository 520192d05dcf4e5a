"""layer_norm (with and without the fused residual add) against float64, PyTorch at the same
precision (2x rule), its twin, opcheck, gradients, argument errors; every ViT width; CUDA when present."""
import pytest
import torch
import torch.nn.functional as F

from vitfast.kernels import gate, records
from vitfast.ops import layer_norm, layer_norm_ref
from tests.ops.precision import assert_2x_torch
from tests.values import needs_cuda

WIDTHS = [8, 40, 192, 256, 384, 512, 768, 1024, 1280]  # 192-1280: layer_norm_fixed.cuh's widths, the others
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def inputs(shape, dtype, device, residual=True, requires_grad=False):
    g = torch.Generator().manual_seed(sum(shape) + len(shape))
    D = shape[-1]
    # A non-zero mean and unequal scales: statistics must be computed, not assumed.
    x = (torch.randn(shape, generator=g) * 3 + 1.5).to(device, dtype)
    r = torch.randn(shape, generator=g).to(device, dtype) if residual else None
    w = (torch.rand(D, generator=g) + 0.5).to(device, dtype)
    b = torch.randn(D, generator=g).to(device, dtype)
    ts = [x, r, w, b]
    for t in ts:
        if t is not None:
            t.requires_grad_(requires_grad)
    return ts


def eager(x, w, b, r, eps=1e-5):
    s = x if r is None else x + r
    y = F.layer_norm(s, (s.shape[-1],), w, b, eps)
    return (s, y) if r is not None else y


def double_leaves(ts):
    return [None if t is None else t.detach().double().requires_grad_() for t in ts]


def run_case(shape, dtype, device, residual):
    """Forward (sum and normalised output) and the gradients of x, residual, weight and bias, with
    incoming gradients on both outputs (the sum feeds the next residual add in a block)."""
    x, r, w, b = inputs(shape, dtype, device, residual, requires_grad=True)
    leaves = [t for t in (x, r, w, b) if t is not None]
    names = [n for n, t in zip(["x", "residual", "weight", "bias"], (x, r, w, b)) if t is not None]
    dx, dr, dw, db = double_leaves((x, r, w, b))
    outs = [layer_norm(x, w, b, 1e-5, residual=r), eager(x, w, b, r), eager(dx, dw, db, dr)]
    outs = [list(o) if residual else [o] for o in outs]
    for i, what in enumerate(["sum", "out"] if residual else ["out"]):
        ours, theirs, ref = (o[i] for o in outs)
        assert ours.dtype == dtype and ours.shape == x.shape
        assert_2x_torch(ours, theirs, ref, what=what)
    g = torch.Generator().manual_seed(1)
    dys = [torch.randn(shape, generator=g).to(device, dtype) for _ in outs[0]]
    g_ours = torch.autograd.grad(outs[0], leaves, dys)
    g_theirs = torch.autograd.grad(outs[1], leaves, dys)
    g_ref = torch.autograd.grad(outs[2], [t for t in (dx, dr, dw, db) if t is not None], [d.double() for d in dys])
    for name, a, t, e in zip(names, g_ours, g_theirs, g_ref):
        assert a.dtype == t.dtype and a.shape == t.shape, name
        assert_2x_torch(a, t, e, floor=1e-5, what=f"d{name}")


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("D", WIDTHS)
def test_cpu_matches_float64_within_2x_torch(D, residual):
    run_case((3, 5, D), torch.float32, "cpu", residual)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("D", [192, 1280])
def test_cpu_16bit(dtype, D):
    run_case((4, 7, D), dtype, "cpu", True)


def test_twin_and_fp32_weight_with_16bit_input():
    x, r, w, b = inputs((6, 384), torch.bfloat16, "cpu")
    s, y = layer_norm(x, w.float(), b.float(), residual=r)
    s2, y2 = layer_norm_ref(x, w, b, residual=r)
    assert torch.equal(s, s2) and y.dtype == torch.bfloat16
    assert (y.float() - y2.float()).abs().max() <= 2 * 2**-7 * y2.float().abs().max()


def test_mixed_residual_dtype_is_promoted():
    x, r, w, b = inputs((2, 3, 64), torch.float32, "cpu")
    s, y = layer_norm(x.bfloat16(), w, b, residual=r)
    assert s.dtype == torch.float32 and torch.equal(s, x.bfloat16().float() + r)


def test_opcheck():
    x, r, w, b = inputs((3, 4, 64), torch.float32, "cpu", requires_grad=True)
    torch.library.opcheck(torch.ops.vitfast.layer_norm.default, (x, r, w, b, 1e-5))
    torch.library.opcheck(torch.ops.vitfast.layer_norm.default, (x, None, w, b, 1e-6))
    torch.library.opcheck(torch.ops.vitfast.layer_norm.default, (x, r, w, b, 1e-5, False))


def test_compiles():
    x, r, w, b = inputs((2, 5, 192), torch.float32, "cpu")
    f = torch.compile(lambda x, r: layer_norm(x, w, b, residual=r), fullgraph=True, backend="eager")
    s, y = f(x, r)
    torch.testing.assert_close(y, layer_norm(x, w, b, residual=r)[1])


def test_bad_arguments_name_the_argument():
    x, r, w, b = inputs((2, 64), torch.float32, "cpu")
    with pytest.raises(ValueError, match="hidden size"):
        layer_norm(x[:, :60], w[:60], b[:60])
    with pytest.raises(ValueError, match="weight"):
        layer_norm(x, w[:8], b)
    with pytest.raises(ValueError, match="residual"):
        layer_norm(x, w, b, residual=r[:1])
    with pytest.raises(TypeError, match="x"):
        layer_norm(x.long(), w, b)
    with pytest.raises(ValueError, match="eps"):
        layer_norm(x, w, b, eps=-1.0)
    with pytest.raises(RuntimeError, match="bias"):
        torch.ops.vitfast.layer_norm(x, None, w, b[:8], 1e-5)
    with pytest.raises(RuntimeError, match="residual"):
        torch.ops.vitfast.layer_norm(x, r.half(), w, b, 1e-5)


@needs_cuda
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", WIDTHS + [1536, 2048, 4104])  # above 1536: the uncached kernel
def test_cuda_matches_float64_within_2x_torch(D, dtype, residual):
    run_case((2, 197, D), dtype, "cuda", residual)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("D", [192, 384, 768, 1280])
def test_cuda_fixed_widths_over_many_rows(D, dtype):
    # More rows than the persistent blocks take in one round (each warp walks several, the next one
    # prefetched), and a ragged last round: 4,099 rows split over warps of 4, 2 or 1 rows at a time.
    for rows in (64 * 197 * 2 + 3, 4099):
        run_case((rows, D), dtype, "cuda", residual=True)


@needs_cuda
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("D", [192, 768, 1000])  # 1000: the any-width kernels, which read float32 copies
def test_cuda_parameters_in_the_inputs_dtype_give_what_their_float32_copies_give(D, dtype, residual):
    """A bf16 / fp16 model's gamma and beta, read by the fixed-width kernels in their own dtype, give bit
    for bit what their float32 copies give: the outputs, dx, dresidual and the parameters' gradients."""
    x, r, w, b = inputs((3, 197, D), dtype, "cuda", residual, requires_grad=True)
    w32, b32 = (t.detach().float().requires_grad_() for t in (w, b))
    leaves = [t for t in (x, r) if t is not None]
    outs = [layer_norm(x, ww, bb, 1e-5, residual=r) for ww, bb in ((w, b), (w32, b32))]
    outs = [list(o) if residual else [o] for o in outs]
    for ours, copies in zip(*outs):
        assert torch.equal(ours, copies)
    g = torch.Generator().manual_seed(2)
    dys = [torch.randn(x.shape, generator=g).to("cuda", dtype) for _ in outs[0]]
    grads = torch.autograd.grad(outs[0], leaves + [w, b], dys)
    grads32 = torch.autograd.grad(outs[1], leaves + [w32, b32], dys)
    for name, a, e in zip(["x", "residual"][:len(leaves)] + ["weight", "bias"], grads, grads32):
        assert a.dtype == dtype and torch.equal(a, e.to(dtype)), name


@needs_cuda
def test_cuda_a_16bit_models_parameters_are_read_without_a_copy():
    """No float32 copy of a bf16 model's weight and bias per call where our kernels run (48 of a bf16
    ViT-Ti's ~150 launches a forward on the H200, before)."""
    if not gate.allowed("layer_norm", records.device_key(), warn=False):
        pytest.skip("layer_norm's kernels are not verified on this GPU kind: the ATen composite runs")
    x, r, w, b = inputs((197, 768), torch.bfloat16, "cuda")
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        layer_norm(x, w, b, residual=r)
    names = {e.name for e in prof.events()}
    assert "vitfast::layer_norm" in names and not names & {"aten::to", "aten::_to_copy", "aten::copy_"}, names


@needs_cuda
def test_cuda_without_a_backward_writes_no_statistics():
    x, r, w, b = inputs((197, 768), torch.bfloat16, "cuda")
    out, s, mean, rstd = torch.ops.vitfast.layer_norm(x, r, w, b, 1e-5, False)
    assert mean.numel() == rstd.numel() == 0
    out2, s2, mean2, rstd2 = torch.ops.vitfast.layer_norm(x, r, w, b, 1e-5, True)
    assert torch.equal(out, out2) and torch.equal(s, s2) and mean2.shape == (197,)


def test_the_cpu_skips_the_statistics_too():
    x, r, w, b = inputs((5, 64), torch.float32, "cpu")
    out, s, mean, rstd = torch.ops.vitfast.layer_norm(x, r, w, b, 1e-5, False)
    assert mean.numel() == rstd.numel() == 0
    assert torch.equal(out, torch.ops.vitfast.layer_norm(x, r, w, b, 1e-5, True)[0])


@needs_cuda
def test_cuda_many_rows_and_cpu_agreement():
    for dtype in DTYPES:
        x, r, w, b = inputs((64, 197, 768), dtype, "cuda")
        s, y = layer_norm(x, w, b, residual=r)
        s2, y2 = layer_norm(x.cpu(), w.cpu(), b.cpu(), residual=r.cpu())
        assert torch.equal(s.cpu(), s2)
        tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
        assert (y.cpu().float() - y2.float()).abs().max().item() <= tol * y2.float().abs().max().item()


@needs_cuda
def test_cuda_non_contiguous_and_opcheck():
    x, r, w, b = inputs((4, 96, 256), torch.bfloat16, "cuda", requires_grad=True)
    xt = x.transpose(0, 1)
    y = layer_norm(xt, w, b)
    torch.testing.assert_close(y.float(), layer_norm_ref(xt, w, b).float(), atol=3e-2, rtol=2e-2)
    torch.library.opcheck(torch.ops.vitfast.layer_norm.default, (x, r, w, b, 1e-5))
