"""Which weights of a run a reader takes (issue 62, item 1), through the real command lines: eval,
--init-checkpoint and --teacher take by default the weights training validated and reported (the EMA's
where the run kept one), say which, and --ema / --raw / --init-weights / --teacher-weights choose."""
import json

import pytest
import torch

import vitfast
from vitfast.models import load_for_finetune
from vitfast.cli import UsageError
from vitfast.eval import main as eval_main
from vitfast.train import main as train_main
from vitfast.training.state import load_state, model_from_file
from tests.values import run_module as cli

KWARGS = "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2"
TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", KWARGS, "--batch-size", "32", "--ptq-report", "",
        "--lr", "3e-3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    # a fast EMA (decay 0.5) over a few steps: its weights differ from the trained ones everywhere
    train_main(TINY + ["--steps", "4", "--ema", "0.5", "--output", str(root / "ema")])
    train_main(TINY + ["--steps", "2", "--output", str(root / "plain")])
    return root


def test_eval_scores_what_training_reported_and_says_so(runs, capsys, monkeypatch):
    summary = json.loads((runs / "ema" / "summary.json").read_text())
    proc = cli("vitfast.eval", ["--checkpoint", "ema/checkpoint-last.pt", "--json", "r.json"], runs)  # the CLI
    assert proc.returncode == 0, proc.stderr
    assert "weights: EMA weights (the ones the run validated and reported); --raw: the trained ones" in proc.stdout
    assert json.loads((runs / "r.json").read_text())["fp32"]["acc1"] == pytest.approx(summary["val_acc1"], abs=1e-6)
    monkeypatch.chdir(runs)
    capsys.readouterr()
    result = eval_main(["--checkpoint", "ema/model.safetensors"])
    assert "weights: EMA weights (the ones the run validated and reported); --raw" in capsys.readouterr().out
    assert result["fp32"]["acc1"] == pytest.approx(summary["val_acc1"], abs=1e-6)
    eval_main(["--checkpoint", "ema/checkpoint-last.pt", "--raw"])
    assert "weights: raw trained weights (as asked; the run reported its EMA's)" in capsys.readouterr().out
    eval_main(["--checkpoint", "plain/checkpoint-last.pt"])
    assert "weights: trained weights (the ones the run validated and reported; it kept no EMA)" in \
        capsys.readouterr().out
    # what each choice loads
    state = load_state(runs / "ema" / "checkpoint-last.pt")
    for weights, key in (("reported", "ema"), ("ema", "ema"), ("raw", "model")):
        model, info = model_from_file(str(runs / "ema" / "checkpoint-last.pt"), "test", weights)
        assert all(torch.equal(v, state[key][k]) for k, v in model.state_dict().items()), weights
    assert not torch.equal(state["ema"]["head.weight"], state["model"]["head.weight"])


@pytest.mark.parametrize("args,message", [
    (["--checkpoint", "ema/checkpoint-last.pt", "--ema", "--raw"], "--raw: not allowed with argument --ema"),
    (["--checkpoint", "plain/checkpoint-last.pt", "--ema"], "--checkpoint: 'plain/checkpoint-last.pt' holds no EMA "
                                                            "weights (its run had --ema 0)"),
    (["--checkpoint", "ema/model.safetensors", "--raw"], "--checkpoint: 'ema/model.safetensors' holds only the run's "
                                                         "EMA weights: the run's checkpoint-*.pt holds both"),
    (["--model", "vit_tiny_patch16_224", "--data", "builtin", "--raw"], "--raw has no effect without --checkpoint"),
])
def test_eval_weight_choices_that_cannot_be_met(runs, monkeypatch, args, message):
    monkeypatch.chdir(runs)
    with pytest.raises(UsageError) as e:
        eval_main(args)
    assert message in str(e.value)


def test_init_checkpoint_and_teacher_take_the_reported_weights(runs, capsys, monkeypatch):
    proc = cli("vitfast.train", TINY + ["--steps", "1", "--init-checkpoint", "ema/checkpoint-best.pt",
                                        "--output", "init"], runs)
    assert proc.returncode == 0, proc.stderr
    assert "initialised from ema/checkpoint-best.pt: EMA weights (the ones the run validated and reported)" \
        in proc.stdout
    monkeypatch.chdir(runs)
    capsys.readouterr()
    train_main(TINY + ["--steps", "1", "--init-checkpoint", "ema/checkpoint-best.pt", "--init-weights", "raw",
                       "--output", "init_raw"])
    assert "raw trained weights (as asked; the run reported its EMA's)" in capsys.readouterr().out
    train_main(TINY + ["--steps", "1", "--teacher", "ema/checkpoint-last.pt", "--output", "student"])
    assert "teacher ema/checkpoint-last.pt: EMA weights (the ones the run validated and reported)" in \
        capsys.readouterr().out
    # what --init-checkpoint loads
    state = load_state(runs / "ema" / "checkpoint-best.pt")
    for weights, key in (("reported", "ema"), ("raw", "model")):
        model = vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1,
                                     num_heads=2, num_classes=10)
        load_for_finetune(model, runs / "ema" / "checkpoint-best.pt", weights)
        assert all(torch.equal(v, state[key][k]) for k, v in model.state_dict().items()), weights


@pytest.mark.parametrize("extra,message", [
    (["--init-checkpoint", "plain/checkpoint-last.pt", "--init-weights", "ema"],
     "--init-checkpoint plain/checkpoint-last.pt: cannot read it as weights ('plain/checkpoint-last.pt' holds no EMA "
     "weights (its run had --ema 0))"),
    (["--init-checkpoint", "weights.pth", "--init-weights", "raw"],
     "'weights.pth' is not a vitfast run's file: it holds one set of weights, not 'raw'"),
    (["--teacher", "plain/model.safetensors", "--teacher-weights", "ema"],
     "--teacher: 'plain/model.safetensors' holds only the run's trained weights (it kept no EMA)"),
    (["--init-weights", "raw"], "--init-weights has no effect without --init-checkpoint"),
    (["--teacher-weights", "emaa"], "--teacher-weights must be one of reported, ema, raw, got 'emaa'"),
])
def test_train_weight_choices_that_cannot_be_met(runs, monkeypatch, extra, message):
    monkeypatch.chdir(runs)
    model = vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1,
                                 num_heads=2, num_classes=10)
    torch.save(model.state_dict(), runs / "weights.pth")
    with pytest.raises(UsageError) as e:
        train_main(TINY + ["--steps", "1", "--output", "refused"] + extra)
    assert message in str(e.value)
    assert not (runs / "refused").exists()
