"""Mixup / CutMix soft targets, label smoothing and SoftTargetCrossEntropy."""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torchvision")  # vitfast.data needs torchvision (pip install vitfast[vision])
from vitfast.data import Mixup, SoftTargetCrossEntropy, mixup_target, one_hot, smooth_one_hot  # noqa: E402

K = 5


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % K  # y and y.flip(0) differ everywhere


def test_one_hot_and_smoothing():
    y = torch.tensor([0, 3, 4])
    assert torch.equal(one_hot(y, K), F.one_hot(y, K).float())
    s = smooth_one_hot(y, K, 0.1)
    assert torch.allclose(s.sum(1), torch.ones(3))
    assert torch.allclose(s[0], torch.tensor([1 - 0.1 + 0.02, 0.02, 0.02, 0.02, 0.02]))
    t = mixup_target(y, K, lam=0.7, smoothing=0.0)
    assert torch.allclose(t[0], torch.tensor([0.7, 0, 0, 0, 0.3]))  # y[0] = 0 mixed with y[-1] = 4


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_mixes_images_and_targets_alike(smoothing):
    x, y = batch()
    torch.manual_seed(0)
    out, target = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=smoothing, num_classes=K)(x, y)
    assert target.shape == (8, K) and torch.allclose(target.sum(1), torch.ones(8))
    off = smoothing / K
    lam = ((target[0, y[0]] - off) / (1 - smoothing)).item()  # weight of the sample's own class
    assert 0 < lam < 1
    assert torch.allclose(out, lam * x + (1 - lam) * x.flip(0), atol=1e-5)
    assert torch.allclose(target, mixup_target(y, K, lam, smoothing), atol=1e-6)


def test_cutmix_pastes_a_box_and_weights_targets_by_its_area():
    x, y = batch()
    for seed in range(10):
        torch.manual_seed(seed)
        out, target = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=K)(x, y)
        assert torch.allclose(target.sum(1), torch.ones(8))
        from_other = (out == x.flip(0)).all(1) & (out != x).any(1)  # (N, H, W): pixels taken from the partner
        assert ((out == x) | (out == x.flip(0))).all()
        area = from_other[0].float().mean().item()
        assert target[0, y[0]].item() == pytest.approx(1 - area, abs=1e-6)  # lam corrected to the real box
        rows, cols = from_other[0].any(1).nonzero(), from_other[0].any(0).nonzero()
        if len(rows):  # one axis-aligned rectangle, the same for every sample
            box = from_other[0][rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert box.all() and (from_other == from_other[0]).all()


def test_switch_prob_and_prob():
    x, y = batch()
    torch.manual_seed(0)
    out, _ = Mixup(switch_prob=1.0, num_classes=K)(x, y)  # always CutMix: every pixel from one of the two
    assert ((out == x) | (out == x.flip(0))).all()
    out, _ = Mixup(switch_prob=0.0, num_classes=K)(x, y)  # always mixup: blended pixels
    assert not ((out == x) | (out == x.flip(0))).all()
    out, target = Mixup(prob=0.0, label_smoothing=0.1, num_classes=K)(x, y)
    assert torch.equal(out, x) and torch.allclose(target, smooth_one_hot(y, K, 0.1))


def test_mixup_is_reproducible_from_torch_seed():
    x, y = batch()
    mix = Mixup(num_classes=K)
    torch.manual_seed(3)
    a = mix(x, y)
    torch.manual_seed(3)
    b = mix(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_arguments():
    with pytest.raises(TypeError):
        Mixup(0.8, 1.0)  # num_classes is required
    with pytest.raises(ValueError, match="alpha"):
        Mixup(mixup_alpha=-1, num_classes=K)
    with pytest.raises(ValueError, match="prob"):
        Mixup(prob=2, num_classes=K)
    with pytest.raises(ValueError, match="images but"):
        Mixup(num_classes=K)(torch.zeros(4, 3, 8, 8), torch.zeros(3, dtype=torch.long))


def test_soft_target_cross_entropy():
    logits = torch.randn(6, K, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = SoftTargetCrossEntropy()
    assert torch.allclose(loss(logits, one_hot(y, K)), F.cross_entropy(logits, y))
    assert torch.allclose(loss(logits, smooth_one_hot(y, K, 0.1)), F.cross_entropy(logits, y, label_smoothing=0.1))
    assert torch.allclose(loss(logits, y), F.cross_entropy(logits, y))  # integer targets: plain CE
    lam = 0.3
    mixed = mixup_target(y, K, lam)
    expected = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y.flip(0))
    assert torch.allclose(loss(logits, mixed), expected)
