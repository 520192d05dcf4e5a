"""python -m vitfast.eval: full precision and PTQ formats side by side, JSON, per-class report,
DVT's budget curve, attention maps, and foreign weights via --model/--checkpoint-path."""
import json

import pytest
import timm
import torch

from vitfast.eval import main as eval_main
from vitfast.train import main as train_main
from vitfast.training.config import ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_builtin):
    """A small ViT trained on 160 built-in images: its evaluations read the 40 held out (each format of the
    table costs its pass over them)."""
    out = tmp_path_factory.mktemp("run")
    train_main(["--model", "vit_tiny_patch16_224", "--data", small_builtin, "--steps", "30", "--batch-size", "64",
                "--model-kwargs", "img_size=32,patch_size=8,embed_dim=48,depth=2,num_heads=2", "--lr", "3e-3",
                "--output", str(out), "--ptq-report", ""])
    return out


def test_formats_side_by_side_with_json(trained, tmp_path, capsys):
    path = tmp_path / "r.json"
    res = eval_main(["--checkpoint", str(trained / "checkpoint-best.pt"), "--quant",
                     "fp32,fp16_32,fp16_16,bf16,fp8_e4m3,float(e=3,m=1)", "--json", str(path), "--per-class"])
    data = json.loads(path.read_text())
    assert list(data) == ["fp32", "fp16_32", "fp16_16", "bf16", "fp8_e4m3", "float(e=3,m=1)"]
    assert data["fp32"]["agreement_with_fp32"] == 100.0
    assert data["fp16_32"]["agreement_with_fp32"] > 99.0  # fp16 barely moves a trained model
    assert data["float(e=3,m=1)"]["agreement_with_fp32"] < data["fp16_16"]["agreement_with_fp32"]
    assert data["fp16_16"]["model_bytes"] < data["fp32"]["model_bytes"]
    assert len(data["fp32"]["per_class"]) == 10
    out = capsys.readouterr().out
    assert "fp16_16" in out and "top-1 %" in out
    assert res["fp32"]["acc1"] == data["fp32"]["acc1"]


def test_scaled_formats_calibrate_on_the_training_split(trained, tmp_path, capsys):
    path = tmp_path / "r.json"
    eval_main(["--checkpoint", str(trained / "checkpoint-best.pt"), "--quant", "fp32,int8,fp8_e4m3_scaled",
               "--calib-steps", "2", "--json", str(path)])
    data = json.loads(path.read_text())
    assert data["int8"]["calibration"] == "static, 2 batches of train"
    assert data["int8"]["agreement_with_fp32"] > 90.0
    assert data["int8"]["model_bytes"] < data["fp32"]["model_bytes"] / 3
    out = capsys.readouterr().out
    assert "activation scales: static" in out
    assert data["int8"]["linear_layers"] == {"int8 torch._int_mm": 9}  # 2 blocks x 4 + the head, all real
    # FP8_E4M3_SCALED with static scales: the FP8 chain (here its composites), its head in bf16
    assert data["fp8_e4m3_scaled"]["fp8_chain"] == {"blocks": 2, "path": "ATen composites (emulation)"}
    assert data["fp8_e4m3_scaled"]["agreement_with_fp32"] > 90.0
    assert "FP8 chain: 2 blocks on ATen composites (emulation) (the rest bf16)" in out
    dynamic = eval_main(["--checkpoint", str(trained / "checkpoint-best.pt"), "--quant", "int8", "--calib-steps", "0"])
    assert dynamic["int8"]["calibration"] == "dynamic"
    with pytest.raises(ConfigError, match="--calib-steps"):
        eval_main(["--checkpoint", str(trained / "checkpoint-best.pt"), "--quant", "int8", "--calib-steps", "-1"])


def test_attention_maps(trained, tmp_path):
    eval_main(["--checkpoint", str(trained / "checkpoint-last.pt"), "--attention-maps", "2",
               "--maps-dir", str(tmp_path / "maps")])
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["rollout_0000.png", "rollout_0001.png"]


def test_foreign_weights_by_model_name(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=10)
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    res = eval_main(["--model", "vit_tiny_patch16_224", "--model-kwargs",
                     "img_size=32,patch_size=8,depth=1,num_classes=10", "--checkpoint-path", str(tmp_path / "timm.pth"),
                     "--data", "builtin"])
    assert 0 <= res["fp32"]["acc1"] <= 100


def test_dvt_budget_curve(tmp_path, capsys):
    from tests.training.test_train import write_folder

    write_folder(tmp_path / "data", per_class=6, size=64)
    train_main(["--model", "dvt_t2t_vit_12", "--data", f"folder:{tmp_path / 'data'}", "--img-size", "64", "--steps",
                "1", "--batch-size", "4", "--output", str(tmp_path / "dvt"), "--ptq-report", ""])
    res = eval_main(["--checkpoint", str(tmp_path / "dvt" / "checkpoint-last.pt"), "--dvt-plot",
                     str(tmp_path / "curve.png"), "--json", str(tmp_path / "dvt.json")])
    assert len(res["fp32"]["exit_acc1"]) == 3
    curve = res["dvt_budget_curve"]
    assert curve[0]["gmacs"] <= curve[-1]["gmacs"]
    assert all(c["fit_gmacs"] <= c["budget_gmacs"] * (1 + 1e-9) for c in curve)  # on the split it was fit to
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert f"DVT budget curve (top-1 against GMACs per image, 12 budgets): {tmp_path / 'curve.png'}" in \
        capsys.readouterr().out


def test_errors():
    with pytest.raises(ConfigError, match="give --checkpoint FILE, or --model NAME"):
        eval_main([])
    with pytest.raises(ValueError, match="recipe"):
        eval_main(["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,depth=1",
                   "--data", "builtin", "--quant", "fp12"])


def test_a_run_with_holdout_is_evaluated_on_the_images_it_held_out(tmp_path, capsys):
    """--holdout: the run validated on the last images of its training split (a dataset without a val
    split, such as the CIFAR-10 JPEG folder); eval of its checkpoint takes the same images, by default."""
    out = tmp_path / "run"
    summary = train_main(["--model", "vit_tiny_patch16_224", "--data", "builtin", "--holdout", "100", "--steps", "2",
                          "--batch-size", "32", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,"
                          "num_heads=2", "--output", str(out), "--ptq-report", ""])
    capsys.readouterr()
    res = eval_main(["--checkpoint", str(out / "model.safetensors"), "--quant", "fp32,int8", "--calib-steps", "2"])
    assert res["fp32"]["count"] == 100
    assert res["fp32"]["acc1"] == pytest.approx(summary["val_acc1"], abs=1e-4)
    assert "(val: held out of train by the run, 100 images)" in capsys.readouterr().out


def test_a_training_checkpoint_serves_as_weights(trained, small_builtin, tmp_path, capsys):
    """A run's checkpoint-*.pt given where weights go (eval's --checkpoint-path, train's --init-checkpoint):
    the safe loader reads it (its numpy random state included) and takes its model's tensors."""
    kwargs = "img_size=32,patch_size=8,embed_dim=48,depth=2,num_heads=2,num_classes=10"
    by_path = eval_main(["--model", "vit_tiny_patch16_224", "--model-kwargs", kwargs, "--checkpoint-path",
                         str(trained / "checkpoint-best.pt"), "--data", small_builtin])
    by_checkpoint = eval_main(["--checkpoint", str(trained / "checkpoint-best.pt")])
    assert by_path["fp32"]["acc1"] == by_checkpoint["fp32"]["acc1"]
    summary = train_main(["--model", "vit_tiny_patch16_224", "--data", small_builtin, "--steps", "1", "--batch-size",
                          "64", "--model-kwargs", kwargs.rsplit(",", 1)[0], "--init-checkpoint",
                          str(trained / "checkpoint-last.pt"), "--output", str(tmp_path / "tuned"), "--ptq-report", ""])
    assert summary["steps"] == 1
    assert f"initialised from {trained / 'checkpoint-last.pt'}" in capsys.readouterr().out
