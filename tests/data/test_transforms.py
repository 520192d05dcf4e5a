"""create_transform for PIL images and uint8 tensors; auto-augment strings."""
import math

import pytest
import torch

pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from vitfast.data import RandAugment, create_transform, parse_auto_augment, resolve_data_config  # noqa: E402


def pil(w=50, h=40):
    return Image.new("RGB", (w, h), (255, 0, 128))


def tensor_image(h=40, w=50):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("make", [pil, tensor_image])
@pytest.mark.parametrize("train", [True, False])
def test_output_shape_dtype(make, train):
    t = create_transform(24, train, auto_augment="rand-m9-mstd0.5-inc1" if train else None, re_prob=0.5,
                         color_jitter=0.4)
    torch.manual_seed(0)
    for _ in range(5):
        x = t(make())
        assert type(x) is torch.Tensor and x.shape == (3, 24, 24) and x.dtype == torch.float32


def test_non_square_size():
    assert create_transform((16, 24), True)(pil()).shape == (3, 16, 24)
    assert create_transform((16, 24), False)(pil()).shape == (3, 16, 24)


def test_eval_resize_then_center_crop_and_normalize():
    t = create_transform(32, False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=0.875)
    resize, crop = t.transforms[0], t.transforms[1]
    assert isinstance(resize, v2.Resize) and resize.size == [math.floor(32 / 0.875)] == [36]
    assert isinstance(crop, v2.CenterCrop) and crop.size == (32, 32)
    x = t(pil())  # solid colour (255, 0, 128): exact after normalisation
    expected = torch.tensor([(1 - 0.5) / 0.25, (0 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.25])
    assert torch.allclose(x[:, 5, 5], expected, atol=1e-5)
    assert create_transform(224, False, crop_pct=0.9).transforms[0].size == [248]
    # crop_pct picks how much of the image the centre crop keeps: 1.0 keeps it all
    img = torch.zeros(3, 40, 40, dtype=torch.uint8)
    img[:, :, :2] = 255  # a bright border column on the left
    full = create_transform(40, False, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=1.0)(img)
    cropped = create_transform(40, False, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=0.8)(img)
    assert full[:, :, 0].mean() > 0.9 and cropped[:, :, 0].mean() < 0.1


def test_train_pipeline_order():
    t = create_transform(32, True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25, scale=(0.5, 1.0), hflip=0.3)
    kinds = [type(op) for op in t.transforms]
    assert kinds == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, RandAugment, v2.ToImage, v2.ToDtype, v2.Normalize,
                     v2.RandomErasing, v2.ToPureTensor]
    assert t.transforms[0].scale == (0.5, 1.0) and t.transforms[1].p == 0.3
    plain = create_transform(32, True, hflip=0.0, color_jitter=0.4)
    assert [type(op) for op in plain.transforms][:2] == [v2.RandomResizedCrop, v2.ColorJitter]


def test_train_is_random_eval_is_not():
    img = tensor_image()
    train, val = create_transform(24, True), create_transform(24, False)
    torch.manual_seed(0)
    a, b = train(img), train(img)
    assert not torch.equal(a, b)
    torch.manual_seed(0)
    assert torch.equal(a, train(img))  # reproducible from torch's seed
    assert torch.equal(val(img), val(img))


@pytest.mark.parametrize("spec,num_ops,level,std", [
    ("rand-m9-mstd0.5-inc1", 2, 9.0, 0.5), ("rand-m7-n3", 3, 7.0, 0.0), ("rand-n1-m10", 1, 10.0, 0.0),
    ("rand-m0.5-mstd0", 2, 0.5, 0.0), ("rand", 2, 9.0, 0.0), ("rand-m9-mstdinf-inc0", 2, 9.0, math.inf)])
def test_rand_augment_strings(spec, num_ops, level, std):
    ra = parse_auto_augment(spec)
    assert isinstance(ra, RandAugment) and isinstance(ra, v2.RandAugment)
    assert (ra.num_ops, ra.level, ra.magnitude_std) == (num_ops, level, std)
    # timm's scale: m/10 of each operation's range (torchvision: bin index / (bins - 1))
    assert ra.magnitude / (ra.num_magnitude_bins - 1) == pytest.approx(level / 10)
    torch.manual_seed(0)
    assert ra(tensor_image()).shape == (3, 40, 50) and ra(pil()).size == (50, 40)


def test_magnitude_std_draws_around_the_magnitude():
    ra = RandAugment(2, 5.0, magnitude_std=1.0)
    torch.manual_seed(0)
    levels = []
    for _ in range(200):
        ra(tensor_image(8, 8))
        levels.append(ra.magnitude / 100)
    levels = torch.tensor(levels)
    assert 4.7 < levels.mean() < 5.3 and 0.7 < levels.std() < 1.3 and levels.min() >= 0 and levels.max() <= 10


def test_other_policies():
    assert isinstance(parse_auto_augment("autoaug"), v2.AutoAugment)
    assert isinstance(parse_auto_augment("trivial"), v2.TrivialAugmentWide)
    mix = parse_auto_augment("augmix-m3-w2-d-1-a0.5")
    assert isinstance(mix, v2.AugMix)
    assert (mix.severity, mix.mixture_width, mix.chain_depth, mix.alpha) == (3, 2, -1, 0.5)


@pytest.mark.parametrize("spec,match", [
    ("", "non-empty"), ("random-m9", "unknown auto_augment"), ("rand-m", "cannot read 'm'"),
    ("rand-x9", "cannot read 'x9'"), ("rand-m9-n2.5", "n takes a int"), ("rand-m11", "magnitude must be within"),
    ("rand-n0", "num_ops must be at least 1"), ("rand-m9-inc2", "inc must be 0 or 1"),
    ("rand-m9-mstd-1", "cannot read"),
    ("rand-m9_mstd0.5", "cannot read"), ("augmix-z1", "cannot read 'z1'"), ("autoaug-m9", "unknown auto_augment")])
def test_bad_auto_augment_strings(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_auto_augment(spec)
    with pytest.raises(ValueError, match=match):
        create_transform(32, True, auto_augment=spec) if spec else parse_auto_augment(spec)


@pytest.mark.parametrize("kwargs,match", [
    (dict(interpolation="cubic"), "interpolation must be one of"), (dict(crop_pct=0), "crop_pct"),
    (dict(crop_pct=1.5), "crop_pct"), (dict(mean=(0.5,)), "mean and std need 3 values")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_transform(32, False, **kwargs)
    with pytest.raises(ValueError, match="scale must be a"):
        create_transform(32, True, scale=(1.0, 0.5))


def test_resolve_data_config_from_model():
    import vitfast

    m = vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=1, embed_dim=48, num_heads=3)
    cfg = resolve_data_config(m, crop_pct=None, interpolation="bilinear")
    assert cfg["img_size"] == 32 and cfg["interpolation"] == "bilinear"
    assert (cfg["mean"], cfg["std"], cfg["crop_pct"]) == (tuple(m.default_cfg["mean"]), tuple(m.default_cfg["std"]),
                                                          m.default_cfg["crop_pct"])
    assert create_transform(**cfg, train=False)(pil()).shape == (3, 32, 32)
