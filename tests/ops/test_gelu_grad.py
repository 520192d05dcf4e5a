"""gelu_grad_bias: linear_gelu's backward pass over the saved pre-activation (GELU's gradient and the bias
gradient together; csrc/gemm/linear_backward.h, linear_gelu_backward_*.cpp and _kernels.cu). On the CPU
it is ATen's gelu_backward and sum; the kernel's formula (csrc/gemm/gelu_grad.h) compiled for the host
is held to the float64 derivative and to torch's float32 gelu_backward; on a GPU the kernel is held to
ATen's gelu_backward and to the float64 sum of its own output (the gemm_mma self-test's cases)."""
import ctypes
import math

import numpy as np
import pytest
import torch

import vitfast  # noqa: F401  (the ops)
from vitfast.kernels.selftests import gemm as selftest

from tests.ops.host_build import host_library

SOURCE = """
#include "gemm/gelu_grad.h"
extern "C" void gelu_grad_n(const float* dy, const float* x, float* out, long n, int tanh_form) {
  for (long i = 0; i < n; ++i)
    out[i] = tanh_form ? vitfast::gemm::gelu_grad_tanh(dy[i], x[i]) : vitfast::gemm::gelu_grad_erf(dy[i], x[i]);
}
"""


@pytest.fixture(scope="module")
def gelu_grad(tmp_path_factory):
    fn = host_library(tmp_path_factory.mktemp("gelu_grad"), "gelu_grad", SOURCE).gelu_grad_n
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_int]

    def run(dy, x, approximate):
        dy, x = (np.ascontiguousarray(t.numpy(), dtype=np.float32) for t in (dy, x))
        out = np.empty_like(x)
        fn(dy.ctypes.data, x.ctypes.data, out.ctypes.data, x.size, int(approximate == "tanh"))
        return torch.from_numpy(out)
    return run


def derivative(dy, x, approximate):
    """dy * d/dx GELU(x) in float64."""
    x, dy = x.double(), dy.double()
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        t = torch.tanh(k * (x + 0.044715 * x**3))
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x))
    return dy * (0.5 * torch.erfc(-x / math.sqrt(2)) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_the_kernels_formula_is_gelus_derivative_and_torchs(gelu_grad, approximate):
    """Over pre-activations from -12 to 12 (and the gradient's sign and scale varied): within 2^-20 of the
    float64 derivative and within 16 float32 units of torch's own float32 gelu_backward, relative to |dy|
    (GELU' is at most 1.13; torch's CPU kernel uses its own vectorised erf, exp and tanh: 2.9 and 9.5
    units apart at most here, erf and tanh)."""
    x = torch.linspace(-12, 12, 200_001)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 4
    ours = gelu_grad(dy, x, approximate)
    torch_f32 = torch.ops.aten.gelu_backward(dy, x, approximate=approximate)
    scale = dy.abs().double()
    assert ((ours.double() - derivative(dy, x, approximate)).abs() <= 2.0**-20 * scale + 1e-30).all()
    assert ((ours - torch_f32).abs() <= 16 * torch.finfo(torch.float32).eps * scale.float() + 1e-30).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_on_the_cpu_it_is_atens_gelu_backward_and_sum(dtype, approximate):
    g = torch.Generator().manual_seed(1)
    dout, pre = (torch.randn(3, 5, 24, generator=g).to(dtype) for _ in range(2))
    dpre, dbias = torch.ops.vitfast.gelu_grad_bias(dout, pre, approximate, True)
    want = torch.ops.aten.gelu_backward(dout, pre, approximate=approximate)
    assert torch.equal(dpre, want) and torch.equal(dbias, want.reshape(-1, 24).sum(0))
    dpre2, none = torch.ops.vitfast.gelu_grad_bias(dout, pre, approximate, False)
    assert torch.equal(dpre2, want) and none.numel() == 0


@pytest.mark.parametrize("args, message", [
    ((torch.ones(2, 8), torch.ones(2, 8), "erf", True), "approximate must be 'none' or 'tanh', got 'erf'"),
    ((torch.ones(2, 8), torch.ones(2, 4), "none", True), "dout must have pre's shape [2, 4], got [2, 8]"),
    ((torch.ones(2, 8), torch.ones(2, 8).bfloat16(), "none", True), "dout and pre must be of one floating dtype"),
])
def test_bad_arguments_are_named_in_one_line(args, message):
    with pytest.raises(RuntimeError, match=r"gelu_grad_bias: " + message.replace("[", r"\[").replace("]", r"\]")):
        torch.ops.vitfast.gelu_grad_bias(*args)


def test_linear_gelus_gradient_runs_the_pass_and_matches_the_library():
    """linear_gelu's backward through gelu_grad_bias (the profiler sees it) and the same gradients as
    F.gelu(F.linear(...)) on the CPU."""
    from torch.profiler import ProfilerActivity, profile
    from vitfast.ops import linear_gelu, linear_gelu_ref

    g = torch.Generator().manual_seed(2)
    x, w, b = (torch.randn(*s, generator=g, requires_grad=True) for s in ((7, 16), (24, 16), (24,)))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        linear_gelu(x, w, b).sum().backward()
    assert any(e.key == "vitfast::gelu_grad_bias" for e in prof.key_averages())
    ours = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    linear_gelu_ref(x, w, b).sum().backward()
    for got, want in zip(ours, (x.grad, w.grad, b.grad)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_self_test_cases_hold_on_the_cpu():
    for _, check in selftest.gelu_grad_cases("cpu", quick=False):
        check()


gpu = pytest.mark.skipif(not (torch.cuda.is_available() and vitfast.has_cuda_kernels()), reason="needs a CUDA GPU")


@gpu
@pytest.mark.parametrize("case", [name for name, _ in selftest.gelu_grad_cases("cuda", quick=False)])
def test_the_kernel_against_aten_on_the_gpu(case, monkeypatch):
    monkeypatch.setenv("VITFAST_UNVERIFIED_KERNELS", "1")
    dict(selftest.gelu_grad_cases("cuda", quick=False))[case]()


@gpu
def test_the_kernel_runs_and_a_refused_shape_runs_the_composite():
    from torch.profiler import ProfilerActivity, profile

    dout, pre = torch.randn(2, 197, 3072, device="cuda").bfloat16(), torch.randn(2, 197, 3072, device="cuda").bfloat16()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.ops.vitfast.gelu_grad_bias(dout, pre, "none", True)
        torch.ops.vitfast.gelu_grad_bias(dout[..., :3068], pre[..., :3068], "none", True)  # rows of 6,136 bytes
        torch.cuda.synchronize()
    names = [e.key for e in prof.key_averages()]
    assert sum("gelu_grad_kernel" in n for n in names) == 1 and any("GeluBackward" in n for n in names), names
