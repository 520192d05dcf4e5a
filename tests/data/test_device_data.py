"""DeviceImages: the training set on the device, RandomResizedCrop + flip as one grid_sample."""

import pytest
import torch
import torch.nn.functional as F

from vitfast.data import ArrayDataset, DeviceImages, decode_transform

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def images(n=6, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def device_images(device, data, **kw):
    return DeviceImages(ArrayDataset(data, list(range(len(data))), [str(i) for i in range(len(data))]), device, MEAN,
                        STD, **kw)


def normalised(x):
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("device", DEVICES)
def test_the_whole_image_unflipped_is_the_identity_and_flipped_its_mirror(device):
    data = images()
    same = device_images(device, data, scale=(1, 1), ratio=(1, 1), hflip=0.0)
    torch.testing.assert_close(same.augment(same.images).cpu(), normalised(data), atol=1e-5, rtol=0)
    mirror = device_images(device, data, scale=(1, 1), ratio=(1, 1), hflip=1.0)
    torch.testing.assert_close(mirror.augment(mirror.images).cpu(), normalised(data.flip(-1)), atol=1e-5, rtol=0)


def test_a_crop_is_that_region_resized_bilinearly():
    data = images(n=1, size=32)
    dev = device_images("cpu", data, hflip=0.0)
    dev.crop_boxes = lambda n: torch.tensor([[8 / 32, 4 / 32, 0.5, 0.5]])  # x0, y0, w, h: rows 4..19, cols 8..23
    got = dev.augment(dev.images)
    want = normalised(F.interpolate(data[:, :, 4:20, 8:24].float(), size=(32, 32), mode="bilinear",
                                    align_corners=False))
    # inside, the same bilinear weights; on the crop's edge grid_sample reads the neighbouring pixels
    # where a crop-then-resize repeats the edge
    torch.testing.assert_close(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-4, rtol=0)


def test_crop_boxes_follow_torchvision_ranges():
    dev = device_images("cpu", images(), scale=(0.25, 0.75), ratio=(0.5, 2.0))
    dev.generator.manual_seed(1)
    x0, y0, w, h = dev.crop_boxes(20_000).unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    area, aspect = w * h, w / h
    assert area.min() >= 0.25 - 1e-5 and area.max() <= 0.75 + 1e-5
    assert aspect.min() >= 0.5 - 1e-4 and aspect.max() <= 2.0 + 1e-4
    # log-uniform aspect: as many boxes wider than tall as taller than wide
    assert abs(float((aspect > 1).float().mean()) - 0.5) < 0.02
    # no try fits: the whole image (torchvision's fallback for a square image and ratios around 1)
    big = device_images("cpu", images(), scale=(3.0, 4.0), ratio=(0.9, 1.1))
    torch.testing.assert_close(big.crop_boxes(5), torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 5))


@pytest.mark.parametrize("device", DEVICES)
def test_batches_follow_the_order_are_seeded_per_batch_and_resume(device):
    data = images(n=10)
    dev = device_images(device, data, scale=(0.3, 1.0))
    order = [9, 3, 5, 0, 1, 2, 8, 4, 6, 7]
    full = list(dev.batches(order, 3, seed=4, epoch=2))
    assert len(full) == 3 and all(x.shape == (3, 3, 16, 16) and x.device.type == device for x, _ in full)
    assert [y.tolist() for _, y in full] == [[9, 3, 5], [0, 1, 2], [8, 4, 6]]  # label i is image i; last partial dropped
    resumed = list(dev.batches(order, 3, seed=4, epoch=2, skip=1))
    for (a, ya), (b, yb) in zip(full[1:], resumed):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    other_epoch = next(dev.batches(order, 3, seed=4, epoch=3))[0]
    assert not torch.equal(other_epoch, full[0][0])


def test_decode_transform_gives_uint8_at_the_size():
    from PIL import Image

    out = decode_transform(8)(Image.new("RGB", (20, 12), (10, 20, 30)))
    assert out.dtype == torch.uint8 and out.shape == (3, 8, 8) and out[:, 4, 4].tolist() == [10, 20, 30]
    with pytest.raises(ValueError, match="uint8"):
        DeviceImages(ArrayDataset(images().float(), [0] * 6, ["a"]), "cpu", MEAN, STD)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_set_too_big_for_the_device_is_refused():
    with pytest.raises(ValueError, match="GiB free.*without --data-on-device"):
        device_images("cuda", images(n=2), max_fraction=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_random_erasing_replaces_one_box_per_image_with_noise(device):
    data = images(n=400, size=32)
    dev = device_images(device, data, scale=(1, 1), ratio=(1, 1), hflip=0.0, re_prob=0.5)
    dev.generator.manual_seed(3)
    changed = ((dev.augment(dev.images).cpu() - normalised(data)).abs() > 1e-3).any(dim=1)  # (n, H, W)
    erased = changed.flatten(1).any(dim=1)
    assert 0.4 < float(erased.float().mean()) < 0.6
    for img in changed[erased]:
        rows, cols = img.any(dim=1).nonzero().flatten(), img.any(dim=0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert len(rows) == h and len(cols) == w  # one solid box
        assert 0.02 * 32 * 32 - 2 * 32 <= h * w <= 32 * 32 / 3 + 2 * 32 and 0.2 < w / h < 5
