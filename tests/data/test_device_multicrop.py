"""DeviceMultiCrop: MultiCrop's groups drawn for whole batches on the device (--ssl --data-on-device)."""
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from vitfast.data import ArrayDataset
from vitfast.data.device_multicrop import DeviceMultiCrop, _hsv_to_rgb, _rgb_to_hsv
from vitfast.data.multicrop import MultiCrop

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def images(n=6, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def crops(device, data, num_crops=(2, 3), size_crops=(16, 8), scales=((1, 1), (0.2, 0.5)), **kw):
    plan = MultiCrop(num_crops, size_crops, [list(s) for s in scales], MEAN, STD, **kw)
    dataset = ArrayDataset(data, list(range(len(data))), [str(i) for i in range(len(data))])
    return DeviceMultiCrop(dataset, device, MEAN, STD, plan)


def unnormalised(x):
    return x.cpu() * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


@pytest.mark.parametrize("device", DEVICES)
def test_groups_in_order_and_the_plain_whole_image_is_itself_or_its_mirror(device):
    data = images()
    plain = crops(device, data, jitter=0.0, grayscale=0.0, blur=[0.0] * 5, solarize=0.0)
    out = plain.augment(plain.images)
    assert [tuple(c.shape) for c in out] == [(6, 3, 16, 16)] * 2 + [(6, 3, 8, 8)] * 3
    x, want = unnormalised(out[0]), data.float() / 255
    same = (x - want).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (x - want.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (same | mirrored).all()


def test_grayscale_solarisation_and_blur_when_certain():
    data = images()
    gray = crops("cpu", data, jitter=0.0, grayscale=1.0, blur=[0.0] * 5, solarize=0.0)
    x = unnormalised(gray.augment(gray.images)[0])
    torch.testing.assert_close(x[:, 0], x[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(x[:, 1], x[:, 2], atol=1e-5, rtol=0)
    solar = crops("cpu", data, jitter=0.0, grayscale=0.0, blur=[0.0] * 5, solarize=1.0)
    out = solar.augment(solar.images)
    assert (unnormalised(out[1]) <= 0.5 + 1e-5).all()  # the second crop: every value at or above half inverted
    assert (unnormalised(out[0]) > 0.6).any()
    big = images(n=2, size=224)  # DINO's radius 0.1-2 px is meant at 224 px (scaled with smaller crops)
    blur = crops("cpu", big, size_crops=(224, 96), jitter=0.0, grayscale=0.0, blur=[1.0] * 5, solarize=0.0)
    sharp = crops("cpu", big, size_crops=(224, 96), jitter=0.0, grayscale=0.0, blur=[0.0] * 5, solarize=0.0)
    for b in (blur, sharp):
        b.generator.manual_seed(0)
    assert unnormalised(blur.augment(blur.images)[0]).std() < unnormalised(sharp.augment(sharp.images)[0]).std()


def test_hue_matches_torchvision():
    x = torch.rand(4, 3, 8, 8)
    h, s, v = _rgb_to_hsv(x)
    torch.testing.assert_close(_hsv_to_rgb(h, s, v), x, atol=1e-5, rtol=0)
    for shift in (-0.1, 0.07):
        torch.testing.assert_close(_hsv_to_rgb((h + shift) % 1.0, s, v), TF.adjust_hue(x, shift), atol=1e-5, rtol=0)


def test_batches_are_seeded_and_resume_at_a_batch():
    data = images(n=12)
    a = [c for c, _ in crops("cpu", data).batches(range(12), 4, seed=3, epoch=1)]
    b = [c for c, _ in crops("cpu", data).batches(range(12), 4, seed=3, epoch=1, skip=2)]
    assert len(a) == 3 and len(b) == 1
    for x, y in zip(a[2], b[0]):
        torch.testing.assert_close(x, y)
