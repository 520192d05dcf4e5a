"""The command lines as a user meets them (subprocess, tiny model, CPU): every mistake gets one line on
stderr naming its culprit and exit status 2, no traceback; no earlier run loses a byte; a refused or
failed start leaves no output directory behind; what was asked is what runs."""
import hashlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import vitfast
from vitfast.models import save_checkpoint
from vitfast.train import main as train_main
from vitfast.training.config import build_parser, options
from tests.values import COMMAND_ENV, run_module

TINY = ["--model", "vit_tiny_patch16_224", "--data", "builtin", "--img-size", "32",
        "--model-kwargs", "patch_size=8,embed_dim=32,depth=1,num_heads=2", "--batch-size", "32", "--ptq-report", ""]
# A closed local port as the proxy: a download attempt fails at once, as on a machine without network.
ENV = {**COMMAND_ENV, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


def swap(args, flag, value):
    """args with the value after `flag` replaced."""
    i = args.index(flag)
    return args[:i + 1] + [value] + args[i + 2:]


def cli(module, args, cwd):
    return run_module(module, args, cwd, env=ENV)


def digest(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A finished run, a teacher run at --img-size 32, weights of another model, and broken files."""
    root = tmp_path_factory.mktemp("cli")
    train_main(TINY + ["--steps", "3", "--output", str(root / "run")])
    train_main(TINY + ["--steps", "2", "--model-kwargs", "patch_size=8,embed_dim=48,depth=1,num_heads=2",
                       "--output", str(root / "teacher")])
    other = vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2,
                                 num_heads=2, num_classes=10)
    save_checkpoint(other, root / "other_model.safetensors")
    torch.save(other.state_dict(), root / "other_model.pth")
    (root / "corrupt.pt").write_bytes(b"\x00 not a checkpoint")
    (root / "lr_fast.yaml").write_text("lr: fast\n")
    (root / "batch_str.yaml").write_text("batch_size: '8'\n")
    (root / "myrtle_broken.json").write_text(json.dumps({"train_config": {"epochs": 3}, "vit_config": {}}))
    (root / "bad.yaml").write_text("lr: [1, 2\n")
    bad_images = root / "bad_images"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (bad_images / split / c).mkdir(parents=True)
            for i in range(40):
                (bad_images / split / c / f"{i}.jpg").write_bytes(b"not a jpeg")
    return root


# (id, module, arguments, the one line on stderr). {R}: the folder of `files`; {RUN}: the finished run.
MISTAKES = [
    ("second run into a finished run", "vitfast.train", TINY + ["--steps", "3", "--output", "{RUN}"],
     r"--output .*run already holds a run \(config.yaml.*continue it with --resume auto, start over with --overwrite"),
    ("--steps 0", "vitfast.train", TINY + ["--steps", "0", "--output", "out"], r"--steps must be >= 1, got 0"),
    ("--steps -3", "vitfast.train", TINY + ["--steps", "-3", "--output", "out"], r"--steps must be >= 1, got -3"),
    ("--device gpu", "vitfast.train", TINY + ["--device", "gpu", "--output", "out"],
     r"--device must be cpu, cuda or cuda:N, got 'gpu' \(did you mean 'cuda'\?\)"),
    ("--init-checkpoint of another model", "vitfast.train",
     TINY + ["--steps", "1", "--init-checkpoint", "{R}/other_model.pth", "--output", "out"],
     r"--init-checkpoint .*other_model.pth does not fit vit_tiny_patch16_224 \(.*of another shape \(.*\); "
     r"only the classifier head may differ"),
    ("--init-checkpoint not a checkpoint", "vitfast.train",
     TINY + ["--init-checkpoint", "{R}/corrupt.pt", "--output", "out"], r"--init-checkpoint .*corrupt.pt: cannot read"),
    ("--init-checkpoint missing", "vitfast.train", TINY + ["--init-checkpoint", "nope.pt", "--output", "out"],
     r"--init-checkpoint: no file at 'nope.pt'"),
    ("a recipe's init_checkpoint missing", "vitfast.train", ["-c", "vit_b32_cifar10", "--output", "out"],
     r"config 'vit_b32_cifar10', key init_checkpoint: no file at 'ViT-B_32.npz'"),
    ("--quant-grad without --quant", "vitfast.train", TINY + ["--quant-grad", "bf16", "--output", "out"],
     r"--quant-grad has no effect without --quant"),
    ("--quant-grad unknown format", "vitfast.train", TINY + ["--quant", "FP16_16", "--quant-grad", "fp9",
                                                            "--output", "out"], r"--quant-grad.*'fp9'"),
    ("--teacher by name without weights", "vitfast.train", TINY + ["--teacher", "resnet18", "--output", "out"],
     r"--teacher resnet18 has no weights: give --teacher-checkpoint FILE.*--teacher-random-init"),
    ("--teacher-checkpoint without --teacher", "vitfast.train",
     TINY + ["--teacher-checkpoint", "{R}/other_model.pth", "--output", "out"],
     r"--teacher-checkpoint has no effect without --teacher"),
    ("--distill-alpha without --teacher", "vitfast.train", TINY + ["--distill-alpha", "0.3", "--output", "out"],
     r"--distill-alpha has no effect without --teacher"),
    ("--momentum with adamw", "vitfast.train", TINY + ["--momentum", "0.5", "--output", "out"],
     r"--momentum has no effect without --opt sgd"),
    ("config lr: fast", "vitfast.train", ["-c", "{R}/lr_fast.yaml", "--output", "out"],
     r"config '.*lr_fast.yaml', key lr: expected a number, got 'fast' \(a string\)"),
    ("config batch_size: '8'", "vitfast.train", ["-c", "{R}/batch_str.yaml", "--output", "out"],
     r"config '.*batch_str.yaml', key batch_size: expected an integer, got '8' \(a string\)"),
    ("config not YAML", "vitfast.train", ["-c", "{R}/bad.yaml", "--output", "out"],
     r"-c/--config '.*bad.yaml' cannot be read as YAML"),
    ("myrtle JSON missing a field", "vitfast.train", ["-c", "{R}/myrtle_broken.json", "--output", "out"],
     r"myrtle config '.*myrtle_broken.json': missing field"),
    ("--set lr=fast", "vitfast.train", TINY + ["--set", "lr=fast", "--output", "out"],
     r"--set lr: expected a number, got 'fast'"),
    ("missing dataset", "vitfast.train", ["--data", "folder:nowhere", "--output", "out"],
     r"--data: folder dataset: nowhere is not a directory"),
    ("unknown model", "vitfast.train", ["--model", "vit_tinyy", "--output", "out"],
     r"--model: unknown model 'vit_tinyy'; closest: .*vit_tiny_patch16_224"),
    ("--quant FP9_E4M3", "vitfast.train", TINY + ["--quant", "FP9_E4M3", "--output", "out"],
     r"--quant: unknown precision recipe 'FP9_E4M3'"),
    ("--lr -0.001", "vitfast.train", TINY + ["--lr", "-0.001", "--output", "out"], r"--lr must be > 0, got -0.001"),
    ("image size the patch does not divide", "vitfast.train", TINY + ["--img-size", "30", "--output", "out"],
     r"--model vit_tiny_patch16_224 .*img_size \(30, 30\) must be divisible by patch_size \(8, 8\)"),
    ("--resume missing file", "vitfast.train", TINY + ["--resume", "nope.pt", "--output", "out"],
     r"--resume: no checkpoint at 'nope.pt'"),
    ("--resume a corrupt file", "vitfast.train", TINY + ["--resume", "{R}/corrupt.pt", "--output", "out"],
     r"--resume: '.*corrupt.pt' is not a vitfast training checkpoint"),
    ("--resume auto after changing the model", "vitfast.train",
     swap(TINY, "--model-kwargs", "patch_size=8,embed_dim=32,depth=2,num_heads=2") + ["--steps", "6", "--resume",
                                                                                      "auto", "--output", "{RUN}"],
     r"--resume .*checkpoint-last.pt: --model-kwargs .*\(the run has .*would change what the run trains"),
    ("--resume into another run", "vitfast.train",
     TINY + ["--steps", "6", "--resume", "{R}/teacher/checkpoint-last.pt", "--output", "{RUN}"],
     r"--output .*run holds another run"),
    ("--overwrite with --resume", "vitfast.train", TINY + ["--overwrite", "--resume", "auto", "--output", "{RUN}"],
     r"--overwrite starts the run over and --resume continues it: give one"),
    ("--download with no network", "vitfast.train", TINY[:2] + ["--data", "cifar10:cifar", "--download",
                                                               "--output", "out"],
     r"--data: cifar10 dataset: downloading cifar-10-python.tar.gz into cifar failed"),
    ("bad --aa", "vitfast.train", TINY + ["--aa", "rand-m9-zz", "--output", "out"], r"--aa: bad auto_augment"),
    ("--amp none32", "vitfast.train", TINY + ["--amp", "none32", "--output", "out"],
     r"--amp must be one of none, bf16, fp16, got 'none32' \(did you mean 'none'\?\)"),
    ("unknown flag", "vitfast.train", TINY + ["--lr-rate", "0.1"], r"unknown argument '--lr-rate' \(did you mean"),
    ("flag without its value", "vitfast.train", TINY + ["--output", "out", "--lr"], r"argument --lr: expected one"),
    ("--strict-data on unreadable images: a failed start", "vitfast.train",
     TINY[:2] + ["--data", "folder:{R}/bad_images", "--strict-data", "--steps", "2", "--batch-size", "8",
                 "--output", "out"], r"--data folder:.*unreadable image .*\.jpg"),
    ("--strict-data on builtin", "vitfast.train", TINY + ["--strict-data", "--output", "out"],
     r"--strict-data has no effect without an image-file dataset"),
    ("eval --batch-size 0", "vitfast.eval", ["--checkpoint", "{RUN}/checkpoint-last.pt", "--batch-size", "0"],
     r"--batch-size must be >= 1, got 0"),
    ("eval unknown flag", "vitfast.eval", ["--checkpont", "{RUN}/checkpoint-last.pt"],
     r"unknown argument '--checkpont' \(did you mean '--checkpoint'\?\)"),
    ("eval corrupt checkpoint", "vitfast.eval", ["--checkpoint", "{R}/corrupt.pt"],
     r"--checkpoint: '.*corrupt.pt' is not a vitfast training checkpoint"),
    ("eval --ema without EMA weights", "vitfast.eval", ["--checkpoint", "{RUN}/checkpoint-last.pt", "--ema"],
     r"--checkpoint: '.*checkpoint-last.pt' holds no EMA weights"),
    ("eval --calib-steps without a scaled format", "vitfast.eval",
     ["--checkpoint", "{RUN}/checkpoint-last.pt", "--calib-steps", "4"],
     r"--calib-steps has no effect without a scaled format"),
    ("eval a format twice", "vitfast.eval", ["--checkpoint", "{RUN}/checkpoint-last.pt", "--quant", "fp32,FP32"],
     r"--quant names .* more than once"),
    ("eval weights of another model", "vitfast.eval",
     ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,"
      "num_heads=2,num_classes=10", "--checkpoint-path", "{R}/other_model.pth", "--data", "builtin"],
     r"--checkpoint-path .*other_model.pth does not fit --model vit_tiny_patch16_224"),
    ("eval a dataset with other classes", "vitfast.eval",
     ["--checkpoint", "{RUN}/checkpoint-last.pt", "--data", "folder:{R}/bad_images"],
     r"--data folder:.*: 2 classes, but vit_tiny_patch16_224 predicts 10"),
    ("check --size 3", "vitfast.check", ["--size", "3"], r"--size must be >= 64, got 3"),
]
if not torch.cuda.is_available():
    MISTAKES.append(("--device cuda without a GPU", "vitfast.train", TINY + ["--device", "cuda", "--output", "out"],
                     r"--device cuda: no CUDA GPU is usable here .*use --device cpu"))


# Mistakes beyond the ones users reported run in this process, through the same vitfast.cli.run that
# `python -m` calls (an interpreter start costs ~6 s here; the reported ones each get their own).
IN_PROCESS = {"--init-checkpoint missing", "a recipe's init_checkpoint missing", "--teacher-checkpoint without --teacher", "--distill-alpha without --teacher",
              "--momentum with adamw", "config not YAML", "myrtle JSON missing a field", "--set lr=fast",
              "--resume a corrupt file", "--resume into another run", "--overwrite with --resume", "--amp none32",
              "unknown flag", "flag without its value", "--strict-data on unreadable images: a failed start",
              "--strict-data on builtin", "eval corrupt checkpoint", "eval --ema without EMA weights",
              "eval --calib-steps without a scaled format", "eval a format twice", "eval weights of another model",
              "eval a dataset with other classes", "check --size 3"}


def paths(args, files):
    return [a.replace("{RUN}", str(files / "run")).replace("{R}", str(files)) for a in args]


def run_in_process(module, args, cwd, monkeypatch, capsys):
    import importlib
    from types import SimpleNamespace

    from vitfast.cli import run

    monkeypatch.chdir(cwd)
    monkeypatch.delenv("VITFAST_DEBUG", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run(module, importlib.import_module(module).main, args)
    out = capsys.readouterr()
    return SimpleNamespace(returncode=exit_.value.code, stdout=out.out, stderr=out.err)


@pytest.fixture(scope="module")
def outcomes(files, tmp_path_factory):
    """Every reported mistake run once as a command, three at a time, each in a fresh working directory."""
    before = digest(files)
    work = tmp_path_factory.mktemp("work")

    def one(case):
        name, module, args, _ = case
        cwd = work / re.sub(r"\W+", "_", name)
        cwd.mkdir()
        return name, (cli(module, paths(args, files), cwd), cwd)

    with ThreadPoolExecutor(3) as pool:
        results = dict(pool.map(one, [m for m in MISTAKES if m[0] not in IN_PROCESS]))
    return results, before, digest(files)


@pytest.mark.parametrize("case", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_one_line_and_status_2(outcomes, files, case, tmp_path, monkeypatch, capsys):
    name, module, args, pattern = case
    if name in IN_PROCESS:
        before = digest(files)
        proc, cwd = run_in_process(module, paths(args, files), tmp_path, monkeypatch, capsys), tmp_path
        assert digest(files) == before
    else:
        proc, cwd = outcomes[0][name]
    prog = module.split(".")[-1]
    ours = [line for line in proc.stderr.splitlines() if line.startswith(f"vitfast.{prog}: ")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert len(ours) == 1, proc.stderr
    assert re.search(pattern, ours[0]), ours[0]
    assert os.listdir(cwd) == [], f"left behind in the working directory: {os.listdir(cwd)}"


def test_no_mistake_changed_a_byte_of_the_earlier_runs(outcomes):
    _, before, after = outcomes
    assert after == before


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    proc = cli("vitfast.train", TINY + ["--steps", "0", "--debug"], tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "--steps must be >= 1" in proc.stderr
    env_proc = subprocess.run([sys.executable, "-m", "vitfast.eval", "--batch-size", "0"], cwd=tmp_path,
                              env={**ENV, "VITFAST_DEBUG": "1"}, capture_output=True, text=True)
    assert "Traceback" in env_proc.stderr and "--batch-size must be >= 1" in env_proc.stderr


def test_resume_of_a_finished_run_changes_nothing(files, tmp_path):
    before = digest(files / "run")
    proc = cli("vitfast.train", TINY + ["--steps", "3", "--resume", "auto", "--output", str(files / "run")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "the run is finished (step 3 of 3); nothing to do" in proc.stdout
    assert digest(files / "run") == before


def test_overwrite_starts_over_and_says_so(files, tmp_path):
    out = tmp_path / "run"
    train_main(TINY + ["--steps", "2", "--output", str(out)])
    proc = cli("vitfast.train", TINY + ["--steps", "1", "--overwrite", "--output", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"--overwrite: deleted the earlier run in {out}" in proc.stdout
    assert json.loads((out / "summary.json").read_text())["steps"] == 1
    assert len([r for r in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in r]) == 1


def test_documented_values_run_as_asked(files, tmp_path):
    """--amp none (documented, once refused), a --teacher checkpoint trained at --img-size 32 (rebuilt at
    its own size), and a run's model.safetensors as a teacher: each trains, and config.yaml records it."""
    for i, extra in enumerate([["--amp", "none"], ["--teacher", str(files / "teacher" / "checkpoint-best.pt")],
                               ["--teacher", str(files / "teacher" / "model.safetensors"), "--distill-type",
                                "soft"]]):
        out = tmp_path / f"run{i}"
        proc = cli("vitfast.train", TINY + ["--steps", "1", "--output", str(out)] + extra, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (out / "summary.json").exists()


def test_teacher_of_another_image_size_is_refused_before_training(files, tmp_path):
    teacher = str(files / "teacher" / "checkpoint-best.pt")
    proc = cli("vitfast.train", swap(TINY, "--img-size", "48") + ["--teacher", teacher, "--output", "out"], tmp_path)
    assert proc.returncode == 2 and "takes 32x32 images, the student is trained on 48x48" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_eval_reports_the_calibration_batches_it_really_used(files, tmp_path):
    path = tmp_path / "r.json"
    proc = cli("vitfast.eval", ["--checkpoint", str(files / "run" / "checkpoint-last.pt"), "--quant", "fp32,int8",
                                "--calib-steps", "8", "--batch-size", "10000", "--json", str(path)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--calib-steps 8: the training split holds only 1 batch of 10000; calibrating on 1" in proc.stderr
    assert json.loads(path.read_text())["int8"]["calibration"] == "static, 1 batch of train"
    assert "activation scales: static, 1 batch of train" in proc.stdout


def test_check_runs_the_fused_attention(tmp_path):
    proc = cli("vitfast.check", ["--size", "4096"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("attention ")]
    assert [r[1] for r in rows] == ["float32", "bfloat16"] and all(float(r[2]) < float(r[4]) for r in rows)


def test_help_is_whole_and_states_each_default_once():
    text = " ".join(build_parser().format_help().split())  # argparse wraps lines
    assert "(default: 4 for vit_pico_patch4_32, 300 for other models)" in text and "(default: None)" not in text
    for o in options().values():
        assert o.help.count("default") <= 1, o.flag
    from vitfast.eval import build_parser as eval_parser

    eval_help = eval_parser().format_help()
    assert "(default: None)" not in eval_help and "attention-rollout maps." in eval_help


def test_recipe_settings_for_another_variant_are_no_error_but_the_same_flag_is():
    from vitfast.cli import UsageError
    from vitfast.training.config import resolve

    cfg = resolve(["-c", "vit_b32_cifar10", "--opt", "adamw"])  # the recipe's SGD momentum: carried, unused
    assert cfg["opt"] == "adamw" and cfg["momentum"] == 0.9
    with pytest.raises(UsageError, match="--momentum has no effect without --opt sgd"):
        resolve(["-c", "vit_b32_cifar10", "--opt", "adamw", "--momentum", "0.8"])


@pytest.mark.parametrize("text,match", [
    ("scale: [0.9, 0.1]\n", r"key scale.* must be two numbers lo,hi with 0 < lo <= hi <= 1"),
    ("mean: [0.5]\n", r"key mean.* must be three numbers"),
    ("batch_size: true\n", r"key batch_size: expected an integer, got True"),
    ("epochs: 2.5\n", r"key epochs: expected an integer, got 2.5"),
    ("ptq_report: [fp16_16, 7]\n", r"key ptq_report: expected a list of names"),
    ("hflip: 1.5\n", r"key hflip must be in \[0, 1\], got 1.5"),
    ("amp: null\n", r"key amp: expected a string, got null"),
])
def test_config_file_values_are_typed_and_ranged_where_they_enter(tmp_path, text, match):
    from vitfast.cli import UsageError
    from vitfast.training.config import resolve

    conf = tmp_path / "c.yaml"
    conf.write_text(text)
    with pytest.raises(UsageError, match=match):
        resolve(["-c", str(conf)])


def test_exponent_numbers_are_numbers_wherever_a_config_is_read(tmp_path):
    """1e-5 without a dot is text to YAML 1.1 (PyYAML) and a number to YAML 1.2, JSON and OmegaConf (VISSL's
    files): a config file, --model-kwargs and --set read it as a number; quoted, it stays text."""
    from vitfast.training.config import resolve

    conf = tmp_path / "c.yaml"
    conf.write_text("lr: 5e-4\nmodel_kwargs: {norm_eps: 1e-5}\noutput: '1e5'\n")
    cfg = resolve(["-c", str(conf)])
    assert (cfg["lr"], cfg["model_kwargs"], cfg["output"]) == (5e-4, {"norm_eps": 1e-5}, "1e5")
    cfg = resolve(["--model-kwargs", "norm_eps=1e-5", "--set", "model_kwargs.init_values=1E-4"])
    assert cfg["model_kwargs"] == {"norm_eps": 1e-5, "init_values": 1e-4}
