"""Defaults that do not move (issue 62, item 4), through the real command line: naming the default model or
data leaves the recipe as it was, --help states what a plain run uses, and warmup has one unit per flag."""
import json
import subprocess
import sys

import pytest
import yaml

from vitfast.cli import UsageError
from vitfast.train import main as train_main
from vitfast.training.config import resolve, upgraded
from tests.values import COMMAND_ENV

TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs",
        "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2", "--batch-size", "32", "--ptq-report", ""]


def train(args, cwd):
    return subprocess.run([sys.executable, "-m", "vitfast.train", *args], cwd=cwd, env=COMMAND_ENV, capture_output=True,
                          text=True, timeout=600)


def said(out):
    """The header lines about defaults."""
    return [line for line in out.splitlines() if "'s own defaults:" in line or line.startswith("warmup:")]


def test_naming_the_default_model_or_data_changes_nothing(tmp_path, capsys):
    configs, headers = {}, {}
    proc = train(["--steps", "2", "--ptq-report", "", "--output", "plain"], tmp_path)  # the command line itself
    assert proc.returncode == 0, proc.stderr[-2000:]
    headers["plain"] = said(proc.stdout)
    capsys.readouterr()
    for name, extra in [("model", ["--model", "vit_pico_patch4_32"]), ("data", ["--data", "builtin"])]:
        train_main(extra + ["--steps", "2", "--ptq-report", "", "--output", str(tmp_path / name)])
        headers[name] = said(capsys.readouterr().out)
    for name in headers:
        configs[name] = yaml.safe_load((tmp_path / name / "config.yaml").read_text())
        configs[name].pop("output")
    assert configs["plain"] == configs["model"] == configs["data"]
    assert configs["plain"]["lr"] == 2e-3 and configs["plain"]["smoothing"] == 0.0
    assert configs["plain"]["scale"] == [1.0, 1.0] and configs["plain"]["model"] == "vit_pico_patch4_32"
    # the header names each setting the model's own defaults made, and the default warmup this short run drops
    header = "\n".join(headers["plain"])
    assert "vit_pico_patch4_32's own defaults: --lr 0.002, --warmup-epochs 0.4, --smoothing 0.0, --scale 1.0,1.0" \
        in header, header
    assert "warmup: none: vit_pico_patch4_32's default --warmup-epochs 0.4 (= 31 steps) is at or past the run's " \
           "2 steps" in header, header
    assert headers["plain"] == headers["model"] == headers["data"]


def test_a_flag_overrides_a_model_default_and_another_model_has_none():
    cfg, origin = {}, {}
    cfg = resolve(["--lr", "0.01"], origins=origin)
    assert cfg["lr"] == 0.01 and cfg["epochs"] == 4 and origin == {"lr": "--lr"}
    other = resolve(["--model", "vit_tiny_patch16_224"])
    assert (other["lr"], other["epochs"], other["warmup_epochs"], other["smoothing"]) == (1e-3, None, 0.0, 0.1)
    assert resolve(["--steps", "10"])["epochs"] is None  # steps replace the model's epochs


def test_help_shows_what_a_plain_run_uses(tmp_path):
    proc = train(["--help"], tmp_path)
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    assert proc.returncode == 0
    assert "--epochs N training length in epochs, unless --steps (default: 4 for vit_pico_patch4_32, 300 for " \
           "other models)" in text
    assert "--lr X peak learning rate (for the --lr-base-size batch, if set) (default: 0.002 for " \
           "vit_pico_patch4_32, 0.001 for other models)" in text
    assert "--model MODEL registered model name (python -m vitfast.list) (default: vit_pico_patch4_32)" in text


def test_warmup_in_epochs_is_rounded_to_steps_and_said(tmp_path, capsys):
    # 10,000 built-in images in batches of 32: 312 steps per epoch; 0.01 epochs = 3.12 -> 3 steps
    proc = train(TINY + ["--steps", "4", "--warmup-epochs", "0.01", "--output", "run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warmup: 3 steps (0.01 epochs of 312 steps), from lr 1e-06" in proc.stdout
    train_main(TINY + ["--steps", "4", "--warmup-steps", "2", "--output", str(tmp_path / "run2")])
    assert "warmup: 2 steps, from lr 1e-06" in capsys.readouterr().out


def test_a_warmup_past_the_run_is_one_line_and_leaves_nothing(tmp_path):
    proc = train(TINY + ["--steps", "5", "--warmup-steps", "5", "--output", "run"], tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--warmup-steps 5 is at or past the run's 5 steps: give a shorter warmup, or --warmup-steps 0 for none" \
        in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra,message", [
    (["--steps", "100", "--warmup-epochs", "0.5"], "--warmup-epochs 0.5 (= 156 steps) is at or past the run's 100 "
                                                   "steps"),
    (["--steps", "5", "-c", "recipe.yaml"], "config 'recipe.yaml', key warmup_epochs 2 (= 624 steps) is at or past"),
    (["--warmup-epochs", "1", "--warmup-steps", "3"], "give --warmup-epochs or --warmup-steps, not both"),
    (["--warmup", "3"], "unknown argument '--warmup' (renamed: --warmup-epochs or --warmup-steps, one unit each)"),
])
def test_warmup_mistakes(tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text("warmup_epochs: 2\n")
    with pytest.raises(UsageError) as e:
        train_main(TINY + extra + ["--output", "run"])
    assert message in str(e.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["dino", "swav", "mocov3"])
def test_the_builtin_data_brings_its_crops_to_every_method_unless_the_run_names_crops(method):
    """Grayscale, two crops of 80-100% (the ablation's lesson for this data); crops a run names are its own,
    the colour still the data's; other data keep the method's."""
    own = resolve(["--ssl", method])
    assert (own["num_crops"], own["crop_scales"], own["crop_grayscale"]) == ([2], [[0.8, 1.0]], 1.0)
    named = resolve(["--ssl", method, "--num-crops", "2,2", "--size-crops", "32,16"])
    assert (named["num_crops"], named["crop_scales"], named["crop_grayscale"]) == ([2, 2], None, 1.0)
    total = {"dino": "10", "swav": "6", "mocov3": "2"}[method]  # the method's own crops' (VISSL's total names them)
    assert resolve(["--ssl", method, "--total-num-crops", total])["num_crops"] is None
    assert resolve(["--ssl", method, "--crop-grayscale", "0.2"])["crop_grayscale"] == 0.2
    folder = resolve(["--ssl", method, "--data", "folder:x"])
    assert (folder["num_crops"], folder["crop_scales"], folder["crop_grayscale"]) == (None, None, 0.2)
    assert resolve([])["num_crops"] is None  # supervised: no crops of its own


def test_an_earlier_release_run_config_reads_in_todays_keys():
    # "warmup" was epochs under --epochs and steps under --steps
    assert upgraded({"warmup": 5, "epochs": 10, "steps": None}) == \
        {"epochs": 10, "steps": None, "warmup_epochs": 5, "warmup_steps": None}
    assert upgraded({"warmup": 20.0, "epochs": None, "steps": 300}) == \
        {"epochs": None, "steps": 300, "warmup_epochs": None, "warmup_steps": 20}


def test_an_ssl_runs_header_says_whose_each_default_is(tmp_path):
    """DINO's warmup and rates are --ssl dino's, not the model's; its post-training table is off, and why;
    the parameter count says what it counts (issue 97, item 5)."""
    proc = train(["--ssl", "dino", "--steps", "1", "--output", "run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("vit_pico_patch4_32: 0.46M parameters (the backbone; the method's heads are extra)")
               for line in lines), lines[:6]
    assert "--ssl dino's own defaults: --lr 0.0005, --warmup-epochs 10.0, --lr-base-size 256, --weight-decay 0.04, " \
           "--weight-decay-end 0.4, --clip-grad 3.0, --min-lr 1e-06, --ptq-report '' (a flag or config key overrides " \
           "each)" in lines
    assert not any(line.startswith("vit_pico_patch4_32's own defaults") and "warmup" in line for line in lines)
    assert "warmup: none: --ssl dino's default --warmup-epochs 10 (= 780 steps) is at or past the run's 1 step" in lines
    assert "post-training table: off, --ssl dino's default (each format would extract the k-NN memory bank's " \
           "features again); --ptq-report fp16_32,bf16 asks for it" in lines
    assert "the built-in data's own defaults: --crop-grayscale 1.0, --num-crops 2, --crop-scales 0.8,1.0 (a flag or " \
           "config key overrides each)" in lines
    assert "--ssl dino: crops 2 x 32 px 0.8-1 (patch 4), colour jitter 0.4,0.4,0.2,0.1, grayscale 1;" in proc.stdout
    assert "last layer frozen 78 steps (all of the run's 1" in proc.stdout and " 1 steps" not in proc.stdout
    assert "ptq" not in json.loads((tmp_path / "run" / "summary.json").read_text())
