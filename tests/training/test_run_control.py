"""What timm and Lightning users expect of a run (issue 62, item 6), through the real command lines:
validation every N steps, the best N checkpoints kept, a schedule lengthened on purpose and recorded,
and `python -m vitfast.list`."""
import json
import os

import pytest
import yaml

from vitfast.cli import UsageError
from vitfast.list import main as list_main
from vitfast.train import main as train_main
from vitfast.training.state import load_state
from tests.values import run_module as cli

TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2",
        "--batch-size", "32", "--ptq-report", "", "--lr", "3e-3"]


def records(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_validation_every_n_steps_and_the_best_n_checkpoints_kept(tmp_path):
    proc = cli("vitfast.train", TINY + ["--steps", "12", "--eval-every-steps", "3", "--keep-checkpoints", "2",
                                        "--output", "run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    val = records(tmp_path / "run", "val")
    assert [r["step"] for r in val] == [3, 6, 9, 12]  # the last step once, not twice
    best_two = sorted(val, key=lambda r: (-r["acc1"], r["step"]))[:2]
    kept = sorted(f for f in os.listdir(tmp_path / "run") if f.startswith("checkpoint-step"))
    assert kept == sorted(f"checkpoint-step{r['step']}.pt" for r in best_two)
    for r in best_two:
        assert load_state(tmp_path / "run" / f"checkpoint-step{r['step']}.pt")["step"] == r["step"]
    # --overwrite deletes them with the rest of the run
    train_main(TINY + ["--steps", "1", "--output", str(tmp_path / "run"), "--overwrite"])
    assert not [f for f in os.listdir(tmp_path / "run") if f.startswith("checkpoint-step")]


def test_a_schedule_is_lengthened_on_purpose_into_a_new_folder_and_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_main(TINY + ["--steps", "4", "--output", "run"])
    with pytest.raises(UsageError, match="run is a finished run, and a finished run is never overwritten: continue it "
                                         "into a new folder with --resume"):
        train_main(["--output", "run", "--resume", "auto", "--extend-steps", "2"])
    with pytest.raises(UsageError, match="the run's length is in steps \\(--steps\\); lengthen it with --extend-steps"):
        train_main(["--output", "run", "--resume", "auto", "--extend-epochs", "2"])
    with pytest.raises(UsageError, match="--extend-steps has no effect without --resume"):
        train_main(TINY + ["--steps", "2", "--extend-steps", "2", "--output", "new"])
    proc = cli("vitfast.train", ["--resume", "run/checkpoint-last.pt", "--output", "longer", "--extend-steps", "2"],
               tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "schedule lengthened (--extend-steps 2): 4 -> 6 steps at step 4" in proc.stdout
    assert yaml.safe_load((tmp_path / "longer" / "config.yaml").read_text())["steps"] == 6
    assert json.loads((tmp_path / "longer" / "summary.json").read_text())["steps"] == 6
    assert [{k: v for k, v in r.items() if k != "time"} for r in records(tmp_path / "longer", "schedule")] == [
        {"kind": "schedule", "step": 4, "flag": "--extend-steps", "by": 2, "from_steps": 4, "to_steps": 6}]
    assert load_state(tmp_path / "longer" / "checkpoint-last.pt")["schedule_changes"][0]["to_steps"] == 6
    assert train_main(["--output", "longer", "--resume", "auto"])["steps"] == 6  # finished: not lengthened twice


def test_list_shows_models_and_recipes(tmp_path, capsys):
    proc = cli("vitfast.list", [], tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("vit_pico_patch4_32 "))
    assert line.split()[1:3] == ["32", "0.56M"]  # with timm's default 1,000 classes
    assert any(line.startswith("vit_base_patch16_224 ") and " 86.57M " in line for line in proc.stdout.splitlines())
    assert any(line.startswith("cifar10_vit ") for line in proc.stdout.splitlines())
    capsys.readouterr()
    list_main(["deit_*"])
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert names and all(n.startswith("deit_") for n in names) and "cifar10_vit" not in out
    with pytest.raises(UsageError, match="no model matches nothing_"):
        list_main(["nothing_*"])
