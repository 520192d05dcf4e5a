"""R50+ViT-B/16 hybrids against timm: same parameter names and counts, same outputs and gradients (fp32,
eval and train mode, eager and SDPA backends, SAME padding at sides that are not multiples of 16), state
dicts interchangeable both ways, input checks."""
import pytest
import timm
import torch

import vitfast
import vitfast.models.vision_transformer_hybrid  # noqa: F401  (registers the hybrids)
from vitfast.layers import set_model_backend
from vitfast.models import count_params, load_checkpoint, load_state_dict

NAMES = ["vit_base_r50_s16_224", "vit_base_r50_s16_384"]
SMALL = dict(depth=2, num_classes=10)  # the ResNet is full size; two ViT blocks are enough to compare


def assert_close_to_scale(a, b):
    scale = b.abs().max().item()
    assert (a - b).abs().max().item() <= 1e-5 * scale, ((a - b).abs().max().item(), scale)


def perturbed_timm(name, **kw):
    """timm's randomly initialised model, with GroupNorm/LayerNorm affines and biases moved off their
    1/0 init so a mix-up of any of them shows in the outputs."""
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, **kw)
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return ref


@pytest.fixture(scope="module")
def pair():
    img = 56  # not a multiple of 16: SAME padding rounds 7 up to 4 and pads asymmetrically on the way
    ref = perturbed_timm("vit_base_r50_s16_224", img_size=img, **SMALL)
    ours = vitfast.create_model("vit_base_r50_s16_224", img_size=img, **SMALL)
    load_state_dict(ours, ref.state_dict(), strict=True)
    return ours, ref, img


def test_registered_with_timm_configs():
    assert set(NAMES) <= set(vitfast.list_models("vit_base_r50_*"))
    for name, size in zip(NAMES, (224, 384)):
        cfg = vitfast.models.get_model_config(name)
        assert cfg["input_size"] == (3, size, size) and cfg["mean"] == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_equal_timm(name):
    with torch.device("meta"):  # full size, no memory: names, shapes and count
        ours, ref = vitfast.create_model(name), timm.create_model(name, num_classes=1000)
    assert count_params(ours) == count_params(ref)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.patch_embed.grid_size == tuple(ref.patch_embed.grid_size)


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_outputs_match_timm(pair, backend):
    ours, ref, img = pair
    set_model_backend(ours, backend)
    x = torch.randn(2, 3, img, img, generator=torch.Generator().manual_seed(1))
    for training in (False, True):  # no dropout, no batch statistics: train mode must agree too
        ours.train(training), ref.train(training)
        with torch.no_grad():
            assert_close_to_scale(ours(x), ref(x))
    ours.eval(), ref.eval()


def test_gradients_match_timm(pair):
    ours, ref, img = pair
    set_model_backend(ours, "eager")
    x = torch.randn(2, 3, img, img, generator=torch.Generator().manual_seed(2))
    for m in (ours, ref):
        m.zero_grad()
        m.train()
        m(x).square().mean().backward()
        m.eval()
    grads = dict(ref.named_parameters())
    for name in ("patch_embed.backbone.stem.conv.weight", "patch_embed.backbone.stem.norm.bias",
                 "patch_embed.backbone.stages.2.blocks.0.downsample.conv.weight", "patch_embed.proj.weight",
                 "blocks.0.attn.qkv.weight", "pos_embed"):
        assert_close_to_scale(dict(ours.named_parameters())[name].grad, grads[name].grad)
    for m in (ours, ref):
        m.zero_grad(set_to_none=True)


def test_our_state_dict_loads_into_timm():
    ours = vitfast.create_model("vit_base_r50_s16_224", img_size=64, **SMALL)
    ref = timm.create_model("vit_base_r50_s16_224", img_size=64, **SMALL)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert_close_to_scale(ours(x), ref(x))


def test_timm_checkpoint_at_another_size(tmp_path):
    """A timm checkpoint at 64 px into a model at 96 px: the position embedding is resampled 4x4 -> 6x6."""
    ref = timm.create_model("vit_base_r50_s16_224", img_size=64, depth=1, num_classes=10)
    torch.save(ref.state_dict(), tmp_path / "r50.pth")
    ours = vitfast.create_model("vit_base_r50_s16_384", img_size=96, depth=1, num_classes=10)
    load_checkpoint(ours, tmp_path / "r50.pth")
    assert ours.pos_embed.shape == (1, 1 + 6 * 6, 768)
    assert torch.equal(ours.patch_embed.backbone.stem.conv.weight, ref.patch_embed.backbone.stem.conv.weight)


def test_input_checks():
    model = vitfast.create_model("vit_base_r50_s16_224", img_size=64, depth=1, num_classes=10)
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="64x64"):
        model(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="batch"):
        model(torch.randn(3, 64, 64))
    gray = vitfast.create_model("vit_base_r50_s16_224", img_size=64, depth=1, num_classes=10, in_chans=1)
    assert gray.patch_embed.backbone.stem.conv.weight.shape == (64, 1, 7, 7)
    assert gray(torch.randn(1, 1, 64, 64)).shape == (1, 10)
