"""--clip-mode (issue 98): "param" clips each parameter's gradient as DINO's utils.clip_gradients does
(written out here), on one process and on FSDP2 shards over two processes; "norm" is torch's
clip_grad_norm_ as before."""
import types

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from vitfast.cli import UsageError
from vitfast.train import main as train_main
from vitfast.training.distributed import Dist
from vitfast.training.parallel import FullyShard, OneProcess


def dino_clip_gradients(model, clip):
    """facebookresearch/dino utils.clip_gradients, written out: each parameter's gradient scaled by
    clip / (its norm + 1e-6) where that is below 1."""
    for p in model.parameters():
        if p.grad is not None:
            coef = clip / (p.grad.norm(2) + 1e-6)
            if coef < 1:
                p.grad.mul_(coef)


def model_with_grads(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    (model(torch.randn(5, 8)) ** 2).sum().mul(30).backward()
    model[2].bias.grad = None  # a parameter without a gradient (DINO's frozen last layer) is left alone
    return model


def test_param_mode_equals_dinos_clip_gradients():
    ours, theirs = model_with_grads(), model_with_grads()
    norms = [p.grad.norm() for p in ours.parameters() if p.grad is not None]
    assert min(norms) < 40.0 < max(norms)  # some clipped, some not
    OneProcess({}, None, print).clip_grad_(ours.parameters(), 40.0, "param")
    dino_clip_gradients(theirs, 40.0)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad)


def test_norm_mode_is_torchs_clip_grad_norm():
    ours, theirs = model_with_grads(), model_with_grads()
    OneProcess({}, None, print).clip_grad_(ours.parameters(), 1.0, "norm")
    torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad)


def _sharded_clip(rank, path, out):
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    tdist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    try:
        from torch.distributed.fsdp import fully_shard

        dist = types.SimpleNamespace(enabled=True, world_size=2, device=torch.device("cpu"))
        parallel = FullyShard({"fsdp_hybrid": False}, dist, print)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
        fully_shard(model, mesh=parallel.mesh)
        (model(torch.randn(5, 8)) ** 2).sum().mul(30).backward()
        parallel.clip_grad_(model.parameters(), 40.0, "param")
        out[rank] = [p.grad.full_tensor() for p in model.parameters()]
    finally:
        tdist.destroy_process_group()


def test_param_mode_on_fsdp_shards_equals_one_process(tmp_path):
    out = mp.Manager().dict()
    mp.spawn(_sharded_clip, args=(str(tmp_path / "store"), out), nprocs=2)
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    (reference(torch.randn(5, 8)) ** 2).sum().mul(30).backward()
    dino_clip_gradients(reference, 40.0)
    for rank in (0, 1):
        for got, p in zip(out[rank], reference.parameters()):
            torch.testing.assert_close(got, p.grad)


def test_clip_mode_needs_clip_grad(tmp_path):
    with pytest.raises(UsageError, match="--clip-mode has no effect without --clip-grad"):
        train_main(["--clip-mode", "param", "--steps", "1", "--output", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
