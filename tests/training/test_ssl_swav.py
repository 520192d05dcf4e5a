"""SwAV (issue 63): Sinkhorn-Knopp against a float64 NumPy version, across two processes as on one, the
swapped-prediction loss against a reference written here, VISSL's head, and `--ssl swav` through the
training command line (several prototype sets, the queue, bit-exact resume)."""
import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from vitfast.cli import UsageError
from vitfast.models.ssl_heads import SwAVHead
from vitfast.train import main as train_main
from vitfast.training.methods.swav import deal_queue, sinkhorn, swav_loss
from vitfast.training.state import load_state

TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2",
        "--batch-size", "32", "--ptq-report", "", "--ssl", "swav", "--num-clusters", "30,20", "--log-every", "2",
        "--quiet", "--data-on-device"]


def reference_sinkhorn(scores, epsilon, iterations):
    """SwAV's Algorithm (its appendix): Q = exp(C / eps)^T, normalised to sum 1, then alternately each
    prototype's row to 1/K and each sample's column to 1/B; returned per sample (rows sum to 1)."""
    q = np.exp(np.asarray(scores, np.float64) / epsilon).T
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True) * k
        q /= q.sum(axis=0, keepdims=True) * b
    return (q * b).T


def test_sinkhorn_equals_the_float64_reference():
    g = torch.Generator().manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(24, 8, generator=g), dim=-1) @ \
        torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1).T  # cosines, as SwAV's
    ours = sinkhorn(scores, 0.05, 3)
    np.testing.assert_allclose(ours.numpy(), reference_sinkhorn(scores, 0.05, 3), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.sum(dim=1), torch.ones(24))  # each sample's codes sum to 1


def _distributed_sinkhorn(rank, path, scores, out):
    tdist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    try:
        half = scores.shape[0] // 2
        out[rank] = sinkhorn(scores[rank * half:(rank + 1) * half], 0.05, 3, distributed=True)
    finally:
        tdist.destroy_process_group()


def test_sinkhorn_over_two_processes_equals_one_over_the_whole_batch(tmp_path):
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(16, 5, generator=g) * 0.3
    out = mp.Manager().dict()
    mp.spawn(_distributed_sinkhorn, args=(str(tmp_path / "store"), scores, out), nprocs=2)
    torch.testing.assert_close(torch.cat([out[0], out[1]]), sinkhorn(scores, 0.05, 3), rtol=1e-5, atol=1e-7)


def test_the_swapped_prediction_loss_equals_the_reference():
    g = torch.Generator().manual_seed(2)
    crops, b, k, t = 4, 3, 5, 0.1
    scores = torch.randn(crops * b, k, generator=g)
    codes = {0: torch.softmax(torch.randn(b, k, generator=g), -1), 1: torch.softmax(torch.randn(b, k, generator=g), -1)}
    s = scores.numpy().astype(np.float64).reshape(crops, b, k) / t
    log_p = s - np.log(np.exp(s).sum(axis=-1, keepdims=True))
    want = np.mean([np.mean([np.mean(-(codes[i].numpy() * log_p[v]).sum(-1)) for v in range(crops) if v != i])
                    for i in codes])
    assert swav_loss(scores, codes, crops, t).item() == pytest.approx(want, rel=1e-5)


def test_vissl_head_dims_bn_and_prototype_sets():
    head = SwAVHead([32, 64, 16], use_bn=True, num_clusters=[10, 7])
    assert [type(m).__name__ for m in head.projection] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    z, scores = head(torch.randn(5, 32))
    assert z.shape == (5, 16) and [s.shape for s in scores] == [(5, 10), (5, 7)]
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5))
    head.normalize_prototypes()
    torch.testing.assert_close(head.prototypes[1].weight.norm(dim=1), torch.ones(7))


def test_bad_head_dims_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="--head-dims 48,64: the first is the input width, vit_tiny_patch16_224's 32"):
        train_main(TINY + ["--steps", "1", "--head-dims", "48,64", "--output", str(tmp_path / "run")])


def test_total_num_crops_is_checked_against_swavs_own_default_groups(tmp_path):
    # SwAV's default crop groups are VISSL's 2 + 4, not DINO's 2 + 8
    with pytest.raises(UsageError, match=r"^--total-num-crops 10 is not the sum of --num-crops 2,4, --ssl swav's "
                                         r"default$"):
        train_main(TINY + ["--steps", "1", "--total-num-crops", "10", "--output", str(tmp_path / "run")])


def test_swav_trains_with_a_queue_and_resumes_bit_exactly(tmp_path, small_builtin):
    args = TINY + ["--data", small_builtin, "--steps", "6", "--deterministic", "--eval-every", "100",
                   "--eval-every-steps", "3", "--keep-checkpoints", "2",
                   "--queue-length", "64", "--queue-start-epoch", "0", "--freeze-prototypes-epochs", "0"]
    train_main(args + ["--output", str(tmp_path / "full")])
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    assert [r["step"] for r in records if r["kind"] == "val"] == [3, 6]
    a = load_state(tmp_path / "full" / "checkpoint-last.pt")
    assert a["ssl"]["queue"].shape == (2, 64, 128) and a["ssl"]["queue"][:, -1].abs().sum() > 0  # full by step 2
    train_main(["--resume", str(tmp_path / "full" / "checkpoint-step3.pt"), "--output", str(tmp_path / "again"),
                "--quiet"])
    b = load_state(tmp_path / "again" / "checkpoint-last.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for name in a["ssl"]["head"]:
        assert torch.equal(a["ssl"]["head"][name], b["ssl"]["head"][name]), name
    assert torch.equal(a["ssl"]["queue"], b["ssl"]["queue"])
    assert os.path.exists(tmp_path / "full" / "model.safetensors")


def test_fewer_prototypes_than_embedding_dims_are_noted(tmp_path, small_builtin, capsys):
    args = [a for a in TINY if a != "--quiet"] + ["--data", small_builtin, "--steps", "1", "--head-dims", "32,64,24"]
    train_main(args + ["--output", str(tmp_path / "few")])
    assert "note: --num-clusters 30,20 is not above the embedding's 24 dimensions" in capsys.readouterr().out
    train_main(args + ["--num-clusters", "25", "--output", str(tmp_path / "enough")])
    assert "note: --num-clusters" not in capsys.readouterr().out


@pytest.mark.parametrize("saved, world", [(2, 4), (4, 2), (1, 2), (2, 1), (2, 2)])
def test_a_queue_saved_at_one_number_of_ranks_is_dealt_to_another_newest_first(saved, world):
    """Every entry kept, and each rank's queue newest first, when a run continues on other ranks."""
    length, crops, dim = 8, 2, 3
    # entry value = its age (0 newest) * 10 + the rank that queued it
    ages = torch.arange(length).float()
    queue = torch.stack([torch.stack([torch.stack([ages * 10 + r] * dim, dim=-1)] * crops) for r in range(saved)])
    queue = queue if saved > 1 else queue[0]
    dealt = [deal_queue(queue, world, r) for r in range(world)]
    assert all(d.shape == (crops, length * saved // world, dim) for d in dealt)
    everything = torch.cat([d[:, :, 0] for d in dealt], dim=1)
    saved_entries = queue.reshape(-1, crops, length, dim)[:, 0, :, 0].flatten()
    assert sorted(everything[0].tolist()) == sorted(saved_entries.tolist())
    for d in dealt:
        age = (d[0, :, 0] // 10).tolist()
        assert age == sorted(age)  # newest first
