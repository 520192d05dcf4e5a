"""Running out of memory is one line (issue 62, item 3): in training, validation, eval and calibration the
commands exit with status 2 naming the batch that did not fit and the flags that take less, and a new run
that dies so removes what it wrote. The memory runs out for real: each command runs under an address-space
limit (resource.setrlimit) that the interpreter with torch fits in and the batch asked for does not."""
import resource

import pytest

import vitfast
from vitfast.models import save_checkpoint
from vitfast.training.config import recorded, resolve
from tests.values import run_module

LIMIT = 6 << 30  # torch and torchvision imported take ~4 GiB of address space
# 128 px images in 4 px patches: 1,025 tokens; 512 images of them need far more than the limit leaves
BIG = ["--model", "vit_pico_patch4_32", "--img-size", "128", "--ptq-report", ""]


def limited():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def cli(module, args, cwd):
    return run_module(module, args, cwd, preexec_fn=limited)


def one_line(proc, message):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]


def test_training_out_of_memory(tmp_path):
    proc = cli("vitfast.train", BIG + ["--batch-size", "512", "--steps", "2", "--output", "run"], tmp_path)
    one_line(proc, "vitfast.train: out of memory training on cpu at --batch-size 512 (512 images per forward and "
                   "backward): lower --batch-size, or keep it and split each step with --grad-accum-steps N")
    assert not (tmp_path / "run").exists()  # a failed start leaves nothing
    proc = cli("vitfast.train", BIG + ["--batch-size", "512", "--grad-accum-steps", "2", "--steps", "2", "--output",
                                       "run"], tmp_path)
    one_line(proc, "at --batch-size 512 in 2 micro-batches (256 images per forward and backward)")


def test_validation_out_of_memory(tmp_path):
    proc = cli("vitfast.train", BIG + ["--batch-size", "8", "--eval-batch-size", "1000", "--steps", "1", "--output",
                                       "run"], tmp_path)
    one_line(proc, "vitfast.train: out of memory validating on cpu at 1000 images per batch: lower --eval-batch-size")
    assert not (tmp_path / "run").exists()  # nothing to continue from


@pytest.fixture(scope="module")
def run128(tmp_path_factory):
    """A run's model.safetensors at 128 px, as train.py writes it (untrained: memory is the point)."""
    root = tmp_path_factory.mktemp("oom")
    cfg = resolve(BIG + ["--model-kwargs", "depth=1", "--output", str(root / "run")])
    model = vitfast.create_model(cfg["model"], img_size=128, depth=1, num_classes=10)
    save_checkpoint(model, root / "run" / "model.safetensors", config=recorded(cfg), weights="raw")
    return root


def test_eval_out_of_memory(run128):
    proc = cli("vitfast.eval", ["--checkpoint", "run/model.safetensors", "--batch-size", "1000"], run128)
    one_line(proc, "vitfast.eval: out of memory evaluating fp32 on cpu at --batch-size 1000: lower --batch-size")


def test_calibration_out_of_memory(run128):
    proc = cli("vitfast.eval", ["--checkpoint", "run/model.safetensors", "--batch-size", "1000", "--quant", "int8",
                                "--calib-steps", "1"], run128)
    one_line(proc, "vitfast.eval: out of memory calibrating int8 on cpu at --batch-size 1000: lower --batch-size, "
                   "or --calib-steps 0 (dynamic scales)")


def test_cuda_and_python_out_of_memory_are_recognised_too():
    # CUDA's own error class (no GPU here to raise it for real) and Python's MemoryError take the same path
    import torch

    from vitfast.cli import UsageError, is_out_of_memory, out_of_memory

    for error in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError(),
                  RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")):
        assert is_out_of_memory(error)
        with pytest.raises(UsageError, match="^out of memory evaluating x at --batch-size 9: lower --batch-size$"):
            with out_of_memory("evaluating x at --batch-size 9", "lower --batch-size"):
                raise error
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
