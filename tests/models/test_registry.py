"""The registry: every model builds and trains a step on CPU; names, overrides, backends and bad input."""
import warnings

import pytest
import torch

import vitfast
from vitfast.layers import backend as backend_module

# Inputs small enough for CI: models whose constructor takes img_size run at a few patches.
SMALL_IMG = {16: 32, 32: 64, 14: 28}


# Per-family overrides that keep a model small but valid.
SMALL_KW = {"convit": dict(local_up_to_layer=1)}


def small_model(name):
    cfg = vitfast.models.get_model_config(name)
    extra = next((kw for prefix, kw in SMALL_KW.items() if name.startswith(prefix)), {})
    try:
        m = vitfast.create_model(name, img_size=SMALL_IMG.get(_patch(name), 64), depth=2, num_classes=5, **extra)
    except ValueError:
        m = vitfast.create_model(name, num_classes=5)  # families whose geometry is fixed (DVT's cascade)
    size = m.default_cfg["input_size"][1:]
    return m, size, cfg


def _patch(name):
    for p in (14, 16, 32):
        if f"patch{p}" in name or f"_s{p}_" in name:
            return p
    return None


@pytest.mark.parametrize("name", vitfast.list_models())
def test_every_model_trains_one_step_on_cpu(name):
    with torch.device("meta"):
        vitfast.create_model(name)  # the full-size model builds
    m, size, _ = small_model(name)
    x = torch.randn(2, 3, *size)
    out = m.train()(x)
    outs = out if isinstance(out, (list, tuple)) else [out]
    loss = sum(o.float().logsumexp(-1).mean() for o in outs)
    loss.backward()
    assert all(o.shape == (2, 5) for o in outs)
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) >= 0.9 * len(grads)


def test_list_models_patterns():
    assert "vit_base_patch16_224" in vitfast.list_models()
    assert vitfast.list_models("deit_*_distilled_*") == sorted(n for n in vitfast.list_models() if "distilled" in n)
    assert set(vitfast.list_models(["vit_tiny*", "deit_tiny*"])) >= {"vit_tiny_patch16_224", "deit_tiny_patch16_224"}


def test_unknown_name_lists_the_closest():
    with pytest.raises(ValueError, match="unknown model 'vit_tiny_patch16_244'; closest: vit_tiny_patch16_224"):
        vitfast.create_model("vit_tiny_patch16_244")


def test_unknown_override_is_an_error_not_ignored():
    with pytest.raises(ValueError, match="does not take the override 'drop_path' \\(did you mean 'drop_path_rate'\\?\\)"):
        vitfast.create_model("vit_tiny_patch16_224", drop_path=0.1)


def test_pretrained_needs_a_file():
    with pytest.raises(ValueError, match="downloads no weights: pass checkpoint_path"):
        vitfast.create_model("vit_tiny_patch16_224", pretrained=True)


def test_default_config_follows_overrides():
    m = vitfast.create_model("vit_small_patch16_224", img_size=96, num_classes=10)
    assert m.default_cfg["input_size"] == (3, 96, 96) and m.default_cfg["num_classes"] == 10
    assert vitfast.models.get_model_config("vit_base_patch16_384")["crop_pct"] == 1.0


@pytest.mark.parametrize("bad,match", [
    (torch.randn(1, 1, 32, 32), "expects 3 input channels, got 1"),
    (torch.randn(1, 3, 48, 48), "expects 32x32 images, got 48x48; create it with img_size=48"),
    (torch.randn(3, 32, 32), "expects images as a \\(batch, 3, height, width\\) tensor"),
])
def test_bad_input_is_a_value_error(bad, match):
    m = vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=1)
    with pytest.raises(ValueError, match=match):
        m(bad)


def test_backend_switch_global_per_model_and_fallback():
    m = vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=1, backend="eager")
    assert all(b.attn.backend == "eager" for b in m.blocks)
    assert vitfast.get_backend() == "sdpa"
    with backend_module.use_backend("eager"):
        assert vitfast.get_backend() == "eager"
    with pytest.raises(ValueError, match="backend must be one of 'eager', 'sdpa', 'vitfast', got 'fast'"):
        vitfast.set_backend("fast")
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        eager = m(x)
        vitfast.layers.set_model_backend(m, "vitfast")
        backend_module._warned.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fused = m(x)
            m(x)
    # The fused operators cover this model on the CPU: nothing falls back (the fallbacks themselves, once
    # warned, are tested with the attention op).
    assert not [w for w in caught if "falls back" in str(w.message)]
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-5)
