"""linear_gelu and linear_residual: forward and gradients against float64 within 2x PyTorch's error
at the same precision, opcheck, torch.compile, argument errors; CUDA (the fused epilogues) when present."""
import pytest
import torch
import torch.nn.functional as F

from vitfast.ops import linear_gelu, linear_gelu_ref, linear_residual, linear_residual_ref
from tests.ops.precision import assert_2x_torch
from tests.values import needs_cuda


def make(M, K, N, dtype, device, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed + M + 7 * K + 13 * N)
    x = torch.randn(M, K, generator=g).to(device, dtype).requires_grad_()
    w = (torch.randn(N, K, generator=g) / K**0.5).to(device, dtype).requires_grad_()
    b = torch.randn(N, generator=g).to(device, dtype).requires_grad_() if bias else None
    r = torch.randn(M, N, generator=g).to(device, dtype).requires_grad_()
    return x, w, b, r


def check(fn, theirs_fn, args, dtype):
    leaves = [a for a in args if a is not None]
    ours, theirs = fn(*args), theirs_fn(*args)
    dargs = [None if a is None else a.detach().double().requires_grad_() for a in args]
    ref = theirs_fn(*dargs)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert_2x_torch(ours, theirs, ref, what="out")
    dy = torch.randn(ours.shape, generator=torch.Generator().manual_seed(3)).to(ours.device, ours.dtype)
    go = torch.autograd.grad(ours, leaves, dy)
    gt = torch.autograd.grad(theirs, leaves, dy)
    gr = torch.autograd.grad(ref, [a for a in dargs if a is not None], dy.double())
    for i, (a, t, e) in enumerate(zip(go, gt, gr)):
        assert a.dtype == t.dtype and a.shape == t.shape
        assert_2x_torch(a, t, e, floor=1e-5, what=f"grad {i}")


GELU_CASES = [(5, 192, 768), (197, 384, 1536), (3, 8, 24), (17, 40, 1000), (2, 12, 9)]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("M,K,N", GELU_CASES)
def test_linear_gelu_cpu(M, K, N, approximate):
    x, w, b, _ = make(M, K, N, torch.float32, "cpu")
    check(lambda x, w, b: linear_gelu(x, w, b, approximate), lambda x, w, b: linear_gelu_ref(x, w, b, approximate),
          (x, w, b), torch.float32)


@pytest.mark.parametrize("M,K,N", GELU_CASES)
def test_linear_residual_cpu(M, K, N):
    x, w, b, r = make(M, K, N, torch.float32, "cpu")
    check(linear_residual, linear_residual_ref, (x, w, b, r), torch.float32)


def test_bf16_cpu_and_no_bias():
    x, w, _, r = make(33, 64, 96, torch.bfloat16, "cpu", bias=False)
    check(lambda x, w: linear_gelu(x, w), lambda x, w: linear_gelu_ref(x, w), (x, w), torch.bfloat16)
    check(lambda x, w, r: linear_residual(x, w, None, r), lambda x, w, r: linear_residual_ref(x, w, None, r),
          (x, w, r), torch.bfloat16)


def test_batched_shapes_and_fp32_residual_with_bf16_operands():
    x, w, b, _ = make(12, 64, 32, torch.bfloat16, "cpu")
    x3 = x.detach().reshape(3, 4, 64)
    assert linear_gelu(x3, w, b).shape == (3, 4, 32)
    r = torch.randn(3, 4, 32)
    out = linear_residual(x3, w, b, r)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.linear(x3, w, b).float() + r)


def test_autocast_casts_operands():
    x, w, b, r = make(8, 32, 16, torch.float32, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = linear_gelu(x, w, b)
        z = linear_residual(x, w, b, r.detach())
    assert y.dtype == torch.bfloat16 and z.dtype == torch.float32


def test_opcheck():
    x, w, b, r = make(6, 16, 24, torch.float32, "cpu")
    for save in (True, False):
        torch.library.opcheck(torch.ops.vitfast.linear_gelu.default, (x, w, b, "none", save))
    torch.library.opcheck(torch.ops.vitfast.linear_gelu.default, (x, w, None, "tanh", True))
    torch.library.opcheck(torch.ops.vitfast.linear_residual.default, (x, w, b, r))
    torch.library.opcheck(torch.ops.vitfast.linear_residual.default, (x, w, None, r))


def test_compiles():
    x, w, b, r = make(6, 16, 24, torch.float32, "cpu")
    f = torch.compile(lambda x: linear_residual(linear_gelu(x, w, b)[:, :16], w[:, :16], b, r), fullgraph=True,
                      backend="eager")
    torch.testing.assert_close(f(x), linear_residual_ref(linear_gelu_ref(x, w, b)[:, :16], w[:, :16], b, r))


def test_bad_arguments_name_the_argument():
    x, w, b, r = make(4, 16, 8, torch.float32, "cpu")
    with pytest.raises(ValueError, match="weight.shape"):
        linear_gelu(x, w[:, :8], b)
    with pytest.raises(ValueError, match="bias"):
        linear_gelu(x, w, b[:3])
    with pytest.raises(ValueError, match="approximate"):
        linear_gelu(x, w, b, "fast")
    with pytest.raises(TypeError, match="weight"):
        linear_gelu(x, w.long(), b)
    with pytest.raises(TypeError, match="weight and bias"):
        linear_gelu(x, w.half(), b)
    with pytest.raises(ValueError, match="residual"):
        linear_residual(x, w, b, r[:2])
    with pytest.raises(TypeError, match="residual"):
        linear_residual(x, w, b, "r")
    with pytest.raises(RuntimeError, match="weight"):
        torch.ops.vitfast.linear_gelu(x, w[:, :8], b, "none", False)
    with pytest.raises(RuntimeError, match="approximate"):
        torch.ops.vitfast.linear_gelu(x, w, b, "fast", False)
    with pytest.raises(RuntimeError, match="residual"):
        torch.ops.vitfast.linear_residual(x, w, b, r[:2])


def test_config_names_a_built_hopper_configuration_and_changes_no_result():
    x, w, b, r = make(20, 16, 24, torch.float32, "cpu")
    with torch.no_grad():
        want_gelu, want_res = linear_gelu(x, w, b), linear_residual(x, w, b, r)
        for name in ("auto", "coop_128x128", "pingpong_128x128_2x1", "coop_128x256_2x1", "coop_128x192",
                     "pingpong_64x128", "pingpong_128x128_2x1_epi64x64", "pingpong_128x128_2x1_epi64x128"):
            assert torch.equal(linear_gelu(x, w, b, config=name), want_gelu)
        xb, wb, bb, rb = (t.bfloat16() for t in (x, w, b, r))  # a residual in the operands' dtype
        for name in ("coop_128x256_2x1", "coop_128x192", "pingpong_64x128"):
            assert torch.equal(linear_residual(xb, wb, bb, rb, config=name), linear_residual(xb, wb, bb, rb))
        assert torch.equal(linear_residual(x, w, b, r, config="coop_128x192"), want_res)
    with pytest.raises(ValueError, match=r"^config must be one of 'auto', 'coop_128x128', 'pingpong_128x128_2x1', "
                                         r"'coop_128x256_2x1', 'coop_128x192', 'pingpong_64x128', "
                                         r"'pingpong_128x128_2x1_epi64x64', 'pingpong_128x128_2x1_epi64x128' "
                                         r"for linear_gelu, "
                                         r"got 'fast'$"):
        linear_gelu(x.detach(), w.detach(), b.detach(), config="fast")
    # tanh GELU in the general tile alone
    with pytest.raises(ValueError, match=r"^config must be one of 'auto', 'coop_128x128' for linear_gelu, "
                                         r"approximate=tanh, got 'coop_128x192'$"):
        linear_gelu(x.detach(), w.detach(), b.detach(), "tanh", config="coop_128x192")
    # the kernels that store the pre-activation (a gradient is wanted) come in two configurations
    with pytest.raises(ValueError, match="for linear_gelu with a gradient, got 'pingpong_64x128'"):
        linear_gelu(x, w, b, config="pingpong_64x128")
    with pytest.raises(ValueError, match="for linear_residual into float32, got 'pingpong_64x128'"):
        linear_residual(x, w, b, r, config="pingpong_64x128")
    with pytest.raises(RuntimeError, match="linear_residual: config must be one of"):
        torch.ops.vitfast.linear_residual(x, w, b, r, "fast")
    with pytest.raises(RuntimeError, match="linear_gelu: config 'coop_128x192' is not built for GELU storing"):
        torch.ops.vitfast.linear_gelu(x, w, b, "none", True, "coop_128x192")
    torch.library.opcheck(torch.ops.vitfast.linear_gelu.default, (x, w, b, "none", True, "pingpong_128x128_2x1"))
    torch.library.opcheck(torch.ops.vitfast.linear_residual.default, (x, w, b, r, "coop_128x192"))


CUDA_CASES = [(1, 8, 8), (7, 24, 9), (197, 192, 768), (394, 768, 3072), (130, 3072, 768), (257, 1024, 1000),
              (128, 128, 128), (1000, 40, 130)]


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("M,K,N", CUDA_CASES)
def test_cuda_fused_epilogues(M, K, N, dtype):
    x, w, b, r = make(M, K, N, dtype, "cuda")
    for approximate in ("none", "tanh"):
        check(lambda x, w, b: linear_gelu(x, w, b, approximate),
              lambda x, w, b: linear_gelu_ref(x, w, b, approximate), (x, w, b), dtype)
    check(linear_residual, linear_residual_ref, (x, w, b, r), dtype)
    check(lambda x, w, r: linear_residual(x, w, None, r), lambda x, w, r: linear_residual_ref(x, w, None, r),
          (x, w, r), dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_bias_is_read_in_the_operands_dtype(dtype):
    """The epilogues read a 16-bit model's bias as it is: no float32 copy per call (36 of a bf16 ViT-Ti
    forward's launches before); a bias view that is not 16-byte aligned is copied and gives the same bits."""
    x, w, b, r = (t.detach() for t in make(256, 192, 768, dtype, "cuda"))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out_r, out_g = linear_residual(x, w, b, r), linear_gelu(x, w, b)
    casts = {e.name for e in prof.events()} & {"aten::to", "aten::_to_copy", "aten::copy_", "aten::clone"}
    assert not casts, f"the ops copied or cast an operand: {sorted(casts)}"
    assert_2x_torch(out_r, linear_residual_ref(x, w, b, r), linear_residual_ref(x.double(), w.double(), b.double(),
                                                                                r.double()), what="residual")
    assert_2x_torch(out_g, linear_gelu_ref(x, w, b), linear_gelu_ref(x.double(), w.double(), b.double()), what="gelu")
    unaligned = torch.cat([b.new_zeros(1), b])[1:]  # 2 bytes past a 16-byte boundary
    assert unaligned.data_ptr() % 16 != 0
    assert torch.equal(linear_residual(x, w, unaligned, r), out_r) and torch.equal(linear_gelu(x, w, unaligned), out_g)


@needs_cuda
def test_cuda_saved_pre_activation_is_the_rounded_linear():
    x, w, b, _ = make(300, 256, 520, torch.bfloat16, "cuda")
    out, pre = torch.ops.vitfast.linear_gelu(x.detach(), w.detach(), b.detach(), "none", True)
    lin = F.linear(x.detach().float(), w.detach().float(), b.detach().float())
    assert (pre.float() - lin).abs().max() <= 2**-7 * lin.abs().max()
    torch.testing.assert_close(out.float(), F.gelu(pre.float()).bfloat16().float(), atol=1e-6, rtol=2**-7)


@needs_cuda
def test_cuda_fp32_residual_stream_and_strided_inputs():
    x, w, b, _ = make(64, 128, 96, torch.bfloat16, "cuda")
    r = torch.randn(64, 96, device="cuda")
    xs = torch.randn(128, 64, device="cuda", dtype=torch.bfloat16).t()  # non-contiguous
    out = linear_residual(xs, w.detach(), b.detach(), r)
    assert out.dtype == torch.float32
    ref = F.linear(xs.double(), w.detach().double(), b.detach().double()) + r.double()
    assert_2x_torch(out, F.linear(xs, w.detach(), b.detach()).float() + r, ref)
    torch.library.opcheck(torch.ops.vitfast.linear_residual.default, (x, w, b, r.bfloat16()))
    torch.library.opcheck(torch.ops.vitfast.linear_gelu.default, (x, w, b, "none", True))
