"""Self-supervised training on two gloo processes (torchrun, CPU) equals one process on the same global
batch (issue 63): DINO's centre all-reduced and its teacher, SwAV's Sinkhorn-Knopp across ranks; the k-NN validation
gathers both ranks' features. (A head's BatchNorm is synchronised on GPUs only: PyTorch's SyncBatchNorm.)"""
import subprocess
import sys

import pytest
import torch

from vitfast.training.state import load_state
from tests.values import COMMAND_ENV

# SGD: its update is linear in the gradient (Adam would magnify the all-reduce's float reordering)
TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2",
        "--batch-size", "32", "--ptq-report", "", "--num-crops", "2,2", "--steps", "3", "--deterministic",
        "--opt", "sgd", "--lr", "0.05", "--device", "cpu", "--quiet"]
METHODS = {"dino": ["--ssl", "dino", "--head-out-dim", "256", "--freeze-last-layer-epochs", "0"],
           # the head without BatchNorm: SyncBatchNorm, which would make it global, runs on GPUs only
           "swav": ["--ssl", "swav", "--num-clusters", "30", "--freeze-prototypes-epochs", "0", "--head-use-bn",
                    "false", "--queue-length", "64", "--queue-start-epoch", "0"]}


def close(a, b, what):
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=f"{what} {k}")


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_equal_one(tmp_path, small_builtin, method):
    """SwAV with its queue: each rank queues its own embeddings (half the length), so the Sinkhorn of the
    last step runs over the same embeddings as one process's whole queue."""
    args = TINY + METHODS[method] + ["--data", small_builtin]
    one = subprocess.run([sys.executable, "-m", "vitfast.train", *args, "--output", str(tmp_path / "one")],
                         env=COMMAND_ENV, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(29541 + len(method)), "-m", "vitfast.train", *args, "--output", str(tmp_path / "two")],
                         env=COMMAND_ENV, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_state(tmp_path / "one" / "checkpoint-last.pt"), load_state(tmp_path / "two" / "checkpoint-last.pt")
    close(a["model"], b["model"], "backbone")
    if method == "dino":
        close(a["ema"], b["ema"], "teacher")
        torch.testing.assert_close(a["ssl"]["center"], b["ssl"]["center"], rtol=1e-4, atol=1e-6)
    else:
        close(a["ssl"]["head"], b["ssl"]["head"], "head")
        assert a["ssl"]["queue"].shape == (2, 64, 128) and b["ssl"]["queue"].shape == (2, 2, 32, 128)
        assert a["ssl"]["queued"] == 3 * 32 and b["ssl"]["queued"] == 3 * 16
    assert a["val"]["count"] == b["val"]["count"] == 40  # every validation image once, over both ranks


def test_a_batchnorm_head_trains_on_two_cpu_processes_and_says_its_statistics_are_per_rank(tmp_path):
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29561", "-m", "vitfast.train", *TINY[:-1], "--ssl", "swav", "--num-clusters", "30",
                          "--output", str(tmp_path / "two")], env=COMMAND_ENV, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "BatchNorm statistics are each rank's own on the CPU" in two.stdout
