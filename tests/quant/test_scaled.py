"""Scaled 8-bit recipes (INT8, FP8_E4M3_SCALED, FP8_E5M2_SCALED): per-channel weight scales,
calibrated (static) or dynamic per-tensor activation scales, against an integer-arithmetic reference."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitfast
from vitfast.quant import FloatingPoint, Linear8, convert_ptq, model_size_bytes, parse_recipe, prepare_qat, quantize, strip_qat
from vitfast.quant.scaled import SCALED_RECIPES, ScaledRounding, calibrate_scaled

SCALED = list(SCALED_RECIPES)


def make_model(seed=0):
    torch.manual_seed(seed)
    return vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2,
                                num_heads=2, num_classes=10).eval()


def batches(n, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 3, 32, 32, generator=g) * scale for _ in range(n)]


def matmuls(model):
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_names_parse_to_scaled_recipes():
    assert parse_recipe("int8") is SCALED_RECIPES["INT8"]
    assert parse_recipe("fp8-e4m3-scaled") is SCALED_RECIPES["FP8_E4M3_SCALED"]
    with pytest.raises(ValueError, match="INT8"):
        parse_recipe("int4")  # the error lists the scaled names too


@pytest.mark.parametrize("name", SCALED)
def test_weights_are_stored_on_a_per_channel_grid(name):
    recipe = SCALED_RECIPES[name]
    model = make_model()
    model.head.weight.data[3] = 0.0  # an all-zero channel: scale 1, no 0/0
    ptq = convert_ptq(model, name, emulate=True)  # the emulation stores the rounded weights in fp32
    for src, q in zip(matmuls(model), matmuls(ptq)):
        w, qw = src.weight.detach(), q.weight.detach()
        amax = w.reshape(w.shape[0], -1).abs().amax(1)
        s = torch.where(amax > 0, amax / recipe.qmax, torch.ones_like(amax)).reshape(-1, *[1] * (w.dim() - 1))
        grid = qw / s
        # q·s is rounded to fp32 once when stored, so the grid holds up to that rounding
        assert torch.allclose(quantize(grid, recipe.element), grid, rtol=1e-6, atol=1e-5), "on the scaled grid"
        top = grid.reshape(w.shape[0], -1).abs().amax(1)
        assert torch.allclose(top[amax > 0], torch.full_like(top[amax > 0], recipe.qmax), rtol=1e-6), "amax -> qmax"
        assert torch.isfinite(qw).all()
        assert torch.equal(q.bias, src.bias), "biases stay fp32"
    assert torch.equal(ptq.head.weight[3], torch.zeros_like(ptq.head.weight[3]))
    assert not torch.equal(ptq.head.weight, model.head.weight)


def test_int8_linear_equals_integer_arithmetic():
    """A static-scale INT8 Linear is (int8 x) @ (int8 W)ᵀ accumulated exactly, times s_x · s_w, plus b."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 24)
    calib = [torch.randn(5, 64) for _ in range(3)]
    q = convert_ptq(lin, "INT8", calib_data=calib, calib_steps=3)
    x = torch.randn(7, 64) * 1.5  # some values beyond the calibrated range: they saturate at +-127
    sx = torch.stack([c.abs().max() for c in calib]).max() / 127
    xi = torch.clamp(torch.round(x / sx), -127, 127).long()
    sw = lin.weight.detach().abs().amax(1, keepdim=True) / 127
    wi = torch.round(lin.weight.detach() / sw).long()
    ref = (xi @ wi.T).double() * sx.double() * sw.double().T + lin.bias.detach().double()
    got = q(x).double()
    assert (xi.abs() == 127).any(), "the test must exercise saturation"
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("name", SCALED)
def test_dynamic_scaling_follows_each_batch(name):
    recipe = SCALED_RECIPES[name]
    r = ScaledRounding(recipe)
    for scale in (1e-3, 1.0, 1e3):
        x = torch.randn(4, 33) * scale
        s = x.abs().max() / recipe.qmax
        assert torch.equal(r(x), quantize(x / s, recipe.element) * s)
        assert r(x).abs().max() == x.abs().max(), "the largest value is exact: it maps to qmax"
    zeros = torch.zeros(3, 5)
    assert torch.equal(r(zeros), zeros)


def test_calibration_uses_only_calib_steps_batches():
    model = make_model()
    data = batches(2) + batches(1, seed=9, scale=100.0)  # the third batch must not be seen
    ptq = convert_ptq(model, "INT8", calib_data=data, calib_steps=2)
    first = ptq.patch_embed.proj.qat.input  # its input is the image itself
    assert first.mode == "static"
    assert first.amax == torch.stack([b.abs().max() for b in data[:2]]).max()
    assert all(m.qat.input.mode == "static" for m in matmuls(ptq))  # the emulated patch embedding
    assert all(m.input_scale is not None for m in ptq.modules() if isinstance(m, Linear8))
    # calibrated on unit-scale inputs: a 100x input saturates instead of rescaling
    big = data[2][:1]
    assert not torch.allclose(ptq(big), convert_ptq(model, "INT8")(big), rtol=0.1)


def test_pairs_and_devices_of_calib_data():
    model = make_model()
    pairs = [(b, torch.zeros(3, dtype=torch.long)) for b in batches(2)]
    a = convert_ptq(model, "FP8_E4M3_SCALED", calib_data=pairs)
    b = convert_ptq(model, "FP8_E4M3_SCALED", calib_data=batches(2))
    x = batches(1, seed=5)[0]
    assert torch.equal(a(x), b(x))


def test_static_and_dynamic_both_track_fp32():
    model = make_model()
    x = batches(1, seed=4)[0]
    ref = model(x)
    errors = {}
    for name in SCALED:
        for calib in (None, batches(3)):
            out = convert_ptq(model, name, calib_data=calib)(x)
            errors[name, calib is None] = ((out - ref).norm() / ref.norm()).item()
    assert all(0 < e < 0.2 for e in errors.values()), errors
    # int8 (7 bits of magnitude, uniform) beats e5m2 (2 mantissa bits) on these weights
    assert errors["INT8", True] < errors["FP8_E5M2_SCALED", True], errors


def test_only_the_matrix_products_are_quantized_and_state_dicts_are_unchanged():
    model = make_model()
    ptq = convert_ptq(model, "INT8", emulate=True)
    assert list(ptq.state_dict()) == list(model.state_dict())
    assert torch.equal(ptq.norm.weight, model.norm.weight)
    assert type(ptq.norm) is nn.LayerNorm and all(b.attn.act_quant is None for b in ptq.blocks)
    plain = strip_qat(ptq)
    assert type(plain.head) is nn.Linear
    make_model(seed=3).load_state_dict(plain.state_dict(), strict=True)


def test_model_size_counts_8_bit_weights_and_scales():
    model = make_model()
    mm = matmuls(model)
    weights = {id(m.weight) for m in mm}
    expected = sum(m.weight.numel() + 4 * m.weight.shape[0] for m in mm)
    expected += sum(4 * t.numel() for t in list(model.parameters()) + list(model.buffers()) if id(t) not in weights)
    assert model_size_bytes(model, "INT8") == expected
    assert model_size_bytes(model, "INT8") < model_size_bytes(model, "FP16_32") < model_size_bytes(model)


def test_qat_with_dynamic_scales_trains_through():
    model = prepare_qat(make_model().train(), "INT8")
    x = batches(1)[0]
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    assert model.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="grad"):
        prepare_qat(make_model(), "INT8", grad=FloatingPoint(5, 2))


def test_calibration_errors_are_clear():
    model = make_model()
    with pytest.raises(ValueError, match="calib_steps=0 asks for dynamic"):
        convert_ptq(model, "INT8", calib_data=batches(1), calib_steps=0)
    with pytest.raises(ValueError, match="calib_steps=4: static activation scales need calib_data"):
        convert_ptq(model, "INT8", calib_steps=4)
    with pytest.raises(ValueError, match="calib_steps must be a non-negative integer"):
        convert_ptq(model, "INT8", calib_steps=-1)
    bad = batches(2)
    bad[1][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="batch 1 holds inf or NaN"):
        convert_ptq(model, "FP8_E4M3_SCALED", calib_data=bad)
    with pytest.raises(ValueError, match="inf or NaN input"):  # finite images, a layer overflows
        convert_ptq(model, "INT8", calib_data=batches(1, scale=1e37))
    with pytest.raises(ValueError, match="no batches"):
        convert_ptq(model, "INT8", calib_data=[])
    with pytest.raises(ValueError, match="scaled recipe"):
        calibrate_scaled(convert_ptq(model, "FP16_16"), batches(1))
    with pytest.raises(TypeError, match="calib_data"):
        convert_ptq(model, "INT8", calib_data=["not a tensor"])


def test_a_layer_that_saw_only_zeros_stays_dynamic():
    lin = nn.Linear(4, 3)
    with pytest.warns(UserWarning, match="dynamic"):
        q = convert_ptq(lin, "INT8", calib_data=[torch.zeros(2, 4)])
    x = torch.randn(2, 4)
    assert torch.equal(q(x), convert_ptq(lin, "INT8")(x))
