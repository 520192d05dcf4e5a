"""The quantization tests' trained model, trained once per test run: both test_linear8 and test_fp8_chain
use it, and under xdist their files may run on different workers, so the first to ask trains and saves
it where every worker looks (the run's shared temporary folder, under a file lock); the others load it."""
import os

import pytest
import torch
import torch.nn.functional as F
from filelock import FileLock

from vitfast.data import generate_builtin
from tests.quant.small import small_model


def _prep(a):
    return (torch.as_tensor(a).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25


def _train(xt, yt):
    model = small_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=300, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        i = torch.randint(0, len(xt), (64,), generator=g)
        loss = F.cross_entropy(model(xt[i]), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small ViT trained for 300 steps on the built-in textures (82.7% validation top-1, so the
    predictions are a trained model's, with close calls left for quantization to flip), with two
    calibration batches and 1,000 validation images."""
    xt, yt = generate_builtin("train", n=6000)
    xv, _ = generate_builtin("val", n=1000)
    xt, yt, xv = _prep(xt), torch.as_tensor(yt), _prep(xv)
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared
    path = shared / "quant_trained_vit.pt"
    with FileLock(f"{path}.lock"):
        if not path.exists():
            torch.save(_train(xt, yt).state_dict(), f"{path}.part")
            os.replace(f"{path}.part", path)
    model = small_model()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval(), xt[:128].split(64), xv
