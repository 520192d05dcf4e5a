"""layer_norm_fp8: the op against its pure-PyTorch twin (bit for bit on the CPU), against a float64
LayerNorm (each code within half an e4m3 step of y / scale), its rounding (saturation, NaN), shapes and
argument checks, the fake, the registers of its CUDA kernels (cuobjdump, no GPU needed), and on a GPU
the kernels against the twin."""

import pytest
import torch

from vitfast.ops import layer_norm_fp8, layer_norm_fp8_ref
from tests.values import find_cuobjdump, kernel_resources, needs_cuda, said_in_a_fresh_process

E4M3 = torch.float8_e4m3fn
FIXED_WIDTHS = (192, 256, 384, 512, 768, 1024, 1280)


def inputs(rows, D, dtype, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, D, generator=g) * 3 + 1.5).to(device, dtype)  # a mean and a scale to remove
    w = (torch.rand(D, generator=g) + 0.5).to(device)
    b = torch.randn(D, generator=g).to(device)
    return x, w, b


def codes(t):
    return t.view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("D", [192, 768, 104])
def test_cpu_equals_the_twin_bit_for_bit(D, dtype):
    x, w, b = inputs(50, D, dtype, seed=D)
    for scale in (2.0**-4, 0.037, 1.0):
        s = torch.tensor([scale])
        assert torch.equal(codes(layer_norm_fp8(x, w, b, s)), codes(layer_norm_fp8_ref(x, w, b, s)))


def test_codes_are_the_nearest_e4m3_values_of_a_float64_layer_norm():
    x, w, b = inputs(64, 384, torch.bfloat16, seed=1)
    scale = torch.tensor([2.0**-5])
    out = layer_norm_fp8(x, w, b, scale).float() * scale
    y = torch.nn.functional.layer_norm(x.double(), (384,), w.double(), b.double(), 1e-5)
    # half an e4m3 step (2^-4 of the value's binade) plus fp32's rounding of the LayerNorm
    e = torch.floor(torch.log2((y / scale).abs().clamp_min(2.0**-6)))
    half_step = torch.exp2(e - 4) * scale
    assert ((out - y).abs() <= half_step * (1 + 1e-5) + 1e-5 * y.abs()).all()


def test_saturation_nan_and_weight_dtypes():
    x, w, b = inputs(4, 192, torch.bfloat16)
    x[1, 7] = float("nan")
    out = layer_norm_fp8(x, w * 1000, b, torch.tensor([1.0]))  # |y| up to ~2000: saturates at +-448
    assert out[0].float().abs().max().item() == 448.0
    assert out[1].float().isnan().all() and not out[0].float().isnan().any()  # a NaN spoils its row only
    ref = layer_norm_fp8(x, w.bfloat16(), b.bfloat16(), torch.tensor([0.5]))  # weight, bias in x's dtype
    assert torch.equal(codes(ref), codes(layer_norm_fp8_ref(x, w.bfloat16(), b.bfloat16(), torch.tensor([0.5]))))


def test_shapes():
    x, w, b = inputs(2 * 197, 192, torch.bfloat16)
    s = torch.tensor([0.25])
    out = layer_norm_fp8(x.view(2, 197, 192), w, b, s)
    assert out.shape == (2, 197, 192) and out.dtype == E4M3
    assert torch.equal(codes(out.view(-1, 192)), codes(layer_norm_fp8(x, w, b, s)))
    assert layer_norm_fp8(x[:0], w, b, s).shape == (0, 192)
    strided = x.view(2, 197, 192).transpose(0, 1)  # not contiguous: read as it lies
    assert torch.equal(codes(layer_norm_fp8(strided, w, b, s)), codes(layer_norm_fp8_ref(strided, w, b, s)))


def test_fake_tensor_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x, w, b = torch.empty(3, 5, 768, dtype=torch.bfloat16), torch.empty(768), torch.empty(768)
        out = layer_norm_fp8(x, w, b, torch.empty(1))
    assert out.shape == (3, 5, 768) and out.dtype == E4M3


@pytest.mark.parametrize("case, error, message", [
    (dict(scale=torch.tensor([1.0, 2.0])), ValueError, "scale must be a float32 tensor holding one value, got 2"),
    (dict(scale=torch.tensor([1.0], dtype=torch.float64)), ValueError, "scale must be a float32 tensor"),
    (dict(scale=0.5), ValueError, "scale must be a float32 tensor holding one value, got float"),
    (dict(x=torch.randn(4, 20)), ValueError, "multiple of 8"),
    (dict(weight=torch.ones(96)), ValueError, r"weight must have shape \(192,\)"),
    (dict(eps=-1.0), ValueError, "eps must be a non-negative number"),
    (dict(x=torch.ones(4, 192, dtype=torch.int32)), TypeError, "x must be a float32, float16 or bfloat16"),
])
def test_bad_arguments_get_one_clear_line(case, error, message):
    x, w, b = inputs(4, 192, torch.bfloat16)
    args = dict(x=x, weight=w, bias=b, scale=torch.tensor([1.0]), eps=1e-5) | case
    with pytest.raises(error, match=message):
        layer_norm_fp8(**args)


def test_the_op_checks_its_scale_too():
    x, w, b = inputs(4, 192, torch.bfloat16)
    with pytest.raises(RuntimeError, match="layer_norm_fp8: scale must be one float32 value"):
        torch.ops.vitfast.layer_norm_fp8(x, w, b, torch.ones(2), 1e-5)


def test_cuda_kernels_hold_no_local_memory():
    if find_cuobjdump() is None or not torch.backends.cuda.is_built() or not hasattr(torch.ops.vitfast, "sm90_kernels_built"):
        pytest.skip("needs cuobjdump and a CUDA build")
    fp8 = kernel_resources(lambda n: "layer_norm_fwd_fixed" in n and "Lb0ELb0EhEEv" in n)  # TOut = uint8_t
    if not fp8:
        pytest.skip("no CUDA kernels in this build")
    # fp16 and bf16 at the seven fixed widths (float32 x takes the composite)
    assert len(fp8) == 2 * len(FIXED_WIDTHS), sorted(fp8)
    assert all(stack == 0 and local == 0 for _, stack, local in fp8.values()), fp8


# ---- on a GPU


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("D", FIXED_WIDTHS)
def test_cuda_kernel_against_the_twin(D, dtype):
    """fp32 statistics summed in another order: a code may differ by one step where y / scale lies at a
    rounding boundary, on a small fraction of the elements."""
    x, w, b = inputs(3000, D, dtype, "cuda", seed=D)
    s = torch.tensor([2.0**-4], device="cuda")
    out, ref = layer_norm_fp8(x, w, b, s).float(), layer_norm_fp8_ref(x, w, b, s).float()
    apart = (out - ref).abs()
    e = torch.floor(torch.log2(torch.maximum(out.abs(), ref.abs()).clamp_min(2.0**-6)))
    assert (apart <= torch.exp2(e - 3)).all()
    assert (apart > 0).float().mean().item() < 1e-3


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_parameters_in_the_inputs_dtype_give_what_their_float32_copies_give(dtype):
    """A bf16 / fp16 model's weight and bias, read by the kernel in their own dtype, give the codes their
    float32 copies give."""
    x, w, b = inputs(999, 768, dtype, "cuda", seed=5)
    w, b = w.to(dtype), b.to(dtype)
    s = torch.tensor([2.0**-4], device="cuda")
    assert torch.equal(codes(layer_norm_fp8(x, w, b, s)), codes(layer_norm_fp8(x, w.float(), b.float(), s)))


@needs_cuda
def test_cuda_saturation_nan_and_rows_beyond_one_persistent_round():
    x, w, b = inputs(20011, 768, torch.bfloat16, "cuda", seed=3)
    x[5, 3] = float("nan")
    s = torch.tensor([1.0], device="cuda")
    out = layer_norm_fp8(x, w * 1000, b, s)
    assert out[5].float().isnan().all() and out[4].float().abs().max().item() == 448.0
    ref = layer_norm_fp8_ref(x, w * 1000, b, s).float()
    assert (out.float().isnan() == ref.isnan()).all()  # row 5 alone, in both
    rows = torch.arange(len(x), device="cuda") != 5
    assert ((out[rows].float() - ref[rows]).abs() <= 32).all()  # one step at the top binade at most


@needs_cuda
def test_cuda_other_widths_and_float32_run_the_composite_with_one_warning():
    script = (
        "import torch\n"
        "from vitfast.ops import layer_norm_fp8, layer_norm_fp8_ref\n"
        "from tests.ops.test_layer_norm_fp8 import inputs\n"
        "s = torch.tensor([0.5], device='cuda')\n"
        "for D, dtype in ((104, torch.bfloat16), (768, torch.float32)):\n"
        "    x, w, b = inputs(40, D, dtype, 'cuda')\n"
        "    assert torch.equal(layer_norm_fp8(x, w, b, s).view(torch.uint8), layer_norm_fp8_ref(x, w, b, s).view(torch.uint8))\n")
    assert said_in_a_fresh_process(script, "layer_norm_fp8's kernels take") == 1
