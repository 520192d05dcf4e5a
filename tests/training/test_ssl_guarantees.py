"""What the supervised path guarantees, held under --ssl (issue 63, item 4): bit-exact resume after SIGKILL
and Ctrl-C, the switches that must not change the arithmetic (activation checkpointing, the vitfast
backend), fp16 autocast with the heads in fp32 and DINO's remedies named when a loss diverges, and QAT
formats."""
import subprocess
import sys

import pytest
import torch
from torch._dynamo.utils import counters

from tests.training.test_stops import interrupt, train as train_cli
from tests.training.test_train import kill_at_first_checkpoint
from vitfast.models.ssl_heads import DINOHead, MultiCropNet
from vitfast.train import main as train_main
from vitfast.training.config import resolve
from vitfast.training.methods.dino import DINO
from vitfast.training.state import load_state
from tests.values import COMMAND_ENV

TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2",
        "--batch-size", "32", "--ptq-report", "", "--num-crops", "2,2", "--log-every", "2", "--quiet"]
METHOD = {"dino": ["--ssl", "dino", "--head-out-dim", "256"],
          "swav": ["--ssl", "swav", "--queue-length", "64", "--queue-start-epoch", "0", "--freeze-prototypes-epochs",
                   "0"],
          "mocov3": ["--ssl", "mocov3", "--num-crops", "2", "--moco-mlp-dim", "64", "--moco-dim", "16"]}


@pytest.fixture
def tiny(small_builtin):
    return TINY + ["--data", small_builtin]


def assert_states_equal(a, b, close=False):
    """Model, teacher backbone and every tensor of the method's state."""
    def tensors(state):
        out = {f"model.{k}": v for k, v in state["model"].items()}
        out.update({f"ema.{k}": v for k, v in (state["ema"] or {}).items()})
        for part, value in state["ssl"].items():
            if isinstance(value, dict):
                out.update({f"{part}.{k}": v for k, v in value.items()})
            elif torch.is_tensor(value):
                out[part] = value
        return out

    ta, tb = tensors(a), tensors(b)
    assert list(ta) == list(tb)
    for k in ta:
        if close:
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=1e-6, msg=k)
        else:
            assert torch.equal(ta[k], tb[k]), k


@pytest.mark.parametrize("method", ["dino", "swav", "mocov3"])
def test_resume_after_sigkill_is_bit_identical(tmp_path, tiny, method):
    args = tiny + METHOD[method] + ["--steps", "16", "--save-every", "2", "--deterministic", "--device", "cpu"]
    straight = subprocess.run([sys.executable, "-m", "vitfast.train", *args, "--output", str(tmp_path / "a")],
                              env=COMMAND_ENV, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    out = tmp_path / "b"
    last, killed_at = kill_at_first_checkpoint(args, out)
    assert 0 < killed_at < 16, "the kill must land mid-run"
    resumed = subprocess.run([sys.executable, "-m", "vitfast.train", *args, "--output", str(out), "--resume", "auto"],
                             env=COMMAND_ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {last} at step {killed_at}" in resumed.stdout
    a, b = load_state(tmp_path / "a" / "checkpoint-last.pt"), load_state(last)
    assert a["step"] == b["step"] == 16
    assert_states_equal(a, b)
    if method == "swav":
        assert a["ssl"]["queued"] == b["ssl"]["queued"] > 0


def test_ctrl_c_saves_the_step_and_the_run_resumes_bit_identically(tmp_path, tiny):
    args = tiny + METHOD["dino"] + ["--steps", "16", "--deterministic", "--device", "cpu"]
    args.remove("--quiet")  # the log lines tell when to press Ctrl-C
    assert train_cli(args + ["--output", "straight"], tmp_path).returncode == 0
    code, out, err = interrupt(args + ["--output", "run"], tmp_path, "[train]")
    assert code == 130 and "Traceback" not in err, err
    stopped = load_state(tmp_path / "run" / "checkpoint-last.pt")["step"]
    assert 0 < stopped < 16 and f"stopped at step {stopped} of 16; run/checkpoint-last.pt holds it" in out
    assert train_cli(["--output", "run", "--resume", "auto"], tmp_path).returncode == 0
    assert_states_equal(load_state(tmp_path / "straight" / "checkpoint-last.pt"),
                        load_state(tmp_path / "run" / "checkpoint-last.pt"))


@pytest.mark.parametrize("switch", ["--grad-checkpointing", "--backend vitfast", "--compile"])
def test_switches_train_like_eager(tmp_path, tiny, switch):
    args = tiny + METHOD["dino"] + ["--steps", "3", "--deterministic", "--opt", "sgd", "--lr", "0.05"]
    train_main(args + ["--output", str(tmp_path / "eager")])
    counters.clear()
    train_main(args + switch.split() + ["--output", str(tmp_path / "switched")])
    if switch == "--compile":  # the student network: its crop groups and head traced as one graph
        assert counters["stats"]["unique_graphs"] >= 1, dict(counters["stats"])
    assert_states_equal(load_state(tmp_path / "eager" / "checkpoint-last.pt"),
                        load_state(tmp_path / "switched" / "checkpoint-last.pt"), close=True)


def test_the_heads_run_in_fp32_under_fp16_autocast():
    class Backbone(torch.nn.Linear):  # forward_features / forward_head as a ViT has them
        def forward_features(self, x):
            return self(x.flatten(1))

        def forward_head(self, x, pre_logits):
            return x

    net = MultiCropNet(Backbone(12, 8), DINOHead(8, 16, 32, 8))
    seen = []
    net.head.mlp[0].register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.autocast("cpu", dtype=torch.float16):
        out = net([torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)])
    assert out.dtype == torch.float32 and seen == [(torch.float32, torch.float32)]


def test_dino_under_fp16_autocast_trains_with_a_grad_scaler(tmp_path, tiny):
    args = tiny + METHOD["dino"] + ["--steps", "10", "--deterministic"]
    train_main(args + ["--amp", "fp16", "--output", str(tmp_path / "fp16")])
    train_main(args + ["--output", str(tmp_path / "fp32")])
    a, b = load_state(tmp_path / "fp16" / "checkpoint-last.pt"), load_state(tmp_path / "fp32" / "checkpoint-last.pt")
    # steps whose fp16 gradients overflowed were skipped (the scale backed off), the later ones taken
    assert a["scaler"]["scale"] < 2.0**16 and a["scaler"]["_growth_tracker"] > 0, a["scaler"]
    for k in a["model"]:
        assert torch.isfinite(a["model"][k]).all(), k
    assert any(not torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_diverging_dino_run_stops_naming_its_remedies(tmp_path, tiny):
    with pytest.raises(SystemExit, match=r"the loss is (nan|inf) at step \d+; stopping; DINO's remedies: a lower --lr"):
        train_main(tiny + METHOD["dino"] + ["--steps", "4", "--lr", "1e30", "--output", str(tmp_path / "run")])
    fp16 = DINO(resolve(["--ssl", "dino", "--amp", "fp16"]))
    assert "DINO is known to diverge in fp16 (facebookresearch/dino #58, #104): --amp bf16" in fp16.diverged()


def test_qat_pretraining_rounds_the_backbone_and_reports_its_format(tmp_path, tiny):
    args = tiny + METHOD["dino"] + ["--steps", "2", "--deterministic"]
    summary = train_main(args + ["--quant", "FP16_16", "--ptq-report", "bf16", "--output", str(tmp_path / "run")])
    assert set(summary["ptq"]) == {"fp16_16 (qat)", "fp32", "bf16"}
    train_main(args + ["--output", str(tmp_path / "fp32")])
    a, b = load_state(tmp_path / "run" / "checkpoint-last.pt"), load_state(tmp_path / "fp32" / "checkpoint-last.pt")
    assert any(not torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"]), "FP16_16 must round the backbone"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "model.safetensors"), "pt") as f:
        assert not any(k.startswith("head.") for k in f.keys())
