"""From a self-supervised run onwards (issue 63, item 5): vitfast.eval scores its backbone by k-NN and by
a linear probe (its classifier-less backbone refused otherwise, in one line; DVT's cascade too), and vitfast.train
fine-tunes from it (the teacher backbone, a fresh classifier, said in one line; another architecture
refused), the fine-tuned model then quantized like any other."""
import json

import pytest
import torch

from vitfast.cli import UsageError
from vitfast.eval import main as eval_main
from vitfast.train import main as train_main
from vitfast.training.linear_probe import SWEEP_LRS, linear_probe

MODEL = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_builtin):
    out = tmp_path_factory.mktemp("ssl") / "run"
    summary = train_main(MODEL + ["--data", small_builtin, "--batch-size", "32", "--ptq-report", "", "--ssl",
                                  "dino", "--num-crops", "2,2", "--head-out-dim", "256", "--steps", "2",
                                  "--data-on-device", "--quiet", "--output", str(out)])
    return out, summary


def test_knn_in_eval_repeats_the_runs_validation(run, capsys):
    out, summary = run
    for name in ("model.safetensors", "checkpoint-last.pt"):
        results = eval_main(["--checkpoint", str(out / name), "--knn", "--quiet"])
        assert results["fp32"]["acc1"] == pytest.approx(summary["val_acc1"])
    printed = capsys.readouterr().out
    assert "k-NN (k 20, T 0.07) on the features, memory bank: the 160 training images" in printed
    assert "weights: the teacher backbone of a --ssl dino run" in printed


def test_a_backbone_without_a_classifier_is_refused_without_knn_or_probe(run):
    with pytest.raises(UsageError, match="has no classifier .* --knn or --linear-probe"):
        eval_main(["--checkpoint", str(run[0] / "model.safetensors")])
    with pytest.raises(UsageError, match="give one per evaluation"):
        eval_main(["--checkpoint", str(run[0] / "model.safetensors"), "--knn", "--linear-probe"])


def test_the_linear_probe_in_eval_and_on_separable_features(run):
    results = eval_main(["--checkpoint", str(run[0] / "model.safetensors"), "--linear-probe", "--probe-epochs", "2",
                         "--quant", "fp32,bf16", "--quiet"])
    assert set(results) == {"fp32", "bf16"} and all(0 <= r["acc1"] <= 100 for r in results.values())
    g = torch.Generator().manual_seed(0)  # the probe itself learns what a linear layer can
    centres = torch.randn(4, 16, generator=g) * 3
    labels = torch.randint(0, 4, (400,), generator=g)
    feats = centres[labels] + torch.randn(400, 16, generator=g) * 0.5
    logits, _, lr = linear_probe(feats[:300], labels[:300], feats[300:], 4, epochs=20, lr=0.05)
    assert (logits.argmax(1) == labels[300:]).float().mean() > 0.95 and lr == 0.05


def test_the_probes_sweep_picks_the_rate_on_held_out_training_features():
    """Features whose classes differ in small directions beside a large shared one, and few steps (as on a
    small split): DINO's fixed 0.001 leaves the classifier near its initialisation (chance); the sweep
    keeps a rate that separates them, picked without the evaluated features (reordered: same pick)."""
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (600,), generator=g)
    feats = torch.randn(600, 16, generator=g) * 0.1
    feats[:, 0] += 20.0
    feats[torch.arange(600), 1 + labels] += 1.0
    test, test_labels = feats[500:], labels[500:]

    def top1(probe, y=test_labels):
        return 100.0 * (probe.logits.argmax(1) == y).float().mean().item()

    fixed = linear_probe(feats[:500], labels[:500], test, 4, epochs=30, lr=1e-3)
    swept = linear_probe(feats[:500], labels[:500], test, 4, epochs=30, lr=SWEEP_LRS)
    assert top1(fixed) < 50 and fixed.lr == 1e-3
    assert top1(swept) > 90 and swept.lr in SWEEP_LRS and swept.lr > 1e-3, (top1(swept), swept.lr)
    order = torch.randperm(100, generator=g)
    again = linear_probe(feats[:500], labels[:500], test[order], 4, epochs=30, lr=SWEEP_LRS)
    assert again.lr == swept.lr and torch.equal(again.logits, swept.logits[order])


def test_eval_sweeps_the_probes_rate_and_reports_it(run, capsys):
    path = str(run[0] / "model.safetensors")
    results = eval_main(["--checkpoint", path, "--linear-probe", "--probe-epochs", "2", "--probe-lr", "0.01,0.1",
                         "--quiet"])
    assert results["fp32"]["probe_lr"] in (0.01, 0.1)
    out = capsys.readouterr().out
    assert "the lr of 2 (0.01..0.1) most accurate on a tenth of them held out" in out
    assert f"linear probe lr: {results['fp32']['probe_lr']:g}" in out
    for bad in ("0", "fast", "0.1,-1", ""):
        with pytest.raises(UsageError, match="--probe-lr: expected a rate > 0, several separated by commas, or "
                                             "'sweep'"):
            eval_main(["--checkpoint", path, "--linear-probe", "--probe-lr", bad])


def test_fine_tuning_takes_the_teacher_backbone_with_a_fresh_head(run, tmp_path, capsys):
    summary = train_main(MODEL + ["--batch-size", "32", "--steps", "2", "--quiet", "--ptq-report", "fp16_16",
                                  "--init-checkpoint", str(run[0] / "checkpoint-last.pt"),
                                  "--output", str(tmp_path / "tuned")])
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("initialised from"))
    assert "the teacher backbone of a --ssl dino run" in line and "freshly initialised for 10 classes: head.bias, " \
        "head.weight" in line
    assert set(summary["ptq"]) == {"fp32", "fp16_16"}
    assert json.loads((tmp_path / "tuned" / "summary.json").read_text())["steps"] == 2
    # deployed as any classifier is: convert_fp8's chain (its CPU emulation here) and INT8
    results = eval_main(["--checkpoint", str(tmp_path / "tuned" / "model.safetensors"), "--quant",
                         "fp32,fp8_e4m3_scaled,int8", "--quiet"])
    assert set(results) == {"fp32", "fp8_e4m3_scaled", "int8"}
    assert "FP8 chain: 1 block" in capsys.readouterr().out


def test_fine_tuning_another_architecture_is_refused(run, tmp_path):
    with pytest.raises(UsageError, match="does not fit vit_tiny_patch16_224"):
        train_main(["--model", "vit_tiny_patch16_224", "--model-kwargs",
                    "img_size=32,patch_size=8,embed_dim=48,depth=1,num_heads=2", "--steps", "1",
                    "--init-checkpoint", str(run[0] / "checkpoint-last.pt"), "--output", str(tmp_path / "x")])


def test_dvt_pretrains_scores_by_knn_and_fine_tunes_every_exit(tmp_path, small_builtin, capsys):
    """DVT's backbone through the whole hand-off: DINO on its last exit's features (the cascade with its
    feature and relation reuse at both crop sizes), k-NN in eval, then supervised fine-tuning of its
    three exits from the teacher."""
    dvt = ["--model", "dvt_t2t_vit_12", "--model-kwargs", "img_size=32,embed_dim=32,depth=1,num_heads=2,token_dim=16"]
    pretrained = train_main(dvt + ["--data", small_builtin, "--batch-size", "16", "--ptq-report", "", "--ssl", "dino",
                                   "--num-crops", "2,2", "--size-crops", "32,16", "--head-out-dim", "256", "--steps",
                                   "2", "--quiet", "--output", str(tmp_path / "ssl")])
    printed = capsys.readouterr().out
    assert "crops 2 x 32 px 0.4-1 + 2 x 16 px" in printed and "features are its last exit's class token" in printed
    results = eval_main(["--checkpoint", str(tmp_path / "ssl" / "checkpoint-last.pt"), "--knn", "--quiet"])
    assert results["fp32"]["acc1"] == pytest.approx(pretrained["val_acc1"])
    summary = train_main(dvt + ["--data", small_builtin, "--batch-size", "16", "--steps", "1", "--quiet",
                                "--ptq-report", "", "--init-checkpoint", str(tmp_path / "ssl" / "checkpoint-last.pt"),
                                "--output", str(tmp_path / "tuned")])
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("initialised from"))
    assert "the teacher backbone of a --ssl dino run" in line and "normal_token.head.weight" in line
    assert summary["steps"] == 1
