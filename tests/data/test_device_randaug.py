"""DeviceRandAugment: RandAugment drawn per image on the device, against torchvision's operations."""
import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from vitfast.data import ArrayDataset, DeviceImages
from vitfast.data.device_randaug import OPS, DeviceRandAugment

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def images(n=8, size=16, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g).to(device)


def colour(x, name, level, sign=1.0):
    n = x.shape[0]
    ops = torch.full((n, 1), OPS.index(name), device=x.device)
    return DeviceRandAugment.colour(x.float(), ops, torch.full((n,), float(level), device=x.device),
                                    torch.full((n, 1), float(sign), device=x.device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,level,sign,reference,tolerance", [  # 1: we round where uint8 truncates
    ("Brightness", 7, 1, lambda x: TF.adjust_brightness(x, 1.63), 1),
    ("Brightness", 7, -1, lambda x: TF.adjust_brightness(x, 0.37), 1),
    ("Color", 9, 1, lambda x: TF.adjust_saturation(x, 1.81), 1),
    ("Contrast", 5, -1, lambda x: TF.adjust_contrast(x, 0.55), 1),
    ("Sharpness", 9, 1, lambda x: TF.adjust_sharpness(x, 1.81), 1),
    ("Posterize", 9, 1, lambda x: TF.posterize(x, 4), 0),  # 8 - round(0.4 * 9) bits
    ("Posterize", 2, 1, lambda x: TF.posterize(x, 7), 0),
    ("Solarize", 6, 1, lambda x: TF.solarize(x, 255 * 0.4), 0),
    ("AutoContrast", 9, 1, TF.autocontrast, 1),
    ("Equalize", 9, 1, TF.equalize, 0),
    ("Identity", 9, 1, lambda x: x, 0),
])
def test_each_colour_operation_matches_torchvision(device, name, level, sign, reference, tolerance):
    x = images(device=device)
    x[0] = x[0] // 4 + 60  # a low-contrast image: autocontrast and equalize stretch it
    x[1] = 77  # a constant image: autocontrast and equalize leave it alone
    got = colour(x, name, level, sign)
    want = reference(x).float()
    assert (got - want).abs().max() <= tolerance
    assert got.min() >= 0 and got.max() <= 255 and torch.equal(got, got.round())


def test_each_image_takes_the_operation_it_drew_in_order():
    x = images(n=3).float()
    ops = torch.tensor([[OPS.index("Posterize"), OPS.index("Solarize")],
                        [OPS.index("Solarize"), OPS.index("Posterize")],
                        [OPS.index("ShearX"), OPS.index("Identity")]])
    level, sign = torch.full((3,), 9.0), torch.ones(3, 2)
    got = DeviceRandAugment.colour(x, ops, level, sign)
    post, sol = (lambda t: TF.posterize(t.to(torch.uint8), 4).float()), (lambda t: torch.where(t >= 25.5, 255 - t, t))
    torch.testing.assert_close(got[0], sol(post(x[:1]))[0])
    torch.testing.assert_close(got[1], post(sol(x[1:2]))[0])
    torch.testing.assert_close(got[2], x[2])  # geometric operations are not the colour pass's


def test_geometric_maps():
    n = 4
    level = torch.tensor([10.0, 5.0, 10.0, 0.0])
    sign = torch.ones(n, 1)
    rot = DeviceRandAugment.geometry(torch.full((n, 1), OPS.index("Rotate")), level, sign, 32)
    angle = torch.atan2(rot[:, 1, 0], rot[:, 0, 0])
    torch.testing.assert_close(angle, torch.deg2rad(3 * level))  # 30 degrees at magnitude 10
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(n))
    shift = DeviceRandAugment.geometry(torch.full((n, 1), OPS.index("TranslateY")), level, -sign, 32)
    # whole pixels: floor(level / 10 * 150 / 331 * 32) = 14, 7, 14, 0; in [-1, 1] units, 2 / 32 per pixel
    torch.testing.assert_close(shift[:, 1, 2], -torch.tensor([14.0, 7.0, 14.0, 0.0]) * 2 / 32)
    shear = DeviceRandAugment.geometry(torch.full((n, 1), OPS.index("ShearX")), level, sign, 32)
    torch.testing.assert_close(shear[:, 0, 1], 0.03 * level)
    ident = DeviceRandAugment.geometry(torch.tensor([[OPS.index("Contrast"), OPS.index("Identity")]] * n), level,
                                       torch.ones(n, 2), 32)
    torch.testing.assert_close(ident, torch.eye(3).expand(n, 3, 3))
    # two operations compose as two resamplings would: the first's map applied to the second's
    both = DeviceRandAugment.geometry(torch.tensor([[OPS.index("Rotate"), OPS.index("TranslateX")]] * n), level,
                                      torch.ones(n, 2), 32)
    only_shift = DeviceRandAugment.geometry(torch.full((n, 1), OPS.index("TranslateX")), level, sign, 32)
    torch.testing.assert_close(both, rot @ only_shift)


@pytest.mark.parametrize("device", DEVICES)
def test_a_shift_moves_the_crop_by_whole_pixels_and_fills_black(device):
    data = images(n=2, size=32, device=device)
    dev = DeviceImages(ArrayDataset(data.cpu(), [0, 1], ["a", "b"]), device, (0, 0, 0), (1 / 255,) * 3,
                       scale=(1, 1), ratio=(1, 1), hflip=0.0, randaug=DeviceRandAugment(1, 10.0))
    dev.randaug.draw = lambda n, g, d: (torch.full((n, 1), OPS.index("TranslateX"), device=d),
                                        torch.full((n,), 10.0, device=d), torch.ones(n, 1, device=d))
    got = dev.augment(dev.images)  # normalised with mean 0, std 1/255: the 0..255 values themselves
    k = 14  # floor(150 / 331 * 32): output column c reads input column c + 14
    torch.testing.assert_close(got[..., :32 - k], data[..., k:].float(), atol=1e-3, rtol=0)
    assert (got[..., 32 - k:] == 0).all()


def test_draws_are_per_image_uniform_and_reproducible():
    aug = DeviceRandAugment(num_ops=2, magnitude=9, magnitude_std=0.5)
    g = torch.Generator().manual_seed(3)
    ops, level, sign = aug.draw(70_000, g, "cpu")
    counts = torch.bincount(ops.flatten(), minlength=len(OPS)).float() / ops.numel()
    assert (counts - 1 / len(OPS)).abs().max() < 0.005
    assert abs(float((sign > 0).float().mean()) - 0.5) < 0.01
    assert level.min() >= 0 and level.max() <= 10 and abs(float(level.mean()) - 9) < 0.05
    assert abs(float(level.std()) - 0.5) < 0.05  # few draws reach the clip at 10 sd 2 away
    uniform = DeviceRandAugment(2, 6, math.inf).draw(50_000, g, "cpu")[1]
    assert uniform.min() >= 0 and uniform.max() <= 6 and abs(float(uniform.mean()) - 3) < 0.05
    again = aug.draw(5, torch.Generator().manual_seed(11), "cpu")
    for a, b in zip(again, aug.draw(5, torch.Generator().manual_seed(11), "cpu")):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_augmented_batches_are_normalised_and_reproducible(device):
    data = images(n=64, size=32)
    dev = DeviceImages(ArrayDataset(data, list(range(64)), [str(i) for i in range(64)]), device, (0.5,) * 3,
                       (0.25,) * 3, scale=(0.35, 1), randaug=DeviceRandAugment.from_spec("rand-m9-n2-mstd0.5-inc1"),
                       re_prob=0.25)
    first = [x for x, _ in dev.batches(range(64), 32, seed=1, epoch=2)]
    second = [x for x, _ in dev.batches(range(64), 32, seed=1, epoch=2)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    x = torch.cat(first)
    assert x.shape == (64, 3, 32, 32) and torch.isfinite(x).all()
    assert not torch.equal(first[0], next(dev.batches(range(64), 32, seed=1, epoch=3))[0])


@pytest.mark.parametrize("spec,match", [
    ("augmix", "only RandAugment .* runs on the device, got 'augmix'"),
    ("autoaug", "only RandAugment"),
    ("rand-m11", "magnitude must be within"),
    ("rand-x3", "cannot read 'x3'"),
])
def test_policies_the_device_cannot_run_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        DeviceRandAugment.from_spec(spec)
