"""ViT and DeiT against timm: same parameter names and counts, same outputs (fp32, eval and train mode,
eager and SDPA backends), state dicts interchangeable both ways; attention maps and logit bias."""
import pytest
import timm
import torch

import vitfast
from vitfast.layers import Attention, set_model_backend
from vitfast.models import count_params

OURS = ("vit_pico_patch4_32",)  # vitfast's own name (the default run's model): no timm model to compare with
VIT_DEIT = [n for n in vitfast.list_models(["vit_*", "deit_*"]) if n not in OURS]
HYBRID = ("vit_base_r50",)  # covered by tests/models/test_hybrid.py
SMALL_DEPTH = {"depth": 2}  # large models are compared at two blocks: the blocks are identical


def pair(name, **kw):
    kw.setdefault("num_classes", 1000)  # timm's vit_huge_patch14_224 is headless by default
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, **kw)
    ours = vitfast.create_model(name, **kw)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def assert_close_to_scale(a, b):
    scale = b.abs().max().item()
    assert (a - b).abs().max().item() <= 1e-5 * scale, ((a - b).abs().max().item(), scale)


@pytest.mark.parametrize("name", [n for n in VIT_DEIT if not n.startswith(HYBRID)])
def test_parameter_count_equals_timm(name):
    with torch.device("meta"):
        # Same head for both: timm builds vit_huge_patch14_224 headless by default (its in21k weights).
        assert count_params(vitfast.create_model(name)) == count_params(timm.create_model(name, num_classes=1000))


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "vit_small_patch32_224", "vit_base_patch16_224",
                                  "vit_large_patch32_384", "vit_huge_patch14_224", "deit_tiny_patch16_224",
                                  "deit_small_distilled_patch16_224", "deit_base_distilled_patch16_384"])
@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_outputs_match_timm(name, backend):
    kw = SMALL_DEPTH if ("large" in name or "huge" in name or "384" in name) else {}
    ours, ref = pair(name, **kw)
    set_model_backend(ours, backend)
    size = ref.default_cfg["input_size"][1:]
    x = torch.randn(2, 3, *size)
    for training in (False, True):  # dropout and drop path are 0: train mode must agree too
        ours.train(training), ref.train(training)
        if hasattr(ref, "set_distilled_training"):
            ref.set_distilled_training(training)
        with torch.no_grad():
            a, b = ours(x), ref(x)
        if isinstance(b, tuple):
            assert isinstance(a, tuple) and len(a) == 2
            for u, v in zip(a, b):
                assert_close_to_scale(u, v)
        else:
            assert_close_to_scale(a, b)


def test_our_state_dict_loads_into_timm():
    ours = vitfast.create_model("deit_tiny_distilled_patch16_224", depth=3)
    ref = timm.create_model("deit_tiny_distilled_patch16_224", depth=3)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert_close_to_scale(ours(x), ref(x))


@pytest.mark.parametrize("kw", [dict(class_token=False, global_pool="avg"), dict(init_values=1e-5),
                                dict(qkv_bias=False), dict(mlp_ratio=2.0, num_heads=4, embed_dim=128)])
def test_overrides_match_timm(kw):
    ours, ref = pair("vit_tiny_patch16_224", img_size=64, depth=2, num_classes=10, **kw)
    x = torch.randn(3, 3, 64, 64)
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert_close_to_scale(ours(x), ref(x))


def test_deit_distilled_train_returns_both_heads_eval_their_mean():
    m = vitfast.create_model("deit_tiny_distilled_patch16_224", img_size=64, depth=2, num_classes=7)
    x = torch.randn(2, 3, 64, 64)
    cls_logits, dist_logits = m.train()(x)
    assert cls_logits.shape == dist_logits.shape == (2, 7)
    with torch.no_grad():
        a, b = m(x)
        assert torch.allclose(m.eval()(x), (a + b) / 2, atol=1e-6)


def test_attention_maps_from_the_same_forward():
    m = vitfast.create_model("vit_tiny_patch16_224", img_size=64, depth=3).eval()
    x = torch.randn(2, 3, 64, 64)
    feats, probs = m.forward_features(x, return_attn="probs")
    _, logits = m.forward_features(x, return_attn="logits")
    assert len(probs) == 3 and probs[0].shape == (2, 3, 17, 17)
    assert torch.allclose(probs[1].sum(-1), torch.ones(2, 3, 17))
    assert torch.allclose(logits[2].softmax(-1), probs[2], atol=1e-6)
    assert torch.allclose(feats, m.forward_features(x), atol=1e-5)


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_additive_logit_bias_and_its_gradient(backend):
    torch.manual_seed(1)
    attn = Attention(32, num_heads=4, qkv_bias=True, backend=backend)
    x = torch.randn(2, 9, 32)
    bias = torch.randn(2, 4, 9, 9, requires_grad=True)
    out = attn(x, attn_bias=bias)
    q, k, v = attn.qkv(x).reshape(2, 9, 3, 4, 8).permute(2, 0, 3, 1, 4)
    ref = ((q @ k.transpose(-1, -2)) * 8**-0.5 + bias).softmax(-1) @ v
    ref = attn.proj(ref.transpose(1, 2).reshape(2, 9, 32))
    assert torch.allclose(out, ref, atol=1e-5)
    out.square().sum().backward()
    assert bias.grad is not None and bias.grad.abs().sum() > 0


def copies_in_backward(split):
    """The aten copies (copy_, clone, stack, cat) of the backward of qkv -> split -> SDPA -> output."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    qkv = torch.randn(2, 9, 3 * 32, requires_grad=True)
    q, k, v = split(qkv)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out.backward(torch.ones_like(out))
    counts = {e.key: e.count for e in prof.key_averages() if e.key in ("aten::copy_", "aten::clone", "aten::stack",
                                                                       "aten::cat")}
    return counts, qkv.grad


def test_the_heads_are_split_so_their_gradient_is_stacked_once():
    """split_heads (the models' q, k, v) against timm's permute-then-unbind: the same views and
    gradients, and one copy fewer in the backward: the stack lands in the projection's layout."""
    from vitfast.layers import split_heads

    ours, grad = copies_in_backward(lambda t: split_heads(t, 3, 4))
    timm_order, timm_grad = copies_in_backward(lambda t: t.reshape(2, 9, 3, 4, 8).permute(2, 0, 3, 1, 4).unbind(0))
    assert torch.equal(grad, timm_grad)
    assert ours.get("aten::stack") == timm_order.get("aten::stack") == 1
    assert ours.get("aten::clone", 0) == 0 and ours.get("aten::copy_", 0) == 0
    assert timm_order.get("aten::clone") == 1 and timm_order.get("aten::copy_") == 1  # reshape's copy
    qkv = torch.randn(2, 9, 96)
    for a, b in zip(split_heads(qkv, 3, 4), qkv.reshape(2, 9, 3, 4, 8).permute(2, 0, 3, 1, 4).unbind(0)):
        assert a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def test_torch_compile_fullgraph_matches_eager():
    for name in ("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"):
        m = vitfast.create_model(name, img_size=32, depth=2).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(torch.compile(m, fullgraph=True)(x), m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,published", [("deit_tiny_patch16_224", 1.3), ("deit_small_patch16_224", 4.6),
                                            ("deit_base_patch16_224", 17.6)])
def test_macs_match_the_deit_paper(name, published):
    """DeiT's table prints GMACs to one decimal. DeiT-S and -B land within 0.2%; DeiT-Ti's exact
    count is 1.2537 G, which the paper prints as 1.3 (3.6% off only because of that rounding)."""
    macs = vitfast.models.count_macs(vitfast.create_model(name)) / 1e9
    assert round(macs, 1) == published
    if published > 2:
        assert abs(macs - published) <= 0.03 * published
    # The analytic count: 12 layers of 12·D²·N + 2·N²·D, the patch projection and the head.
    d = {"deit_tiny_patch16_224": 192, "deit_small_patch16_224": 384, "deit_base_patch16_224": 768}[name]
    n = 197
    analytic = 12 * (12 * d * d * n + 2 * n * n * d) + 196 * 768 * d + d * 1000
    assert macs * 1e9 == analytic
