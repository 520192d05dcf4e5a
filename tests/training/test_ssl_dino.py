"""DINO (issue 63): its loss, centre and schedules against references written here from the paper's
pseudo-code, the head, multi-crop planning and forwards, k-NN against brute force, and `--ssl dino`
through the training command line (k-NN validation, outputs, bit-exact resume, refusals)."""
import json
import math

import numpy as np
import pytest
import torch

import vitfast
from vitfast.cli import UsageError
from vitfast.data.multicrop import MultiCrop, plan_crops
from vitfast.layers import resample_abs_pos_embed
from vitfast.models.ssl_heads import DINOHead, MultiCropNet, dino_head_dims, features
from vitfast.train import main as train_main
from vitfast.training.knn import knn_accuracy
from vitfast.training.methods.dino import dino_loss
from vitfast.training.methods.self_supervised import cosine
from vitfast.training.state import load_state

TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2",
        "--batch-size", "32", "--ptq-report", "", "--ssl", "dino", "--num-crops", "2,2", "--head-out-dim", "256",
        "--log-every", "2", "--quiet"]


def reference_dino_loss(student, teacher, center, tps, tpt, n_global):
    """Algorithm 1 of the DINO paper in float64 NumPy: H(t, s) = -sum t log s over each pair of a global
    crop's teacher output and another crop's student output, averaged over the pairs."""
    def softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    s = np.asarray(student, np.float64)
    t = np.asarray(teacher, np.float64)
    b = t.shape[0] // n_global
    crops = s.shape[0] // b
    total, n = 0.0, 0
    for iq in range(n_global):
        tq = softmax((t[iq * b:(iq + 1) * b] - np.asarray(center, np.float64)) / tpt)
        for v in range(crops):
            if v == iq:
                continue
            sv = softmax(s[v * b:(v + 1) * b] / tps)
            total += np.mean(np.sum(-tq * np.log(sv), axis=-1))
            n += 1
    return total / n


def test_the_loss_equals_the_papers_pseudo_code():
    g = torch.Generator().manual_seed(0)
    b, k, crops = 5, 16, 6
    student, teacher = torch.randn(crops * b, k, generator=g), torch.randn(2 * b, k, generator=g)
    center = torch.randn(1, k, generator=g) * 0.1
    ours = dino_loss(student, teacher, center, 0.1, 0.04, 2).item()
    assert ours == pytest.approx(reference_dino_loss(student, teacher, center, 0.1, 0.04, 2), rel=1e-5)


def test_schedules_at_their_end_points():
    assert cosine(0.996, 1.0, 0, 100) == pytest.approx(0.996)
    assert cosine(0.996, 1.0, 100, 100) == pytest.approx(1.0)
    assert cosine(0.04, 0.4, 50, 100) == pytest.approx(0.22)


def test_teacher_temperature_warms_linearly_then_holds():
    from vitfast.training.methods.dino import DINO

    dino = DINO({"warmup_teacher_temp": 0.04, "teacher_temp": 0.07})
    dino.temp_warmup = 30
    assert [dino.teacher_temp(s) for s in (0, 15, 30, 1000)] == pytest.approx([0.04, 0.055, 0.07, 0.07])


def test_head_dims_follow_the_model_and_the_head_normalises():
    assert dino_head_dims(384) == (2048, 256, 65536) == dino_head_dims(768)  # DINO's for ViT-S and up
    assert dino_head_dims(96) == (512, 64, 4096)
    head = DINOHead(32, 64, 48, 16)
    assert not head.last_g.requires_grad and head.last_layer_parameters() == [head.last_v]
    x = torch.randn(3, 32)
    bottleneck = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    rows = torch.nn.functional.normalize(head.last_v, dim=-1)  # g = 1: unit rows
    torch.testing.assert_close(head(x), bottleneck @ rows.T)


def test_crops_follow_the_image_and_bad_groups_are_named():
    assert plan_crops(224, 16) == ([2, 8], [224, 96], [[0.4, 1.0], [0.05, 0.4]])  # DINO's
    assert plan_crops(32, 4) == ([2, 8], [32, 12], [[0.4, 1.0], [0.05, 0.4]])
    assert plan_crops(32, 4, crop_scales=[0.14, 1, 0.05, 0.14])[2] == [[0.14, 1.0], [0.05, 0.14]]
    with pytest.raises(ValueError, match="whole number of the model's 16-px patches"):
        plan_crops(224, 16, size_crops=[224, 8])
    with pytest.raises(ValueError, match="one entry per crop group"):
        plan_crops(224, 16, num_crops=[2, 4], size_crops=[224])
    crops = MultiCrop(*plan_crops(32, 8, num_crops=[2, 3]), (0.5,) * 3, (0.5,) * 3)(
        torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3


def test_a_vit_takes_other_sizes_with_its_position_embedding_resampled():
    torch.manual_seed(0)
    model = vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1,
                                 num_heads=2, num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    model.set_dynamic_img_size()
    torch.testing.assert_close(model(x), before)  # the native size: unchanged
    small = torch.randn(2, 3, 16, 16)
    fixed = vitfast.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, depth=1,
                                 num_heads=2, num_classes=0).eval()
    state = dict(model.state_dict(), pos_embed=resample_abs_pos_embed(model.pos_embed.detach(), (2, 2), 1))
    fixed.load_state_dict(state)
    torch.testing.assert_close(model(small), fixed(small))
    with pytest.raises(ValueError, match="divisible by the patch"):
        model(torch.randn(1, 3, 20, 20))


@pytest.mark.parametrize("name, kwargs", [
    ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)),
    ("t2t_vit_7", dict(img_size=64, depth=1)),
    ("convit_tiny", dict(img_size=32, patch_size=4, depth=2, local_up_to_layer=1)),
    ("dvt_t2t_vit_12", dict(img_size=64, depth=1, embed_dim=32, num_heads=2, token_dim=16)),
    ("dvt_deit_small", dict(img_size=64, depth=1, embed_dim=32, num_heads=2)),
])
def test_every_family_takes_local_crops(name, kwargs):
    """Each family at its native size is unchanged by dynamic sizes, and takes a half-size crop: DeiT's two
    prefix tokens kept, T2T's fixed table resampled, ConViT's GPSA on the smaller grid's relative positions."""
    torch.manual_seed(0)
    model = vitfast.create_model(name, num_classes=0, **kwargs).eval()
    x = torch.randn(2, 3, kwargs["img_size"], kwargs["img_size"])
    before = features(model, x)
    model.set_dynamic_img_size()
    torch.testing.assert_close(features(model, x), before)
    half = kwargs["img_size"] // 2
    assert half % model.patch_stride == 0
    out = features(model, torch.randn(2, 3, half, half))
    assert out.shape == before.shape and torch.isfinite(out).all()
    if name.startswith("convit"):  # the GPSA layer saw the half-size grid's positions
        gpsa = model.blocks[0].attn
        assert gpsa.input_grid == (half // 4, half // 4)
        assert gpsa.positional_attention((half // 4) ** 2).shape[-1] == (half // 4) ** 2


@pytest.mark.parametrize("backbone", ["t2t", "deit"])
def test_dvt_at_a_crop_size_is_dvt_built_for_that_size(backbone):
    """DVT under dynamic sizes: each stage's grid follows the crop (stride-24 and padded stages included),
    the reused features and relations are resampled between the crop's grids, and every exit equals a DVT
    built at the crop's size with the position tables resampled (checkpoint_filter_fn's way)."""
    from vitfast.models.dvt import DynamicVisionTransformer, checkpoint_filter_fn

    kw = dict(backbone=backbone, embed_dim=32, depth=2, num_heads=2, token_dim=16, num_classes=5)
    torch.manual_seed(0)
    model = DynamicVisionTransformer(img_size=64, **kw).eval()
    model.set_dynamic_img_size()
    crop = torch.randn(2, 3, 48, 48)
    fixed = DynamicVisionTransformer(img_size=48, **kw).eval()
    fixed.load_state_dict(checkpoint_filter_fn(model.state_dict(), fixed))
    assert [s.grid_of(crop) for s in model.stages] == [s.grid_size for s in fixed.stages]
    assert [s.grid_of(crop) for s in model.stages] != [s.grid_size for s in model.stages]
    with torch.no_grad():
        for ours, theirs in zip(model(crop), fixed(crop)):
            torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(features(model, crop), features(fixed, crop))
    assert model.patch_stride == 16
    with pytest.raises(ValueError, match="divisible by the patch"):
        model(torch.randn(1, 3, 40, 40))
    if backbone == "deit":  # its 32-px first stage makes no token of a 16-px crop
        assert model.min_img_size() == 32
        with pytest.raises(ValueError, match="at least 32 px"):
            model(torch.randn(1, 3, 16, 16))


def test_one_forward_per_resolution_group():
    torch.manual_seed(0)
    backbone = vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1,
                                    num_heads=2, num_classes=0).eval()
    backbone.set_dynamic_img_size()
    net = MultiCropNet(backbone, DINOHead(32, 64, 48, 16)).eval()
    crops = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16),
             torch.randn(2, 3, 16, 16)]
    calls = []
    backbone.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    out = net(crops)
    assert calls == [], "MultiCropNet calls forward_features, not forward"
    sizes = []
    original = backbone.forward_features
    backbone.forward_features = lambda x: sizes.append(tuple(x.shape)) or original(x)
    out = net(crops)
    assert sizes == [(4, 3, 32, 32), (4, 3, 16, 16)]
    one_by_one = torch.cat([net.head(features(backbone, c)) for c in crops])
    torch.testing.assert_close(out, one_by_one, rtol=1e-4, atol=1e-5)


def test_knn_against_brute_force():
    g = torch.Generator().manual_seed(1)
    bank = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=-1)
    bank_labels = torch.randint(0, 4, (50,), generator=g)
    queries = torch.nn.functional.normalize(torch.randn(9, 8, generator=g), dim=-1)
    labels = torch.randint(0, 4, (9,), generator=g)
    k, t = 7, 0.07
    hits1 = hits5 = 0
    for q, label in zip(queries.tolist(), labels.tolist()):
        sims = sorted(((sum(a * b for a, b in zip(q, row)), c) for row, c in zip(bank.tolist(), bank_labels.tolist())),
                      reverse=True)[:k]
        votes = [0.0] * 4
        for s, c in sims:
            votes[c] += math.exp(s / t)
        ranked = sorted(range(4), key=lambda c: -votes[c])
        hits1 += ranked[0] == label
        hits5 += label in ranked[:5]
    acc1, acc5 = knn_accuracy(bank, bank_labels, queries, labels, 4, k, t)
    assert acc1 == pytest.approx(100 * hits1 / 9) and acc5 == pytest.approx(100 * hits5 / 9)


@pytest.mark.parametrize("extra, message", [
    (["--mixup", "0.8"], "--mixup: mixup is for supervised training"),
    (["--smoothing", "0.1"], "--smoothing: label smoothing is for supervised training"),
    (["--ema", "0.99"], "DINO's teacher and MoCo v3's momentum encoder are EMAs already"),
    (["--num-clusters", "30"], "--num-clusters has no effect without --ssl swav"),
    (["--num-crops", "2,4", "--size-crops", "32"], "one entry per crop group"),
    (["--total-num-crops", "5"], "--total-num-crops 5 is not the sum of --num-crops"),
    (["--size-crops", "32,4"], "is not a whole number of the model's 8-px patches"),
    (["--model", "dvt_deit_small", "--model-kwargs", "img_size=64,embed_dim=32,depth=1,num_heads=2", "--size-crops",
      "64,16"], "dvt_deit_small takes crops of at least 32 px"),
    (["--crop-color-jitter", "0.4,0.4,0.2"], "--crop-color-jitter 0.4,0.4,0.2: four strengths"),
    (["--crop-grayscale", "1.5"], "--crop-grayscale"),
])
def test_bad_ssl_input_is_one_line(tmp_path, extra, message):
    with pytest.raises(UsageError, match=message):
        train_main(TINY + ["--steps", "1", "--output", str(tmp_path / "run")] + extra)
    assert not (tmp_path / "run").exists()


def test_ssl_options_without_ssl_are_refused(tmp_path):
    with pytest.raises(UsageError, match="--teacher-temp has no effect without --ssl dino"):
        train_main(["--teacher-temp", "0.05", "--steps", "1", "--output", str(tmp_path / "run")])


def test_dino_trains_validates_by_knn_and_resumes_bit_exactly(tmp_path, small_builtin):
    args = TINY + ["--data", small_builtin, "--steps", "6", "--deterministic", "--eval-every", "100",
                   "--eval-every-steps", "3", "--keep-checkpoints", "2"]
    full = train_main(args + ["--output", str(tmp_path / "full")])
    assert 0 <= full["val_acc1"] <= 100 and full["steps"] == 6
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [3, 6] and all(r["knn"] for r in val)
    # what a curve against epochs and minutes needs: the images and the seconds of training before each
    assert [r["seen"] for r in val] == [3 * 32, 6 * 32] and 0 < val[0]["train_seconds"] < val[1]["train_seconds"]
    # continued from its step-3 checkpoint into another folder: the same weights, teacher and centre
    resumed = train_main(["--resume", str(tmp_path / "full" / "checkpoint-step3.pt"), "--output",
                          str(tmp_path / "again"), "--quiet"])
    a, b = load_state(tmp_path / "full" / "checkpoint-last.pt"), load_state(tmp_path / "again" / "checkpoint-last.pt")
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for part in ("student_head", "teacher_head"):
        for name in a["ssl"][part]:
            assert torch.equal(a["ssl"][part][name], b["ssl"][part][name]), (part, name)
    assert torch.equal(a["ssl"]["center"], b["ssl"]["center"])
    assert resumed["val_acc1"] == full["val_acc1"]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "full" / "model.safetensors"), "pt") as f:  # the teacher backbone, headless
        assert f.metadata()["vitfast.weights"] == "ema"
        assert "pos_embed" in f.keys() and not any(k.startswith("head.") for k in f.keys())


def test_dino_with_the_crops_drawn_on_the_device(tmp_path, small_builtin):
    summary = train_main(TINY + ["--data", small_builtin, "--steps", "2", "--data-on-device", "--output",
                                 str(tmp_path / "run")])
    assert summary["steps"] == 2 and 0 <= summary["val_acc1"] <= 100
    train = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in train if r["kind"] == "train")


def test_the_crop_colour_flags_reach_the_multicrop_plan():
    from vitfast.training.config import resolve
    from vitfast.training.methods.dino import DINO
    from vitfast.training.methods.swav import SwAV

    norm = {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    plan = DINO(resolve(TINY + ["--crop-grayscale", "1", "--crop-color-jitter", "0.8,0.8,0.8,0.2"])) \
        .train_transform(32, norm)
    assert plan.grayscale == 1.0 and plan.colour == (0.8, 0.8, 0.8, 0.2)
    assert DINO(resolve(TINY)).train_transform(32, norm).colour == (0.4, 0.4, 0.2, 0.1)
    swav = resolve([a if a != "dino" else "swav" for a in TINY if a != "--head-out-dim" and a != "256"])
    assert SwAV(swav).train_transform(32, norm).colour == (0.8, 0.8, 0.8, 0.2)


def test_the_knn_bank_is_transformed_once_when_small(small_builtin, monkeypatch):
    from vitfast.training import run_data
    from vitfast.training.config import resolve
    from vitfast.training.distributed import Dist

    cfg = resolve(TINY + ["--data", small_builtin, "--output", "unused"])
    data = run_data.build_data(cfg, Dist("cpu"), lambda key: "--" + key)
    first = list(data.bank_loader())
    again = data.bank_loader()
    assert isinstance(again, list) and len(again) == len(first) == 5
    assert all(a[0] is b[0] and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    exact = 160 * 3 * 32 * 32 * 4  # the 160 images as the evaluation transform leaves them: float32, RGB, 32 px
    for limit, kept in ((exact, True), (exact - 1, False), (0, False)):
        monkeypatch.setattr(run_data, "BANK_CACHE_BYTES", limit)
        data = run_data.build_data(cfg, Dist("cpu"), lambda key: "--" + key)
        list(data.bank_loader())
        assert isinstance(data.bank_loader(), list) == kept, limit
