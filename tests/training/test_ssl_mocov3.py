"""MoCo v3 (issue 98): its loss against the paper's Algorithm 1 written here in float64, one whole step of
`MoCoV3` against a reference step written here from the paper and moco-v3's builder (separate query
and momentum encoders, each view through them alone, the momentum update), and `--ssl mocov3` through
the training command line (k-NN validation, bit-exact resume, the frozen patch embedding, refusals)."""
import copy
import types

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

import vitfast
from vitfast.cli import UsageError
from vitfast.models.ssl_heads import MultiCropNet, features, moco_head_dims
from vitfast.train import main as train_main
from vitfast.training.config import resolve
from vitfast.training.distributed import Dist
from vitfast.training.methods import MoCoV3
from vitfast.training.methods.mocov3 import global_batch, moco_loss
from vitfast.training.state import load_state

TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2",
        "--batch-size", "32", "--ptq-report", "", "--ssl", "mocov3", "--moco-mlp-dim", "64", "--moco-dim", "16",
        "--log-every", "2", "--quiet"]


def reference_ctr(q, k, tau):
    """The paper's Algorithm 1: ctr(q, k) = 2 tau CrossEntropy(q k^T / tau, diagonal), q and k
    L2-normalised, in float64 NumPy."""
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    logits = q @ k.T / tau
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return 2 * tau * -np.mean(np.diag(log_p))


def test_the_loss_equals_the_papers_algorithm():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    np.testing.assert_allclose(moco_loss(q, k, 0.2).item(), reference_ctr(q, k, 0.2), rtol=1e-5)
    # on rank 1 of 2, the queries' positives are the second half of the gathered keys
    keys = torch.cat([torch.randn(12, 8, generator=g), k])
    np.testing.assert_allclose(moco_loss(q, keys, 0.2, rank=1).item(),
                               2 * 0.2 * torch.nn.functional.cross_entropy(
                                   torch.nn.functional.normalize(q) @ torch.nn.functional.normalize(keys).T / 0.2,
                                   torch.arange(12) + 12).item(), rtol=1e-5)


def _two_rank_loss(rank, path, q, k, out):
    tdist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    try:
        half = q.shape[0] // 2
        mine = slice(rank * half, (rank + 1) * half)
        out[rank] = moco_loss(q[mine], global_batch(k[mine], 2), 0.2, rank).item()
    finally:
        tdist.destroy_process_group()


def test_two_ranks_contrast_against_the_whole_global_batch(tmp_path):
    """Each rank's queries against every rank's keys: the ranks' mean loss (what DDP's averaged gradients
    descend) is one process's loss over the whole batch."""
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    out = mp.Manager().dict()
    mp.spawn(_two_rank_loss, args=(str(tmp_path / "store"), q, k, out), nprocs=2)
    np.testing.assert_allclose((out[0] + out[1]) / 2, moco_loss(q, k, 0.2).item(), rtol=1e-5)


def reference_mlp(layers, in_dim, hidden, out_dim):
    """moco-v3's _build_mlp with last_bn=True, written out here."""
    mods = []
    for i in range(layers):
        a, b = (in_dim if i == 0 else hidden), (out_dim if i == layers - 1 else hidden)
        mods.append(nn.Linear(a, b, bias=False))
        mods += [nn.BatchNorm1d(b), nn.ReLU()] if i < layers - 1 else [nn.BatchNorm1d(b, affine=False)]
    return nn.Sequential(*mods)


def test_one_step_equals_a_reference_step_written_from_the_paper():
    """Loss, gradients through the predictor and projector, the frozen patch embedding and the momentum
    update of one step of MoCoV3 against moco-v3's MoCo.forward and main loop written out here."""
    cfg = resolve(TINY + ["--steps", "4", "--lr", "1e-3", "--output", "unused"])
    torch.manual_seed(0)
    backbone = vitfast.create_model(cfg["model"], num_classes=0, img_size=32, patch_size=8, embed_dim=32, depth=1,
                                    num_heads=2)
    reference_backbone = copy.deepcopy(backbone)
    method = MoCoV3(cfg)
    method.train_transform(32, {"mean": (0.5,) * 3, "std": (0.5,) * 3})
    run = types.SimpleNamespace(device=torch.device("cpu"), dist=Dist("cpu"), total_steps=4, steps_per_epoch=2,
                                say=lambda *a: None)
    trained = method.prepare(backbone, run)
    # the reference: the same initial weights, its own modules
    projector, predictor = reference_mlp(3, 32, 64, 16), reference_mlp(2, 16, 64, 16)
    projector.load_state_dict(method.projector.state_dict())
    predictor.load_state_dict(method.predictor.state_dict())
    reference_backbone.patch_embed.requires_grad_(False)  # stop_grad_conv1
    momentum_backbone, momentum_projector = copy.deepcopy(reference_backbone), copy.deepcopy(projector)
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)

    def query(x):
        return predictor(projector(features(reference_backbone, x)))

    def key(x):
        with torch.no_grad():
            return momentum_projector(features(momentum_backbone, x))

    expected = reference_ctr(query(x1).detach(), key(x2), 0.2) + reference_ctr(query(x2).detach(), key(x1), 0.2)
    ours = method.loss(trained, [x1, x2], None, 0)
    np.testing.assert_allclose(ours.item(), expected, rtol=1e-5)
    # the gradients of the same loss computed the reference's way
    ref_loss = moco_loss(query(x1), key(x2), 0.2) + moco_loss(query(x2), key(x1), 0.2)
    ref_loss.backward()
    ours.backward()
    ref_params = dict(reference_backbone.named_parameters())
    for name, p in backbone.named_parameters():
        if name.startswith("patch_embed"):
            assert p.grad is None and not p.requires_grad
        else:
            torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-4, atol=1e-6)
    for mine, theirs in zip([*method.projector.parameters(), *method.predictor.parameters()],
                            [*projector.parameters(), *predictor.parameters()]):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-6)
    # the momentum update after the step: f_k = m f_k + (1 - m) f_q, m on moco-v3's cosine (0.99 at step 0)
    with torch.no_grad():
        for p in trained.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
        method.after_step(0)
    m = 0.99
    student = dict(method.student.named_parameters())
    for name, p in method.teacher.named_parameters():
        before = dict(momentum_backbone.named_parameters(prefix="backbone")).get(name)
        if before is None:
            before = dict(momentum_projector.named_parameters(prefix="head")).get(name)
        s = student[name if name.startswith("backbone") else name.replace("head.", "head.0.", 1)]
        torch.testing.assert_close(p, m * before + (1 - m) * s.detach())
    assert len(list(method.teacher.head.parameters())) == len(list(projector.parameters()))  # no predictor


def test_the_head_runs_on_each_crop_alone():
    """BatchNorm in the projector normalises each view's batch on its own (per_crop), as moco-v3 runs
    base_encoder(x1) and base_encoder(x2)."""
    torch.manual_seed(0)
    backbone = vitfast.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, embed_dim=32,
                                    depth=1, num_heads=2)
    head = reference_mlp(2, 32, 64, 16)
    net = MultiCropNet(backbone, head, per_crop=True).train()
    x1, x2 = torch.randn(6, 3, 32, 32), torch.randn(6, 3, 32, 32)
    torch.testing.assert_close(net([x1, x2]), torch.cat([head(features(backbone, x1)), head(features(backbone, x2))]))
    assert moco_head_dims(384) == (4096, 256) and moco_head_dims(96) == (1024, 64)


def test_mocov3_trains_validates_by_knn_and_resumes_bit_exactly(tmp_path, small_builtin):
    args = TINY + ["--data", small_builtin, "--steps", "6", "--deterministic", "--eval-every", "100",
                   "--eval-every-steps", "3", "--keep-checkpoints", "2", "--data-on-device"]
    full = train_main(args + ["--output", str(tmp_path / "full")])
    assert 0 <= full["val_acc1"] <= 100 and full["steps"] == 6
    train_main(["--resume", str(tmp_path / "full" / "checkpoint-step3.pt"), "--output", str(tmp_path / "again"),
                "--quiet"])
    a, b = load_state(tmp_path / "full" / "checkpoint-last.pt"), load_state(tmp_path / "again" / "checkpoint-last.pt")
    assert a["step"] == b["step"] == 6 and a["ema"] is None
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for part in ("head", "teacher"):
        for name in a["ssl"][part]:
            assert torch.equal(a["ssl"][part][name], b["ssl"][part][name]), (part, name)
    # the patch embedding has not moved since step 3 (stop_grad_conv1), the blocks have
    early = load_state(tmp_path / "full" / "checkpoint-step3.pt")["model"]
    assert torch.equal(a["model"]["patch_embed.proj.weight"], early["patch_embed.proj.weight"])
    assert not torch.equal(a["model"]["blocks.0.attn.qkv.weight"], early["blocks.0.attn.qkv.weight"])
    from safetensors import safe_open

    with safe_open(str(tmp_path / "full" / "model.safetensors"), "pt") as f:  # the query encoder's backbone
        assert f.metadata()["vitfast.weights"] == "raw"


@pytest.mark.parametrize("extra, message", [
    (["--num-crops", "2,4", "--size-crops", "32,16", "--crop-scales", "0.4,1,0.1,0.4"],
     "--ssl mocov3: --num-crops 2,4: MoCo v3 contrasts two crops of each image, --num-crops 2"),
    (["--moco-t", "0"], "--moco-t must be > 0"),
])
def test_bad_mocov3_input_is_one_line(tmp_path, extra, message):
    with pytest.raises(UsageError, match=message):
        train_main(TINY + ["--steps", "1", "--output", str(tmp_path / "run")] + extra)
    assert not (tmp_path / "run").exists()
