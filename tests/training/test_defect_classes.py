"""The classes of smaller defects of issue 62 (item 5), each through the real command lines: a run's
recorded paths work from any working directory; every file of a run has one mode; a warning is one line
in our words; an unreadable image is not scored twice and --strict-data finds it at once; hints name the
fix, timm's and Lightning's names included; labels say what was measured."""
import json
import os
import shutil
import stat

import pytest
import yaml

from tests.training.test_train import write_folder
from vitfast.cli import UsageError
from vitfast.training.header import cpu_has_bf16
from vitfast.train import main as train_main
from tests.values import run_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--model", "vit_tiny_patch16_224", "--img-size", "32",
        "--model-kwargs", "patch_size=8,embed_dim=32,depth=1,num_heads=2", "--batch-size", "8", "--ptq-report", ""]


def cli(module, args, cwd, umask=None):
    return run_module(module, args, cwd, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run on a relative folder dataset with one unreadable image in train and one in val."""
    root = tmp_path_factory.mktemp("defects")
    write_folder(root / "data", classes=("cat", "dog"), per_class=5, size=32, corrupt=True)
    (root / "data" / "val" / "dog" / "broken.png").write_bytes(b"not a png")
    proc = cli("vitfast.train", TINY + ["--data", "folder:data", "--steps", "2", "--output", "run"], root, umask=0o022)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def test_recorded_paths_work_from_any_directory(folder_run, tmp_path):
    root, _ = folder_run
    cfg = yaml.safe_load((root / "run" / "config.yaml").read_text())
    assert cfg["data"] == f"folder:{root / 'data'}"
    proc = cli("vitfast.eval", ["--checkpoint", str(root / "run" / "model.safetensors")], tmp_path)  # elsewhere
    assert proc.returncode == 0, proc.stderr


def test_every_file_of_a_run_has_the_runs_mode(folder_run):
    root, _ = folder_run
    modes = {name: stat.S_IMODE(os.stat(root / "run" / name).st_mode) for name in os.listdir(root / "run")}
    assert set(modes.values()) == {0o644}, modes


def test_an_unreadable_image_is_one_line_in_our_words_and_not_scored_twice(folder_run):
    root, proc = folder_run
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 2, proc.stderr  # one per unreadable file
    for line in warnings:
        assert line.startswith("vitfast.train: warning: skipped unreadable image ") and "broken." in line, line
    assert "fetch.py" not in proc.stderr and "UserWarning" not in proc.stderr and "skipped_paths" not in proc.stderr
    val = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    counts = [r["count"] for r in val if r["kind"] == "val"]
    assert counts and set(counts) == {10}  # 11 files in val/, one unreadable


def test_strict_data_finds_the_bad_file_before_training(folder_run):
    root, _ = folder_run
    proc = cli("vitfast.train", TINY + ["--data", "folder:data", "--steps", "2", "--strict-data", "--output", "strict"],
               root)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "broken.jpg" in proc.stderr and "strict mode stops at the first" in proc.stderr
    assert "--strict-data: reading every image" in proc.stdout and "loss" not in proc.stdout
    assert not (root / "strict").exists()


@pytest.mark.parametrize("args,message", [
    (["--model-ema", "0.99"], "unknown argument '--model-ema' (vitfast's: --ema DECAY)"),
    (["--max_epochs", "3"], "unknown argument '--max_epochs' (vitfast's: --epochs)"),
    (["--checkpoint-hist", "3"], "unknown argument '--checkpoint-hist' (vitfast's: --keep-checkpoints)"),
    (["--accumulate_grad_batches", "2"], "(vitfast's: --grad-accum-steps)"),
    (["--set", "initial_checkpoint=x.pth"], "--set: unknown key 'initial_checkpoint' (vitfast's: --init-checkpoint)"),
    (["--data", "folder:trainonly"], "--data folder:trainonly has training images but no val/ folder: validate on "
                                     "the last N of them with --holdout N"),
])
def test_hints_name_the_fix(tmp_path, monkeypatch, args, message):
    write_folder(tmp_path / "trainonly", classes=("a", "b"), per_class=3, size=16)
    shutil.rmtree(tmp_path / "trainonly" / "val")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as e:
        train_main(TINY + ["--steps", "1", "--output", "run"] + args)
    assert message in str(e.value)


def test_a_hint_through_the_command_line(tmp_path):
    proc = cli("vitfast.train", ["--model-ema", "0.99"], tmp_path)
    assert proc.returncode == 2 and proc.stderr == "vitfast.train: unknown argument '--model-ema' (vitfast's: --ema " \
                                                  "DECAY)\n", proc.stderr


def test_weights_without_a_run_record_point_to_loading_by_name(tmp_path):
    import torch

    torch.save({"head.weight": torch.zeros(2, 2)}, tmp_path / "timm_model.pth")
    proc = cli("vitfast.eval", ["--checkpoint", "timm_model.pth"], tmp_path)
    assert proc.returncode == 2 and "weights of a model by name load with --model NAME --checkpoint-path FILE" in \
        proc.stderr, proc.stderr


def test_a_qat_runs_table_labels_its_rows_by_what_they_measured(tmp_path):
    proc = cli("vitfast.train", TINY + ["--data", "builtin", "--steps", "2", "--quant", "FP16_16", "--ptq-report",
                                        "bf16", "--output", "run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert list(summary["ptq"]) == ["fp16_16 (qat)", "fp32", "bf16"]
    assert summary["ptq"]["fp16_16 (qat)"]["acc1"] == summary["val_acc1"]


def test_bf16_on_a_cpu_without_it_says_so(tmp_path):
    proc = cli("vitfast.train", TINY + ["--data", "builtin", "--steps", "1", "--amp", "bf16", "--output", "run"],
               tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    note = "note: this CPU has no bf16 arithmetic (AVX512-BF16 / AMX): --amp bf16 is emulated here"
    assert (note in proc.stdout) == (cpu_has_bf16() is False)


def test_license_matches_pyproject():
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert text.startswith("Apache License\nVersion 2.0, January 2004") and "END OF TERMS AND CONDITIONS" in text
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert 'license = {text = "Apache-2.0"}' in f.read()


@pytest.mark.parametrize("ssl, why", [
    (None, "a classifier needs two or more classes"),
    ("dino", "the k-NN that scores a self-supervised run needs labelled images of two or more classes, as folders"),
])
def test_data_of_one_class_is_refused_before_anything_is_written(tmp_path, monkeypatch, ssl, why):
    """Every prediction on one class is right: a run on it would report 100% top-1 (or k-NN) and mean nothing
    (issue 97, item 4)."""
    write_folder(tmp_path / "one", classes=("cat",), per_class=40, size=16)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as e:
        train_main(TINY + ["--data", f"folder:{tmp_path / 'one'}", "--steps", "1", "--output", "run"] +
                   (["--ssl", ssl] if ssl else []))
    assert str(e.value) == (f"--data folder:{tmp_path / 'one'}: its training split has one class (cat), and every "
                            f"prediction would be right: {why}")
    assert not (tmp_path / "run").exists()


def test_train_seconds_and_the_rates_count_training_alone(tmp_path, monkeypatch):
    """Validations at steps 2 and 4 (2,000 images 8 at a time: most of the run's time): summary.json's
    train_seconds and images/s, and the rate of the log line after a validation, leave them out (issue 97,
    item 5). The check compares rates within the one run, not against a time, so that a loaded machine
    slows both sides alike."""
    monkeypatch.chdir(tmp_path)
    summary = train_main(TINY + ["--steps", "4", "--eval-every-steps", "2", "--eval-batch-size", "8",
                                 "--log-every", "1", "--output", "run", "--quiet"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validating = sum(r["count"] / r["images_per_second"] for r in records if r["kind"] == "val")
    wall = max(r["time"] for r in records)
    assert 0 < summary["train_seconds"] < wall - 0.5 * validating, (summary["train_seconds"], wall, validating)
    train = [r for r in records if r["kind"] == "train"]
    # step 3's interval holds step 2's validation: its rate counted over the whole interval would be this
    counted_in = 32 / (train[2]["time"] - train[1]["time"])
    assert train[2]["images_per_second"] > 3 * counted_in, (train, counted_in)


def test_eval_of_a_run_folder_evaluates_the_runs_model(folder_run, tmp_path):
    root, _ = folder_run
    done = cli("vitfast.eval", ["--checkpoint", "run", "--quant", "fp32"], root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("--checkpoint run: the run's model.safetensors\n"), done.stdout[:300]
    (tmp_path / "empty").mkdir()
    done = cli("vitfast.eval", ["--checkpoint", "empty"], tmp_path)
    assert done.returncode == 2 and done.stderr == ("vitfast.eval: --checkpoint: empty is a folder with no vitfast run "
                                                    "in it (a run's folder holds model.safetensors or "
                                                    "checkpoint-last.pt)\n"), done.stderr


@pytest.mark.parametrize("args, said", [
    (["--betas", "0.9"], "--betas must be two numbers beta1,beta2 in [0, 1), got 0.9"),
    (["--scale", "1.2,0.5"], "--scale must be in (0, 1], got 1.2,0.5"),
    (["--mean", "0.5,0.5"], "--mean must be three numbers (one per RGB channel), got 0.5,0.5"),
    (["--ssl", "dino", "--num-crops", "0,8"], "--num-crops must be >= 1, got 0,8"),
    (["--ssl", "dino", "--size-crops", "32"], "--size-crops 32: one entry per crop group, and there are 2 "
                                              "(--num-crops 2,8, --ssl dino's default)"),
    (["--ssl", "dino", "--crop-scales", "0.4,1"], "--crop-scales 0.4,1.0: one entry per crop group, and there are 2 "
                                                  "(--num-crops 2,8, --ssl dino's default)"),
    (["--ssl", "dino", "--total-num-crops", "5"], "--total-num-crops 5 is not the sum of --num-crops 2,8, --ssl "
                                                  "dino's default"),
])
def test_a_refusal_shows_values_as_they_are_given_and_names_only_what_the_user_gave(args, said):
    """No Python lists ([2, 8]) in a refusal, and a value the user did not give is said to be a default
    (issue 97, item 5)."""
    from vitfast.training.config import resolve

    with pytest.raises(UsageError) as e:
        resolve(args)
    assert str(e.value) == said
