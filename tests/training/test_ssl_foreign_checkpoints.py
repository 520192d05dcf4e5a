"""Moving from DINO or VISSL (issue 63): their training checkpoints and DINO's released backbones read as
they are, by vitfast.eval (--knn / --linear-probe) and vitfast.train --init-checkpoint. The files here are
written in each library's layout (facebookresearch/dino main_dino.py's save_dict; VISSL's
classy_state_dict, its 2021 trunk's class_token / pos_embedding names and its later timm names) around
our own model's tensors; benchmarks/results/ssl_checkpoints.md has the same files made by the libraries'
own model code, whose features vitfast reproduces."""
import argparse

import pytest
import torch

import vitfast
from vitfast.cli import UsageError
from vitfast.eval import main as eval_main
from vitfast.models.checkpoint import load_for_finetune
from vitfast.train import main as train_main
from vitfast.training.config import parse_kv

NAME, KWARGS = "vit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
MODEL = ["--model", NAME, "--model-kwargs", ",".join(f"{k}={v}" for k, v in KWARGS.items())]


def backbone(seed):
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in vitfast.create_model(NAME, num_classes=0, **KWARGS).state_dict().items()}


def dino_checkpoint(teacher, student):
    """main_dino.py's save_dict: the student under DDP ("module."), the teacher bare, both MultiCropWrapper's
    "backbone." and "head." (DINOHead) entries; optimizer, epoch, args, the loss's centre."""
    head = {"mlp.0.weight": torch.randn(64, 32), "last_layer.weight_g": torch.ones(256, 1),
            "last_layer.weight_v": torch.randn(256, 16)}
    return {"student": {**{f"module.backbone.{k}": v for k, v in student.items()},
                        **{f"module.head.{k}": v for k, v in head.items()}},
            "teacher": {**{f"backbone.{k}": v for k, v in teacher.items()},
                        **{f"head.{k}": v for k, v in head.items()}},
            "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": [0, 1]}]}, "epoch": 100,
            "args": argparse.Namespace(arch="vit_small", out_dim=65536), "dino_loss": {"center": torch.zeros(1, 256)}}


def vissl_checkpoint(trunk, names_of_2021):
    if names_of_2021:  # vissl/models/trunks/vision_transformer.py before 2022
        trunk = {{"cls_token": "class_token", "pos_embed": "pos_embedding"}.get(k, k): v for k, v in trunk.items()}
    return {"phase_idx": 3, "iteration": 1000, "type": "checkpoint", "classy_state_dict": {
        "train_phase_idx": 3, "base_model": {"model": {"trunk": trunk, "heads": {"0.prototypes0.weight":
                                                                                  torch.randn(30, 16)}},
                                              "meta": {"trunk": {}, "heads": []}}}}


def loaded(path):
    model = vitfast.create_model(NAME, num_classes=0, **KWARGS)
    return model.state_dict(), load_for_finetune(model, path).weights


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_dino_checkpoint_gives_its_teacher_backbone(tmp_path):
    teacher, student = backbone(1), backbone(2)
    torch.save(dino_checkpoint(teacher, student), tmp_path / "checkpoint.pth")
    state, weights = loaded(tmp_path / "checkpoint.pth")
    assert same(state, teacher) and not same(state, student)
    assert weights == "the teacher backbone of a DINO training checkpoint (its heads dropped)"


@pytest.mark.parametrize("names_of_2021", [True, False])
def test_a_vissl_checkpoint_gives_its_trunk(tmp_path, names_of_2021):
    trunk = backbone(3)
    torch.save(vissl_checkpoint(trunk, names_of_2021), tmp_path / "model_final_checkpoint_phase99.torch")
    state, weights = loaded(tmp_path / "model_final_checkpoint_phase99.torch")
    assert same(state, trunk) and weights == "the trunk of a VISSL checkpoint (its heads dropped)"


def test_released_backbones_score_by_knn_and_fine_tune_but_have_no_classifier(tmp_path, small_builtin, capsys):
    """DINO's released files (dino_deitsmall16_pretrain.pth): the backbone alone, no head."""
    torch.save(backbone(4), tmp_path / "dino_pretrain.pth")
    torch.save(dino_checkpoint(backbone(5), backbone(6)), tmp_path / "checkpoint.pth")
    source = MODEL + ["--data", small_builtin, "--quiet"]
    with pytest.raises(UsageError, match="dino_pretrain.pth holds no classifier \\(head.bias, head.weight missing; a "
                                         "self-supervised backbone\\?\\): score its features with --knn"):
        eval_main(source + ["--checkpoint-path", str(tmp_path / "dino_pretrain.pth")])
    for name in ("dino_pretrain.pth", "checkpoint.pth"):
        results = eval_main(source + ["--checkpoint-path", str(tmp_path / name), "--knn"])
        assert 0 <= results["fp32"]["acc1"] <= 100
    assert "weights: the teacher backbone of a DINO training checkpoint" in capsys.readouterr().out
    train_main(MODEL + ["--data", small_builtin, "--init-checkpoint", str(tmp_path / "checkpoint.pth"), "--steps", "1",
                        "--batch-size", "16", "--ptq-report", "", "--quiet", "--output", str(tmp_path / "tuned")])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("initialised from"))
    assert ": the teacher backbone of a DINO training checkpoint (its heads dropped); freshly initialised for 10 " \
           "classes: head.bias, head.weight" in line


def test_another_layer_norm_epsilon_is_a_model_kwarg():
    """VISSL's 2021 trunk normalises with torch's default epsilon 1e-5 (timm's and ours: 1e-6): its
    features are reproduced with --model-kwargs norm_eps=1e-5, read as a number (YAML 1.1 reads it as text)."""
    kwargs = dict(parse_kv("norm_eps=1e-5,depth=1"))
    assert kwargs == {"norm_eps": 1e-5, "depth": 1} and dict(parse_kv("name=1e5x")) == {"name": "1e5x"}
    model = vitfast.create_model(NAME, num_classes=0, **dict(KWARGS, norm_eps=1e-5))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)


def test_knn_takes_a_given_class_count_too(tmp_path, small_builtin):
    """--knn scores the features, so the model is built without a classifier unless --model-kwargs gives
    num_classes: then that one (it was 'dict() got multiple values for keyword argument')."""
    torch.save(backbone(7), tmp_path / "dino_pretrain.pth")
    results = eval_main(["--model", NAME, "--model-kwargs", MODEL[3] + ",num_classes=10", "--data", small_builtin,
                         "--quiet", "--checkpoint-path", str(tmp_path / "dino_pretrain.pth"), "--knn"])
    assert 0 <= results["fp32"]["acc1"] <= 100
