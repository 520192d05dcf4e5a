"""vitfast.eval's files and lines as a user meets them (subprocess, tiny model, CPU): no file is replaced
unless --overwrite asks, a file name of another kind (a checkpoint given to --json) is refused even then,
and every refusal is one line, status 2, before any work; a model.safetensors that records its run's config evaluates alone; attention maps
are big enough to read; --quiet leaves the results only."""
import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image

from tests.training.test_cli import TINY, cli, digest, run_in_process
from vitfast.models import save_checkpoint
from vitfast.train import main as train_main
from vitfast.training.state import model_from_file

KWARGS = "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2"  # TINY's model, for --model
OLD_JSON = b'{"ptq": "a run\'s table, not to be lost"}\n'
OLD_MAP = b"an earlier map"
PROGRESS = re.compile(r"^.+ \(\d+ \w+\) \.\.\.$", re.M)  # a pass announcing itself off a terminal (vitfast.progress)


def old_outputs(folder):
    """An earlier results file and two earlier maps in folder; returns folder."""
    (folder / "maps").mkdir(parents=True)
    (folder / "results.json").write_bytes(OLD_JSON)
    for i in range(2):
        (folder / "maps" / f"rollout_{i:04d}.png").write_bytes(OLD_MAP)
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A finished run, its weights as .safetensors with and without the run's config, earlier outputs."""
    root = tmp_path_factory.mktemp("evalout")
    train_main(TINY + ["--steps", "3", "--output", str(root / "run")])
    model, info = model_from_file(str(root / "run" / "checkpoint-last.pt"), "test")
    save_checkpoint(model, root / "with_config.safetensors", config=info["config"])  # as train.py's model.safetensors
    save_checkpoint(model, root / "bare.safetensors")  # as files written before configs were stored
    return old_outputs(root)


# (id, arguments, the one line on stderr). {R}: the folder of `files`; {RUN}: its finished run.
REFUSALS = [
    ("--json a checkpoint, even with --overwrite",
     ["--checkpoint", "{RUN}/checkpoint-last.pt", "--json", "{RUN}/checkpoint-last.pt", "--overwrite"],
     r"--json .*checkpoint-last.pt names a checkpoint \(\.pt\), not a JSON file: expected a file name ending in "
     r"\.json$"),
    ("--json an existing file", ["--checkpoint", "{RUN}/checkpoint-last.pt", "--json", "{R}/results.json"],
     r"--json .*results.json exists; give --overwrite to replace it, or another file name$"),
    ("--json a run's summary.json", ["--checkpoint", "{RUN}/checkpoint-last.pt", "--json", "{RUN}/summary.json"],
     r"--json .*summary.json exists; give --overwrite"),
    ("--maps-dir with earlier maps",
     ["--checkpoint", "{RUN}/checkpoint-last.pt", "--attention-maps", "3", "--maps-dir", "{R}/maps"],
     r"--maps-dir .*maps already holds rollout_0000.png, rollout_0001.png; give --overwrite to replace them, or "
     r"another --maps-dir$"),
    (".safetensors without its run's config", ["--checkpoint", "{R}/bare.safetensors"],
     r"--checkpoint .*bare.safetensors records no training data \(saved without its run's config\); give --data "
     r"SPEC$"),
]
# Refusals beyond the reported ones run in this process, through the same vitfast.cli.run.
IN_PROCESS = [
    ("--dvt-plot an existing PNG",
     ["--checkpoint", "{RUN}/checkpoint-last.pt", "--dvt-plot", "{R}/maps/rollout_0000.png"],
     r"--dvt-plot .*rollout_0000.png exists; give --overwrite"),
    ("--dvt-plot not a PNG",
     ["--checkpoint", "{RUN}/checkpoint-last.pt", "--dvt-plot", "{R}/results.json", "--overwrite"],
     r"--dvt-plot .*results.json names a JSON file \(\.json\), not a PNG image"),
    ("--json without .json", ["--checkpoint", "{RUN}/checkpoint-last.pt", "--json", "out.txt"],
     r"--json out.txt: expected a file name ending in \.json$"),
    ("--json a folder", ["--checkpoint", "{RUN}/checkpoint-last.pt", "--json", "{RUN}", "--overwrite"],
     r"--json .*run is a folder; expected the name of a JSON file"),
    ("--json inside a file", ["--checkpoint", "{RUN}/checkpoint-last.pt", "--json", "{R}/results.json/r.json"],
     r"--json .*results.json/r.json: .*results.json is a file, not a folder"),
    ("--maps-dir a file",
     ["--checkpoint", "{RUN}/checkpoint-last.pt", "--attention-maps", "1", "--maps-dir", "{R}/results.json",
      "--overwrite"],
     r"--maps-dir .*results.json is a file; expected a folder"),
    ("--dvt-plot one of the maps", ["--checkpoint", "{RUN}/checkpoint-last.pt", "--attention-maps", "1",
                                    "--dvt-plot", "attention_maps/rollout_0000.png"],
     r"--dvt-plot attention_maps/rollout_0000.png is also the file of an attention map"),
    ("--overwrite without an output", ["--checkpoint", "{RUN}/checkpoint-last.pt", "--overwrite"],
     r"--overwrite has no effect without an output file"),
    ("--model without --data", ["--model", "vit_tiny_patch16_224", "--model-kwargs", KWARGS],
     r"--data is required with --model vit_tiny_patch16_224"),
    ("--ema of a .safetensors file", ["--checkpoint", "{R}/with_config.safetensors", "--ema"],
     r"--checkpoint: .*with_config.safetensors' holds only the run's trained weights \(it kept no EMA\): the "
     r"run's checkpoint-\*.pt holds both"),
]


def paths(args, root):
    return [a.replace("{RUN}", str(root / "run")).replace("{R}", str(root)) for a in args]


def png_size(path):
    with Image.open(path) as im:
        return im.size


@pytest.fixture(scope="module")
def outcomes(files, tmp_path_factory):
    """Every reported refusal and two real evaluations, run as commands two at a time, each in a fresh
    working directory. The evaluations write into their own copies of the earlier outputs."""
    before = digest(files)
    work = tmp_path_factory.mktemp("work")
    weights = str(files / "with_config.safetensors")
    runs = {name: paths(args, files) for name, args, _ in REFUSALS}
    loud, quiet = old_outputs(work / "loud_out"), old_outputs(work / "quiet_out")
    # no --data: the file's config says what the model was trained on
    runs["loud"] = ["--checkpoint", weights, "--quant", "fp32,int8", "--calib-steps", "1", "--json",
                    str(loud / "results.json"), "--attention-maps", "2", "--maps-dir", str(loud / "maps"),
                    "--overwrite"]
    runs["quiet"] = ["--checkpoint", weights, "--quant", "fp32,int8", "--calib-steps", "1", "--attention-maps", "1",
                     "--maps-dir", str(quiet / "maps"), "--overwrite", "--quiet"]

    def one(name):
        cwd = work / re.sub(r"\W+", "_", name)
        cwd.mkdir()
        return name, (cli("vitfast.eval", runs[name], cwd), cwd)

    with ThreadPoolExecutor(2) as pool:
        results = dict(pool.map(one, runs))
    return results, before, digest(files), {"loud": loud, "quiet": quiet}


@pytest.mark.parametrize("case", REFUSALS + IN_PROCESS, ids=[c[0] for c in REFUSALS + IN_PROCESS])
def test_a_refusal_is_one_line_before_any_work(outcomes, files, case, tmp_path, monkeypatch, capsys):
    name, args, pattern = case
    if case in IN_PROCESS:
        before = digest(files)
        proc, cwd = run_in_process("vitfast.eval", paths(args, files), tmp_path, monkeypatch, capsys), tmp_path
        assert digest(files) == before
    else:
        proc, cwd = outcomes[0][name]
    ours = [line for line in proc.stderr.splitlines() if line.startswith("vitfast.eval: ")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "\x1b" not in proc.stderr, repr(proc.stderr)
    assert len(ours) == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert re.search(pattern, ours[0]), ours[0]
    assert proc.stdout == "", proc.stdout  # refused before any work: not even a progress line
    assert os.listdir(cwd) == [], f"left behind in the working directory: {os.listdir(cwd)}"


def test_no_refusal_changed_a_byte(outcomes, files):
    _, before, after, _ = outcomes
    assert after == before
    checkpoint = files / "run" / "checkpoint-last.pt"
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == before[os.path.join("run", "checkpoint-last.pt")]
    assert (files / "results.json").read_bytes() == OLD_JSON
    assert (files / "maps" / "rollout_0000.png").read_bytes() == OLD_MAP


def test_safetensors_with_its_config_evaluates_alone_and_overwrite_replaces(outcomes):
    proc, _ = outcomes[0]["loud"]
    out = outcomes[3]["loud"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "vit_tiny_patch16_224 on builtin (val, 2000 images)" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["fp32", "int8"] and results["int8"]["calibration"] == "static, 1 batch of train"
    lines = PROGRESS.findall(proc.stdout)  # each pass announces itself
    assert [line for line in lines if line.startswith("eval ")] == ["eval fp32 (16 batches) ...",
                                                                    "eval int8 (16 batches) ..."], proc.stdout
    assert "attention maps (2 images) ..." in lines
    for i in range(2):
        path = out / "maps" / f"rollout_{i:04d}.png"
        assert path.read_bytes() != OLD_MAP
        width, height = png_size(path)  # a 32x32 image: its map is enlarged to be read, beside the image
        assert height >= 224 and width >= 2 * height, (width, height)


def test_quiet_prints_the_results_only(outcomes):
    proc, _ = outcomes[0]["quiet"]
    out = outcomes[3]["quiet"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "top-1 %" in proc.stdout and "\nint8 " in proc.stdout and "attention rollout maps: " in proc.stdout
    assert PROGRESS.findall(proc.stdout + proc.stderr) == [], proc.stdout + proc.stderr
    assert (out / "maps" / "rollout_0000.png").read_bytes() != OLD_MAP
    assert (out / "maps" / "rollout_0001.png").read_bytes() == OLD_MAP  # --attention-maps 1 writes one


def test_progress_is_off_unless_asked(files, capsys):
    """collect_logits / evaluate: no bar or line by default (train.py's own calls), a line with desc."""
    from vitfast import progress
    from vitfast.training.evaluate import collect_logits, evaluate

    progress.set_quiet(False)
    model, _ = model_from_file(str(files / "with_config.safetensors"), "test")
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 32, 32), torch.arange(12) % 10)
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    capsys.readouterr()
    evaluate(model, loader, torch.device("cpu"))
    exits, labels, _ = collect_logits(model, loader, torch.device("cpu"), max_batches=2)
    assert capsys.readouterr().out == "" and len(labels) == 8
    collect_logits(model, loader, torch.device("cpu"), max_batches=2, desc="eval x")
    evaluate(model, loader, torch.device("cpu"), desc="val")
    assert capsys.readouterr().out == "eval x (2 batches) ...\nval (3 batches) ...\n"


def test_saved_config_round_trips_and_is_never_dropped(files, tmp_path):
    model, info = model_from_file(str(files / "with_config.safetensors"), "test")
    assert info["config"] == model_from_file(str(files / "run" / "checkpoint-last.pt"), "test")[1]["config"]
    assert info["config"]["data"] == "builtin"
    assert model_from_file(str(files / "bare.safetensors"), "test")[1]["config"] == {}
    with pytest.raises(ValueError, match="config, weights: only a .safetensors file stores them"):
        save_checkpoint(model, tmp_path / "m.pth", config=info["config"])
    assert not (tmp_path / "m.pth").exists()


def test_library_messages_lose_their_terminal_colours():
    from vitfast.cli import first_line, one_line

    error = ValueError("load failed, \x1b[1mdo this only if you trust it\x1b[0m.\n\tdetails")
    assert one_line(error) == "load failed, do this only if you trust it.; details"
    assert first_line(error) == "load failed, do this only if you trust it."
