"""route_lowp / convert_ptq on lp_matmul: state dicts unchanged, every eligible nn.Linear routed, the
CPU emulation's accuracy against float64 (FP16_32 as good as fp16 operands allow, FP16_16 within the
fp16-accumulation bound's order), convert_ptq unchanged on the CPU; on CUDA the real kernels."""
import copy

import pytest
import torch
from torch import nn

import vitfast
from vitfast.quant import convert_ptq, prepare_qat, route_lowp, unroute_lowp
from vitfast.quant.lowp import LowpLinear, LowpQATLinear
from tests.ops.precision import rel_err
from tests.values import assert_same_bits, needs_cuda


def tiny(**kw):
    torch.manual_seed(0)
    return vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=10, **kw).eval()


def test_route_lowp_swaps_linears_and_keeps_the_state_dict():
    model = tiny()
    keys = list(model.state_dict())
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    route_lowp(model, "FP16_32")
    assert sum(type(m) is LowpLinear for m in model.modules()) == n_linear
    assert list(model.state_dict()) == keys
    unroute_lowp(model)
    assert sum(type(m) is nn.Linear for m in model.modules()) == n_linear
    assert route_lowp(model, "BF16") is model and not any(type(m) is LowpLinear for m in model.modules())


def test_cpu_emulation_accuracy_against_float64():
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
        e = {}
        for recipe in ("FP16_32", "FP16_16"):
            m = route_lowp(copy.deepcopy(model), recipe)
            e[recipe] = rel_err(m(x), ref)
        e_half = rel_err(copy.deepcopy(model).half()(x.half()), ref)  # everything in fp16: an upper anchor
    assert e["FP16_32"] < 5e-3 and e["FP16_16"] < 1e-2, e
    assert e["FP16_32"] <= e["FP16_16"] * 1.5 and e["FP16_16"] <= 2 * e_half + 1e-3, (e, e_half)


def test_convert_ptq_keeps_the_cpu_emulation_bit_for_bit():
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    for recipe in ("FP16_16", "FP16_32"):
        ptq = convert_ptq(model, recipe)
        assert any(type(m) is LowpQATLinear for m in ptq.modules())
        qat = prepare_qat(copy.deepcopy(model), recipe).eval()
        with torch.no_grad():
            assert_same_bits(ptq(x), qat(x))


def test_convert_ptq_exclude_keeps_excluded_linears():
    ptq = convert_ptq(tiny(), "FP16_16", exclude=["head"])
    assert type(ptq.head) is nn.Linear


@needs_cuda
@pytest.mark.parametrize("recipe", ["FP16_16", "FP16_32"])
def test_cuda_convert_ptq_runs_lp_matmul_and_stays_accurate(recipe):
    model = tiny().cuda()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
        ours = convert_ptq(model, recipe)(x)
        emulated = prepare_qat(copy.deepcopy(model), recipe).eval()(x)
        routed = route_lowp(copy.deepcopy(model), recipe)(x)
        cpu = route_lowp(copy.deepcopy(model).cpu(), recipe)(x.cpu())
    # Real fp16 accumulation loses a little more than output-only rounding, within the same order.
    assert rel_err(ours, ref) <= 4 * rel_err(emulated, ref) + 1e-3
    assert rel_err(routed, ref) <= 2 * rel_err(cpu, ref) + 1e-3


@needs_cuda
@pytest.mark.parametrize("accumulate", ["fp16", "fp32"])
def test_cuda_the_dispatch_picks_lp_matmul_or_cublas_of_the_same_kind(accumulate, monkeypatch):
    """lowp_linear asks the dispatch data per (K, N, accumulator); cuBLAS's branch has lp_matmul's
    output dtype and accuracy, and leaves torch's fp16-accumulation flag as it found it."""
    from vitfast.quant import lowp

    asked = []
    x = torch.randn(2, 197, 384, device="cuda")
    w, b = torch.randn(1536, 384, device="cuda") / 384**0.5, torch.randn(1536, device="cuda")
    ref = torch.nn.functional.linear(x.double(), w.double(), b.double())
    outs = {}
    for ours in (True, False):
        monkeypatch.setattr(lowp, "use_kernel", lambda op, t, dtype, **shape: asked.append((op, dtype, shape)) or ours)
        flag = torch.backends.cuda.matmul.allow_fp16_accumulation
        outs[ours] = lowp.lowp_linear(x, w, b, accumulate)
        assert torch.backends.cuda.matmul.allow_fp16_accumulation == flag
    assert asked[0] == ("lp_matmul", "float16", dict(K=384, N=1536, accumulate=accumulate))
    assert outs[True].dtype == outs[False].dtype == torch.float32  # the wider of the product's and x's
    assert outs[True].shape == outs[False].shape == (2, 197, 1536)
    assert rel_err(outs[False], ref) <= 2 * rel_err(outs[True], ref) + 1e-4
