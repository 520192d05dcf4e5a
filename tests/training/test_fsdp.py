"""--fsdp (issue 64): FSDP2 sharding over torchrun's gloo ranks on the CPU, against DDP on the same global
batch; sharded checkpoints (torch.distributed.checkpoint folders) resumed at the same and at another
number of ranks, and converted from and to a DDP run's; the outputs (model.safetensors, eval) as any run's."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from vitfast.models.checkpoint import sharded_weights
from vitfast.training.sharded_checkpoint import merge_shards
from vitfast.training.state import load_state
from tests.values import COMMAND_ENV

# two blocks (two shard units besides the root), clipping and accumulation on; AdamW, the default optimizer
TINY = ["--model", "vit_tiny_patch16_224",
        "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=2,num_heads=2",
        "--batch-size", "32", "--grad-accum-steps", "2", "--clip-grad", "1.0", "--ptq-report", "", "--deterministic",
        "--device", "cpu", "--quiet", "--lr", "1e-3"]


def train(args, out, ranks=1, port=29571):
    launch = [sys.executable, "-m", "vitfast.train"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(port),
        "-m", "vitfast.train"]
    done = subprocess.run(launch + [*args, "--output", str(out)], env=COMMAND_ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def descendants(pid):
    """The processes under pid, read from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def weights_of(path):
    """The model's weights in a checkpoint: a sharded folder's, read whole, or a .pt file's."""
    return sharded_weights(path) if str(path).endswith(".dcp") else load_state(path)["model"]


def close(a, b, what):
    assert set(a) == set(b), what
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{what} {k}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_builtin):
    """A DDP and an FSDP run on two ranks, the same global batch of 32 (2 micro-batches of 8 per rank), 4
    steps, validated and kept at step 2 (checkpoint-step2.*) to continue from in other ways."""
    root = tmp_path_factory.mktemp("fsdp")
    args = TINY + ["--data", small_builtin, "--steps", "4", "--eval-every-steps", "2", "--keep-checkpoints", "2"]
    ddp = train(args, root / "ddp", ranks=2, port=29571)
    fsdp = train(args + ["--fsdp"], root / "fsdp", ranks=2, port=29572)
    assert "DDP: each rank holds the whole model" in ddp.stdout
    assert "each rank holds 1/2 of the weights, gradients and optimizer state" in fsdp.stdout
    return root, TINY + ["--data", small_builtin]  # what a continuation repeats


def test_fsdp_on_two_ranks_equals_ddp(runs):
    root, _ = runs
    reference, run = weights_of(root / "ddp" / "checkpoint-last.pt"), root / "fsdp"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [
        "checkpoint-best.dcp", "checkpoint-last.dcp", "checkpoint-step2.dcp", "checkpoint-step4.dcp"]
    close(reference, sharded_weights(run / "checkpoint-last.dcp"), "sharded checkpoint")
    close(reference, load_file(run / "model.safetensors"), "model.safetensors")  # consolidated on rank 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


@pytest.mark.parametrize("source, ranks, extra, written, reference, said", [
    ("fsdp/checkpoint-step2.dcp", 4, [], ".dcp", "fsdp/checkpoint-last.dcp", ""),  # resharded from 2 ranks to 4
    ("ddp/checkpoint-step2.pt", 2, ["--fsdp"], ".dcp", "ddp/checkpoint-last.pt",  # DDP's whole tensors sharded
     "a whole checkpoint (.pt), sharded over 2 rank(s); this run's checkpoints are sharded folders"),
    ("fsdp/checkpoint-step2.dcp", 2, ["--fsdp", "false"], ".pt", "ddp/checkpoint-last.pt",  # read whole by DDP
     "checkpoint-step2.dcp: a sharded checkpoint, read whole; this run's checkpoints are checkpoint-*.pt files"),
])
def test_a_checkpoint_continues_on_other_ranks_and_across_ddp_and_fsdp(runs, tmp_path, source, ranks, extra,
                                                                       written, reference, said):
    """The step-2 checkpoint continued to step 4 another way reaches what the run reached straight: the
    model and the optimizer state arrived whole."""
    root, args = runs
    port = 29573 + 2 * len(extra) + ranks
    done = train(args + ["--resume", str(root / source), *extra], tmp_path / "on", ranks=ranks, port=port)
    assert f"resumed from {root / source} at step 2" in done.stdout and f"{ranks} x cpu" in done.stdout
    assert said in done.stdout
    (last,) = (tmp_path / "on").glob("checkpoint-last.*")
    assert last.suffix == written  # an FSDP run's continuation is one unless told otherwise
    ours, want = weights_of(last), weights_of(root / reference)
    close(want, ours, f"{source} on {ranks} ranks {' '.join(extra)}")


# SGD for the self-supervised methods, as tests/training/test_ssl_ddp.py (Adam would magnify the float
# reordering of the reductions where a gradient is near zero)
METHODS = {"dino": ["--ssl", "dino", "--head-out-dim", "256", "--freeze-last-layer-epochs", "0", "--num-crops", "2,2",
                    "--opt", "sgd", "--lr", "0.05"],
           "swav": ["--ssl", "swav", "--num-clusters", "30", "--freeze-prototypes-epochs", "0", "--head-use-bn",
                    "false", "--queue-length", "64", "--queue-start-epoch", "0", "--num-crops", "2,2", "--opt", "sgd",
                    "--lr", "0.05"],
           "distillation": ["--teacher", "resnet18", "--teacher-random-init", "--distill-type", "soft", "--ema", "0.9"],
           # QAT's rounding, the vitfast backend's ops (their ATen composites here) and recomputed blocks
           "qat": ["--quant", "fp16_16", "--backend", "vitfast", "--grad-checkpointing"],
           # its head's BatchNorm keeps each rank's statistics on the CPU, under DDP and FSDP alike
           "mocov3": ["--ssl", "mocov3", "--num-crops", "2", "--moco-mlp-dim", "64", "--moco-dim", "16", "--opt", "sgd",
                      "--lr", "0.05"]}


def entries(state, key):
    """A checkpoint's entry as whole tensors, flattened: from the file, or from a sharded folder's shards."""
    if not state.get("sharded"):
        value = state[key]
    elif key == "model":
        value = sharded_weights(state["sharded"])
    else:  # state.pt's entry, its tensors of sharded modules read from the shards
        value = merge_shards(state[key], sharded_weights(state["sharded"], key))

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            elif torch.is_tensor(v):
                out[prefix + k] = v
        return out
    return flat(value)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_under_fsdp_equals_ddp(tmp_path, small_builtin, method):
    """The method's own modules sharded too (DINO's teacher and heads, SwAV's head, MoCo v3's momentum
    encoder, an EMA, a distillation teacher): weights, EMA / teacher and method state equal DDP's on the
    same global batch; DINO's step-2 checkpoints continue across the two, each to the other's result."""
    args = TINY + ["--data", small_builtin, "--steps", "4"] + METHODS[method]
    kept = ["--eval-every-steps", "2", "--keep-checkpoints", "2"] if method == "dino" else []
    port = 29600 + 10 * list(METHODS).index(method)
    train(args + kept, tmp_path / "ddp", ranks=2, port=port)
    train(args + kept + ["--fsdp"], tmp_path / "fsdp", ranks=2, port=port + 1)
    ddp = load_state(tmp_path / "ddp" / "checkpoint-last.pt")
    fsdp = load_state(tmp_path / "fsdp" / "checkpoint-last.dcp")
    held = {"dino": ["ema", "ssl"], "swav": ["ssl"], "distillation": ["ema"], "qat": [], "mocov3": ["ssl"]}[method]
    assert fsdp["sharded_keys"] == held
    for key in ["model"] + held:
        close(entries(ddp, key), entries(fsdp, key), f"{method} {key}")
    if method == "dino":
        for source, extra, port in (("ddp/checkpoint-step2.pt", ["--fsdp"], port + 2),
                                    ("fsdp/checkpoint-step2.dcp", ["--fsdp", "false"], port + 3)):
            out = tmp_path / source.replace("/", "-")
            train(args + ["--resume", str(tmp_path / source), *extra], out, ranks=2, port=port)
            (last,) = out.glob("checkpoint-last.*")
            continued = load_state(last)
            for key in ["model"] + held:
                close(entries(ddp, key), entries(continued, key), f"{source} continued {key}")


def node(rank_of_rdzv, port, args, out, nproc=1, **popen):
    """One "node" of a multi-node launch, as on a cluster, on this machine: torchrun with c10d rendezvous."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
                             str(nproc), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                             "--rdzv-id", f"vitfast-{rank_of_rdzv}", "-m", "vitfast.train", *args, "--output",
                             str(out)], env=COMMAND_ENV, text=True, **popen)


def test_two_nodes_shard_within_each_and_equal_ddp(runs, tmp_path):
    """--fsdp-hybrid on two "nodes" of two ranks (the output folder shared, as a cluster's filesystem is):
    sharded within each node, replicated across them, and the same weights as DDP's on the same batch."""
    root, args = runs
    out, launch = tmp_path / "hsdp", args + ["--steps", "4", "--fsdp", "--fsdp-hybrid"]
    nodes = [node("hsdp", 29681, launch, out, nproc=2, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = [n.communicate(timeout=300) for n in nodes]
    assert all(n.returncode == 0 for n in nodes), "\n".join(o[1][-2000:] for o in outs)
    said = "".join(o[0] for o in outs)
    assert "4 x cpu (HSDP: each rank holds 1/2 of the weights, gradients and optimizer state, replicated over 2 " \
        "node(s))" in said
    close(weights_of(root / "ddp" / "checkpoint-last.pt"), weights_of(out / "checkpoint-last.dcp"), "HSDP")


def test_a_rank_that_hangs_stops_the_others_in_one_line(tmp_path, small_builtin):
    """One node's rank stopped (SIGSTOP: alive, silent) mid-run: the other's collectives give up after
    --dist-timeout and it exits with one line naming the checkpoint to continue from, not a hang."""
    args = TINY + ["--data", small_builtin, "--steps", "100000", "--save-every", "5", "--fsdp", "--dist-timeout", "5"]
    out = tmp_path / "run"
    nodes = [node("hang", 29685, args, out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    deadline = time.time() + 300
    while not (out / "checkpoint-last.dcp").exists() and time.time() < deadline:
        time.sleep(0.05)
    stopped = descendants(nodes[1].pid)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        _, err = nodes[0].communicate(timeout=240)
    finally:
        for pid in [nodes[1].pid, *stopped]:
            os.kill(pid, signal.SIGKILL)
        nodes[1].wait()
    ours = [line for line in err.splitlines() if line.startswith("vitfast.train:")]
    assert nodes[0].returncode != 0 and len(ours) == 1, err[-3000:]
    assert re.fullmatch(r"vitfast\.train: rank \d stops at step \d+: a collective failed \(.*[Tt]imed out.*\); "
                        r"another rank died or hung\. .*checkpoint-last\.dcp holds step \d+: continue with the same "
                        r"command and --resume auto", ours[0]), ours[0]
    assert "Traceback" not in err.split("vitfast.train:")[0]  # none from vitfast before it (torchrun's own follow)


def test_fsdp_under_bf16_keeps_fp32_shards_and_follows_ddp(tmp_path, small_builtin):
    """--amp bf16: FSDP gathers bf16 weights (LayerNorm's too, which autocast then computes in fp32 from
    them) and reduces fp32 gradients onto fp32 shards; DDP's autocast rounds only what it computes in bf16.
    So the two agree to bf16's rounding of the weights, not to fp32's (SGD: no division to magnify it)."""
    args = TINY + ["--data", small_builtin, "--steps", "4", "--amp", "bf16", "--opt", "sgd", "--lr", "0.05"]
    train(args, tmp_path / "ddp", ranks=2, port=29661)
    train(args + ["--fsdp"], tmp_path / "fsdp", ranks=2, port=29662)
    a, b = weights_of(tmp_path / "ddp" / "checkpoint-last.pt"), weights_of(tmp_path / "fsdp" / "checkpoint-last.dcp")
    assert {v.dtype for v in b.values()} == {torch.float32}  # the master weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2e-3, msg=k)
    losses = [json.loads((tmp_path / d / "summary.json").read_text())["val_loss"] for d in ("ddp", "fsdp")]
    assert abs(losses[0] - losses[1]) < 1e-3, losses


def test_fsdp_compiled_in_one_process_equals_fsdp_eager(tmp_path, tiny_args):
    args = tiny_args + ["--steps", "2", "--fsdp", "--device", "cpu", "--deterministic"]
    train(args, tmp_path / "eager")
    train(args + ["--compile"], tmp_path / "compiled")
    close(sharded_weights(tmp_path / "eager" / "checkpoint-last.dcp"),
          sharded_weights(tmp_path / "compiled" / "checkpoint-last.dcp"), "torch.compile")


def test_fsdp_in_one_process_says_so_and_its_run_evaluates_and_resumes(tmp_path, tiny_args):
    out = tmp_path / "run"
    done = train(tiny_args + ["--steps", "2", "--fsdp", "--device", "cpu", "--ema", "0.5"], out)
    assert "--fsdp on one process: nothing to shard" in done.stdout
    assert {"checkpoint-last.dcp", "checkpoint-best.dcp", "model.safetensors", "summary.json"} <= set(os.listdir(out))
    close(load_file(out / "model.safetensors"), sharded_weights(out / "checkpoint-last.dcp", "ema"), "the EMA")
    # the folder's checkpoint is a checkpoint like any other: evaluated by path (the EMA's weights, which the
    # run reported, read from its shards), continued, fine-tuned from
    ev = subprocess.run([sys.executable, "-m", "vitfast.eval", "--checkpoint", str(out / "checkpoint-last.dcp"),
                         "--quant", "fp32", "--json", str(tmp_path / "eval.json"), "--quiet"],
                        env=COMMAND_ENV, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads((tmp_path / "eval.json").read_text())["fp32"]["acc1"] == \
        json.loads((out / "summary.json").read_text())["val_acc1"]
    more = train(tiny_args + ["--resume", str(out / "checkpoint-last.dcp"), "--extend-steps", "1", "--device", "cpu"],
                 tmp_path / "more")
    assert f"resumed from {out / 'checkpoint-last.dcp'} at step 2" in more.stdout
    assert load_state(tmp_path / "more" / "checkpoint-last.dcp")["step"] == 3
    again = train(tiny_args + ["--resume", "auto", "--device", "cpu"], out)  # a finished run changes no file
    assert "the run is finished (step 2 of 2); nothing to do" in again.stdout
    tuned = train(tiny_args + ["--init-checkpoint", str(out / "checkpoint-last.dcp"), "--steps", "1", "--device",
                               "cpu"], tmp_path / "tuned")
    assert f"initialised from {out / 'checkpoint-last.dcp'}" in tuned.stdout


def test_sharded_resume_after_sigkill_is_bit_identical(tmp_path, small_builtin):
    """Every rank and torchrun killed at once as soon as a checkpoint folder is in place; --resume auto
    continues to the very weights of the run that was never stopped."""
    args = TINY + ["--data", small_builtin, "--steps", "8", "--save-every", "1", "--fsdp"]
    train(args, tmp_path / "straight", ranks=2, port=29591)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             "29592", "-m", "vitfast.train", *args, "--output", str(out)], env=COMMAND_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, deadline = out / "checkpoint-last.dcp", time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    for pid in [proc.pid, *descendants(proc.pid)]:  # torchrun starts each rank in a session of its own
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_state(last)["step"]
    assert 0 < killed_at < 8, "the kill must land mid-run"
    resumed = train(args + ["--resume", "auto"], out, ranks=2, port=29593)
    assert f"at step {killed_at}" in resumed.stdout
    a, b = weights_of(tmp_path / "straight" / "checkpoint-last.dcp"), weights_of(last)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("extra, env, named", [
    (["--fsdp", "--amp", "fp16"], {}, "--fsdp with --amp fp16: sharded training has no fp16 loss scaler"),
    (["--fsdp-hybrid"], {}, "--fsdp-hybrid has no effect without --fsdp"),
    (["--fsdp", "--fsdp-hybrid"], {"LOCAL_WORLD_SIZE": "2"}, "--fsdp-hybrid: 1 ranks do not split into nodes of 2"),
])
def test_what_fsdp_cannot_do_is_refused_in_one_line(tmp_path, tiny_args, extra, env, named):
    done = subprocess.run([sys.executable, "-m", "vitfast.train", *tiny_args, *extra, "--steps", "1", "--output",
                           str(tmp_path / "run")], env={**COMMAND_ENV, **env}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.long  # two ranks equal DDP above, and a 4-rank checkpoint continues on 2 in the case table
def test_four_ranks_equal_ddp_and_continue_on_two(runs, tmp_path):
    """Four ranks under --fsdp equal DDP's two on the same global batch (8 images per rank and step); their
    step-2 checkpoint continues on two ranks to the same end (4 -> 2)."""
    root, args = runs
    four = tmp_path / "four"
    train(args + ["--steps", "4", "--eval-every-steps", "2", "--keep-checkpoints", "2", "--fsdp"], four, ranks=4,
          port=29751)
    reference = weights_of(root / "ddp" / "checkpoint-last.pt")
    close(reference, weights_of(four / "checkpoint-last.dcp"), "4 ranks")
    done = train(args + ["--resume", str(four / "checkpoint-step2.dcp")], tmp_path / "two", ranks=2, port=29752)
    assert f"resumed from {four / 'checkpoint-step2.dcp'} at step 2" in done.stdout and "2 x cpu" in done.stdout
    close(reference, weights_of(tmp_path / "two" / "checkpoint-last.dcp"), "4 -> 2 ranks")


FAMILIES = {"t2t_vit_7": "img_size=64,depth=1",
            "convit_tiny": "img_size=32,patch_size=4,depth=2,local_up_to_layer=1",
            "dvt_t2t_vit_12": "img_size=64,depth=1,embed_dim=32,num_heads=2,token_dim=16"}


@pytest.mark.parametrize("name", ["vit_base_patch16_224", "deit_base_distilled_patch16_224", "t2t_vit_14",
                                  "convit_small", "dvt_t2t_vit_12", "vit_giant_patch14_224"])
def test_every_family_is_sharded_block_by_block(name):
    """Each transformer block is a unit of its own (DVT: every exit's), the root holding only the rest."""
    import vitfast
    from vitfast.training.parallel import shard_units

    with torch.device("meta"):
        model = vitfast.create_model(name)
    units = shard_units(model)
    blocks = [m for n, m in model.named_modules() if n.split(".")[-2:-1] == ["blocks"]]
    apart = [m for n, m in model.named_modules() if n.endswith(".feature_resuse_mlp")]  # DVT's, called apart
    assert [u for u in units if u not in apart] == blocks and len(blocks) >= 10
    assert len(apart) == (24 if name.startswith("dvt") else 0)  # exits 2 and 3 reuse features, 12 blocks each
    inside = sum(p.numel() for u in units for p in u.parameters())
    assert inside > 0.9 * sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", [pytest.param("t2t_vit_7", marks=pytest.mark.long),  # DVT's backbone is T2T-ViT
                                  "convit_tiny", "dvt_t2t_vit_12"])
def test_t2t_convit_and_dvt_under_fsdp_equal_ddp(tmp_path, small_builtin, name):
    args = TINY[2:] + ["--model", name, "--model-kwargs", FAMILIES[name], "--data", small_builtin, "--steps", "2"]
    port = 29721 + 2 * list(FAMILIES).index(name)
    train(args, tmp_path / "ddp", ranks=2, port=port)
    train(args + ["--fsdp"], tmp_path / "fsdp", ranks=2, port=port + 1)
    close(weights_of(tmp_path / "ddp" / "checkpoint-last.pt"), weights_of(tmp_path / "fsdp" / "checkpoint-last.dcp"),
          name)
